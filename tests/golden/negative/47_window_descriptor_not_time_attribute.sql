CREATE TABLE clicks (user_id INT, ts TIMESTAMP(3)) WITH ('connector' = 'datagen');
SELECT window_start, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
