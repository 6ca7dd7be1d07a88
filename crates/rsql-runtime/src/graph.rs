//! The dataflow graph a planned job becomes: nodes in topological order (every input has a
//! smaller id than its consumer), each with its output schema, changelog mode and unique key.

use std::fmt;
use std::sync::Arc;

use datafusion_physical_expr::PhysicalExpr;
use rsql_common::arrow::datatypes::{DataType, SchemaRef};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::catalog::TableDef;
use rsql_common::Result;

use crate::connector::{ChangelogMode, ConnectorFactory, LookupFunction, ProducedColumn, Sink};

pub type NodeId = usize;
pub type PhysExpr = Arc<dyn PhysicalExpr>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    pub fn left_outer(self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Full)
    }
    pub fn right_outer(self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Full)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AggFunc {
    /// COUNT(*) counts rows.
    CountStar,
    /// COUNT(x) counts non-null values.
    Count,
    Sum,
    Avg,
    Min,
    Max,
    FirstValue,
    LastValue,
    /// LISTAGG / STRING_AGG with its separator.
    ListAgg(String),
}

impl fmt::Display for AggFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggFunc::CountStar => f.write_str("COUNT(*)"),
            AggFunc::Count => f.write_str("COUNT"),
            AggFunc::Sum => f.write_str("SUM"),
            AggFunc::Avg => f.write_str("AVG"),
            AggFunc::Min => f.write_str("MIN"),
            AggFunc::Max => f.write_str("MAX"),
            AggFunc::FirstValue => f.write_str("FIRST_VALUE"),
            AggFunc::LastValue => f.write_str("LAST_VALUE"),
            AggFunc::ListAgg(_) => f.write_str("LISTAGG"),
        }
    }
}

/// One aggregate call: function, argument column of the input, DISTINCT, output type.
#[derive(Clone, Debug)]
pub struct AggCall {
    pub func: AggFunc,
    pub arg: Option<usize>,
    pub distinct: bool,
    /// A BOOLEAN input column from `FILTER (WHERE ...)`.
    pub filter: Option<usize>,
    pub output_type: DataType,
    pub name: String,
}

/// One ORDER BY column of a Top-N.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortColumn {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

/// How a Top-N orders the rows of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RankOrder {
    /// By the values of input columns (ties keep arrival order).
    Columns(Vec<SortColumn>),
    /// By arrival: the ORDER BY is one processing-time attribute.
    Arrival { descending: bool },
}

/// The time attribute a deduplication orders by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DedupOrder {
    /// Processing time: arrival order.
    Proctime,
    /// An event-time (rowtime) column of the input.
    Rowtime(usize),
}

/// The shape of a window table function (`TUMBLE`, `HOP`, `CUMULATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Tumble,
    Hop,
    Cumulate,
}

/// A window table function's windows; every length is in microseconds (the unit of timestamp
/// columns), and every value a whole number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    /// TUMBLE and HOP: the window size; CUMULATE: the largest window size.
    pub size: i64,
    /// HOP: the slide; CUMULATE: the step; TUMBLE: the size.
    pub step: i64,
    /// Shifts window starts away from multiples of the size (0 by default).
    pub offset: i64,
}

/// `10 s`, `1 min`, `500 ms`, as Flink's plans print durations.
pub fn duration_text(micros: i64) -> String {
    let ms = micros / 1000;
    for (unit, name) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "min"), (1000, "s")] {
        if ms != 0 && ms % unit == 0 {
            return format!("{} {name}", ms / unit);
        }
    }
    format!("{ms} ms")
}

impl WindowSpec {
    /// The windows `[start, end)` holding time `ts`, in the order Flink assigns them.
    pub fn assign(&self, ts: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match self.kind {
            WindowKind::Tumble => {
                let start = ts - (ts - self.offset).rem_euclid(self.size);
                out.push((start, start + self.size));
            }
            WindowKind::Hop => {
                // The latest window first, as Flink's sliding assigner lists them.
                let mut start = ts - (ts - self.offset).rem_euclid(self.step);
                while start > ts - self.size {
                    out.push((start, start + self.size));
                    start -= self.step;
                }
            }
            WindowKind::Cumulate => {
                let start = ts - (ts - self.offset).rem_euclid(self.size);
                let mut end = start + self.step;
                while end <= start + self.size {
                    if end > ts {
                        out.push((start, end));
                    }
                    end += self.step;
                }
            }
        }
    }

    /// `TUMBLE(time_col=[ts], size=[10 s])`, as Flink's plans print windows.
    pub fn describe(&self, time_col: &str) -> String {
        let offset = if self.offset != 0 { format!(", offset=[{}]", duration_text(self.offset)) } else { String::new() };
        match self.kind {
            WindowKind::Tumble => format!("TUMBLE(time_col=[{time_col}], size=[{}]{offset})", duration_text(self.size)),
            WindowKind::Hop => format!("HOP(time_col=[{time_col}], size=[{}], slide=[{}]{offset})", duration_text(self.size), duration_text(self.step)),
            WindowKind::Cumulate => {
                format!("CUMULATE(time_col=[{time_col}], max_size=[{}], step=[{}]{offset})", duration_text(self.size), duration_text(self.step))
            }
        }
    }
}

/// Creates the sink of a sink node when the job starts.
pub type SinkFactoryFn = Arc<dyn Fn() -> Result<Box<dyn Sink>> + Send + Sync>;

/// Creates the lookup function of a lookup join when the job starts.
pub type LookupFactoryFn = Arc<dyn Fn() -> Result<Box<dyn LookupFunction>> + Send + Sync>;

#[derive(Clone)]
pub enum NodeKind {
    Source { table: Arc<TableDef>, columns: Vec<ProducedColumn>, factory: Arc<dyn ConnectorFactory> },
    Values { batches: Vec<RecordBatch> },
    /// Filter then project, on whole batches.
    Calc { filter: Option<PhysExpr>, exprs: Vec<PhysExpr>, filter_text: Option<String>, expr_texts: Vec<String> },
    /// Upserts keyed by `key` become a proper changelog (+I, -U/+U, -D); duplicates are dropped.
    ChangelogNormalize { key: Vec<usize> },
    /// Regular equi-join with state on both sides; `filter` runs over the joined row.
    Join { kind: JoinKind, left_keys: Vec<usize>, right_keys: Vec<usize>, filter: Option<PhysExpr> },
    /// GROUP BY the leading `group` input columns; aggregates over input columns.
    GroupAggregate { group: Vec<usize>, aggs: Vec<AggCall> },
    /// UNION ALL of inputs with one schema.
    Union,
    /// Top-N per partition (Flink's Rank): the rows ranked `range.0..=range.1` (1-based) by
    /// `order` within each `partition`. The output is the input columns followed by one UInt64
    /// column: the row number when `output_rank`, else the constant `range.0` (the value itself
    /// when the range is one row; otherwise no consumer reads it). `proctime` lists input columns
    /// holding processing-time attributes, left out when matching retractions to stored rows.
    Rank { partition: Vec<usize>, order: RankOrder, range: (u64, u64), output_rank: bool, proctime: Vec<usize> },
    /// Keeps the first or last row per `key` of an insert-only input by a time attribute. The
    /// output is the input columns followed by the constant row number 1 (UInt64).
    Deduplicate { key: Vec<usize>, keep_last: bool, order: DedupOrder },
    /// Keeps the rows of an updating stream per sink primary key so that retractions of older
    /// rows do not delete a key that still has a row (Flink's SinkUpsertMaterializer).
    SinkMaterializer { key: Vec<usize> },
    /// Lookup join (`JOIN dim FOR SYSTEM_TIME AS OF ...`): each input row looks its `probe_keys`
    /// columns up in a dimension table and is joined with the rows found there that pass
    /// `dim_filters` (over the table's physical columns), taking their `dim_columns` (indices into
    /// those columns); `filter` runs over the joined row; `left_outer` keeps input rows without a
    /// match, padded with NULLs.
    LookupJoin {
        create: LookupFactoryFn,
        probe_keys: Vec<usize>,
        dim_columns: Vec<usize>,
        dim_filters: Vec<PhysExpr>,
        left_outer: bool,
        filter: Option<PhysExpr>,
    },
    /// Generates event-time watermarks from a table's `WATERMARK FOR` expression: the largest
    /// value of `expr` seen so far (bounded out-of-orderness), emitted as the job's
    /// `pipeline.auto-watermark-interval` says, and marks the stream idle after the job's
    /// `table.exec.source.idle-timeout` without rows; watermarks from upstream are dropped, as
    /// Flink's WatermarkAssigner does.
    WatermarkAssigner { rowtime: usize, expr: PhysExpr },
    /// A window table function: each input row once per window of its `time_col`, followed by
    /// `window_start`, `window_end` and `window_time` (= window_end - 1 ms).
    WindowTableFunction { time_col: usize, spec: WindowSpec },
    /// Window aggregation over window TVF rows: GROUP BY the leading `group` input columns, among
    /// them `window_start` and `window_end` at the given input positions; each window's groups are
    /// emitted once (+I) when the watermark reaches the window's end, then forgotten.
    WindowAggregate { group: Vec<usize>, window_start: usize, window_end: usize, aggs: Vec<AggCall> },
    Sink { label: String, create: SinkFactoryFn },
}

impl fmt::Debug for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl NodeKind {
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Source { .. } => "TableSourceScan",
            NodeKind::Values { .. } => "Values",
            NodeKind::Calc { .. } => "Calc",
            NodeKind::ChangelogNormalize { .. } => "ChangelogNormalize",
            NodeKind::Join { .. } => "Join",
            NodeKind::GroupAggregate { .. } => "GroupAggregate",
            NodeKind::Union => "Union",
            NodeKind::Rank { .. } => "Rank",
            NodeKind::Deduplicate { .. } => "Deduplicate",
            NodeKind::SinkMaterializer { .. } => "SinkMaterializer",
            NodeKind::LookupJoin { .. } => "LookupJoin",
            NodeKind::WatermarkAssigner { .. } => "WatermarkAssigner",
            NodeKind::WindowTableFunction { .. } => "WindowTableFunction",
            NodeKind::WindowAggregate { .. } => "WindowAggregate",
            NodeKind::Sink { .. } => "Sink",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub id: NodeId,
    pub kind: NodeKind,
    pub inputs: Vec<NodeId>,
    pub schema: SchemaRef,
    pub mode: ChangelogMode,
    /// Columns whose values identify a row of this stream, when known.
    pub unique_key: Option<Vec<usize>>,
    /// What EXPLAIN prints for the node.
    pub describe: String,
}

/// A job: one or more pipelines from sources to sinks.
#[derive(Clone, Debug, Default)]
pub struct JobGraph {
    pub nodes: Vec<Node>,
}

impl JobGraph {
    pub fn add(&mut self, mut node: Node) -> NodeId {
        node.id = self.nodes.len();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The consumers of each node.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                out[i].push(n.id);
            }
        }
        out
    }

    /// The plan as an indented tree per sink, with changelog modes and unique keys, in the
    /// spirit of Flink's EXPLAIN CHANGELOG_MODE. A node feeding several consumers (a source read
    /// once for several INSERTs) is printed once with `reuse_id=[n]` and referred to after that.
    pub fn explain(&self, with_changelog: bool) -> String {
        let consumers = self.consumers();
        let mut reuse: Vec<Option<usize>> = vec![None; self.nodes.len()];
        let mut next = 1;
        for n in &self.nodes {
            if consumers[n.id].len() > 1 {
                reuse[n.id] = Some(next);
                next += 1;
            }
        }
        let mut printed = vec![false; self.nodes.len()];
        let mut out = String::new();
        for n in &self.nodes {
            if consumers[n.id].is_empty() {
                self.explain_node(n.id, 0, with_changelog, &reuse, &mut printed, &mut out);
            }
        }
        out
    }

    fn explain_node(&self, id: NodeId, depth: usize, with_changelog: bool, reuse: &[Option<usize>], printed: &mut [bool], out: &mut String) {
        let n = &self.nodes[id];
        let indent = if depth == 0 { String::new() } else { format!("{}+- ", ":  ".repeat(depth - 1)) };
        out.push_str(&indent);
        if let (Some(r), true) = (reuse[id], printed[id]) {
            out.push_str(&format!("Reused(reference_id=[{r}])\n"));
            return;
        }
        printed[id] = true;
        out.push_str(&n.describe);
        if with_changelog {
            out.push_str(&format!(", changelogMode=[{}]", n.mode.flink_notation()));
            if let Some(k) = &n.unique_key {
                let names: Vec<&str> = k.iter().map(|i| n.schema.field(*i).name().as_str()).collect();
                out.push_str(&format!(", uniqueKeys=[{}]", names.join(", ")));
            }
            if let ChangelogMode::Upsert { key } = &n.mode {
                out.push_str(&format!(", upsertKey=[{}]", key.join(", ")));
            }
        }
        if let Some(r) = reuse[id] {
            out.push_str(&format!(", reuse_id=[{r}]"));
        }
        out.push('\n');
        for &i in &n.inputs {
            self.explain_node(i, depth + 1, with_changelog, reuse, printed, out);
        }
    }
}
