-- Event-time windows over generated clicks: clicks and distinct pages per user in tumbling
-- 2-second windows, printed once each window is complete. Runs unchanged on Flink's SQL client.
--   rsql-client -f sql/tumble_datagen.sql
-- The generator stamps each row with a time up to 5 s in the past; the watermark trails the
-- largest time seen by 5 s, so no row comes late. The input ends after 2000 rows, which
-- completes every window that is still open.
CREATE TABLE clicks (
  user_id INT,
  page STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '200',
  'number-of-rows' = '2000',
  'fields.user_id.min' = '1',
  'fields.user_id.max' = '4',
  'fields.page.length' = '1',
  'fields.ts.max-past' = '5 s'
);

CREATE TABLE clicks_per_user (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  user_id INT,
  clicks BIGINT,
  pages BIGINT
) WITH ('connector' = 'print', 'print-identifier' = 'clicks');

INSERT INTO clicks_per_user
SELECT window_start, window_end, user_id, COUNT(*), COUNT(DISTINCT page)
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '2' SECOND))
GROUP BY window_start, window_end, user_id;
