//! Recovery test of checkpoints: a job over random changelogs is killed (its tasks dropped, no
//! flush, no goodbye) one or more times at random moments and restarted from its latest
//! checkpoint; the upsert sink's final contents must equal those of a run that was never
//! interrupted. The sources resume from their saved positions and every operator from its
//! saved state, so a lost or doubled change would show as a wrong count or sum.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec};
use rsql_common::{ChangeBatch, Location, Result, RowKind, RsqlError};
use rsql_planner::Session;

mod common;
use common::{changelog_batches, feeds, format_rows, random_changelog};
use rsql_runtime::checkpoint::{CheckpointStore, LocalDirStore};
use rsql_runtime::{
    start_job, ChangelogMode, CheckpointOptions, ConnectorFactory, ConnectorRegistry, JobGraph, JobOptions, ProducedColumn,
    Sink, Source, SourceContext, SourceInfo,
};


type Outs = Mutex<HashMap<String, Arc<Mutex<BTreeMap<String, String>>>>>;

fn outs() -> &'static Outs {
    static O: OnceLock<Outs> = OnceLock::new();
    O.get_or_init(|| Mutex::new(HashMap::new()))
}

struct TestFactory;

/// Emits its feed one batch at a time, each followed by its position (the next batch's index).
struct Feed {
    batches: Vec<ChangeBatch>,
    next: usize,
}

#[async_trait]
impl Source for Feed {
    async fn run(&mut self, ctx: SourceContext) -> Result<()> {
        while self.next < self.batches.len() {
            ctx.emit(self.batches[self.next].clone()).await?;
            self.next += 1;
            ctx.position((self.next as u64).to_le_bytes().to_vec()).await?;
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        Ok(())
    }

    fn checkpointable(&self) -> bool {
        true
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let b: [u8; 8] = position.try_into().map_err(|_| RsqlError::execution("bad test position"))?;
        self.next = u64::from_le_bytes(b) as usize;
        Ok(())
    }
}

/// Applies upserts by primary key (the first `key_len` columns): +I/+U put, -D removes.
struct Upserts {
    key_len: usize,
    state: Arc<Mutex<BTreeMap<String, String>>>,
}

#[async_trait]
impl Sink for Upserts {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        let rows = format_rows(&batch.data);
        let mut st = self.state.lock().unwrap();
        for (r, k) in rows.into_iter().zip(&batch.kinds) {
            let key = r.split('|').take(self.key_len).collect::<Vec<_>>().join("|");
            match k {
                RowKind::Insert | RowKind::UpdateAfter => {
                    st.insert(key, r);
                }
                RowKind::Delete => {
                    st.remove(&key);
                }
                RowKind::UpdateBefore => {}
            }
        }
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl ConnectorFactory for TestFactory {
    fn name(&self) -> &'static str {
        "recovery-test"
    }
    fn options(&self, _t: &TableDef) -> OptionSchema {
        OptionSchema::new(vec![OptionSpec::optional("feed", OptionKind::String), OptionSpec::optional("out", OptionKind::String)])
    }
    fn source_info(&self, _t: &TableDef) -> Result<SourceInfo> {
        Ok(SourceInfo { changelog_mode: ChangelogMode::All, bounded: true })
    }
    fn create_source(&self, t: &TableDef, _c: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        let key = t.option("feed").unwrap_or_default().to_string();
        let batches = feeds().lock().unwrap().get(&key).cloned().unwrap_or_default();
        Ok(Box::new(Feed { batches, next: 0 }))
    }
    fn create_sink(&self, t: &TableDef, _m: &ChangelogMode) -> Result<Box<dyn Sink>> {
        let key = t.option("out").unwrap_or_default().to_string();
        let state = outs().lock().unwrap().entry(key).or_default().clone();
        Ok(Box::new(Upserts { key_len: t.primary_key.as_ref().map(|k| k.len()).unwrap_or(0), state }))
    }
}




/// Jobs: (sink DDL columns with primary key, INSERT's SELECT).
const JOBS: &[(&str, &str)] = &[
    // The seed's DWD join and DWS aggregate, as one statement set would run them.
    (
        "s STRING NOT NULL, cnt BIGINT, total BIGINT, PRIMARY KEY (s) NOT ENFORCED",
        "SELECT r.s, count(*) AS cnt, sum(r.b) AS total FROM l JOIN r ON l.k = r.a WHERE l.k <> -1 GROUP BY r.s",
    ),
    (
        "rk INT NOT NULL, lk INT, s STRING, PRIMARY KEY (rk) NOT ENFORCED",
        "SELECT r.k AS rk, l.k AS lk, l.s FROM r LEFT JOIN l ON r.a = l.k",
    ),
    (
        "a INT NOT NULL, mn INT, mx INT, ds BIGINT, PRIMARY KEY (a) NOT ENFORCED",
        "SELECT a, min(b) AS mn, max(b) AS mx, count(DISTINCT s) AS ds FROM l GROUP BY a",
    ),
    (
        "s STRING NOT NULL, c BIGINT, PRIMARY KEY (s) NOT ENFORCED",
        "SELECT x.s, count(*) AS c FROM (SELECT s, a, count(*) AS n FROM l GROUP BY s, a) x WHERE x.n > 1 GROUP BY x.s",
    ),
];

fn plan(job: usize, lfeed: &str, rfeed: &str, out: &str) -> JobGraph {
    let mut reg = ConnectorRegistry::new();
    reg.register(Arc::new(TestFactory));
    let mut session = Session::new(reg);
    let (cols, select) = JOBS[job];
    let ddl = format!(
        "CREATE TABLE l (k INT NOT NULL, a INT NOT NULL, s STRING NOT NULL, b INT NOT NULL, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'recovery-test', 'feed' = '{lfeed}');
         CREATE TABLE r (k INT NOT NULL, a INT NOT NULL, s STRING NOT NULL, b INT NOT NULL, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'recovery-test', 'feed' = '{rfeed}');
         CREATE TABLE o ({cols}) WITH ('connector' = 'recovery-test', 'out' = '{out}');"
    );
    for st in rsql_sql::parse_script(&ddl).unwrap() {
        if let rsql_sql::Statement::CreateTable(ct) = &st.statement {
            session.create_table(ct, st.location).unwrap();
        }
    }
    let ins = rsql_sql::parse_script(&format!("INSERT INTO o {select}")).unwrap();
    let rsql_sql::Statement::Insert { table, columns, query, .. } = &ins[0].statement else { panic!("not an insert") };
    let p = session.plan_insert(table, columns, query, Location::default()).unwrap();
    session.build_job(&[p], None).unwrap()
}

fn result(out: &str) -> BTreeMap<String, String> {
    outs().lock().unwrap().get(out).map(|s| s.lock().unwrap().clone()).unwrap_or_default()
}

#[test]
fn killed_and_restarted_jobs_end_like_uninterrupted_ones() {
    let cases: u64 = std::env::var("RSQL_RECOVERY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let base = std::env::temp_dir().join(format!("rsql-recovery-{}", std::process::id()));
    let mut restores = 0;
    for seed in 0..cases {
        for job in 0..JOBS.len() {
            let mut rng = SmallRng::seed_from_u64(seed * 31 + job as u64);
            let (lf, rf) = (format!("l{seed}-{job}"), format!("r{seed}-{job}"));
            {
                let mut f = feeds().lock().unwrap();
                let strings = ["beijing", "shanghai", "hangzhou", "shenzhen"];
                let (l, r) = (random_changelog(&mut rng, 12, 400, &strings), random_changelog(&mut rng, 12, 400, &strings));
                f.insert(lf.clone(), changelog_batches(&l, &mut rng));
                f.insert(rf.clone(), changelog_batches(&r, &mut rng));
            }
            // Uninterrupted.
            let expected_out = format!("x{seed}-{job}");
            let g = plan(job, &lf, &rf, &expected_out);
            rt.block_on(async { start_job(&g, &JobOptions::default()).unwrap().wait().await }).unwrap();
            let expected = result(&expected_out);

            // Killed at random moments, restarted from the latest checkpoint.
            let out = format!("y{seed}-{job}");
            let dir = base.join(format!("{seed}-{job}"));
            let store: Arc<dyn CheckpointStore> = Arc::new(LocalDirStore::new(&dir, 2));
            let kills = rng.random_range(1..=3);
            for attempt in 0..=kills {
                let g = plan(job, &lf, &rf, &out);
                let restore = store.latest().unwrap();
                if restore.is_some() {
                    restores += 1;
                }
                let opts = JobOptions {
                    checkpoint: Some(CheckpointOptions {
                        job: format!("recovery-{seed}-{job}"),
                        interval: Duration::from_millis(rng.random_range(1..8)),
                        timeout: Duration::from_secs(30),
                        tolerable_failures: 0,
                        store: store.clone(),
                        restore,
                    }),
                    ..JobOptions::default()
                };
                let kill_after = Duration::from_millis(rng.random_range(5..60));
                rt.block_on(async {
                    let running = start_job(&g, &opts).unwrap();
                    if attempt < kills {
                        tokio::time::sleep(kill_after).await;
                        drop(running);
                        // Let the aborted tasks unwind before the next process starts.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    } else {
                        running.wait().await.unwrap();
                    }
                });
            }
            let got = result(&out);
            assert_eq!(
                got, expected,
                "seed {seed}, job {job} ({}), {kills} kills: the restarted job's result differs",
                JOBS[job].1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    assert!(restores > 0, "no run restored from a checkpoint");
    eprintln!("recovery: {} jobs agree after {restores} restores", cases as usize * JOBS.len());
}
