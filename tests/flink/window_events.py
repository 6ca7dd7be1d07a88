#!/usr/bin/env python3
"""Runs the window queries of crates/rsql-planner/tests/window.rs (`matches_flink_on_the_same_events`
and the TUMBLE case) on Apache Flink (PyFlink local mini-cluster) and prints the rows, to check the
expectations recorded there.

    ~/.cache/rsql-bench/flink-venv/bin/python tests/flink/window_events.py [tumble|hop|cumulate|tvf ...]

The watermark interval is 0, so Flink's watermark advances after every row, as rsql's does when
each row is its own batch.
"""

import os
import sys
import tempfile

from pyflink.table import EnvironmentSettings, TableEnvironment

# (k, b, event time) in arrival order: out of order within the 2 s delay, and some late rows.
EVENTS = [
    (1, 1, "00:00:01.000"), (2, 10, "00:00:03.000"), (1, 2, "00:00:02.000"), (1, 4, "00:00:09.999"),
    (2, 20, "00:00:10.000"), (1, 8, "00:00:08.000"), (1, 16, "00:00:14.000"), (2, 40, "00:00:12.500"),
    (1, 32, "00:00:21.000"), (1, 1000, "00:00:09.000"), (2, 2000, "00:00:11.000"), (1, 64, "00:00:30.000"),
    (2, 3000, "00:00:19.000"), (1, 128, "00:00:35.000"),
]

QUERIES = {
    "tumble": "SELECT window_start, window_end, k, COUNT(*) AS cnt, SUM(b) AS total, MIN(b) AS mn, MAX(b) AS mx "
    "FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end, k",
    "hop": "SELECT window_start, window_end, SUM(b) AS s, COUNT(DISTINCT k) AS dk "
    "FROM TABLE(HOP(TABLE e, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end",
    "cumulate": "SELECT window_start, window_end, window_time, SUM(b) AS s, MAX(b) AS mx "
    "FROM TABLE(CUMULATE(TABLE e, DESCRIPTOR(ts), INTERVAL '4' SECOND, INTERVAL '8' SECOND)) GROUP BY window_start, window_end, window_time",
    "tvf": "SELECT k, b, window_start, window_end, window_time "
    "FROM TABLE(HOP(TABLE e, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) WHERE b < 3",
}


def main():
    path = os.path.join(tempfile.mkdtemp(prefix="rsql-window-"), "events.csv")
    with open(path, "w") as f:
        for k, b, t in EVENTS:
            f.write(f"{k},{b},1970-01-01 {t}\n")
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("pipeline.auto-watermark-interval", "0")
    conf.set("table.local-time-zone", "UTC")
    env.execute_sql(
        "CREATE TABLE e (k INT, b INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) "
        f"WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv')"
    )
    for name in sys.argv[1:] or list(QUERIES):
        with env.execute_sql(QUERIES[name]).collect() as rows:
            for row in rows:
                print(name, row.get_row_kind(), row, flush=True)


if __name__ == "__main__":
    main()
