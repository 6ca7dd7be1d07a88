//! The kafka / upsert-kafka source: resolves the partitions of its topics, picks each one's start
//! (and end, when bounded) offset, assigns them to one consumer and decodes messages into Arrow
//! batches with their metadata columns.
//!
//! Bounded reads (`scan.bounded.mode`) end each partition at an offset fixed when the source
//! starts (the high watermark for `latest-offset`) and return once every partition got there.
//! Offsets of rows handed to the engine are committed to `properties.group.id` (when set) about
//! every second and when the source ends, so a restart with `group-offsets` resumes after them.
//! Brokers that cannot be reached are retried with backoff and logged; a topic that does not exist
//! is an error unless `properties.allow.auto.create.topics` is `true`. An unbounded kafka source
//! looks for new partitions (and, with `topic-pattern`, new topics) every
//! `scan.topic-partition-discovery.interval` (5 minutes by default, `0` turns it off) and reads
//! them from their earliest offset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, Timestamp, TopicPartitionList};
use rsql_common::builder::Datum;
use rsql_common::types::FlinkType;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_connectors::formats::{self, DecodedRows, RowDecoder};
use rsql_runtime::connector::{ProducedColumn, Source, SourceContext};
use rsql_runtime::source_status::{messages_behind, SourceStatus};
use tokio::sync::watch;

use crate::config::{BoundedMode, KafkaTable, StartupMode};

/// Timeout of one metadata / offsets request to the brokers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the consumer lag (messages behind the high watermarks) is measured.
const LAG_EVERY: Duration = Duration::from_secs(3);

/// Routes librdkafka's log lines and errors to `tracing`.
pub struct LogContext {
    pub table: String,
}

impl ClientContext for LogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_librdkafka(&self.table, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(table = %self.table, "kafka client error (retried by librdkafka): {error}: {reason}");
    }
}

impl ConsumerContext for LogContext {}

type KConsumer = StreamConsumer<LogContext>;

#[derive(Clone, Copy, Debug)]
enum Meta {
    Topic,
    Partition,
    Offset,
    Timestamp,
    TimestampType,
    LeaderEpoch,
    Headers,
}

#[derive(Clone, Copy, Debug)]
enum Out {
    /// A physical column: its position in the decoded value and/or key.
    Physical { value: Option<usize>, key: Option<usize> },
    Meta(Meta),
}

/// The kafka / upsert-kafka source.
pub struct KafkaSource {
    cfg: KafkaTable,
    decoding: Decoding,
    /// Next offset per partition of everything decoded so far (the checkpoint position).
    read_to: BTreeMap<(String, i32), i64>,
    /// Offsets to resume from, taken from a checkpoint.
    resume: Option<BTreeMap<(String, i32), i64>>,
    status: Arc<SourceStatus>,
}

fn encode_offsets(m: &BTreeMap<(String, i32), i64>) -> Vec<u8> {
    let v: Vec<(&str, i32, i64)> = m.iter().map(|((t, p), o)| (t.as_str(), *p, *o)).collect();
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Turns messages into rows of the produced columns.
struct Decoding {
    upsert: bool,
    key_decoder: Option<Box<dyn RowDecoder>>,
    value_decoder: Box<dyn RowDecoder>,
    outputs: Vec<Out>,
    /// For each field of the value format: the produced column it is decoded into, if any.
    value_targets: Vec<Option<usize>>,
    /// The produced columns.
    rows: DecodedRows,
    /// Whether a `headers` column is produced.
    want_headers: bool,
    key_buf: Vec<Datum>,
}

impl KafkaSource {
    pub fn new(cfg: KafkaTable, columns: &[ProducedColumn]) -> Result<Self> {
        let key_cols = cfg.key_columns();
        let value_cols = cfg.value_columns();
        let key_decoder = match &cfg.key_format {
            Some(f) => Some(formats::create_decoder(f, &key_cols, &cfg.table, "key.")?),
            None => None,
        };
        let value_decoder = formats::create_decoder(&cfg.value_format, &value_cols, &cfg.table, cfg.value_prefix)?;
        let mut outputs = Vec::with_capacity(columns.len());
        let mut built = Vec::with_capacity(columns.len());
        for c in columns {
            let mut ty = c.ty().clone();
            let out = match c {
                ProducedColumn::Physical { name, .. } => {
                    let p = cfg.physical.iter().position(|(n, _)| n == name).ok_or_else(|| {
                        RsqlError::execution(format!("table '{}' has no physical column '{name}'", cfg.name()))
                    })?;
                    let key = cfg.key_fields.iter().position(|&k| k == p);
                    let value = cfg.value_fields.iter().position(|&v| v == p);
                    if cfg.upsert && key.is_none() {
                        // A tombstone carries only the key: the other columns are NULL.
                        ty = ty.with_nullable(true);
                    }
                    Out::Physical { value, key }
                }
                ProducedColumn::Metadata { key, name, .. } => Out::Meta(match key.as_str() {
                    "topic" => Meta::Topic,
                    "partition" => Meta::Partition,
                    "offset" => Meta::Offset,
                    "timestamp" => Meta::Timestamp,
                    "timestamp-type" => Meta::TimestampType,
                    "leader-epoch" => Meta::LeaderEpoch,
                    "headers" => {
                        if !matches!(ty.ty, FlinkType::Map(..)) {
                            return Err(RsqlError::validation(
                                format!("table '{}': metadata column '{name}' (headers) must be MAP<STRING, BYTES>", cfg.name()),
                                None,
                            ));
                        }
                        Meta::Headers
                    }
                    other => {
                        return Err(RsqlError::validation(
                            format!(
                                "table '{}': the kafka connector has no metadata key '{other}'; available: {}",
                                cfg.name(),
                                crate::metadata_columns().iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                            ),
                            None,
                        ))
                    }
                }),
            };
            built.push((c.name().to_string(), ty));
            outputs.push(out);
        }
        let want_headers = outputs.iter().any(|o| matches!(o, Out::Meta(Meta::Headers)));
        let value_targets = (0..value_cols.len())
            .map(|i| outputs.iter().position(|o| matches!(o, Out::Physical { value: Some(v), .. } if *v == i)))
            .collect();
        let decoding = Decoding {
            want_headers,
            upsert: cfg.upsert,
            key_decoder,
            value_decoder,
            outputs,
            value_targets,
            rows: DecodedRows::new(&built, 1024)?,
            key_buf: Vec::new(),
        };
        Ok(KafkaSource { cfg, decoding, read_to: BTreeMap::new(), resume: None, status: Arc::new(SourceStatus::default()) })
    }
}

fn timestamp_parts(ts: Timestamp) -> (i64, &'static str) {
    match ts {
        Timestamp::NotAvailable => (-1, "NoTimestampType"),
        Timestamp::CreateTime(t) => (t, "CreateTime"),
        Timestamp::LogAppendTime(t) => (t, "LogAppendTime"),
    }
}

impl Decoding {
    fn pending(&self) -> usize {
        self.rows.len()
    }

    /// Decodes one message into rows.
    fn message(&mut self, msg: &BorrowedMessage<'_>) -> Result<()> {
        let (ts, ts_type) = timestamp_parts(msg.timestamp());
        // SAFETY: the pointer is the live message `msg` borrows; librdkafka only reads it.
        let epoch = unsafe { rdkafka::bindings::rd_kafka_message_leader_epoch(msg.ptr()) };
        let headers = if self.want_headers {
            let entries = msg.headers().map(|h| {
                h.iter()
                    .map(|x| (Datum::Str(x.key.to_string()), x.value.map(|v| Datum::Bytes(v.to_vec())).unwrap_or(Datum::Null)))
                    .collect()
            });
            Datum::map(entries.unwrap_or_default())
        } else {
            Datum::Null
        };

        // Key.
        self.key_buf.clear();
        if let Some(kd) = self.key_decoder.as_mut() {
            let mut got: Option<Vec<Datum>> = None;
            if let Some(k) = msg.key() {
                kd.decode_with(k, &mut |_, vals| {
                    if got.is_none() {
                        got = Some(vals);
                    }
                    Ok(())
                })?;
            }
            if let Some(vals) = got {
                self.key_buf = vals;
            }
        }
        let key_vals = std::mem::take(&mut self.key_buf);
        let topic = msg.topic();
        let partition = msg.partition();
        let offset = msg.offset();
        let outputs = &self.outputs;
        let targets = &self.value_targets;
        let rows = &mut self.rows;
        let upsert = self.upsert;
        // The value decoder fills the columns taken from the value (`targets`); this appends the
        // others (key fields, metadata, NULLs) and commits the row.
        let complete = |out: &mut DecodedRows, kind: RowKind, with_value: bool| -> Result<()> {
            let kind = if upsert && kind == RowKind::Insert { RowKind::UpdateAfter } else { kind };
            for (c, o) in outputs.iter().enumerate() {
                let d = match o {
                    Out::Physical { value: Some(_), .. } if with_value => continue,
                    Out::Physical { key: Some(k), .. } => key_vals.get(*k).cloned().unwrap_or(Datum::Null),
                    Out::Physical { key: None, .. } => Datum::Null,
                    Out::Meta(Meta::Topic) => Datum::Str(topic.to_string()),
                    Out::Meta(Meta::Partition) => Datum::Int(partition as i64),
                    Out::Meta(Meta::Offset) => Datum::Int(offset),
                    Out::Meta(Meta::Timestamp) => Datum::Timestamp(ts.saturating_mul(1000)),
                    Out::Meta(Meta::TimestampType) => Datum::Str(ts_type.to_string()),
                    Out::Meta(Meta::LeaderEpoch) => if epoch >= 0 { Datum::Int(epoch as i64) } else { Datum::Null },
                    Out::Meta(Meta::Headers) => headers.clone(),
                };
                out.column(c).append(d)?;
            }
            out.commit(kind)
        };
        let result = match msg.payload() {
            None if upsert => {
                // A tombstone: the key only.
                let r = complete(rows, RowKind::Delete, false);
                if r.is_err() {
                    rows.rollback()?;
                }
                r
            }
            None => self
                .value_decoder
                .decode_null(&mut |k, v| formats::append_values(rows, targets, v, k, &mut |out, kind| complete(out, kind, true))),
            Some(p) => self.value_decoder.decode_columns(p, targets, rows, &mut |out, kind| complete(out, kind, true)),
        };
        self.key_buf = key_vals;
        result
    }

    /// The rows decoded so far as a batch of the produced columns.
    fn finish(&mut self) -> Result<ChangeBatch> {
        self.rows.finish()
    }
}

async fn blocking<T: Send + 'static>(
    consumer: &Arc<KConsumer>,
    f: impl FnOnce(&KConsumer) -> T + Send + 'static,
) -> Result<T> {
    let c = consumer.clone();
    tokio::task::spawn_blocking(move || f(&c)).await.map_err(|e| RsqlError::execution(format!("kafka client task failed: {e}")))
}

/// Messages between each assigned partition's next offset to read and its high watermark,
/// summed; a partition that has not handed on a message yet counts from where it starts.
/// None when the broker does not answer.
fn measure_lag(c: &KConsumer, start: &BTreeMap<(String, i32), Offset>) -> Option<u64> {
    let positions = c.position().ok()?;
    let mut parts = Vec::with_capacity(positions.count());
    for e in positions.elements() {
        let (low, high) = c.fetch_watermarks(e.topic(), e.partition(), REQUEST_TIMEOUT).ok()?;
        let next = match e.offset() {
            Offset::Offset(n) => n,
            _ => match start.get(&(e.topic().to_string(), e.partition())) {
                Some(Offset::Offset(n)) => *n,
                Some(Offset::End) => high,
                _ => low,
            },
        };
        parts.push((high, next));
    }
    Some(messages_behind(parts))
}

/// Measures the consumer lag every `LAG_EVERY` into `status` while the source runs (aborted when
/// the returned handle is dropped).
fn spawn_lag_meter(consumer: &Arc<KConsumer>, start: BTreeMap<(String, i32), Offset>, status: Arc<SourceStatus>) -> AbortOnDrop {
    let consumer = consumer.clone();
    let task = tokio::spawn(async move {
        let start = Arc::new(start);
        loop {
            let s = start.clone();
            if let Ok(Some(n)) = blocking(&consumer, move |c| measure_lag(c, &s)).await {
                status.set_lag_messages(n);
            }
            tokio::time::sleep(LAG_EVERY).await;
        }
    });
    AbortOnDrop(task)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop) => true,
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ask us to stop any more.
            std::future::pending::<()>().await;
        }
    }
}

fn reset_offset(cfg: &KafkaTable) -> Offset {
    match cfg.properties.get("auto.offset.reset").map(|s| s.to_ascii_lowercase()) {
        Some(s) if s == "latest" || s == "largest" || s == "end" => Offset::End,
        _ => Offset::Beginning,
    }
}

/// Per-partition progress.
struct PartitionState {
    end: Option<i64>,
    done: bool,
    /// Next offset to commit (after the last row handed on).
    next: Option<i64>,
}

impl KafkaSource {
    fn context(&self) -> LogContext {
        LogContext { table: self.cfg.name().to_string() }
    }

    fn consumer(&self) -> Result<KConsumer> {
        let mut c = self.cfg.client_config();
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        if self.cfg.bounded.is_some() {
            c.set("enable.partition.eof", "true");
        }
        if !self.cfg.properties.contains_key("client.id") {
            c.set("client.id", format!("rsql-{}", self.cfg.name()));
        }
        // A broker may hold a fetch for the whole wait even when data is there; a short wait keeps
        // a pipeline that reads its own topics (the seed's DWS over DWD) quick. Tables can override it.
        if !self.cfg.properties.contains_key("fetch.wait.max.ms") {
            c.set("fetch.wait.max.ms", "10");
        }
        if self.cfg.group_id.is_none() {
            // librdkafka wants a group even for assigned partitions; offsets are committed only
            // to a group the table names.
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            c.set("group.id", format!("rsql-{}-{}-{nanos:x}", self.cfg.name(), std::process::id()));
        }
        c.create_with_context(self.context()).map_err(|e| {
            RsqlError::connector(format!("table '{}'", self.cfg.name()), format!("cannot create a kafka consumer: {e}"))
        })
    }

    fn commit(&self, consumer: &KConsumer, states: &mut BTreeMap<(String, i32), PartitionState>, mode: CommitMode) {
        if self.cfg.group_id.is_none() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), s) in states.iter_mut() {
            if let Some(n) = s.next.take() {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(n));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(table = %self.cfg.name(), "cannot commit offsets: {e}");
        }
    }
}

/// The partitions to read, retrying while the brokers cannot be reached. `None` when asked to
/// stop meanwhile.
async fn partitions(cfg: &KafkaTable, consumer: &Arc<KConsumer>, stop: &mut watch::Receiver<bool>) -> Result<Option<Vec<(String, i32)>>> {
    let ctx = format!("table '{}'", cfg.name());
    let auto_create = cfg.properties.get("allow.auto.create.topics").map(|v| v == "true").unwrap_or(false);
    let pattern = match &cfg.topic_pattern {
        Some(p) => Some(regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| RsqlError::connector(&ctx, e))?),
        None => None,
    };
    let mut backoff = Duration::from_millis(100);
    let mut missing_tries = 0;
    loop {
        let topics = cfg.topics.clone();
        let pattern_mode = pattern.is_some();
        let fetch = blocking(consumer, move |c| {
            if pattern_mode {
                c.fetch_metadata(None, REQUEST_TIMEOUT).map(|m| vec![m])
            } else {
                topics.iter().map(|t| c.fetch_metadata(Some(t), REQUEST_TIMEOUT)).collect::<Result<Vec<_>, _>>()
            }
        });
        let md = tokio::select! {
            r = fetch => r?,
            _ = stopped(stop) => return Ok(None),
        };
        match md {
            Err(e) => {
                tracing::warn!(table = %cfg.name(), servers = %cfg.servers(), "cannot fetch metadata of {}: {e}; retrying in {:?}", cfg.describe_topics(), backoff);
                if wait_or_stop(stop, backoff).await {
                    return Ok(None);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Ok(mds) => {
                let mut out = Vec::new();
                let mut missing = Vec::new();
                for md in &mds {
                    for t in md.topics() {
                        if let Some(p) = &pattern {
                            if !p.is_match(t.name()) || t.name().starts_with("__") {
                                continue;
                            }
                        }
                        if t.error().is_some() || t.partitions().is_empty() {
                            missing.push(t.name().to_string());
                            continue;
                        }
                        for p in t.partitions() {
                            out.push((t.name().to_string(), p.id()));
                        }
                    }
                }
                if pattern.is_some() && out.is_empty() {
                    return Err(RsqlError::connector(
                        ctx,
                        format!("no topic on {} matches the pattern '{}'", cfg.servers(), cfg.topic_pattern.clone().unwrap_or_default()),
                    ));
                }
                if !missing.is_empty() {
                    missing_tries += 1;
                    if !auto_create || missing_tries > 20 {
                        return Err(RsqlError::connector(
                            ctx,
                            format!(
                                "topic '{}' does not exist on {}; create it first, or set 'properties.allow.auto.create.topics' = 'true' if the broker creates topics on demand",
                                missing.join("', '"),
                                cfg.servers()
                            ),
                        ));
                    }
                    if wait_or_stop(stop, Duration::from_millis(200)).await {
                        return Ok(None);
                    }
                    continue;
                }
                out.sort();
                return Ok(Some(out));
            }
        }
    }
}

/// Committed offsets of the group for `parts` (None where there is none or no group).
async fn committed(cfg: &KafkaTable, consumer: &Arc<KConsumer>, parts: &[(String, i32)]) -> Result<BTreeMap<(String, i32), i64>> {
    let mut out = BTreeMap::new();
    if cfg.group_id.is_none() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let res = blocking(consumer, move |c| c.committed_offsets(tpl, REQUEST_TIMEOUT)).await?;
    let tpl = res.map_err(|e| {
        RsqlError::connector(format!("table '{}'", cfg.name()), format!("cannot read the committed offsets: {e}"))
    })?;
    for e in tpl.elements() {
        if let Offset::Offset(o) = e.offset() {
            out.insert((e.topic().to_string(), e.partition()), o);
        }
    }
    Ok(out)
}

async fn for_timestamp(cfg: &KafkaTable, consumer: &Arc<KConsumer>, parts: &[(String, i32)], ts: i64) -> Result<BTreeMap<(String, i32), Offset>> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition_offset(t, *p, Offset::Offset(ts)).map_err(|e| RsqlError::execution(e.to_string()))?;
    }
    let res = blocking(consumer, move |c| c.offsets_for_times(tpl, REQUEST_TIMEOUT)).await?;
    let tpl = res.map_err(|e| {
        RsqlError::connector(format!("table '{}'", cfg.name()), format!("cannot look up offsets for timestamp {ts}: {e}"))
    })?;
    Ok(tpl.elements().iter().map(|e| ((e.topic().to_string(), e.partition()), e.offset())).collect())
}

async fn watermarks(cfg: &KafkaTable, consumer: &Arc<KConsumer>, parts: &[(String, i32)]) -> Result<BTreeMap<(String, i32), (i64, i64)>> {
    let parts = parts.to_vec();
    let res = blocking(consumer, move |c| {
        parts
            .iter()
            .map(|(t, p)| c.fetch_watermarks(t, *p, REQUEST_TIMEOUT).map(|w| ((t.clone(), *p), w)))
            .collect::<Result<BTreeMap<_, _>, _>>()
    })
    .await?;
    res.map_err(|e| RsqlError::connector(format!("table '{}'", cfg.name()), format!("cannot read the partitions' offsets: {e}")))
}


#[async_trait]
impl Source for KafkaSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<()> {
        let mut stop = ctx.stop.clone();
        let consumer = Arc::new(self.consumer()?);
        let parts = match partitions(&self.cfg, &consumer, &mut stop).await? {
            Some(p) => p,
            None => return Ok(()),
        };

        // Where each partition starts.
        let committed = match (&self.cfg.startup, &self.cfg.bounded) {
            (StartupMode::GroupOffsets | StartupMode::SpecificOffsets(_), _) | (_, Some(BoundedMode::GroupOffsets)) => {
                committed(&self.cfg, &consumer, &parts).await?
            }
            _ => BTreeMap::new(),
        };
        let mut start: BTreeMap<(String, i32), Offset> = BTreeMap::new();
        match &self.cfg.startup {
            StartupMode::Earliest => parts.iter().for_each(|tp| {
                start.insert(tp.clone(), Offset::Beginning);
            }),
            StartupMode::Latest => parts.iter().for_each(|tp| {
                start.insert(tp.clone(), Offset::End);
            }),
            StartupMode::GroupOffsets => parts.iter().for_each(|tp| {
                start.insert(tp.clone(), committed.get(tp).map(|o| Offset::Offset(*o)).unwrap_or_else(|| reset_offset(&self.cfg)));
            }),
            StartupMode::Timestamp(ts) => {
                for (tp, o) in for_timestamp(&self.cfg, &consumer, &parts, *ts).await? {
                    start.insert(tp, match o {
                        Offset::Offset(n) if n >= 0 => Offset::Offset(n),
                        _ => Offset::End,
                    });
                }
            }
            StartupMode::SpecificOffsets(m) => parts.iter().for_each(|tp| {
                let o = match m.get(&tp.1) {
                    Some(o) if self.cfg.topics.len() <= 1 => Offset::Offset(*o),
                    _ => committed.get(tp).map(|o| Offset::Offset(*o)).unwrap_or(Offset::Beginning),
                };
                start.insert(tp.clone(), o);
            }),
        }

        // A checkpoint's offsets win over the startup mode for the partitions it has read.
        if let Some(resume) = self.resume.take() {
            for (tp, o) in resume {
                if parts.contains(&tp) {
                    start.insert(tp.clone(), Offset::Offset(o));
                    self.read_to.insert(tp, o);
                }
            }
        }

        // Where each partition ends, when bounded.
        let mut states: BTreeMap<(String, i32), PartitionState> =
            parts.iter().map(|tp| (tp.clone(), PartitionState { end: None, done: false, next: None })).collect();
        if let Some(b) = self.cfg.bounded.clone() {
            let marks = watermarks(&self.cfg, &consumer, &parts).await?;
            let by_ts = match &b {
                BoundedMode::Timestamp(ts) => for_timestamp(&self.cfg, &consumer, &parts, *ts).await?,
                _ => BTreeMap::new(),
            };
            for tp in &parts {
                let (low, high) = marks.get(tp).copied().unwrap_or((0, 0));
                let end = match &b {
                    BoundedMode::Latest => high,
                    BoundedMode::GroupOffsets => committed.get(tp).copied().unwrap_or(high),
                    BoundedMode::Timestamp(_) => match by_ts.get(tp) {
                        Some(Offset::Offset(n)) if *n >= 0 => *n,
                        _ => high,
                    },
                    BoundedMode::SpecificOffsets(m) => m.get(&tp.1).copied().unwrap_or(high),
                };
                let first = match start.get(tp) {
                    Some(Offset::Offset(n)) => *n,
                    Some(Offset::End) => high,
                    _ => low,
                };
                if let Some(s) = states.get_mut(tp) {
                    s.end = Some(end);
                    s.done = first >= end || high <= low;
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &parts {
            if states.get(tp).map(|s| s.done).unwrap_or(false) {
                continue;
            }
            let o = start.get(tp).copied().unwrap_or(Offset::Beginning);
            tpl.add_partition_offset(&tp.0, tp.1, o).map_err(|e| RsqlError::execution(e.to_string()))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        consumer.assign(&tpl).map_err(|e| {
            RsqlError::connector(format!("table '{}'", self.cfg.name()), format!("cannot assign partitions of {}: {e}", self.cfg.describe_topics()))
        })?;
        let _lag_meter = spawn_lag_meter(&consumer, start.clone(), self.status.clone());

        let mut next_discovery = self.cfg.discovery_interval.filter(|_| !bounded_mode(&self.cfg)).map(|d| Instant::now() + d);
        let batch_size = ctx.batch_size.max(1);
        let mut first_row_at: Option<Instant> = None;
        let mut last_commit = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let table = self.cfg.name().to_string();
        let mut skipped_reported = 0u64;
        let bounded = self.cfg.bounded.is_some();

        let result: Result<()> = 'run: loop {
            if bounded && states.values().all(|s| s.done) {
                break 'run Ok(());
            }
            if let (Some(at), Some(every)) = (next_discovery, self.cfg.discovery_interval) {
                if Instant::now() >= at {
                    next_discovery = Some(Instant::now() + every);
                    if let Ok(Some(found)) = partitions(&self.cfg, &consumer, &mut stop).await {
                        let mut added = TopicPartitionList::new();
                        for tp in found {
                            if let std::collections::btree_map::Entry::Vacant(e) = states.entry(tp.clone()) {
                                e.insert(PartitionState { end: None, done: false, next: None });
                                let _ = added.add_partition_offset(&tp.0, tp.1, Offset::Beginning);
                            }
                        }
                        if added.count() > 0 {
                            tracing::info!(table = %table, "reading {} new partition(s)", added.count());
                            if let Err(e) = consumer.incremental_assign(&added) {
                                tracing::warn!(table = %table, "cannot assign new partitions: {e}");
                            }
                        }
                    }
                }
            }
            let wake = if first_row_at.is_some() { Some(Instant::now()) } else { next_discovery };
            let event = tokio::select! {
                biased;
                _ = stopped(&mut stop) => Event::Stop,
                m = consumer.recv() => {
                    match m {
                        Ok(msg) => {
                            let tp = (msg.topic().to_string(), msg.partition());
                            let offset = msg.offset();
                            let state = states.get_mut(&tp);
                            let skip = match &state {
                                Some(s) => s.done || s.end.map(|e| offset >= e).unwrap_or(false),
                                None => true,
                            };
                            if skip {
                                Event::Nothing
                            } else {
                                if let Err(e) = self.decoding.message(&msg) {
                                    let head = msg.payload().map(formats::describe_bytes).unwrap_or_else(|| "a null value".into());
                                    break 'run Err(RsqlError::data(
                                        format!("table '{table}': topic '{}' partition {} offset {}", tp.0, tp.1, offset),
                                        format!("{e}; the message starts with {head}"),
                                    ));
                                }
                                self.read_to.insert(tp.clone(), offset + 1);
                                if let Some(s) = states.get_mut(&tp) {
                                    s.next = Some(offset + 1);
                                    if s.end.map(|e| offset + 1 >= e).unwrap_or(false) {
                                        s.done = true;
                                        let mut p = TopicPartitionList::new();
                                        p.add_partition(&tp.0, tp.1);
                                        let _ = consumer.pause(&p);
                                    }
                                }
                                backoff = Duration::from_millis(100);
                                Event::Row
                            }
                        }
                        Err(KafkaError::PartitionEOF(_)) => Event::Eof,
                        Err(e) => Event::Error(e),
                    }
                }
                // Polled after the consumer: rows waiting to be handed on go as soon as no
                // message is ready, so a quiet topic is not held for the batch delay and a busy
                // one still fills its batches.
                _ = async {
                    match wake {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending::<()>().await,
                    }
                } => if first_row_at.is_some() { Event::Flush } else { Event::Nothing },
            };
            match event {
                Event::Stop => break 'run Ok(()),
                Event::Nothing => {}
                Event::Row => {
                    if first_row_at.is_none() && self.decoding.pending() > 0 {
                        first_row_at = Some(Instant::now());
                    }
                    if self.decoding.pending() >= batch_size {
                        if let Err(e) = ctx.emit(self.decoding.finish()?).await {
                            break 'run Err(e);
                        }
                        if let Err(e) = ctx.position(encode_offsets(&self.read_to)).await {
                            break 'run Err(e);
                        }
                        first_row_at = None;
                    }
                }
                Event::Flush => {
                    if self.decoding.pending() > 0 {
                        if let Err(e) = ctx.emit(self.decoding.finish()?).await {
                            break 'run Err(e);
                        }
                    }
                    // Skipped messages move the position too.
                    if let Err(e) = ctx.position(encode_offsets(&self.read_to)).await {
                        break 'run Err(e);
                    }
                    first_row_at = None;
                }
                Event::Eof => {
                    if let Ok(pos) = consumer.position() {
                        for e in pos.elements() {
                            let tp = (e.topic().to_string(), e.partition());
                            if let (Some(s), Offset::Offset(p)) = (states.get_mut(&tp), e.offset()) {
                                if s.end.map(|end| p >= end).unwrap_or(false) {
                                    s.done = true;
                                }
                            }
                        }
                    }
                }
                Event::Error(e) => {
                    let fatal = matches!(
                        e.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed | RDKafkaErrorCode::Fatal)
                    );
                    if fatal {
                        break 'run Err(RsqlError::connector(format!("table '{table}'"), format!("kafka consumer failed: {e}")));
                    }
                    tracing::warn!(table = %table, servers = %self.cfg.servers(), "kafka consumer error: {e}; retrying in {:?}", backoff);
                    if wait_or_stop(&mut stop, backoff).await {
                        break 'run Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            if last_commit.elapsed() >= Duration::from_secs(1) && self.decoding.pending() == 0 {
                self.commit(&consumer, &mut states, CommitMode::Async);
                last_commit = Instant::now();
            }
            let skipped = self.decoding.value_decoder.skipped();
            if skipped > skipped_reported {
                tracing::warn!(table = %table, skipped, "kafka source skipped messages that did not parse");
                skipped_reported = skipped;
            }
        };
        // Hand on what was decoded, then commit what was handed on.
        let mut result = result;
        if self.decoding.pending() > 0 {
            match ctx.emit(self.decoding.finish()?).await {
                Ok(()) => {
                    let _ = ctx.position(encode_offsets(&self.read_to)).await;
                }
                Err(e) if result.is_ok() && !ctx.is_stopping() => result = Err(e),
                Err(_) => {
                    for s in states.values_mut() {
                        s.next = None;
                    }
                }
            }
        }
        if result.is_ok() {
            let c = consumer.clone();
            let mut st = std::mem::take(&mut states);
            let this_group = self.cfg.group_id.is_some();
            if this_group {
                let mut tpl = TopicPartitionList::new();
                for ((t, p), s) in st.iter_mut() {
                    if let Some(n) = s.next.take() {
                        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(n));
                    }
                }
                if tpl.count() > 0 {
                    let r = blocking(&c, move |c| c.commit(&tpl, CommitMode::Sync)).await?;
                    if let Err(e) = r {
                        tracing::warn!(table = %table, "cannot commit offsets: {e}");
                    }
                }
            }
        }
        result
    }

    fn checkpointable(&self) -> bool {
        true
    }

    /// Resumes every partition the checkpoint had read from its next offset; partitions it had
    /// not read start as the table's startup mode says.
    fn restore(&mut self, position: &[u8]) -> Result<()> {
        self.restore_offsets(position)
    }

    /// The consumer lag: messages behind the partitions' high watermarks, measured every few
    /// seconds.
    fn status(&self) -> Option<Arc<SourceStatus>> {
        Some(self.status.clone())
    }
}

impl KafkaSource {
    fn restore_offsets(&mut self, position: &[u8]) -> Result<()> {
        let v: Vec<(String, i32, i64)> = serde_json::from_slice(position).map_err(|e| {
            RsqlError::execution(format!("table '{}': the saved kafka offsets are damaged: {e}", self.cfg.name()))
        })?;
        self.resume = Some(v.into_iter().map(|(t, p, o)| ((t, p), o)).collect());
        Ok(())
    }
}

fn bounded_mode(cfg: &KafkaTable) -> bool {
    cfg.bounded.is_some()
}

enum Event {
    Stop,
    Flush,
    Row,
    Nothing,
    Eof,
    Error(KafkaError),
}
