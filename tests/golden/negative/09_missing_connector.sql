CREATE TABLE t (a INT) WITH ('path' = '/tmp/x');
