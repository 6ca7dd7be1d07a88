//! Crash and outage recovery of the seed pipeline, end to end, on a MariaDB and a broker of this
//! test's own (so it can restart them): sql/demo.sql runs with checkpoints every 100 ms while a
//! writer keeps changing MariaDB. rsql-client is killed with SIGKILL during the snapshot phase
//! and again during the binlog phase and restarted each time; the broker and then MariaDB are
//! restarted under it; finally it is killed once more after the writer stopped and the time from
//! the kill to the topics matching MariaDB is measured. Every topic must end equal to what
//! MariaDB computes over its own tables: no key lost, no value wrong.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{diff, expected_layers_with, normalized, parse_layers, random_transaction, root, Layers, SmallRng, REGIONS};

const MYSQL_PORT: u16 = 13326;
const KAFKA_PORT: u16 = 19097;
const DB: &str = "flink_cdc";
/// Customers in the table; orders spread over them. With few customers every customer change
/// rewrites thousands of DWD rows, which measures the broker rather than recovery.
const CUSTOMERS: u64 = 2000;

fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("rsql-recovery-e2e-{}", std::process::id()))
}

fn env() -> Vec<(&'static str, String)> {
    let w = work_dir();
    vec![
        ("RSQL_MYSQL_PORT", MYSQL_PORT.to_string()),
        ("RSQL_MYSQL_DIR", w.join("mariadb").display().to_string()),
        ("RSQL_KAFKA_PORT", KAFKA_PORT.to_string()),
        ("RSQL_KAFKA_DIR", w.join("kafka").display().to_string()),
    ]
}

fn try_sh(script: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash").current_dir(root()).arg(script).args(args).envs(env()).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{script} {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn sh(script: &str, args: &[&str]) -> String {
    common::sh(script, args, &env())
}

fn mysql(sql: &str) -> String {
    sh("scripts/mariadb.sh", &["sql", sql])
}

/// Stops this test's servers however the test ends.
struct Services;

impl Drop for Services {
    fn drop(&mut self) {
        let _ = try_sh("scripts/kafka.sh", &["stop"]);
        let _ = try_sh("scripts/mariadb.sh", &["stop"]);
        let _ = std::fs::remove_dir_all(work_dir());
    }
}

struct Pipeline {
    child: Child,
}

impl Pipeline {
    fn start() -> Pipeline {
        let init = work_dir().join("checkpointing.sql");
        let child = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
            .current_dir(root())
            .args(["-i", init.to_str().unwrap_or_default(), "-f", "sql/demo.sql"])
            .args(["-D", &format!("MYSQL_PORT={MYSQL_PORT}"), "-D", &format!("MYSQL_DATABASE={DB}")])
            .args(["-D", &format!("KAFKA_BOOTSTRAP=127.0.0.1:{KAFKA_PORT}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsql-client");
        Pipeline { child }
    }

    /// SIGKILL: no savepoint, no flush.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newest complete checkpoint file of the demo's job, as bytes.
fn latest_checkpoint() -> Option<Vec<u8>> {
    let dir = work_dir().join("ckpt").join("demo-1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("chk-")))
        .collect();
    files.sort();
    std::fs::read(files.last()?).ok()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn wait_until(what: &str, secs: u64, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the four layers with rsql's own bounded SELECTs; numbers normalized, rows sorted.
fn layers() -> Option<Layers> {
    let out = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
        .current_dir(root())
        .args(["-f", "sql/show_layers.sql", "-D", &format!("KAFKA_BOOTSTRAP=127.0.0.1:{KAFKA_PORT}")])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let tables = normalized(&parse_layers(&String::from_utf8_lossy(&out.stdout)));
    (tables.len() == 4).then_some(tables)
}

fn describe_diff(got: &Layers, want: &Layers) -> String {
    let names = ["ods_order", "ods_customers", "dwd", "dws"];
    (0..4).map(|i| diff(names[i], &got[i], &want[i])).collect()
}

/// Random transactions (customers -1 to CUSTOMERS - 2) until `stop`; errors (a server restarting) are skipped.
fn writer(stop: Arc<AtomicBool>, count: Arc<AtomicU64>, mut next_order: u64) {
    let mut rng = SmallRng(0x7e57_c0de_1234);
    while !stop.load(Ordering::Relaxed) {
        let (tx, n) = random_transaction(DB, &mut rng, &mut next_order, CUSTOMERS);
        if try_sh("scripts/mariadb.sh", &["sql", &tx]).is_ok() {
            count.fetch_add(n, Ordering::Relaxed);
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn kills_and_outages_lose_nothing() {
    let _ = std::fs::remove_dir_all(work_dir());
    std::fs::create_dir_all(work_dir()).expect("work dir");
    let _services = Services;
    sh("scripts/mariadb.sh", &["start"]);
    sh("scripts/kafka.sh", &["start"]);
    for t in ["ods_order", "ods_customers", "dwd_order_customer_valid", "dws_agg_by_region"] {
        sh("scripts/kafka.sh", &["create-topic", t]);
    }
    let ddl = std::fs::read_to_string(root().join("sql/mysql/seed_tables.sql")).expect("seed_tables.sql");
    mysql(&format!("DROP DATABASE IF EXISTS {DB}; {ddl}"));
    std::fs::write(
        work_dir().join("checkpointing.sql"),
        format!(
            "SET 'execution.checkpointing.interval' = '100ms';\nSET 'execution.checkpointing.dir' = 'file://{}';\nSET 'state.checkpoints.num-retained' = '2';\n",
            work_dir().join("ckpt").display()
        ),
    )
    .expect("init file");

    // Rows before the job: the snapshot phase has some work to do.
    let orders: u64 = std::env::var("RSQL_RECOVERY_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000);
    let mut rng = SmallRng(0x5eed_0bad_f00d);
    let customers: Vec<String> = (0..CUSTOMERS).map(|c| format!("({c}, {}, 'c{c}')", 20 + c % 50)).collect();
    mysql(&format!("INSERT INTO {DB}.customers VALUES {};", customers.join(",")));
    for chunk in (1..=orders).collect::<Vec<_>>().chunks(2000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|o| format!("({o}, {}, '{}', {})", rng.below(100) + 1, REGIONS[rng.below(4) as usize], rng.below(CUSTOMERS) as i64 - 1))
            .collect();
        mysql(&format!("INSERT INTO {DB}.orders VALUES {};", rows.join(",")));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let w = {
        let (stop, count) = (stop.clone(), count.clone());
        std::thread::spawn(move || writer(stop, count, orders))
    };

    // 1. SIGKILL while the snapshot is being read.
    let p = Pipeline::start();
    wait_until("a checkpoint taken during the snapshot", 120, || latest_checkpoint().is_some_and(|c| contains(&c, "\"snapshot\":{")));
    p.kill9();
    eprintln!("recovery: killed during the snapshot phase");

    // 2. SIGKILL while the binlog is being read.
    let p = Pipeline::start();
    wait_until("a checkpoint taken after the snapshot", 180, || {
        latest_checkpoint().is_some_and(|c| contains(&c, "\"snapshot\":null") && !contains(&c, "\"snapshot\":{"))
    });
    std::thread::sleep(Duration::from_secs(1));
    p.kill9();
    eprintln!("recovery: killed during the binlog phase");
    let p = Pipeline::start();
    std::thread::sleep(Duration::from_secs(2));

    // 3. The broker restarts (its storage is durable).
    sh("scripts/kafka.sh", &["stop"]);
    std::thread::sleep(Duration::from_secs(2));
    sh("scripts/kafka.sh", &["start"]);
    eprintln!("recovery: broker restarted");
    std::thread::sleep(Duration::from_secs(2));

    // 4. MariaDB restarts.
    sh("scripts/mariadb.sh", &["stop"]);
    std::thread::sleep(Duration::from_secs(1));
    sh("scripts/mariadb.sh", &["start"]);
    eprintln!("recovery: MariaDB restarted");
    std::thread::sleep(Duration::from_secs(3));

    // 5. The writer stops; one more SIGKILL; time from the kill until the topics match MariaDB.
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    let want = expected_layers_with(DB, mysql);
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    p.kill9();
    let _p = Pipeline::start();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = None;
    loop {
        if let Some(got) = layers() {
            if got == want {
                break;
            }
            last = Some(got);
        }
        if Instant::now() > deadline {
            let msg = last.map(|l| describe_diff(&l, &want)).unwrap_or_else(|| "the topics could not be read".into());
            panic!("topics never matched MariaDB after the kills and restarts:\n{msg}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "recovery: {orders} orders before the job, {} changes while it ran; 3 kills, a broker and a MariaDB restart; {} orders, {} DWD rows, {} regions agree with MariaDB; kill to caught up {:.1} s",
        count.load(Ordering::Relaxed),
        want[0].len(),
        want[2].len(),
        want[3].len(),
        killed.elapsed().as_secs_f64()
    );
}
