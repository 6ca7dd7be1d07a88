-- Watermarks and window table functions that validate clean.
CREATE TABLE bids (
  item STRING,
  price DECIMAL(10, 2),
  bidtime TIMESTAMP(3),
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE VIEW cheap AS SELECT item, price, bidtime FROM bids WHERE price < 10;
CREATE TABLE out1 (window_start TIMESTAMP(3), window_end TIMESTAMP(3), total DECIMAL(38, 2)) WITH ('connector' = 'blackhole');
CREATE TABLE out2 (item STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
CREATE TABLE out3 (item STRING, price DECIMAL(10, 2), window_start TIMESTAMP(3), window_end TIMESTAMP(3), window_time TIMESTAMP(3)) WITH ('connector' = 'blackhole');
EXPLAIN CHANGELOG_MODE SELECT window_start, window_end, SUM(price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) GROUP BY window_start, window_end;
INSERT INTO out1 SELECT window_start, window_end, SUM(price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) GROUP BY window_start, window_end;
INSERT INTO out2 SELECT item, window_start, window_end, COUNT(*) FROM TABLE(HOP(DATA => TABLE bids, TIMECOL => DESCRIPTOR(bidtime), SLIDE => INTERVAL '5' MINUTES, SIZE => INTERVAL '10' MINUTES)) GROUP BY item, window_start, window_end;
INSERT INTO out2 SELECT item, window_start, window_end, COUNT(*) FROM TABLE(CUMULATE(TABLE cheap, DESCRIPTOR(bidtime), INTERVAL '2' MINUTES, INTERVAL '10' MINUTES, INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, item;
INSERT INTO out3 SELECT item, price, window_start, window_end, window_time FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES));
