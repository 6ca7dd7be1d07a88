//! Integration tests of the kafka and upsert-kafka connectors against a real Kafka-protocol broker
//! (tansu, started by `scripts/kafka.sh start`, which is idempotent). Sources and sinks are driven
//! directly through their traits.

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rsql_common::builder::{datum_at, Datum, RowsBuilder};
use rsql_common::catalog::{ColumnDef, ColumnKind, ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::{ChangeBatch, RowKind};
use rsql_runtime::connector::{ChangelogMode, ConnectorFactory, Message as Msg, ProducedColumn, Sink as _, SourceContext};
use tokio::sync::{mpsc, watch};

fn port() -> String {
    std::env::var("RSQL_KAFKA_PORT").unwrap_or_else(|_| "19092".into())
}

fn servers() -> String {
    format!("127.0.0.1:{}", port())
}

fn script() -> String {
    format!("{}/../../scripts/kafka.sh", env!("CARGO_MANIFEST_DIR"))
}

fn broker() {
    static START: Once = Once::new();
    START.call_once(|| {
        let st = std::process::Command::new("bash").arg(script()).arg("start").status().expect("run scripts/kafka.sh");
        assert!(st.success(), "scripts/kafka.sh start failed; see $RSQL_KAFKA_DIR/tansu.log");
    });
}

fn topic(name: &str, partitions: u32) -> String {
    broker();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let t = format!("{name}_{nanos}");
    let st = std::process::Command::new("bash")
        .arg(script())
        .args(["create-topic", &t, &partitions.to_string()])
        .status()
        .expect("run scripts/kafka.sh create-topic");
    assert!(st.success(), "cannot create topic {t}");
    t
}

fn col(name: &str, ty: FlinkType, nullable: bool) -> ColumnDef {
    ColumnDef::physical(name, LogicalType::new(ty, nullable))
}

fn orders_columns() -> Vec<ColumnDef> {
    vec![
        col("order_id", FlinkType::Int, false),
        col("order_revenue", FlinkType::Float, true),
        col("order_region", FlinkType::Varchar(40), true),
        col("customer_id", FlinkType::Int, true),
    ]
}

fn table(columns: Vec<ColumnDef>, pk: Option<&[&str]>, opts: &[(&str, &str)]) -> TableDef {
    let mut options: std::collections::BTreeMap<String, OptionValue> = opts
        .iter()
        .map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Default::default() }))
        .collect();
    options.insert("properties.bootstrap.servers".into(), OptionValue { value: servers(), location: Default::default() });
    TableDef {
        path: ObjectPath::new("default_catalog", "default_database", "t"),
        columns,
        primary_key: pk.map(|p| p.iter().map(|s| s.to_string()).collect()),
        watermark: None,
        options,
        comment: None,
        temporary: false,
        location: Default::default(),
    }
}

fn factory(t: &TableDef) -> std::sync::Arc<dyn ConnectorFactory> {
    let mut reg = rsql_runtime::ConnectorRegistry::new();
    rsql_kafka::register(&mut reg);
    reg.validate(t).unwrap_or_else(|e| panic!("table does not validate: {e}"))
}

fn batch(t: &TableDef, rows: Vec<(RowKind, Vec<Datum>)>) -> ChangeBatch {
    let cols: Vec<(String, LogicalType)> = t.sink_columns().map(|c| (c.name.clone(), c.ty.clone())).collect();
    let mut b = RowsBuilder::new(&cols, rows.len()).unwrap();
    let mut kinds = Vec::new();
    for (k, r) in rows {
        b.append_row(r).unwrap();
        kinds.push(k);
    }
    ChangeBatch::new(b.finish().unwrap(), kinds)
}

fn physical(t: &TableDef) -> Vec<ProducedColumn> {
    t.physical_columns().map(|c| ProducedColumn::Physical { name: c.name.clone(), ty: c.ty.clone() }).collect()
}

async fn write(t: &TableDef, mode: ChangelogMode, batches: Vec<ChangeBatch>) {
    let mut sink = factory(t).create_sink(t, &mode).unwrap();
    for b in batches {
        sink.write(b).await.unwrap();
    }
    sink.flush().await.unwrap();
    sink.close().await.unwrap();
}

type Rows = Vec<(RowKind, Vec<Datum>)>;

fn rows_of(b: &ChangeBatch) -> Rows {
    (0..b.num_rows())
        .map(|r| (b.kinds[r], b.data.columns().iter().map(|c| datum_at(c.as_ref(), r).unwrap()).collect()))
        .collect()
}

/// Runs a (bounded) source to its end and returns its rows.
async fn read(t: &TableDef, cols: &[ProducedColumn]) -> rsql_common::Result<Rows> {
    let mut src = factory(t).create_source(t, cols)?;
    let (tx, mut rx) = mpsc::channel(1024);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let ctx = SourceContext {
        out: tx,
        stop: stop_rx,
        table: "t".into(),
        max_batch_delay: Duration::from_millis(20),
        batch_size: 7,
    };
    let run = tokio::time::timeout(Duration::from_secs(60), src.run(ctx)).await.expect("bounded source did not end in 60s");
    run?;
    let mut rows = Vec::new();
    while let Ok(m) = rx.try_recv() {
        if let Msg::Batch(b) = m {
            rows.extend(rows_of(&b));
        }
    }
    Ok(rows)
}

/// Every message of a partition of a topic as (key, value), read with rdkafka.
type RawMessage = (Option<Vec<u8>>, Option<Vec<u8>>);

fn raw_messages(topic: &str, partition: i32) -> Vec<RawMessage> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", servers()).set("group.id", format!("raw-{topic}")).create().unwrap();
    let (_, high) = c.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < high && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
        }
    }
    out
}

type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

fn produce(topic: &str, messages: &[KeyValue<'_>]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", servers()).create().unwrap();
    for (k, v) in messages {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(0);
        if let Some(k) = k {
            r = r.key(*k);
        }
        if let Some(v) = v {
            r = r.payload(*v);
        }
        if let Some(hv) = v {
            if hv.starts_with(b"{\"h") {
                r = r.headers(OwnedHeaders::new().insert(rdkafka::message::Header { key: "trace", value: Some("abc") }));
            }
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

fn s(v: &str) -> Datum {
    Datum::Str(v.into())
}

fn text(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

fn upsert_table(t: &str, extra: &[(&str, &str)]) -> TableDef {
    let mut opts = vec![("connector", "upsert-kafka"), ("topic", t), ("key.format", "json"), ("value.format", "json")];
    opts.extend_from_slice(extra);
    table(orders_columns(), Some(&["order_id"]), &opts)
}

#[tokio::test]
async fn upsert_kafka_writes_flink_json_and_tombstones_and_reads_them_back() {
    let t = topic("ods_order", 1);
    let tbl = upsert_table(&t, &[]);
    let rows = vec![
        (RowKind::Insert, vec![Datum::Int(1), Datum::Float(10.0), s("beijing"), Datum::Int(1)]),
        (RowKind::Insert, vec![Datum::Int(2), Datum::Float(10.0), s("beijing"), Datum::Int(1)]),
        (RowKind::UpdateBefore, vec![Datum::Int(1), Datum::Float(10.0), s("beijing"), Datum::Int(1)]),
        (RowKind::UpdateAfter, vec![Datum::Int(1), Datum::Float(20.5), s("shanghai"), Datum::Int(1)]),
        (RowKind::Delete, vec![Datum::Int(2), Datum::Float(10.0), s("beijing"), Datum::Int(1)]),
    ];
    write(&tbl, ChangelogMode::All, vec![batch(&tbl, rows)]).await;

    let raw = raw_messages(&t, 0);
    let got: Vec<(Option<String>, Option<String>)> = raw.iter().map(|(k, v)| (text(k), text(v))).collect();
    assert_eq!(
        got,
        vec![
            (
                Some(r#"{"order_id":1}"#.into()),
                Some(r#"{"order_id":1,"order_revenue":10.0,"order_region":"beijing","customer_id":1}"#.into())
            ),
            (
                Some(r#"{"order_id":2}"#.into()),
                Some(r#"{"order_id":2,"order_revenue":10.0,"order_region":"beijing","customer_id":1}"#.into())
            ),
            (
                Some(r#"{"order_id":1}"#.into()),
                Some(r#"{"order_id":1,"order_revenue":20.5,"order_region":"shanghai","customer_id":1}"#.into())
            ),
            (Some(r#"{"order_id":2}"#.into()), None),
        ]
    );

    let src = upsert_table(&t, &[("scan.bounded.mode", "latest-offset")]);
    let read_back = read(&src, &physical(&src)).await.unwrap();
    assert_eq!(
        read_back,
        vec![
            (RowKind::UpdateAfter, vec![Datum::Int(1), Datum::Float(10.0), s("beijing"), Datum::Int(1)]),
            (RowKind::UpdateAfter, vec![Datum::Int(2), Datum::Float(10.0), s("beijing"), Datum::Int(1)]),
            (RowKind::UpdateAfter, vec![Datum::Int(1), Datum::Float(20.5), s("shanghai"), Datum::Int(1)]),
            (RowKind::Delete, vec![Datum::Int(2), Datum::Null, Datum::Null, Datum::Null]),
        ]
    );
    let info = factory(&src).source_info(&src).unwrap();
    assert_eq!(info.changelog_mode, ChangelogMode::Upsert { key: vec!["order_id".into()] });
    assert!(info.bounded);
}

#[tokio::test]
async fn upsert_buffer_keeps_the_last_change_per_key() {
    let t = topic("buffered", 1);
    let tbl = upsert_table(&t, &[("sink.buffer-flush.max-rows", "100"), ("sink.buffer-flush.interval", "1h")]);
    let rows = vec![
        (RowKind::Insert, vec![Datum::Int(1), Datum::Float(1.0), s("a"), Datum::Int(1)]),
        (RowKind::UpdateBefore, vec![Datum::Int(1), Datum::Float(1.0), s("a"), Datum::Int(1)]),
        (RowKind::UpdateAfter, vec![Datum::Int(1), Datum::Float(2.0), s("b"), Datum::Int(1)]),
        (RowKind::Insert, vec![Datum::Int(2), Datum::Float(3.0), s("c"), Datum::Int(2)]),
        (RowKind::Delete, vec![Datum::Int(2), Datum::Float(3.0), s("c"), Datum::Int(2)]),
    ];
    write(&tbl, ChangelogMode::All, vec![batch(&tbl, rows)]).await;
    let mut got: Vec<(Option<String>, Option<String>)> = raw_messages(&t, 0).iter().map(|(k, v)| (text(k), text(v))).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                Some(r#"{"order_id":1}"#.into()),
                Some(r#"{"order_id":1,"order_revenue":2.0,"order_region":"b","customer_id":1}"#.into())
            ),
            (Some(r#"{"order_id":2}"#.into()), None),
        ]
    );
}

fn kafka_table(t: &str, format: &str, extra: &[(&str, &str)]) -> TableDef {
    let mut opts = vec![("connector", "kafka"), ("topic", t), ("format", format), ("scan.startup.mode", "earliest-offset")];
    opts.extend_from_slice(extra);
    table(orders_columns(), None, &opts)
}

#[tokio::test]
async fn every_format_round_trips_through_a_topic() {
    let inserts = vec![
        (RowKind::Insert, vec![Datum::Int(1), Datum::Float(10.0), s("bei jing, \"north\""), Datum::Int(1)]),
        (RowKind::Insert, vec![Datum::Int(2), Datum::Null, Datum::Null, Datum::Int(-7)]),
    ];
    for format in ["json", "csv"] {
        let t = topic(&format!("fmt_{format}"), 1);
        let tbl = kafka_table(&t, format, &[("scan.bounded.mode", "latest-offset")]);
        write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, inserts.clone())]).await;
        let got = read(&tbl, &physical(&tbl)).await.unwrap();
        let mut expected = inserts.clone();
        if format == "csv" {
            // Without 'csv.null-literal' a NULL is written as an empty field, which reads back
            // as an empty string in a STRING column (and as NULL in other types), as in Flink.
            expected[1].1[2] = s("");
        }
        assert_eq!(got, expected, "format {format}");
    }
    let t = topic("fmt_csv_null", 1);
    let tbl = kafka_table(&t, "csv", &[("scan.bounded.mode", "latest-offset"), ("csv.null-literal", "\\N")]);
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, inserts.clone())]).await;
    assert_eq!(text(&raw_messages(&t, 0)[1].1).as_deref(), Some("2,\\N,\\N,-7"));
    assert_eq!(read(&tbl, &physical(&tbl)).await.unwrap(), inserts);
    let changes = vec![
        (RowKind::Insert, vec![Datum::Int(1), Datum::Float(10.0), s("a"), Datum::Int(1)]),
        (RowKind::UpdateBefore, vec![Datum::Int(1), Datum::Float(10.0), s("a"), Datum::Int(1)]),
        (RowKind::UpdateAfter, vec![Datum::Int(1), Datum::Float(11.0), s("b"), Datum::Int(1)]),
        (RowKind::Delete, vec![Datum::Int(1), Datum::Float(11.0), s("b"), Datum::Int(1)]),
    ];
    for format in ["debezium-json", "canal-json", "maxwell-json"] {
        let t = topic(&format!("fmt_{}", format.replace('-', "_")), 1);
        let tbl = kafka_table(&t, format, &[("scan.bounded.mode", "latest-offset")]);
        assert!(factory(&tbl).sink_accepts_updates(&tbl));
        assert_eq!(factory(&tbl).source_info(&tbl).unwrap().changelog_mode, ChangelogMode::All);
        write(&tbl, ChangelogMode::All, vec![batch(&tbl, changes.clone())]).await;
        let got = read(&tbl, &physical(&tbl)).await.unwrap();
        // Flink writes -U as a delete and +U as an insert, so that is what reads back.
        let kinds: Vec<RowKind> = got.iter().map(|r| r.0).collect();
        assert_eq!(kinds, vec![RowKind::Insert, RowKind::Delete, RowKind::Insert, RowKind::Delete], "format {format}");
        let values: Vec<Vec<Datum>> = got.into_iter().map(|r| r.1).collect();
        assert_eq!(values, changes.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), "format {format}");
    }
    // raw: one column.
    let t = topic("fmt_raw", 1);
    let raw_tbl = table(
        vec![col("line", FlinkType::Varchar(MAX_LENGTH), true)],
        None,
        &[("connector", "kafka"), ("topic", &t), ("format", "raw"), ("scan.startup.mode", "earliest-offset"), ("scan.bounded.mode", "latest-offset")],
    );
    let lines = vec![(RowKind::Insert, vec![s("hello world")]), (RowKind::Insert, vec![Datum::Null]), (RowKind::Insert, vec![s("{not json")])];
    write(&raw_tbl, ChangelogMode::InsertOnly, vec![batch(&raw_tbl, lines.clone())]).await;
    assert_eq!(raw_messages(&t, 0)[1], (None, None), "a NULL raw value is a message without payload");
    assert_eq!(read(&raw_tbl, &physical(&raw_tbl)).await.unwrap(), lines);
}

#[tokio::test]
async fn key_fields_metadata_and_headers() {
    let t = topic("meta", 1);
    let tbl = kafka_table(
        &t,
        "json",
        &[("key.format", "json"), ("key.fields", "order_id"), ("value.fields-include", "EXCEPT_KEY"), ("scan.bounded.mode", "latest-offset")],
    );
    let rows = vec![(RowKind::Insert, vec![Datum::Int(5), Datum::Float(1.5), s("x"), Datum::Int(9)])];
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows.clone())]).await;
    let raw = raw_messages(&t, 0);
    assert_eq!(text(&raw[0].0).as_deref(), Some(r#"{"order_id":5}"#));
    assert_eq!(text(&raw[0].1).as_deref(), Some(r#"{"order_revenue":1.5,"order_region":"x","customer_id":9}"#));
    produce(&t, &[(Some(br#"{"order_id":6}"#), Some(br#"{"h":1,"customer_id":3}"#))]);

    let meta = |key: &str, name: &str| {
        let ty = rsql_kafka::metadata_columns().into_iter().find(|(k, _)| *k == key).unwrap().1;
        ProducedColumn::Metadata { key: key.into(), name: name.into(), ty }
    };
    let mut cols = physical(&tbl);
    cols.extend([
        meta("topic", "topic"),
        meta("partition", "partition"),
        meta("offset", "offset"),
        meta("timestamp", "ts"),
        meta("timestamp-type", "ts_type"),
        meta("leader-epoch", "epoch"),
        meta("headers", "headers"),
    ]);
    let mut src = factory(&tbl).create_source(&tbl, &cols).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = watch::channel(false);
    src.run(SourceContext { out: tx, stop: stop_rx, table: "t".into(), max_batch_delay: Duration::from_millis(10), batch_size: 100 })
        .await
        .unwrap();
    let mut batches = Vec::new();
    while let Ok(Msg::Batch(b)) = rx.try_recv() {
        batches.push(b);
    }
    let b = ChangeBatch::concat(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 2);
    let r = rows_of_prefix(&b, 7);
    assert_eq!(r[0][..4], rows[0].1[..]);
    assert_eq!(r[0][4], s(&t));
    assert_eq!(r[0][5], Datum::Int(0));
    assert_eq!(r[0][6], Datum::Int(0));
    assert_eq!(r[1][0], Datum::Int(6));
    assert_eq!(r[1][3], Datum::Int(3));
    assert_eq!(r[1][6], Datum::Int(1));
    let ts_type = datum_at(b.data.column(8).as_ref(), 0).unwrap();
    assert!(matches!(ts_type, Datum::Str(ref x) if x == "CreateTime" || x == "LogAppendTime"), "{ts_type:?}");
    match datum_at(b.data.column(7).as_ref(), 0).unwrap() {
        Datum::Timestamp(us) => assert!(us > 1_600_000_000_000_000, "timestamp {us}"),
        other => panic!("timestamp metadata {other:?}"),
    }
    let headers = b.data.column(10);
    use rsql_common::arrow::array::{Array, MapArray};
    let m = headers.as_any().downcast_ref::<MapArray>().unwrap();
    assert_eq!(m.value(0).len(), 0);
    assert_eq!(datum_at(m, 1).unwrap(), Datum::map(vec![(s("trace"), Datum::Bytes(b"abc".to_vec()))]));
    // leader-epoch: the partition leader's epoch the broker stamped on the batch, NULL when it has none.
    let epoch = datum_at(b.data.column(9).as_ref(), 0).unwrap();
    assert!(matches!(epoch, Datum::Null) || matches!(epoch, Datum::Int(e) if e >= 0), "{epoch:?}");
}

fn rows_of_prefix(b: &ChangeBatch, n: usize) -> Vec<Vec<Datum>> {
    (0..b.num_rows()).map(|r| (0..n).map(|c| datum_at(b.data.column(c).as_ref(), r).unwrap()).collect()).collect()
}

#[tokio::test]
async fn bounded_reads_cover_every_partition_and_end() {
    let t = topic("bounded", 3);
    let tbl = kafka_table(&t, "json", &[("key.format", "json"), ("key.fields", "order_id"), ("scan.bounded.mode", "latest-offset")]);
    let rows: Rows = (0..30).map(|i| (RowKind::Insert, vec![Datum::Int(i), Datum::Float(i as f64), s("r"), Datum::Int(i % 3)])).collect();
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows.clone())]).await;
    let mut got = read(&tbl, &physical(&tbl)).await.unwrap();
    got.sort_by_key(|r| match r.1[0] {
        Datum::Int(i) => i,
        _ => -1,
    });
    assert_eq!(got, rows);
    // Partitioned by key: more than one partition got rows.
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers()).create().unwrap();
    let used = (0..3).filter(|p| c.fetch_watermarks(&t, *p, Duration::from_secs(5)).map(|w| w.1 > 0).unwrap_or(false)).count();
    assert!(used >= 2, "rows went to {used} partition(s)");
    // An empty topic ends at once.
    let empty = topic("empty", 1);
    assert!(read(&kafka_table(&empty, "json", &[("scan.bounded.mode", "latest-offset")]), &physical(&tbl)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_restarted_consumer_resumes_from_committed_offsets() {
    let t = topic("resume", 1);
    let group = format!("g_{t}");
    let tbl = table(
        orders_columns(),
        None,
        &[
            ("connector", "kafka"),
            ("topic", &t),
            ("format", "json"),
            ("properties.group.id", &group),
            ("properties.auto.offset.reset", "earliest"),
            ("scan.startup.mode", "group-offsets"),
            ("scan.bounded.mode", "latest-offset"),
        ],
    );
    let mk = |from: i64, n: i64| -> Rows {
        (from..from + n).map(|i| (RowKind::Insert, vec![Datum::Int(i), Datum::Float(1.0), s("x"), Datum::Int(1)])).collect()
    };
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, mk(0, 5))]).await;
    assert_eq!(read(&tbl, &physical(&tbl)).await.unwrap(), mk(0, 5));
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, mk(5, 3))]).await;
    assert_eq!(read(&tbl, &physical(&tbl)).await.unwrap(), mk(5, 3), "the second run starts after the committed offset");
    assert!(read(&tbl, &physical(&tbl)).await.unwrap().is_empty());
    // Bounded by the group's committed offsets: rows written after them are left for later.
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, mk(8, 2))]).await;
    let upto = kafka_table(&t, "json", &[("properties.group.id", &group), ("scan.bounded.mode", "group-offsets")]);
    assert_eq!(read(&upto, &physical(&upto)).await.unwrap(), mk(0, 8));
}

#[tokio::test]
async fn a_bad_message_names_topic_partition_and_offset_unless_ignored() {
    let t = topic("bad", 1);
    produce(&t, &[(None, Some(br#"{"order_id":1}"#)), (None, Some(b"this is not json")), (None, Some(br#"{"order_id":3}"#))]);
    let tbl = kafka_table(&t, "json", &[("scan.bounded.mode", "latest-offset")]);
    let e = read(&tbl, &physical(&tbl)).await.unwrap_err().to_string();
    assert!(e.contains(&format!("topic '{t}' partition 0 offset 1")), "{e}");
    assert!(e.contains("'this is not json'"), "{e}");
    assert!(e.contains("json.ignore-parse-errors"), "{e}");
    let tolerant = kafka_table(&t, "json", &[("scan.bounded.mode", "latest-offset"), ("json.ignore-parse-errors", "true")]);
    let got = read(&tolerant, &physical(&tolerant)).await.unwrap();
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn a_missing_topic_is_a_clear_error() {
    broker();
    let tbl = kafka_table("no_such_topic_here", "json", &[("scan.bounded.mode", "latest-offset")]);
    let e = read(&tbl, &physical(&tbl)).await.unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[tokio::test]
async fn an_unbounded_source_stops_when_asked() {
    let t = topic("unbounded", 1);
    produce(&t, &[(None, Some(br#"{"order_id":1}"#))]);
    let tbl = kafka_table(&t, "json", &[]);
    let mut src = factory(&tbl).create_source(&tbl, &physical(&tbl)).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        src.run(SourceContext { out: tx, stop: stop_rx, table: "t".into(), max_batch_delay: Duration::from_millis(10), batch_size: 100 })
            .await
    });
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("a batch").expect("open channel");
    assert!(matches!(first, Msg::Batch(ref b) if b.num_rows() == 1));
    stop_tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("source stopped").unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn exactly_once_is_refused_at_start_by_a_broker_without_transactions() {
    let t = topic("txn", 1);
    let tbl = upsert_table(&t, &[("sink.delivery-guarantee", "exactly-once"), ("sink.transactional-id-prefix", "rsqltest")]);
    let (_, versions) = rsql_kafka::probe::api_versions(&servers(), Duration::from_secs(10)).expect("the broker answers ApiVersions");
    let rows = vec![(RowKind::Insert, vec![Datum::Int(1), Datum::Float(1.0), s("a"), Datum::Int(1)])];
    let started = std::time::Instant::now();
    let created = factory(&tbl).create_sink(&tbl, &ChangelogMode::All);
    assert!(started.elapsed() < Duration::from_secs(20), "creating the sink took {:?}", started.elapsed());
    if versions.missing_transaction_apis().is_empty() {
        // A broker with transactions (not the local tansu): one transaction per flush.
        let mut sink = created.unwrap();
        sink.open(true, None).await.unwrap();
        sink.write(batch(&tbl, rows)).await.unwrap();
        sink.flush().await.unwrap();
        let got = raw_messages(&t, 0);
        assert!(got.iter().any(|(_, v)| text(v).as_deref() == Some(r#"{"order_id":1,"order_revenue":1.0,"order_region":"a","customer_id":1}"#)));
        return;
    }
    // tansu 0.6 has no EndTxn: refused when the job starts (the sink is created), before
    // anything is produced; the restart strategy does not retry errors at start.
    let e = created.err().expect("refused").to_string();
    for part in ["table 't'", &servers(), "EndTxn", "'sink.delivery-guarantee' = 'at-least-once'", "nothing was written"] {
        assert!(e.contains(part), "'{part}' missing from: {e}");
    }
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers()).create().unwrap();
    assert_eq!(c.fetch_watermarks(&t, 0, Duration::from_secs(10)).unwrap(), (0, 0), "no message reached the topic");
}

#[tokio::test]
async fn startup_and_bound_modes() {
    let t = topic("modes", 1);
    let msgs: Vec<String> = (0..10).map(|i| format!(r#"{{"order_id":{i}}}"#)).collect();
    let kv: Vec<KeyValue<'_>> = msgs.iter().map(|m| (None, Some(m.as_bytes()))).collect();
    produce(&t, &kv);
    let ids = |rows: Rows| -> Vec<Datum> { rows.into_iter().map(|r| r.1[0].clone()).collect() };
    let range = |a: i64, b: i64| -> Vec<Datum> { (a..b).map(Datum::Int).collect() };
    let specific = table(
        orders_columns(),
        None,
        &[
            ("connector", "kafka"),
            ("topic", &t),
            ("format", "json"),
            ("scan.startup.mode", "specific-offsets"),
            ("scan.startup.specific-offsets", "partition:0,offset:6"),
            ("scan.bounded.mode", "latest-offset"),
        ],
    );
    assert_eq!(ids(read(&specific, &physical(&specific)).await.unwrap()), range(6, 10));
    let upto = kafka_table(&t, "json", &[("scan.bounded.mode", "specific-offsets"), ("scan.bounded.specific-offsets", "partition:0,offset:3")]);
    assert_eq!(ids(read(&upto, &physical(&upto)).await.unwrap()), range(0, 3));
    let past = table(
        orders_columns(),
        None,
        &[
            ("connector", "kafka"),
            ("topic", &t),
            ("format", "json"),
            ("scan.startup.mode", "timestamp"),
            ("scan.startup.timestamp-millis", "1000"),
            ("scan.bounded.mode", "latest-offset"),
        ],
    );
    assert_eq!(ids(read(&past, &physical(&past)).await.unwrap()), range(0, 10));
    let latest = table(
        orders_columns(),
        None,
        &[("connector", "kafka"), ("topic", &t), ("format", "json"), ("scan.startup.mode", "latest-offset"), ("scan.bounded.mode", "latest-offset")],
    );
    assert!(read(&latest, &physical(&latest)).await.unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_brokers_are_retried_until_stopped() {
    // Nothing listens on port 1: the source keeps retrying (and logging) until asked to stop.
    let mut tbl = kafka_table("any", "json", &[("properties.socket.connection.setup.timeout.ms", "1000")]);
    tbl.options.insert("properties.bootstrap.servers".into(), OptionValue { value: "127.0.0.1:1".into(), location: Default::default() });
    let mut src = factory(&tbl).create_source(&tbl, &physical(&tbl)).unwrap();
    let (tx, _rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        src.run(SourceContext { out: tx, stop: stop_rx, table: "t".into(), max_batch_delay: Duration::from_millis(10), batch_size: 10 })
            .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!handle.is_finished(), "the source gave up instead of retrying");
    let asked = std::time::Instant::now();
    stop_tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), handle).await.expect("stops when asked").unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(3), "stopping took {:?}", asked.elapsed());
}

#[tokio::test]
async fn the_buffer_interval_writes_an_idle_stream_without_a_flush() {
    let t = topic("interval", 1);
    let tbl = upsert_table(&t, &[("sink.buffer-flush.max-rows", "1000"), ("sink.buffer-flush.interval", "200ms")]);
    let mut sink = factory(&tbl).create_sink(&tbl, &ChangelogMode::All).unwrap();
    let rows = vec![
        (RowKind::Insert, vec![Datum::Int(1), Datum::Float(1.0), s("a"), Datum::Int(1)]),
        (RowKind::UpdateAfter, vec![Datum::Int(1), Datum::Float(2.0), s("b"), Datum::Int(1)]),
    ];
    sink.write(batch(&tbl, rows)).await.unwrap();
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers()).create().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut high = 0;
    while high == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        high = c.fetch_watermarks(&t, 0, Duration::from_secs(5)).map(|w| w.1).unwrap_or(0);
    }
    assert_eq!(high, 1, "one message (the last change of key 1) without any flush");
    sink.close().await.unwrap();
    let got: Vec<Option<String>> = raw_messages(&t, 0).iter().map(|(_, v)| text(v)).collect();
    assert_eq!(got, vec![Some(r#"{"order_id":1,"order_revenue":2.0,"order_region":"b","customer_id":1}"#.into())]);
}

/// A kafka json table over the topics matching `pattern`, read from the earliest offsets.
fn pattern_table(pattern: &str, extra: &[(&str, &str)]) -> TableDef {
    let mut opts = vec![("connector", "kafka"), ("topic-pattern", pattern), ("format", "json"), ("scan.startup.mode", "earliest-offset")];
    opts.extend_from_slice(extra);
    table(orders_columns(), None, &opts)
}

#[tokio::test]
async fn an_unbounded_pattern_source_discovers_new_topics() {
    let base = format!("disc{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
    let a = topic(&format!("{base}_a"), 1);
    produce(&a, &[(None, Some(br#"{"order_id":1}"#))]);
    let tbl = pattern_table(&format!("{base}_.*"), &[("scan.topic-partition-discovery.interval", "300ms")]);
    let mut src = factory(&tbl).create_source(&tbl, &physical(&tbl)).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        src.run(SourceContext { out: tx, stop: stop_rx, table: "t".into(), max_batch_delay: Duration::from_millis(10), batch_size: 100 })
            .await
    });
    let mut ids = Vec::new();
    let next = |ids: &mut Vec<Datum>, m: Option<Msg>| {
        if let Some(Msg::Batch(b)) = m {
            ids.extend(rows_of(&b).into_iter().map(|r| r.1[0].clone()));
        }
    };
    next(&mut ids, tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("first topic read"));
    let b = topic(&format!("{base}_b"), 1);
    produce(&b, &[(None, Some(br#"{"order_id":2}"#))]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ids.len() < 2 && std::time::Instant::now() < deadline {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            next(&mut ids, m);
        }
    }
    assert_eq!(ids, vec![Datum::Int(1), Datum::Int(2)]);
    stop_tx.send(true).unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), handle).await.expect("stops").unwrap().is_ok());
}

/// The latest value per key of a partition, as text (None = tombstone).
fn latest_per_key(topic: &str, partition: i32) -> Vec<(String, Option<String>)> {
    let mut m = std::collections::BTreeMap::new();
    for (k, v) in raw_messages(topic, partition) {
        if let Some(k) = text(&k) {
            m.insert(k, text(&v));
        }
    }
    m.into_iter().collect()
}

#[tokio::test]
async fn a_resumed_upsert_sink_undoes_what_a_failed_run_wrote_after_the_checkpoint() {
    let t = topic("rollback", 2);
    let tbl = upsert_table(&t, &[]);
    let row = |id: i64, region: &str| vec![Datum::Int(id), Datum::Float(id as f64), s(region), Datum::Int(id)];
    // The run that checkpoints: keys 1..=6 written, 5 deleted again.
    let mut first = factory(&tbl).create_sink(&tbl, &ChangelogMode::All).unwrap();
    let mut rows: Rows = (1..=6).map(|i| (RowKind::Insert, row(i, "before"))).collect();
    rows.push((RowKind::Delete, row(5, "before")));
    first.write(batch(&tbl, rows)).await.unwrap();
    first.flush().await.unwrap();
    let state = first.snapshot(1).await.unwrap();
    let at_checkpoint: Vec<_> = (0..2).flat_map(|p| latest_per_key(&t, p)).collect();
    // After the checkpoint the run changes keys 1 and 5, adds 7 and 8, deletes 2, then dies.
    let after = vec![
        (RowKind::UpdateAfter, row(1, "after")),
        (RowKind::Insert, row(5, "after")),
        (RowKind::Insert, row(7, "after")),
        (RowKind::Insert, row(8, "after")),
        (RowKind::Delete, row(2, "before")),
    ];
    first.write(batch(&tbl, after)).await.unwrap();
    first.flush().await.unwrap();
    drop(first);
    // A second failed attempt resumes from the same checkpoint and writes key 9 before dying.
    let mut second = factory(&tbl).create_sink(&tbl, &ChangelogMode::All).unwrap();
    second.open(true, Some(&state)).await.unwrap();
    second.write(batch(&tbl, vec![(RowKind::Insert, row(9, "after"))])).await.unwrap();
    second.flush().await.unwrap();
    drop(second);
    // The third run resumes: the topic's latest values are the checkpoint's again.
    let mut third = factory(&tbl).create_sink(&tbl, &ChangelogMode::All).unwrap();
    third.open(true, Some(&state)).await.unwrap();
    third.close().await.unwrap();
    let live = |rows: Vec<(String, Option<String>)>| {
        let mut v: Vec<_> = rows.into_iter().filter(|(_, v)| v.is_some()).collect();
        v.sort();
        v
    };
    let now: Vec<_> = (0..2).flat_map(|p| latest_per_key(&t, p)).collect();
    assert_eq!(live(now), live(at_checkpoint.clone()));
    assert_eq!(live(at_checkpoint.clone()).len(), 5);
    // Resuming once more keeps the checkpoint's values.
    let mut fourth = factory(&tbl).create_sink(&tbl, &ChangelogMode::All).unwrap();
    fourth.open(true, Some(&state)).await.unwrap();
    fourth.close().await.unwrap();
    let again: Vec<_> = (0..2).flat_map(|p| latest_per_key(&t, p)).collect();
    assert_eq!(live(again), live(at_checkpoint));
}

/// The source's lag is the number of messages between what it has handed on and the partition's
/// high watermark: large while it waits on a full channel, 0 once everything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_status_reports_messages_behind_the_high_watermark() {
    use rsql_runtime::Lag;
    let tp = topic("lag", 1);
    let values: Vec<String> = (0..500)
        .map(|i| format!("{{\"order_id\":{i},\"order_revenue\":1.5,\"order_region\":\"r\",\"customer_id\":1}}"))
        .collect();
    let messages: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    produce(&tp, &messages);
    let t = table(
        orders_columns(),
        None,
        &[("connector", "kafka"), ("topic", &tp), ("format", "json"), ("scan.startup.mode", "earliest-offset")],
    );
    let mut src = factory(&t).create_source(&t, &physical(&t)).unwrap();
    let status = src.status().expect("kafka sources report their status");
    // A small channel and one row per batch: the source waits with most messages unread.
    let (tx, mut rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = SourceContext { out: tx, stop: stop_rx, table: "t".into(), max_batch_delay: Duration::from_millis(10), batch_size: 1 };
    let handle = tokio::spawn(async move { src.run(ctx).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match status.view().lag {
            Some(Lag::Messages(n)) if n > 400 => break,
            other => assert!(std::time::Instant::now() < deadline, "no lag measured: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rows = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rows < 500 {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Msg::Batch(b))) => rows += b.num_rows(),
            Ok(Some(_)) => {}
            other => panic!("after {rows} rows: {other:?}"),
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match status.view().lag {
            Some(Lag::Messages(0)) => break,
            other => assert!(std::time::Instant::now() < deadline, "lag not back to 0: {other:?}"),
        }
        // Keep the channel drained so that the source reports its positions.
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(20), handle).await.expect("source stops").unwrap().unwrap();
}

fn nested_columns() -> Vec<ColumnDef> {
    let st = || LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH));
    vec![
        col("id", FlinkType::Int, false),
        col("tags", FlinkType::Array(Box::new(st())), true),
        col("attrs", FlinkType::Map(Box::new(st()), Box::new(LogicalType::nullable(FlinkType::Int))), true),
        col(
            "addr",
            FlinkType::Row(vec![
                ("city".into(), st()),
                ("zips".into(), LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::not_null(FlinkType::Int))))),
            ]),
            true,
        ),
    ]
}

#[tokio::test]
async fn nested_types_round_trip_through_a_topic() {
    let rows: Rows = vec![
        (
            RowKind::Insert,
            vec![
                Datum::Int(1),
                Datum::list(vec![s("a"), Datum::Null]),
                Datum::map(vec![(s("k"), Datum::Int(7)), (s("n"), Datum::Null)]),
                Datum::row(vec![s("x"), Datum::list(vec![Datum::Int(100), Datum::Int(200)])]),
            ],
        ),
        (RowKind::Insert, vec![Datum::Int(2), Datum::list(vec![]), Datum::map(vec![]), Datum::row(vec![Datum::Null, Datum::Null])]),
        (RowKind::Insert, vec![Datum::Int(3), Datum::Null, Datum::Null, Datum::Null]),
    ];
    for format in ["json", "debezium-json"] {
        let t = topic(&format!("nested_{}", format.replace('-', "_")), 1);
        let opts = [("connector", "kafka"), ("topic", &t), ("format", format), ("scan.startup.mode", "earliest-offset"), ("scan.bounded.mode", "latest-offset")];
        let tbl = table(nested_columns(), None, &opts);
        write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows.clone())]).await;
        assert_eq!(read(&tbl, &physical(&tbl)).await.unwrap(), rows, "format {format}");
        if format == "json" {
            assert_eq!(
                text(&raw_messages(&t, 0)[0].1).as_deref(),
                Some(r#"{"id":1,"tags":["a",null],"attrs":{"k":7,"n":null},"addr":{"city":"x","zips":[100,200]}}"#)
            );
            // A nested value of the wrong type stops the job naming where it is and which part.
            produce(&t, &[(None, Some(br#"{"id":4,"addr":{"zips":[1,"two"]}}"#))]);
            let e = read(&tbl, &physical(&tbl)).await.unwrap_err().to_string();
            assert!(e.contains(&format!("topic '{t}' partition 0 offset 3")) && e.contains("addr.zips[1]"), "{e}");
        }
    }
}

#[tokio::test]
async fn sink_partitioners_fixed_round_robin_and_by_key() {
    let rows: Rows = (0..12).map(|i| (RowKind::Insert, vec![Datum::Int(i), Datum::Float(1.0), s("r"), Datum::Int(i % 2)])).collect();
    let counts = |t: &str| -> Vec<i64> {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers()).create().unwrap();
        (0..3).map(|p| c.fetch_watermarks(t, p, Duration::from_secs(10)).unwrap().1).collect()
    };
    let t = topic("part_fixed", 3);
    let tbl = kafka_table(&t, "json", &[("sink.partitioner", "fixed")]);
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows.clone())]).await;
    assert_eq!(counts(&t), vec![12, 0, 0], "fixed: every row in partition 0");
    let t = topic("part_rr", 3);
    let tbl = kafka_table(&t, "json", &[("sink.partitioner", "round-robin")]);
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows.clone())]).await;
    assert_eq!(counts(&t), vec![4, 4, 4], "round-robin: rows spread evenly");
    // default with a key: each key always lands in the same partition.
    let t = topic("part_key", 3);
    let tbl = kafka_table(&t, "json", &[("key.format", "json"), ("key.fields", "customer_id")]);
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows)]).await;
    let mut per_key: std::collections::BTreeMap<String, std::collections::BTreeSet<i32>> = Default::default();
    for p in 0..3 {
        for (k, _) in raw_messages(&t, p) {
            per_key.entry(text(&k).unwrap_or_default()).or_default().insert(p);
        }
    }
    assert_eq!(per_key.len(), 2);
    assert!(per_key.values().all(|ps| ps.len() == 1), "{per_key:?}");
    let bad = kafka_table(&t, "json", &[("sink.partitioner", "com.example.MyPartitioner")]);
    let mut reg = rsql_runtime::ConnectorRegistry::new();
    rsql_kafka::register(&mut reg);
    let e = reg.validate(&bad).err().expect("a custom class is refused").to_string();
    assert!(e.contains("sink.partitioner"), "{e}");
}

#[tokio::test]
async fn key_fields_prefix_strips_the_prefix_in_the_key() {
    let t = topic("prefix", 1);
    let columns = vec![
        col("k_order_id", FlinkType::Int, false),
        col("order_id", FlinkType::Int, true),
        col("order_region", FlinkType::Varchar(40), true),
    ];
    let tbl = table(
        columns,
        None,
        &[
            ("connector", "kafka"),
            ("topic", &t),
            ("format", "json"),
            ("key.format", "json"),
            ("key.fields", "k_order_id"),
            ("key.fields-prefix", "k_"),
            ("value.fields-include", "EXCEPT_KEY"),
            ("scan.startup.mode", "earliest-offset"),
            ("scan.bounded.mode", "latest-offset"),
        ],
    );
    let rows: Rows = vec![(RowKind::Insert, vec![Datum::Int(5), Datum::Int(50), s("x")])];
    write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows.clone())]).await;
    let raw = raw_messages(&t, 0);
    assert_eq!(text(&raw[0].0).as_deref(), Some(r#"{"order_id":5}"#));
    assert_eq!(text(&raw[0].1).as_deref(), Some(r#"{"order_id":50,"order_region":"x"}"#));
    assert_eq!(read(&tbl, &physical(&tbl)).await.unwrap(), rows);
}

/// Produces JSON rows `{"order_id": i}` with timestamps `base + i * 1000` ms.
fn produce_timed(topic: &str, n: i64, base: i64) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", servers()).create().unwrap();
    for i in 0..n {
        let v = format!(r#"{{"order_id":{i}}}"#);
        let r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(0).payload(v.as_bytes()).timestamp(base + i * 1000);
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

#[tokio::test]
async fn timestamp_start_and_bound() {
    let t = topic("ts_modes", 1);
    let base = 1_700_000_000_000i64;
    produce_timed(&t, 10, base);
    let ids = |rows: Rows| -> Vec<Datum> { rows.into_iter().map(|r| r.1[0].clone()).collect() };
    let range = |a: i64, b: i64| -> Vec<Datum> { (a..b).map(Datum::Int).collect() };
    let from = (base + 3000).to_string();
    let upto = (base + 7000).to_string();
    let start = kafka_table(
        &t,
        "json",
        &[("scan.startup.mode", "timestamp"), ("scan.startup.timestamp-millis", &from), ("scan.bounded.mode", "latest-offset")],
    );
    assert_eq!(ids(read(&start, &physical(&start)).await.unwrap()), range(3, 10));
    let end = kafka_table(&t, "json", &[("scan.bounded.mode", "timestamp"), ("scan.bounded.timestamp-millis", &upto)]);
    assert_eq!(ids(read(&end, &physical(&end)).await.unwrap()), range(0, 7), "ends before the first row at the timestamp");
    let both = kafka_table(
        &t,
        "json",
        &[
            ("scan.startup.mode", "timestamp"),
            ("scan.startup.timestamp-millis", &from),
            ("scan.bounded.mode", "timestamp"),
            ("scan.bounded.timestamp-millis", &upto),
        ],
    );
    assert_eq!(ids(read(&both, &physical(&both)).await.unwrap()), range(3, 7));
    // The timestamp metadata column is the message's timestamp.
    let ty = rsql_kafka::metadata_columns().into_iter().find(|(k, _)| *k == "timestamp").unwrap().1;
    let mut cols = physical(&both);
    cols.push(ProducedColumn::Metadata { key: "timestamp".into(), name: "ts".into(), ty });
    let got = read(&both, &cols).await.unwrap();
    assert_eq!(got[0].1[4], Datum::Timestamp((base + 3000) * 1000));
}

#[tokio::test]
async fn a_topic_pattern_reads_every_matching_topic_up_to_the_bound() {
    let base = format!("pat{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
    let a = topic(&format!("{base}_a"), 1);
    let b = topic(&format!("{base}_b"), 2);
    let other = topic(&format!("{base}x_c"), 1);
    produce(&a, &[(None, Some(br#"{"order_id":1}"#))]);
    produce(&b, &[(None, Some(br#"{"order_id":2}"#)), (None, Some(br#"{"order_id":3}"#))]);
    produce(&other, &[(None, Some(br#"{"order_id":99}"#))]);
    let tbl = pattern_table(&format!("{base}_[ab]_[0-9]+"), &[("scan.bounded.mode", "latest-offset")]);
    let sorted_ids = |rows: Rows| -> Vec<Datum> {
        let mut ids: Vec<Datum> = rows.into_iter().map(|r| r.1[0].clone()).collect();
        ids.sort_by_key(|d| format!("{d:?}"));
        ids
    };
    assert_eq!(sorted_ids(read(&tbl, &physical(&tbl)).await.unwrap()), vec![Datum::Int(1), Datum::Int(2), Datum::Int(3)]);
    // A list of topics in 'topic', separated by ';'.
    let list = kafka_table(&format!("{a};{other}"), "json", &[("scan.bounded.mode", "latest-offset")]);
    assert_eq!(sorted_ids(read(&list, &physical(&list)).await.unwrap()), vec![Datum::Int(1), Datum::Int(99)]);
    let none = pattern_table("no_topic_matches_this_.*", &[("scan.bounded.mode", "latest-offset")]);
    let e = read(&none, &physical(&none)).await.unwrap_err().to_string();
    assert!(e.contains("no topic") && e.contains("no_topic_matches_this_"), "{e}");
}

#[tokio::test]
async fn a_sink_to_a_missing_topic_is_a_clear_error() {
    broker();
    let tbl = upsert_table("no_such_sink_topic_here", &[]);
    let mut sink = factory(&tbl).create_sink(&tbl, &ChangelogMode::All).unwrap();
    let rows = vec![(RowKind::Insert, vec![Datum::Int(1), Datum::Float(1.0), s("a"), Datum::Int(1)])];
    let e = tokio::time::timeout(Duration::from_secs(60), sink.write(batch(&tbl, rows))).await.expect("no hang").unwrap_err().to_string();
    assert!(e.contains("no_such_sink_topic_here") && e.contains("does not exist") && e.contains("create it first"), "{e}");
}

/// A broker of this test's own on `port`, so stopping it does not disturb other tests.
struct PrivateBroker {
    env: Vec<(&'static str, String)>,
}

impl PrivateBroker {
    fn run(&self, what: &[&str]) {
        let st = std::process::Command::new("bash")
            .arg(script())
            .args(what)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .expect("run scripts/kafka.sh");
        assert!(st.success(), "scripts/kafka.sh {what:?} failed");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(script()).arg("stop").envs(self.env.iter().map(|(k, v)| (*k, v.as_str()))).status();
    }
}

#[tokio::test]
async fn a_broker_restart_loses_nothing() {
    let port = 19391;
    let dir = std::env::temp_dir().join(format!("rsql-kafka-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pb = PrivateBroker { env: vec![("RSQL_KAFKA_PORT", port.to_string()), ("RSQL_KAFKA_DIR", dir.display().to_string())] };
    pb.run(&["start"]);
    pb.run(&["create-topic", "restart_t", "1"]);
    let bootstrap = format!("127.0.0.1:{port}");
    let mut tbl = kafka_table("restart_t", "json", &[]);
    tbl.options.insert("properties.bootstrap.servers".into(), OptionValue { value: bootstrap.clone(), location: Default::default() });
    let mk = |from: i64, to: i64| -> ChangeBatch {
        batch(&tbl, (from..to).map(|i| (RowKind::Insert, vec![Datum::Int(i), Datum::Float(1.0), s("x"), Datum::Int(1)])).collect())
    };
    // An unbounded source reads throughout.
    let mut src = factory(&tbl).create_source(&tbl, &physical(&tbl)).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = tokio::spawn(async move {
        src.run(SourceContext { out: tx, stop: stop_rx, table: "t".into(), max_batch_delay: Duration::from_millis(10), batch_size: 100 })
            .await
    });
    let mut sink = factory(&tbl).create_sink(&tbl, &ChangelogMode::InsertOnly).unwrap();
    sink.open(false, None).await.unwrap();
    sink.write(mk(0, 50)).await.unwrap();
    sink.flush().await.unwrap();
    // The broker goes away; rows written meanwhile wait in the producer and go out once it is back.
    pb.run(&["stop"]);
    sink.write(mk(50, 100)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pb.run(&["start"]);
    tokio::time::timeout(Duration::from_secs(120), sink.flush()).await.expect("flush after the restart").unwrap();
    sink.close().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 100 && std::time::Instant::now() < deadline {
        if let Ok(Some(Msg::Batch(b))) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            for (_, r) in rows_of(&b) {
                if let Datum::Int(i) = r[0] {
                    seen.insert(i);
                }
            }
        }
    }
    assert_eq!(seen, (0..100).collect(), "every row arrives once the broker is back");
    stop_tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), reader).await.expect("the source stops").unwrap();
    assert!(r.is_ok(), "{r:?}");
    drop(pb);
    let _ = std::fs::remove_dir_all(&dir);
}

fn metadata_column(name: &str, key: &str, ty: LogicalType, is_virtual: bool) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        ty,
        kind: ColumnKind::Metadata { key: Some(key.into()), is_virtual },
        comment: None,
        location: Default::default(),
    }
}

#[tokio::test]
async fn sinks_write_timestamp_and_headers_metadata() {
    let ty = |key: &str| rsql_kafka::writable_metadata_columns().into_iter().find(|(k, _)| *k == key).unwrap().1;
    for upsert in [false, true] {
        let t = topic(if upsert { "meta_sink_upsert" } else { "meta_sink" }, 1);
        let mut columns = orders_columns();
        columns.push(metadata_column("ts", "timestamp", ty("timestamp"), false));
        // A VIRTUAL read-only column stays out of the sink's input.
        columns.push(metadata_column("off", "offset", LogicalType::not_null(FlinkType::BigInt), true));
        columns.push(metadata_column("hdrs", "headers", ty("headers"), false));
        let mut opts = vec![("connector", if upsert { "upsert-kafka" } else { "kafka" }), ("topic", t.as_str())];
        if upsert {
            opts.extend([("key.format", "json"), ("value.format", "json")]);
        } else {
            opts.extend([("format", "json"), ("scan.startup.mode", "earliest-offset")]);
        }
        opts.push(("scan.bounded.mode", "latest-offset"));
        let tbl = table(columns, if upsert { Some(&["order_id"]) } else { None }, &opts);
        assert_eq!(tbl.sink_columns().map(|c| c.name.as_str()).collect::<Vec<_>>()[4..], ["ts", "hdrs"]);
        let row = |id: i64, ts: Datum, h: Datum| (RowKind::Insert, vec![Datum::Int(id), Datum::Float(1.5), s("x"), Datum::Int(id), ts, h]);
        let headers = Datum::map(vec![(s("trace"), Datum::Bytes(b"abc".to_vec())), (s("empty"), Datum::Bytes(Vec::new()))]);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64 / 1000 * 1000;
        let rows = vec![
            row(1, Datum::Timestamp(1_700_000_000_123_000), headers.clone()),
            row(2, Datum::Null, Datum::Null),
            row(3, Datum::Timestamp(1_600_000_000_000_000), Datum::map(vec![])),
        ];
        write(&tbl, ChangelogMode::InsertOnly, vec![batch(&tbl, rows)]).await;

        let meta = |key: &str, name: &str| ProducedColumn::Metadata { key: key.into(), name: name.into(), ty: ty(key) };
        let mut cols = physical(&tbl);
        cols.extend([meta("timestamp", "ts"), meta("headers", "hdrs")]);
        let got = read(&tbl, &cols).await.unwrap();
        assert_eq!(got.len(), 3, "upsert={upsert}");
        assert_eq!(got[0].1[4], Datum::Timestamp(1_700_000_000_123_000), "upsert={upsert}");
        assert_eq!(got[0].1[5], headers, "upsert={upsert}");
        match got[1].1[4] {
            Datum::Timestamp(us) => assert!(us >= before, "a NULL timestamp is stamped by the producer: {us} < {before}"),
            ref other => panic!("timestamp {other:?}"),
        }
        assert_eq!(got[1].1[5], Datum::map(vec![]), "NULL headers: a message without headers");
        assert_eq!(got[2].1[4], Datum::Timestamp(1_600_000_000_000_000));
        assert_eq!(got[2].1[5], Datum::map(vec![]));
    }
}

#[tokio::test]
async fn sink_parallelism_runs_that_many_producers_and_keeps_each_keys_order() {
    // upsert-kafka: routed by primary key hash.
    let t = topic("par_upsert", 3);
    let tbl = upsert_table(&t, &[("sink.parallelism", "3")]);
    let cfg = rsql_kafka::KafkaTable::resolve(&tbl, true).unwrap();
    let mut sink = rsql_kafka::sink::KafkaSink::new(cfg, &ChangelogMode::All).unwrap();
    assert_eq!(sink.writers(), 3);
    let (keys, versions) = (60, 30);
    let mut written = 0u64;
    for v in 0..versions {
        let rows: Rows = (0..keys).map(|k| (RowKind::UpdateAfter, vec![Datum::Int(k), Datum::Float(v as f64), s("r"), Datum::Int(v)])).collect();
        sink.write(batch(&tbl, rows)).await.unwrap();
        written += keys as u64;
        if v == versions / 2 {
            // A checkpoint waits for every writer: all rows so far are acknowledged.
            let state = sink.snapshot(1).await.unwrap();
            assert_eq!(sink.in_flight(), 0);
            assert_eq!(sink.tracker().delivered.load(std::sync::atomic::Ordering::Acquire), written);
            let saved = rsql_kafka::rollback::SinkOffsets::decode(&state).unwrap();
            assert_eq!(saved.ends.iter().map(|(_, end)| *end as u64).sum::<u64>(), written, "the checkpoint's end offsets cover every writer");
        }
    }
    {
        sink.flush().await.unwrap();
        assert_eq!(sink.in_flight(), 0);
        sink.close().await.unwrap();
    }
    let per_writer = sink.rows_per_writer();
    assert_eq!(per_writer.iter().sum::<u64>(), written);
    assert!(per_writer.iter().all(|&n| n > 0), "every writer got keys: {per_writer:?}");
    let mut seen: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for p in 0..3 {
        for (k, v) in raw_messages(&t, p) {
            let v: serde_json::Value = serde_json::from_slice(&v.unwrap()).unwrap();
            seen.entry(text(&k).unwrap()).or_default().push(v["customer_id"].as_i64().unwrap());
        }
    }
    assert_eq!(seen.len(), keys as usize);
    for (k, vs) in &seen {
        assert_eq!(vs, &(0..versions as i64).collect::<Vec<_>>(), "key {k}: every change arrives, in order");
    }

    // kafka without a key: round-robin over the writers.
    let t = topic("par_append", 2);
    let tbl = kafka_table(&t, "json", &[("sink.parallelism", "3"), ("scan.bounded.mode", "latest-offset")]);
    let cfg = rsql_kafka::KafkaTable::resolve(&tbl, false).unwrap();
    let mut sink = rsql_kafka::sink::KafkaSink::new(cfg, &ChangelogMode::InsertOnly).unwrap();
    let rows: Rows = (0..90).map(|i| (RowKind::Insert, vec![Datum::Int(i), Datum::Float(1.0), s("r"), Datum::Int(i)])).collect();
    {
        sink.write(batch(&tbl, rows.clone())).await.unwrap();
        sink.close().await.unwrap();
    }
    assert_eq!(sink.rows_per_writer(), vec![30, 30, 30]);
    let mut got = read(&tbl, &physical(&tbl)).await.unwrap();
    got.sort_by_key(|r| match r.1[0] {
        Datum::Int(i) => i,
        _ => -1,
    });
    assert_eq!(got, rows);
}

#[test]
fn sink_parallelism_must_be_a_positive_integer() {
    for (v, want) in [("0", "from 1 to 1024"), ("-2", "from 1 to 1024"), ("two", "sink.parallelism")] {
        let tbl = upsert_table("t", &[("sink.parallelism", v)]);
        let mut reg = rsql_runtime::ConnectorRegistry::new();
        rsql_kafka::register(&mut reg);
        let e = match reg.validate(&tbl) {
            Ok(_) => panic!("'sink.parallelism' = '{v}' was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want) && e.contains("sink.parallelism"), "{v}: {e}");
    }
}
