CREATE TABLE src (id INT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE snk (id INT, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', part INT METADATA FROM 'partition' VIRTUAL, off BIGINT METADATA FROM 'offset') WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:19092', 'format' = 'json');
INSERT INTO snk SELECT id, CAST(NULL AS TIMESTAMP(3)), 0 FROM src;
