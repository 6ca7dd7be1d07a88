//! Building blocks for tests of sinks and of the executor: a bounded source that replays given
//! batches and resumes from its checkpointed position, a job reading it into one sink, and a
//! checkpoint store kept in memory. Nothing here is used by a running job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rsql_common::catalog::{ObjectPath, TableDef};
use rsql_common::options::OptionSchema;
use rsql_common::{ChangeBatch, Location, Result, RsqlError};
use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::connector::{ChangelogMode, ConnectorFactory, ProducedColumn, Sink, Source, SourceContext, SourceInfo};
use crate::graph::{JobGraph, Node, NodeKind, SinkFactoryFn};

/// A bounded source of fixed batches. It reports its position (the number of batches sent) after
/// every batch, so a checkpoint may fall between any two of them, and resumes from it.
#[derive(Clone)]
pub struct BatchFeed {
    batches: Arc<Vec<ChangeBatch>>,
    pause: Duration,
    /// After this many batches, wait until the receiver reads true (or the job stops).
    hold: Option<(usize, watch::Receiver<bool>)>,
}

impl BatchFeed {
    pub fn new(batches: Vec<ChangeBatch>) -> Self {
        BatchFeed { batches: Arc::new(batches), pause: Duration::ZERO, hold: None }
    }

    /// Waits this long after each batch.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// Stops after the first `n` batches, at a position, until the returned sender sends true:
    /// a checkpoint taken meanwhile is one with the source still running.
    pub fn hold_after(mut self, n: usize) -> (Self, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        self.hold = Some((n, rx));
        (self, tx)
    }

    /// A job of two nodes: this source (node 0) into the sink that `create` makes (node 1).
    pub fn into_sink(self, create: SinkFactoryFn) -> Result<JobGraph> {
        let schema = self
            .batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| RsqlError::execution("a batch feed needs at least one batch (for its schema)"))?;
        let table = TableDef {
            path: ObjectPath::new("default_catalog", "default_database", "feed"),
            columns: Vec::new(),
            primary_key: None,
            watermark: None,
            options: BTreeMap::new(),
            comment: None,
            temporary: false,
            location: Location::default(),
        };
        let mut g = JobGraph::default();
        let source = g.add(Node {
            id: 0,
            kind: NodeKind::Source { table: Arc::new(table), columns: Vec::new(), factory: Arc::new(self) },
            inputs: Vec::new(),
            schema: schema.clone(),
            mode: ChangelogMode::All,
            unique_key: None,
            describe: "TableSourceScan(table=[[default_catalog, default_database, feed]])".into(),
        });
        g.add(Node {
            id: 0,
            kind: NodeKind::Sink { label: "'sink'".into(), create },
            inputs: vec![source],
            schema,
            mode: ChangelogMode::All,
            unique_key: None,
            describe: "Sink(table=[default_catalog.default_database.sink])".into(),
        });
        Ok(g)
    }
}

impl ConnectorFactory for BatchFeed {
    fn name(&self) -> &'static str {
        "batch-feed"
    }
    fn options(&self, _table: &TableDef) -> OptionSchema {
        OptionSchema::new(Vec::new())
    }
    fn source_info(&self, _table: &TableDef) -> Result<SourceInfo> {
        Ok(SourceInfo { changelog_mode: ChangelogMode::All, bounded: true })
    }
    fn supports_sink(&self) -> bool {
        false
    }
    fn create_source(&self, _table: &TableDef, _columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        Ok(Box::new(FeedSource { feed: self.clone(), next: 0 }))
    }
    fn create_sink(&self, table: &TableDef, _input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        Err(RsqlError::unsupported(format!("table '{}': a batch feed is only a source", table.path.name)))
    }
}

struct FeedSource {
    feed: BatchFeed,
    next: usize,
}

#[async_trait]
impl Source for FeedSource {
    async fn run(&mut self, mut ctx: SourceContext) -> Result<()> {
        while self.next < self.feed.batches.len() {
            if ctx.is_stopping() {
                return Ok(());
            }
            ctx.emit(self.feed.batches[self.next].clone()).await?;
            self.next += 1;
            ctx.position((self.next as u64).to_le_bytes().to_vec()).await?;
            let next = self.next;
            if let Some((_, release)) = self.feed.hold.as_mut().filter(|(n, _)| *n == next) {
                tokio::select! {
                    _ = release.wait_for(|go| *go) => {}
                    _ = ctx.stopped() => return Ok(()),
                }
            }
            if !self.feed.pause.is_zero() {
                tokio::time::sleep(self.feed.pause).await;
            }
        }
        Ok(())
    }

    fn checkpointable(&self) -> bool {
        true
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let bytes: [u8; 8] = position
            .try_into()
            .map_err(|_| RsqlError::execution(format!("a batch feed position is 8 bytes, not {}", position.len())))?;
        self.next = usize::try_from(u64::from_le_bytes(bytes)).unwrap_or(usize::MAX);
        Ok(())
    }
}

/// Checkpoints kept in memory, every one of them.
#[derive(Default)]
pub struct MemoryStore {
    saved: Mutex<Vec<Checkpoint>>,
}

impl MemoryStore {
    /// The ids of the checkpoints stored so far, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        self.saved.lock().map(|s| s.iter().map(|c| c.id).collect()).unwrap_or_default()
    }

    /// A stored checkpoint.
    pub fn get(&self, id: u64) -> Option<Checkpoint> {
        self.saved.lock().ok().and_then(|s| s.iter().find(|c| c.id == id).cloned())
    }
}

impl CheckpointStore for MemoryStore {
    fn save(&self, cp: &Checkpoint) -> Result<String> {
        let mut s = self.saved.lock().map_err(|_| RsqlError::execution("the in-memory checkpoint store is poisoned"))?;
        s.push(cp.clone());
        Ok(format!("memory:chk-{}", cp.id))
    }

    fn latest(&self) -> Result<Option<(String, Checkpoint)>> {
        let s = self.saved.lock().map_err(|_| RsqlError::execution("the in-memory checkpoint store is poisoned"))?;
        Ok(s.last().map(|c| (format!("memory:chk-{}", c.id), c.clone())))
    }

    fn describe(&self) -> String {
        "memory".into()
    }

    fn latest_id(&self) -> u64 {
        self.saved.lock().ok().and_then(|s| s.last().map(|c| c.id)).unwrap_or(0)
    }
}
