//! Differential test of the incremental engine against DataFusion's batch engine: random
//! changelogs (inserts, updates, deletes over small key spaces) and an insert-only event stream
//! run through the planned operators, and the materialized result must equal what DataFusion
//! computes for the same SQL over the final table contents. Every retraction the engine emits
//! must take back a row it emitted before. A failing case is shrunk (shortest failing prefix of
//! each changelog, then whole keys and events left out) and printed as a reproducer: the SQL and
//! the input changelogs.
//!
//! Where Flink SQL and batch SQL differ, the test bridges them:
//! - ROW_NUMBER() ties are resolved by arrival in Flink and arbitrarily in batch, so every Top-N
//!   here orders by a total key (ending with the primary key `k`, or the arrival number `seq`);
//! - ordering by a processing-time attribute (`p AS PROCTIME()`) is arrival order, which batch
//!   SQL has no notion of: the DataFusion query orders by `seq` (the arrival number) instead;
//! - Flink's event-time deduplication keeps the earlier arrival among equal times (first row)
//!   or the later one (last row): the DataFusion query orders by `ts, seq` / `ts DESC, seq DESC`;
//! - a global aggregate over an empty input has no row in a stream (its row is retracted when
//!   the last input row goes) but one row in batch SQL: that row is dropped from the expectation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rsql_common::arrow::array::{ArrayRef, Int32Array, TimestampMicrosecondArray};
use rsql_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, RowKind};
use rsql_planner::Session;

mod common;
use common::{changelog_batches, feeds, format_rows, lr_batch, random_changelog, run_query, Change, FeedFactory};
use rsql_runtime::ConnectorRegistry;


/// One row of the insert-only table `e`: arrival number, key, value, event time in µs.
#[derive(Clone, Debug)]
struct Event {
    seq: i32,
    k: i32,
    b: i32,
    ts: i64,
}

/// What one case reads.
#[derive(Clone, Debug)]
struct Inputs {
    l: Vec<Change>,
    r: Vec<Change>,
    e: Vec<Event>,
}


fn random_events(rng: &mut SmallRng, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            seq: i as i32,
            k: rng.random_range(0..5),
            b: rng.random_range(0..100),
            // A few distinct seconds, so that equal event times happen.
            ts: rng.random_range(0..4) * 1_000_000,
        })
        .collect()
}

/// The table a changelog leaves behind, by key.
fn final_rows(log: &[Change]) -> BTreeMap<i32, (i32, String, i32)> {
    let mut rows = BTreeMap::new();
    for (kind, k, a, s, b) in log {
        if kind.is_accumulate() {
            rows.insert(*k, (*a, s.clone(), *b));
        } else {
            rows.remove(k);
        }
    }
    rows
}


fn e_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int32, false),
        Field::new("k", DataType::Int32, false),
        Field::new("b", DataType::Int32, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
    ]))
}


fn e_batch(rows: &[Event]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(rows.iter().map(|r| r.seq).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.k).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.b).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.ts).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(e_schema(), cols).unwrap()
}


fn event_batches(rows: &[Event], rng: &mut SmallRng) -> Vec<ChangeBatch> {
    rows.chunks(rng.random_range(1..=8)).map(|c| ChangeBatch::inserts(e_batch(c))).collect()
}

/// Runs `sql` incrementally over the inputs' changelogs; returns the materialized result.
fn run_incremental(sql: &str, inputs: &Inputs, seed: u64) -> std::result::Result<Vec<String>, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let names = [format!("l{id}"), format!("r{id}"), format!("e{id}")];
    let mut rng = SmallRng::seed_from_u64(seed);
    {
        let mut f = feeds().lock().unwrap();
        f.insert(names[0].clone(), changelog_batches(&inputs.l, &mut rng));
        f.insert(names[1].clone(), changelog_batches(&inputs.r, &mut rng));
        f.insert(names[2].clone(), event_batches(&inputs.e, &mut rng));
    }
    let mut reg = ConnectorRegistry::new();
    reg.register(Arc::new(FeedFactory("changelog-test")));
    let mut session = Session::new(reg);
    let ddl = format!(
        "CREATE TABLE l (k INT NOT NULL, a INT NOT NULL, s STRING NOT NULL, b INT NOT NULL, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'changelog-test', 'feed' = '{}');
         CREATE TABLE r (k INT NOT NULL, a INT NOT NULL, s STRING NOT NULL, b INT NOT NULL, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'changelog-test', 'feed' = '{}');
         CREATE TABLE e (seq INT NOT NULL, k INT NOT NULL, b INT NOT NULL, ts TIMESTAMP(3) NOT NULL, p AS PROCTIME(), WATERMARK FOR ts AS ts)
           WITH ('connector' = 'changelog-test', 'feed' = '{}', 'mode' = 'append');",
        names[0], names[1], names[2]
    );
    let result = (|| {
        for st in rsql_sql::parse_script(&ddl).map_err(|e| e.to_string())? {
            if let rsql_sql::Statement::CreateTable(ct) = &st.statement {
                session.create_table(ct, st.location).map_err(|e| e.to_string())?;
            }
        }
        let batches = run_query(&session, sql)?;
        materialize(&batches)
    })();
    let mut f = feeds().lock().unwrap();
    for n in &names {
        f.remove(n);
    }
    result
}

/// Applies a changelog to a multiset of rows; a retraction of a row not present is an error.
fn materialize(batches: &[ChangeBatch]) -> std::result::Result<Vec<String>, String> {
    let mut rows: Vec<String> = Vec::new();
    for b in batches {
        for (r, k) in format_rows(&b.data).into_iter().zip(&b.kinds) {
            if k.is_accumulate() {
                rows.push(r);
            } else {
                match rows.iter().position(|x| *x == r) {
                    Some(p) => {
                        rows.remove(p);
                    }
                    None => return Err(format!("{k} of a row never emitted: {r}")),
                }
            }
        }
    }
    rows.sort();
    Ok(rows)
}

/// DataFusion's batch result of `sql` over the final contents of the inputs.
fn run_batch(sql: &str, inputs: &Inputs) -> std::result::Result<Vec<String>, String> {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        .set_bool("datafusion.sql_parser.parse_float_as_decimal", true)
        .set_str("datafusion.sql_parser.default_null_ordering", "nulls_min");
    let ctx = SessionContext::new_with_config(config);
    let table = |log: &[Change]| -> Vec<Change> {
        final_rows(log).into_iter().map(|(k, (a, s, b))| (RowKind::Insert, k, a, s, b)).collect()
    };
    let tables = [
        ("l", lr_batch(&table(&inputs.l))),
        ("r", lr_batch(&table(&inputs.r))),
        ("e", e_batch(&inputs.e)),
    ];
    for (name, batch) in tables {
        let mem = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| e.to_string())?;
        ctx.register_table(name, Arc::new(mem)).map_err(|e| e.to_string())?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let batches = rt
        .block_on(async { ctx.sql(sql).await?.collect().await })
        .map_err(|e| format!("DataFusion: {e}"))?;
    let mut rows: Vec<String> = batches.iter().flat_map(format_rows).collect();
    rows.sort();
    Ok(rows)
}


/// A query shape: the SQL rsql runs, the SQL DataFusion runs when it must differ, and whether it
/// is a global aggregate over `l` (no row when `l` ends empty).
struct Case {
    sql: &'static str,
    batch_sql: Option<&'static str>,
    global_agg: bool,
}

const fn q(sql: &'static str) -> Case {
    Case { sql, batch_sql: None, global_agg: false }
}

const fn q2(sql: &'static str, batch_sql: &'static str) -> Case {
    Case { sql, batch_sql: Some(batch_sql), global_agg: false }
}

const CASES: &[Case] = &[
    // The seed's DWD join with its filter, then the DWS aggregate.
    q("SELECT r.s, count(*) AS cnt, sum(r.b) AS total FROM l JOIN r ON l.k = r.a WHERE l.k <> -1 GROUP BY r.s"),
    q("SELECT l.k, l.s, r.k, r.b FROM l JOIN r ON l.k = r.a WHERE l.k <> 1"),
    q("SELECT l.k, r.k AS rk FROM l LEFT JOIN r ON l.k = r.a"),
    q("SELECT l.k, r.k AS rk FROM l RIGHT JOIN r ON l.k = r.a"),
    q("SELECT l.k, r.k AS rk FROM l FULL JOIN r ON l.k = r.a"),
    q("SELECT l.k, r.k AS rk FROM l LEFT JOIN r ON l.k = r.a AND r.b > 40"),
    q("SELECT a, min(b) AS mn, max(b) AS mx, min(s) AS ms FROM l GROUP BY a"),
    q("SELECT a, count(DISTINCT s) AS ds, count(DISTINCT b) AS db, sum(DISTINCT b) AS sdb FROM l GROUP BY a"),
    Case { sql: "SELECT count(*) AS c, sum(b) AS sb, avg(b) AS ab FROM l", batch_sql: None, global_agg: true },
    q("SELECT s, count(*) FROM (SELECT k, s FROM l UNION ALL SELECT k, s FROM r) t GROUP BY s"),
    q("SELECT k + 1 AS k1, upper(s) AS us FROM l WHERE b > 50"),
    q("SELECT DISTINCT a, s FROM l"),
    q("SELECT x.s, count(*) AS c FROM (SELECT s, a, count(*) AS n FROM l GROUP BY s, a) x WHERE x.n > 1 GROUP BY x.s"),
    // Top-N over changelogs (retract strategy), every ORDER BY total.
    q("SELECT * FROM (SELECT k, a, b, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b DESC, k) AS rn FROM l) WHERE rn <= 2"),
    q("SELECT k, a, s FROM (SELECT k, a, s, ROW_NUMBER() OVER (PARTITION BY s ORDER BY b, k DESC) AS rn FROM l) t WHERE rn < 4"),
    q("SELECT * FROM (SELECT k, b, ROW_NUMBER() OVER (ORDER BY b DESC, k) AS rn FROM l) WHERE rn BETWEEN 2 AND 4"),
    q("SELECT a, k, b FROM (SELECT a, k, b, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b, k) AS rn FROM l) WHERE rn = 1"),
    q("SELECT k, b, rn FROM (SELECT k, b, ROW_NUMBER() OVER (ORDER BY b, k) AS rn FROM l) WHERE rn >= 3 AND rn <= 5 AND b > 20"),
    q("SELECT * FROM (SELECT s, a, c, ROW_NUMBER() OVER (PARTITION BY s ORDER BY c DESC, a) AS rn FROM (SELECT s, a, count(*) AS c FROM l GROUP BY s, a) g) WHERE rn <= 2"),
    q("SELECT lk, rk, b, rn FROM (SELECT l.k AS lk, r.k AS rk, r.b, ROW_NUMBER() OVER (PARTITION BY l.k ORDER BY r.b DESC, r.k) AS rn FROM l JOIN r ON l.k = r.a) WHERE rn = 1"),
    q("SELECT a, count(*) AS c, sum(b) AS sb FROM (SELECT a, b, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b DESC, k) AS rn FROM l) WHERE rn < 3 GROUP BY a"),
    // Insert-only input: append strategy, deduplication by processing and event time.
    q("SELECT * FROM (SELECT k, seq, b, ROW_NUMBER() OVER (PARTITION BY k ORDER BY b DESC, seq) AS rn FROM e) WHERE rn <= 2"),
    q2(
        "SELECT k, b, seq FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY p) AS rn FROM e) WHERE rn = 1",
        "SELECT k, b, seq FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY seq) AS rn FROM e) WHERE rn = 1",
    ),
    q2(
        "SELECT * FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY p DESC) AS rn FROM e) WHERE rn = 1",
        "SELECT * FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY seq DESC) AS rn FROM e) WHERE rn = 1",
    ),
    q2(
        "SELECT k, b, seq FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM e) WHERE rn = 1",
        "SELECT k, b, seq FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts, seq) AS rn FROM e) WHERE rn = 1",
    ),
    q2(
        "SELECT k, b, seq FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM e) WHERE rn = 1",
        "SELECT k, b, seq FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC, seq DESC) AS rn FROM e) WHERE rn = 1",
    ),
    q2(
        "SELECT * FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY p DESC) AS rn FROM e) WHERE rn <= 2",
        "SELECT * FROM (SELECT k, b, seq, ROW_NUMBER() OVER (PARTITION BY k ORDER BY seq DESC) AS rn FROM e) WHERE rn <= 2",
    ),
];

type Outcome = std::result::Result<Vec<String>, String>;

/// The incremental result and DataFusion's.
fn outcomes(case: &Case, inputs: &Inputs, seed: u64) -> (Outcome, Outcome) {
    let inc = run_incremental(case.sql, inputs, seed);
    let mut batch = run_batch(case.batch_sql.unwrap_or(case.sql), inputs);
    if case.global_agg && final_rows(&inputs.l).is_empty() {
        batch = Ok(Vec::new());
    }
    (inc, batch)
}

/// The incremental result and DataFusion's, when they differ.
fn check(case: &Case, inputs: &Inputs, seed: u64) -> Option<(Outcome, Outcome)> {
    match outcomes(case, inputs, seed) {
        (Ok(a), Ok(b)) if a == b => None,
        other => Some(other),
    }
}

/// Cut points of a changelog that keep update pairs whole.
fn cuts(log: &[Change]) -> Vec<usize> {
    (0..=log.len()).filter(|&i| i == 0 || log[i - 1].0 != RowKind::UpdateBefore).collect()
}

/// Shrinks failing inputs: the shortest failing prefix of each changelog, then whole keys of
/// `l` and `r` and single events of `e` left out while the case still fails.
fn shrink(case: &Case, mut inputs: Inputs, seed: u64) -> Inputs {
    let fails = |i: &Inputs| check(case, i, seed).is_some();
    for _ in 0..3 {
        let before = (inputs.l.len(), inputs.r.len(), inputs.e.len());
        for side in 0..2 {
            let log = if side == 0 { inputs.l.clone() } else { inputs.r.clone() };
            for cut in cuts(&log) {
                let mut t = inputs.clone();
                let target = if side == 0 { &mut t.l } else { &mut t.r };
                target.truncate(cut);
                if fails(&t) {
                    inputs = t;
                    break;
                }
            }
            let keys: Vec<i32> = {
                let log = if side == 0 { &inputs.l } else { &inputs.r };
                let mut k: Vec<i32> = log.iter().map(|c| c.1).collect();
                k.sort();
                k.dedup();
                k
            };
            for key in keys {
                let mut t = inputs.clone();
                let target = if side == 0 { &mut t.l } else { &mut t.r };
                target.retain(|c| c.1 != key);
                if fails(&t) {
                    inputs = t;
                }
            }
        }
        let mut i = 0;
        while i < inputs.e.len() {
            let mut t = inputs.clone();
            t.e.remove(i);
            if fails(&t) {
                inputs = t;
            } else {
                i += 1;
            }
        }
        if (inputs.l.len(), inputs.r.len(), inputs.e.len()) == before {
            break;
        }
    }
    inputs
}

fn show_inputs(inputs: &Inputs) -> String {
    let mut s = String::new();
    for (name, log) in [("l", &inputs.l), ("r", &inputs.r)] {
        s.push_str(&format!("  changelog of {name} (k, a, s, b):\n"));
        for (kind, k, a, st, b) in log {
            s.push_str(&format!("    {kind}[{k}, {a}, {st}, {b}]\n"));
        }
    }
    s.push_str("  inserts into e (seq, k, b, ts in seconds), in arrival order:\n");
    for e in &inputs.e {
        s.push_str(&format!("    +I[{}, {}, {}, {}]\n", e.seq, e.k, e.b, e.ts / 1_000_000));
    }
    s
}

#[test]
fn incremental_equals_datafusion_batch() {
    let cases: u64 = std::env::var("RSQL_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let strings = ["beijing", "shanghai", "hangzhou"];
    let mut failures: Vec<(u64, usize, Inputs)> = Vec::new();
    let mut ran = 0;
    let mut nonempty = vec![0u64; CASES.len()];
    for seed in 0..cases {
        let mut rng = SmallRng::seed_from_u64(seed);
        let inputs = Inputs {
            l: random_changelog(&mut rng, 8, 40, &strings),
            r: random_changelog(&mut rng, 8, 40, &strings),
            e: random_events(&mut rng, 30),
        };
        for (i, case) in CASES.iter().enumerate() {
            ran += 1;
            match outcomes(case, &inputs, seed) {
                (Ok(a), Ok(b)) if a == b => {
                    if !a.is_empty() {
                        nonempty[i] += 1;
                    }
                }
                _ => failures.push((seed, i, inputs.clone())),
            }
        }
    }
    if let Some((seed, i, inputs)) = failures.first().cloned() {
        let case = &CASES[i];
        let small = shrink(case, inputs, seed);
        let (inc, batch) = check(case, &small, seed).unwrap_or((Ok(Vec::new()), Ok(Vec::new())));
        let batch_sql = case.batch_sql.map(|s| format!("  DataFusion runs: {s}\n")).unwrap_or_default();
        let mut per_query: Vec<(usize, usize)> = Vec::new();
        for (_, q, _) in &failures {
            match per_query.iter_mut().find(|(x, _)| x == q) {
                Some(e) => e.1 += 1,
                None => per_query.push((*q, 1)),
            }
        }
        let summary: Vec<String> = per_query.iter().map(|(q, n)| format!("  {n} x {}", CASES[*q].sql)).collect();
        panic!(
            "{} of {ran} cases differ:\n{}\nthe first, shrunk (seed {seed}):\n  SQL: {}\n{batch_sql}{}  incremental: {:?}\n  DataFusion:  {:?}",
            failures.len(),
            summary.join("\n"),
            case.sql,
            show_inputs(&small),
            inc,
            batch
        );
    }
    // Every shape must produce rows in a good share of the seeds, or its agreement says little.
    for (i, n) in nonempty.iter().enumerate() {
        assert!(*n * 10 >= cases, "only {n} of {cases} seeds gave rows for: {}", CASES[i].sql);
    }
    eprintln!("differential: {ran} cases agree with DataFusion");
}
