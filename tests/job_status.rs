//! What a running client tells about its jobs, end to end: a mysql-cdc source feeding an
//! upsert-kafka topic that a second job reads back, run in the shell through standard input.
//! The Prometheus endpoint carries each source's phase and lag (seconds behind MariaDB for
//! mysql-cdc, messages behind the high watermark for upsert-kafka), and SHOW JOBS lists rows in
//! and out per source and sink, the state size, the last checkpoint and each source's phase and
//! lag. Needs MariaDB (`scripts/mariadb.sh start`) and the shared broker (`scripts/kafka.sh start`).

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{mysql, sh, shell};

/// GET /metrics on 127.0.0.1:`port`; empty when nothing answers yet.
fn scrape(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The value of the series `name` whose labels include `table="<table>"` (and `extra`).
fn series(body: &str, name: &str, table: &str, extra: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| l.contains(&format!("table=\"{table}\"")) && l.contains(extra))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn rows_in(body: &str, node_prefix: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with("rsql_rows_in_total{") && l.contains(&format!("node=\"{node_prefix}")))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

#[test]
fn metrics_and_show_jobs_report_source_lag_rows_and_state() {
    sh("scripts/mariadb.sh", &["start"], &[]);
    sh("scripts/kafka.sh", &["start"], &[]);
    let tag = format!("{}_{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() % 1_000_000).unwrap_or(0));
    let db = format!("job_status_{tag}");
    let topic = format!("job_status_{tag}");
    sh("scripts/kafka.sh", &["create-topic", &topic, "2"], &[]);
    let values: Vec<String> = (1..=2000).map(|i| format!("({i}, {i})")).collect();
    mysql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO {db}.t VALUES {}; ANALYZE TABLE {db}.t;",
        values.join(",")
    ));
    let port = 19351;
    let ckpt = std::env::temp_dir().join(format!("rsql-job-status-{tag}"));
    let kafka = |name: &str| {
        format!(
            "CREATE TABLE {name} (id INT, v INT, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', \
             'topic' = '{topic}', 'properties.bootstrap.servers' = '127.0.0.1:19092', 'key.format' = 'json', 'value.format' = 'json');\n"
        )
    };
    let script = format!(
        "SET 'metrics.reporter.prom.port' = '{port}';\n\
         SET 'execution.checkpointing.interval' = '1s';\n\
         SET 'execution.checkpointing.dir' = '{}';\n\
         CREATE TABLE cdc_src (id INT, v INT, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'mysql-cdc', \
         'hostname' = '127.0.0.1', 'port' = '13306', 'username' = 'rsql', 'password' = 'rsql', 'database-name' = '{db}', \
         'table-name' = 't', 'heartbeat.interval' = '1s', 'scan.incremental.snapshot.chunk.size' = '300');\n\
         {}{}\
         CREATE TABLE counts (bucket INT, n BIGINT, PRIMARY KEY (bucket) NOT ENFORCED) WITH ('connector' = 'blackhole');\n\
         INSERT INTO topic_sink SELECT id, v FROM cdc_src;\n\
         INSERT INTO counts SELECT id % 10, COUNT(*) FROM topic_src GROUP BY id % 10;\n",
        ckpt.display(),
        kafka("topic_sink"),
        kafka("topic_src"),
    );
    let mut child = shell();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(script.as_bytes()).expect("write statements");
    stdin.flush().expect("flush");

    // Both jobs have read everything: the mysql-cdc source is in its binlog phase and caught up,
    // the kafka source has no message left to read.
    let deadline = Instant::now() + Duration::from_secs(90);
    let caught_up = |body: &str| {
        series(body, "rsql_source_phase", "cdc_src", "phase=\"binlog\"") == Some(1.0)
            && series(body, "rsql_source_lag_seconds", "cdc_src", "") == Some(0.0)
            && series(body, "rsql_source_lag_messages", "topic_src", "") == Some(0.0)
            && rows_in(body, "TableSourceScan(table=[[default_catalog, default_database, topic_src]]") == Some(2000.0)
    };
    let mut body = scrape(port);
    while !caught_up(&body) {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("the sources did not catch up:\n{body}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(200));
        body = scrape(port);
    }
    assert!(body.contains("# TYPE rsql_source_lag_seconds gauge"), "{body}");
    assert!(body.contains("# TYPE rsql_source_lag_messages gauge"), "{body}");
    assert_eq!(series(&body, "rsql_source_phase", "topic_src", "phase=\"running\""), Some(1.0), "{body}");

    // Changes in MariaDB are read, and the source is caught up again.
    mysql(&format!("UPDATE {db}.t SET v = -v WHERE id <= 100"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        body = scrape(port);
        let rows = rows_in(&body, "TableSourceScan(table=[[default_catalog, default_database, cdc_src]]");
        if rows == Some(2200.0) && series(&body, "rsql_source_lag_seconds", "cdc_src", "") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the updates were not read: {rows:?}\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A checkpoint has recorded the state size of the second job.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !body.lines().any(|l| l.starts_with("rsql_last_checkpoint_bytes{job=\"insert-into_`default_catalog`.`default_database`.`counts`\"}")) {
        assert!(Instant::now() < deadline, "no checkpoint of the second job:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
        body = scrape(port);
    }

    stdin.write_all(b"SHOW JOBS;\nQUIT;\n").expect("write SHOW JOBS");
    drop(stdin);
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let out = child.wait_with_output().expect("wait for rsql-client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&ckpt);
    mysql(&format!("DROP DATABASE IF EXISTS {db}"));

    let cells = |needle: &str| -> Vec<String> {
        let line = stdout.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no SHOW JOBS row for {needle}:\n{stdout}"));
        line.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
    };
    let header = cells("| job ");
    assert_eq!(header, ["job", "name", "node", "rows in", "rows out", "state bytes", "last checkpoint", "phase", "lag"], "{stdout}");
    let cdc = cells("default_database, cdc_src]]");
    assert_eq!(&cdc[3..5], ["2200", "2200"], "rows in and out of the mysql-cdc source: {cdc:?}");
    assert_eq!(&cdc[cdc.len() - 2..], ["binlog", "0.0 s"], "{cdc:?}");
    let sink = cells("Sink(table=[default_catalog.default_database.topic_sink]");
    assert_eq!(sink[3], "2200", "rows into the upsert-kafka sink: {sink:?}");
    let src = cells("default_database, topic_src]]");
    assert_eq!(src[0], "2");
    assert_eq!(&src[src.len() - 2..], ["running", "0 messages"], "{src:?}");
    let state: u64 = src[5].parse().unwrap_or_else(|_| panic!("state bytes of the second job: {src:?}"));
    assert!(state > 0, "the second job keeps state (ChangelogNormalize, GROUP BY): {src:?}");
    assert!(src[6].contains("bytes,") && src[6].ends_with("ms)"), "last checkpoint: {src:?}");
}
