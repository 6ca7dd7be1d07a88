CREATE TABLE t (a INT, PRIMARY KEY (a) NOT ENFORCED) WITH ('connector' = 'mysql-cdc', 'hostname' = '127.0.0.1', 'username' = 'u', 'password' = 'secret', 'database-name' = 'd');
