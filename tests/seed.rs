//! The seed's layered warehouse end to end, on a real MariaDB and a real Kafka-protocol broker:
//! sql/demo.sql runs unchanged (placeholders aside) in rsql-client, rows go into MariaDB, and the
//! four topics are read back with rsql's own bounded SELECTs (sql/show_layers.sql).
//!
//! Each test starts its own broker (own port and data dir) because the demo's topic names are
//! fixed; both share the MariaDB of scripts/mariadb.sh with a database of their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn sh(script: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let mut c = Command::new("bash");
    c.current_dir(root()).arg(script).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run script");
    assert!(out.status.success(), "{script} {args:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mysql(sql: &str) -> String {
    sh("scripts/mariadb.sh", &["sql", sql], &[])
}

/// A broker of this test's own, stopped when dropped.
struct Broker {
    env: Vec<(&'static str, String)>,
    bootstrap: String,
}

impl Broker {
    fn start(port: u16) -> Broker {
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

/// The running pipeline, stopped with SIGTERM when dropped.
struct Pipeline {
    child: Child,
}

impl Pipeline {
    fn start(db: &str, bootstrap: &str) -> Pipeline {
        let child = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
            .current_dir(root())
            .args(["-f", "sql/demo.sql", "-D", &format!("MYSQL_DATABASE={db}"), "-D", &format!("KAFKA_BOOTSTRAP={bootstrap}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsql-client");
        Pipeline { child }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Layers = Vec<Vec<Vec<String>>>;

/// Reads the four layers (ODS orders, ODS customers, DWD, DWS) as sorted rows of cells.
fn layers(bootstrap: &str) -> Layers {
    let out = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
        .current_dir(root())
        .args(["-f", "sql/show_layers.sql", "-D", &format!("KAFKA_BOOTSTRAP={bootstrap}")])
        .output()
        .expect("run show_layers");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "show_layers failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
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

fn rows(v: &[&[&str]]) -> Vec<Vec<String>> {
    let mut r: Vec<Vec<String>> = v.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect();
    r.sort();
    r
}

fn wait_for(bootstrap: &str, what: &str, pred: impl Fn(&Layers) -> bool) -> Layers {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = layers(bootstrap);
        if l.len() == 4 && pred(&l) {
            return l;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; layers now: {l:#?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn create_source_tables(db: &str) {
    let ddl = std::fs::read_to_string(root().join("sql/mysql/seed_tables.sql")).expect("seed_mysql.sql").replace("flink_cdc", db);
    mysql(&format!("DROP DATABASE IF EXISTS {db}; {ddl}"));
}

#[test]
fn seed_steps_and_more() {
    sh("scripts/mariadb.sh", &["start"], &[]);
    let broker = Broker::start(19094);
    let db = format!("seed_e2e_{}", std::process::id());
    create_source_tables(&db);
    let _job = Pipeline::start(&db, &broker.bootstrap);
    std::thread::sleep(Duration::from_secs(2));

    // The seed's Step 6.
    let rows_sql = std::fs::read_to_string(root().join("sql/mysql/seed_rows.sql")).expect("seed_rows.sql").replace("flink_cdc", &db);
    mysql(&rows_sql);
    let l = wait_for(&broker.bootstrap, "the seed's DWS row", |l| l[3] == rows(&[&["beijing", "2", "20.0"]]));
    assert_eq!(l[0], rows(&[&["1", "10.0", "beijing", "1"], &["2", "10.0", "beijing", "1"]]));
    assert_eq!(l[1], rows(&[&["1", "22.0", "emr_test"]]));
    assert_eq!(l[2], rows(&[&["1", "10.0", "beijing", "1", "22.0", "emr_test"], &["2", "10.0", "beijing", "1", "22.0", "emr_test"]]));

    // An update moves an order to another region.
    mysql(&format!("UPDATE {db}.orders SET order_region = 'shanghai' WHERE order_id = 2"));
    wait_for(&broker.bootstrap, "the moved order", |l| l[3] == rows(&[&["beijing", "1", "10.0"], &["shanghai", "1", "10.0"]]));

    // An order of customer -1 is filtered out of DWD, even when that customer exists.
    mysql(&format!("INSERT INTO {db}.customers VALUES (-1, 30, 'nobody'); INSERT INTO {db}.orders VALUES (3, 7, 'beijing', -1)"));
    let l = wait_for(&broker.bootstrap, "order 3 in ODS", |l| l[0].len() == 3 && l[1].len() == 2);
    assert_eq!(l[2].len(), 2, "order 3 must not reach DWD: {l:#?}");

    // An order that arrives before its customer joins once the customer comes.
    mysql(&format!("INSERT INTO {db}.orders VALUES (4, 5, 'hangzhou', 2)"));
    let l = wait_for(&broker.bootstrap, "order 4 in ODS", |l| l[0].len() == 4);
    assert_eq!(l[2].len(), 2, "order 4 has no customer yet: {l:#?}");
    mysql(&format!("INSERT INTO {db}.customers VALUES (2, 41, 'late')"));
    wait_for(&broker.bootstrap, "order 4 joined", |l| {
        l[3] == rows(&[&["beijing", "1", "10.0"], &["hangzhou", "1", "5.0"], &["shanghai", "1", "10.0"]])
    });

    // Deleting a customer takes its orders out of DWD; regions whose last order went away are
    // deleted from DWS.
    mysql(&format!("DELETE FROM {db}.customers WHERE customer_id = 1"));
    let l = wait_for(&broker.bootstrap, "customer 1 deleted", |l| l[3] == rows(&[&["hangzhou", "1", "5.0"]]));
    assert_eq!(l[2], rows(&[&["4", "5.0", "hangzhou", "2", "41.0", "late"]]));
    assert_eq!(l[1].len(), 2);
    mysql(&format!("DROP DATABASE {db}"));
}

/// Rows in the tables before the job starts (snapshot), then a random workload with multi-statement
/// transactions while it runs (binlog); the topics must end up equal to MariaDB's own join and
/// aggregate over its tables.
#[test]
fn oracle_random_workload() {
    sh("scripts/mariadb.sh", &["start"], &[]);
    let broker = Broker::start(19095);
    let db = format!("seed_oracle_{}", std::process::id());
    create_source_tables(&db);
    let mut rng = SmallRng(0x5eed_1234_abcd);
    let regions = ["beijing", "shanghai", "hangzhou", "shenzhen"];
    let mut pre = String::new();
    for c in 0..10 {
        pre.push_str(&format!("INSERT INTO {db}.customers VALUES ({c}, {}, 'c{c}');", 20 + c));
    }
    for o in 1..=50 {
        pre.push_str(&format!("INSERT INTO {db}.orders VALUES ({o}, {}, '{}', {});", rng.below(100) + 1, regions[rng.below(4) as usize], rng.below(12) as i64 - 1));
    }
    mysql(&pre);
    let _job = Pipeline::start(&db, &broker.bootstrap);
    let mut next_order = 50;
    let ops = std::env::var("RSQL_ORACLE_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000u64);
    let mut done = 0;
    while done < ops {
        // A transaction of 1 to 4 statements.
        let n = rng.below(4) + 1;
        let mut tx = String::from("START TRANSACTION;");
        for _ in 0..n {
            let stmt = match rng.below(7) {
                0 | 1 => {
                    next_order += 1;
                    format!("INSERT INTO {db}.orders VALUES ({next_order}, {}, '{}', {});", rng.below(100) + 1, regions[rng.below(4) as usize], rng.below(12) as i64 - 1)
                }
                2 => format!("UPDATE {db}.orders SET order_region = '{}' WHERE order_id = {};", regions[rng.below(4) as usize], rng.below(next_order + 1)),
                3 => format!("UPDATE {db}.orders SET order_revenue = order_revenue + 1 WHERE order_id = {};", rng.below(next_order + 1)),
                4 => format!("DELETE FROM {db}.orders WHERE order_id = {};", rng.below(next_order + 1)),
                5 => {
                    let c = rng.below(12) as i64 - 1;
                    format!("REPLACE INTO {db}.customers VALUES ({c}, {}, 'c{c}x');", 20 + rng.below(50))
                }
                _ => format!("DELETE FROM {db}.customers WHERE customer_id = {};", rng.below(12) as i64 - 1),
            };
            tx.push_str(&stmt);
            done += 1;
        }
        tx.push_str("COMMIT;");
        mysql(&tx);
    }
    let q_dwd = format!(
        "SELECT o.order_id, o.order_revenue, o.order_region, c.customer_id, c.customer_age, c.customer_name FROM {db}.customers c JOIN {db}.orders o ON c.customer_id = o.customer_id WHERE c.customer_id <> -1"
    );
    let q_dws = format!("SELECT order_region, COUNT(*), SUM(order_revenue) FROM ({q_dwd}) t GROUP BY order_region");
    let norm = |t: &str| -> Vec<Vec<String>> {
        let mut v: Vec<Vec<String>> = t
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(num).collect())
            .collect();
        v.sort();
        v
    };
    let expect_orders = norm(&mysql(&format!("SELECT order_id, order_revenue, order_region, customer_id FROM {db}.orders")));
    let expect_customers = norm(&mysql(&format!("SELECT customer_id, customer_age, customer_name FROM {db}.customers")));
    let expect_dwd = norm(&mysql(&q_dwd));
    let expect_dws = norm(&mysql(&q_dws));
    let normalize_layers = |l: &Layers| -> Layers {
        l.iter()
            .map(|t| {
                let mut v: Vec<Vec<String>> = t.iter().map(|r| r.iter().map(|c| num(c)).collect()).collect();
                v.sort();
                v
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = normalize_layers(&layers(&broker.bootstrap));
        let ok = l.len() == 4 && l[0] == expect_orders && l[1] == expect_customers && l[2] == expect_dwd && l[3] == expect_dws;
        if ok {
            break;
        }
        if Instant::now() > deadline {
            let diff = |name: &str, got: &Vec<Vec<String>>, want: &Vec<Vec<String>>| {
                let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).collect();
                let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).collect();
                format!("{name}: {} rows, want {}; missing {missing:?}; extra {extra:?}\n", got.len(), want.len())
            };
            let mut msg = String::new();
            if l.len() == 4 {
                msg += &diff("ods_order", &l[0], &expect_orders);
                msg += &diff("ods_customers", &l[1], &expect_customers);
                msg += &diff("dwd", &l[2], &expect_dwd);
                msg += &diff("dws", &l[3], &expect_dws);
            }
            panic!("topics never matched MariaDB:\n{msg}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("oracle: {ops} changes, {} orders, {} DWD rows, {} regions agree with MariaDB", expect_orders.len(), expect_dwd.len(), expect_dws.len());
    mysql(&format!("DROP DATABASE {db}"));
}

/// Numbers compare by value (MariaDB prints 10, rsql 10.0).
fn num(c: &str) -> String {
    let c = c.trim();
    match c.parse::<f64>() {
        Ok(v) => format!("{v:.3}"),
        Err(_) => c.to_string(),
    }
}

struct SmallRng(u64);

impl SmallRng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

