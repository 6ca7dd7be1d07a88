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
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
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

/// Buffered upserts: key bytes -> the last value (None = tombstone), and when the oldest
/// buffered change arrived.
#[derive(Default)]
struct UpsertBuffer {
    map: HashMap<Vec<u8>, Option<Vec<u8>>>,
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
    for (k, v) in buf.map.drain() {
        produce(producer, topic, Some(&k), v.as_deref(), None).await?;
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

/// The kafka / upsert-kafka sink.
pub struct KafkaSink {
    cfg: KafkaTable,
    topic: String,
    producer: Arc<KProducer>,
    tracker: Arc<DeliveryTracker>,
    key_encoder: Option<Box<dyn RowEncoder>>,
    value_encoder: Box<dyn RowEncoder>,
    changelog_value: bool,
    /// upsert buffering, shared with the task that writes it out when the interval has passed.
    buffer: Option<SharedBuffer>,
    flusher: Option<tokio::task::JoinHandle<()>>,
    partitions: Option<i32>,
    round_robin: i32,
    txn: Txn,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl KafkaSink {
    pub fn new(cfg: KafkaTable, input_mode: &ChangelogMode) -> Result<Self> {
        let ctx = format!("table '{}'", cfg.name());
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
        let key_encoder = match &cfg.key_format {
            Some(f) => Some(formats::create_encoder(f, &cfg.key_columns(), &cfg.key_fields, &cfg.table, "key.")?),
            None => None,
        };
        let value_encoder =
            formats::create_encoder(&cfg.value_format, &cfg.value_columns(), &cfg.value_fields, &cfg.table, cfg.value_prefix)?;
        let tracker = Arc::new(DeliveryTracker::default());
        let mut config = cfg.client_config();
        if !cfg.properties.contains_key("partitioner") {
            config.set("partitioner", "murmur2_random");
        }
        if !cfg.properties.contains_key("client.id") {
            config.set("client.id", format!("rsql-{}", cfg.name()));
        }
        let txn = if cfg.delivery == DeliveryGuarantee::ExactlyOnce {
            check_transactions(&cfg, &format!("table '{}': topic '{}'", cfg.name(), cfg.topics[0]))?;
            let prefix = cfg.transactional_id_prefix.clone().unwrap_or_default();
            config.set("transactional.id", format!("{prefix}-{}-0", cfg.name()));
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
        let buffer = if cfg.upsert && cfg.buffer_max_rows > 0 { Some(SharedBuffer::default()) } else { None };
        Ok(KafkaSink {
            topic: cfg.topics[0].clone(),
            cfg,
            producer: Arc::new(producer),
            tracker,
            key_encoder,
            value_encoder,
            changelog_value,
            buffer,
            flusher: None,
            partitions: None,
            round_robin: 0,
            txn,
            key_buf: Vec::with_capacity(64),
            value_buf: Vec::with_capacity(256),
        })
    }

    /// The delivery counters (for benchmarks and tests).
    pub fn tracker(&self) -> Arc<DeliveryTracker> {
        self.tracker.clone()
    }

    fn ctx(&self) -> String {
        format!("table '{}': topic '{}'", self.cfg.name(), self.topic)
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
            let md = blocking(self.producer.clone(), move |p| {
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

    /// For exactly-once: registers the transactional id (fencing an earlier run's producer).
    async fn init_transactions(&mut self) -> Result<()> {
        if self.txn != Txn::Uninitialized {
            return Ok(());
        }
        let r = blocking(self.producer.clone(), |p| p.init_transactions(Duration::from_secs(30))).await?;
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
        self.txn = Txn::Idle;
        Ok(())
    }

    fn begin(&mut self) -> Result<()> {
        if self.txn == Txn::Idle {
            self.producer
                .begin_transaction()
                .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot begin a transaction: {e}")))?;
            self.txn = Txn::Open;
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

    /// Produces one message, waiting while librdkafka's queue is full.
    async fn send(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<()> {
        let partition = self.partition_for();
        produce(&self.producer, &self.topic, key, value, partition)
            .await
            .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot produce a message: {e}")))
    }

    /// Starts the task that writes the buffer out once `sink.buffer-flush.interval` has passed.
    fn start_flusher(&mut self) {
        let (Some(buf), Some(interval)) = (self.buffer.clone(), self.cfg.buffer_interval) else {
            return;
        };
        // In a transaction the buffer is written at max-rows and at every flush (which commits);
        // a timer writing between a commit and the next write would be outside any transaction.
        if self.flusher.is_some() || self.txn != Txn::Off {
            return;
        }
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let tracker = self.tracker.clone();
        let tick = (interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.flusher = Some(tokio::spawn(async move {
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

    async fn flush_buffer(&mut self) -> Result<()> {
        if let Some(buf) = self.buffer.clone() {
            let mut g = buf.lock().await;
            drain(&self.producer, &self.topic, &mut g)
                .await
                .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot produce a message: {e}")))?;
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
                self.encode_key(&data, row, kind)?;
                let has_value = if kind == RowKind::Delete {
                    false
                } else {
                    self.value_buf.clear();
                    self.value_encoder.encode(&data, row, kind, &mut self.value_buf)?
                };
                if let Some(buf) = self.buffer.clone() {
                    self.start_flusher();
                    let mut g = buf.lock().await;
                    g.map.insert(self.key_buf.clone(), if has_value { Some(self.value_buf.clone()) } else { None });
                    g.started.get_or_insert_with(Instant::now);
                    if g.map.len() >= self.cfg.buffer_max_rows {
                        drain(&self.producer, &self.topic, &mut g)
                            .await
                            .map_err(|e| RsqlError::connector(self.ctx(), format!("cannot produce a message: {e}")))?;
                    }
                } else {
                    let key = std::mem::take(&mut self.key_buf);
                    let value = std::mem::take(&mut self.value_buf);
                    let r = self.send(Some(&key), if has_value { Some(&value) } else { None }).await;
                    self.key_buf = key;
                    self.value_buf = value;
                    r?;
                }
            } else {
                if kind != RowKind::Insert && !self.changelog_value {
                    return Err(RsqlError::execution(format!(
                        "table '{}': the kafka sink got a {kind} row but format '{}' writes only inserts",
                        self.cfg.name(),
                        self.cfg.value_format
                    )));
                }
                let has_key = self.encode_key(&data, row, kind)?;
                self.value_buf.clear();
                let has_value = self.value_encoder.encode(&data, row, kind, &mut self.value_buf)?;
                let key = std::mem::take(&mut self.key_buf);
                let value = std::mem::take(&mut self.value_buf);
                let r = self.send(if has_key { Some(&key) } else { None }, if has_value { Some(&value) } else { None }).await;
                self.key_buf = key;
                self.value_buf = value;
                r?;
            }
        }
        if let Some((fails, first)) = self.tracker.take_error() {
            return Err(RsqlError::connector(self.ctx(), format!("{fails} message(s) could not be delivered: {first}")));
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.flush_buffer().await?;
        if self.txn == Txn::Open {
            let r = blocking(self.producer.clone(), |p| p.commit_transaction(Duration::from_secs(120))).await?;
            r.map_err(|e| {
                RsqlError::connector(
                    self.ctx(),
                    format!(
                        "cannot commit the transaction: {e}; 'sink.delivery-guarantee' = 'exactly-once' needs Kafka transactions \
                         from the broker at {}; use 'sink.delivery-guarantee' = 'at-least-once' where the broker has none",
                        self.cfg.servers()
                    ),
                )
            })?;
            self.txn = Txn::Idle;
        } else {
            let r = blocking(self.producer.clone(), |p| p.flush(Duration::from_secs(600))).await?;
            r.map_err(|e| RsqlError::connector(self.ctx(), format!("messages were not acknowledged in time: {e}")))?;
        }
        if let Some((fails, first)) = self.tracker.take_error() {
            return Err(RsqlError::connector(self.ctx(), format!("{fails} message(s) could not be delivered: {first}")));
        }
        Ok(())
    }

    async fn snapshot(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.flush().await?;
        if !self.cfg.upsert || self.txn != Txn::Off {
            return Ok(Vec::new());
        }
        self.prepare().await?;
        let n = self.partitions.unwrap_or(0);
        let topic = self.topic.clone();
        let ends = blocking(self.producer.clone(), move |p| {
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
        if !self.cfg.upsert || self.txn != Txn::Off {
            return Ok(());
        }
        let saved = SinkOffsets::decode(state).map_err(|e| RsqlError::connector(self.ctx(), e.to_string()))?;
        if saved.topic != self.topic {
            tracing::warn!(table = %self.cfg.name(), "the checkpoint was taken while writing topic '{}'; nothing written after it is undone", saved.topic);
            return Ok(());
        }
        let mut undone = 0usize;
        for (partition, end) in saved.ends {
            let (config, ctx, topic) = (self.cfg.client_config(), self.ctx(), self.topic.clone());
            let restores = tokio::task::spawn_blocking(move || rollback::partition_restores(&config, &ctx, &topic, partition, end))
                .await
                .map_err(|e| RsqlError::execution(format!("kafka consumer task failed: {e}")))??;
            for (key, value) in &restores {
                produce(&self.producer, &self.topic, Some(key), value.as_deref(), Some(partition))
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
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
        r
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
    }
}
