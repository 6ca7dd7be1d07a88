//! The contract between the engine and connectors: a factory per `'connector' = '...'` value that
//! validates a table's options and creates sources and sinks, plus the registry the planner and
//! executor look factories up in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::catalog::TableDef;
use rsql_common::options::{did_you_mean, OptionSchema};
use rsql_common::types::LogicalType;
use rsql_common::{ChangeBatch, Result, RsqlError};
use tokio::sync::{mpsc, watch};

/// How a stream changes: the row kinds it may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangelogMode {
    /// Only +I.
    InsertOnly,
    /// +I, +U and -D keyed by the given columns, without -U (an upsert stream).
    Upsert { key: Vec<String> },
    /// Every kind: +I, -U, +U, -D.
    All,
}

impl ChangelogMode {
    pub fn is_insert_only(&self) -> bool {
        matches!(self, ChangelogMode::InsertOnly)
    }
    /// Flink's EXPLAIN notation: `[I]`, `[I,UA,D]`, `[I,UB,UA,D]`.
    pub fn flink_notation(&self) -> &'static str {
        match self {
            ChangelogMode::InsertOnly => "I",
            ChangelogMode::Upsert { .. } => "I,UA,D",
            ChangelogMode::All => "I,UB,UA,D",
        }
    }
}

/// What a source produces for one query.
#[derive(Clone, Debug)]
pub enum ProducedColumn {
    /// A physical column of the table, by name.
    Physical { name: String, ty: LogicalType },
    /// A metadata column: the connector's metadata key, and the column's name and type.
    Metadata { key: String, name: String, ty: LogicalType },
}

impl ProducedColumn {
    pub fn name(&self) -> &str {
        match self {
            ProducedColumn::Physical { name, .. } | ProducedColumn::Metadata { name, .. } => name,
        }
    }
    pub fn ty(&self) -> &LogicalType {
        match self {
            ProducedColumn::Physical { ty, .. } | ProducedColumn::Metadata { ty, .. } => ty,
        }
    }
}

/// What flows on the channels between tasks.
#[derive(Clone, Debug)]
pub enum Message {
    Batch(ChangeBatch),
    /// Event-time watermark in milliseconds since the epoch.
    Watermark(i64),
    /// The sender's watermark is idle (true: it has had no data for the idle timeout and must not
    /// hold back the watermark of operators with several inputs) or active again (false), as
    /// Flink's WatermarkStatus.
    Idle(bool),
    /// The stream has ended (bounded sources).
    End,
    /// A checkpoint barrier: everything before it belongs to checkpoint `id`, everything after
    /// it to the next one.
    Barrier(u64),
    /// Sent by a source right after the batches it describes: the position from which the
    /// source resumes to produce exactly what follows. Consumed by the executor, never seen by
    /// operators.
    Position(Vec<u8>),
}

/// Handed to a running source: where to send batches and how to learn that the job stops.
pub struct SourceContext {
    pub out: mpsc::Sender<Message>,
    pub stop: watch::Receiver<bool>,
    /// The table being read, for messages.
    pub table: String,
    /// Flush at least this often (latency bound for batching sources).
    pub max_batch_delay: Duration,
    /// Target number of rows per batch.
    pub batch_size: usize,
}

impl SourceContext {
    /// Sends a batch downstream; waits when downstream is busy (backpressure). Returns an error
    /// only when the job is gone.
    pub async fn emit(&self, batch: ChangeBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.out
            .send(Message::Batch(batch))
            .await
            .map_err(|_| RsqlError::execution(format!("source '{}': the job stopped reading", self.table)))
    }

    pub async fn emit_watermark(&self, ts: i64) -> Result<()> {
        self.out
            .send(Message::Watermark(ts))
            .await
            .map_err(|_| RsqlError::execution(format!("source '{}': the job stopped reading", self.table)))
    }

    /// Records the source's position after everything emitted so far (see `Source::restore`).
    /// A checkpoint barrier is placed only right after a position, so a source reports one
    /// wherever resuming from it reproduces exactly what follows.
    pub async fn position(&self, bytes: Vec<u8>) -> Result<()> {
        self.out
            .send(Message::Position(bytes))
            .await
            .map_err(|_| RsqlError::execution(format!("source '{}': the job stopped reading", self.table)))
    }

    /// True once the job has been asked to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the job is asked to stop (for use in `tokio::select!`).
    pub async fn stopped(&mut self) {
        while !*self.stop.borrow() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A running source. `run` returns when the source is exhausted (bounded) or when the context
/// says stop; the executor sends `End` downstream after it returns.
#[async_trait]
pub trait Source: Send {
    async fn run(&mut self, ctx: SourceContext) -> Result<()>;

    /// Whether the source reports positions with `SourceContext::position` and can resume from
    /// them; a job whose sources cannot is not checkpointed.
    fn checkpointable(&self) -> bool {
        false
    }

    /// Makes `run` resume from a position reported earlier, instead of the configured start.
    /// Called before `run`.
    fn restore(&mut self, _position: &[u8]) -> Result<()> {
        Err(RsqlError::execution("this source cannot resume from a checkpoint"))
    }

    /// The status the source keeps up to date while it runs (phase, progress, lag), shown by
    /// SHOW JOBS and the metrics; None for sources that report nothing beyond their rows.
    fn status(&self) -> Option<Arc<crate::source_status::SourceStatus>> {
        None
    }
}

/// A running sink. Batches arrive with the sink table's physical columns, in order.
///
/// Checkpoints, in the order the executor calls them: `open` once before the first batch (with
/// the bytes the sink saved in the checkpoint the job resumes from), `snapshot` when a
/// checkpoint's barrier reaches the sink (its bytes go into that checkpoint), and
/// `notify_checkpoint_complete` once the checkpoint is written. A sink that commits in two phases
/// prepares at `snapshot` and commits at the notification; the defaults suit a sink for which a
/// flush is enough.
///
/// At the end of a bounded input (every input ended by itself) in a job that checkpoints, the
/// sink gets no `finish` right away: the job first takes a final checkpoint, which calls
/// `snapshot` and, once it is stored, `notify_checkpoint_complete`, as any checkpoint does; then
/// `finish` and `close`. So a two-phase sink commits its last rows only when a checkpoint that
/// will not replay them exists. Without checkpoints `finish` follows the last `write`. When the
/// job is stopped instead, `flush` and `close` are called, without `finish`.
#[async_trait]
pub trait Sink: Send {
    /// `checkpointing` says whether the job takes checkpoints; `restored` is what `snapshot`
    /// returned for the checkpoint the job resumes from (None on a fresh start). A sink may undo
    /// here what a failed run wrote after that checkpoint (upsert-kafka does).
    async fn open(&mut self, _checkpointing: bool, _restored: Option<&[u8]>) -> Result<()> {
        Ok(())
    }
    async fn write(&mut self, batch: ChangeBatch) -> Result<()>;
    /// Makes everything written so far durable (at checkpoints and at the end).
    async fn flush(&mut self) -> Result<()>;
    /// At checkpoint `checkpoint`'s barrier: makes everything written so far durable or ready to
    /// commit, and returns the bytes to save for the sink in that checkpoint.
    async fn snapshot(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.flush().await?;
        Ok(Vec::new())
    }
    /// Called instead of the final `flush` when every input has ended by itself (bounded input,
    /// not a stop); with checkpoints, after the final checkpoint was stored and notified, so a
    /// two-phase sink has committed everything by then. Nothing will be replayed.
    async fn finish(&mut self) -> Result<()> {
        self.flush().await
    }
    /// Checkpoint `checkpoint` (and every earlier one) is complete and saved.
    async fn notify_checkpoint_complete(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }
    /// Called once at the end of the stream or at shutdown, after a final flush.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Reads rows of a dimension table by key, for lookup joins (`JOIN t FOR SYSTEM_TIME AS OF ...`).
/// It is called from an operator and blocks until the rows are there; caching and retries are
/// its own business.
pub trait LookupFunction: Send {
    /// For the key rows of `keys` (one column per lookup key, in the order given at creation),
    /// the matching rows of the table (its physical columns, as declared) and, for each of them,
    /// the index of the key row it matches. Key rows holding a NULL match nothing.
    fn lookup(&mut self, keys: &RecordBatch) -> Result<(RecordBatch, Vec<u32>)>;
}

/// How a source table behaves, known at planning time.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub changelog_mode: ChangelogMode,
    /// Whether the source ends by itself.
    pub bounded: bool,
}

/// A connector: one per `'connector'` value.
pub trait ConnectorFactory: Send + Sync {
    /// The `'connector'` option value.
    fn name(&self) -> &'static str;

    /// The options it accepts (checked before anything connects).
    fn options(&self, table: &TableDef) -> OptionSchema;

    /// Checks beyond option kinds: required primary keys, option combinations, formats.
    fn validate(&self, _table: &TableDef) -> Result<()> {
        Ok(())
    }

    /// Metadata keys a source of this connector can provide, with their types.
    fn metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        Vec::new()
    }

    /// Metadata keys a sink of this connector writes, with their types. A metadata column not
    /// declared VIRTUAL is written by INSERTs, so its key must be listed here.
    fn writable_metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        Vec::new()
    }

    fn supports_source(&self) -> bool {
        true
    }
    fn supports_sink(&self) -> bool {
        true
    }

    /// How the table reads as a source.
    fn source_info(&self, table: &TableDef) -> Result<SourceInfo>;

    /// The changelog modes the sink accepts; the planner refuses an updating query into an
    /// insert-only sink.
    fn sink_accepts_updates(&self, _table: &TableDef) -> bool {
        true
    }

    fn create_source(&self, table: &TableDef, columns: &[ProducedColumn]) -> Result<Box<dyn Source>>;

    /// `input_mode` is the changelog mode of the query written into the sink.
    fn create_sink(&self, table: &TableDef, input_mode: &ChangelogMode) -> Result<Box<dyn Sink>>;

    /// Whether the table can be the dimension side of a lookup join.
    fn supports_lookup(&self) -> bool {
        false
    }

    /// A lookup function over `table` keyed by the physical columns `keys`.
    fn create_lookup(&self, table: &TableDef, _keys: &[String]) -> Result<Box<dyn LookupFunction>> {
        Err(RsqlError::unsupported(format!(
            "table '{}' (connector '{}') cannot be the table of a lookup join (FOR SYSTEM_TIME AS OF); \
             only 'jdbc' tables can",
            table.path.name,
            self.name()
        )))
    }
}

/// Connectors by name.
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    factories: BTreeMap<String, Arc<dyn ConnectorFactory>>,
}

impl ConnectorRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, f: Arc<dyn ConnectorFactory>) {
        self.factories.insert(f.name().to_string(), f);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(|s| s.as_str())
    }

    /// The factory for a table's `'connector'` option, or an error that lists what exists.
    pub fn for_table(&self, table: &TableDef) -> Result<Arc<dyn ConnectorFactory>> {
        let name = table.connector().ok_or_else(|| RsqlError::Options {
            table: table.path.name.clone(),
            message: "the WITH clause has no 'connector' option; add for example 'connector' = 'datagen'".into(),
            location: Some(table.location),
        })?;
        match self.factories.get(name) {
            Some(f) => Ok(f.clone()),
            None => {
                let hint = match did_you_mean(name, self.names()) {
                    Some(s) => format!("did you mean '{s}'?"),
                    None => format!("available connectors: {}", self.names().collect::<Vec<_>>().join(", ")),
                };
                Err(RsqlError::Options {
                    table: table.path.name.clone(),
                    message: format!("unknown connector '{name}'; {hint}"),
                    location: Some(rsql_common::options::option_location(table, "connector")),
                })
            }
        }
    }

    /// Validates a table's options against its connector (option kinds, then connector checks).
    pub fn validate(&self, table: &TableDef) -> Result<Arc<dyn ConnectorFactory>> {
        let f = self.for_table(table)?;
        f.options(table).validate(table)?;
        f.validate(table)?;
        Ok(f)
    }
}
