//! Helpers the end-to-end tests share: the repository's service scripts (MariaDB, a private
//! Kafka-protocol broker per test), the client as a child process, the seed's MariaDB tables,
//! the random workload over them and MariaDB's own answer for each of the seed's four layers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Runs `rsql-client -f file` from the repository root; returns its exit code, stdout and stderr.
pub fn run_client_file(file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rsql-client")).current_dir(root()).arg("-f").arg(file).output().expect("run rsql-client");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn sh(script: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let mut c = Command::new("bash");
    c.current_dir(root()).arg(script).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run script");
    assert!(out.status.success(), "{script} {args:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs SQL as MariaDB's root; returns the tab-separated output with its header line.
pub fn mysql(sql: &str) -> String {
    sh("scripts/mariadb.sh", &["sql", sql], &[])
}

/// A broker of this test's own, stopped when dropped.
pub struct Broker {
    env: Vec<(&'static str, String)>,
    pub bootstrap: String,
}

impl Broker {
    /// Starts a broker on `port` with the seed's four topics.
    pub fn start(port: u16) -> Broker {
        let dir = std::env::temp_dir().join(format!("rsql-seed-kafka-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let env = vec![("RSQL_KAFKA_PORT", port.to_string()), ("RSQL_KAFKA_DIR", dir.display().to_string())];
        sh("scripts/kafka.sh", &["start"], &env);
        for t in ["ods_order", "ods_customers", "dwd_order_customer_valid", "dws_agg_by_region"] {
            sh("scripts/kafka.sh", &["create-topic", t], &env);
        }
        Broker { env, bootstrap: format!("127.0.0.1:{port}") }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash").current_dir(root()).arg("scripts/kafka.sh").arg("stop").envs(self.env.iter().map(|(k, v)| (*k, v.as_str()))).output();
    }
}

/// A running `rsql-client -f script`, stopped with SIGTERM when dropped.
pub struct Pipeline {
    child: Child,
}

impl Pipeline {
    /// Runs `script` with `-D NAME=VALUE` for each define.
    pub fn start(script: &str, defines: &[(&str, String)]) -> Pipeline {
        let mut args: Vec<String> = vec!["-f".into(), script.into()];
        for (k, v) in defines {
            args.push("-D".into());
            args.push(format!("{k}={v}"));
        }
        let child = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
            .current_dir(root())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsql-client");
        Pipeline { child }
    }

    /// Asks the client to stop (SIGTERM: sources stop, sinks flush) and waits for its exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Kills the client with SIGKILL (no flush, no goodbye) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status if the client has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.stop();
        }
    }
}

/// The client's shell with standard input, output and error piped (it reads statements from
/// standard input when that is not a terminal).
pub fn shell() -> Child {
    Command::new(env!("CARGO_BIN_EXE_rsql-client"))
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rsql-client")
}

/// The seed's MariaDB tables (sql/mysql/seed_tables.sql) in database `db`, created afresh.
pub fn create_source_tables(db: &str) {
    let ddl = std::fs::read_to_string(root().join("sql/mysql/seed_tables.sql")).expect("seed_tables.sql").replace("flink_cdc", db);
    mysql(&format!("DROP DATABASE IF EXISTS {db}; {ddl}"));
}

/// Numbers compare by value (MariaDB prints 10, rsql 10.0).
pub fn num(c: &str) -> String {
    let c = c.trim();
    match c.parse::<f64>() {
        Ok(v) => format!("{v:.3}"),
        Err(_) => c.to_string(),
    }
}

/// Rows of `mysql` output (header skipped), cells normalized with [`num`], sorted.
pub fn norm(t: &str) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = t.lines().skip(1).filter(|l| !l.trim().is_empty()).map(|l| l.split('\t').map(num).collect()).collect();
    v.sort();
    v
}

pub struct SmallRng(pub u64);

impl SmallRng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub const REGIONS: [&str; 4] = ["beijing", "shanghai", "hangzhou", "shenzhen"];

/// Customers 0..10 and orders 1..=50 in `db` (read by the snapshot); returns the last order id.
pub fn seed_rows_before(db: &str, rng: &mut SmallRng) -> u64 {
    let mut pre = String::new();
    for c in 0..10 {
        pre.push_str(&format!("INSERT INTO {db}.customers VALUES ({c}, {}, 'c{c}');", 20 + c));
    }
    for o in 1..=50 {
        pre.push_str(&format!(
            "INSERT INTO {db}.orders VALUES ({o}, {}, '{}', {});",
            rng.below(100) + 1,
            REGIONS[rng.below(4) as usize],
            rng.below(12) as i64 - 1
        ));
    }
    mysql(&pre);
    50
}

/// One random transaction of 1 to 4 statements over `db`: new orders, orders moved between
/// regions, revenue changes, deleted orders, customers replaced and deleted, with customer ids
/// from -1 (the one the DWD filter drops) to `customers - 2`. Returns the SQL and its statement
/// count.
pub fn random_transaction(db: &str, rng: &mut SmallRng, next_order: &mut u64, customers: u64) -> (String, u64) {
    let n = rng.below(4) + 1;
    let mut tx = String::from("START TRANSACTION;");
    for _ in 0..n {
        let stmt = match rng.below(7) {
            0 | 1 => {
                *next_order += 1;
                format!(
                    "INSERT INTO {db}.orders VALUES ({}, {}, '{}', {});",
                    *next_order,
                    rng.below(100) + 1,
                    REGIONS[rng.below(4) as usize],
                    rng.below(customers) as i64 - 1
                )
            }
            2 => format!("UPDATE {db}.orders SET order_region = '{}' WHERE order_id = {};", REGIONS[rng.below(4) as usize], rng.below(*next_order + 1)),
            3 => format!("UPDATE {db}.orders SET order_revenue = order_revenue + 1 WHERE order_id = {};", rng.below(*next_order + 1)),
            4 => format!("DELETE FROM {db}.orders WHERE order_id = {};", rng.below(*next_order + 1)),
            5 => {
                let c = rng.below(customers) as i64 - 1;
                format!("REPLACE INTO {db}.customers VALUES ({c}, {}, 'c{c}x');", 20 + rng.below(50))
            }
            _ => format!("DELETE FROM {db}.customers WHERE customer_id = {};", rng.below(customers) as i64 - 1),
        };
        tx.push_str(&stmt);
    }
    tx.push_str("COMMIT;");
    (tx, n)
}

/// `ops` random changes (see [`random_transaction`]) over customers -1 to 10.
pub fn random_workload(db: &str, rng: &mut SmallRng, next_order: &mut u64, ops: u64) {
    let mut done = 0;
    while done < ops {
        let (tx, n) = random_transaction(db, rng, next_order, 12);
        mysql(&tx);
        done += n;
    }
}

/// The seed's four layers (ODS orders, ODS customers, DWD, DWS), each as sorted rows of cells.
pub type Layers = Vec<Vec<Vec<String>>>;

/// The tables sql/show_layers.sql prints, cells trimmed, rows sorted.
pub fn parse_layers(text: &str) -> Layers {
    let mut tables: Layers = Vec::new();
    let mut cur: Option<Vec<Vec<String>>> = None;
    let mut seps = 0;
    for line in text.lines() {
        if line.starts_with("+-") {
            seps += 1;
            if cur.is_none() {
                cur = Some(Vec::new());
                seps = 1;
            }
        } else if line.starts_with('|') {
            if seps >= 2 {
                let cells: Vec<String> = line.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect();
                cur.get_or_insert_with(Vec::new).push(cells);
            }
        } else if line.ends_with("in set") {
            let mut t = cur.take().unwrap_or_default();
            t.sort();
            tables.push(t);
        }
    }
    tables
}

/// Layers with numbers compared by value ([`num`]), rows sorted again.
pub fn normalized(l: &Layers) -> Layers {
    l.iter()
        .map(|t| {
            let mut v: Vec<Vec<String>> = t.iter().map(|r| r.iter().map(|c| num(c)).collect()).collect();
            v.sort();
            v
        })
        .collect()
}

/// MariaDB's own answer for the four layers over the source tables in `db`: ODS orders, ODS
/// customers, the DWD join and the DWS aggregate, normalized and sorted.
pub fn expected_layers(db: &str) -> Layers {
    expected_layers_with(db, mysql)
}

/// [`expected_layers`] through `sql`, a function running SQL on the MariaDB to ask.
pub fn expected_layers_with(db: &str, sql: impl Fn(&str) -> String) -> Layers {
    let q_dwd = format!(
        "SELECT o.order_id, o.order_revenue, o.order_region, c.customer_id, c.customer_age, c.customer_name FROM {db}.customers c JOIN {db}.orders o ON c.customer_id = o.customer_id WHERE c.customer_id <> -1"
    );
    let q_dws = format!("SELECT order_region, COUNT(*), SUM(order_revenue) FROM ({q_dwd}) t GROUP BY order_region");
    vec![
        norm(&sql(&format!("SELECT order_id, order_revenue, order_region, customer_id FROM {db}.orders"))),
        norm(&sql(&format!("SELECT customer_id, customer_age, customer_name FROM {db}.customers"))),
        norm(&sql(&q_dwd)),
        norm(&sql(&q_dws)),
    ]
}

/// What differs between a layer and its expectation, for failure messages.
pub fn diff(name: &str, got: &[Vec<String>], want: &[Vec<String>]) -> String {
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).collect();
    let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).collect();
    format!("{name}: {} rows, want {}; missing {missing:?}; extra {extra:?}\n", got.len(), want.len())
}
