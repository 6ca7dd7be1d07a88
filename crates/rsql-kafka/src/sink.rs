//! The kafka / upsert-kafka sink: encodes each row's key and value with the table's formats and
//! produces them with librdkafka.
//!
//! upsert-kafka: +I and +U write the row under its primary key, -D writes a tombstone (a null
//! value), -U is dropped; messages are partitioned by key (murmur2, as Java clients do), so each
//! key's changes stay in order. With `sink.buffer-flush.max-rows` and `sink.buffer-flush.interval`
//! rows are buffered and only the last change per key is written: when the buffer holds
//! max-rows keys, when the interval has passed since the first buffered change (a background task
//! checks, so an idle stream is written too), and at every flush.
//!
//! Writable metadata: a `timestamp` metadata column (TIMESTAMP_LTZ(3)) is the record's timestamp
//! (NULL: the producer stamps the send time), a `headers` column (MAP<STRING, BYTES>) its headers;
//! they follow the physical columns in the sink's input (`TableDef::sink_columns`).
//!
//! `sink.parallelism` = N runs N writers, each with its own librdkafka producer (own connections,
//! queue, I/O threads, upsert buffer and transaction). Rows are encoded on the sink's task and
//! routed by the hash of their encoded key (the primary key for upsert-kafka, `key.fields` for
//! kafka), so each key's changes go through one writer in order; rows without a key go
//! round-robin. A flush (checkpoint, end of job) drains every writer's buffer and then waits for
//! all N producers together.
//!
//! Delivery: `flush` (every checkpoint and the end of the job) waits until the brokers
//! acknowledged every message and fails if any could not be delivered (at-least-once; librdkafka
//! retries sends while brokers are away, up to `properties.message.timeout.ms`). With
//! `sink.delivery-guarantee` = `exactly-once` the messages between two flushes form one Kafka
//! transaction committed at the flush; readers with `isolation.level` = `read_committed` see them
//! only then. When the sink is created at job start it asks the broker (ApiVersions) whether it
//! has the transaction requests; a broker without them is an error then, naming the table, the
//! broker and the fix, before anything is written.
//!
//! Resuming from a checkpoint, an upsert-kafka sink first undoes what a failed run wrote after
//! it (see [`crate::rollback`]): replays then leave each key as an uninterrupted run would.
//! Without idempotence, one produce request in flight per connection keeps retried messages in
//! order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use rsql_common::arrow::array::{Array, AsArray};
use rsql_common::arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_connectors::formats::{self, RowEncoder};
use rsql_runtime::connector::{ChangelogMode, Sink};

use crate::config::{DeliveryGuarantee, KafkaTable, Partitioner};
use crate::probe;
use crate::rollback::{self, SinkOffsets};

async fn blocking<T: Send + 'static>(p: Arc<KProducer>, f: impl FnOnce(&KProducer) -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(move || f(&p)).await.map_err(|e| RsqlError::execution(format!("kafka producer task failed: {e}")))
}

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
pub struct DeliveryTracker {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryTracker {
    fn record_failure(&self, message: String) {
        self.failed.fetch_add(1, Ordering::AcqRel);
        let mut g = match self.first_error.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.is_none() {
            *g = Some(message);
        }
    }

    fn take_error(&self) -> Option<(u64, String)> {
        let failed = self.failed.swap(0, Ordering::AcqRel);
        if failed == 0 {
            return None;
        }
        let msg = match self.first_error.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        Some((failed, msg.unwrap_or_default()))
    }
}

/// Producer context: logs through `tracing` and tracks deliveries.
pub struct SinkContext {
    table: String,
    tracker: Arc<DeliveryTracker>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_librdkafka(&self.table, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(table = %self.table, "kafka producer error (retried by librdkafka): {error}: {reason}");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.tracker.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => self.tracker.record_failure(e.to_string()),
        }
    }
}

type KProducer = ThreadedProducer<SinkContext>;

/// A message's writable metadata: the record timestamp (None: the producer stamps it) and the
/// headers (None: no headers), from the row's `timestamp` and `headers` metadata columns.
#[derive(Clone, Default)]
struct RecordMeta {
    timestamp: Option<i64>,
    headers: Option<OwnedHeaders>,
}

/// Where the writable metadata columns sit in the sink's input: after the physical columns, in
/// declaration order (`TableDef::sink_columns`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MetaColumns {
    timestamp: Option<usize>,
    headers: Option<usize>,
}

impl MetaColumns {
    fn of(cfg: &KafkaTable) -> Result<MetaColumns> {
        let mut m = MetaColumns::default();
        for (i, c) in cfg.table.sink_columns().enumerate() {
            match c.metadata_key() {
                None => {}
                Some("timestamp") => m.timestamp = Some(i),
                Some("headers") => m.headers = Some(i),
                Some(key) => {
                    return Err(RsqlError::validation(
                        format!(
                            "table '{}': metadata column '{}' (key '{key}') is not writable: the kafka sink writes only \
                             'timestamp' and 'headers'; declare the column VIRTUAL",
                            cfg.name(),
                            c.name
                        ),
                        Some(c.location),
                    ))
                }
            }
        }
        Ok(m)
    }

    fn any(&self) -> bool {
        self.timestamp.is_some() || self.headers.is_some()
    }

    /// The metadata `row` carries; the error names the column and what it should be.
    fn read(&self, batch: &RecordBatch, row: usize) -> std::result::Result<RecordMeta, String> {
        let wrong = |i: usize, want: &str| {
            format!("metadata column '{}' is {}, not {want}", batch.schema().field(i).name(), batch.column(i).data_type())
        };
        let mut meta = RecordMeta::default();
        if let Some(i) = self.timestamp {
            meta.timestamp = timestamp_millis(batch.column(i).as_ref(), row).ok_or_else(|| wrong(i, "TIMESTAMP_LTZ(3)"))?;
        }
        if let Some(i) = self.headers {
            meta.headers = record_headers(batch.column(i).as_ref(), row).ok_or_else(|| wrong(i, "MAP<STRING, BYTES>"))?;
        }
        Ok(meta)
    }
}

/// Epoch milliseconds of a timestamp value (`Some(None)` for NULL); `None` for a column that is
/// not a timestamp.
fn timestamp_millis(col: &dyn Array, row: usize) -> Option<Option<i64>> {
    let v = match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => col.as_primitive_opt::<TimestampSecondType>()?.value(row).saturating_mul(1000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => col.as_primitive_opt::<TimestampMillisecondType>()?.value(row),
        DataType::Timestamp(TimeUnit::Microsecond, _) => col.as_primitive_opt::<TimestampMicrosecondType>()?.value(row).div_euclid(1000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            col.as_primitive_opt::<TimestampNanosecondType>()?.value(row).div_euclid(1_000_000)
        }
        _ => return None,
    };
    Some(if col.is_null(row) { None } else { Some(v) })
}

/// The Kafka headers of a MAP<STRING, BYTES> value (`Some(None)` for NULL, a NULL value is a
/// header without value); `None` for a column of another type.
fn record_headers(col: &dyn Array, row: usize) -> Option<Option<OwnedHeaders>> {
    let map = col.as_map_opt()?;
    if col.is_null(row) {
        return Some(None);
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_string_opt::<i32>()?;
    let values = entries.column(1).as_binary_opt::<i32>()?;
    let mut headers = OwnedHeaders::new_with_capacity(keys.len());
    for j in 0..keys.len() {
        let value: Option<&[u8]> = if values.is_null(j) { None } else { Some(values.value(j)) };
        headers = headers.insert(Header { key: keys.value(j), value });
    }
    Some(Some(headers))
}

/// Buffered upserts: key bytes -> the last value (None = tombstone) with its metadata, and when
/// the oldest buffered change arrived.
#[derive(Default)]
struct UpsertBuffer {
    map: HashMap<Vec<u8>, (Option<Vec<u8>>, RecordMeta)>,
    started: Option<Instant>,
}

type SharedBuffer = Arc<tokio::sync::Mutex<UpsertBuffer>>;

/// Produces one message, waiting while librdkafka's queue is full.
async fn produce(
    producer: &KProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    partition: Option<i32>,
    meta: &RecordMeta,
) -> std::result::Result<(), KafkaError> {
    let mut waited = Duration::ZERO;
    loop {
        {
            let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(v) = value {
                record = record.payload(v);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(ts) = meta.timestamp {
                record = record.timestamp(ts);
            }
            if let Some(h) = &meta.headers {
                record = record.headers(h.clone());
            }
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
                Err((e, _)) => return Err(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        waited += Duration::from_millis(1);
        if waited.as_millis().is_multiple_of(5000) {
            tracing::warn!(topic, "the producer queue has been full for {:?}; are the brokers reachable?", waited);
        }
    }
}

/// Writes every buffered change (the caller holds the buffer's lock).
async fn drain(producer: &KProducer, topic: &str, buf: &mut UpsertBuffer) -> std::result::Result<(), KafkaError> {
    buf.started = None;
    for (k, (v, meta)) in buf.map.drain() {
        produce(producer, topic, Some(&k), v.as_deref(), None, &meta).await?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Txn {
    Off,
    Uninitialized,
    Idle,
    Open,
}

/// For exactly-once, asks the broker (ApiVersions, on plaintext connections) whether it has the
/// transaction requests, when the sink is created at job start: a broker without them is an error
/// then, before anything is produced, and the restart strategy does not retry it. A broker that
/// cannot be asked is logged; librdkafka checks again when the transaction is used.
fn check_transactions(cfg: &KafkaTable, ctx: &str) -> Result<()> {
    let plaintext = cfg.properties.get("security.protocol").map(|p| p.eq_ignore_ascii_case("plaintext")).unwrap_or(true);
    if !plaintext {
        return Ok(());
    }
    match probe::api_versions(cfg.servers(), Duration::from_secs(5)) {
        Ok((addr, versions)) => {
            let missing = versions.missing_transaction_apis();
            if !missing.is_empty() {
                return Err(RsqlError::connector(
                    ctx,
                    format!(
                        "'sink.delivery-guarantee' = 'exactly-once' needs Kafka transactions, but the broker at {addr} \
                         does not support {} (from its ApiVersions answer); nothing was written. Use \
                         'sink.delivery-guarantee' = 'at-least-once' (the default) with this broker, or a broker \
                         with transactions (Apache Kafka 0.11 or later)",
                        missing.join(", ")
                    ),
                ));
            }
        }
        Err(why) => tracing::warn!(
            table = %cfg.name(),
            "cannot ask the brokers which requests they support ({why}); transactions are checked when they are used"
        ),
    }
    Ok(())
}


/// One of the sink's `sink.parallelism` writers: its own librdkafka producer (own connections,
/// queue and I/O threads), its own upsert buffer and, with exactly-once, its own transaction
/// (`transactional.id` = `<prefix>-<table>-<writer>`).
struct Writer {
    producer: Arc<KProducer>,
    buffer: Option<SharedBuffer>,
    flusher: Option<tokio::task::JoinHandle<()>>,
    txn: Txn,
    /// Rows routed to this writer (buffered upserts count when they are routed).
    rows: u64,
}

/// The kafka / upsert-kafka sink.
pub struct KafkaSink {
    cfg: KafkaTable,
    topic: String,
    writers: Vec<Writer>,
    tracker: Arc<DeliveryTracker>,
    key_encoder: Option<Box<dyn RowEncoder>>,
    value_encoder: Box<dyn RowEncoder>,
    changelog_value: bool,
    meta_columns: MetaColumns,
    partitions: Option<i32>,
    round_robin: i32,
    /// The writer of the last row without a key (they go round-robin over the writers).
    next_writer: usize,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

/// A stable hash of a message key (FNV-1a), choosing its writer: each key stays with one writer.
fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The producer of writer `index`.
fn create_producer(cfg: &KafkaTable, tracker: &Arc<DeliveryTracker>, index: usize, writers: usize) -> Result<(KProducer, Txn)> {
    let ctx = format!("table '{}'", cfg.name());
    let mut config = cfg.client_config();
    if !cfg.properties.contains_key("partitioner") {
        config.set("partitioner", "murmur2_random");
    }
    if !cfg.properties.contains_key("client.id") {
        let suffix = if writers > 1 { format!("-{index}") } else { String::new() };
        config.set("client.id", format!("rsql-{}{suffix}", cfg.name()));
    }
    let txn = if cfg.delivery == DeliveryGuarantee::ExactlyOnce {
        let prefix = cfg.transactional_id_prefix.clone().unwrap_or_default();
        config.set("transactional.id", format!("{prefix}-{}-{index}", cfg.name()));
        Txn::Uninitialized
    } else {
        if cfg.delivery == DeliveryGuarantee::None && !cfg.properties.contains_key("acks") {
            config.set("acks", "1");
        }
        // librdkafka retries a failed produce request while later requests are already in
        // flight, so without idempotence a retried upsert can land after a newer change of
        // the same key (a delete followed by its older value). One request in flight per
        // connection keeps each partition in send order, as the Java client's idempotent
        // default does.
        if !cfg.properties.contains_key("enable.idempotence")
            && !cfg.properties.contains_key("max.in.flight.requests.per.connection")
            && !cfg.properties.contains_key("max.in.flight")
        {
            config.set("max.in.flight.requests.per.connection", "1");
        }
        Txn::Off
    };
    let producer: KProducer = config
        .create_with_context(SinkContext { table: cfg.name().to_string(), tracker: tracker.clone() })
        .map_err(|e| RsqlError::connector(&ctx, format!("cannot create a kafka producer: {e}")))?;
    Ok((producer, txn))
}

impl KafkaSink {
    pub fn new(cfg: KafkaTable, input_mode: &ChangelogMode) -> Result<Self> {
        if cfg.topic_pattern.is_some() || cfg.topics.len() != 1 {
            return Err(RsqlError::Options {
                table: cfg.name().to_string(),
                message: "a kafka sink writes to exactly one 'topic' (not a list or 'topic-pattern')".into(),
                location: Some(rsql_common::options::option_location(&cfg.table, "topic")),
            });
        }
        let changelog_value = formats::is_changelog_format(&cfg.value_format);
        if !cfg.upsert && !changelog_value && !input_mode.is_insert_only() {
            return Err(RsqlError::unsupported(format!(
                "table '{}': the kafka sink with format '{}' accepts only inserts, but the query produces updates; \
                 use the upsert-kafka connector or a changelog format such as 'debezium-json'",
                cfg.name(),
                cfg.value_format
            )));
        }
        let meta_columns = MetaColumns::of(&cfg)?;
        let key_encoder = match &cfg.key_format {
            Some(f) => Some(formats::create_encoder(f, &cfg.key_columns(), &cfg.key_fields, &cfg.table, "key.")?),
            None => None,
        };
        let value_encoder =
            formats::create_encoder(&cfg.value_format, &cfg.value_columns(), &cfg.value_fields, &cfg.table, cfg.value_prefix)?;
        if cfg.delivery == DeliveryGuarantee::ExactlyOnce {
            check_transactions(&cfg, &format!("table '{}': topic '{}'", cfg.name(), cfg.topics[0]))?;
        }
        let tracker = Arc::new(DeliveryTracker::default());
        let n = cfg.sink_parallelism.max(1);
        let mut writers = Vec::with_capacity(n);
        for index in 0..n {
            let (producer, txn) = create_producer(&cfg, &tracker, index, n)?;
            let buffer = if cfg.upsert && cfg.buffer_max_rows > 0 { Some(SharedBuffer::default()) } else { None };
            writers.push(Writer { producer: Arc::new(producer), buffer, flusher: None, txn, rows: 0 });
        }
        Ok(KafkaSink {
            topic: cfg.topics[0].clone(),
            cfg,
            writers,
            tracker,
            key_encoder,
            value_encoder,
            changelog_value,
            meta_columns,
            partitions: None,
            round_robin: 0,
            next_writer: 0,
            key_buf: Vec::with_capacity(64),
            value_buf: Vec::with_capacity(256),
        })
    }

    /// The delivery counters of all writers together (for benchmarks and tests).
    pub fn tracker(&self) -> Arc<DeliveryTracker> {
        self.tracker.clone()
    }

    /// How many writers (producers) the sink runs: `sink.parallelism`.
    pub fn writers(&self) -> usize {
        self.writers.len()
    }

    /// Rows routed to each writer so far.
    pub fn rows_per_writer(&self) -> Vec<u64> {
        self.writers.iter().map(|w| w.rows).collect()
    }

    /// Messages produced by any writer and not yet acknowledged by the brokers.
    pub fn in_flight(&self) -> i64 {
        self.writers.iter().map(|w| w.producer.in_flight_count() as i64).sum()
    }

    fn ctx(&self) -> String {
        format!("table '{}': topic '{}'", self.cfg.name(), self.topic)
    }

    fn producer(&self) -> Arc<KProducer> {
        self.writers[0].producer.clone()
    }

    /// Checks the topic exists (waiting a little for brokers that create topics on demand) and
    /// learns its partition count; retries with backoff while the brokers cannot be reached.
    async fn prepare(&mut self) -> Result<()> {
        if self.partitions.is_some() {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(100);
        let mut missing_tries = 0;
        loop {
            let topic = self.topic.clone();
            let md = blocking(self.producer(), move |p| {
                p.client().fetch_metadata(Some(&topic), Duration::from_secs(10)).map(|m| {
                    m.topics().iter().find(|t| t.name() == topic).map(|t| (t.error().is_some(), t.partitions().len()))
                })
            })
            .await?;
            match md {
                Ok(Some((false, n))) if n > 0 => {
                    self.partitions = Some(n as i32);
                    break;
                }
                Ok(_) => {
                    missing_tries += 1;
                    if missing_tries > 10 {
                        return Err(RsqlError::connector(
                            self.ctx(),
                            format!(
                                "the topic does not exist on {} and the broker did not create it; create it first",
                                self.cfg.servers()
                            ),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!(table = %self.cfg.name(), servers = %self.cfg.servers(), "cannot fetch metadata of topic '{}': {e}; retrying in {:?}", self.topic, backoff);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.init_transactions().await
    }

    /// For exactly-once: registers each writer's transactional id (fencing an earlier run's
    /// producer).
    async fn init_transactions(&mut self) -> Result<()> {
        for i in 0..self.writers.len() {
            if self.writers[i].txn != Txn::Uninitialized {
                continue;
            }
            let r = blocking(self.writers[i].producer.clone(), |p| p.init_transactions(Duration::from_secs(30))).await?;
            r.map_err(|e| {
                RsqlError::connector(
                    self.ctx(),
                    format!(
                        "'sink.delivery-guarantee' = 'exactly-once' needs Kafka transactions, and the broker at {} refused them: {e}; \
                         use 'sink.delivery-guarantee' = 'at-least-once'",
                        self.cfg.servers()
                    ),
                )
            })?;
            self.writers[i].txn = Txn::Idle;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<()> {
        let ctx = self.ctx();
        for w in &mut self.writers {
            if w.txn == Txn::Idle {
                w.producer.begin_transaction().map_err(|e| RsqlError::connector(&ctx, format!("cannot begin a transaction: {e}")))?;
                w.txn = Txn::Open;
            }
        }
        Ok(())
    }

    /// The explicit partition of the next message; `None` lets librdkafka hash the key (or pick
    /// one when there is no key).
    fn partition_for(&mut self) -> Option<i32> {
        match self.cfg.partitioner {
            Partitioner::Default => None,
            Partitioner::Fixed => Some(0),
            Partitioner::RoundRobin => {
                let n = self.partitions.unwrap_or(1).max(1);
                self.round_robin = (self.round_robin + 1) % n;
                Some(self.round_robin)
            }
        }
    }

    /// The writer of the current message: by key hash when it has a key (so each key's changes
    /// stay in order), else round-robin.
    fn route(&mut self, has_key: bool) -> usize {
        let n = self.writers.len();
        if n == 1 {
            0
        } else if has_key {
            (key_hash(&self.key_buf) % n as u64) as usize
        } else {
            self.next_writer = (self.next_writer + 1) % n;
            self.next_writer
        }
    }

    /// Starts the task that writes writer `w`'s buffer out once `sink.buffer-flush.interval` has
    /// passed.
    fn start_flusher(&mut self, w: usize) {
        let Some(interval) = self.cfg.buffer_interval else {
            return;
        };
        let topic = self.topic.clone();
        let tracker = self.tracker.clone();
        let writer = &mut self.writers[w];
        let Some(buf) = writer.buffer.clone() else {
            return;
        };
        // In a transaction the buffer is written at max-rows and at every flush (which commits);
        // a timer writing between a commit and the next write would be outside any transaction.
        if writer.flusher.is_some() || writer.txn != Txn::Off {
            return;
        }
        let producer = writer.producer.clone();
        let tick = (interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        writer.flusher = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let mut g = buf.lock().await;
                if g.started.map(|s| s.elapsed() >= interval).unwrap_or(false) {
                    if let Err(e) = drain(&producer, &topic, &mut g).await {
                        tracker.record_failure(format!("cannot produce a buffered message: {e}"));
                    }
                }
            }
        }));
    }

    async fn flush_buffers(&mut self) -> Result<()> {
        for w in &self.writers {
            if let Some(buf) = &w.buffer {
                let mut g = buf.lock().await;
                drain(&w.producer, &self.topic, &mut g)
                    .await
                    .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot produce a message: {e}")))?;
            }
        }
        Ok(())
    }

    fn encode_key(&mut self, batch: &RecordBatch, row: usize, kind: RowKind) -> Result<bool> {
        self.key_buf.clear();
        match self.key_encoder.as_mut() {
            Some(e) => e.encode(batch, row, kind, &mut self.key_buf).map(|_| true),
            None => Ok(false),
        }
    }

    /// Encodes and routes one row: into its writer's upsert buffer, or straight to its producer.
    async fn write_row(&mut self, data: &RecordBatch, row: usize, kind: RowKind) -> Result<()> {
        let has_key = self.encode_key(data, row, kind)?;
        let has_value = if self.cfg.upsert && kind == RowKind::Delete {
            false
        } else {
            self.value_buf.clear();
            self.value_encoder.encode(data, row, kind, &mut self.value_buf)?
        };
        let meta = if self.meta_columns.any() {
            self.meta_columns.read(data, row).map_err(|e| RsqlError::connector(self.ctx(), e))?
        } else {
            RecordMeta::default()
        };
        let w = self.route(has_key);
        self.writers[w].rows += 1;
        if let Some(buf) = self.writers[w].buffer.clone() {
            self.start_flusher(w);
            let mut g = buf.lock().await;
            g.map.insert(self.key_buf.clone(), (has_value.then(|| self.value_buf.clone()), meta));
            g.started.get_or_insert_with(Instant::now);
            if g.map.len() >= self.cfg.buffer_max_rows {
                drain(&self.writers[w].producer, &self.topic, &mut g)
                    .await
                    .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot produce a message: {e}")))?;
            }
            return Ok(());
        }
        let partition = self.partition_for();
        let key = has_key.then_some(self.key_buf.as_slice());
        let value = has_value.then_some(self.value_buf.as_slice());
        produce(&self.writers[w].producer, &self.topic, key, value, partition, &meta)
            .await
            .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot produce a message: {e}")))
    }

    fn delivery_error(&self) -> Result<()> {
        if let Some((fails, first)) = self.tracker.take_error() {
            return Err(RsqlError::connector(self.ctx(), format!("{fails} message(s) could not be delivered: {first}")));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.prepare().await?;
        self.begin()?;
        let data = batch.data;
        for (row, &kind) in batch.kinds.iter().enumerate() {
            if self.cfg.upsert {
                if kind == RowKind::UpdateBefore {
                    continue;
                }
            } else if kind != RowKind::Insert && !self.changelog_value {
                return Err(RsqlError::execution(format!(
                    "table '{}': the kafka sink got a {kind} row but format '{}' writes only inserts",
                    self.cfg.name(),
                    self.cfg.value_format
                )));
            }
            self.write_row(&data, row, kind).await?;
        }
        self.delivery_error()
    }

    /// Writes every writer's buffer, then waits for all writers together: each commits its
    /// transaction (exactly-once) or waits until the brokers acknowledged all its messages.
    async fn flush(&mut self) -> Result<()> {
        self.flush_buffers().await?;
        let waits = self.writers.iter().map(|w| {
            let commit = w.txn == Txn::Open;
            blocking(w.producer.clone(), move |p| {
                if commit {
                    p.commit_transaction(Duration::from_secs(120))
                } else {
                    p.flush(Duration::from_secs(600))
                }
            })
        });
        let results = futures::future::join_all(waits).await;
        let ctx = self.ctx();
        let servers = self.cfg.servers().to_string();
        for (w, r) in self.writers.iter_mut().zip(results) {
            let committing = w.txn == Txn::Open;
            match r? {
                Ok(()) if committing => w.txn = Txn::Idle,
                Ok(()) => {}
                Err(e) if committing => {
                    return Err(RsqlError::connector(
                        &ctx,
                        format!(
                            "cannot commit the transaction: {e}; 'sink.delivery-guarantee' = 'exactly-once' needs Kafka transactions \
                             from the broker at {servers}; use 'sink.delivery-guarantee' = 'at-least-once' where the broker has none"
                        ),
                    ))
                }
                Err(e) => return Err(RsqlError::connector(&ctx, format!("messages were not acknowledged in time: {e}"))),
            }
        }
        self.delivery_error()
    }

    async fn snapshot(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.flush().await?;
        if !self.cfg.upsert || self.cfg.delivery == DeliveryGuarantee::ExactlyOnce {
            return Ok(Vec::new());
        }
        self.prepare().await?;
        let n = self.partitions.unwrap_or(0);
        let topic = self.topic.clone();
        let ends = blocking(self.producer(), move |p| {
            (0..n)
                .map(|part| p.client().fetch_watermarks(&topic, part, Duration::from_secs(30)).map(|(_, high)| (part, high)))
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .await?
        .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot read the partition offsets for the checkpoint: {e}")))?;
        Ok(SinkOffsets { topic: self.topic.clone(), ends }.encode())
    }

    async fn open(&mut self, _checkpointing: bool, restored: Option<&[u8]>) -> Result<()> {
        self.init_transactions().await?;
        let Some(state) = restored.filter(|s| !s.is_empty()) else {
            return Ok(());
        };
        if !self.cfg.upsert || self.cfg.delivery == DeliveryGuarantee::ExactlyOnce {
            return Ok(());
        }
        let saved = SinkOffsets::decode(state).map_err(|e| RsqlError::connector(self.ctx(), e.to_string()))?;
        if saved.topic != self.topic {
            tracing::warn!(table = %self.cfg.name(), "the checkpoint was taken while writing topic '{}'; nothing written after it is undone", saved.topic);
            return Ok(());
        }
        let mut undone = 0usize;
        let producer = self.producer();
        for (partition, end) in saved.ends {
            let (config, ctx, topic) = (self.cfg.client_config(), self.ctx(), self.topic.clone());
            let restores = tokio::task::spawn_blocking(move || rollback::partition_restores(&config, &ctx, &topic, partition, end))
                .await
                .map_err(|e| RsqlError::execution(format!("kafka consumer task failed: {e}")))??;
            for (key, value) in &restores {
                produce(&producer, &self.topic, Some(key), value.as_deref(), Some(partition), &RecordMeta::default())
                    .await
                    .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot produce a message: {e}")))?;
            }
            if !restores.is_empty() {
                tracing::info!(
                    table = %self.cfg.name(),
                    topic = %self.topic,
                    partition,
                    "rewrote {} key(s) written after the checkpoint (from offset {end}) to their values at the checkpoint",
                    restores.len()
                );
            }
            undone += restores.len();
        }
        if undone > 0 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        let r = self.flush().await;
        self.stop_flushers();
        r
    }
}

impl KafkaSink {
    fn stop_flushers(&mut self) {
        for w in &mut self.writers {
            if let Some(f) = w.flusher.take() {
                f.abort();
            }
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.stop_flushers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;
    use rsql_common::builder::{Datum, RowsBuilder};

    #[test]
    fn metadata_values_become_record_timestamp_and_headers() {
        let cols: Vec<(String, rsql_common::types::LogicalType)> = crate::writable_metadata_columns()
            .into_iter()
            .map(|(k, t)| (k.to_string(), t))
            .collect();
        let mut b = RowsBuilder::new(&cols, 2).unwrap();
        let headers = Datum::map(vec![(Datum::Str("a".into()), Datum::Bytes(b"1".to_vec())), (Datum::Str("b".into()), Datum::Null)]);
        b.append_row(vec![headers, Datum::Timestamp(1_700_000_000_123_456)]).unwrap();
        b.append_row(vec![Datum::Null, Datum::Null]).unwrap();
        let batch = b.finish().unwrap();
        let m = MetaColumns { timestamp: Some(1), headers: Some(0) };
        let first = m.read(&batch, 0).unwrap();
        assert_eq!(first.timestamp, Some(1_700_000_000_123));
        let h = first.headers.unwrap();
        assert_eq!(h.count(), 2);
        assert_eq!((h.get(0).key, h.get(0).value), ("a", Some(&b"1"[..])));
        assert_eq!((h.get(1).key, h.get(1).value), ("b", None));
        let second = m.read(&batch, 1).unwrap();
        assert!(second.timestamp.is_none() && second.headers.is_none());
        let wrong = MetaColumns { timestamp: Some(0), headers: None };
        assert!(wrong.read(&batch, 0).err().unwrap_or_default().contains("metadata column 'headers' is Map"));
    }

    #[test]
    fn keys_stay_with_one_writer() {
        assert_eq!(key_hash(br#"{"id":1}"#), key_hash(br#"{"id":1}"#));
        let spread: std::collections::HashSet<u64> = (0..100).map(|i| key_hash(format!("{{\"id\":{i}}}").as_bytes()) % 3).collect();
        assert_eq!(spread.len(), 3);
    }
}
