//! End-to-end tests of the mysql-cdc source against a real MariaDB started by
//! `scripts/mariadb.sh` (installed from Debian's packages when missing). Each test uses its own
//! database and drives the Source directly through a SourceContext.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use rsql_common::builder::{datum_at, parse_timestamp, Datum};
use rsql_common::catalog::{ColumnDef, ColumnKind, ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::{Location, RowKind};
use rsql_connectors::mysql_cdc::{BinlogPosition, MySqlCdcFactory};
use rsql_runtime::{ConnectorFactory, Lag, Message, PhaseView, ProducedColumn, SourceContext, SourceStatus};
use tokio::sync::{mpsc, watch};

fn port() -> u16 {
    std::env::var("RSQL_MYSQL_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(13306)
}

fn script() -> String {
    format!("{}/../../scripts/mariadb.sh", env!("CARGO_MANIFEST_DIR"))
}

/// Starts MariaDB once per test binary (the script does nothing when it already runs).
fn ensure_server() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let out =
            std::process::Command::new("bash").arg(script()).arg("start").output().expect("run scripts/mariadb.sh");
        assert!(
            out.status.success(),
            "scripts/mariadb.sh start failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Runs SQL as root; returns the result lines after the header.
fn root_sql(sql: &str) -> Vec<String> {
    let out =
        std::process::Command::new("bash").arg(script()).arg("sql").arg(sql).output().expect("run scripts/mariadb.sh");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().skip(1).map(str::to_string).collect()
}

async fn conn() -> Conn {
    ensure_server();
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port())
        .user(Some("rsql"))
        .pass(Some("rsql"))
        .prefer_socket(false);
    Conn::new(opts).await.expect("connect as rsql")
}

/// A fresh database named after the test.
async fn fresh_db(name: &str) -> (Conn, String) {
    let mut c = conn().await;
    let db = format!("test_{name}");
    c.query_drop(format!("DROP DATABASE IF EXISTS {db}")).await.unwrap();
    c.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
    c.query_drop(format!("USE {db}")).await.unwrap();
    (c, db)
}

fn s() -> LogicalType {
    LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))
}
fn nn(t: FlinkType) -> LogicalType {
    LogicalType::not_null(t)
}
fn n(t: FlinkType) -> LogicalType {
    LogicalType::nullable(t)
}

fn table_def(
    db: &str,
    table: &str,
    cols: &[(&str, LogicalType)],
    meta: &[(&str, &str, LogicalType)],
    opts: &[(&str, &str)],
) -> TableDef {
    let mut columns: Vec<ColumnDef> = cols.iter().map(|(n, t)| ColumnDef::physical(*n, t.clone())).collect();
    for (name, key, ty) in meta {
        columns.push(ColumnDef {
            name: name.to_string(),
            ty: ty.clone(),
            kind: ColumnKind::Metadata { key: Some(key.to_string()), is_virtual: true },
            comment: None,
            location: Location::default(),
        });
    }
    let port = port().to_string();
    let mut options: BTreeMap<String, OptionValue> = BTreeMap::new();
    for (k, v) in [
        ("connector", "mysql-cdc"),
        ("hostname", "127.0.0.1"),
        ("port", port.as_str()),
        ("username", "rsql"),
        ("password", "rsql"),
        ("database-name", db),
        ("table-name", table),
        ("heartbeat.interval", "1s"),
        ("connect.max-retries", "5"),
    ]
    .iter()
    .chain(opts.iter())
    {
        options.insert(k.to_string(), OptionValue { value: v.to_string(), location: Location::default() });
    }
    TableDef {
        path: ObjectPath::new("default_catalog", "default_database", table),
        columns,
        primary_key: Some(vec![cols[0].0.to_string()]),
        watermark: None,
        options,
        comment: None,
        temporary: false,
        location: Location::default(),
    }
}

fn produced(t: &TableDef) -> Vec<ProducedColumn> {
    t.columns
        .iter()
        .map(|c| match c.metadata_key() {
            Some(k) => ProducedColumn::Metadata { key: k.to_string(), name: c.name.clone(), ty: c.ty.clone() },
            None => ProducedColumn::Physical { name: c.name.clone(), ty: c.ty.clone() },
        })
        .collect()
}

/// A running source and what it produced.
struct Running {
    rx: mpsc::Receiver<Message>,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<rsql_common::Result<()>>,
    /// Every row received: kind and values.
    changes: Vec<(RowKind, Vec<Datum>)>,
    /// Number of batches received.
    batches: Vec<usize>,
    /// Rows by the first column, after applying the changelog.
    state: BTreeMap<String, Vec<Datum>>,
    ended: bool,
    /// Physical columns (compared when a retraction meets the stored row).
    phys: usize,
    /// Every position reported, with the state as of it.
    positions: Vec<(BTreeMap<String, Vec<Datum>>, Vec<u8>)>,
    /// The status the source reports.
    status: std::sync::Arc<SourceStatus>,
    /// Phases seen after each message received.
    phases: Vec<PhaseView>,
}

fn start(t: &TableDef) -> Running {
    start_at(t, None, 1000)
}

/// Starts the source, resuming from `resume` when given, with `batch_size` rows per batch.
fn start_at(t: &TableDef, resume: Option<&[u8]>, batch_size: usize) -> Running {
    // RUST_LOG=info shows the source's progress and reconnections.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let f = MySqlCdcFactory;
    f.options(t).validate(t).expect("options");
    f.validate(t).expect("validate");
    let mut src = f.create_source(t, &produced(t)).expect("create source");
    assert!(src.checkpointable());
    if let Some(p) = resume {
        src.restore(p).expect("restore");
    }
    let status = src.status().expect("mysql-cdc reports its status");
    let (tx, rx) = mpsc::channel(64);
    let (stop, stop_rx) = watch::channel(false);
    let ctx = SourceContext {
        out: tx,
        stop: stop_rx,
        table: t.path.name.clone(),
        max_batch_delay: Duration::from_millis(50),
        batch_size,
    };
    let handle = tokio::spawn(async move { src.run(ctx).await });
    Running {
        rx,
        stop,
        handle,
        changes: Vec::new(),
        batches: Vec::new(),
        state: BTreeMap::new(),
        ended: false,
        phys: t.physical_columns().count(),
        positions: Vec::new(),
        status,
        phases: Vec::new(),
    }
}

fn key(d: &Datum) -> String {
    format!("{d:?}")
}

impl Running {
    fn apply(&mut self, m: Message) {
        match m {
            Message::Batch(b) => {
                self.batches.push(b.num_rows());
                for i in 0..b.num_rows() {
                    let row: Vec<Datum> = b.data.columns().iter().map(|c| datum_at(c.as_ref(), i).unwrap()).collect();
                    let kind = b.kinds[i];
                    let k = key(&row[0]);
                    match kind {
                        RowKind::Insert | RowKind::UpdateAfter => {
                            let old = self.state.insert(k.clone(), row.clone());
                            assert!(old.is_none(), "duplicate {kind} for key {k}: {row:?}");
                        }
                        RowKind::Delete | RowKind::UpdateBefore => {
                            let old = self.state.remove(&k);
                            let p = self.phys;
                            assert_eq!(
                                old.as_ref().map(|o| &o[..p]),
                                Some(&row[..p]),
                                "{kind} of a row that is not there (key {k})"
                            );
                        }
                    }
                    self.changes.push((kind, row));
                }
            }
            Message::End => self.ended = true,
            Message::Position(p) => self.positions.push((self.state.clone(), p)),
            Message::Watermark(_) | Message::Idle(_) | Message::Barrier(_) => {}
        }
        self.phases.push(self.status.view().phase);
    }

    /// Receives until `done` holds, failing after `secs`.
    async fn until(&mut self, secs: u64, what: &str, done: impl Fn(&Running) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            if self.handle.is_finished() && self.rx.is_empty() {
                let r = (&mut self.handle).await;
                panic!("source ended while waiting for {what}: {r:?}");
            }
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(m)) => self.apply(m),
                Ok(None) => {
                    let r = (&mut self.handle).await;
                    panic!("channel closed while waiting for {what}: {r:?}");
                }
                Err(_) => {
                    panic!("timed out waiting for {what}; have {} rows: {:?}", self.state.len(), self.changes.last())
                }
            }
        }
    }

    async fn stop(mut self) -> Self {
        let _ = self.stop.send(true);
        let r =
            tokio::time::timeout(Duration::from_secs(10), &mut self.handle).await.expect("source stops within 10 s");
        r.unwrap().unwrap();
        while let Ok(m) = self.rx.try_recv() {
            self.apply(m);
        }
        self
    }
}

/// The rows of a table as the test reads them: first column -> values as strings.
async fn table_state(c: &mut Conn, sql: &str) -> BTreeMap<i64, String> {
    let rows: Vec<(i64, Option<String>)> = c.query(sql).await.unwrap();
    rows.into_iter().map(|(k, v)| (k, v.unwrap_or_else(|| "NULL".into()))).collect()
}

fn state_as_strings(r: &Running) -> BTreeMap<i64, String> {
    r.state
        .values()
        .map(|row| {
            let k = match &row[0] {
                Datum::Int(i) => *i,
                other => panic!("key {other:?}"),
            };
            let v = match &row[1] {
                Datum::Null => "NULL".to_string(),
                Datum::Int(i) => i.to_string(),
                Datum::Str(s) => s.clone(),
                other => format!("{other:?}"),
            };
            (k, v)
        })
        .collect()
}

/// A fresh table `t (id INT PRIMARY KEY, v INT)` with rows `(i, i)` for i in 1..=`rows` (its
/// statistics analyzed), and its source definition reading `chunk` rows per snapshot chunk.
async fn int_table_in_chunks(name: &str, rows: i64, chunk: &str) -> (Conn, String, TableDef) {
    let (mut c, db) = fresh_db(name).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    let values: Vec<String> = (1..=rows).map(|i| format!("({i}, {i})")).collect();
    c.query_drop(format!("INSERT INTO t VALUES {}", values.join(","))).await.unwrap();
    c.query_drop("ANALYZE TABLE t").await.unwrap();
    let t = table_def(
        &db,
        "t",
        &[("id", nn(FlinkType::Int)), ("v", n(FlinkType::Int))],
        &[],
        &[("scan.incremental.snapshot.chunk.size", chunk)],
    );
    (c, db, t)
}

/// A small deterministic generator for the test writers (the same sequence on every run).
fn lcg(mut seed: u64) -> impl FnMut() -> i64 {
    move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as i64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_binlog_changes() {
    let (mut c, db) = fresh_db("basic").await;
    c.query_drop("CREATE TABLE orders (order_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, order_revenue FLOAT NOT NULL, order_region VARCHAR(40) NOT NULL, customer_id INT NOT NULL)").await.unwrap();
    c.query_drop("INSERT INTO orders (order_revenue, order_region, customer_id) VALUES (10.5, 'north', 1), (20, 'south', 2), (30.25, 'east', 3)").await.unwrap();
    let t = table_def(
        &db,
        "orders",
        &[
            ("order_id", nn(FlinkType::Int)),
            ("order_revenue", nn(FlinkType::Float)),
            ("order_region", nn(FlinkType::Varchar(MAX_LENGTH))),
            ("customer_id", nn(FlinkType::Int)),
        ],
        &[
            ("db", "database_name", nn(FlinkType::Varchar(MAX_LENGTH))),
            ("tbl", "table_name", nn(FlinkType::Varchar(MAX_LENGTH))),
            ("ts", "op_ts", nn(FlinkType::TimestampLtz(3))),
            ("rk", "row_kind", nn(FlinkType::Varchar(MAX_LENGTH))),
        ],
        &[],
    );
    let mut r = start(&t);
    r.until(30, "the snapshot", |r| r.state.len() == 3).await;
    assert!(r.changes.iter().all(|(k, row)| *k == RowKind::Insert && row[6] == Datum::Timestamp(0)));
    assert_eq!(r.changes[0].1[1], Datum::Float(10.5));
    assert_eq!(r.changes[0].1[4], Datum::Str(db.clone()));
    assert_eq!(r.changes[0].1[5], Datum::Str("orders".into()));

    c.query_drop("INSERT INTO orders (order_revenue, order_region, customer_id) VALUES (40, 'west', 4)").await.unwrap();
    c.query_drop("UPDATE orders SET order_region = 'north-east' WHERE order_id = 1").await.unwrap();
    c.query_drop("DELETE FROM orders WHERE order_id = 2").await.unwrap();
    r.until(30, "the binlog changes", |r| r.changes.len() == 3 + 4).await;
    let tail: Vec<(RowKind, Datum, Datum)> =
        r.changes[3..].iter().map(|(k, row)| (*k, row[0].clone(), row[7].clone())).collect();
    assert_eq!(
        tail,
        vec![
            (RowKind::Insert, Datum::Int(4), Datum::Str("+I".into())),
            (RowKind::UpdateBefore, Datum::Int(1), Datum::Str("-U".into())),
            (RowKind::UpdateAfter, Datum::Int(1), Datum::Str("+U".into())),
            (RowKind::Delete, Datum::Int(2), Datum::Str("-D".into())),
        ]
    );
    assert_eq!(r.changes[4].1[2], Datum::Str("north".into()));
    assert_eq!(r.changes[5].1[2], Datum::Str("north-east".into()));
    match &r.changes[3].1[6] {
        Datum::Timestamp(ts) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
            assert!((now - ts).abs() < 120_000_000, "op_ts {ts} is not close to now {now}");
        }
        other => panic!("op_ts {other:?}"),
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_switches_to_binlog_under_concurrent_writes() {
    let (mut c, db, t) = int_table_in_chunks("switch", 6000, "250").await;

    // A writer that updates, deletes and inserts all over the key range while the snapshot runs.
    let writer_db = db.clone();
    let writer = tokio::spawn(async move {
        let mut w = conn().await;
        w.query_drop(format!("USE {writer_db}")).await.unwrap();
        let mut next = lcg(42);
        for i in 0..400 {
            let k = next() % 7000 + 1;
            let sql = match i % 4 {
                0 => format!("UPDATE t SET v = v + 1000 WHERE id = {k}"),
                1 => format!("DELETE FROM t WHERE id = {k}"),
                2 => format!("INSERT INTO t VALUES ({}, {i}) ON DUPLICATE KEY UPDATE v = -v", k),
                _ => format!("UPDATE t SET id = id + 10000 WHERE id = {k}"),
            };
            w.query_drop("BEGIN").await.unwrap();
            w.query_drop(sql).await.unwrap();
            w.query_drop(format!("UPDATE t SET v = {i} WHERE id = {}", next() % 7000 + 1)).await.unwrap();
            w.query_drop("COMMIT").await.unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut r = start(&t);
    writer.await.unwrap();
    let want = table_state(&mut c, "SELECT id, CAST(v AS CHAR) FROM t").await;
    r.until(120, "the final state", |r| state_as_strings(r) == want).await;
    let r = r.stop().await;
    assert_eq!(state_as_strings(&r), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_with_edge_values_read_the_same_from_snapshot_and_binlog() {
    let (mut c, db) = fresh_db("types").await;
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    c.query_drop(
        "CREATE TABLE ty (
            id INT PRIMARY KEY, b TINYINT(1), ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED,
            bi BIGINT, bu BIGINT UNSIGNED, f FLOAT, d DOUBLE, de DECIMAL(20,4), dt DATETIME(6), ts TIMESTAMP(3) NULL,
            da DATE, tm TIME(3), t2 TIME(2), y YEAR, c CHAR(5), vc VARCHAR(50), tx TEXT, bin BINARY(4), vb VARBINARY(10), bl BLOB,
            e ENUM('small','medium','large'), st SET('r','w','x'), bt BIT(1), b8 BIT(12), js JSON, g GEOMETRY, lat VARCHAR(10) CHARACTER SET latin1
        )",
    )
    .await
    .unwrap();
    let row_max = "1, 1, 127, 255, 32767, 8388607, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615, 1.5, 1.7976931348623157e308, \
        9999999999999999.9999, '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999', '9999-12-31', '838:59:59.999', '838:59:59.99', 2155, 'abc', 'héllo wörld ✓ 日本', \
        'long text 😀', x'01020000', x'00ff', x'deadbeef', 'large', 'r,x', b'1', b'101010101010', '{\"a\": [1, 2.5, \"x\"]}', ST_GeomFromText('POINT(1 2)'), 'café'";
    let row_min = "2, 0, -128, 0, -32768, -8388608, -2147483648, 0, -9223372036854775808, 0, -1.5, -2.5e-300, \
        -9999999999999999.9999, '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01.000', '1000-01-01', '-838:59:59.999', '-838:59:59', 1901, '', '', \
        '', x'', x'', x'', 'small', '', b'0', b'0', '[]', ST_GeomFromText('LINESTRING(0 0, 1 1)'), ''";
    let row_null = "3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL";
    for row in [row_max, row_min, row_null] {
        c.query_drop(format!("INSERT INTO ty VALUES ({row})")).await.unwrap();
    }
    let bytes = n(FlinkType::Varbinary(MAX_LENGTH));
    let cols = vec![
        ("id", nn(FlinkType::Int)),
        ("b", n(FlinkType::Boolean)),
        ("ti", n(FlinkType::TinyInt)),
        ("tu", n(FlinkType::SmallInt)),
        ("si", n(FlinkType::SmallInt)),
        ("mi", n(FlinkType::Int)),
        ("i", n(FlinkType::Int)),
        ("iu", n(FlinkType::BigInt)),
        ("bi", n(FlinkType::BigInt)),
        ("bu", n(FlinkType::Decimal(20, 0))),
        ("f", n(FlinkType::Float)),
        ("d", n(FlinkType::Double)),
        ("de", n(FlinkType::Decimal(20, 4))),
        ("dt", n(FlinkType::Timestamp(6))),
        ("ts", n(FlinkType::TimestampLtz(3))),
        ("da", n(FlinkType::Date)),
        ("tm", s()),
        ("t2", n(FlinkType::Time(2))),
        ("y", n(FlinkType::Int)),
        ("c", s()),
        ("vc", s()),
        ("tx", s()),
        ("bin", bytes.clone()),
        ("vb", bytes.clone()),
        ("bl", bytes.clone()),
        ("e", s()),
        ("st", s()),
        ("bt", n(FlinkType::Boolean)),
        ("b8", bytes.clone()),
        ("js", s()),
        ("g", bytes.clone()),
        ("lat", s()),
    ];
    let t = table_def(&db, "ty", &cols, &[], &[("server-time-zone", "UTC")]);
    let mut r = start(&t);
    r.until(30, "the snapshot", |r| r.state.len() == 3).await;
    // The same rows again through the binlog, with ids + 10.
    for row in [row_max, row_min, row_null] {
        let (_, rest) = row.split_once(',').unwrap();
        let id: i32 = row.split(',').next().unwrap().trim().parse().unwrap();
        c.query_drop(format!("INSERT INTO ty VALUES ({}, {rest})", id + 10)).await.unwrap();
    }
    r.until(30, "the binlog rows", |r| r.state.len() == 6).await;
    let r = r.stop().await;
    let by_id = |id: i64| r.state.get(&key(&Datum::Int(id))).unwrap().clone();
    for id in 1..=3 {
        let (snap, bin) = (by_id(id), by_id(id + 10));
        for (i, (a, b)) in snap.iter().zip(&bin).enumerate().skip(1) {
            assert_eq!(a, b, "column {} of row {id}: snapshot {a:?} vs binlog {b:?}", cols[i].0);
        }
    }
    let max = by_id(1);
    let col = |name: &str| cols.iter().position(|(n, _)| *n == name).unwrap();
    assert_eq!(max[col("b")], Datum::Bool(true));
    assert_eq!(max[col("tu")], Datum::Int(255));
    assert_eq!(max[col("iu")], Datum::Int(4294967295));
    assert_eq!(max[col("bu")], Datum::Decimal(18446744073709551615, 0));
    assert_eq!(max[col("de")], Datum::Decimal(99999999999999999999, 4));
    assert_eq!(max[col("dt")], Datum::Timestamp(parse_timestamp("9999-12-31 23:59:59.999999").unwrap()));
    assert_eq!(max[col("ts")], Datum::Timestamp(parse_timestamp("2038-01-19 03:14:07.999").unwrap()));
    assert_eq!(max[col("tm")], Datum::Str("838:59:59.999".into()));
    assert_eq!(max[col("y")], Datum::Int(2155));
    assert_eq!(max[col("vc")], Datum::Str("héllo wörld ✓ 日本".into()));
    assert_eq!(max[col("tx")], Datum::Str("long text 😀".into()));
    assert_eq!(max[col("bin")], Datum::Bytes(vec![1, 2, 0, 0]));
    assert_eq!(max[col("e")], Datum::Str("large".into()));
    assert_eq!(max[col("st")], Datum::Str("r,x".into()));
    assert_eq!(max[col("bt")], Datum::Bool(true));
    assert_eq!(max[col("b8")], Datum::Bytes(vec![0x0a, 0xaa]));
    assert_eq!(max[col("lat")], Datum::Str("café".into()));
    let min = by_id(2);
    assert_eq!(min[col("ti")], Datum::Int(-128));
    assert_eq!(min[col("bi")], Datum::Int(i64::MIN));
    assert_eq!(min[col("tm")], Datum::Str("-838:59:59.999".into()));
    assert_eq!(min[col("dt")], Datum::Timestamp(parse_timestamp("1000-01-01 00:00:00.000001").unwrap()));
    assert_eq!(min[col("bt")], Datum::Bool(false));
    let null = by_id(3);
    assert!(null[1..].iter().all(|d| *d == Datum::Null), "{null:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_rows_arrive_together() {
    let (mut c, db) = fresh_db("tx").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    let t = table_def(&db, "t", &[("id", nn(FlinkType::Int)), ("v", s())], &[], &[]);
    let mut r = start(&t);
    // Nothing to snapshot; wait for the binlog reader with a probe row.
    c.query_drop("INSERT INTO t VALUES (100, 'probe')").await.unwrap();
    r.until(30, "the probe row", |r| r.state.len() == 1).await;
    let before = r.batches.len();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')").await.unwrap();
    c.query_drop("UPDATE t SET v = 'B' WHERE id = 2").await.unwrap();
    c.query_drop("DELETE FROM t WHERE id = 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.query_drop("COMMIT").await.unwrap();
    r.until(30, "the transaction", |r| r.changes.len() == 1 + 3 + 2 + 1).await;
    assert_eq!(r.batches[before..], [6], "one transaction, one batch");
    let want: Vec<(RowKind, i64)> = vec![
        (RowKind::Insert, 1),
        (RowKind::Insert, 2),
        (RowKind::Insert, 3),
        (RowKind::UpdateBefore, 2),
        (RowKind::UpdateAfter, 2),
        (RowKind::Delete, 1),
    ];
    let got: Vec<(RowKind, i64)> =
        r.changes[1..].iter().map(|(k, row)| (*k, if let Datum::Int(i) = row[0] { i } else { -1 })).collect();
    assert_eq!(got, want);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_name_regex_captures_several_tables() {
    let (mut c, db) = fresh_db("regex").await;
    for t in ["orders_1", "orders_2", "other"] {
        c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(10))")).await.unwrap();
    }
    c.query_drop("INSERT INTO orders_1 VALUES (1, 'a')").await.unwrap();
    c.query_drop("INSERT INTO orders_2 VALUES (2, 'b')").await.unwrap();
    c.query_drop("INSERT INTO other VALUES (3, 'c')").await.unwrap();
    let t = table_def(
        &db,
        "orders_[0-9]+",
        &[("id", nn(FlinkType::Int)), ("v", s())],
        &[("tbl", "table_name", nn(FlinkType::Varchar(MAX_LENGTH)))],
        &[],
    );
    let mut r = start(&t);
    r.until(30, "both snapshots", |r| r.state.len() == 2).await;
    c.query_drop("INSERT INTO other VALUES (4, 'd')").await.unwrap();
    c.query_drop("INSERT INTO orders_2 VALUES (5, 'e')").await.unwrap();
    r.until(30, "the binlog row", |r| r.state.len() == 3).await;
    let r = r.stop().await;
    let tables: Vec<(String, String)> = r
        .state
        .values()
        .map(|row| (format!("{:?}", row[0]), if let Datum::Str(s) = &row[2] { s.clone() } else { String::new() }))
        .collect();
    assert_eq!(
        tables,
        vec![
            ("Int(1)".into(), "orders_1".into()),
            ("Int(2)".into(), "orders_2".into()),
            ("Int(5)".into(), "orders_2".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_binlog_connection_recovers_without_loss_or_duplicates() {
    ensure_server();
    let _ = root_sql(
        "CREATE USER IF NOT EXISTS 'rsql_kill'@'127.0.0.1' IDENTIFIED BY 'rsql'; \
         GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'rsql_kill'@'127.0.0.1'; \
         GRANT ALL ON `test%`.* TO 'rsql_kill'@'127.0.0.1'",
    );
    let (mut c, db) = fresh_db("kill").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 1), (2, 2)").await.unwrap();
    let t =
        table_def(&db, "t", &[("id", nn(FlinkType::Int)), ("v", n(FlinkType::Int))], &[], &[("username", "rsql_kill")]);
    let mut r = start(&t);
    r.until(30, "the snapshot", |r| r.state.len() == 2).await;
    for round in 0..3 {
        let base = 100 * (round + 1);
        c.query_drop(format!("INSERT INTO t VALUES ({base}, 0)")).await.unwrap();
        r.until(30, "a row before the kill", |r| r.state.len() == 3 + round as usize * 2).await;
        let ids = root_sql(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'rsql_kill' AND COMMAND LIKE 'Binlog Dump%'",
        );
        assert_eq!(ids.len(), 1, "one binlog connection");
        let _ = root_sql(&format!("KILL {}", ids[0]));
        // Rows written while the reader is away.
        c.query_drop(format!("INSERT INTO t VALUES ({}, 1)", base + 1)).await.unwrap();
        c.query_drop(format!("UPDATE t SET v = 5 WHERE id = {base}")).await.unwrap();
        r.until(60, "rows after the kill", |r| r.state.len() == 4 + round as usize * 2).await;
    }
    let want = table_state(&mut c, "SELECT id, CAST(v AS CHAR) FROM t").await;
    r.until(30, "the final state", |r| state_as_strings(r) == want).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_mode_is_bounded_and_latest_offset_skips_existing_rows() {
    let (mut c, db) = fresh_db("modes").await;
    c.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await.unwrap();
    let cols = [("id", nn(FlinkType::BigInt)), ("v", s())];
    let t = table_def(&db, "t", &cols, &[], &[("scan.startup.mode", "snapshot")]);
    assert!(MySqlCdcFactory.source_info(&t).unwrap().bounded);
    let mut r = start(&t);
    let done = tokio::time::timeout(Duration::from_secs(30), &mut r.handle).await.expect("snapshot mode ends");
    done.unwrap().unwrap();
    while let Ok(m) = r.rx.try_recv() {
        r.apply(m);
    }
    assert_eq!(r.state.len(), 2);

    let t = table_def(&db, "t", &cols, &[], &[("scan.startup.mode", "latest-offset")]);
    let mut r = start(&t);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.query_drop("INSERT INTO t VALUES (3, 'c')").await.unwrap();
    r.until(30, "the new row", |r| !r.state.is_empty()).await;
    let r = r.stop().await;
    assert_eq!(r.state.keys().cloned().collect::<Vec<_>>(), vec![key(&Datum::Int(3))]);
}

async fn start_error(t: &TableDef) -> String {
    let mut r = start(t);
    let res = tokio::time::timeout(Duration::from_secs(60), &mut r.handle).await.expect("fails within 60 s").unwrap();
    match res {
        Ok(()) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_at_start() {
    let (mut c, db) = fresh_db("errors").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))").await.unwrap();
    c.query_drop("CREATE TABLE nokey (id INT, name VARCHAR(20))").await.unwrap();
    let cols = [("id", nn(FlinkType::Int)), ("name", s())];

    let e = start_error(&table_def(&db, "t", &cols, &[], &[("password", "wrong")])).await;
    assert!(e.contains("check 'username' and 'password'"), "{e}");

    let e = start_error(&table_def(&db, "t", &cols, &[], &[("port", "1")])).await;
    assert!(e.contains("check 'hostname' and 'port'"), "{e}");

    let e =
        start_error(&table_def(&db, "t", &[("id", nn(FlinkType::Int)), ("name", n(FlinkType::Int))], &[], &[])).await;
    assert!(e.contains("column 'name' is declared INT") && e.contains("varchar(20)"), "{e}");

    let e = start_error(&table_def(&db, "t", &[("id", nn(FlinkType::Int)), ("nme", s())], &[], &[])).await;
    assert!(e.contains("column 'nme' does not exist"), "{e}");

    let e = start_error(&table_def(&db, "nokey", &cols, &[], &[])).await;
    assert!(e.contains("has no primary key"), "{e}");

    let e = start_error(&table_def(&db, "missing_[0-9]", &cols, &[], &[])).await;
    assert!(e.contains("no table matches"), "{e}");

    let e = start_error(&table_def(
        &db,
        "t",
        &cols,
        &[],
        &[
            ("scan.startup.mode", "specific-offset"),
            ("scan.startup.specific-offset.file", "binlog.999999"),
            ("scan.startup.specific-offset.pos", "4"),
        ],
    ))
    .await;
    assert!(e.contains("purged") || e.contains("no longer on the server"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_changes_reload_the_table_or_stop_with_the_statement() {
    let (mut c, db) = fresh_db("ddl").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    let t = table_def(&db, "t", &[("id", nn(FlinkType::Int)), ("v", s())], &[], &[]);
    let mut r = start(&t);
    r.until(30, "the snapshot", |r| r.state.len() == 1).await;
    c.query_drop("ALTER TABLE t ADD COLUMN extra INT FIRST").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (7, 2, 'b')").await.unwrap();
    r.until(30, "a row after ADD COLUMN", |r| r.state.len() == 2).await;
    assert_eq!(r.changes[1].1, vec![Datum::Int(2), Datum::Str("b".into())]);

    c.query_drop("ALTER TABLE t DROP COLUMN v").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (8, 3)").await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(30), &mut r.handle).await.expect("the source stops").unwrap();
    let e = res.expect_err("dropping a declared column is an error").to_string();
    assert!(e.contains("ALTER TABLE t DROP COLUMN v") && e.contains("column 'v' does not exist"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_startup_skips_older_transactions() {
    let (mut c, db) = fresh_db("since").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'old')").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.query_drop("INSERT INTO t VALUES (2, 'new')").await.unwrap();
    let t = table_def(
        &db,
        "t",
        &[("id", nn(FlinkType::Int)), ("v", s())],
        &[],
        &[("scan.startup.mode", "timestamp"), ("scan.startup.timestamp-millis", since.as_str())],
    );
    let mut r = start(&t);
    r.until(60, "the newer row", |r| !r.state.is_empty()).await;
    c.query_drop("INSERT INTO t VALUES (3, 'later')").await.unwrap();
    r.until(30, "a live row", |r| r.state.len() == 2).await;
    let r = r.stop().await;
    assert_eq!(r.state.keys().cloned().collect::<Vec<_>>(), vec![key(&Datum::Int(2)), key(&Datum::Int(3))]);
}

/// True when a saved position is past the snapshot.
fn in_binlog_phase(p: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(p).unwrap();
    v["snapshot"].is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_saved_positions_without_loss_or_duplicates() {
    let (mut c, db, t) = int_table_in_chunks("resume", 4000, "300").await;
    let writer_db = db.clone();
    let writer = tokio::spawn(async move {
        let mut w = conn().await;
        w.query_drop(format!("USE {writer_db}")).await.unwrap();
        let mut next = lcg(7);
        for i in 0..600 {
            let k = next() % 4500 + 1;
            let sql = match i % 3 {
                0 => format!("UPDATE t SET v = v + 1000 WHERE id = {k}"),
                1 => format!("DELETE FROM t WHERE id = {k}"),
                _ => format!("INSERT INTO t VALUES ({k}, {i}) ON DUPLICATE KEY UPDATE v = -v"),
            };
            w.query_drop("BEGIN").await.unwrap();
            w.query_drop(sql).await.unwrap();
            w.query_drop(format!("UPDATE t SET v = {i} WHERE id = {}", next() % 4500 + 1)).await.unwrap();
            w.query_drop("COMMIT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
    });

    // Crash in the snapshot phase: keep only what the third position covers.
    let mut r = start_at(&t, None, 100);
    r.until(60, "positions in the snapshot", |r| r.positions.len() >= 3).await;
    r.handle.abort();
    let (state, pos) = r.positions[2].clone();
    assert!(!in_binlog_phase(&pos), "the third position should fall in the snapshot");
    let mut r = start_at(&t, Some(&pos), 100);
    r.state = state;

    // Crash again once the binlog is being read.
    r.until(120, "a position in the binlog phase", |r| r.positions.iter().any(|(_, p)| in_binlog_phase(p))).await;
    r.handle.abort();
    let (state, pos) = r.positions.iter().rev().find(|(_, p)| in_binlog_phase(p)).cloned().unwrap();
    let mut r = start_at(&t, Some(&pos), 100);
    r.state = state;

    writer.await.unwrap();
    let want = table_state(&mut c, "SELECT id, CAST(v AS CHAR) FROM t").await;
    r.until(120, "the final state", |r| state_as_strings(r) == want).await;
    let r = r.stop().await;
    assert_eq!(state_as_strings(&r), want);
}

/// The binlog position inside a saved source position.
fn saved_binlog(p: &[u8]) -> BinlogPosition {
    let v: serde_json::Value = serde_json::from_slice(p).unwrap();
    BinlogPosition::parse(v["binlog"].as_str().unwrap()).unwrap()
}

async fn binlog_end(c: &mut Conn) -> BinlogPosition {
    let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    BinlogPosition::new(row.get::<String, _>(0).unwrap(), row.get::<u64, _>(1).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_uncaptured_tables_advance_the_position() {
    let (mut c, db) = fresh_db("idle").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    c.query_drop("CREATE TABLE other (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    let t = table_def(&db, "t", &[("id", nn(FlinkType::Int)), ("v", s())], &[], &[]);
    let mut r = start(&t);
    r.until(30, "the snapshot", |r| r.state.len() == 1).await;
    r.until(30, "a position in the binlog phase", |r| r.positions.iter().any(|(_, p)| in_binlog_phase(p))).await;
    let before = saved_binlog(&r.positions.last().unwrap().1);

    for i in 0..20 {
        c.query_drop(format!("INSERT INTO other VALUES ({i})")).await.unwrap();
    }
    let end = binlog_end(&mut c).await;
    assert!(end.reached(&before) && end != before);
    r.until(30, "a position past the other table's changes", |r| {
        r.positions.last().is_some_and(|(_, p)| saved_binlog(p).reached(&end))
    })
    .await;
    let (state, pos) = r.positions.last().cloned().unwrap();
    let r = r.stop().await;
    assert_eq!(r.changes.len(), 1, "the other table's rows are not emitted");

    // Resuming there reads only what came later.
    c.query_drop("INSERT INTO t VALUES (2, 'b')").await.unwrap();
    let mut r = start_at(&t, Some(&pos), 1000);
    r.state = state;
    r.until(30, "the new row", |r| r.state.len() == 2).await;
    let r = r.stop().await;
    assert_eq!(r.changes.len(), 1);
}

/// The sequence number of replication domain 0 in a MariaDB GTID position.
fn domain0_seq(gtids: &str) -> u64 {
    gtids
        .split(',')
        .find_map(|g| g.trim().strip_prefix("0-").and_then(|r| r.split('-').nth(1)).and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("no domain 0 in '{gtids}'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specific_offset_gtid_set_starts_after_it_and_positions_carry_gtids() {
    let (mut c, db) = fresh_db("gtid").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'before')").await.unwrap();
    let gtid: String = c.query_first("SELECT @@gtid_binlog_pos").await.unwrap().unwrap();
    c.query_drop("INSERT INTO t VALUES (2, 'after')").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (3, 'after')").await.unwrap();
    let last: String = c.query_first("SELECT @@gtid_binlog_pos").await.unwrap().unwrap();
    let t = table_def(
        &db,
        "t",
        &[("id", nn(FlinkType::Int)), ("v", s())],
        &[],
        &[("scan.startup.mode", "specific-offset"), ("scan.startup.specific-offset.gtid-set", gtid.as_str())],
    );
    let mut r = start(&t);
    r.until(30, "the rows after the GTID", |r| r.state.len() == 2).await;
    r.until(30, "a position with the GTIDs", |r| {
        r.positions.last().is_some_and(|(_, p)| {
            let b = saved_binlog(p);
            !b.file.is_empty() && domain0_seq(&b.gtid_set) >= domain0_seq(&last)
        })
    })
    .await;
    let r = r.stop().await;
    assert_eq!(r.state.keys().cloned().collect::<Vec<_>>(), vec![key(&Datum::Int(2)), key(&Datum::Int(3))]);

    // A position known only by its GTIDs (as saved before the first event with an offset came)
    // resumes by GTID too.
    let saved = serde_json::json!({ "binlog": format!(":4:{last}"), "snapshot": null }).to_string();
    c.query_drop("INSERT INTO t VALUES (4, 'later')").await.unwrap();
    let mut r = start_at(&t, Some(saved.as_bytes()), 1000);
    r.until(30, "the row after the saved GTIDs", |r| r.state.len() == 1).await;
    let r = r.stop().await;
    assert_eq!(r.state.keys().cloned().collect::<Vec<_>>(), vec![key(&Datum::Int(4))]);

    // A MySQL notation on MariaDB is refused with what to write instead.
    let t = table_def(
        &db,
        "t",
        &[("id", nn(FlinkType::Int)), ("v", s())],
        &[],
        &[
            ("scan.startup.mode", "specific-offset"),
            ("scan.startup.specific-offset.gtid-set", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"),
        ],
    );
    let e = start_error(&t).await;
    assert!(e.contains("MySQL's notation") && e.contains("0-1-42"), "{e}");
}

/// Snapshot of a table whose primary key is not one integer (`ddl`'s key columns get the values
/// `key_of(i)`; `move_to(i)` assigns another key), split into small chunks while a writer changes values, deletes, inserts and
/// moves rows to other keys; the result must equal the table.
async fn chunked_by_key_under_concurrent_writes(
    name: &str,
    ddl: &str,
    key_cols: &str,
    key_of: fn(i64) -> String,
    move_to: fn(i64) -> String,
) {
    let (mut c, db) = fresh_db(name).await;
    c.query_drop(ddl).await.unwrap();
    let values: Vec<String> = (1..=3000).map(|i| format!("({}, {i}, {i})", key_of(i))).collect();
    c.query_drop(format!("INSERT INTO t ({key_cols}, id, v) VALUES {}", values.join(","))).await.unwrap();
    let t = table_def(
        &db,
        "t",
        &[("id", nn(FlinkType::Int)), ("v", n(FlinkType::Int))],
        &[],
        &[("scan.incremental.snapshot.chunk.size", "200")],
    );
    let writer_db = db.clone();
    let key_cols = key_cols.to_string();
    let writer = tokio::spawn(async move {
        let mut w = conn().await;
        w.query_drop(format!("USE {writer_db}")).await.unwrap();
        let mut next = lcg(11);
        for i in 0..400 {
            let id = next() % 3500 + 1;
            let sql = match i % 4 {
                0 => format!("UPDATE t SET v = v + 1000 WHERE id = {id}"),
                1 => format!("DELETE FROM t WHERE id = {id}"),
                2 => format!(
                    "INSERT INTO t ({key_cols}, id, v) VALUES ({}, {}, {i}) ON DUPLICATE KEY UPDATE v = -v",
                    key_of(id),
                    id
                ),
                // Moves the row to another key, possibly into a chunk already read or not yet read.
                _ => format!("UPDATE IGNORE t SET {} WHERE id = {id}", move_to(next() % 3500 + 4000)),
            };
            w.query_drop("BEGIN").await.unwrap();
            let _ = w.query_drop(sql).await;
            w.query_drop(format!("UPDATE t SET v = {i} WHERE id = {}", next() % 3500 + 1)).await.unwrap();
            w.query_drop("COMMIT").await.unwrap();
            if i % 40 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut r = start(&t);
    writer.await.unwrap();
    let want = table_state(&mut c, "SELECT id, CAST(v AS CHAR) FROM t").await;
    r.until(120, "the final state", |r| state_as_strings(r) == want).await;
    let r = r.stop().await;
    assert_eq!(state_as_strings(&r), want);
    assert!(r.batches.len() > 10, "read in chunks: {} batches", r.batches.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varchar_key_is_read_in_chunks_under_concurrent_writes() {
    // Mixed case and accents under the default case- and accent-insensitive collation.
    fn key_of(i: i64) -> String {
        let prefix = ["a", "B", "\u{e9}", "E", "z"][(i % 5) as usize];
        format!("'{prefix}-{i:05}'")
    }
    chunked_by_key_under_concurrent_writes(
        "varchar_key",
        "CREATE TABLE t (k VARCHAR(20) NOT NULL PRIMARY KEY, id INT NOT NULL UNIQUE, v INT) DEFAULT CHARSET = utf8mb4",
        "k",
        key_of,
        |i| format!("k = {}", key_of(i)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_key_is_read_in_chunks_under_concurrent_writes() {
    fn key_of(i: i64) -> String {
        format!("'g{}', {}", i % 7, i / 7)
    }
    chunked_by_key_under_concurrent_writes(
        "composite_key",
        "CREATE TABLE t (grp VARCHAR(5) NOT NULL, n INT NOT NULL, id INT NOT NULL UNIQUE, v INT, PRIMARY KEY (grp, n))",
        "grp, n",
        key_of,
        |i| format!("grp = 'g{}', n = {}", i % 7, i / 7),
    )
    .await;
}

/// ENUM labels whose declaration order (the order MySQL sorts and compares them by) is not their
/// string order.
const ENUM_LABELS: [&str; 5] = ["zulu", "alpha", "mike", "Bravo", "echo"];
/// SET members in declaration order; a value's number has bit i set for member i.
const SET_MEMBERS: [&str; 4] = ["x", "c", "a", "q"];

/// The SET value whose number is `mask` (members in declaration order, as MySQL writes them).
fn set_value(mask: i64) -> String {
    SET_MEMBERS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, m)| *m).collect::<Vec<_>>().join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_key_is_read_in_chunks_under_concurrent_writes() {
    fn key_of(i: i64) -> String {
        format!("'{}', {}", ENUM_LABELS[(i % 5) as usize], i / 5)
    }
    chunked_by_key_under_concurrent_writes(
        "enum_key",
        "CREATE TABLE t (e ENUM('zulu','alpha','mike','Bravo','echo') NOT NULL, n INT NOT NULL, id INT NOT NULL UNIQUE, v INT, PRIMARY KEY (e, n))",
        "e, n",
        key_of,
        |i| format!("e = '{}', n = {}", ENUM_LABELS[(i % 5) as usize], i / 5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_key_is_read_in_chunks_under_concurrent_writes() {
    fn key_of(i: i64) -> String {
        format!("'{}', {}", set_value(i % 16), i / 16)
    }
    chunked_by_key_under_concurrent_writes(
        "set_key",
        "CREATE TABLE t (s SET('x','c','a','q') NOT NULL, n INT NOT NULL, id INT NOT NULL UNIQUE, v INT, PRIMARY KEY (s, n))",
        "s, n",
        key_of,
        |i| format!("s = '{}', n = {}", set_value(i % 16), i / 16),
    )
    .await;
}

/// Rows of a source whose first column is a text key: key -> second column as text.
fn text_keyed_state(r: &Running) -> BTreeMap<String, String> {
    r.state
        .values()
        .map(|row| {
            let k = match &row[0] {
                Datum::Str(s) => s.clone(),
                other => panic!("key {other:?}"),
            };
            let v = match &row[1] {
                Datum::Null => "NULL".to_string(),
                Datum::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (k, v)
        })
        .collect()
}

async fn text_keyed_table(c: &mut Conn) -> BTreeMap<String, String> {
    let rows: Vec<(String, Option<String>)> = c.query("SELECT CAST(k AS CHAR), CAST(v AS CHAR) FROM t").await.unwrap();
    rows.into_iter().map(|(k, v)| (k, v.unwrap_or_else(|| "NULL".into()))).collect()
}

/// A one-column ENUM or SET key read two rows per chunk, so that every chunk bound is a key
/// whose number order differs from its string order, then changed through the binlog: inserts,
/// value updates, key updates (a row moving before and after others) and deletes.
async fn enum_or_set_single_key(name: &str, ddl: &str, keys: &[String], changes: &[String]) {
    let (mut c, db) = fresh_db(name).await;
    c.query_drop(ddl).await.unwrap();
    // Inserted in string order, which is not the key order.
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let values: Vec<String> = sorted.iter().enumerate().map(|(i, k)| format!("('{k}', {i})")).collect();
    c.query_drop(format!("INSERT INTO t VALUES {}", values.join(","))).await.unwrap();
    let want_order: Vec<String> =
        c.query::<String, _>("SELECT CAST(k AS CHAR) FROM t ORDER BY k").await.unwrap();
    let t = table_def(
        &db,
        "t",
        &[("k", nn(FlinkType::Varchar(MAX_LENGTH))), ("v", n(FlinkType::Int))],
        &[],
        &[("scan.incremental.snapshot.chunk.size", "2")],
    );
    let mut r = start(&t);
    let want = text_keyed_table(&mut c).await;
    r.until(60, "the snapshot", |r| text_keyed_state(r) == want).await;
    let read_order: Vec<String> = r
        .changes
        .iter()
        .map(|(_, row)| match &row[0] {
            Datum::Str(s) => s.clone(),
            other => panic!("key {other:?}"),
        })
        .collect();
    assert_eq!(read_order, want_order, "the snapshot reads keys in the server's order");
    assert!(r.batches.len() >= keys.len() / 2, "read in chunks of two: {:?}", r.batches);
    for sql in changes {
        c.query_drop(sql).await.unwrap();
    }
    let want = text_keyed_table(&mut c).await;
    r.until(60, "the binlog changes", |r| text_keyed_state(r) == want).await;
    let r = r.stop().await;
    assert_eq!(text_keyed_state(&r), want);
    let kinds: Vec<RowKind> = r.changes[keys.len()..].iter().map(|(k, _)| *k).collect();
    assert!(kinds.contains(&RowKind::UpdateBefore) && kinds.contains(&RowKind::Delete), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_primary_key_snapshot_chunks_and_binlog() {
    let keys: Vec<String> = ENUM_LABELS[..4].iter().map(|s| s.to_string()).collect();
    enum_or_set_single_key(
        "enum_pk",
        "CREATE TABLE t (k ENUM('zulu','alpha','mike','Bravo','echo','kilo') NOT NULL PRIMARY KEY, v INT)",
        &keys,
        &[
            "INSERT INTO t VALUES ('echo', 100)".into(),
            "UPDATE t SET v = v + 10 WHERE k = 'alpha'".into(),
            "UPDATE t SET k = 'kilo' WHERE k = 'zulu'".into(),
            "UPDATE t SET k = 'zulu', v = 7 WHERE k = 'Bravo'".into(),
            "DELETE FROM t WHERE k = 'mike'".into(),
            "BEGIN".into(),
            "INSERT INTO t VALUES ('mike', 5)".into(),
            "DELETE FROM t WHERE k = 'echo'".into(),
            "COMMIT".into(),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_primary_key_snapshot_chunks_and_binlog() {
    let keys: Vec<String> = (1..12).map(set_value).collect();
    enum_or_set_single_key(
        "set_pk",
        "CREATE TABLE t (k SET('x','c','a','q') NOT NULL PRIMARY KEY, v INT)",
        &keys,
        &[
            "INSERT INTO t VALUES ('x,a,q', 100), ('', 101)".into(),
            "UPDATE t SET v = v + 10 WHERE k = 'c,a'".into(),
            "UPDATE t SET k = 'x,c,a,q' WHERE k = 'x'".into(),
            "UPDATE t SET k = 'c,a,q' WHERE k = 'x,c'".into(),
            "DELETE FROM t WHERE k = 'c'".into(),
            "DELETE FROM t WHERE k = ''".into(),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_snapshot_progress_then_the_binlog_lag() {
    let (mut c, _db, t) = int_table_in_chunks("status", 3000, "200").await;
    let mut r = start(&t);
    r.until(60, "the snapshot", |r| r.state.len() == 3000).await;
    let snapshot: Vec<(u64, u64)> = r
        .phases
        .iter()
        .filter_map(|p| match p {
            PhaseView::Snapshot { rows, estimated, rows_per_sec } => {
                assert!(*rows_per_sec >= 0.0);
                Some((*rows, *estimated))
            }
            _ => None,
        })
        .collect();
    assert!(!snapshot.is_empty(), "the snapshot phase is reported: {:?}", r.phases);
    assert!(snapshot.iter().any(|(rows, _)| *rows > 0 && *rows < 3000), "rows read as it goes: {snapshot:?}");
    assert!(snapshot.windows(2).all(|w| w[0].0 <= w[1].0), "rows read only grow: {snapshot:?}");
    assert!(snapshot.iter().all(|(_, est)| *est > 1000 && *est < 6000), "estimated from information_schema: {snapshot:?}");

    // The binlog phase: caught up (lag 0) once the changes are read.
    c.query_drop("UPDATE t SET v = -v WHERE id <= 10").await.unwrap();
    r.until(30, "the binlog changes", |r| r.changes.len() == 3000 + 20).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = r.status.view();
        if v.phase == PhaseView::Streaming("binlog") && v.lag == Some(Lag::Seconds(0.0)) {
            assert_eq!(v.text(), "binlog, lag 0.0 s");
            break;
        }
        assert!(Instant::now() < deadline, "not caught up: {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.stop().await;
}

/// A source started from an old binlog position is behind the server by the age of the events
/// it reads while it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_the_age_of_events_read_from_an_old_position() {
    let (mut c, db) = fresh_db("lag").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    let before = binlog_end(&mut c).await;
    for i in 0..100 {
        c.query_drop(format!("INSERT INTO t VALUES ({i}, {i})")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let pos = before.pos.to_string();
    let t = table_def(
        &db,
        "t",
        &[("id", nn(FlinkType::Int)), ("v", n(FlinkType::Int))],
        &[],
        &[
            ("scan.startup.mode", "specific-offset"),
            ("scan.startup.specific-offset.file", before.file.as_str()),
            ("scan.startup.specific-offset.pos", pos.as_str()),
        ],
    );
    // One row per batch: the source fills its channel (a batch and a position per transaction)
    // and waits there, in the middle of the old events.
    let mut r = start_at(&t, None, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    match r.status.view().lag {
        Some(Lag::Seconds(s)) => assert!((2.0..120.0).contains(&s), "events over two seconds old: lag {s}"),
        other => panic!("no lag in seconds: {other:?}"),
    }
    r.until(30, "every row", |r| r.state.len() == 100).await;
    r.stop().await;
}

/// Wall seconds and CPU seconds of this process and of the MariaDB server (when its pid file is
/// where `scripts/mariadb.sh` puts it) over one benchmark phase.
struct CpuClock {
    at: Instant,
    me: Option<f64>,
    server: Option<f64>,
}

#[derive(Clone, Copy)]
struct CpuUse {
    wall: f64,
    me: Option<f64>,
    server: Option<f64>,
}

impl CpuClock {
    fn now() -> CpuClock {
        CpuClock { at: Instant::now(), me: proc_cpu_secs("self"), server: server_pid().and_then(|p| proc_cpu_secs(&p)) }
    }

    fn since(&self) -> CpuUse {
        let me = proc_cpu_secs("self");
        let server = server_pid().and_then(|p| proc_cpu_secs(&p));
        CpuUse {
            wall: self.at.elapsed().as_secs_f64(),
            me: self.me.zip(me).map(|(a, b)| b - a),
            server: self.server.zip(server).map(|(a, b)| b - a),
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<f64>| v.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "n/a".into());
        write!(f, "wall {:.2} s, CPU of this process {}, of mysqld {}", self.wall, show(self.me), show(self.server))
    }
}

fn server_pid() -> Option<String> {
    let path = std::env::var("RSQL_MARIADB_PIDFILE").unwrap_or_else(|_| "/tmp/rsql-mariadb/mysqld.pid".into());
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// User + system CPU seconds of a process from /proc (Linux; None elsewhere).
fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Receives until `rows` rows arrived; returns the seconds it took from `since`.
async fn count_rows(rx: &mut mpsc::Receiver<Message>, rows: usize, since: Instant) -> f64 {
    let mut got = 0;
    while got < rows {
        match tokio::time::timeout(Duration::from_secs(300), rx.recv()).await {
            Ok(Some(Message::Batch(b))) => got += b.num_rows(),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("source stopped after {got} of {rows} rows"),
        }
    }
    since.elapsed().as_secs_f64()
}

/// Snapshot rows/s and binlog changes/s on the shared MariaDB, each beside the raw rate of the
/// same data read with no processing in the same run (a bare SELECT, the faster of the text
/// and the binary protocol; a bare binlog stream), with the CPU seconds of this process and of
/// the server for the snapshot and the bare SELECT.
/// `cargo test -p rsql-connectors --release --test mysql_cdc -- --ignored --nocapture bench_`
/// (RSQL_CDC_BENCH_ROWS rows, 200000 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_snapshot_and_binlog_rates() {
    use futures::StreamExt;
    let rows: usize = std::env::var("RSQL_CDC_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let (mut c, db) = fresh_db("bench").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(10,2), at DATETIME(3))")
        .await
        .unwrap();
    let fill = |from: usize, to: usize| {
        let v: Vec<String> =
            (from..to).map(|i| format!("({i}, 'name-{i}', {}.{:02}, '2024-01-01 00:00:00.123')", i % 10000, i % 100)).collect();
        format!("INSERT INTO t VALUES {}", v.join(","))
    };
    for start in (0..rows).step_by(5000) {
        c.query_drop(fill(start, (start + 5000).min(rows))).await.unwrap();
    }
    c.query_drop("ANALYZE TABLE t").await.unwrap();
    let cols = [
        ("id", nn(FlinkType::Int)),
        ("name", s()),
        ("amount", n(FlinkType::Decimal(10, 2))),
        ("at", n(FlinkType::Timestamp(3))),
    ];

    // Snapshot: bare SELECTs (text and binary protocol; the faster is the baseline), then the
    // source, each with the CPU seconds of this process and of the server.
    let select = "SELECT id, name, amount, at FROM t";
    let cpu0 = CpuClock::now();
    let mut res = c.query_iter(select).await.unwrap();
    let mut n_raw = 0usize;
    while let Some(_row) = res.next().await.unwrap() {
        n_raw += 1;
    }
    drop(res);
    let text_cpu = cpu0.since();
    assert_eq!(n_raw, rows);
    let cpu0 = CpuClock::now();
    let mut res = c.exec_iter(select, ()).await.unwrap();
    let mut n_raw = 0usize;
    while let Some(_row) = res.next().await.unwrap() {
        n_raw += 1;
    }
    drop(res);
    let binary_cpu = cpu0.since();
    assert_eq!(n_raw, rows);
    let (raw_select, raw_cpu, raw_kind) = if binary_cpu.wall < text_cpu.wall {
        (binary_cpu.wall, binary_cpu, "binary")
    } else {
        (text_cpu.wall, text_cpu, "text")
    };
    let t = table_def(&db, "t", &cols, &[], &[("scan.startup.mode", "snapshot")]);
    let cpu0 = CpuClock::now();
    let mut r = start(&t);
    let snap = count_rows(&mut r.rx, rows, Instant::now()).await;
    let snap_cpu = cpu0.since();
    let _ = r.stop.send(true);

    // Binlog: updates of every row written first, then read from the position before them.
    let before = binlog_end(&mut c).await;
    for start in (0..rows).step_by(5000) {
        c.query_drop(format!("UPDATE t SET amount = amount + 1 WHERE id >= {start} AND id < {}", start + 5000))
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    let mut raw = conn().await;
    raw.query_drop("SET @master_binlog_checksum = @@global.binlog_checksum").await.unwrap();
    raw.query_drop("SET @mariadb_slave_capability = 4").await.unwrap();
    let req = mysql_async::BinlogStreamRequest::new(6999)
        .with_filename(before.file.as_bytes())
        .with_pos(before.pos)
        .with_non_blocking();
    let mut stream = raw.get_binlog_stream(req).await.unwrap();
    let mut raw_rows = 0usize;
    while let Some(ev) = stream.next().await {
        let ev = ev.unwrap();
        if let Ok(Some(mysql_async::binlog::events::EventData::RowsEvent(re))) = ev.read_data() {
            if let Some(tme) = stream.get_tme(re.table_id()) {
                raw_rows += re.rows(tme).count();
            }
        }
        // Every update has been read (the stream is non-blocking, so it also ends at the end of
        // the binlog; a position alone would not do when the binlog rotates in between).
        if raw_rows >= rows {
            break;
        }
    }
    let raw_binlog = t0.elapsed().as_secs_f64();
    let _ = stream.close().await;
    let pos = before.pos.to_string();
    let t = table_def(
        &db,
        "t",
        &cols,
        &[],
        &[
            ("scan.startup.mode", "specific-offset"),
            ("scan.startup.specific-offset.file", before.file.as_str()),
            ("scan.startup.specific-offset.pos", pos.as_str()),
        ],
    );
    let mut r = start_at(&t, None, 4096);
    let binlog = count_rows(&mut r.rx, rows * 2, Instant::now()).await;
    let _ = r.stop.send(true);

    let rate = |n: usize, s: f64| n as f64 / s;
    println!("mysql-cdc benchmark, {rows} rows (MariaDB on 127.0.0.1)");
    println!(
        "snapshot: {:>10.0} rows/s   bare SELECT: {:>10.0} rows/s ({raw_kind} protocol)   ({:.0}% of raw)",
        rate(rows, snap),
        rate(rows, raw_select),
        100.0 * raw_select / snap
    );
    println!(
        "  bare SELECT text protocol {:.0} rows/s, binary protocol {:.0} rows/s",
        rate(rows, text_cpu.wall),
        rate(rows, binary_cpu.wall)
    );
    println!("  snapshot    {snap_cpu}");
    println!("  bare SELECT {raw_cpu}");
    println!(
        "binlog:   {:>10.0} changes/s (updates: -U and +U per row)   bare binlog stream: {:>10.0} row images/s ({raw_rows} rows, {:.0}% of raw)",
        rate(rows, binlog),
        rate(raw_rows, raw_binlog),
        100.0 * raw_binlog / binlog
    );
}
