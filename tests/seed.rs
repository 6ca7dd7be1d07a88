//! The seed's layered warehouse end to end, on a real MariaDB and a real Kafka-protocol broker:
//! sql/demo.sql runs unchanged (placeholders aside) in rsql-client, rows go into MariaDB, and the
//! four topics are read back with rsql's own bounded SELECTs (sql/show_layers.sql).
//!
//! Each test starts its own broker (own port and data dir) because the demo's topic names are
//! fixed; both share the MariaDB of scripts/mariadb.sh with a database of their own.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    create_source_tables, expected_layers, mysql, normalized, parse_layers, random_workload, root, seed_rows_before, sh, Broker, Layers, Pipeline,
    SmallRng,
};

fn demo(db: &str, bootstrap: &str) -> Pipeline {
    Pipeline::start("sql/demo.sql", &[("MYSQL_DATABASE", db.to_string()), ("KAFKA_BOOTSTRAP", bootstrap.to_string())])
}

/// Reads the four layers (ODS orders, ODS customers, DWD, DWS) as sorted rows of cells.
fn layers(bootstrap: &str) -> Layers {
    let out = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
        .current_dir(root())
        .args(["-f", "sql/show_layers.sql", "-D", &format!("KAFKA_BOOTSTRAP={bootstrap}")])
        .output()
        .expect("run show_layers");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "show_layers failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    parse_layers(&text)
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

#[test]
fn seed_steps_and_more() {
    sh("scripts/mariadb.sh", &["start"], &[]);
    let broker = Broker::start(19094);
    let db = format!("seed_e2e_{}", std::process::id());
    create_source_tables(&db);
    let _job = demo(&db, &broker.bootstrap);
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
    let mut next_order = seed_rows_before(&db, &mut rng);
    let _job = demo(&db, &broker.bootstrap);
    let ops = std::env::var("RSQL_ORACLE_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000u64);
    random_workload(&db, &mut rng, &mut next_order, ops);
    let expected = expected_layers(&db);
    let (expect_orders, expect_customers, expect_dwd, expect_dws) = (&expected[0], &expected[1], &expected[2], &expected[3]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = normalized(&layers(&broker.bootstrap));
        let ok = l.len() == 4 && &l[0] == expect_orders && &l[1] == expect_customers && &l[2] == expect_dwd && &l[3] == expect_dws;
        if ok {
            break;
        }
        if Instant::now() > deadline {
            let mut msg = String::new();
            if l.len() == 4 {
                msg += &common::diff("ods_order", &l[0], expect_orders);
                msg += &common::diff("ods_customers", &l[1], expect_customers);
                msg += &common::diff("dwd", &l[2], expect_dwd);
                msg += &common::diff("dws", &l[3], expect_dws);
            }
            panic!("topics never matched MariaDB:\n{msg}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("oracle: {ops} changes, {} orders, {} DWD rows, {} regions agree with MariaDB", expect_orders.len(), expect_dwd.len(), expect_dws.len());
    mysql(&format!("DROP DATABASE {db}"));
}
