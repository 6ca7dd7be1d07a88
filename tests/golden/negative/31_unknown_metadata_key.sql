CREATE TABLE t (a INT, p BIGINT METADATA FROM 'partition') WITH ('connector' = 'datagen');
