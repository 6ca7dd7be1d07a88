//! Throughput of the upsert-kafka sink and source beside a bare rdkafka producer and consumer,
//! on the same local broker in the same run, for ~100-byte JSON rows.
//!
//!   scripts/kafka.sh start
//!   cargo run --release -p rsql-kafka --example kafka_bench -- [ROWS]
//!
//! Prints messages per second for each of the four and the ratio of rsql to bare.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rsql_common::builder::{Datum, RowsBuilder};
use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{ChangeBatch, RowKind};
use rsql_runtime::connector::{ChangelogMode, Message as Msg, ProducedColumn, SourceContext};
use tokio::sync::{mpsc, watch};

fn servers() -> String {
    format!("127.0.0.1:{}", std::env::var("RSQL_KAFKA_PORT").unwrap_or_else(|_| "19092".into()))
}

fn create_topic(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let t = format!("{prefix}_{nanos}");
    let script = format!("{}/../../scripts/kafka.sh", env!("CARGO_MANIFEST_DIR"));
    let ok = std::process::Command::new("bash").arg(script).args(["create-topic", &t, "1"]).status().map(|s| s.success());
    if !matches!(ok, Ok(true)) {
        eprintln!("cannot create topic {t}; is the broker running (scripts/kafka.sh start)?");
        std::process::exit(1);
    }
    t
}

fn table(topic: &str) -> TableDef {
    let opts = [
        ("connector", "upsert-kafka"),
        ("topic", topic),
        ("key.format", "json"),
        ("value.format", "json"),
        ("scan.bounded.mode", "latest-offset"),
    ];
    let mut options: std::collections::BTreeMap<String, OptionValue> =
        opts.iter().map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Default::default() })).collect();
    options.insert("properties.bootstrap.servers".into(), OptionValue { value: servers(), location: Default::default() });
    TableDef {
        path: ObjectPath::new("default_catalog", "default_database", "bench"),
        columns: vec![
            ColumnDef::physical("order_id", LogicalType::not_null(FlinkType::Int)),
            ColumnDef::physical("order_revenue", LogicalType::nullable(FlinkType::Float)),
            ColumnDef::physical("order_region", LogicalType::nullable(FlinkType::Varchar(40))),
            ColumnDef::physical("customer_id", LogicalType::nullable(FlinkType::Int)),
        ],
        primary_key: Some(vec!["order_id".into()]),
        watermark: None,
        options,
        comment: None,
        temporary: false,
        location: Default::default(),
    }
}

fn region(i: usize) -> String {
    format!("beijing-district-{:02}", i % 50)
}

fn bare_produce(topic: &str, n: usize) -> f64 {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", servers())
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let start = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        let key = format!("{{\"order_id\":{i}}}");
        let value = format!(
            "{{\"order_id\":{i},\"order_revenue\":{}.5,\"order_region\":\"{}\",\"customer_id\":{}}}",
            i % 1000,
            region(i),
            i % 10_000
        );
        bytes += value.len();
        let mut rec = BaseRecord::to(topic).key(key.as_bytes()).payload(value.as_bytes());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    p.flush(Duration::from_secs(600)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    eprintln!("  (average value size {} bytes)", bytes / n.max(1));
    n as f64 / secs
}

fn bare_consume(topic: &str, n: usize) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers())
        .set("group.id", format!("bench-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let _ = tpl.add_partition_offset(topic, 0, Offset::Beginning);
    c.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut got = 0usize;
    let mut sum = 0usize;
    while got < n {
        match c.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                sum += m.payload().map(|p| p.len()).unwrap_or(0);
                got += 1;
            }
            Some(Err(e)) => eprintln!("  consumer error: {e}"),
            None => {
                eprintln!("  bare consumer timed out after {got} messages");
                break;
            }
        }
    }
    std::hint::black_box(sum);
    got as f64 / start.elapsed().as_secs_f64()
}

fn batches(t: &TableDef, n: usize, size: usize) -> Vec<ChangeBatch> {
    let cols: Vec<(String, LogicalType)> = t.physical_columns().map(|c| (c.name.clone(), c.ty.clone())).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let m = size.min(n - i);
        let mut b = RowsBuilder::new(&cols, m).expect("builder");
        for j in i..i + m {
            b.append_row(vec![
                Datum::Int(j as i64),
                Datum::Float((j % 1000) as f64 + 0.5),
                Datum::Str(region(j)),
                Datum::Int((j % 10_000) as i64),
            ])
            .expect("row");
        }
        out.push(ChangeBatch::new(b.finish().expect("batch"), vec![RowKind::Insert; m]));
        i += m;
    }
    out
}

async fn rsql_sink(t: &TableDef, n: usize) -> f64 {
    let data = batches(t, n, 1024);
    let mut reg = rsql_runtime::ConnectorRegistry::new();
    rsql_kafka::register(&mut reg);
    let f = reg.validate(t).expect("valid table");
    let mut sink = f.create_sink(t, &ChangelogMode::All).expect("sink");
    let start = Instant::now();
    for b in data {
        sink.write(b).await.expect("write");
    }
    sink.flush().await.expect("flush");
    n as f64 / start.elapsed().as_secs_f64()
}

async fn rsql_source(t: &TableDef) -> (f64, usize) {
    let mut reg = rsql_runtime::ConnectorRegistry::new();
    rsql_kafka::register(&mut reg);
    let f = reg.validate(t).expect("valid table");
    let cols: Vec<ProducedColumn> =
        t.physical_columns().map(|c| ProducedColumn::Physical { name: c.name.clone(), ty: c.ty.clone() }).collect();
    let mut src = f.create_source(t, &cols).expect("source");
    let (tx, mut rx) = mpsc::channel(64);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let counter = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(m) = rx.recv().await {
            if let Msg::Batch(b) = m {
                n += b.num_rows();
            }
        }
        n
    });
    let start = Instant::now();
    src.run(SourceContext { out: tx, stop: stop_rx, table: "bench".into(), max_batch_delay: Duration::from_millis(100), batch_size: 4096 })
        .await
        .expect("source");
    drop(src);
    let rows = counter.await.unwrap_or(0);
    (rows as f64 / start.elapsed().as_secs_f64(), rows)
}

/// In-process JSON encode and decode rates of the same rows (no broker), rows/s.
fn codec(t: &TableDef, n: usize) -> (f64, f64, usize) {
    use rsql_connectors::formats::{self, DecodedRows};
    let data = batches(t, n, 4096);
    let cols: Vec<(String, LogicalType)> = t.physical_columns().map(|c| (c.name.clone(), c.ty.clone())).collect();
    let idx: Vec<usize> = (0..cols.len()).collect();
    let mut enc = formats::create_encoder("json", &cols, &idx, t, "value.").expect("encoder");
    let mut messages: Vec<Vec<u8>> = Vec::with_capacity(n);
    let start = Instant::now();
    for b in &data {
        for r in 0..b.num_rows() {
            let mut buf = Vec::with_capacity(128);
            enc.encode(&b.data, r, RowKind::Insert, &mut buf).expect("encode");
            messages.push(buf);
        }
    }
    let enc_rate = n as f64 / start.elapsed().as_secs_f64();
    let mut dec = formats::create_decoder("json", &cols, t, "value.").expect("decoder");
    let mut out = DecodedRows::new(&cols, 4096).expect("rows");
    let start = Instant::now();
    let mut rows = 0;
    for m in &messages {
        dec.decode(m, &mut out).expect("decode");
        if out.len() >= 4096 {
            rows += out.finish().expect("batch").num_rows();
        }
    }
    rows += out.finish().expect("batch").num_rows();
    let dec_rate = rows as f64 / start.elapsed().as_secs_f64();
    (enc_rate, dec_rate, messages.iter().map(Vec::len).sum::<usize>() / n.max(1))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let (enc, dec, size) = codec(&table("unused"), 1_000_000);
    println!("json codec, in process, 1000000 rows of {size} bytes: encode {enc:.0} rows/s, decode {dec:.0} rows/s");
    println!("{n} rows of ~100-byte JSON through {} (one partition each)", servers());

    let bare_topic = create_topic("bench_bare");
    let rsql_topic = create_topic("bench_rsql");

    let bare_p = tokio::task::spawn_blocking({
        let t = bare_topic.clone();
        move || bare_produce(&t, n)
    })
    .await
    .unwrap_or(0.0);
    let tbl = table(&rsql_topic);
    let rsql_p = rsql_sink(&tbl, n).await;
    let bare_c = tokio::task::spawn_blocking({
        let t = bare_topic.clone();
        move || bare_consume(&t, n)
    })
    .await
    .unwrap_or(0.0);
    let (rsql_c, rows) = rsql_source(&tbl).await;

    println!("{:<28}{:>14}", "", "msgs/s");
    println!("{:<28}{:>14.0}", "bare rdkafka producer", bare_p);
    println!("{:<28}{:>14.0}   {:.0}% of bare", "upsert-kafka sink", rsql_p, 100.0 * rsql_p / bare_p.max(1.0));
    println!("{:<28}{:>14.0}", "bare rdkafka consumer", bare_c);
    println!("{:<28}{:>14.0}   {:.0}% of bare ({rows} rows)", "upsert-kafka source", rsql_c, 100.0 * rsql_c / bare_c.max(1.0));
}
