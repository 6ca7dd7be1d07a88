CREATE TABLE t (a DECIMAL(40, 2)) WITH ('connector' = 'print');
