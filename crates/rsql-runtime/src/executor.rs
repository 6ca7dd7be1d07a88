//! Runs a dataflow graph: one tokio task per node, joined by bounded channels so a slow sink
//! slows its sources down instead of buffering without bound. The job ends when every sink has
//! seen the end of its input (bounded sources) or when it is asked to stop; sinks are flushed and
//! closed on the way out. The first failing task stops the whole job with its error.
//!
//! Checkpoints (when configured) are aligned, as in Flink: a coordinator asks every source for a
//! barrier; a source's barrier follows the last position it reported, so everything before the
//! barrier is exactly what that position has produced. A node with several inputs holds back
//! what arrives on an input after its barrier until the barrier has come on every input still
//! open, then saves its state and passes the barrier on; a sink flushes (or prepares a
//! transaction, see `Sink::snapshot`). When every node has answered, the coordinator writes the
//! checkpoint to its store in one atomic step and then tells the sinks, which may commit what they
//! prepared. A node that has finished answers every later checkpoint with the state it finished
//! with.
//!
//! The end of a bounded input, with checkpoints (Flink's final checkpoint, FLIP-147): sources and
//! operators finish as they would without checkpoints, but a sink whose inputs have all ended
//! does not commit yet. It tells the coordinator and waits; every checkpoint taken from then on
//! asks it for its state directly (no barrier can reach it any more). Once every node has
//! finished or waits so, the coordinator takes the final checkpoint at once. A waiting sink is
//! notified of a checkpoint that holds its state from after the end as of any other checkpoint
//! (`snapshot`, the checkpoint stored, `notify_checkpoint_complete`), and only then `finish`es and
//! closes. A job stopped while a sink waits leaves without that: the sink flushes and closes as
//! on a stop, and its rows since the last complete checkpoint are replayed on resume. Without
//! checkpoints a sink `finish`es as soon as its inputs have ended.
//!
//! Watermarks and idleness (Flink's watermark status) travel between tasks as messages; a node
//! combines those of its inputs in a valve (the smallest watermark over the inputs that are open
//! and active). Operators that keep processing-time timers (watermark assigners) are woken on
//! their period even when no input arrives.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsql_common::{ChangeBatch, Result, RsqlError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::checkpoint::{Checkpoint, CheckpointStore, NodeState};
use crate::connector::{Message, Sink, Source, SourceContext};
use crate::graph::{JobGraph, NodeId, NodeKind};
use crate::operators::aggregate::GroupAggregate;
use crate::operators::calc::Calc;
use crate::operators::join::Join;
use crate::operators::materializer::SinkMaterializer;
use crate::operators::normalize::ChangelogNormalize;
use crate::operators::state::StateTtl;
use crate::operators::window::{WatermarkAssigner, WatermarkTiming, WindowAggregate, WindowTableFunction};
use crate::operators::{Operator, PassThrough};

/// Tuning of a job, from Flink-style configuration keys.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// Batches in flight per channel.
    pub channel_capacity: usize,
    /// Rows per batch that sources aim for.
    pub batch_size: usize,
    /// Longest time a source holds rows before sending them.
    pub max_batch_delay: Duration,
    /// Periodic checkpoints; None runs without them.
    pub checkpoint: Option<CheckpointOptions>,
    /// Counters to continue (a job restarted after a failure keeps counting); None: new ones.
    pub metrics: Option<Arc<JobMetrics>>,
    /// `table.exec.state.ttl`: how long the state of joins, group aggregates, Top-N,
    /// deduplication and sink materializers lives unwritten (zero: forever).
    pub state_ttl: Duration,
    /// `pipeline.auto-watermark-interval`: the period on which watermark assigners emit their
    /// watermark (zero: after every batch that moves it).
    pub watermark_interval: Duration,
    /// `table.exec.source.idle-timeout`: a watermark assigner that saw no rows for this long marks
    /// its output idle (zero: never).
    pub idle_timeout: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            channel_capacity: 8,
            batch_size: 4096,
            max_batch_delay: Duration::from_millis(10),
            checkpoint: None,
            metrics: None,
            state_ttl: Duration::ZERO,
            watermark_interval: Duration::from_millis(200),
            idle_timeout: Duration::ZERO,
        }
    }
}

/// How a job checkpoints and what it resumes from.
#[derive(Clone)]
pub struct CheckpointOptions {
    /// The job's name in logs and in the checkpoint files.
    pub job: String,
    /// Time between the end of one checkpoint and the start of the next.
    pub interval: Duration,
    /// A checkpoint not complete after this long is abandoned.
    pub timeout: Duration,
    /// Checkpoint failures (timeouts, write errors) in a row that the job survives.
    pub tolerable_failures: u32,
    pub store: Arc<dyn CheckpointStore>,
    /// The checkpoint to resume from, with where it was read, already loaded.
    pub restore: Option<(String, Checkpoint)>,
}

impl fmt::Debug for CheckpointOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointOptions")
            .field("job", &self.job)
            .field("interval", &self.interval)
            .field("store", &self.store.describe())
            .field("restore", &self.restore.as_ref().map(|r| &r.0))
            .finish()
    }
}

/// Rows in and out of every node, readable while the job runs.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    /// Approximate bytes of operator state, as of the last checkpoint or end.
    pub state_bytes: AtomicU64,
    /// A source node's own status (phase, progress, lag), when its connector reports one.
    pub source: Mutex<Option<Arc<crate::source_status::SourceStatus>>>,
}

impl NodeMetrics {
    /// The source's status now, when the node is a source that reports one.
    pub fn source_status(&self) -> Option<crate::source_status::StatusView> {
        self.source.lock().ok().and_then(|s| s.as_ref().map(|s| s.view()))
    }
}

/// The last completed checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointStats {
    pub completed: u64,
    pub failed: u64,
    pub last_id: u64,
    pub last_bytes: u64,
    pub last_duration: Duration,
    pub last_path: String,
}

#[derive(Debug)]
pub struct JobMetrics {
    pub nodes: Vec<(String, NodeMetrics)>,
    pub checkpoints: Mutex<CheckpointStats>,
}

const DOWNSTREAM_GONE: &str = "downstream task stopped";

/// Where a node sends its output: each consumer's channel, tagged with the consumer's input slot.
#[derive(Clone)]
struct Outputs {
    targets: Vec<(mpsc::Sender<(usize, Message)>, usize)>,
    metrics: Arc<JobMetrics>,
    node: NodeId,
}

impl Outputs {
    async fn send(&self, msg: Message) -> Result<()> {
        if let Message::Batch(b) = &msg {
            self.metrics.nodes[self.node].1.rows_out.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        }
        for (tx, slot) in &self.targets {
            tx.send((*slot, msg.clone())).await.map_err(|_| RsqlError::execution(DOWNSTREAM_GONE))?;
        }
        Ok(())
    }
}

fn build_operator(graph: &JobGraph, id: NodeId, ttl: &StateTtl, timing: WatermarkTiming) -> Result<Box<dyn Operator>> {
    let node = graph.node(id);
    let input_schema = |i: usize| graph.node(node.inputs[i]).schema.clone();
    Ok(match &node.kind {
        NodeKind::Calc { filter, exprs, .. } => Box::new(Calc::new(filter.clone(), exprs.clone(), node.schema.clone())),
        NodeKind::ChangelogNormalize { key } => Box::new(ChangelogNormalize::new(node.schema.clone(), key)?),
        NodeKind::Join { kind, left_keys, right_keys, filter } => Box::new(
            Join::new(*kind, input_schema(0), input_schema(1), left_keys, right_keys, filter.clone(), node.schema.clone())?.with_ttl(ttl.clone()),
        ),
        NodeKind::GroupAggregate { group, aggs } => {
            let append_only = graph.node(node.inputs[0]).mode.is_insert_only();
            Box::new(GroupAggregate::new(input_schema(0), group, aggs.clone(), node.schema.clone(), append_only)?.with_ttl(ttl.clone()))
        }
        NodeKind::Union => Box::new(PassThrough),
        NodeKind::SinkMaterializer { key } => Box::new(SinkMaterializer::new(node.schema.clone(), key)?.with_ttl(ttl.clone())),
        NodeKind::Rank { .. } | NodeKind::Deduplicate { .. } => {
            crate::operators::rank::build(&node.kind, input_schema(0), node.schema.clone(), graph.node(node.inputs[0]).mode.is_insert_only(), ttl)?
        }
        NodeKind::WatermarkAssigner { rowtime, expr } => Box::new(WatermarkAssigner::new(*rowtime, expr.clone()).with_timing(timing)),
        NodeKind::WindowTableFunction { time_col, spec } => Box::new(WindowTableFunction::new(*time_col, *spec, node.schema.clone(), &node.describe)),
        NodeKind::WindowAggregate { group, window_start, window_end, aggs } => Box::new(WindowAggregate::new(
            input_schema(0),
            group,
            *window_start,
            *window_end,
            aggs.clone(),
            node.schema.clone(),
            &node.describe,
        )?),
        NodeKind::LookupJoin { create, probe_keys, dim_columns, dim_filters, left_outer, filter } => {
            Box::new(crate::operators::lookup_join::LookupJoin::new(create()?, probe_keys, dim_columns, dim_filters.clone(), *left_outer, filter.clone(), node.schema.clone()))
        }
        NodeKind::Source { .. } | NodeKind::Values { .. } | NodeKind::Sink { .. } => {
            return Err(RsqlError::execution(format!("node {} is not an operator", node.kind.name())))
        }
    })
}

fn role(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::Source { .. } | NodeKind::Values { .. } => "source",
        NodeKind::Sink { .. } => "sink",
        _ => "operator",
    }
}

/// Refuses a checkpoint taken from another plan, naming the first node that differs.
pub fn check_restore(graph: &JobGraph, from: &str, cp: &Checkpoint) -> Result<()> {
    let fix = "undo the change to the script, or start without the saved state (rsql-client --fresh)";
    for n in &graph.nodes {
        let Some(saved) = cp.node(n.id) else {
            return Err(RsqlError::execution(format!(
                "the checkpoint {from} does not match this job: it has no state for node {} `{}`; {fix}",
                n.id, n.describe
            )));
        };
        if saved.describe != n.describe || saved.role != role(&n.kind) {
            return Err(RsqlError::execution(format!(
                "the checkpoint {from} was taken from a different plan: node {} was `{}` and is now `{}`; {fix}",
                n.id, saved.describe, n.describe
            )));
        }
    }
    if let Some(extra) = cp.nodes.iter().find(|s| s.node >= graph.nodes.len()) {
        return Err(RsqlError::execution(format!(
            "the checkpoint {from} was taken from a different plan: node {} `{}` is gone; {fix}",
            extra.node, extra.describe
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Coordinator

enum Report {
    /// Checkpoint `id`'s barrier has passed `node`, which saved `bytes`.
    Node { id: u64, node: NodeId, bytes: Vec<u8> },
    /// `node` has finished; `bytes` stand for it in every later checkpoint.
    Finished { node: NodeId, bytes: Vec<u8> },
    /// Every input of sink `node` has ended by itself: it waits for a checkpoint taken after
    /// that, and is asked for its state in each checkpoint through `asks`.
    Ended { node: NodeId, asks: mpsc::UnboundedSender<u64> },
}

/// What a completed checkpoint was.
#[derive(Clone, Debug)]
pub struct Completed {
    pub id: u64,
    pub path: String,
    pub bytes: usize,
    pub duration: Duration,
}

type Waiter = (u64, oneshot::Sender<Result<Completed>>);

struct Coordinator {
    opts: CheckpointOptions,
    nodes: Vec<(&'static str, String)>,
    trigger: watch::Sender<u64>,
    /// Told the id of every checkpoint once it is written.
    completed: watch::Sender<u64>,
    reports: mpsc::UnboundedReceiver<Report>,
    requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<Completed>>>,
    stop: watch::Receiver<bool>,
    metrics: Arc<JobMetrics>,
    next_id: u64,
}

struct Pending {
    id: u64,
    started: Instant,
    states: HashMap<NodeId, Vec<u8>>,
}

impl Coordinator {
    async fn run(mut self) -> Result<()> {
        let mut finished: HashMap<NodeId, Vec<u8>> = HashMap::new();
        // Sinks waiting for the checkpoint after the end of their inputs.
        let mut ended: HashMap<NodeId, mpsc::UnboundedSender<u64>> = HashMap::new();
        let mut pending: Option<Pending> = None;
        let mut waiters: Vec<Waiter> = Vec::new();
        let mut failures = 0u32;
        let mut next_at = tokio::time::Instant::now() + self.opts.interval;
        let mut asap = false;
        loop {
            // Every node has finished or is a sink waiting for it: the final checkpoint is due.
            let final_due = !ended.is_empty()
                && !*self.stop.borrow()
                && (0..self.nodes.len()).all(|n| finished.contains_key(&n) || ended.contains_key(&n));
            let deadline = match &pending {
                Some(p) => tokio::time::Instant::from_std(p.started + self.opts.timeout),
                None if asap || final_due => tokio::time::Instant::now(),
                None => next_at,
            };
            tokio::select! {
                r = self.reports.recv() => match r {
                    None => break,
                    Some(Report::Finished { node, bytes }) => {
                        ended.remove(&node);
                        finished.insert(node, bytes);
                    }
                    Some(Report::Ended { node, asks }) => {
                        // A checkpoint under way whose barrier can no longer reach the sink.
                        if let Some(p) = pending.as_ref().filter(|p| !p.states.contains_key(&node)) {
                            let _ = asks.send(p.id);
                        }
                        ended.insert(node, asks);
                    }
                    Some(Report::Node { id, node, bytes }) => {
                        if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                            p.states.insert(node, bytes);
                        }
                    }
                },
                req = self.requests.recv() => {
                    if let Some(tx) = req {
                        let min = match &pending { Some(p) => p.id + 1, None => self.next_id };
                        waiters.push((min, tx));
                        asap = true;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    match pending.take() {
                        Some(p) => {
                            let missing: Vec<String> = (0..self.nodes.len())
                                .filter(|n| !p.states.contains_key(n) && !finished.contains_key(n))
                                .map(|n| format!("{} `{}`", n, self.nodes[n].1))
                                .collect();
                            let e = RsqlError::execution(format!(
                                "checkpoint {} of job '{}' timed out after {:?} waiting for {}; raise 'execution.checkpointing.timeout' if state is large or a source is slow to reach a position",
                                p.id, self.opts.job, self.opts.timeout, missing.join(", ")
                            ));
                            failures += 1;
                            self.record_failure();
                            notify(&mut waiters, p.id, Err(e.to_string()));
                            if failures > self.opts.tolerable_failures {
                                return Err(e);
                            }
                            warn!("{e}");
                            next_at = tokio::time::Instant::now() + self.opts.interval;
                        }
                        None => {
                            if *self.stop.borrow() && !asap {
                                next_at = tokio::time::Instant::now() + self.opts.interval;
                                continue;
                            }
                            asap = false;
                            let id = self.next_id;
                            self.next_id += 1;
                            pending = Some(Pending { id, started: Instant::now(), states: HashMap::new() });
                            if final_due {
                                info!(job = %self.opts.job, id, "every input has ended: taking the final checkpoint");
                            }
                            let _ = self.trigger.send(id);
                            for asks in ended.values() {
                                let _ = asks.send(id);
                            }
                        }
                    }
                }
            }
            // Complete?
            let done = pending.as_ref().is_some_and(|p| (0..self.nodes.len()).all(|n| p.states.contains_key(&n) || finished.contains_key(&n)));
            if done {
                let Some(p) = pending.take() else { continue };
                match self.write(&p, &finished) {
                    Ok(c) => {
                        failures = 0;
                        let _ = self.completed.send(p.id);
                        notify(&mut waiters, p.id, Ok(c));
                    }
                    Err(e) => {
                        failures += 1;
                        self.record_failure();
                        notify(&mut waiters, p.id, Err(e.to_string()));
                        if failures > self.opts.tolerable_failures {
                            return Err(e);
                        }
                        warn!("{e}");
                    }
                }
                next_at = tokio::time::Instant::now() + self.opts.interval;
            }
            if finished.len() == self.nodes.len() {
                break;
            }
        }
        for (_, tx) in waiters {
            let _ = tx.send(Err(RsqlError::execution("the job ended before the checkpoint completed")));
        }
        Ok(())
    }

    fn record_failure(&self) {
        if let Ok(mut s) = self.metrics.checkpoints.lock() {
            s.failed += 1;
        }
    }

    fn write(&self, p: &Pending, finished: &HashMap<NodeId, Vec<u8>>) -> Result<Completed> {
        let nodes = (0..self.nodes.len())
            .map(|n| NodeState {
                node: n,
                role: self.nodes[n].0.to_string(),
                describe: self.nodes[n].1.clone(),
                bytes: p.states.get(&n).or_else(|| finished.get(&n)).cloned().unwrap_or_default(),
            })
            .collect();
        let cp = Checkpoint { job: self.opts.job.clone(), id: p.id, created_ms: now_ms(), nodes };
        let bytes = cp.state_bytes();
        let path = self.opts.store.save(&cp)?;
        let duration = p.started.elapsed();
        info!(job = %self.opts.job, id = p.id, bytes, ms = duration.as_millis() as u64, path = %path, "checkpoint complete");
        if let Ok(mut s) = self.metrics.checkpoints.lock() {
            s.completed += 1;
            s.last_id = p.id;
            s.last_bytes = bytes as u64;
            s.last_duration = duration;
            s.last_path = path.clone();
        }
        Ok(Completed { id: p.id, path, bytes, duration })
    }
}

fn notify(waiters: &mut Vec<Waiter>, id: u64, r: std::result::Result<Completed, String>) {
    let mut keep = Vec::new();
    for (min, tx) in waiters.drain(..) {
        if min <= id {
            let _ = tx.send(r.clone().map_err(RsqlError::execution));
        } else {
            keep.push((min, tx));
        }
    }
    *waiters = keep;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Barrier alignment

/// Tracks one node's inputs for barrier alignment; `take` hands out messages in the order the
/// node must handle them.
struct Inputs {
    rx: mpsc::Receiver<(usize, Message)>,
    ended: Vec<bool>,
    /// The barrier being aligned and which inputs have delivered it.
    aligning: Option<(u64, Vec<bool>)>,
    held: Vec<(usize, Message)>,
    replay: VecDeque<(usize, Message)>,
}

enum Next {
    Msg(usize, Message),
    /// Checkpoint `id`'s barrier has arrived on every open input.
    Aligned(u64),
    /// Every input has ended.
    Done,
}

impl Inputs {
    fn new(rx: mpsc::Receiver<(usize, Message)>, n: usize) -> Self {
        Inputs { rx, ended: vec![false; n], aligning: None, held: Vec::new(), replay: VecDeque::new() }
    }

    fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    fn aligned(&self) -> Option<u64> {
        let (id, seen) = self.aligning.as_ref()?;
        seen.iter().zip(&self.ended).all(|(s, e)| *s || *e).then_some(*id)
    }

    fn release(&mut self) {
        self.aligning = None;
        for m in self.held.drain(..).rev() {
            self.replay.push_front(m);
        }
    }

    async fn take(&mut self) -> Next {
        loop {
            if let Some(id) = self.aligned() {
                self.release();
                return Next::Aligned(id);
            }
            if self.aligning.is_none() && self.all_ended() {
                return Next::Done;
            }
            let (slot, msg) = match self.replay.pop_front() {
                Some(m) => m,
                None => match self.rx.recv().await {
                    Some(m) => m,
                    None => {
                        // Every upstream task is gone: treat as the end of all inputs.
                        self.ended.iter_mut().for_each(|e| *e = true);
                        continue;
                    }
                },
            };
            if slot >= self.ended.len() {
                continue;
            }
            if let Some((_, seen)) = &self.aligning {
                if seen[slot] {
                    self.held.push((slot, msg));
                    continue;
                }
            }
            match msg {
                Message::Barrier(id) => match &mut self.aligning {
                    Some((cur, seen)) if *cur == id => seen[slot] = true,
                    Some((cur, _)) if *cur > id => {}
                    _ => {
                        // A newer checkpoint overtakes one that never completed here.
                        self.release();
                        let mut seen = vec![false; self.ended.len()];
                        seen[slot] = true;
                        self.aligning = Some((id, seen));
                    }
                },
                Message::End => {
                    self.ended[slot] = true;
                    if self.aligning.is_none() {
                        return Next::Msg(slot, Message::End);
                    }
                }
                Message::Position(_) => {}
                other => return Next::Msg(slot, other),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The job

/// A job that is running.
pub struct RunningJob {
    pub metrics: Arc<JobMetrics>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<()>>,
    checkpoints: Option<mpsc::UnboundedSender<oneshot::Sender<Result<Completed>>>>,
}

/// Asks a running job for a checkpoint (a savepoint before stopping).
#[derive(Clone)]
pub struct CheckpointHandle {
    tx: mpsc::UnboundedSender<oneshot::Sender<Result<Completed>>>,
}

impl CheckpointHandle {
    /// Takes a checkpoint now and waits until it is written.
    pub async fn checkpoint(&self) -> Result<Completed> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| RsqlError::execution("the job has ended; no checkpoint was taken"))?;
        rx.await.map_err(|_| RsqlError::execution("the job ended before the checkpoint completed"))?
    }
}

impl RunningJob {
    /// Asks sources to stop; the job then drains and its sinks flush.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// A handle to take checkpoints on demand, when the job checkpoints.
    pub fn checkpoint_handle(&self) -> Option<CheckpointHandle> {
        self.checkpoints.as_ref().map(|tx| CheckpointHandle { tx: tx.clone() })
    }

    /// Waits for the job to finish, returning its first error.
    pub async fn wait(mut self) -> Result<()> {
        let mut first: Option<RsqlError> = None;
        let mut downstream: Option<RsqlError> = None;
        while let Some(res) = self.tasks.join_next().await {
            let res = match res {
                Ok(r) => r,
                Err(e) => Err(RsqlError::execution(format!("a task of the job failed: {e}"))),
            };
            if let Err(e) = res {
                if e.to_string() == DOWNSTREAM_GONE {
                    downstream.get_or_insert(e);
                } else if first.is_none() {
                    let _ = self.stop.send(true);
                    first = Some(e);
                    // Give the rest a moment to stop, then cut them off.
                    let deadline = tokio::time::sleep(Duration::from_secs(5));
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            _ = &mut deadline => { self.tasks.abort_all(); break; }
                            r = self.tasks.join_next() => { if r.is_none() { break; } }
                        }
                    }
                    break;
                }
            }
        }
        match (first, downstream) {
            (Some(e), _) => Err(e),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        }
    }
}

/// Starts every task of the graph.
pub fn start_job(graph: &JobGraph, opts: &JobOptions) -> Result<RunningJob> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let state_ttl = StateTtl::new(opts.state_ttl);
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let timing = WatermarkTiming { interval_ms: millis(opts.watermark_interval), idle_timeout_ms: millis(opts.idle_timeout) };
    let metrics = match &opts.metrics {
        Some(m) if m.nodes.len() == graph.nodes.len() => m.clone(),
        _ => Arc::new(JobMetrics {
            nodes: graph.nodes.iter().map(|n| (n.describe.clone(), NodeMetrics::default())).collect(),
            checkpoints: Mutex::new(CheckpointStats::default()),
        }),
    };
    let consumers = graph.consumers();
    let mut senders: Vec<Option<mpsc::Sender<(usize, Message)>>> = Vec::new();
    let mut receivers: Vec<Option<mpsc::Receiver<(usize, Message)>>> = Vec::new();
    for n in &graph.nodes {
        if n.inputs.is_empty() {
            senders.push(None);
            receivers.push(None);
        } else {
            let (tx, rx) = mpsc::channel(opts.channel_capacity);
            senders.push(Some(tx));
            receivers.push(Some(rx));
        }
    }
    let outputs_of = |id: NodeId| -> Outputs {
        let mut targets = Vec::new();
        let mut seen = Vec::new();
        for &c in &consumers[id] {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c);
            for (slot, &inp) in graph.node(c).inputs.iter().enumerate() {
                if inp == id {
                    if let Some(tx) = &senders[c] {
                        targets.push((tx.clone(), slot));
                    }
                }
            }
        }
        Outputs { targets, metrics: metrics.clone(), node: id }
    };

    // Sources first: checkpointing needs every one of them to resume from a position.
    let mut sources: HashMap<NodeId, Box<dyn Source>> = HashMap::new();
    for node in &graph.nodes {
        if let NodeKind::Source { table, columns, factory } = &node.kind {
            sources.insert(node.id, factory.create_source(table, columns)?);
        }
    }
    let mut checkpointing = opts.checkpoint.clone();
    if let Some(cp) = &checkpointing {
        if let Some((id, _)) = sources.iter().find(|(_, s)| !s.checkpointable()) {
            let d = &graph.node(*id).describe;
            if cp.restore.is_some() {
                return Err(RsqlError::execution(format!(
                    "job '{}' cannot resume from a checkpoint: source `{d}` cannot resume from a position; start without the saved state (rsql-client --fresh)",
                    cp.job
                )));
            }
            warn!("job '{}' runs without checkpoints: source `{d}` cannot resume from a position", cp.job);
            checkpointing = None;
        }
    }
    let restore = match &checkpointing {
        Some(CheckpointOptions { restore: Some((from, cp)), .. }) => {
            check_restore(graph, from, cp)?;
            info!(job = %cp.job, id = cp.id, from = %from, "resuming from checkpoint");
            Some(cp.clone())
        }
        _ => None,
    };
    let saved = |id: NodeId| -> Option<&[u8]> { restore.as_ref().and_then(|cp| cp.node(id)).map(|s| s.bytes.as_slice()) };

    let (report_tx, report_rx) = mpsc::unbounded_channel::<Report>();
    let (trigger_tx, trigger_rx) = watch::channel(0u64);
    // The id of the newest checkpoint written, for sinks that commit once it is complete.
    let (completed_tx, completed_rx) = watch::channel(0u64);
    let reporter = checkpointing.as_ref().map(|_| report_tx.clone());
    drop(report_tx);

    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    for node in &graph.nodes {
        let id = node.id;
        let outputs = outputs_of(id);
        let reporter = reporter.clone();
        match &node.kind {
            NodeKind::Source { table, .. } => {
                let Some(mut source) = sources.remove(&id) else {
                    return Err(RsqlError::execution("source created twice"));
                };
                let mut last_pos = Vec::new();
                if let Some(pos) = saved(id).filter(|p| !p.is_empty()) {
                    source.restore(pos).map_err(|e| {
                        RsqlError::execution(format!("source '{}' cannot resume from the checkpoint: {e}", table.path.name))
                    })?;
                    last_pos = pos.to_vec();
                }
                if let Ok(mut s) = metrics.nodes[id].1.source.lock() {
                    *s = source.status();
                }
                let (tx, mut rx) = mpsc::channel::<Message>(opts.channel_capacity);
                let ctx = SourceContext {
                    out: tx,
                    stop: stop_rx.clone(),
                    table: table.path.name.clone(),
                    max_batch_delay: opts.max_batch_delay,
                    batch_size: opts.batch_size,
                };
                tasks.spawn(async move { source.run(ctx).await });
                let metrics = metrics.clone();
                let mut trigger = trigger_rx.clone();
                tasks.spawn(async move {
                    // Forwards the source's batches; places barriers right after positions.
                    let mut clean = true;
                    let mut pending: Option<u64> = None;
                    let mut trigger_open = reporter.is_some();
                    loop {
                        tokio::select! {
                            m = rx.recv() => {
                                let Some(msg) = m else { break };
                                match msg {
                                    Message::Batch(b) => {
                                        clean = false;
                                        metrics.nodes[id].1.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                                        outputs.send(Message::Batch(b)).await?;
                                    }
                                    Message::Position(p) => {
                                        last_pos = p;
                                        clean = true;
                                    }
                                    m @ (Message::Watermark(_) | Message::Idle(_)) => outputs.send(m).await?,
                                    Message::End => break,
                                    Message::Barrier(_) => {}
                                }
                            }
                            r = trigger.changed(), if trigger_open => match r {
                                Ok(()) => pending = Some(*trigger.borrow_and_update()),
                                Err(_) => trigger_open = false,
                            },
                        }
                        if clean {
                            if let (Some(cp), Some(rep)) = (pending.take(), &reporter) {
                                let _ = rep.send(Report::Node { id: cp, node: id, bytes: last_pos.clone() });
                                outputs.send(Message::Barrier(cp)).await?;
                            }
                        }
                    }
                    if let Some(rep) = &reporter {
                        let _ = rep.send(Report::Finished { node: id, bytes: last_pos });
                    }
                    outputs.send(Message::End).await
                });
            }
            NodeKind::Values { batches } => {
                let done = saved(id).is_some_and(|b| b == b"done");
                let batches = if done { Vec::new() } else { batches.clone() };
                tasks.spawn(async move {
                    for b in batches {
                        outputs.send(Message::Batch(ChangeBatch::inserts(b))).await?;
                    }
                    if let Some(rep) = &reporter {
                        let _ = rep.send(Report::Finished { node: id, bytes: b"done".to_vec() });
                    }
                    outputs.send(Message::End).await
                });
            }
            NodeKind::Sink { create, label } => {
                let mut sink = create()?;
                let rx = receivers[id].take().ok_or_else(|| RsqlError::execution("sink without input"))?;
                let label = label.clone();
                let metrics = metrics.clone();
                let mut inputs = Inputs::new(rx, node.inputs.len());
                let restored = saved(id).map(|b| b.to_vec());
                let mut completed = completed_rx.clone();
                let checkpointed = reporter.is_some();
                let mut stop = stop_rx.clone();
                tasks.spawn(async move {
                    sink.open(checkpointed, restored.as_deref()).await.map_err(|e| with_context(e, &label))?;
                    let mut completed_open = checkpointed;
                    // What the sink saved at its latest snapshot; it stands for the sink once it
                    // has finished.
                    let mut saved_state = Vec::new();
                    loop {
                        let next = tokio::select! {
                            n = inputs.take() => n,
                            r = completed.changed(), if completed_open => {
                                match r {
                                    Ok(()) => {
                                        let cp = *completed.borrow_and_update();
                                        sink.notify_checkpoint_complete(cp).await.map_err(|e| with_context(e, &label))?;
                                    }
                                    Err(_) => completed_open = false,
                                }
                                continue;
                            }
                        };
                        match next {
                            Next::Msg(_, Message::Batch(b)) => {
                                metrics.nodes[id].1.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                                sink.write(b).await.map_err(|e| with_context(e, &label))?;
                            }
                            Next::Msg(..) => {}
                            Next::Aligned(cp) => {
                                saved_state = sink.snapshot(cp).await.map_err(|e| with_context(e, &label))?;
                                if let Some(rep) = &reporter {
                                    let _ = rep.send(Report::Node { id: cp, node: id, bytes: saved_state.clone() });
                                }
                            }
                            Next::Done => break,
                        }
                    }
                    // The inputs ended by themselves (not a stop): with checkpoints, commit only
                    // through a checkpoint taken after the end.
                    let mut finish = !*stop.borrow();
                    if let (true, Some(rep)) = (finish, &reporter) {
                        let mut ctx = FinalCheckpoint { node: id, reports: rep, completed: &mut completed, stop: &mut stop, state: &mut saved_state };
                        finish = ctx.wait(&mut *sink).await.map_err(|e| with_context(e, &label))?;
                    }
                    if finish {
                        sink.finish().await.map_err(|e| with_context(e, &label))?;
                    } else {
                        sink.flush().await.map_err(|e| with_context(e, &label))?;
                    }
                    sink.close().await.map_err(|e| with_context(e, &label))?;
                    if let Some(rep) = &reporter {
                        let _ = rep.send(Report::Finished { node: id, bytes: saved_state });
                    }
                    Ok(())
                });
            }
            _ => {
                let mut op = build_operator(graph, id, &state_ttl, timing)?;
                if let Some(state) = saved(id).filter(|s| !s.is_empty()) {
                    op.restore(state).map_err(|e| {
                        RsqlError::execution(format!("restoring the state of `{}` from the checkpoint: {e}", node.describe))
                    })?;
                }
                let rx = receivers[id].take().ok_or_else(|| RsqlError::execution("operator without input"))?;
                let n_inputs = node.inputs.len();
                let metrics = metrics.clone();
                let mut inputs = Inputs::new(rx, n_inputs);
                tasks.spawn(async move {
                    let mut valve = Valve::new(n_inputs);
                    let mut out = Vec::new();
                    let mut sized_at = Instant::now();
                    let mut timer = op.timer_period().map(|p| {
                        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
                        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        t
                    });
                    loop {
                        let next = match timer.as_mut() {
                            Some(t) => tokio::select! {
                                n = inputs.take() => n,
                                _ = t.tick() => {
                                    op.on_timer(crate::clock::wall_millis(), &mut out)?;
                                    emit_generated(&mut *op, &mut out, &outputs).await?;
                                    continue;
                                }
                            },
                            None => inputs.take().await,
                        };
                        match next {
                            Next::Msg(slot, Message::Batch(b)) => {
                                metrics.nodes[id].1.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                                op.process(slot, b, &mut out)?;
                                if sized_at.elapsed() >= Duration::from_secs(5) {
                                    sized_at = Instant::now();
                                    metrics.nodes[id].1.state_bytes.store(op.state_size() as u64, Ordering::Relaxed);
                                }
                                emit_generated(&mut *op, &mut out, &outputs).await?;
                            }
                            Next::Msg(slot, Message::Watermark(w)) => {
                                if let Some(x) = valve.watermarks.get_mut(slot) {
                                    *x = (*x).max(w);
                                }
                                advance_watermark(&mut *op, &mut valve, &inputs.ended, &mut out, &outputs).await?;
                            }
                            Next::Msg(slot, Message::Idle(idle)) => {
                                if let Some(x) = valve.idle.get_mut(slot) {
                                    *x = idle;
                                }
                                advance_watermark(&mut *op, &mut valve, &inputs.ended, &mut out, &outputs).await?;
                            }
                            Next::Msg(_, Message::End) => {
                                // An ended input no longer holds the watermark back.
                                if n_inputs > 1 && !inputs.all_ended() {
                                    advance_watermark(&mut *op, &mut valve, &inputs.ended, &mut out, &outputs).await?;
                                }
                            }
                            Next::Msg(..) => {}
                            Next::Aligned(cp) => {
                                let state = op.snapshot()?;
                                metrics.nodes[id].1.state_bytes.store(op.state_size() as u64, Ordering::Relaxed);
                                if let Some(rep) = &reporter {
                                    let _ = rep.send(Report::Node { id: cp, node: id, bytes: state });
                                }
                                outputs.send(Message::Barrier(cp)).await?;
                            }
                            Next::Done => break,
                        }
                    }
                    op.on_end(&mut out)?;
                    for b in out.drain(..) {
                        outputs.send(Message::Batch(b)).await?;
                    }
                    metrics.nodes[id].1.state_bytes.store(op.state_size() as u64, Ordering::Relaxed);
                    if let Some(rep) = &reporter {
                        let _ = rep.send(Report::Finished { node: id, bytes: op.snapshot()? });
                    }
                    outputs.send(Message::End).await
                });
            }
        }
    }
    drop(senders);

    let checkpoints = match checkpointing {
        Some(cpo) => {
            let (req_tx, req_rx) = mpsc::unbounded_channel();
            let first = restore.as_ref().map(|c| c.id).unwrap_or(0).max(cpo.store.latest_id()) + 1;
            let coord = Coordinator {
                nodes: graph.nodes.iter().map(|n| (role(&n.kind), n.describe.clone())).collect(),
                opts: cpo,
                trigger: trigger_tx,
                completed: completed_tx,
                reports: report_rx,
                requests: req_rx,
                stop: stop_rx.clone(),
                metrics: metrics.clone(),
                next_id: first,
            };
            tasks.spawn(coord.run());
            Some(req_tx)
        }
        None => None,
    };
    Ok(RunningJob { metrics, stop: stop_tx, tasks, checkpoints })
}

/// An operator's view of its inputs' watermarks and idleness, as Flink's StatusWatermarkValve:
/// the operator's watermark is the smallest over the inputs that are open and active (an ended
/// or idle input does not hold it back) and never goes back, so an input that becomes active
/// again counts once it has caught up; the operator's output is idle when every open input is.
/// When every open input is idle, none of them will move on: the largest of their watermarks
/// is flushed as the operator's watermark.
struct Valve {
    watermarks: Vec<i64>,
    idle: Vec<bool>,
    current: i64,
    out_idle: bool,
}

impl Valve {
    fn new(inputs: usize) -> Self {
        Valve { watermarks: vec![i64::MIN; inputs], idle: vec![false; inputs], current: i64::MIN, out_idle: false }
    }

    /// The combined watermark when it advanced.
    fn advanced(&mut self, ended: &[bool]) -> Option<i64> {
        let open = self.watermarks.iter().zip(&self.idle).zip(ended).filter(|(_, e)| !**e).map(|((w, i), _)| (*w, *i));
        let active_min = open.clone().filter(|(_, i)| !*i).map(|(w, _)| w).min();
        let min = match active_min {
            Some(m) => m,
            None => open.map(|(w, _)| w).max()?,
        };
        if min <= self.current {
            return None;
        }
        self.current = min;
        Some(min)
    }

    /// The output's idleness when it changed.
    fn status_change(&mut self, ended: &[bool]) -> Option<bool> {
        let mut open = self.idle.iter().zip(ended).filter(|(_, e)| !**e).map(|(i, _)| *i).peekable();
        let idle = open.peek().is_some() && open.all(|i| i);
        (idle != self.out_idle).then(|| {
            self.out_idle = idle;
            idle
        })
    }
}

/// Recomputes an operator's watermark and status from its inputs (see [`Valve`]): when the
/// watermark advanced, lets the operator act on it and passes on what it returns after the
/// batches it emitted; passes a change of idleness on (an input becoming active first).
async fn advance_watermark(op: &mut dyn Operator, valve: &mut Valve, ended: &[bool], out: &mut Vec<ChangeBatch>, outputs: &Outputs) -> Result<()> {
    let status = valve.status_change(ended);
    if status == Some(false) {
        outputs.send(Message::Idle(false)).await?;
    }
    if let Some(min) = valve.advanced(ended) {
        let pass = op.on_watermark(min, out)?;
        for b in out.drain(..) {
            outputs.send(Message::Batch(b)).await?;
        }
        if let Some(w) = pass {
            outputs.send(Message::Watermark(w)).await?;
        }
    }
    if status == Some(true) {
        outputs.send(Message::Idle(true)).await?;
    }
    Ok(())
}

/// Sends what an operator produced in `process` or `on_timer`: becoming active again first,
/// then its batches, then the watermark it generated, then becoming idle.
async fn emit_generated(op: &mut dyn Operator, out: &mut Vec<ChangeBatch>, outputs: &Outputs) -> Result<()> {
    let status = op.generated_idleness();
    if status == Some(false) {
        outputs.send(Message::Idle(false)).await?;
    }
    for b in out.drain(..) {
        outputs.send(Message::Batch(b)).await?;
    }
    if let Some(w) = op.generated_watermark() {
        outputs.send(Message::Watermark(w)).await?;
    }
    if status == Some(true) {
        outputs.send(Message::Idle(true)).await?;
    }
    Ok(())
}

/// A sink whose inputs have all ended by themselves, in a job that checkpoints, waiting for the
/// checkpoint that commits its last rows.
struct FinalCheckpoint<'a> {
    node: NodeId,
    reports: &'a mpsc::UnboundedSender<Report>,
    completed: &'a mut watch::Receiver<u64>,
    stop: &'a mut watch::Receiver<bool>,
    /// The sink's latest snapshot, updated here.
    state: &'a mut Vec<u8>,
}

impl FinalCheckpoint<'_> {
    /// Tells the coordinator, answers the checkpoints it asks for with `snapshot`, passes on
    /// completions with `notify_checkpoint_complete`, and returns true once a checkpoint holding
    /// a snapshot from after the end is stored and notified; false when the job is stopped (or
    /// its coordinator gone) first.
    async fn wait(&mut self, sink: &mut dyn Sink) -> Result<bool> {
        let (asks_tx, mut asks) = mpsc::unbounded_channel();
        if self.reports.send(Report::Ended { node: self.node, asks: asks_tx }).is_err() {
            return Ok(false);
        }
        let mut first_after_end: Option<u64> = None;
        loop {
            tokio::select! {
                biased;
                ask = asks.recv() => {
                    let Some(cp) = ask else { return Ok(false) };
                    *self.state = sink.snapshot(cp).await?;
                    let _ = self.reports.send(Report::Node { id: cp, node: self.node, bytes: self.state.clone() });
                    first_after_end.get_or_insert(cp);
                }
                r = self.completed.changed() => {
                    if r.is_err() {
                        return Ok(false);
                    }
                    let cp = *self.completed.borrow_and_update();
                    sink.notify_checkpoint_complete(cp).await?;
                    if first_after_end.is_some_and(|first| cp >= first) {
                        return Ok(true);
                    }
                }
                _ = async { self.stop.wait_for(|stopping| *stopping).await.map(|_| ()) } => return Ok(false),
            }
        }
    }
}

fn with_context(e: RsqlError, label: &str) -> RsqlError {
    match e {
        RsqlError::Execution(m) => RsqlError::Execution(format!("sink {label}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::Valve;

    #[test]
    fn idle_inputs_do_not_hold_back_the_watermark() {
        let open = [false, false];
        let mut v = Valve::new(2);
        v.watermarks = vec![5_000, i64::MIN];
        assert_eq!(v.advanced(&open), None, "input 1 has no watermark yet");
        // Input 1 goes idle: input 0 alone decides.
        v.idle[1] = true;
        assert_eq!(v.status_change(&open), None, "one active input keeps the output active");
        assert_eq!(v.advanced(&open), Some(5_000));
        v.watermarks[0] = 6_000;
        assert_eq!(v.advanced(&open), Some(6_000));
        // Input 1 is active again, behind: the watermark does not go back and waits for it.
        v.idle[1] = false;
        v.watermarks[1] = 2_000;
        assert_eq!(v.advanced(&open), None);
        v.watermarks[0] = 9_000;
        assert_eq!(v.advanced(&open), None);
        v.watermarks[1] = 7_000;
        assert_eq!(v.advanced(&open), Some(7_000));
        // Every open input idle: the output is idle; an ended input does not count.
        v.idle = vec![true, true];
        assert_eq!(v.status_change(&open), Some(true));
        assert_eq!(v.status_change(&open), None);
        assert_eq!(v.advanced(&open), Some(9_000), "all idle: the largest watermark is flushed");
        v.idle[0] = false;
        assert_eq!(v.status_change(&[false, false]), Some(false));
        assert_eq!(v.status_change(&[true, false]), Some(true), "the active input ended; the other is idle");
        assert_eq!(v.status_change(&[true, true]), Some(false), "nothing open: not idle");
    }
}

/// The order in which a sink is called at the end of a bounded input.
#[cfg(test)]
mod final_checkpoint_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use rsql_common::arrow::array::Int32Array;
    use rsql_common::arrow::datatypes::{DataType, Field, Schema};
    use rsql_common::arrow::record_batch::RecordBatch;
    use rsql_common::{ChangeBatch, Result};

    use super::{start_job, CheckpointOptions, JobOptions};
    use crate::checkpoint::CheckpointStore;
    use crate::connector::Sink;
    use crate::graph::JobGraph;
    use crate::testing::{BatchFeed, MemoryStore};

    /// Writes down every call; at a notification, whether that checkpoint is stored already.
    struct Recording {
        calls: Arc<Mutex<Vec<String>>>,
        store: Arc<MemoryStore>,
    }

    impl Recording {
        fn note(&self, call: String) {
            if let Ok(mut c) = self.calls.lock() {
                c.push(call);
            }
        }
    }

    #[async_trait]
    impl Sink for Recording {
        async fn open(&mut self, checkpointing: bool, restored: Option<&[u8]>) -> Result<()> {
            let restored = restored.map(|b| String::from_utf8_lossy(b).to_string());
            self.note(format!("open checkpointing={checkpointing} restored={restored:?}"));
            Ok(())
        }
        async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
            self.note(format!("write {}", batch.num_rows()));
            Ok(())
        }
        async fn flush(&mut self) -> Result<()> {
            self.note("flush".into());
            Ok(())
        }
        async fn snapshot(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
            self.note(format!("snapshot {checkpoint}"));
            Ok(format!("state {checkpoint}").into_bytes())
        }
        async fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
            let stored = self.store.ids().contains(&checkpoint);
            self.note(format!("notify {checkpoint} stored={stored}"));
            Ok(())
        }
        async fn finish(&mut self) -> Result<()> {
            self.note("finish".into());
            Ok(())
        }
        async fn close(&mut self) -> Result<()> {
            self.note("close".into());
            Ok(())
        }
    }

    fn batches(n: i32) -> Vec<ChangeBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        (0..n)
            .map(|i| ChangeBatch::inserts(RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![i]))]).unwrap()))
            .collect()
    }

    fn job(feed: BatchFeed, calls: &Arc<Mutex<Vec<String>>>, store: &Arc<MemoryStore>) -> JobGraph {
        let (calls, store) = (calls.clone(), store.clone());
        feed.into_sink(Arc::new(move || Ok(Box::new(Recording { calls: calls.clone(), store: store.clone() }) as Box<dyn Sink>))).unwrap()
    }

    fn checkpointing(store: &Arc<MemoryStore>) -> JobOptions {
        let store: Arc<dyn CheckpointStore> = store.clone();
        let restore = store.latest().unwrap();
        JobOptions {
            checkpoint: Some(CheckpointOptions {
                job: "final".into(),
                // Only the checkpoints the test asks for, and the final one.
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(30),
                tolerable_failures: 0,
                store,
                restore,
            }),
            ..JobOptions::default()
        }
    }

    fn taken(calls: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        std::mem::take(&mut *calls.lock().unwrap())
    }

    #[tokio::test]
    async fn with_checkpoints_the_sink_commits_through_a_final_checkpoint_then_finishes() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(MemoryStore::default());
        let (feed, release) = BatchFeed::new(batches(4)).hold_after(2);
        let running = start_job(&job(feed, &calls, &store), &checkpointing(&store)).unwrap();
        // Checkpoint 1 while the source still runs (it holds after two batches).
        let handle = running.checkpoint_handle().unwrap();
        assert_eq!(handle.checkpoint().await.unwrap().id, 1);
        while !calls.lock().unwrap().iter().any(|c| c.starts_with("notify 1")) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(true).unwrap();
        running.wait().await.unwrap();
        assert_eq!(
            taken(&calls),
            [
                "open checkpointing=true restored=None",
                "write 1",
                "write 1",
                "snapshot 1",
                "notify 1 stored=true",
                "write 1",
                "write 1",
                "snapshot 2",
                "notify 2 stored=true",
                "finish",
                "close",
            ]
        );
        assert_eq!(store.ids(), [1, 2]);
        let last = store.get(2).unwrap();
        assert_eq!(last.node(0).unwrap().bytes, 4u64.to_le_bytes(), "the source's position after its last batch");
        assert_eq!(last.node(1).unwrap().bytes, b"state 2");

        // Resumed from its final checkpoint, the job reads nothing and ends the same way.
        let running = start_job(&job(BatchFeed::new(batches(4)), &calls, &store), &checkpointing(&store)).unwrap();
        running.wait().await.unwrap();
        assert_eq!(
            taken(&calls),
            ["open checkpointing=true restored=Some(\"state 2\")", "snapshot 3", "notify 3 stored=true", "finish", "close"]
        );
    }

    #[tokio::test]
    async fn a_checkpoint_under_way_at_the_end_asks_the_waiting_sink() {
        // Checkpoints every millisecond over a quick feed: some are under way when the input
        // ends. Whatever the interleaving, the sink ends with snapshot, notify, finish, close, and
        // the last checkpoint stored holds its snapshot from after the end.
        for round in 0..20 {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let store = Arc::new(MemoryStore::default());
            let mut opts = checkpointing(&store);
            if let Some(c) = opts.checkpoint.as_mut() {
                c.interval = Duration::from_millis(1);
            }
            let feed = BatchFeed::new(batches(20)).pause(Duration::from_micros(300));
            start_job(&job(feed, &calls, &store), &opts).unwrap().wait().await.unwrap();
            let calls = taken(&calls);
            let n = calls.len();
            let last = *store.ids().last().unwrap();
            assert_eq!(calls[n - 4..], [format!("snapshot {last}"), format!("notify {last} stored=true"), "finish".into(), "close".into()], "round {round}: {calls:?}");
            assert_eq!(calls.iter().filter(|c| c.starts_with("write")).count(), 20);
            let last_write = calls.iter().rposition(|c| c.starts_with("write")).unwrap();
            assert!(calls[last_write..].iter().any(|c| c == &format!("snapshot {last}")));
            assert_eq!(store.get(last).unwrap().node(1).unwrap().bytes, format!("state {last}").into_bytes());
        }
    }

    #[tokio::test]
    async fn without_checkpoints_the_sink_finishes_after_its_last_write() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(MemoryStore::default());
        start_job(&job(BatchFeed::new(batches(3)), &calls, &store), &JobOptions::default()).unwrap().wait().await.unwrap();
        assert_eq!(taken(&calls), ["open checkpointing=false restored=None", "write 1", "write 1", "write 1", "finish", "close"]);
        assert!(store.ids().is_empty());
    }

    #[tokio::test]
    async fn a_stopped_job_flushes_without_finishing() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(MemoryStore::default());
        let (feed, _release) = BatchFeed::new(batches(3)).hold_after(1);
        let running = start_job(&job(feed, &calls, &store), &checkpointing(&store)).unwrap();
        while !calls.lock().unwrap().iter().any(|c| c.starts_with("write")) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        running.stop();
        running.wait().await.unwrap();
        assert_eq!(taken(&calls), ["open checkpointing=true restored=None", "write 1", "flush", "close"]);
        assert!(store.ids().is_empty(), "no checkpoint after a stop");
    }
}
