//! Runs a dataflow graph: one tokio task per node, joined by bounded channels so a slow sink
//! slows its sources down instead of buffering without bound. The job ends when every sink has
//! seen the end of its input (bounded sources) or when it is asked to stop; sinks are flushed and
//! closed on the way out. The first failing task stops the whole job with its error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsql_common::{ChangeBatch, Result, RsqlError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::connector::{Message, SourceContext};
use crate::graph::{JobGraph, NodeId, NodeKind};
use crate::operators::aggregate::GroupAggregate;
use crate::operators::calc::Calc;
use crate::operators::join::Join;
use crate::operators::materializer::SinkMaterializer;
use crate::operators::normalize::ChangelogNormalize;
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
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions { channel_capacity: 8, batch_size: 4096, max_batch_delay: Duration::from_millis(10) }
    }
}

/// Rows in and out of every node, readable while the job runs.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
}

#[derive(Debug)]
pub struct JobMetrics {
    pub nodes: Vec<(String, NodeMetrics)>,
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

fn build_operator(graph: &JobGraph, id: NodeId) -> Result<Box<dyn Operator>> {
    let node = graph.node(id);
    let input_schema = |i: usize| graph.node(node.inputs[i]).schema.clone();
    Ok(match &node.kind {
        NodeKind::Calc { filter, exprs, .. } => Box::new(Calc::new(filter.clone(), exprs.clone(), node.schema.clone())),
        NodeKind::ChangelogNormalize { key } => Box::new(ChangelogNormalize::new(node.schema.clone(), key)?),
        NodeKind::Join { kind, left_keys, right_keys, filter } => Box::new(Join::new(
            *kind,
            input_schema(0),
            input_schema(1),
            left_keys,
            right_keys,
            filter.clone(),
            node.schema.clone(),
        )?),
        NodeKind::GroupAggregate { group, aggs } => {
            let append_only = graph.node(node.inputs[0]).mode.is_insert_only();
            Box::new(GroupAggregate::new(input_schema(0), group, aggs.clone(), node.schema.clone(), append_only)?)
        }
        NodeKind::Union => Box::new(PassThrough),
        NodeKind::SinkMaterializer { key } => Box::new(SinkMaterializer::new(node.schema.clone(), key)?),
        NodeKind::LookupJoin { create, probe_keys, dim_columns, dim_filters, left_outer, filter } => {
            Box::new(crate::operators::lookup_join::LookupJoin::new(create()?, probe_keys, dim_columns, dim_filters.clone(), *left_outer, filter.clone(), node.schema.clone()))
        }
        NodeKind::Source { .. } | NodeKind::Values { .. } | NodeKind::Sink { .. } => {
            return Err(RsqlError::execution(format!("node {} is not an operator", node.kind.name())))
        }
    })
}

/// A job that is running.
pub struct RunningJob {
    pub metrics: Arc<JobMetrics>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<()>>,
}

impl RunningJob {
    /// Asks sources to stop; the job then drains and its sinks flush.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
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
    let metrics = Arc::new(JobMetrics {
        nodes: graph.nodes.iter().map(|n| (n.describe.clone(), NodeMetrics::default())).collect(),
    });
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

    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    for node in &graph.nodes {
        let id = node.id;
        let outputs = outputs_of(id);
        match &node.kind {
            NodeKind::Source { table, columns, factory } => {
                let mut source = factory.create_source(table, columns)?;
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
                tasks.spawn(async move {
                    while let Some(msg) = rx.recv().await {
                        if let Message::Batch(b) = &msg {
                            metrics.nodes[id].1.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        }
                        if matches!(msg, Message::End) {
                            break;
                        }
                        outputs.send(msg).await?;
                    }
                    outputs.send(Message::End).await
                });
            }
            NodeKind::Values { batches } => {
                let batches = batches.clone();
                tasks.spawn(async move {
                    for b in batches {
                        outputs.send(Message::Batch(ChangeBatch::inserts(b))).await?;
                    }
                    outputs.send(Message::End).await
                });
            }
            NodeKind::Sink { create, label } => {
                let mut sink = create()?;
                let mut rx = receivers[id].take().ok_or_else(|| RsqlError::execution("sink without input"))?;
                let label = label.clone();
                let metrics = metrics.clone();
                let n_inputs = node.inputs.len();
                tasks.spawn(async move {
                    let mut ended = 0;
                    while let Some((_, msg)) = rx.recv().await {
                        match msg {
                            Message::Batch(b) => {
                                metrics.nodes[id].1.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                                sink.write(b).await.map_err(|e| with_context(e, &label))?;
                            }
                            Message::Watermark(_) => {}
                            Message::End => {
                                ended += 1;
                                if ended >= n_inputs {
                                    break;
                                }
                            }
                        }
                    }
                    sink.flush().await.map_err(|e| with_context(e, &label))?;
                    sink.close().await.map_err(|e| with_context(e, &label))
                });
            }
            _ => {
                let mut op = build_operator(graph, id)?;
                let mut rx = receivers[id].take().ok_or_else(|| RsqlError::execution("operator without input"))?;
                let n_inputs = node.inputs.len();
                let metrics = metrics.clone();
                tasks.spawn(async move {
                    let mut ended = 0;
                    let mut wms = vec![i64::MIN; n_inputs];
                    let mut out = Vec::new();
                    while let Some((slot, msg)) = rx.recv().await {
                        match msg {
                            Message::Batch(b) => {
                                metrics.nodes[id].1.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                                op.process(slot, b, &mut out)?;
                                for b in out.drain(..) {
                                    outputs.send(Message::Batch(b)).await?;
                                }
                            }
                            Message::Watermark(w) => {
                                if let Some(x) = wms.get_mut(slot) {
                                    *x = (*x).max(w);
                                }
                                let min = wms.iter().copied().min().unwrap_or(i64::MIN);
                                if min > i64::MIN {
                                    outputs.send(Message::Watermark(min)).await?;
                                }
                            }
                            Message::End => {
                                ended += 1;
                                if ended >= n_inputs {
                                    op.on_end(&mut out)?;
                                    for b in out.drain(..) {
                                        outputs.send(Message::Batch(b)).await?;
                                    }
                                    break;
                                }
                            }
                        }
                    }
                    outputs.send(Message::End).await
                });
            }
        }
    }
    drop(senders);
    Ok(RunningJob { metrics, stop: stop_tx, tasks })
}

fn with_context(e: RsqlError, label: &str) -> RsqlError {
    match e {
        RsqlError::Execution(m) => RsqlError::Execution(format!("sink {label}: {m}")),
        other => other,
    }
}
