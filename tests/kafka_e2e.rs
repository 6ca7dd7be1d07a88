//! The kafka connectors through the client, on the shared local broker (`scripts/kafka.sh
//! start`; each test uses topics of its own): nested JSON values read by a SELECT, upserts with
//! tombstones read back through ChangelogNormalize, a second client run resuming from the
//! group's committed offsets, 'exactly-once' refused at job start by a broker without
//! transactions, and a sink with two writers writing timestamp and headers metadata.

mod common;

use std::process::Command;

use common::{root, run_client_file};

fn suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A new topic on the shared broker (started if needed).
fn topic(name: &str) -> String {
    let t = format!("{name}_{}", suffix());
    for args in [vec!["start"], vec!["create-topic", &t, "1"]] {
        let st = Command::new("bash").current_dir(root()).arg("scripts/kafka.sh").args(&args).status().expect("run scripts/kafka.sh");
        assert!(st.success(), "scripts/kafka.sh {args:?} failed");
    }
    t
}

fn bootstrap() -> String {
    format!("127.0.0.1:{}", std::env::var("RSQL_KAFKA_PORT").unwrap_or_else(|_| "19092".into()))
}

/// Runs a script; returns the exit code, stdout and stderr.
fn run(script: &str) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("rsql-kafka-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("s{}.sql", suffix()));
    std::fs::write(&file, script.replace("BOOTSTRAP", &bootstrap())).expect("write script");
    run_client_file(&file)
}

#[test]
fn nested_json_values_are_read_by_a_select() {
    let t = topic("e2e_nested");
    let (code, out, err) = run(&format!(
        "CREATE TABLE src (id INT, tags ARRAY<STRING>, attrs MAP<STRING, INT>, addr ROW<city STRING, zips ARRAY<INT>>)
           WITH ('connector' = 'kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP', 'format' = 'json',
                 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
         CREATE TABLE lines (line STRING) WITH ('connector' = 'kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP', 'format' = 'raw');
         SET 'table.dml-sync' = 'true';
         INSERT INTO lines VALUES ('{{\"id\":1,\"tags\":[\"a\",null],\"attrs\":{{\"k\":1}},\"addr\":{{\"city\":\"x\",\"zips\":[1,2]}}}}'), ('{{\"id\":2}}');
         SELECT id, tags, attrs, addr FROM src WHERE id = 1;"
    ));
    assert_eq!(code, 0, "{err}");
    // Flink's SQL client prints nested values as CAST(... AS STRING) does: NULL elements as `null`.
    assert!(out.contains("[a, null]"), "{out}");
    assert!(out.contains("{k=1}") && out.contains("(x, [1, 2])"), "{out}");
    assert!(out.contains("1 row"), "{out}");
}

#[test]
fn upserts_and_tombstones_read_back_through_changelog_normalize() {
    let t = topic("e2e_upsert");
    let (code, out, err) = run(&format!(
        "CREATE TABLE snk (id INT, v STRING, PRIMARY KEY (id) NOT ENFORCED)
           WITH ('connector' = 'upsert-kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP',
                 'key.format' = 'json', 'value.format' = 'json');
         CREATE TABLE src (id INT, v STRING, PRIMARY KEY (id) NOT ENFORCED)
           WITH ('connector' = 'upsert-kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP',
                 'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');
         CREATE TABLE lines (k STRING, line STRING) WITH ('connector' = 'kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP',
                 'key.format' = 'raw', 'key.fields' = 'k', 'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY');
         SET 'table.dml-sync' = 'true';
         INSERT INTO snk VALUES (1, 'a'), (2, 'b'), (3, 'c');
         INSERT INTO snk VALUES (1, 'a2');
         INSERT INTO lines VALUES ('{{\"id\":2}}', CAST(NULL AS STRING));
         SET 'sql-client.execution.result-mode' = 'table';
         SELECT id, v FROM src;
         SELECT count(*) AS n FROM src;"
    ));
    assert_eq!(code, 0, "{err}");
    // Key 1 holds its last value, key 2 was deleted by the tombstone, key 3 is unchanged.
    assert!(out.contains("|  1 | a2 |") && out.contains("|  3 |  c |"), "{out}");
    assert!(!out.contains("|  2 |"), "{out}");
    assert!(out.contains("2 rows in set") && out.contains("| 2 |"), "{out}");
}

#[test]
fn exactly_once_is_refused_at_job_start_without_transactions() {
    let t = topic("e2e_txn");
    // With checkpointing on, the restart strategy retries failures of a running job, but not this.
    let (code, _out, err) = run(&format!(
        "SET 'execution.checkpointing.interval' = '1s';
         SET 'execution.checkpointing.dir' = '{}';
         CREATE TABLE snk (id INT, v STRING, PRIMARY KEY (id) NOT ENFORCED)
           WITH ('connector' = 'upsert-kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP',
                 'key.format' = 'json', 'value.format' = 'json',
                 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = 'e2e');
         SET 'table.dml-sync' = 'true';
         INSERT INTO snk VALUES (1, 'a');",
        std::env::temp_dir().join(format!("rsql-kafka-e2e-chk-{}", suffix())).display()
    ));
    assert_ne!(code, 0);
    assert!(err.contains("'snk'") && err.contains("EndTxn") && err.contains("at-least-once"), "{err}");
    assert!(!err.contains("Restarting"), "{err}");
}

#[test]
fn a_restarted_client_resumes_from_the_committed_offsets() {
    let t = topic("e2e_resume");
    let group = format!("g_{t}");
    let tables = format!(
        "CREATE TABLE src (id INT) WITH ('connector' = 'kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP',
           'properties.group.id' = '{group}', 'scan.startup.mode' = 'group-offsets', 'properties.auto.offset.reset' = 'earliest',
           'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
         CREATE TABLE snk (id INT) WITH ('connector' = 'kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP', 'format' = 'json');
         SET 'table.dml-sync' = 'true';
         SET 'sql-client.execution.result-mode' = 'table';"
    );
    let (code, out, err) = run(&format!("{tables} INSERT INTO snk VALUES (1), (2); SELECT id FROM src;"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 rows in set"), "{out}");
    // A second run of the client reads only what was written after the first run's offsets.
    let (code, out, err) = run(&format!("{tables} INSERT INTO snk VALUES (3); SELECT id FROM src;"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" 3 |") && !out.contains(" 1 |") && out.contains("1 row in set"), "{out}");
}

#[test]
fn a_sink_writes_timestamp_and_headers_metadata_with_several_writers() {
    let t = topic("e2e_meta");
    let (code, out, err) = run(&format!(
        "CREATE TABLE ev (id INT, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', part INT METADATA FROM 'partition' VIRTUAL,
                          h MAP<STRING, BYTES> METADATA FROM 'headers')
           WITH ('connector' = 'kafka', 'topic' = '{t}', 'properties.bootstrap.servers' = 'BOOTSTRAP', 'format' = 'json',
                 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'sink.parallelism' = '2');
         SET 'table.dml-sync' = 'true';
         INSERT INTO ev SELECT 7, TIMESTAMP '2023-11-14 22:13:20.123', MAP['trace', X'616263', 'span', X'64'];
         INSERT INTO ev (id) VALUES (8);
         SELECT id, ts, CARDINALITY(h) AS n, part FROM ev WHERE id = 7;
         SELECT id, CARDINALITY(h) AS n, ts > TIMESTAMP '2024-01-01 00:00:00' AS stamped FROM ev WHERE id = 8;"
    ));
    assert_eq!(code, 0, "{err}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    // The record timestamp is the column's value; row 7 has two headers.
    assert!(flat.contains("| 7 | 2023-11-14") && flat.contains("22:13:20.123"), "{out}");
    assert!(flat.contains("| 2 | 0 |"), "{out}");
    // Row 8 (timestamp and headers NULL): no headers, and the producer's time.
    assert!(flat.contains("| 8 | 0 | TRUE |"), "{out}");
}
