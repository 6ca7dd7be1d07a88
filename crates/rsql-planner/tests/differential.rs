//! Differential test of the incremental engine: random changelogs (inserts, updates, deletes over
//! small key spaces) run through the planned operators, and the materialized result must equal
//! the result of the same SQL over the final table contents read as plain inserts. Every
//! retraction the engine emits must take back a row it emitted before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rsql_common::arrow::array::{ArrayRef, Int32Array, StringArray};
use rsql_common::arrow::datatypes::{DataType, Field, Schema};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec};
use rsql_common::{ChangeBatch, Location, Result, RowKind};
use rsql_planner::Session;
use rsql_runtime::graph::SinkFactoryFn;
use rsql_runtime::{
    start_job, ChangelogMode, ConnectorFactory, ConnectorRegistry, JobOptions, ProducedColumn, Sink, Source, SourceContext,
    SourceInfo,
};

type Feeds = Mutex<HashMap<String, Vec<ChangeBatch>>>;

fn feeds() -> &'static Feeds {
    static F: OnceLock<Feeds> = OnceLock::new();
    F.get_or_init(|| Mutex::new(HashMap::new()))
}

struct ChangelogFactory;

struct Feed {
    batches: Vec<ChangeBatch>,
}

#[async_trait]
impl Source for Feed {
    async fn run(&mut self, ctx: SourceContext) -> Result<()> {
        for b in self.batches.drain(..) {
            ctx.emit(b).await?;
        }
        Ok(())
    }
}

impl ConnectorFactory for ChangelogFactory {
    fn name(&self) -> &'static str {
        "changelog-test"
    }
    fn options(&self, _t: &TableDef) -> OptionSchema {
        OptionSchema::new(vec![OptionSpec::required("feed", OptionKind::String)])
    }
    fn source_info(&self, _t: &TableDef) -> Result<SourceInfo> {
        Ok(SourceInfo { changelog_mode: ChangelogMode::All, bounded: true })
    }
    fn create_source(&self, t: &TableDef, _c: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        let key = t.option("feed").unwrap_or_default().to_string();
        let batches = feeds().lock().unwrap().get(&key).cloned().unwrap_or_default();
        Ok(Box::new(Feed { batches }))
    }
    fn create_sink(&self, _t: &TableDef, _m: &ChangelogMode) -> Result<Box<dyn Sink>> {
        Err(rsql_common::RsqlError::unsupported("test source only"))
    }
}

struct Collect(Arc<Mutex<Vec<ChangeBatch>>>);

#[async_trait]
impl Sink for Collect {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A table's rows by primary key, and the changelog that produced them.
struct Table {
    rows: HashMap<i32, (i32, String, i32)>,
    log: Vec<(RowKind, i32, i32, String, i32)>,
}

fn random_table(rng: &mut SmallRng, keys: i32, ops: usize, strings: &[&str]) -> Table {
    let mut t = Table { rows: HashMap::new(), log: Vec::new() };
    for _ in 0..ops {
        let k = rng.random_range(0..keys);
        let a = rng.random_range(-2..6);
        let s = strings[rng.random_range(0..strings.len())].to_string();
        let b = rng.random_range(0..100);
        match t.rows.get(&k).cloned() {
            None => {
                t.rows.insert(k, (a, s.clone(), b));
                t.log.push((RowKind::Insert, k, a, s, b));
            }
            Some(old) => {
                if rng.random_bool(0.3) {
                    t.rows.remove(&k);
                    t.log.push((RowKind::Delete, k, old.0, old.1, old.2));
                } else {
                    t.log.push((RowKind::UpdateBefore, k, old.0, old.1.clone(), old.2));
                    t.rows.insert(k, (a, s.clone(), b));
                    t.log.push((RowKind::UpdateAfter, k, a, s, b));
                }
            }
        }
    }
    t
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("a", DataType::Int32, false),
        Field::new("s", DataType::Utf8, false),
        Field::new("b", DataType::Int32, false),
    ]))
}

fn to_batches(rows: &[(RowKind, i32, i32, String, i32)], rng: &mut SmallRng) -> Vec<ChangeBatch> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let mut n = rng.random_range(1..=8).min(rows.len() - i);
        // Keep an update pair in one batch, as sources emit them.
        if rows[i + n - 1].0 == RowKind::UpdateBefore && i + n < rows.len() {
            n += 1;
        }
        let chunk = &rows[i..i + n];
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(chunk.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(chunk.iter().map(|r| r.2).collect::<Vec<_>>())),
            Arc::new(StringArray::from(chunk.iter().map(|r| r.3.clone()).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(chunk.iter().map(|r| r.4).collect::<Vec<_>>())),
        ];
        let data = RecordBatch::try_new(schema(), cols).unwrap();
        out.push(ChangeBatch::new(data, chunk.iter().map(|r| r.0).collect()));
        i += n;
    }
    out
}

fn final_rows(t: &Table) -> Vec<(RowKind, i32, i32, String, i32)> {
    let mut v: Vec<_> = t.rows.iter().map(|(k, (a, s, b))| (RowKind::Insert, *k, *a, s.clone(), *b)).collect();
    v.sort_by_key(|r| r.1);
    v
}

/// Runs `sql` with tables `l` and `r` fed from the given feeds; returns the materialized result.
fn run(sql: &str, lfeed: &str, rfeed: &str) -> std::result::Result<Vec<String>, String> {
    let mut reg = ConnectorRegistry::new();
    reg.register(Arc::new(ChangelogFactory));
    let mut session = Session::new(reg);
    let ddl = format!(
        "CREATE TABLE l (k INT NOT NULL, a INT NOT NULL, s STRING NOT NULL, b INT NOT NULL, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'changelog-test', 'feed' = '{lfeed}');
         CREATE TABLE r (k INT NOT NULL, a INT NOT NULL, s STRING NOT NULL, b INT NOT NULL, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'changelog-test', 'feed' = '{rfeed}');"
    );
    for st in rsql_sql::parse_script(&ddl).map_err(|e| e.to_string())? {
        if let rsql_sql::Statement::CreateTable(ct) = &st.statement {
            session.create_table(ct, st.location).map_err(|e| e.to_string())?;
        }
    }
    let q = rsql_sql::parse_script(sql).map_err(|e| e.to_string())?;
    let rsql_sql::Statement::Query(query) = &q[0].statement else { return Err("not a query".into()) };
    let plan = session.plan_query(query, Location::default()).map_err(|e| e.to_string())?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let create: SinkFactoryFn = Arc::new(move || Ok(Box::new(Collect(o2.clone())) as Box<dyn Sink>));
    let graph = session.build_job(&[], Some((&plan, create))).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let job = start_job(&graph, &JobOptions::default())?;
        job.wait().await
    })
    .map_err(|e| e.to_string())?;
    let batches = out.lock().unwrap().clone();
    let mut rows: Vec<String> = Vec::new();
    for b in &batches {
        let formatted = format_rows(&b.data);
        for (r, k) in formatted.into_iter().zip(&b.kinds) {
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

fn format_rows(b: &RecordBatch) -> Vec<String> {
    use rsql_common::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("NULL");
    let fmts: Vec<_> = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
    (0..b.num_rows()).map(|i| fmts.iter().map(|f| f.value(i).to_string()).collect::<Vec<_>>().join("|")).collect()
}

const QUERIES: &[&str] = &[
    // The seed's DWD join with its filter, then the DWS aggregate.
    "SELECT r.s, count(*) AS cnt, sum(r.b) AS total FROM l JOIN r ON l.k = r.a WHERE l.k <> -1 GROUP BY r.s",
    "SELECT l.k, l.s, r.k, r.b FROM l JOIN r ON l.k = r.a WHERE l.k <> 1",
    "SELECT l.k, r.k AS rk FROM l LEFT JOIN r ON l.k = r.a",
    "SELECT l.k, r.k AS rk FROM l RIGHT JOIN r ON l.k = r.a",
    "SELECT l.k, r.k AS rk FROM l FULL JOIN r ON l.k = r.a",
    "SELECT l.k, r.k AS rk FROM l LEFT JOIN r ON l.k = r.a AND r.b > 40",
    "SELECT a, min(b) AS mn, max(b) AS mx, min(s) AS ms FROM l GROUP BY a",
    "SELECT a, count(DISTINCT s) AS ds, count(DISTINCT b) AS db, sum(DISTINCT b) AS sdb FROM l GROUP BY a",
    "SELECT count(*) AS c, sum(b) AS sb, avg(b) AS ab FROM l",
    "SELECT s, count(*) FROM (SELECT k, s FROM l UNION ALL SELECT k, s FROM r) t GROUP BY s",
    "SELECT k + 1 AS k1, upper(s) AS us FROM l WHERE b > 50",
    "SELECT DISTINCT a, s FROM l",
    "SELECT x.s, count(*) AS c FROM (SELECT s, a, count(*) AS n FROM l GROUP BY s, a) x WHERE x.n > 1 GROUP BY x.s",
];

#[test]
fn incremental_equals_from_scratch() {
    let cases: u64 = std::env::var("RSQL_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let strings = ["beijing", "shanghai", "hangzhou"];
    let mut failures = Vec::new();
    let mut ran = 0;
    for seed in 0..cases {
        let mut rng = SmallRng::seed_from_u64(seed);
        let lt = random_table(&mut rng, 8, 40, &strings);
        let rt = random_table(&mut rng, 8, 40, &strings);
        let names = [format!("l{seed}"), format!("r{seed}"), format!("lf{seed}"), format!("rf{seed}")];
        {
            let mut f = feeds().lock().unwrap();
            f.insert(names[0].clone(), to_batches(&lt.log, &mut rng));
            f.insert(names[1].clone(), to_batches(&rt.log, &mut rng));
            f.insert(names[2].clone(), to_batches(&final_rows(&lt), &mut rng));
            f.insert(names[3].clone(), to_batches(&final_rows(&rt), &mut rng));
        }
        for q in QUERIES {
            let inc = run(q, &names[0], &names[1]);
            let full = run(q, &names[2], &names[3]);
            ran += 1;
            match (inc, full) {
                (Ok(a), Ok(b)) if a == b => {}
                (a, b) => failures.push(format!(
                    "seed {seed}: {q}\n  changelog  l={:?}\n  changelog  r={:?}\n  incremental: {:?}\n  from scratch: {:?}",
                    lt.log, rt.log, a, b
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {ran} cases differ; first:\n{}", failures.len(), failures[0]);
    eprintln!("differential: {ran} cases agree");
}
