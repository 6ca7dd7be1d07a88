//! The jdbc connector against a real MariaDB started by `scripts/mariadb.sh`. The sink: upserts
//! reduced per key, deletes, plain inserts, the checks at start, errors that name the row and
//! column, a killed connection in the middle of a job, and the buffer-flush options. The lookup
//! function: matches decided by MySQL (collations, several rows per key, NULL keys), the cache
//! with its TTL and missing keys, composite keys. Each test uses its own database (`test_jdbc_*`,
//! where the `rsql` user may write).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use rsql_common::arrow::array::{ArrayRef, Float32Array, Int32Array, StringArray};
use rsql_common::arrow::datatypes::{DataType, Field, Schema};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::{ChangeBatch, Location, RowKind};
use rsql_connectors::jdbc::JdbcFactory;
use rsql_runtime::{ChangelogMode, ConnectorFactory, Sink};

fn port() -> u16 {
    std::env::var("RSQL_MYSQL_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(13306)
}

fn script() -> String {
    format!("{}/../../scripts/mariadb.sh", env!("CARGO_MANIFEST_DIR"))
}

fn ensure_server() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let out = std::process::Command::new("bash").arg(script()).arg("start").output().expect("run scripts/mariadb.sh");
        assert!(out.status.success(), "scripts/mariadb.sh start failed:\n{}", String::from_utf8_lossy(&out.stderr));
    });
}

fn root_sql(sql: &str) -> String {
    let out = std::process::Command::new("bash").arg(script()).arg("sql").arg(sql).output().expect("run scripts/mariadb.sh");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn conn(db: &str) -> Conn {
    ensure_server();
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port())
        .user(Some("rsql"))
        .pass(Some("rsql"))
        .db_name(Some(db))
        .prefer_socket(false);
    Conn::new(opts).await.expect("connect as rsql")
}

/// A fresh database `test_jdbc_{name}` with the given DDL run in it.
async fn fresh_db(name: &str, ddl: &str) -> (Conn, String) {
    ensure_server();
    let db = format!("test_jdbc_{name}");
    root_sql(&format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db}; {ddl}"));
    (conn(&db).await, db)
}

const ORDERS: &str = "CREATE TABLE orders (order_id INT NOT NULL PRIMARY KEY, order_revenue FLOAT NOT NULL, \
                      order_region VARCHAR(10) NOT NULL, customer_id INT)";

fn s() -> LogicalType {
    LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))
}

fn table(db: &str, target: &str, cols: &[(&str, LogicalType)], pk: &[&str], opts: &[(&str, &str)]) -> TableDef {
    let url = format!("jdbc:mysql://127.0.0.1:{}/{db}?useSSL=false", port());
    let mut options = BTreeMap::new();
    for (k, v) in [("connector", "jdbc"), ("url", url.as_str()), ("table-name", target), ("username", "rsql"), ("password", "rsql")]
        .iter()
        .chain(opts.iter())
    {
        options.insert(k.to_string(), OptionValue { value: v.to_string(), location: Location::default() });
    }
    TableDef {
        path: ObjectPath::new("default_catalog", "default_database", format!("mysql_{target}")),
        columns: cols.iter().map(|(n, t)| ColumnDef::physical(*n, t.clone())).collect(),
        primary_key: (!pk.is_empty()).then(|| pk.iter().map(|s| s.to_string()).collect()),
        watermark: None,
        options,
        comment: None,
        temporary: false,
        location: Location::default(),
    }
}

fn orders_table(db: &str, opts: &[(&str, &str)]) -> TableDef {
    table(
        db,
        "orders",
        &[
            ("order_id", LogicalType::not_null(FlinkType::Int)),
            ("order_revenue", LogicalType::nullable(FlinkType::Float)),
            ("order_region", s()),
            ("customer_id", LogicalType::nullable(FlinkType::Int)),
        ],
        &["order_id"],
        opts,
    )
}

fn sink(t: &TableDef, mode: ChangelogMode) -> Box<dyn Sink> {
    let f = JdbcFactory;
    f.options(t).validate(t).expect("options");
    f.validate(t).expect("validate");
    f.create_sink(t, &mode).expect("create sink")
}

type OrderRow<'a> = (RowKind, i32, Option<f32>, Option<&'a str>, Option<i32>);

fn orders(rows: &[OrderRow<'_>]) -> ChangeBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int32, false),
        Field::new("order_revenue", DataType::Float32, true),
        Field::new("order_region", DataType::Utf8, true),
        Field::new("customer_id", DataType::Int32, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(Float32Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
    ];
    ChangeBatch::new(RecordBatch::try_new(schema, cols).unwrap(), rows.iter().map(|r| r.0).collect())
}

async fn dump(c: &mut Conn, sql: &str) -> Vec<String> {
    let rows: Vec<Row> = c.query(sql).await.expect("query");
    rows.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::NULL) | None => "NULL".to_string(),
                    Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(v) => format!("{v:?}"),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[tokio::test]
async fn upserts_keep_the_last_change_per_key() {
    let (mut c, db) = fresh_db("upsert", ORDERS).await;
    let t = orders_table(&db, &[("sink.buffer-flush.max-rows", "0"), ("sink.buffer-flush.interval", "0")]);
    let mut s = sink(&t, ChangelogMode::All);
    use RowKind::*;
    s.write(orders(&[
        (Insert, 1, Some(10.0), Some("beijing"), Some(1)),
        (Insert, 2, Some(10.5), Some("beijing"), Some(1)),
        (Insert, 3, Some(7.0), Some("x"), None),
        (Insert, 4, Some(1.0), Some("y"), Some(2)),
    ]))
    .await
    .unwrap();
    s.write(orders(&[
        (UpdateBefore, 2, Some(10.5), Some("beijing"), Some(1)),
        (UpdateAfter, 2, Some(10.5), Some("shanghai"), Some(1)),
        (Delete, 3, Some(7.0), Some("x"), None),
        (Delete, 4, Some(1.0), Some("y"), Some(2)),
        (Insert, 4, Some(2.0), Some("z"), Some(3)),
    ]))
    .await
    .unwrap();
    // Nothing is written before the flush (both buffer triggers are off).
    assert_eq!(dump(&mut c, "SELECT COUNT(*) FROM orders").await, vec!["0"]);
    s.flush().await.unwrap();
    let rows = dump(&mut c, "SELECT order_id, order_revenue, order_region, customer_id FROM orders ORDER BY order_id").await;
    assert_eq!(rows, vec!["1|10|beijing|1", "2|10.5|shanghai|1", "4|2|z|3"]);
    // A later delete of a key written before, and an update of another.
    s.write(orders(&[(Delete, 1, None, None, None), (UpdateAfter, 4, Some(3.0), Some("z"), Some(3))])).await.unwrap();
    s.close().await.unwrap();
    let rows = dump(&mut c, "SELECT order_id, order_revenue FROM orders ORDER BY order_id").await;
    assert_eq!(rows, vec!["2|10.5", "4|3"]);
    root_sql(&format!("DROP DATABASE {db}"));
}

#[tokio::test]
async fn append_only_tables_get_plain_inserts() {
    let (mut c, db) = fresh_db("append", "CREATE TABLE events (id INT, name VARCHAR(20))").await;
    let t = table(&db, "events", &[("id", LogicalType::nullable(FlinkType::Int)), ("name", s())], &[], &[]);
    let f = JdbcFactory;
    assert!(!f.sink_accepts_updates(&t));
    let mut s = sink(&t, ChangelogMode::InsertOnly);
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true), Field::new("name", DataType::Utf8, true)]));
    let b = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int32Array::from(vec![Some(1), Some(1), None])), Arc::new(StringArray::from(vec![Some("a"), Some("a"), Some("it's")]))],
    )
    .unwrap();
    s.write(ChangeBatch::inserts(b)).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(dump(&mut c, "SELECT id, name FROM events ORDER BY name, id").await, vec!["1|a", "1|a", "NULL|it's"]);
    root_sql(&format!("DROP DATABASE {db}"));
}

async fn start_error(t: &TableDef) -> String {
    let mut s = sink(t, ChangelogMode::All);
    let b = orders(&[(RowKind::Insert, 1, Some(1.0), Some("a"), Some(1))]);
    let r = match s.write(b).await {
        Ok(()) => s.flush().await,
        Err(e) => Err(e),
    };
    r.expect_err("the sink must refuse the table").to_string()
}

#[tokio::test]
async fn the_table_is_checked_at_start() {
    let (_c, db) = fresh_db(
        "checks",
        "CREATE TABLE no_key (order_id INT, order_revenue FLOAT, order_region VARCHAR(10), customer_id INT); \
         CREATE TABLE narrow (order_id INT PRIMARY KEY, order_revenue FLOAT, order_region INT, customer_id INT); \
         CREATE TABLE fewer (order_id INT PRIMARY KEY, order_revenue FLOAT, order_region VARCHAR(10))",
    )
    .await;
    let e = start_error(&table(&db, "missing", &[("order_id", LogicalType::not_null(FlinkType::Int))], &["order_id"], &[])).await;
    assert!(e.contains(&format!("the table {db}.missing does not exist")), "{e}");

    let mut t = orders_table(&db, &[]);
    t.options.get_mut("table-name").unwrap().value = "fewer".into();
    let e = start_error(&t).await;
    assert!(e.contains("column 'customer_id' is declared in the Flink table but") && e.contains("(it has: order_id, order_revenue, order_region)"), "{e}");

    t.options.get_mut("table-name").unwrap().value = "narrow".into();
    let e = start_error(&t).await;
    assert!(e.contains("column 'order_region': a STRING value cannot be written into a int(11) column"), "{e}");

    t.options.get_mut("table-name").unwrap().value = "no_key".into();
    let e = start_error(&t).await;
    assert!(e.contains("declares PRIMARY KEY (order_id) but it has no primary key or unique index"), "{e}");
    assert!(e.contains(&format!("ALTER TABLE {db}.no_key ADD PRIMARY KEY (order_id)")), "{e}");

    let mut wrong = orders_table(&db, &[]);
    wrong.options.get_mut("password").unwrap().value = "nope".into();
    let e = start_error(&wrong).await;
    assert!(e.contains("refused user 'rsql'") && e.contains("'password'"), "{e}");
    root_sql(&format!("DROP DATABASE {db}"));
}

#[tokio::test]
async fn refused_rows_are_named_with_their_column() {
    let (mut c, db) = fresh_db("refused", ORDERS).await;
    let t = orders_table(&db, &[("sink.buffer-flush.max-rows", "0")]);
    // Too long for VARCHAR(10): MySQL names the row in the statement.
    let mut s = sink(&t, ChangelogMode::All);
    s.write(orders(&[
        (RowKind::Insert, 1, Some(1.0), Some("ok"), Some(1)),
        (RowKind::Insert, 2, Some(2.0), Some("far too long for it"), Some(1)),
    ]))
    .await
    .unwrap();
    let e = s.flush().await.unwrap_err().to_string();
    assert!(e.contains(&format!("table 'mysql_orders' (jdbc {db}.orders")), "{e}");
    assert!(e.contains("+I (order_id=2, order_revenue=2, order_region='far too long for it', customer_id=1)"), "{e}");
    assert!(e.contains("Data too long for column 'order_region'"), "{e}");
    assert!(e.contains("column 'order_region' is STRING in the Flink table and varchar(10) in MySQL"), "{e}");
    // Nothing of the failed buffer was committed.
    assert_eq!(dump(&mut c, "SELECT COUNT(*) FROM orders").await, vec!["0"]);

    // NULL into NOT NULL: MySQL names no row, the sink finds it.
    let mut s = sink(&t, ChangelogMode::All);
    s.write(orders(&[
        (RowKind::Insert, 1, Some(1.0), Some("a"), None),
        (RowKind::Insert, 2, Some(1.0), Some("b"), None),
        (RowKind::Insert, 3, None, Some("c"), None),
    ]))
    .await
    .unwrap();
    let e = s.flush().await.unwrap_err().to_string();
    assert!(e.contains("+I (order_id=3, order_revenue=NULL, order_region='c', customer_id=NULL)"), "{e}");
    assert!(e.contains("order_revenue") && e.contains("cannot be null"), "{e}");
    root_sql(&format!("DROP DATABASE {db}"));
}

#[tokio::test]
async fn a_killed_connection_is_retried() {
    let (mut c, db) = fresh_db("reconnect", ORDERS).await;
    let t = orders_table(&db, &[("sink.buffer-flush.max-rows", "0"), ("sink.buffer-flush.interval", "0")]);
    let mut s = sink(&t, ChangelogMode::All);
    s.write(orders(&[(RowKind::Insert, 1, Some(1.0), Some("a"), None)])).await.unwrap();
    s.flush().await.unwrap();
    s.write(orders(&[(RowKind::Insert, 2, Some(2.0), Some("b"), None)])).await.unwrap();
    // Kill the sink's connection(s): those of user rsql on this database other than ours.
    let mine: Vec<Row> = c.query("SELECT CONNECTION_ID()").await.unwrap();
    let mine = mine[0].get::<u64, _>(0).unwrap();
    let ids: Vec<Row> = c
        .query(format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'rsql' AND DB = '{db}' AND ID <> {mine}"))
        .await
        .unwrap();
    assert!(!ids.is_empty(), "the sink keeps a connection");
    for r in ids {
        let id: u64 = r.get(0).unwrap();
        root_sql(&format!("KILL CONNECTION {id}"));
    }
    s.flush().await.expect("a lost connection is reconnected and the buffer written");
    assert_eq!(dump(&mut c, "SELECT order_id FROM orders ORDER BY order_id").await, vec!["1", "2"]);
    root_sql(&format!("DROP DATABASE {db}"));
}

#[tokio::test]
async fn buffer_options_write_before_the_flush() {
    let (mut c, db) = fresh_db("buffer", ORDERS).await;
    // max-rows: the third distinct key triggers a write.
    let t = orders_table(&db, &[("sink.buffer-flush.max-rows", "3"), ("sink.buffer-flush.interval", "0")]);
    let mut s = sink(&t, ChangelogMode::All);
    s.write(orders(&[(RowKind::Insert, 1, Some(1.0), Some("a"), None), (RowKind::UpdateAfter, 1, Some(2.0), Some("a"), None)]))
        .await
        .unwrap();
    s.write(orders(&[(RowKind::Insert, 2, Some(1.0), Some("a"), None)])).await.unwrap();
    assert_eq!(dump(&mut c, "SELECT COUNT(*) FROM orders").await, vec!["0"], "two keys stay buffered");
    s.write(orders(&[(RowKind::Insert, 3, Some(1.0), Some("a"), None)])).await.unwrap();
    assert_eq!(dump(&mut c, "SELECT COUNT(*) FROM orders").await, vec!["3"]);
    s.close().await.unwrap();

    // interval: an idle buffer is written after it.
    let t = orders_table(&db, &[("sink.buffer-flush.max-rows", "0"), ("sink.buffer-flush.interval", "200ms")]);
    let mut s = sink(&t, ChangelogMode::All);
    s.write(orders(&[(RowKind::Insert, 4, Some(1.0), Some("a"), None)])).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dump(&mut c, "SELECT COUNT(*) FROM orders").await != vec!["4"] {
        assert!(Instant::now() < deadline, "the interval flush did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.close().await.unwrap();
    root_sql(&format!("DROP DATABASE {db}"));
}

#[tokio::test]
async fn composite_keys_and_a_larger_load() {
    let (mut c, db) = fresh_db(
        "composite",
        "CREATE TABLE agg (region VARCHAR(20) NOT NULL, day INT NOT NULL, cnt BIGINT, PRIMARY KEY (region, day))",
    )
    .await;
    let t = table(
        &db,
        "agg",
        &[("region", s()), ("day", LogicalType::not_null(FlinkType::Int)), ("cnt", LogicalType::nullable(FlinkType::BigInt))],
        &["region", "day"],
        &[("sink.buffer-flush.max-rows", "5000")],
    );
    let mut s = sink(&t, ChangelogMode::All);
    let schema = Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("day", DataType::Int32, false),
        Field::new("cnt", DataType::Int64, true),
    ]));
    let n = 20_000i32;
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let regions: Vec<String> = chunk.iter().map(|i| format!("r{}", i % 50)).collect();
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(regions.iter().map(String::as_str).collect::<Vec<_>>())),
                Arc::new(Int32Array::from(chunk.iter().map(|i| i / 50).collect::<Vec<_>>())),
                Arc::new(rsql_common::arrow::array::Int64Array::from(chunk.iter().map(|i| *i as i64).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        s.write(ChangeBatch::inserts(b)).await.unwrap();
    }
    s.flush().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("jdbc sink: {n} upserts into MariaDB in {secs:.2} s = {:.0} rows/s", n as f64 / secs);
    assert_eq!(dump(&mut c, "SELECT COUNT(*), SUM(cnt) FROM agg").await, vec![format!("{n}|199990000")]);
    // Deletes by the two-column key.
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["r0", "r1"])),
            Arc::new(Int32Array::from(vec![0, 0])),
            Arc::new(rsql_common::arrow::array::Int64Array::from(vec![None::<i64>, None])),
        ],
    )
    .unwrap();
    s.write(ChangeBatch::new(b, vec![RowKind::Delete, RowKind::Delete])).await.unwrap();
    s.close().await.unwrap();
    assert_eq!(dump(&mut c, "SELECT COUNT(*) FROM agg").await, vec![(n - 2).to_string()]);
    root_sql(&format!("DROP DATABASE {db}"));
}

fn lookup_keys(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.into_iter().map(|(_, a)| a).collect()).unwrap()
}

/// (key row, cells) of a lookup answer, sorted.
fn answer(found: &(RecordBatch, Vec<u32>)) -> Vec<(u32, Vec<String>)> {
    let (b, of) = found;
    let mut v: Vec<(u32, Vec<String>)> = (0..b.num_rows())
        .map(|i| {
            let cells = b
                .columns()
                .iter()
                .map(|c| match rsql_common::builder::datum_at(c.as_ref(), i).unwrap() {
                    rsql_common::builder::Datum::Null => "NULL".to_string(),
                    rsql_common::builder::Datum::Int(x) => x.to_string(),
                    rsql_common::builder::Datum::Str(s) => s,
                    other => format!("{other:?}"),
                })
                .collect();
            (of[i], cells)
        })
        .collect();
    v.sort();
    v
}

fn lookup_in_thread(t: &TableDef, keys: &[&str], batches: Vec<RecordBatch>, between: impl Fn(usize)) -> Vec<Vec<(u32, Vec<String>)>> {
    let f = JdbcFactory;
    f.options(t).validate(t).expect("options");
    assert!(f.supports_lookup());
    let names: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    let mut l = f.create_lookup(t, &names).expect("create lookup");
    let mut out = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        between(i);
        out.push(answer(&l.lookup(b).expect("lookup")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_match_as_mysql_does_and_are_cached() {
    let (_c, db) = fresh_db(
        "lookup",
        "CREATE TABLE customers (id INT NOT NULL, name VARCHAR(20) NOT NULL, tier INT, PRIMARY KEY (id)); \
         INSERT INTO customers VALUES (1, 'ann', 1), (2, 'bob', NULL), (3, 'cy', 1); \
         CREATE TABLE tags (name VARCHAR(20) NOT NULL, tag VARCHAR(20) NOT NULL, PRIMARY KEY (name, tag)); \
         INSERT INTO tags VALUES ('ann', 'a'), ('ann', 'b'), ('bob', 'c')",
    )
    .await;
    let customers = table(
        &db,
        "customers",
        &[("id", LogicalType::not_null(FlinkType::Int)), ("name", s()), ("tier", LogicalType::nullable(FlinkType::Int))],
        &["id"],
        &[("lookup.cache.max-rows", "10"), ("lookup.cache.ttl", "300ms"), ("lookup.cache.caching-missing-key", "true")],
    );
    let ids = |v: Vec<Option<i64>>| lookup_keys(vec![("k", Arc::new(rsql_common::arrow::array::Int64Array::from(v)) as ArrayRef)]);
    let db2 = db.clone();
    let t2 = customers.clone();
    let answers = tokio::task::spawn_blocking(move || {
        lookup_in_thread(
            &t2,
            &["id"],
            vec![ids(vec![Some(2), None, Some(9), Some(1), Some(2)]), ids(vec![Some(1), Some(9)]), ids(vec![Some(1), Some(9)])],
            |i| {
                if i == 1 {
                    // Changed in MySQL after the first lookup: the cache still answers.
                    root_sql(&format!("UPDATE {db2}.customers SET name = 'anne' WHERE id = 1; INSERT INTO {db2}.customers VALUES (9, 'new', 2)"));
                }
                if i == 2 {
                    std::thread::sleep(Duration::from_millis(400));
                }
            },
        )
    })
    .await
    .unwrap();
    let row = |i: u32, c: &[&str]| (i, c.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    assert_eq!(answers[0], vec![row(0, &["2", "bob", "NULL"]), row(3, &["1", "ann", "1"]), row(4, &["2", "bob", "NULL"])]);
    assert_eq!(answers[1], vec![row(0, &["1", "ann", "1"])], "cached, missing key 9 cached too");
    assert_eq!(answers[2], vec![row(0, &["1", "anne", "1"]), row(1, &["9", "new", "2"])], "after the TTL");

    // A string key matches as MySQL's collation says; several rows per key; two key columns.
    let tags = table(&db, "tags", &[("name", s()), ("tag", s())], &["name", "tag"], &[]);
    let names = |v: Vec<Option<&str>>| lookup_keys(vec![("k", Arc::new(StringArray::from(v)) as ArrayRef)]);
    let t3 = tags.clone();
    let by_name = tokio::task::spawn_blocking(move || lookup_in_thread(&t3, &["name"], vec![names(vec![Some("ANN"), Some("zed"), None])], |_| {}))
        .await
        .unwrap();
    assert_eq!(by_name[0], vec![row(0, &["ann", "a"]), row(0, &["ann", "b"])]);
    let both = lookup_keys(vec![
        ("n", Arc::new(StringArray::from(vec!["ann", "bob"])) as ArrayRef),
        ("t", Arc::new(StringArray::from(vec!["b", "x"])) as ArrayRef),
    ]);
    let composite = tokio::task::spawn_blocking(move || lookup_in_thread(&tags, &["name", "tag"], vec![both], |_| {})).await.unwrap();
    assert_eq!(composite[0], vec![row(0, &["ann", "b"])]);

    // A missing table is reported at the first lookup.
    let mut missing = customers.clone();
    missing.options.get_mut("table-name").unwrap().value = "nope".into();
    let e = tokio::task::spawn_blocking(move || {
        let f = JdbcFactory;
        let mut l = f.create_lookup(&missing, &["id".to_string()]).unwrap();
        l.lookup(&ids(vec![Some(1)])).unwrap_err().to_string()
    })
    .await
    .unwrap();
    assert!(e.contains(&format!("the table {db}.nope does not exist")), "{e}");
    root_sql(&format!("DROP DATABASE {db}"));
}
