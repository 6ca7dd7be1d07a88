//! The seed pipeline with double-writing, end to end (sql/double_write.sql): MariaDB -> rsql ->
//! the four upsert-kafka topics, and every layer also straight into MariaDB serving tables
//! (`jdbc`) and into StarRocks tables through Stream Load (`starrocks`).
//!
//! No StarRocks runs here: the StarRocks side is the Stream Load test endpoint of
//! rsql-connectors (an FE that redirects to a BE, which checks every request against the HTTP
//! contract StarRocks documents and applies `__op` upserts and deletes to in-memory tables). It
//! plays a few failures at the start (Fail, HTTP 500, a committed load whose answer is lost, a
//! label still running, Publish Timeout, a dropped connection), which the sinks must ride out.
//!
//! After a snapshot and a random workload, the jdbc tables and the endpoint's tables must equal
//! MariaDB's own join and GROUP BY over the source tables, the endpoint must have seen no breach
//! of the contract and no label loaded twice, and the client must stop cleanly on SIGTERM.
//!
//! `exactly_once_survives_kills`: MariaDB orders -> a starrocks sink with `sink.semantic` =
//! `exactly-once` (Stream Load transactions committed at checkpoints every 300 ms); the client is
//! killed with SIGKILL twice while MariaDB changes and restarted from its checkpoints; the
//! endpoint's table must end equal to MariaDB's, and nothing but committed transactions may have
//! reached it.
//!
//! `a_bounded_exactly_once_job_ends_with_a_final_checkpoint`: a bounded datagen table -> an
//! exactly-once starrocks sink with checkpoints; the job's last transaction is committed through
//! its final checkpoint, every row is loaded once, and the job is marked as finished, so that
//! running the script again is a new run that loads every row once more (as a resubmitted Flink
//! job would), not a resume.

mod common;

use std::time::{Duration, Instant};

use common::{create_source_tables, diff, expected_layers, mysql, norm, num, random_workload, root, seed_rows_before, sh, Broker, Pipeline, SmallRng};
use rsql_connectors::starrocks::endpoint::{Fault, StreamLoadEndpoint, TableSpec};

const LAYERS: [&str; 4] = ["orders", "customers", "dwd_order_customer_valid", "dws_agg_by_region"];

fn endpoint() -> StreamLoadEndpoint {
    let tables = vec![
        TableSpec::new("flink_cdc", "orders", &["order_id", "order_revenue", "order_region", "customer_id"], &["order_id"]),
        TableSpec::new("flink_cdc", "customers", &["customer_id", "customer_age", "customer_name"], &["customer_id"]),
        TableSpec::new(
            "flink_cdc",
            "dwd_order_customer_valid",
            &["order_id", "order_revenue", "order_region", "customer_id", "customer_age", "customer_name"],
            &["order_id"],
        ),
        TableSpec::new("flink_cdc", "dws_agg_by_region", &["order_region", "order_cnt", "order_total_revenue"], &["order_region"]),
    ];
    StreamLoadEndpoint::start("loader", "pa:ss w0rd", tables).expect("start the Stream Load endpoint")
}

fn serving_tables(out: &str) {
    let ddl = std::fs::read_to_string(root().join("sql/mysql/serving_tables.sql")).expect("serving_tables.sql").replace("flink_cdc_serving", out);
    mysql(&format!("DROP DATABASE IF EXISTS {out}; {ddl}"));
}

/// The four jdbc tables, normalized.
fn jdbc_layers(out: &str) -> Vec<Vec<Vec<String>>> {
    vec![
        norm(&mysql(&format!("SELECT order_id, order_revenue, order_region, customer_id FROM {out}.orders"))),
        norm(&mysql(&format!("SELECT customer_id, customer_age, customer_name FROM {out}.customers"))),
        norm(&mysql(&format!(
            "SELECT order_id, order_revenue, order_region, customer_id, customer_age, customer_name FROM {out}.dwd_order_customer_valid"
        ))),
        norm(&mysql(&format!("SELECT order_region, order_cnt, order_total_revenue FROM {out}.dws_agg_by_region"))),
    ]
}

/// The four tables of the endpoint, normalized.
fn starrocks_layers(ep: &StreamLoadEndpoint) -> Vec<Vec<Vec<String>>> {
    LAYERS
        .iter()
        .map(|t| {
            let mut rows: Vec<Vec<String>> =
                ep.rows("flink_cdc", t).into_iter().map(|r| r.into_iter().map(|c| num(c.as_deref().unwrap_or("NULL"))).collect()).collect();
            rows.sort();
            rows
        })
        .collect()
}

fn report(name: &str, got: &[Vec<Vec<String>>], want: &[Vec<Vec<String>>]) -> String {
    let mut msg = format!("{name}:\n");
    for (i, t) in LAYERS.iter().enumerate() {
        if got[i] != want[i] {
            msg += &diff(t, &got[i], &want[i]);
        }
    }
    msg
}

#[test]
fn double_writing_matches_mariadb() {
    let started = Instant::now();
    sh("scripts/mariadb.sh", &["start"], &[]);
    let broker = Broker::start(19098);
    let pid = std::process::id();
    let db = format!("test_serving_{pid}");
    let out = format!("test_serving_{pid}_out");
    create_source_tables(&db);
    serving_tables(&out);
    let ep = endpoint();
    ep.push_faults([
        Fault::Fail("timeout by txn manager".into()),
        Fault::Http500,
        Fault::CommitThenDrop,
        Fault::LabelRunning,
        Fault::PublishTimeout,
        Fault::Drop,
    ]);

    let mut rng = SmallRng(0x5e41_0bad_cafe);
    let mut next_order = seed_rows_before(&db, &mut rng);
    let mut job = Pipeline::start(
        "sql/double_write.sql",
        &[
            ("MYSQL_DATABASE", db.clone()),
            ("KAFKA_BOOTSTRAP", broker.bootstrap.clone()),
            ("SERVING_DATABASE", out.clone()),
            ("STARROCKS_LOAD_URL", ep.load_url()),
            ("STARROCKS_USER", "loader".into()),
            ("STARROCKS_PASSWORD", "pa:ss w0rd".into()),
            ("STARROCKS_RETRY_INTERVAL_MS", "50".into()),
            // One load may meet several of the injected failures in a row.
            ("STARROCKS_MAX_RETRIES", "10".into()),
        ],
    );
    let ops = std::env::var("RSQL_SERVING_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500u64);
    random_workload(&db, &mut rng, &mut next_order, ops);
    let want = expected_layers(&db);

    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut jdbc, mut sr);
    loop {
        jdbc = jdbc_layers(&out);
        sr = starrocks_layers(&ep);
        if jdbc == want && sr == want {
            break;
        }
        if let Some(status) = job.exited() {
            panic!("rsql-client exited early ({status}); endpoint breaches: {:?}", ep.violations());
        }
        if Instant::now() > deadline {
            panic!("the serving tables never matched MariaDB\n{}{}", report("jdbc", &jdbc, &want), report("starrocks", &sr, &want));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let converged = started.elapsed();

    assert_eq!(ep.violations(), Vec::<String>::new(), "breaches of the Stream Load contract");
    assert_eq!(ep.pending_faults(), 0, "every injected failure was played");
    let loads = ep.loads();
    let mut committed = std::collections::HashMap::new();
    for l in &loads {
        if matches!(l.status.as_str(), "Success" | "Publish Timeout" | "committed, dropped") {
            *committed.entry(l.label.clone()).or_insert(0) += 1;
        }
    }
    assert!(committed.values().all(|n| *n == 1), "a label was loaded twice: {committed:?}");
    assert!(loads.iter().any(|l| l.json) && loads.iter().any(|l| !l.json), "both JSON and CSV loads ran");
    let (fe, be) = ep.requests();

    // SIGTERM: sources stop, sinks flush, the client exits 0.
    let status = job.stop().expect("rsql-client stops on SIGTERM");
    assert!(status.success(), "rsql-client exited with {status}");
    assert_eq!(jdbc_layers(&out), want);
    assert_eq!(starrocks_layers(&ep), want);
    eprintln!(
        "serving: {ops} changes; {} orders, {} DWD rows, {} regions equal in MariaDB, the jdbc tables and the Stream Load endpoint \
         ({} loads, {} FE and {} BE requests) after {:.1} s",
        want[0].len(),
        want[2].len(),
        want[3].len(),
        committed.len(),
        fe,
        be,
        converged.as_secs_f64()
    );
    mysql(&format!("DROP DATABASE {db}; DROP DATABASE {out}"));
}

/// A lookup join (`JOIN ... FOR SYSTEM_TIME AS OF`) of a generated order stream with a jdbc
/// dimension table in MariaDB: inner (with a filter on the table's columns, pushed down into the
/// lookup) and left outer, both written back to MariaDB through jdbc sinks.
#[test]
fn lookup_join_reads_the_dimension_table() {
    sh("scripts/mariadb.sh", &["start"], &[]);
    let db = format!("test_lookup_{}", std::process::id());
    mysql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};
         CREATE TABLE {db}.customers (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, tier INT NOT NULL);
         INSERT INTO {db}.customers VALUES (1, 'ann', 1), (2, 'bob', 2), (3, 'cy', 1);
         CREATE TABLE {db}.out_inner (oid INT PRIMARY KEY, cid INT, name VARCHAR(20));
         CREATE TABLE {db}.out_left (oid INT PRIMARY KEY, cid INT, name VARCHAR(20));"
    ));
    let jdbc = |table: &str, extra: &str| {
        format!(
            "'connector' = 'jdbc', 'url' = 'jdbc:mysql://127.0.0.1:13306/{db}', 'table-name' = '{table}', \
             'username' = 'rsql', 'password' = 'rsql'{extra}"
        )
    };
    let script = format!(
        "CREATE TABLE orders (oid INT, cid INT, proc_time AS PROCTIME()) WITH (
           'connector' = 'datagen', 'rows-per-second' = '100',
           'fields.oid.kind' = 'sequence', 'fields.oid.start' = '1', 'fields.oid.end' = '6',
           'fields.cid.kind' = 'sequence', 'fields.cid.start' = '0', 'fields.cid.end' = '5');
         CREATE TABLE customers (id INT, name STRING, tier INT, PRIMARY KEY (id) NOT ENFORCED) WITH ({});
         CREATE TABLE out_inner (oid INT, cid INT, name STRING, PRIMARY KEY (oid) NOT ENFORCED) WITH ({});
         CREATE TABLE out_left (oid INT, cid INT, name STRING, PRIMARY KEY (oid) NOT ENFORCED) WITH ({});
         EXPLAIN STATEMENT SET BEGIN
         INSERT INTO out_inner SELECT o.oid, o.cid, c.name FROM orders AS o
           JOIN customers FOR SYSTEM_TIME AS OF o.proc_time AS c ON o.cid = c.id WHERE c.tier = 1;
         END;
         BEGIN STATEMENT SET;
         INSERT INTO out_inner SELECT o.oid, o.cid, c.name FROM orders AS o
           JOIN customers FOR SYSTEM_TIME AS OF o.proc_time AS c ON o.cid = c.id WHERE c.tier = 1;
         INSERT INTO out_left SELECT o.oid, o.cid, c.name FROM orders AS o
           LEFT JOIN customers FOR SYSTEM_TIME AS OF o.proc_time AS c ON o.cid = c.id;
         END;",
        jdbc("customers", ", 'lookup.cache.max-rows' = '100', 'lookup.cache.ttl' = '10s', 'lookup.max-retries' = '1'"),
        jdbc("out_inner", ""),
        jdbc("out_left", "")
    );
    let file = std::env::temp_dir().join(format!("rsql-lookup-{}.sql", std::process::id()));
    std::fs::write(&file, script).expect("write the script");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsql-client"))
        .current_dir(root())
        .arg("-f")
        .arg(&file)
        .output()
        .expect("run rsql-client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rsql-client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("LookupJoin(table=[default_catalog.default_database.customers], joinType=[InnerJoin], lookup=[id=o.cid], tableFilter=["),
        "{stdout}"
    );
    assert_eq!(norm(&mysql(&format!("SELECT oid, cid, name FROM {db}.out_inner"))), norm("h\n2\t1\tann\n4\t3\tcy\n"));
    assert_eq!(
        norm(&mysql(&format!("SELECT oid, cid, IFNULL(name, 'NULL') FROM {db}.out_left"))),
        norm("h\n1\t0\tNULL\n2\t1\tann\n3\t2\tbob\n4\t3\tcy\n5\t4\tNULL\n6\t5\tNULL\n")
    );
    let _ = std::fs::remove_file(&file);
    mysql(&format!("DROP DATABASE {db}"));
}

/// A new, empty directory `<name>-<pid>` in the system's temporary one.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the work directory");
    dir
}

#[test]
fn exactly_once_survives_kills() {
    sh("scripts/mariadb.sh", &["start"], &[]);
    let pid = std::process::id();
    let db = format!("test_eo_{pid}");
    create_source_tables(&db);
    let ep = StreamLoadEndpoint::start(
        "loader",
        "pw",
        vec![TableSpec::new("flink_cdc", "orders", &["order_id", "order_revenue", "order_region", "customer_id"], &["order_id"])],
    )
    .expect("start the Stream Load endpoint");
    let dir = fresh_dir("rsql-eo");
    let script = dir.join("eo.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'execution.checkpointing.interval' = '300ms';
             SET 'execution.checkpointing.dir' = '{cp}';
             SET 'pipeline.name' = 'eo';
             CREATE TABLE orders_src (order_id INT NOT NULL, order_revenue FLOAT NOT NULL, order_region STRING NOT NULL,
               customer_id INT NOT NULL, PRIMARY KEY (order_id) NOT ENFORCED) WITH (
               'connector' = 'mysql-cdc', 'hostname' = '127.0.0.1', 'port' = '13306', 'username' = 'rsql', 'password' = 'rsql',
               'database-name' = '{db}', 'table-name' = 'orders');
             CREATE TABLE sr_orders (order_id INT, order_revenue FLOAT, order_region STRING, customer_id INT,
               PRIMARY KEY (order_id) NOT ENFORCED) WITH (
               'connector' = 'starrocks', 'jdbc-url' = 'jdbc:mysql://127.0.0.1:9030', 'load-url' = '{url}',
               'database-name' = 'flink_cdc', 'table-name' = 'orders', 'username' = 'loader', 'password' = 'pw',
               'sink.semantic' = 'exactly-once', 'sink.label-prefix' = 'eo_e2e', 'sink.retry.interval-ms' = '50');
             INSERT INTO sr_orders SELECT * FROM orders_src;",
            cp = dir.join("checkpoints").display(),
            url = ep.load_url()
        ),
    )
    .expect("write the script");
    let script = script.display().to_string();
    let committed = |ep: &StreamLoadEndpoint| ep.txn_labels(rsql_connectors::starrocks::endpoint::TxnState::Committed).len();
    let want = || norm(&mysql(&format!("SELECT order_id, order_revenue, order_region, customer_id FROM {db}.orders")));
    let got = |ep: &StreamLoadEndpoint| {
        let mut rows: Vec<Vec<String>> =
            ep.rows("flink_cdc", "orders").into_iter().map(|r| r.into_iter().map(|c| num(c.as_deref().unwrap_or("NULL"))).collect()).collect();
        rows.sort();
        rows
    };

    let mut rng = SmallRng(0xe0_0c_e);
    let mut next_order = seed_rows_before(&db, &mut rng);
    for round in 0..3 {
        let mut job = Pipeline::start(&script, &[]);
        let before = committed(&ep);
        random_workload(&db, &mut rng, &mut next_order, 150);
        let deadline = Instant::now() + Duration::from_secs(30);
        while committed(&ep) < before + 2 {
            assert!(job.exited().is_none(), "rsql-client exited early; endpoint breaches: {:?}", ep.violations());
            assert!(Instant::now() < deadline, "no transaction was committed in round {round}");
            std::thread::sleep(Duration::from_millis(50));
        }
        if round < 2 {
            // More changes in flight, then a kill between checkpoints.
            random_workload(&db, &mut rng, &mut next_order, 100);
            std::thread::sleep(Duration::from_millis(150));
            job.kill();
            continue;
        }
        let want = want();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got(&ep) != want {
            assert!(job.exited().is_none(), "rsql-client exited early; endpoint breaches: {:?}", ep.violations());
            assert!(Instant::now() < deadline, "the StarRocks table never matched MariaDB:\n{}", diff("orders", &got(&ep), &want));
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = job.stop().expect("rsql-client stops on SIGTERM");
        assert!(status.success(), "rsql-client exited with {status}");
        assert_eq!(got(&ep), want);
    }
    assert_eq!(ep.violations(), Vec::<String>::new(), "breaches of the Stream Load contract");
    assert!(ep.loads().is_empty(), "exactly-once loads only through transactions");
    let calls = ep.txn_calls();
    let rolled_back = calls.iter().filter(|c| c.op == "rollback" && c.status.starts_with("OK")).count();
    eprintln!(
        "exactly-once: {} transactions committed, {rolled_back} rolled back after kills, {} calls of the transaction interface",
        committed(&ep),
        calls.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    mysql(&format!("DROP DATABASE {db}"));
}

/// sql/double_write.sql writes the DWD join and the DWS aggregate into three sinks each: as in
/// Flink (`table.optimizer.reuse-sub-plan-enabled`, default true), the statement set plans each of
/// them once and fans it out; with the option off each INSERT gets its own.
#[test]
fn double_write_plans_the_join_and_the_aggregate_once() {
    let script = std::fs::read_to_string(root().join("sql/double_write.sql")).expect("double_write.sql");
    let explain = script.replace("BEGIN STATEMENT SET;", "EXPLAIN STATEMENT SET BEGIN");
    assert_ne!(explain, script);
    let run = |text: &str, name: &str| {
        let file = std::env::temp_dir().join(format!("rsql-reuse-{}-{name}.sql", std::process::id()));
        std::fs::write(&file, text).expect("write the script");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsql-client"))
            .current_dir(root())
            .arg("-f")
            .arg(&file)
            .output()
            .expect("run rsql-client");
        let _ = std::fs::remove_file(&file);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "rsql-client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let out = run(&explain, "on");
    assert_eq!(out.matches("Join(joinType=[InnerJoin]").count(), 1, "{out}");
    assert_eq!(out.matches("GroupAggregate(").count(), 1, "{out}");
    assert!(out.lines().any(|l| l.contains("Join(joinType=[InnerJoin]") && l.contains("reuse_id=[")), "{out}");
    assert!(out.lines().any(|l| l.contains("GroupAggregate(") && l.contains("reuse_id=[")), "{out}");
    assert_eq!(out.matches("Sink(table=[").count(), 12, "{out}");
    let off = run(&format!("SET 'table.optimizer.reuse-sub-plan-enabled' = 'false';\n{explain}"), "off");
    assert_eq!(off.matches("Join(joinType=[InnerJoin]").count(), 3, "{off}");
    assert_eq!(off.matches("GroupAggregate(").count(), 3, "{off}");
}

#[test]
fn a_bounded_exactly_once_job_ends_with_a_final_checkpoint() {
    use rsql_connectors::starrocks::endpoint::TxnState;
    // No key: a row loaded twice would stay twice.
    let ep = StreamLoadEndpoint::start("loader", "pw", vec![TableSpec::new("flink_cdc", "orders", &["order_id", "order_revenue", "order_region"], &[])])
        .expect("start the Stream Load endpoint");
    let dir = fresh_dir("rsql-eo-bounded");
    let script = dir.join("bounded.sql");
    let cp = dir.join("checkpoints");
    std::fs::write(
        &script,
        format!(
            "SET 'execution.checkpointing.interval' = '200ms';
             SET 'execution.checkpointing.dir' = '{cp}';
             SET 'pipeline.name' = 'eo_bounded';
             CREATE TABLE gen (order_id INT NOT NULL, order_revenue FLOAT, order_region STRING) WITH (
               'connector' = 'datagen', 'number-of-rows' = '2000', 'rows-per-second' = '2500',
               'fields.order_id.kind' = 'sequence', 'fields.order_id.start' = '1', 'fields.order_id.end' = '2000',
               'fields.order_region.length' = '8');
             CREATE TABLE sr_orders (order_id INT, order_revenue FLOAT, order_region STRING) WITH (
               'connector' = 'starrocks', 'jdbc-url' = 'jdbc:mysql://127.0.0.1:9030', 'load-url' = '{url}',
               'database-name' = 'flink_cdc', 'table-name' = 'orders', 'username' = 'loader', 'password' = 'pw',
               'sink.semantic' = 'exactly-once', 'sink.label-prefix' = 'eo_bounded', 'sink.retry.interval-ms' = '50');
             INSERT INTO sr_orders SELECT * FROM gen;",
            cp = cp.display(),
            url = ep.load_url()
        ),
    )
    .expect("write the script");
    let script = script.display().to_string();
    let run_to_the_end = || {
        let mut job = Pipeline::start(&script, &[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = job.exited() {
                assert!(status.success(), "rsql-client exited with {status}; endpoint breaches: {:?}", ep.violations());
                break;
            }
            assert!(Instant::now() < deadline, "the bounded job did not end within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let ids = |ep: &StreamLoadEndpoint| {
        let mut v: Vec<i64> = ep.rows("flink_cdc", "orders").iter().filter_map(|r| r[0].as_deref().and_then(|x| x.parse().ok())).collect();
        v.sort();
        v
    };
    let checkpoints = || std::fs::read_dir(cp.join("eo_bounded")).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("chk-")).count()).unwrap_or(0);

    run_to_the_end();
    assert_eq!(ids(&ep), (1..=2000).collect::<Vec<_>>(), "every row exactly once");
    let committed = ep.txn_labels(TxnState::Committed).len();
    assert!(committed >= 2, "rows were committed at periodic checkpoints and at the final one: {committed}");
    assert!(ep.txn_labels(TxnState::Prepared).is_empty() && ep.txn_labels(TxnState::Prepare).is_empty(), "nothing left open");
    assert_eq!(checkpoints(), 1, "the final checkpoint is kept (num-retained 1)");

    assert!(cp.join("eo_bounded").join("FINISHED").exists(), "the job is marked as finished");

    // Run again: a job that ran to its end is not resumed; the new run loads every row again
    // (in new transactions, under new labels), as a resubmitted Flink job would.
    run_to_the_end();
    let twice: Vec<i64> = (1..=2000).flat_map(|i| [i, i]).collect();
    assert_eq!(ids(&ep), twice, "the second run loads every row once more");
    assert!(ep.txn_labels(TxnState::Committed).len() >= committed + 2, "the second run commits its own transactions");
    assert!(ep.txn_labels(TxnState::Prepared).is_empty() && ep.txn_labels(TxnState::Prepare).is_empty(), "nothing left open");
    assert_eq!(ep.violations(), Vec::<String>::new(), "breaches of the Stream Load contract");
    assert!(ep.loads().is_empty(), "exactly-once loads only through transactions");
    let _ = std::fs::remove_dir_all(&dir);
}
