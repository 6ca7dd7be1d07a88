CREATE TABLE t (a TIMESTAMP WITH TIME ZONE) WITH ('connector' = 'print');
