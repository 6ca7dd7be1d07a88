//! Event time and window table functions, planned and run: the EXPLAIN of a watermark, a window
//! TVF and a window aggregate; the results of TUMBLE / HOP / CUMULATE aggregates and of plain
//! window assignment over a stream with out-of-order rows and late rows, checked against
//! hand-computed expectations; a differential test of TUMBLE aggregates against DataFusion's
//! batch engine (`GROUP BY date_bin(...)`) over random in-bound-disorder streams; and the
//! planning errors (updating input, DESCRIPTOR on a column that is not a time attribute, bad
//! intervals, SESSION). Also processing time: a window over the union of a busy and an idle
//! source fires only with `table.exec.source.idle-timeout`, and `NOW()` and the other time
//! functions are evaluated per batch on the clock, not folded when the query is planned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rsql_common::arrow::array::{ArrayRef, Int32Array, TimestampMicrosecondArray};
use rsql_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Location, RowKind};
use rsql_planner::Session;
use rsql_runtime::graph::SinkFactoryFn;
use rsql_runtime::ConnectorRegistry;

mod common;
use common::{feeds, format_rows, run_query, FeedFactory};

/// One event of table `e`: key, value, event time in milliseconds.
type Event = (i32, i32, i64);

fn e_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("b", DataType::Int32, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
    ]))
}

fn e_batch(rows: &[Event]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.2 * 1000).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(e_schema(), cols).unwrap()
}

const DDL: &str = "CREATE TABLE e (k INT NOT NULL, b INT NOT NULL, ts TIMESTAMP(3) NOT NULL, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
    WITH ('connector' = 'feed-test', 'feed' = 'FEED', 'mode' = 'append');
  CREATE TABLE u (k INT NOT NULL, b INT NOT NULL, ts TIMESTAMP(3) NOT NULL, PRIMARY KEY (k) NOT ENFORCED, WATERMARK FOR ts AS ts)
    WITH ('connector' = 'feed-test', 'feed' = 'none');
  CREATE TABLE p (k INT NOT NULL, ts TIMESTAMP(3) NOT NULL, pt AS PROCTIME()) WITH ('connector' = 'feed-test', 'feed' = 'none', 'mode' = 'append');
  CREATE VIEW ev AS SELECT k, b * 2 AS b2, ts FROM e WHERE b >= 0;";

fn session(feed: &str) -> std::result::Result<Session, String> {
    session_with(DDL, feed)
}

fn session_with(ddl: &str, feed: &str) -> std::result::Result<Session, String> {
    let mut reg = ConnectorRegistry::new();
    reg.register(Arc::new(FeedFactory("feed-test")));
    let mut s = Session::new(reg);
    for st in rsql_sql::parse_script(&ddl.replace("FEED", feed)).map_err(|e| e.to_string())? {
        match &st.statement {
            rsql_sql::Statement::CreateTable(ct) => {
                s.create_table(ct, st.location).map_err(|e| e.to_string())?;
            }
            rsql_sql::Statement::CreateView { name, query, columns, .. } => {
                s.create_view(name, columns, query, false, &st.text, st.location).map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    Ok(s)
}

/// EXPLAIN CHANGELOG_MODE of a query, or its planning error.
fn explain(sql: &str) -> std::result::Result<String, String> {
    let s = session("none")?;
    let q = rsql_sql::parse_script(sql).map_err(|e| e.to_string())?;
    let rsql_sql::Statement::Query(query) = &q[0].statement else { return Err("not a query".into()) };
    let plan = s.plan_query(query, Location::default()).map_err(|e| e.to_string())?;
    let create: SinkFactoryFn = Arc::new(|| Err(rsql_common::RsqlError::execution("not run")));
    let g = s.build_job(&[], Some((&plan, create))).map_err(|e| e.to_string())?;
    Ok(g.explain(true))
}

/// Runs `sql` over `events` cut into batches of `batch` rows; returns every output row as
/// `kind|col|col...` in emission order.
fn run(sql: &str, events: &[Event], batch: usize) -> std::result::Result<Vec<String>, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("e{}", NEXT.fetch_add(1, Ordering::Relaxed));
    feeds().lock().unwrap().insert(name.clone(), events.chunks(batch.max(1)).map(|c| ChangeBatch::inserts(e_batch(c))).collect());
    let s = session(&name)?;
    let batches = run_query(&s, sql)?;
    let mut rows = Vec::new();
    for b in &batches {
        for (r, k) in format_rows(&b.data).into_iter().zip(&b.kinds) {
            rows.push(format!("{k}|{r}"));
        }
    }
    Ok(rows)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn line<'a>(plan: &'a str, node: &str) -> &'a str {
    plan.lines().find(|l| l.contains(node)).unwrap_or_else(|| panic!("no {node} in\n{plan}"))
}

#[test]
fn explain_shows_watermark_window_function_and_window_aggregate() {
    let p = explain(
        "SELECT window_start, window_end, k, COUNT(*) AS cnt, SUM(b) AS total FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end, k",
    )
    .unwrap();
    assert!(line(&p, "WindowAggregate(").contains(
        "WindowAggregate(groupBy=[k], window=[TUMBLE(time_col=[ts], size=[10 s])], select=[k, count(Int64(1)), sum(e.b), start('w$) AS window_start, end('w$) AS window_end]), changelogMode=[I], uniqueKeys=[window_start, window_end, k]"
    ), "{p}");
    assert!(line(&p, "WindowTableFunction(").contains("WindowTableFunction(window=[TUMBLE(time_col=[ts], size=[10 s])]), changelogMode=[I]"), "{p}");
    assert!(line(&p, "WatermarkAssigner(").contains("WatermarkAssigner(rowtime=[ts], watermark=[ts - INTERVAL '2' SECOND]), changelogMode=[I]"), "{p}");
    // The sink sees an insert-only stream.
    assert!(line(&p, "Sink(").contains("changelogMode=[I]"), "{p}");

    let p = explain("SELECT * FROM TABLE(HOP(DATA => TABLE e, TIMECOL => DESCRIPTOR(ts), SLIDE => INTERVAL '5' SECOND, SIZE => INTERVAL '1' MINUTES, OFFSET => INTERVAL '1' SECOND))").unwrap();
    assert!(line(&p, "WindowTableFunction(").contains("HOP(time_col=[ts], size=[1 min], slide=[5 s], offset=[1 s])"), "{p}");
    let p = explain("SELECT window_start, window_end, SUM(b2) FROM TABLE(CUMULATE(TABLE ev, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end").unwrap();
    assert!(line(&p, "WindowAggregate(").contains("WindowAggregate(window=[CUMULATE(time_col=[ts], max_size=[10 s], step=[2 s])]"), "{p}");
}

/// Events of two keys, out of order within the 2 s watermark delay, then two late rows.
fn events() -> Vec<Event> {
    vec![
        (1, 1, 1_000),
        (2, 10, 3_000),
        (1, 2, 2_000),
        (1, 4, 9_999),
        (2, 20, 10_000),
        (1, 8, 8_000), // out of order, within the delay (watermark 8 s)
        (1, 16, 14_000),
        (2, 40, 12_500),
        (1, 32, 21_000),   // watermark 19 s: [0, 10) fired at 9.999 s, [10, 20) at 19.999 s not yet
        (1, 1000, 9_000),  // late for [0, 10): dropped
        (2, 2000, 11_000), // [10, 20) still open: counted
        (1, 64, 30_000),   // watermark 28 s: [10, 20) fires
        (2, 3000, 19_000), // late
        (1, 128, 35_000),
    ]
}

#[test]
fn tumble_aggregate_fires_per_watermark_and_drops_late_rows() {
    let sql = "SELECT window_start, window_end, k, COUNT(*) AS cnt, SUM(b) AS total, MIN(b) AS mn, MAX(b) AS mx
               FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end, k";
    // One row per batch: the watermark advances after every row, as Flink's does with
    // 'pipeline.auto-watermark-interval' = '0'.
    let rows = run(sql, &events(), 1).unwrap();
    assert!(rows.iter().all(|r| r.starts_with("+I|")), "{rows:?}");
    assert_eq!(
        sorted(rows.clone()),
        vec![
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:10|1|4|15|1|8",
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:10|2|1|10|10|10",
            "+I|1970-01-01T00:00:10|1970-01-01T00:00:20|1|1|16|16|16",
            "+I|1970-01-01T00:00:10|1970-01-01T00:00:20|2|3|2060|20|2000",
            "+I|1970-01-01T00:00:20|1970-01-01T00:00:30|1|1|32|32|32",
            "+I|1970-01-01T00:00:30|1970-01-01T00:00:40|1|2|192|64|128",
        ]
    );
    // Windows come out in the order of their ends.
    let ends: Vec<&str> = rows.iter().map(|r| r.split('|').nth(2).unwrap_or("")).collect();
    let mut s = ends.clone();
    s.sort();
    assert_eq!(ends, s, "{rows:?}");
    // One batch: the watermark moves only after it, so no row is late.
    assert_eq!(
        sorted(run(sql, &events(), 100).unwrap()),
        vec![
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:10|1|5|1015|1|1000",
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:10|2|1|10|10|10",
            "+I|1970-01-01T00:00:10|1970-01-01T00:00:20|1|1|16|16|16",
            "+I|1970-01-01T00:00:10|1970-01-01T00:00:20|2|4|5060|20|3000",
            "+I|1970-01-01T00:00:20|1970-01-01T00:00:30|1|1|32|32|32",
            "+I|1970-01-01T00:00:30|1970-01-01T00:00:40|1|2|192|64|128",
        ]
    );
}

#[test]
fn hop_and_cumulate_aggregates() {
    let ev: Vec<Event> = vec![(1, 1, 1_000), (1, 2, 6_000), (1, 4, 11_000), (1, 8, 3_000)];
    let hop = "SELECT window_start, window_end, SUM(b) AS s, COUNT(DISTINCT k) AS dk FROM TABLE(HOP(TABLE e, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
    assert_eq!(
        sorted(run(hop, &ev, 2).unwrap()),
        vec![
            "+I|1969-12-31T23:59:55|1970-01-01T00:00:05|9|1",
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:10|11|1",
            "+I|1970-01-01T00:00:05|1970-01-01T00:00:15|6|1",
            "+I|1970-01-01T00:00:10|1970-01-01T00:00:20|4|1",
        ]
    );
    // AVG over an INT computes in DOUBLE here (the group aggregate's accumulator); Flink's is INT.
    let cumulate = "SELECT window_start, window_end, window_time, SUM(b) AS s, FIRST_VALUE(b) AS f, LAST_VALUE(b) AS l, AVG(b) AS a FROM TABLE(CUMULATE(TABLE e, DESCRIPTOR(ts), INTERVAL '4' SECOND, INTERVAL '8' SECOND)) GROUP BY window_start, window_end, window_time";
    assert_eq!(
        sorted(run(cumulate, &ev, 1).unwrap()),
        vec![
            // The row at 3 s comes after the watermark passed 7.999 s: late for both its windows.
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:04|1970-01-01T00:00:03.999|1|1|1|1.0",
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:08|1970-01-01T00:00:07.999|3|1|2|1.5",
            "+I|1970-01-01T00:00:08|1970-01-01T00:00:12|1970-01-01T00:00:11.999|4|4|4|4.0",
            "+I|1970-01-01T00:00:08|1970-01-01T00:00:16|1970-01-01T00:00:15.999|4|4|4|4.0",
        ]
    );
}

#[test]
fn plain_window_assignment_emits_each_row_per_window() {
    let ev: Vec<Event> = vec![(1, 1, 1_000), (2, 2, 7_000)];
    let rows = run("SELECT k, b, window_start, window_end, window_time FROM TABLE(HOP(TABLE e, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))", &ev, 10).unwrap();
    assert_eq!(
        rows,
        vec![
            "+I|1|1|1970-01-01T00:00:00|1970-01-01T00:00:10|1970-01-01T00:00:09.999",
            "+I|1|1|1969-12-31T23:59:55|1970-01-01T00:00:05|1970-01-01T00:00:04.999",
            "+I|2|2|1970-01-01T00:00:05|1970-01-01T00:00:15|1970-01-01T00:00:14.999",
            "+I|2|2|1970-01-01T00:00:00|1970-01-01T00:00:10|1970-01-01T00:00:09.999",
        ]
    );
    // Through a view, with a filter on the window columns and an alias.
    let rows = run("SELECT w.k, w.b2 FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '5' SECOND)) AS w WHERE w.window_start >= TIMESTAMP '1970-01-01 00:00:05'", &ev, 10).unwrap();
    assert_eq!(rows, vec!["+I|2|4"]);
}

#[test]
fn tumble_aggregate_matches_datafusion_date_bin() {
    let cases = std::env::var("RSQL_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(30u64);
    let sql = "SELECT window_start, window_end, k, COUNT(*) AS c, SUM(b) AS s, MIN(b) AS mn, MAX(b) AS mx FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '3' SECOND)) GROUP BY window_start, window_end, k";
    let batch_sql = "SELECT date_bin(INTERVAL '3 seconds', ts) AS ws, date_bin(INTERVAL '3 seconds', ts) + INTERVAL '3 seconds' AS we, k, COUNT(*) AS c, SUM(b) AS s, MIN(b) AS mn, MAX(b) AS mx FROM e GROUP BY 1, 2, 3";
    for seed in 0..cases {
        let mut rng = SmallRng::seed_from_u64(seed);
        // Rising time with disorder below the 2 s watermark delay: nothing is late.
        let mut t = 0i64;
        let ev: Vec<Event> = (0..rng.random_range(1..120))
            .map(|_| {
                t += rng.random_range(0..700);
                (rng.random_range(0..4), rng.random_range(-50..50), (t - rng.random_range(0..1999)).max(0))
            })
            .collect();
        let got = run(sql, &ev, rng.random_range(1..10)).unwrap();
        let got: Vec<String> = sorted(got.into_iter().map(|r| r.trim_start_matches("+I|").to_string()).collect());
        let config = SessionConfig::new().with_target_partitions(1);
        let ctx = SessionContext::new_with_config(config);
        let mem = MemTable::try_new(e_schema(), vec![vec![e_batch(&ev)]]).unwrap();
        ctx.register_table("e", Arc::new(mem)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let batches = rt.block_on(async { ctx.sql(batch_sql).await?.collect().await }).unwrap();
        let want: Vec<String> = sorted(batches.iter().flat_map(format_rows).collect());
        assert_eq!(got, want, "seed {seed}: events {ev:?}");
    }
}

#[test]
fn planning_errors_name_the_window_and_the_fix() {
    let err = |sql: &str| explain(sql).expect_err(sql);
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE u, DESCRIPTOR(ts), INTERVAL '10' SECOND))");
    assert!(e.contains("TUMBLE(TABLE u, DESCRIPTOR(ts), INTERVAL '10' SECOND) needs an append-only input") && e.contains("changelogMode=[I,UB,UA,D]"), "{e}");
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(b), INTERVAL '10' SECOND))");
    assert!(e.contains("DESCRIPTOR(b): column 'b' of") && e.contains("is not a time attribute") && e.contains("WATERMARK FOR b"), "{e}");
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(nope), INTERVAL '10' SECOND))");
    assert!(e.contains("has no column 'nope'"), "{e}");
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '0' SECOND))");
    assert!(e.contains("SIZE must be a positive interval"), "{e}");
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '1' MONTH))");
    assert!(e.contains("SIZE must be a positive interval"), "{e}");
    let e = err("SELECT * FROM TABLE(HOP(TABLE e, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '10' SECOND))");
    assert!(e.contains("whole multiple of the slide (3 s)"), "{e}");
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts)))");
    assert!(e.contains("missing argument SIZE"), "{e}");
    let e = err("SELECT * FROM TABLE(SESSION(TABLE e, DESCRIPTOR(ts), INTERVAL '10' SECOND))");
    assert!(e.contains("SESSION window table function is not supported yet"), "{e}");
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE p, DESCRIPTOR(pt), INTERVAL '10' SECOND))");
    assert!(e.contains("processing-time windows"), "{e}");
    let e = err("SELECT * FROM TABLE(TUMBLE(TABLE missing, DESCRIPTOR(ts), INTERVAL '10' SECOND))");
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn window_time_is_a_rowtime_and_the_time_column_is_not() {
    // Deduplication by window_time is event-time deduplication.
    let p = explain("SELECT * FROM (SELECT k, window_time, ROW_NUMBER() OVER (PARTITION BY k ORDER BY window_time) AS rn FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '10' SECOND))) WHERE rn = 1").unwrap();
    assert!(line(&p, "Deduplicate(").contains("order=[ROWTIME]"), "{p}");
    let _ = RowKind::Insert;
}

/// The rows Apache Flink 2.3 (PyFlink mini-cluster, parallelism 1,
/// 'pipeline.auto-watermark-interval' = '0' so that its watermark advances after every row)
/// printed for the same events read from a CSV file (`events()`), same table and queries; the
/// TUMBLE query is `tumble_aggregate_fires_per_watermark_and_drops_late_rows`, whose one-row
/// batch expectation equals Flink's output row for row.
#[test]
fn matches_flink_on_the_same_events() {
    let ev = events();
    let hop = "SELECT window_start, window_end, SUM(b) AS s, COUNT(DISTINCT k) AS dk FROM TABLE(HOP(TABLE e, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
    assert_eq!(
        run(hop, &ev, 1).unwrap(),
        vec![
            "+I|1969-12-31T23:59:55|1970-01-01T00:00:05|13|2",
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:10|25|2",
            "+I|1970-01-01T00:00:05|1970-01-01T00:00:15|88|2",
            "+I|1970-01-01T00:00:10|1970-01-01T00:00:20|2076|2",
            "+I|1970-01-01T00:00:15|1970-01-01T00:00:25|32|1",
            "+I|1970-01-01T00:00:20|1970-01-01T00:00:30|32|1",
            "+I|1970-01-01T00:00:25|1970-01-01T00:00:35|64|1",
            "+I|1970-01-01T00:00:30|1970-01-01T00:00:40|192|1",
            "+I|1970-01-01T00:00:35|1970-01-01T00:00:45|128|1",
        ]
    );
    let cumulate = "SELECT window_start, window_end, window_time, SUM(b) AS s, MAX(b) AS mx FROM TABLE(CUMULATE(TABLE e, DESCRIPTOR(ts), INTERVAL '4' SECOND, INTERVAL '8' SECOND)) GROUP BY window_start, window_end, window_time";
    assert_eq!(
        run(cumulate, &ev, 1).unwrap(),
        vec![
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:04|1970-01-01T00:00:03.999|13|10",
            "+I|1970-01-01T00:00:00|1970-01-01T00:00:08|1970-01-01T00:00:07.999|13|10",
            "+I|1970-01-01T00:00:08|1970-01-01T00:00:12|1970-01-01T00:00:11.999|32|20",
            "+I|1970-01-01T00:00:08|1970-01-01T00:00:16|1970-01-01T00:00:15.999|88|40",
            "+I|1970-01-01T00:00:16|1970-01-01T00:00:24|1970-01-01T00:00:23.999|32|32",
            "+I|1970-01-01T00:00:24|1970-01-01T00:00:32|1970-01-01T00:00:31.999|64|64",
            "+I|1970-01-01T00:00:32|1970-01-01T00:00:36|1970-01-01T00:00:35.999|128|128",
            "+I|1970-01-01T00:00:32|1970-01-01T00:00:40|1970-01-01T00:00:39.999|128|128",
        ]
    );
    let tvf = "SELECT k, b, window_start, window_end, window_time FROM TABLE(HOP(TABLE e, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) WHERE b < 3";
    assert_eq!(
        run(tvf, &ev, 1).unwrap(),
        vec![
            "+I|1|1|1970-01-01T00:00:00|1970-01-01T00:00:10|1970-01-01T00:00:09.999",
            "+I|1|1|1969-12-31T23:59:55|1970-01-01T00:00:05|1970-01-01T00:00:04.999",
            "+I|1|2|1970-01-01T00:00:00|1970-01-01T00:00:10|1970-01-01T00:00:09.999",
            "+I|1|2|1969-12-31T23:59:55|1970-01-01T00:00:05|1970-01-01T00:00:04.999",
        ]
    );
}

/// A busy source and one that never sends a row; both stay open until the job stops.
const OPEN_DDL: &str = "CREATE TABLE busy (k INT NOT NULL, b INT NOT NULL, ts TIMESTAMP(3) NOT NULL, WATERMARK FOR ts AS ts)
    WITH ('connector' = 'feed-test', 'feed' = 'FEED', 'mode' = 'append', 'hold' = 'true');
  CREATE TABLE quiet (k INT NOT NULL, b INT NOT NULL, ts TIMESTAMP(3) NOT NULL, WATERMARK FOR ts AS ts)
    WITH ('connector' = 'feed-test', 'feed' = 'none', 'mode' = 'append', 'hold' = 'true');
  CREATE VIEW busy_and_quiet AS SELECT k, b, ts FROM busy UNION ALL SELECT k, b, ts FROM quiet;";

/// Runs a TUMBLE aggregate over `busy_and_quiet` with the given idle timeout; returns the rows
/// emitted while both sources were still open (waiting up to `wait` for the first one) and all
/// rows once the job was stopped.
fn run_open(idle_timeout: std::time::Duration, wait: std::time::Duration) -> (Vec<String>, Vec<String>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("open{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let events = [(1, 1, 1_000), (1, 2, 5_000), (1, 3, 12_000)];
    feeds().lock().unwrap().insert(name.clone(), vec![ChangeBatch::inserts(e_batch(&events))]);
    let s = session_with(OPEN_DDL, &name).expect("session");
    let sql = "SELECT window_start, window_end, COUNT(*) AS n, SUM(b) AS total
        FROM TABLE(TUMBLE(TABLE busy_and_quiet, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
    let q = rsql_sql::parse_script(sql).expect("parse");
    let rsql_sql::Statement::Query(query) = &q[0].statement else { panic!("not a query") };
    let plan = s.plan_query(query, Location::default()).expect("plan");
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let o2 = out.clone();
    let create: SinkFactoryFn = Arc::new(move || Ok(Box::new(common::Collect(o2.clone())) as Box<dyn rsql_runtime::Sink>));
    let graph = s.build_job(&[], Some((&plan, create))).expect("graph");
    let rows = |out: &std::sync::Mutex<Vec<ChangeBatch>>| -> Vec<String> {
        let mut v = Vec::new();
        for b in out.lock().unwrap().iter() {
            for (r, k) in format_rows(&b.data).into_iter().zip(&b.kinds) {
                v.push(format!("{k}|{r}"));
            }
        }
        v
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let opts = rsql_runtime::JobOptions {
            idle_timeout,
            watermark_interval: std::time::Duration::from_millis(20),
            ..rsql_runtime::JobOptions::default()
        };
        let job = rsql_runtime::start_job(&graph, &opts).expect("start");
        let deadline = std::time::Instant::now() + wait;
        while out.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let open = rows(&out);
        job.stop();
        job.wait().await.expect("job");
        (open, rows(&out))
    })
}

#[test]
fn an_idle_source_does_not_hold_back_a_window_over_a_union() {
    let fired = "+I|1970-01-01T00:00:00|1970-01-01T00:00:10|2|3".to_string();
    let last = "+I|1970-01-01T00:00:10|1970-01-01T00:00:20|1|3".to_string();
    // Without an idle timeout the quiet source's watermark holds the window back until the
    // sources stop (the end of input fires every window).
    let (open, all) = run_open(std::time::Duration::ZERO, std::time::Duration::from_millis(600));
    assert!(open.is_empty(), "{open:?}");
    assert_eq!(all, vec![fired.clone(), last.clone()]);
    // With one, the quiet source is marked idle and the busy source's watermark (12 s) fires
    // the window [0 s, 10 s) while both are still open.
    let (open, all) = run_open(std::time::Duration::from_millis(100), std::time::Duration::from_secs(20));
    assert_eq!(open, vec![fired.clone()]);
    assert_eq!(all, vec![fired, last]);
}

#[test]
fn time_functions_are_evaluated_per_batch_on_the_clock() {
    use rsql_runtime::graph::NodeKind;
    use rsql_runtime::operators::calc::Calc;
    use rsql_runtime::operators::Operator;
    let mut s = session("none").expect("session");
    // 2024-01-01 00:00:00.250 UTC.
    let t0: u64 = 1_704_067_200_250;
    let (now, clock) = rsql_runtime::clock::manual_clock(t0);
    s.set_clock(clock);
    let sql = "SELECT k, NOW() AS n, CURRENT_TIMESTAMP AS c, LOCALTIMESTAMP AS l, CURRENT_DATE AS d, CURRENT_TIME AS t,
        UNIX_TIMESTAMP() AS u, PROCTIME() AS p FROM e WHERE ts > LOCALTIMESTAMP - INTERVAL '1' HOUR AND ts > NOW() - INTERVAL '1' HOUR";
    let q = rsql_sql::parse_script(sql).expect("parse");
    let rsql_sql::Statement::Query(query) = &q[0].statement else { panic!("not a query") };
    let plan = s.plan_query(query, Location::default()).expect("plan");
    let create: SinkFactoryFn = Arc::new(|| Err(rsql_common::RsqlError::execution("not run")));
    let graph = s.build_job(&[], Some((&plan, create))).expect("graph");
    let explain = graph.explain(false);
    assert!(explain.to_lowercase().contains("now()"), "NOW() is kept in the plan, not folded:\n{explain}");
    // The query's operators between the source and the sink, built as the executor builds them.
    let mut ops: Vec<Box<dyn Operator>> = Vec::new();
    for n in &graph.nodes {
        match &n.kind {
            NodeKind::Calc { filter, exprs, .. } => ops.push(Box::new(Calc::new(filter.clone(), exprs.clone(), n.schema.clone()))),
            NodeKind::Source { .. } | NodeKind::Sink { .. } | NodeKind::WatermarkAssigner { .. } => {}
            other => panic!("unexpected {other:?} in\n{explain}"),
        }
    }
    let run = |ops: &mut Vec<Box<dyn Operator>>, rows: &[Event]| -> Vec<String> {
        let mut batches = vec![ChangeBatch::inserts(e_batch(rows))];
        for op in ops.iter_mut() {
            let mut out = Vec::new();
            for b in batches {
                op.process(0, b, &mut out).expect("process");
            }
            batches = out;
        }
        batches.iter().flat_map(|b| format_rows(&b.data)).collect()
    };
    let t0i = t0 as i64;
    let hour = 3_600_000;
    // Rows 30 minutes and 2 hours old at t0: only the first passes.
    let first = run(&mut ops, &[(1, 0, t0i - hour / 2), (2, 0, t0i - 2 * hour)]);
    assert_eq!(
        first,
        vec!["1|2024-01-01T00:00:00.250Z|2024-01-01T00:00:00.250Z|2024-01-01T00:00:00.250|2024-01-01|00:00:00|1704067200|2024-01-01T00:00:00.250Z"]
    );
    // Three hours later the same row is too old, and every function has moved on.
    now.store(t0 + 3 * hour as u64 + 1_500, Ordering::SeqCst);
    let second = run(&mut ops, &[(1, 0, t0i - hour / 2), (3, 0, t0i + 3 * hour - 10)]);
    assert_eq!(
        second,
        vec!["3|2024-01-01T03:00:01.750Z|2024-01-01T03:00:01.750Z|2024-01-01T03:00:01.750|2024-01-01|03:00:01|1704078001|2024-01-01T03:00:01.750Z"]
    );
}
