CREATE TABLE src (id INT, region STRING) WITH ('connector' = 'datagen');
CREATE TABLE counts (region STRING, cnt BIGINT) WITH (
  'connector' = 'jdbc',
  'url' = 'jdbc:mysql://127.0.0.1:3306/serving',
  'table-name' = 'counts'
);
INSERT INTO counts SELECT region, COUNT(*) FROM src GROUP BY region;
