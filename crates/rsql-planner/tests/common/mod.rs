//! Pieces the planner's engine tests share: registered feeds and the test source replaying them,
//! a collecting sink, running a query to its end, random changelogs over the tables `l` / `r` (k, a, s, b) cut into batches,
//! and rows as text.
#![allow(dead_code)]

use std::collections::HashMap;

use async_trait::async_trait;
use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec};
use rsql_common::Result;
use rsql_runtime::{ChangelogMode, ConnectorFactory, ProducedColumn, Sink, Source, SourceContext, SourceInfo};
use std::sync::{Arc, Mutex, OnceLock};

use rand::rngs::SmallRng;
use rand::Rng;
use rsql_common::arrow::array::{ArrayRef, Int32Array, StringArray};
use rsql_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, RowKind};

/// Batches that test sources replay, by the name in their 'feed' option.
pub type Feeds = Mutex<HashMap<String, Vec<ChangeBatch>>>;

pub fn feeds() -> &'static Feeds {
    static F: OnceLock<Feeds> = OnceLock::new();
    F.get_or_init(|| Mutex::new(HashMap::new()))
}

/// One change of tables `l` / `r` (k, a, s, b), keyed by k.
pub type Change = (RowKind, i32, i32, String, i32);

/// A random changelog of inserts, updates and deletes over `keys` keys.
pub fn random_changelog(rng: &mut SmallRng, keys: i32, ops: usize, strings: &[&str]) -> Vec<Change> {
    let mut rows: HashMap<i32, (i32, String, i32)> = HashMap::new();
    let mut log = Vec::new();
    for _ in 0..ops {
        let k = rng.random_range(0..keys);
        let a = rng.random_range(-2..6);
        let s = strings[rng.random_range(0..strings.len())].to_string();
        let b = rng.random_range(0..100);
        match rows.get(&k).cloned() {
            None => {
                rows.insert(k, (a, s.clone(), b));
                log.push((RowKind::Insert, k, a, s, b));
            }
            Some(old) => {
                if rng.random_bool(0.3) {
                    rows.remove(&k);
                    log.push((RowKind::Delete, k, old.0, old.1, old.2));
                } else {
                    log.push((RowKind::UpdateBefore, k, old.0, old.1.clone(), old.2));
                    rows.insert(k, (a, s.clone(), b));
                    log.push((RowKind::UpdateAfter, k, a, s, b));
                }
            }
        }
    }
    log
}

pub fn lr_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("a", DataType::Int32, false),
        Field::new("s", DataType::Utf8, false),
        Field::new("b", DataType::Int32, false),
    ]))
}

pub fn lr_batch(rows: &[Change]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(lr_schema(), cols).unwrap()
}

/// Splits a changelog into batches of 1-8 rows, keeping each update pair in one batch.
pub fn changelog_batches(rows: &[Change], rng: &mut SmallRng) -> Vec<ChangeBatch> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let mut n = rng.random_range(1..=8).min(rows.len() - i);
        if rows[i + n - 1].0 == RowKind::UpdateBefore && i + n < rows.len() {
            n += 1;
        }
        let chunk = &rows[i..i + n];
        out.push(ChangeBatch::new(lr_batch(chunk), chunk.iter().map(|r| r.0).collect()));
        i += n;
    }
    out
}

/// Rows as `a|b|c` text, NULL as `NULL`.
pub fn format_rows(b: &RecordBatch) -> Vec<String> {
    use rsql_common::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("NULL");
    let fmts: Vec<_> = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
    (0..b.num_rows()).map(|i| fmts.iter().map(|f| f.value(i).to_string()).collect::<Vec<_>>().join("|")).collect()
}

/// A bounded test source replaying the registered feed named by its 'feed' option: a changelog,
/// or inserts only with 'mode' = 'append'; with 'hold' = 'true' it then stays open (sending
/// nothing) until the job stops. The field is the connector name scripts use.
pub struct FeedFactory(pub &'static str);

struct Feed {
    batches: Vec<ChangeBatch>,
    hold: bool,
}

#[async_trait]
impl Source for Feed {
    async fn run(&mut self, mut ctx: SourceContext) -> Result<()> {
        for b in self.batches.drain(..) {
            ctx.emit(b).await?;
        }
        if self.hold {
            ctx.stopped().await;
        }
        Ok(())
    }
}

impl ConnectorFactory for FeedFactory {
    fn name(&self) -> &'static str {
        self.0
    }
    fn options(&self, _t: &TableDef) -> OptionSchema {
        OptionSchema::new(vec![
            OptionSpec::required("feed", OptionKind::String),
            OptionSpec::optional("mode", OptionKind::Enum(&["changelog", "append"])),
            OptionSpec::optional("hold", OptionKind::Bool),
        ])
    }
    fn source_info(&self, t: &TableDef) -> Result<SourceInfo> {
        let mode = if t.option("mode") == Some("append") { ChangelogMode::InsertOnly } else { ChangelogMode::All };
        Ok(SourceInfo { changelog_mode: mode, bounded: t.option("hold") != Some("true") })
    }
    fn create_source(&self, t: &TableDef, _c: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        let key = t.option("feed").unwrap_or_default().to_string();
        let batches = feeds().lock().unwrap().remove(&key).unwrap_or_default();
        Ok(Box::new(Feed { batches, hold: t.option("hold") == Some("true") }))
    }
    fn create_sink(&self, _t: &TableDef, _m: &ChangelogMode) -> Result<Box<dyn Sink>> {
        Err(rsql_common::RsqlError::unsupported("test source only"))
    }
}

/// A sink keeping every batch it is given.
pub struct Collect(pub Arc<Mutex<Vec<ChangeBatch>>>);

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

/// Plans the query `sql` in `session`, runs it to its end on a current-thread runtime and
/// returns every batch its sink was given, in order.
pub fn run_query(session: &rsql_planner::Session, sql: &str) -> std::result::Result<Vec<ChangeBatch>, String> {
    let q = rsql_sql::parse_script(sql).map_err(|e| e.to_string())?;
    let rsql_sql::Statement::Query(query) = &q[0].statement else { return Err("not a query".to_string()) };
    let plan = session.plan_query(query, rsql_common::Location::default()).map_err(|e| e.to_string())?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let create: rsql_runtime::graph::SinkFactoryFn = Arc::new(move || Ok(Box::new(Collect(o2.clone())) as Box<dyn Sink>));
    let graph = session.build_job(&[], Some((&plan, create))).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let job = rsql_runtime::start_job(&graph, &rsql_runtime::JobOptions::default())?;
        job.wait().await
    })
    .map_err(|e| e.to_string())?;
    let batches = out.lock().unwrap().clone();
    Ok(batches)
}
