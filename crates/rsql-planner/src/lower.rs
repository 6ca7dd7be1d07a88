//! Lowers DataFusion logical plans onto the dataflow graph, bottom-up, deciding each node's
//! changelog mode and unique key on the way (where Flink would put ChangelogNormalize after an
//! upsert source, and a SinkMaterializer before an upsert sink). Every lowered node's columns
//! line up by position with its logical plan node's schema, so parent expressions compile against
//! the logical schema. Anything the engine cannot run incrementally is a planning error that names
//! the construct.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::{DFSchema, DFSchemaRef, ScalarValue};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::expr::{AggregateFunction, Alias, WindowFunction};
use datafusion_expr::logical_plan::{Aggregate, Filter, Join, JoinType, LogicalPlan, Projection, TableScan, Window};
use datafusion_expr::utils::{conjunction, split_conjunction};
use datafusion_expr::{BinaryExpr, Operator as BinaryOp};
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::{Expr, ExprSchemable};
use datafusion_physical_expr::create_physical_expr;
use rsql_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rsql_common::catalog::{ColumnKind, ObjectPath, TableDef};
use rsql_common::{Result, RsqlError};
use rsql_runtime::graph::{AggCall, AggFunc, DedupOrder, JobGraph, JoinKind, Node, NodeId, NodeKind, PhysExpr, RankOrder, SortColumn};
use rsql_runtime::{ChangelogMode, ConnectorRegistry, ProducedColumn};

use crate::catalog::CatalogEntry;
use crate::provider::CatalogTable;
use crate::window::WindowTvf;

/// A lowered node: where it is and what its rows look like.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub id: NodeId,
    pub mode: ChangelogMode,
    pub unique_key: Option<Vec<usize>>,
}

pub struct Lowerer<'a> {
    pub graph: JobGraph,
    registry: &'a ConnectorRegistry,
    /// Sources already in the graph, so a table read by several statements is read once.
    sources: HashMap<ObjectPath, Lowered>,
    /// Planner for computed columns of tables.
    computed: &'a dyn Fn(&TableDef, &str, &DFSchema) -> Result<Expr>,
    /// Joins and aggregates already in the graph, by their logical plan: the same sub-plan in
    /// several statements of a statement set (a view read by several INSERTs) is built once and
    /// fanned out, as Flink's `table.optimizer.reuse-sub-plan-enabled` does.
    reused: HashMap<LogicalPlan, Lowered>,
    /// `table.optimizer.reuse-sub-plan-enabled` (default true).
    pub reuse_sub_plans: bool,
}

pub(crate) fn physical(e: &Expr, schema: &DFSchema) -> Result<PhysExpr> {
    let props = ExecutionProps::new();
    Ok(create_physical_expr(e, schema, &props, &PhysicalPlanningContext::default())?)
}

fn col_expr(i: usize, schema: &Schema) -> PhysExpr {
    Arc::new(datafusion_physical_expr::expressions::Column::new(schema.field(i).name(), i))
}

fn unsupported(what: impl Into<String>) -> RsqlError {
    RsqlError::unsupported(what)
}

fn arrow_schema(s: &DFSchemaRef) -> SchemaRef {
    Arc::new(s.as_arrow().clone())
}

/// The dimension side of a lookup join: its table, the columns it gives the join (indices into
/// the table's physical columns) and the filters over the table's columns (pushed down from
/// WHERE or ON), rewritten to name the table's columns directly.
pub(crate) struct DimScan {
    table: Arc<TableDef>,
    columns: Vec<usize>,
    filters: Vec<Expr>,
}

/// Rewrites the columns of `e` (bound to `schema`) into the table's own column names, through
/// `columns` (the position of each column of `schema` among the table's columns).
fn to_table_columns(e: &Expr, schema: &DFSchema, columns: &[usize], table: &TableDef) -> Result<Expr> {
    use datafusion_common::tree_node::{Transformed, TreeNode};
    let full = table.full_schema();
    let r = e.clone().transform(|x| match x {
        Expr::Column(c) => {
            let p = schema.index_of_column(&c)?;
            let name = full.field(columns[p]).name().clone();
            Ok(Transformed::yes(Expr::Column(datafusion_common::Column::new_unqualified(name))))
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(r.data)
}

/// Whether `plan` reads a table with FOR SYSTEM_TIME AS OF (through aliases, filters and
/// projections of plain columns).
fn dim_scan(plan: &LogicalPlan) -> Option<Result<DimScan>> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => dim_scan(&a.input),
        LogicalPlan::Filter(f) => dim_scan(&f.input).map(|r| {
            let mut d = r?;
            let e = to_table_columns(&f.predicate, f.input.schema(), &d.columns, &d.table)?;
            d.filters.push(e);
            Ok(d)
        }),
        LogicalPlan::Projection(p) => dim_scan(&p.input).map(|r| {
            let mut d = r?;
            let mut cols = Vec::with_capacity(p.expr.len());
            for e in &p.expr {
                let inner = match e {
                    Expr::Alias(Alias { expr, .. }) => expr.as_ref(),
                    other => other,
                };
                let Expr::Column(c) = inner else {
                    return Err(unsupported(format!(
                        "the expression {e} over lookup table {} is computed before the join; compute it after the join instead",
                        d.table.path
                    )));
                };
                cols.push(d.columns[p.input.schema().index_of_column(c)?]);
            }
            d.columns = cols;
            Ok(d)
        }),
        LogicalPlan::TableScan(scan) => {
            let ct = scan.source.as_ref().downcast_ref::<CatalogTable>()?;
            if !ct.lookup {
                return None;
            }
            match &ct.entry {
                CatalogEntry::Table(t) => {
                    let n = t.full_schema().fields().len();
                    let columns = scan.projection.clone().unwrap_or_else(|| (0..n).collect());
                    Some(Ok(DimScan { table: t.clone(), columns, filters: Vec::new() }))
                }
                CatalogEntry::View(_) => Some(Err(unsupported(format!("FOR SYSTEM_TIME AS OF needs a table, and {} is a view", ct.path)))),
            }
        }
        _ => None,
    }
}

impl<'a> Lowerer<'a> {
    pub fn new(registry: &'a ConnectorRegistry, computed: &'a dyn Fn(&TableDef, &str, &DFSchema) -> Result<Expr>) -> Self {
        Lowerer { graph: JobGraph::default(), registry, sources: HashMap::new(), computed, reused: HashMap::new(), reuse_sub_plans: true }
    }

    pub fn add(&mut self, kind: NodeKind, inputs: Vec<NodeId>, schema: SchemaRef, mode: ChangelogMode, unique_key: Option<Vec<usize>>, describe: String) -> Lowered {
        let id = self.graph.add(Node { id: 0, kind, inputs, schema, mode: mode.clone(), unique_key: unique_key.clone(), describe });
        Lowered { id, mode, unique_key }
    }

    pub fn schema_of(&self, id: NodeId) -> SchemaRef {
        self.graph.node(id).schema.clone()
    }

    pub fn lower(&mut self, plan: &LogicalPlan) -> Result<Lowered> {
        let reusable = self.reuse_sub_plans && matches!(plan, LogicalPlan::Join(_) | LogicalPlan::Aggregate(_));
        if reusable {
            if let Some(l) = self.reused.get(plan) {
                return Ok(l.clone());
            }
        }
        let l = self.lower_node(plan)?;
        if reusable {
            self.reused.insert(plan.clone(), l.clone());
        }
        Ok(l)
    }

    fn lower_node(&mut self, plan: &LogicalPlan) -> Result<Lowered> {
        match plan {
            LogicalPlan::TableScan(scan) => self.lower_scan(scan),
            LogicalPlan::Projection(p) => self.lower_projection(p),
            LogicalPlan::Filter(f) => {
                // A filter on ROW_NUMBER() is a Top-N whose row number is part of the result.
                if let Some(l) = self.lower_rank(f, true)? {
                    return Ok(l);
                }
                let input = self.lower(&f.input)?;
                let in_schema = f.input.schema();
                let pred = physical(&f.predicate, in_schema)?;
                let arrow = arrow_schema(in_schema);
                let exprs = (0..arrow.fields().len()).map(|i| col_expr(i, &arrow)).collect();
                let describe = format!("Calc(where=[{}])", f.predicate);
                let kind = NodeKind::Calc { filter: Some(pred), exprs, filter_text: Some(f.predicate.to_string()), expr_texts: Vec::new() };
                Ok(self.add(kind, vec![input.id], arrow, input.mode.clone(), input.unique_key.clone(), describe))
            }
            LogicalPlan::SubqueryAlias(a) => self.lower(&a.input),
            LogicalPlan::Join(j) => self.lower_join(j),
            LogicalPlan::Aggregate(a) => self.lower_aggregate(a),
            LogicalPlan::Union(u) => {
                let inputs = u.inputs.iter().map(|i| self.lower(i)).collect::<Result<Vec<_>>>()?;
                let schema = arrow_schema(&u.schema);
                let mode = if inputs.iter().all(|i| i.mode.is_insert_only()) { ChangelogMode::InsertOnly } else { ChangelogMode::All };
                // Inputs may differ from the union's schema in nullability only; align them.
                let mut ids = Vec::new();
                for (inp, plan) in inputs.iter().zip(&u.inputs) {
                    let s = self.schema_of(inp.id);
                    if s.fields().iter().zip(schema.fields()).all(|(a, b)| a.data_type() == b.data_type()) {
                        ids.push(inp.id);
                    } else {
                        let exprs = schema
                            .fields()
                            .iter()
                            .enumerate()
                            .map(|(i, f)| {
                                let c = Expr::Column(plan.schema().columns()[i].clone());
                                physical(&c.cast_to(f.data_type(), plan.schema().as_ref())?, plan.schema())
                            })
                            .collect::<Result<Vec<_>>>()?;
                        let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: Vec::new() };
                        ids.push(self.add(kind, vec![inp.id], schema.clone(), inp.mode.clone(), None, "Calc(cast)".into()).id);
                    }
                }
                Ok(self.add(NodeKind::Union, ids, schema, mode, None, "Union(all=[true])".into()))
            }
            LogicalPlan::Values(v) => {
                let schema = arrow_schema(&v.schema);
                let empty = DFSchema::empty();
                let one = RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &RecordBatchOptions::new().with_row_count(Some(1)))?;
                let mut cols: Vec<Vec<ScalarValue>> = vec![Vec::new(); schema.fields().len()];
                for row in &v.values {
                    for (j, e) in row.iter().enumerate() {
                        let target = schema.field(j).data_type();
                        let pe = physical(e, &empty)?;
                        let arr = pe.evaluate(&one)?.into_array(1)?;
                        let mut sv = ScalarValue::try_from_array(arr.as_ref(), 0)?;
                        if sv.data_type() != *target {
                            sv = sv.cast_to(target)?;
                        }
                        cols[j].push(sv);
                    }
                }
                let arrays = cols
                    .into_iter()
                    .map(|c| ScalarValue::iter_to_array(c).map_err(RsqlError::from))
                    .collect::<Result<Vec<_>>>()?;
                let batch = RecordBatch::try_new_with_options(schema.clone(), arrays, &RecordBatchOptions::new().with_row_count(Some(v.values.len())))?;
                let describe = format!("Values(tuples=[{} rows])", v.values.len());
                Ok(self.add(NodeKind::Values { batches: vec![batch] }, vec![], schema, ChangelogMode::InsertOnly, None, describe))
            }
            LogicalPlan::EmptyRelation(e) => {
                let schema = arrow_schema(&e.schema);
                let rows = if e.produce_one_row { 1 } else { 0 };
                let batch = RecordBatch::try_new_with_options(schema.clone(), vec![], &RecordBatchOptions::new().with_row_count(Some(rows)))?;
                Ok(self.add(NodeKind::Values { batches: vec![batch] }, vec![], schema, ChangelogMode::InsertOnly, None, "Values(tuples=[[]])".into()))
            }
            LogicalPlan::Sort(_) => Err(unsupported(
                "ORDER BY on a streaming query is not supported; remove it, or use ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) for Top-N",
            )),
            LogicalPlan::Limit(_) => Err(unsupported("LIMIT on a streaming query is not supported yet; remove it")),
            LogicalPlan::Window(w) => Err(window_error(w)),
            LogicalPlan::Distinct(_) => Err(unsupported("this form of DISTINCT is not supported yet; use GROUP BY")),
            other => Err(unsupported(format!("{} is not supported in a streaming query yet", other.display()))),
        }
    }

    fn lower_projection(&mut self, p: &Projection) -> Result<Lowered> {
        // Over a Top-N, the row number is computed only when the projection reads it.
        let rank_filter = peel_alias(&p.input).and_then(|f| window_below(&f.input).map(|(w, m)| (f, w, m)));
        let mut rank_name: Option<String> = None;
        let ranked = match rank_filter {
            Some((f, w, mapping)) => {
                rank_name = w.schema.fields().last().map(|f| f.name().clone());
                let n_in = w.input.schema().fields().len();
                let reads_rank = p.expr.iter().flat_map(|e| e.column_refs()).any(|c| {
                    p.input.schema().index_of_column(c).ok().and_then(|i| mapping.get(i)).map(|m| *m >= n_in).unwrap_or(false)
                });
                self.lower_rank(f, reads_rank)?
            }
            None => None,
        };
        let input = match ranked {
            Some(l) => l,
            None => self.lower(&p.input)?,
        };
        let in_schema = p.input.schema();
        let exprs = p.expr.iter().map(|e| physical(e, in_schema)).collect::<Result<Vec<_>>>()?;
        // A key survives a projection when every key column is projected as a plain column.
        let mut mapping: HashMap<usize, usize> = HashMap::new();
        for (out_i, e) in p.expr.iter().enumerate() {
            let inner = match e {
                Expr::Alias(Alias { expr, .. }) => expr.as_ref(),
                other => other,
            };
            if let Expr::Column(c) = inner {
                if let Ok(idx) = in_schema.index_of_column(c) {
                    mapping.entry(idx).or_insert(out_i);
                }
            }
        }
        let unique_key = input.unique_key.as_ref().and_then(|k| k.iter().map(|i| mapping.get(i).copied()).collect::<Option<Vec<_>>>());
        let mode = match &input.mode {
            ChangelogMode::Upsert { key } => {
                let in_arrow = in_schema.as_arrow();
                let names: Option<Vec<String>> = key
                    .iter()
                    .map(|k| in_arrow.index_of(k).ok().and_then(|i| mapping.get(&i)).map(|o| p.schema.field(*o).name().clone()))
                    .collect();
                match names {
                    Some(key) => ChangelogMode::Upsert { key },
                    None => ChangelogMode::All,
                }
            }
            m => m.clone(),
        };
        let mut texts: Vec<String> = p.expr.iter().map(|e| e.to_string()).collect();
        if let Some(long) = &rank_name {
            // Show the row number as the Rank node names it, not by its window definition.
            texts = texts.into_iter().map(|t| t.replace(long.as_str(), "w0$o0")).collect();
        }
        let describe = format!("Calc(select=[{}])", texts.join(", "));
        let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: texts };
        // Fuse with a filter directly below it.
        let added = self.add(kind, vec![input.id], arrow_schema(&p.schema), mode, unique_key, describe);
        Ok(self.fuse_calc(added))
    }

    /// Merges a projection Calc into a filter-only Calc below it (one pass over the batch).
    fn fuse_calc(&mut self, top: Lowered) -> Lowered {
        let top_node = self.graph.node(top.id).clone();
        let Some(&below_id) = top_node.inputs.first() else { return top };
        let below = self.graph.node(below_id).clone();
        let consumers = self.graph.consumers();
        // A node kept for reuse stays as it is: another statement reads it.
        if consumers[below_id].len() != 1 || below_id + 1 != top.id || self.reused.values().any(|l| l.id == below_id) {
            return top;
        }
        let (NodeKind::Calc { filter: Some(f), filter_text, .. }, NodeKind::Calc { filter: None, exprs, expr_texts, .. }) = (&below.kind, &top_node.kind) else {
            return top;
        };
        // The filter Calc passes its input columns through unchanged, so the projection's
        // expressions apply to the filter's input as they are.
        let kind = NodeKind::Calc { filter: Some(f.clone()), exprs: exprs.clone(), filter_text: filter_text.clone(), expr_texts: expr_texts.clone() };
        let describe = format!("Calc(select=[{}], where=[{}])", expr_texts.join(", "), filter_text.clone().unwrap_or_default());
        // Replace the filter node in place and drop the projection node (it is the last one).
        self.graph.nodes.pop();
        let n = &mut self.graph.nodes[below_id];
        n.kind = kind;
        n.schema = top_node.schema.clone();
        n.mode = top_node.mode.clone();
        n.unique_key = top_node.unique_key.clone();
        n.describe = describe;
        Lowered { id: below_id, mode: top.mode, unique_key: top.unique_key }
    }

    /// Lowers `Filter(row-number condition)` over `Window(ROW_NUMBER() OVER (...))` (with
    /// column-only projections between them) to a Rank or Deduplicate node, as Flink plans Top-N
    /// and deduplication. Returns None when the filter is not such a condition. `reads_rank` says
    /// whether anything above reads the row number.
    fn lower_rank(&mut self, f: &Filter, reads_rank: bool) -> Result<Option<Lowered>> {
        let Some((w, mapping)) = window_below(&f.input) else { return Ok(None) };
        if w.window_expr.len() != 1 {
            return Ok(None);
        }
        let n_in = w.input.schema().fields().len();
        let in_schema = f.input.schema();
        let is_rank = |e: &Expr| match strip_casts(e) {
            Expr::Column(c) => in_schema.index_of_column(c).ok().map(|i| mapping[i] == n_in).unwrap_or(false),
            _ => false,
        };
        let refs_rank = |e: &Expr| e.column_refs().into_iter().any(|c| in_schema.index_of_column(c).ok().map(|i| mapping[i] == n_in).unwrap_or(false));
        // Split the condition into row-number bounds and the rest, which runs after the Top-N.
        let mut lower_bound: i64 = 1;
        let mut upper_bound: Option<i64> = None;
        let mut rest: Vec<Expr> = Vec::new();
        let mut bounds = 0;
        for c in split_conjunction(&f.predicate) {
            if !refs_rank(c) {
                rest.push(c.clone());
                continue;
            }
            let Some((op, v)) = rank_comparison(c, &is_rank) else {
                return Err(unsupported(
                    "a Top-N condition must compare the row number with a constant (rn <= N, rn < N, rn = N or rn BETWEEN M AND N); a bound from a column or an expression on the row number is not supported",
                ));
            };
            bounds += 1;
            match op {
                BinaryOp::Lt => upper_bound = Some(upper_bound.map_or(v.saturating_sub(1), |u| u.min(v.saturating_sub(1)))),
                BinaryOp::LtEq => upper_bound = Some(upper_bound.map_or(v, |u| u.min(v))),
                BinaryOp::Gt => lower_bound = lower_bound.max(v.saturating_add(1)),
                BinaryOp::GtEq => lower_bound = lower_bound.max(v),
                _ => {
                    lower_bound = lower_bound.max(v);
                    upper_bound = Some(upper_bound.map_or(v, |u| u.min(v)));
                }
            }
        }
        if bounds == 0 {
            return Ok(None);
        }
        let Expr::WindowFunction(wf) = strip_alias(&w.window_expr[0]) else { return Err(window_error(w)) };
        let fname = wf.fun.name().to_ascii_lowercase();
        match fname.as_str() {
            "row_number" => {}
            "rank" | "dense_rank" => return Err(window_error(w)),
            _ => return Ok(None),
        }
        let Some(end) = upper_bound else {
            return Err(unsupported(
                "Top-N needs an upper bound on the row number; add one, for example WHERE rn <= 10 or rn BETWEEN 2 AND 10",
            ));
        };
        if end < lower_bound {
            return Err(unsupported(format!(
                "the row-number condition selects no rows (from row {lower_bound} to row {end}); fix the bounds"
            )));
        }
        let (start, end) = (lower_bound as u64, end as u64);
        let (partition, order) = rank_columns(wf, w)?;
        let input = self.lower(&w.input)?;
        if let ChangelogMode::Upsert { .. } = input.mode {
            return Err(unsupported("Top-N over an upsert stream without update-before rows is not supported; read the table through ChangelogNormalize"));
        }
        let append_only = input.mode.is_insert_only();
        let win_schema = w.input.schema();
        let name = |i: usize| win_schema.field(i).name().clone();
        let output_rank = reads_rank && start != end;
        let proctime: Vec<usize> = (0..n_in).filter(|i| time_attribute(&w.input, *i) == Some(TimeAttr::Proctime)).collect();
        let order_attr = match order.as_slice() {
            [only] => time_attribute(&w.input, only.column),
            _ => None,
        };
        // The Rank and Deduplicate nodes append one UInt64 column: the row number (or the
        // constant row number of a one-row range).
        let mut fields: Vec<Field> = w.schema.as_arrow().fields().iter().map(|f| f.as_ref().clone()).collect();
        if let Some(last) = fields.last_mut() {
            *last = Field::new("w0$o0", DataType::UInt64, false);
        }
        let node_schema = Arc::new(Schema::new(fields));
        let mut select: Vec<String> = (0..n_in).map(name).collect();
        if output_rank {
            select.push("w0$o0".into());
        } else if reads_rank {
            select.push(format!("{start} AS w0$o0"));
        }
        let keys_text = partition.iter().map(|i| name(*i)).collect::<Vec<_>>().join(", ");
        let ranked = if let (Some(attr), (1, 1), true) = (order_attr, (start, end), append_only) {
            // Flink's Deduplicate: first or last row per key by a time attribute, insert-only input.
            let keep_last = order[0].descending;
            let (dorder, order_text) = match attr {
                TimeAttr::Proctime => (DedupOrder::Proctime, "PROCTIME"),
                TimeAttr::Rowtime => (DedupOrder::Rowtime(order[0].column), "ROWTIME"),
            };
            let mode = if attr == TimeAttr::Proctime && !keep_last { ChangelogMode::InsertOnly } else { ChangelogMode::All };
            let mut describe = format!(
                "Deduplicate(keep=[{}], key=[{keys_text}], order=[{order_text}]",
                if keep_last { "LastRow" } else { "FirstRow" }
            );
            if reads_rank {
                describe.push_str(&format!(", select=[{}]", select.join(", ")));
            }
            describe.push(')');
            let kind = NodeKind::Deduplicate { key: partition.clone(), keep_last, order: dorder };
            self.add(kind, vec![input.id], node_schema, mode, Some(partition), describe)
        } else {
            let rank_order = match order_attr {
                Some(TimeAttr::Proctime) => RankOrder::Arrival { descending: order[0].descending },
                _ => {
                    if !append_only {
                        if let Some(c) = order.iter().find(|c| proctime.contains(&c.column)) {
                            return Err(unsupported(format!(
                                "Top-N over an updating input ordered by the processing-time attribute '{}' together with other columns is not supported; order by '{}' alone (arrival order) or by other columns",
                                name(c.column),
                                name(c.column)
                            )));
                        }
                    }
                    RankOrder::Columns(order.clone())
                }
            };
            let order_text: Vec<String> = order
                .iter()
                .map(|c| {
                    let dir = if c.descending { "DESC" } else { "ASC" };
                    // Flink's default null order: nulls are the smallest values.
                    let nulls = if c.nulls_first == c.descending { if c.nulls_first { " NULLS FIRST" } else { " NULLS LAST" } } else { "" };
                    format!("{} {dir}{nulls}", name(c.column))
                })
                .collect();
            let describe = format!(
                "Rank(strategy=[{}], rankType=[ROW_NUMBER], rankRange=[rankStart={start}, rankEnd={end}], partitionBy=[{keys_text}], orderBy=[{}], select=[{}])",
                if append_only { "AppendFastStrategy" } else { "RetractStrategy" },
                order_text.join(", "),
                select.join(", ")
            );
            let unique_key = if start == end {
                Some(partition.clone())
            } else if output_rank {
                Some(partition.iter().copied().chain([n_in]).collect())
            } else {
                input.unique_key.clone()
            };
            let kind = NodeKind::Rank { partition, order: rank_order, range: (start, end), output_rank, proctime };
            self.add(kind, vec![input.id], node_schema.clone(), ChangelogMode::All, unique_key, describe)
        };
        // Line the columns up with the filter's input (projections between window and filter).
        let mut cur = ranked;
        let identity = mapping.len() == n_in + 1 && mapping.iter().enumerate().all(|(i, m)| i == *m);
        if !identity {
            let ns = self.schema_of(cur.id);
            let exprs: Vec<PhysExpr> = mapping.iter().map(|m| col_expr(*m, &ns)).collect();
            let texts: Vec<String> = mapping.iter().map(|m| ns.field(*m).name().clone()).collect();
            let uk = cur.unique_key.as_ref().and_then(|k| k.iter().map(|i| mapping.iter().position(|m| m == i)).collect::<Option<Vec<_>>>());
            let describe = format!("Calc(select=[{}])", texts.join(", "));
            let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: texts };
            let mode = cur.mode.clone();
            cur = self.add(kind, vec![cur.id], arrow_schema(in_schema), mode, uk, describe);
        }
        // The rest of the condition runs after the Top-N, as in SQL.
        if let Some(pred) = conjunction(rest) {
            let arrow = arrow_schema(in_schema);
            let exprs = (0..arrow.fields().len()).map(|i| col_expr(i, &arrow)).collect();
            let describe = format!("Calc(where=[{pred}])");
            let kind = NodeKind::Calc { filter: Some(physical(&pred, in_schema)?), exprs, filter_text: Some(pred.to_string()), expr_texts: Vec::new() };
            let (mode, uk) = (cur.mode.clone(), cur.unique_key.clone());
            cur = self.add(kind, vec![cur.id], arrow, mode, uk, describe);
        }
        Ok(Some(cur))
    }

    fn lower_scan(&mut self, scan: &TableScan) -> Result<Lowered> {
        let Some(ct) = scan.source.as_ref().downcast_ref::<CatalogTable>() else {
            return Err(RsqlError::execution(format!("table {} has no rsql source", scan.table_name)));
        };
        if ct.lookup {
            return Err(unsupported(format!(
                "table {} is read with FOR SYSTEM_TIME AS OF, which rsql supports as the right side of a JOIN or LEFT JOIN \
                 with an equality ON its columns (a lookup join)",
                ct.path
            )));
        }
        if !scan.filters.is_empty() {
            return Err(RsqlError::execution("filters pushed into a scan are not expected"));
        }
        let (base, full_schema): (Lowered, SchemaRef) = match &ct.entry {
            CatalogEntry::View(v) => {
                let plan = v.plan.clone();
                let l = self.lower(&plan)?;
                (l, Arc::new(plan.schema().as_arrow().clone()))
            }
            CatalogEntry::Table(t) => (self.table_source(&t)?, t.full_schema()),
        };
        let (base, full_schema) = match &ct.window {
            Some(w) => (self.window_table_function(w, base, &full_schema, &ct.schema)?, ct.schema.clone()),
            None => (base, full_schema),
        };
        // Project the scanned columns.
        let projection: Vec<usize> = scan.projection.clone().unwrap_or_else(|| (0..full_schema.fields().len()).collect());
        if projection.len() == full_schema.fields().len() && projection.iter().enumerate().all(|(i, p)| i == *p) {
            return Ok(base);
        }
        let base_schema = self.schema_of(base.id);
        let exprs: Vec<PhysExpr> = projection.iter().map(|&i| col_expr(i, &base_schema)).collect();
        let out_schema = arrow_schema(&scan.projected_schema);
        let unique_key = base.unique_key.as_ref().and_then(|k| k.iter().map(|i| projection.iter().position(|p| p == i)).collect::<Option<Vec<_>>>());
        let mode = match &base.mode {
            ChangelogMode::Upsert { key } if key.iter().all(|k| out_schema.index_of(k).is_ok()) => base.mode.clone(),
            ChangelogMode::Upsert { .. } => ChangelogMode::All,
            m => m.clone(),
        };
        let names: Vec<String> = projection.iter().map(|&i| full_schema.field(i).name().clone()).collect();
        let describe = format!("Calc(select=[{}])", names.join(", "));
        let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: names };
        Ok(self.add(kind, vec![base.id], out_schema, mode, unique_key, describe))
    }

    /// A window table function over its lowered input.
    fn window_table_function(&mut self, w: &WindowTvf, input: Lowered, input_schema: &SchemaRef, schema: &SchemaRef) -> Result<Lowered> {
        if !input.mode.is_insert_only() {
            return Err(unsupported(format!(
                "{} needs an append-only input, but {} is an updating stream (changelogMode=[{}]); window table functions and window aggregation \
                 take only inserts: read an append-only source (kafka, filesystem, datagen) instead of an updating one (mysql-cdc, upsert-kafka, \
                 or a view with a regular join or GROUP BY)",
                w.text,
                w.input,
                input.mode.flink_notation()
            ))
            .at(w.location));
        }
        let time_col = input_schema.index_of(&w.time_col)?;
        let describe = format!("WindowTableFunction(window=[{}])", w.spec.describe(&w.time_col));
        let kind = NodeKind::WindowTableFunction { time_col, spec: w.spec };
        Ok(self.add(kind, vec![input.id], schema.clone(), ChangelogMode::InsertOnly, None, describe))
    }

    /// The source of a table with all its columns (physical, metadata, computed), shared by every
    /// statement that reads the table; upsert sources get their ChangelogNormalize here.
    fn table_source(&mut self, t: &Arc<TableDef>) -> Result<Lowered> {
        if let Some(l) = self.sources.get(&t.path) {
            return Ok(l.clone());
        }
        let factory = self.registry.validate(t)?;
        if !factory.supports_source() {
            return Err(RsqlError::validation(
                format!("connector '{}' of table {} can only be written to, not read", factory.name(), t.path),
                Some(t.location),
            ));
        }
        let info = factory.source_info(t)?;
        // The source produces physical and metadata columns in declaration order.
        let mut produced = Vec::new();
        for c in &t.columns {
            match &c.kind {
                ColumnKind::Physical => produced.push(ProducedColumn::Physical { name: c.name.clone(), ty: c.ty.clone() }),
                ColumnKind::Metadata { .. } => produced.push(ProducedColumn::Metadata {
                    key: c.metadata_key().unwrap_or(&c.name).to_string(),
                    name: c.name.clone(),
                    ty: c.ty.clone(),
                }),
                ColumnKind::Computed(_) => {}
            }
        }
        let upsert = matches!(info.changelog_mode, ChangelogMode::Upsert { .. });
        // Upsert sources send deletes with only the key set: their rows are nullable until
        // ChangelogNormalize restores the full row.
        let src_fields: Vec<Field> = produced.iter().map(|p| p.ty().to_field(p.name()).with_nullable(p.ty().nullable || upsert)).collect();
        let src_schema = Arc::new(Schema::new(src_fields));
        let pk: Option<Vec<usize>> = t.primary_key.as_ref().and_then(|pk| pk.iter().map(|k| produced.iter().position(|p| p.name() == k)).collect());
        let describe = format!("TableSourceScan(table=[[{}, {}, {}]], fields=[{}])", t.path.catalog, t.path.database, t.path.name, produced.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "));
        let mode_unique = match &info.changelog_mode {
            ChangelogMode::InsertOnly => None,
            _ => pk.clone(),
        };
        let mut cur = self.add(
            NodeKind::Source { table: t.clone(), columns: produced.clone(), factory },
            vec![],
            src_schema,
            info.changelog_mode.clone(),
            mode_unique,
            describe,
        );
        if upsert {
            let key = pk.clone().ok_or_else(|| {
                RsqlError::validation(format!("table {} reads an upsert stream and needs a PRIMARY KEY", t.path), Some(t.location))
            })?;
            let schema = Arc::new(Schema::new(produced.iter().map(|p| p.ty().to_field(p.name())).collect::<Vec<_>>()));
            let names: Vec<&str> = key.iter().map(|i| produced[*i].name()).collect();
            let describe = format!("ChangelogNormalize(key=[{}])", names.join(", "));
            cur = self.add(NodeKind::ChangelogNormalize { key: key.clone() }, vec![cur.id], schema, ChangelogMode::All, Some(key), describe);
        }
        // Computed columns: evaluate them after the source, in declaration order.
        if t.columns.iter().any(|c| matches!(c.kind, ColumnKind::Computed(_))) {
            let src = self.schema_of(cur.id);
            let df = DFSchema::try_from(src.as_ref().clone())?;
            let mut exprs: Vec<PhysExpr> = Vec::new();
            let mut fields = Vec::new();
            let mut texts = Vec::new();
            for c in &t.columns {
                match &c.kind {
                    ColumnKind::Computed(sql) => {
                        let e = (self.computed)(t, sql, &df)?;
                        let (dt, nullable) = e.to_field(&df).map(|(_, f)| (f.data_type().clone(), f.is_nullable()))?;
                        fields.push(Field::new(&c.name, dt, nullable));
                        exprs.push(physical(&e, &df)?);
                        texts.push(format!("{sql} AS {}", c.name));
                    }
                    _ => {
                        let i = src.index_of(&c.name)?;
                        fields.push(src.field(i).clone());
                        exprs.push(col_expr(i, &src));
                        texts.push(c.name.clone());
                    }
                }
            }
            let pos = |name: &str| t.columns.iter().position(|c| c.name == name);
            let unique_key = t.primary_key.as_ref().and_then(|pk| pk.iter().map(|k| pos(k)).collect());
            let describe = format!("Calc(select=[{}])", texts.join(", "));
            let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: texts };
            let mode = cur.mode.clone();
            cur = self.add(kind, vec![cur.id], Arc::new(Schema::new(fields)), mode, unique_key, describe);
        }
        // Event time: watermarks from the WATERMARK FOR expression, right after the scan.
        if let Some(w) = &t.watermark {
            let src = self.schema_of(cur.id);
            let rowtime = src.index_of(&w.column)?;
            let df = DFSchema::try_from(src.as_ref().clone())?;
            let e = (self.computed)(t, &w.expr, &df)?;
            let expr = physical(&e, &df)?;
            let describe = format!("WatermarkAssigner(rowtime=[{}], watermark=[{}])", w.column, w.expr);
            let (mode, uk) = (cur.mode.clone(), cur.unique_key.clone());
            cur = self.add(NodeKind::WatermarkAssigner { rowtime, expr }, vec![cur.id], src, mode, uk, describe);
        }
        self.sources.insert(t.path.clone(), cur.clone());
        Ok(cur)
    }

    /// Makes sure every join key is a plain column of its side, appending computed keys.
    fn key_columns(&mut self, side: &Lowered, plan: &LogicalPlan, keys: &[Expr]) -> Result<(Lowered, Vec<usize>, usize)> {
        let schema = plan.schema();
        let mut idx = Vec::new();
        let mut extra: Vec<&Expr> = Vec::new();
        let n = schema.fields().len();
        for k in keys {
            match k {
                Expr::Column(c) => idx.push(schema.index_of_column(c)?),
                other => {
                    idx.push(n + extra.len());
                    extra.push(other);
                }
            }
        }
        if extra.is_empty() {
            return Ok((side.clone(), idx, 0));
        }
        let arrow = schema.as_arrow();
        let mut exprs: Vec<PhysExpr> = (0..n).map(|i| col_expr(i, arrow)).collect();
        let mut fields: Vec<Field> = arrow.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (j, e) in extra.iter().enumerate() {
            let (dt, nullable) = e.to_field(schema).map(|(_, f)| (f.data_type().clone(), f.is_nullable()))?;
            fields.push(Field::new(format!("$join_key{j}"), dt, nullable));
            exprs.push(physical(e, schema)?);
        }
        let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: extra.iter().map(|e| e.to_string()).collect() };
        let describe = format!("Calc(join keys=[{}])", extra.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "));
        let l = self.add(kind, vec![side.id], Arc::new(Schema::new(fields)), side.mode.clone(), side.unique_key.clone(), describe);
        Ok((l, idx, extra.len()))
    }

    fn lower_join(&mut self, j: &Join) -> Result<Lowered> {
        if let Some(dim) = dim_scan(&j.left) {
            let dim = dim?;
            return Err(unsupported(format!(
                "table {} is read with FOR SYSTEM_TIME AS OF on the left side of a join; write the lookup table on the right: \
                 FROM stream JOIN {} FOR SYSTEM_TIME AS OF stream.proc_time ON ...",
                dim.table.path, dim.table.path.name
            )));
        }
        if let Some(dim) = dim_scan(&j.right) {
            return self.lower_lookup_join(j, dim?);
        }
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            other => return Err(unsupported(format!("{other} joins (from IN / EXISTS subqueries) are not supported yet"))),
        };
        if j.on.is_empty() {
            return Err(unsupported(
                "a join without an equality condition (a cross join or a non-equi join) is not supported; join on equal columns",
            ));
        }
        let left = self.lower(&j.left)?;
        let right = self.lower(&j.right)?;
        let lkeys: Vec<Expr> = j.on.iter().map(|(l, _)| l.clone()).collect();
        let rkeys: Vec<Expr> = j.on.iter().map(|(_, r)| r.clone()).collect();
        let (left, lidx, lextra) = self.key_columns(&left, &j.left, &lkeys)?;
        let (right, ridx, rextra) = self.key_columns(&right, &j.right, &rkeys)?;
        let ls = self.schema_of(left.id);
        let rs = self.schema_of(right.id);
        // The joined row as the operator builds it: left columns (+ keys), right columns (+ keys).
        let out_schema = arrow_schema(&j.schema);
        let nl = j.left.schema().fields().len();
        let nr = j.right.schema().fields().len();
        let mut fields: Vec<Field> = Vec::new();
        for (i, f) in ls.fields().iter().enumerate() {
            let nullable = if i < nl { out_schema.field(i).is_nullable() } else { true };
            fields.push(f.as_ref().clone().with_nullable(nullable || kind.right_outer()));
        }
        for (i, f) in rs.fields().iter().enumerate() {
            let nullable = if i < nr { out_schema.field(nl + i).is_nullable() } else { true };
            fields.push(f.as_ref().clone().with_nullable(nullable || kind.left_outer()));
        }
        let wide = lextra + rextra > 0;
        let join_schema = if wide {
            Arc::new(Schema::new(fields.iter().enumerate().map(|(i, f)| f.clone().with_name(format!("${i}"))).collect::<Vec<_>>()))
        } else {
            out_schema.clone()
        };
        let filter = match &j.filter {
            None => None,
            Some(f) if !wide => Some(physical(f, &j.schema)?),
            Some(_) => return Err(unsupported("a join with both computed join keys and a non-equi condition is not supported yet")),
        };
        // Keys and modes.
        let lw = ls.fields().len();
        let unique_key = match (kind, &left.unique_key, &right.unique_key) {
            (JoinKind::Inner, Some(lk), Some(rk)) => {
                if lk.iter().all(|k| lidx.contains(k)) {
                    Some(rk.iter().map(|k| k + lw).collect())
                } else if rk.iter().all(|k| ridx.contains(k)) {
                    Some(lk.clone())
                } else {
                    Some(lk.iter().copied().chain(rk.iter().map(|k| k + lw)).collect())
                }
            }
            (_, Some(lk), Some(rk)) => Some(lk.iter().copied().chain(rk.iter().map(|k| k + lw)).collect()),
            _ => None,
        };
        let mode = if kind == JoinKind::Inner && left.mode.is_insert_only() && right.mode.is_insert_only() {
            ChangelogMode::InsertOnly
        } else {
            ChangelogMode::All
        };
        let on_text: Vec<String> = j.on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
        let describe = format!(
            "Join(joinType=[{}], where=[{}{}])",
            match kind {
                JoinKind::Inner => "InnerJoin",
                JoinKind::Left => "LeftOuterJoin",
                JoinKind::Right => "RightOuterJoin",
                JoinKind::Full => "FullOuterJoin",
            },
            on_text.join(" AND "),
            j.filter.as_ref().map(|f| format!(" AND {f}")).unwrap_or_default()
        );
        let joined = self.add(
            NodeKind::Join { kind, left_keys: lidx, right_keys: ridx, filter },
            vec![left.id, right.id],
            join_schema.clone(),
            mode.clone(),
            unique_key.clone(),
            describe,
        );
        if !wide {
            return Ok(joined);
        }
        // Drop the appended key columns again.
        let keep: Vec<usize> = (0..nl).chain(lw..lw + nr).collect();
        let exprs: Vec<PhysExpr> = keep.iter().map(|&i| col_expr(i, &join_schema)).collect();
        let uk = unique_key.and_then(|k| k.iter().map(|i| keep.iter().position(|x| x == i)).collect());
        let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: Vec::new() };
        Ok(self.add(kind, vec![joined.id], out_schema, mode, uk, "Calc(drop join keys)".into()))
    }

    /// `stream JOIN dim FOR SYSTEM_TIME AS OF ... ON stream.k = dim.c`: every input row looks
    /// its key up in the dimension table when it arrives.
    fn lower_lookup_join(&mut self, j: &Join, dim: DimScan) -> Result<Lowered> {
        let t = dim.table.clone();
        let left_outer = match j.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            other => {
                return Err(unsupported(format!(
                    "{other} lookup joins are not supported; a lookup join (FOR SYSTEM_TIME AS OF {}) is a JOIN or a LEFT JOIN",
                    t.path
                )))
            }
        };
        if j.on.is_empty() {
            return Err(unsupported(format!("a lookup join needs an equality between the input and a column of {} in its ON clause", t.path)));
        }
        if let Some(c) = t.columns.iter().find(|c| !c.is_physical()) {
            return Err(unsupported(format!("lookup table {} has the computed or metadata column '{}'; a lookup table has physical columns only", t.path, c.name)));
        }
        let factory = self.registry.validate(&t)?;
        if !factory.supports_lookup() {
            return Err(RsqlError::validation(
                format!(
                    "table {} (connector '{}') cannot be read with FOR SYSTEM_TIME AS OF: rsql runs lookup joins against 'jdbc' tables; \
                     temporal joins against versioned tables are not supported yet",
                    t.path,
                    factory.name()
                ),
                Some(t.location),
            ));
        }
        let full = t.full_schema();
        let right_schema = j.right.schema();
        let mut key_names = Vec::new();
        let mut lookup_text = Vec::new();
        for (l, r) in &j.on {
            let mut inner = r;
            while let Expr::Cast(c) = inner {
                inner = c.expr.as_ref();
            }
            let Expr::Column(c) = inner else {
                return Err(unsupported(format!("the lookup join key {r} must be a column of {}", t.path)));
            };
            let pos = right_schema.index_of_column(c)?;
            let name = full.field(dim.columns[pos]).name().clone();
            lookup_text.push(format!("{name}={l}"));
            key_names.push(name);
        }
        let table_df = DFSchema::try_from(full.as_ref().clone())?;
        let dim_filters = dim.filters.iter().map(|e| physical(e, &table_df)).collect::<Result<Vec<_>>>()?;
        let left = self.lower(&j.left)?;
        let lkeys: Vec<Expr> = j.on.iter().map(|(l, _)| l.clone()).collect();
        let (left, lidx, lextra) = self.key_columns(&left, &j.left, &lkeys)?;
        let ls = self.schema_of(left.id);
        let out_schema = arrow_schema(&j.schema);
        let nl = j.left.schema().fields().len();
        let nr = right_schema.fields().len();
        let mut fields: Vec<Field> = ls.fields().iter().map(|f| f.as_ref().clone()).collect();
        for i in 0..nr {
            fields.push(out_schema.field(nl + i).clone().with_nullable(out_schema.field(nl + i).is_nullable() || left_outer));
        }
        let wide = lextra > 0;
        let join_schema = if wide {
            Arc::new(Schema::new(fields.iter().enumerate().map(|(i, f)| f.clone().with_name(format!("${i}"))).collect::<Vec<_>>()))
        } else {
            Arc::new(Schema::new(fields))
        };
        let filter = match &j.filter {
            None => None,
            Some(f) if !wide => Some(physical(f, &j.schema)?),
            Some(_) => return Err(unsupported("a lookup join with both computed join keys and a non-equi condition is not supported yet")),
        };
        // At most one row per key when the keys cover the table's primary key.
        let pk_covered = t.primary_key.as_ref().is_some_and(|pk| !pk.is_empty() && pk.iter().all(|k| key_names.contains(k)));
        let unique_key = if pk_covered { left.unique_key.clone() } else { None };
        let mode = left.mode.clone();
        let dim_columns: Vec<usize> = dim.columns.clone();
        let describe = format!(
            "LookupJoin(table=[{}.{}.{}], joinType=[{}], lookup=[{}]{}{})",
            t.path.catalog,
            t.path.database,
            t.path.name,
            if left_outer { "LeftOuterJoin" } else { "InnerJoin" },
            lookup_text.join(", "),
            if dim.filters.is_empty() {
                String::new()
            } else {
                format!(", tableFilter=[{}]", dim.filters.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" AND "))
            },
            j.filter.as_ref().map(|f| format!(", where=[{f}]")).unwrap_or_default()
        );
        let (f2, t2, k2) = (factory.clone(), t.clone(), key_names.clone());
        let create: rsql_runtime::graph::LookupFactoryFn = Arc::new(move || f2.create_lookup(&t2, &k2));
        let kind = NodeKind::LookupJoin { create, probe_keys: lidx, dim_columns, dim_filters, left_outer, filter };
        let joined = self.add(kind, vec![left.id], join_schema.clone(), mode.clone(), unique_key.clone(), describe);
        if !wide {
            return Ok(joined);
        }
        let lw = ls.fields().len();
        let keep: Vec<usize> = (0..nl).chain(lw..lw + nr).collect();
        let exprs: Vec<PhysExpr> = keep.iter().map(|&i| col_expr(i, &join_schema)).collect();
        let uk = unique_key.and_then(|k| k.iter().map(|i| keep.iter().position(|x| x == i)).collect());
        let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: Vec::new() };
        Ok(self.add(kind, vec![joined.id], out_schema, mode, uk, "Calc(drop join keys)".into()))
    }

    fn lower_aggregate(&mut self, a: &Aggregate) -> Result<Lowered> {
        let input = self.lower(&a.input)?;
        let in_schema = a.input.schema();
        for g in &a.group_expr {
            if matches!(g, Expr::GroupingSet(_)) {
                return Err(unsupported("GROUPING SETS, ROLLUP and CUBE are not supported yet"));
            }
        }
        // Pre-projection: group expressions, then each aggregate's argument and filter.
        let mut pre_exprs: Vec<PhysExpr> = Vec::new();
        let mut pre_fields: Vec<Field> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for (i, g) in a.group_expr.iter().enumerate() {
            let (dt, nullable) = g.to_field(in_schema).map(|(_, f)| (f.data_type().clone(), f.is_nullable()))?;
            pre_fields.push(Field::new(format!("$g{i}"), dt, nullable));
            pre_exprs.push(physical(g, in_schema)?);
            texts.push(g.to_string());
        }
        let out_schema = arrow_schema(&a.schema);
        let ng = a.group_expr.len();
        let mut calls = Vec::new();
        for (j, e) in a.aggr_expr.iter().enumerate() {
            let inner = match e {
                Expr::Alias(Alias { expr, .. }) => expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
                return Err(unsupported(format!("aggregate expression {e}")));
            };
            if !params.order_by.is_empty() {
                return Err(unsupported(format!("ORDER BY inside {} is not supported yet", func.name())));
            }
            let name = func.name().to_ascii_lowercase();
            let is_count_star = name == "count"
                && params.args.len() == 1
                && matches!(&params.args[0], Expr::Literal(v, _) if !v.is_null());
            let mut sep = ",".to_string();
            let func_kind = match name.as_str() {
                "count" if is_count_star => AggFunc::CountStar,
                "count" => AggFunc::Count,
                "sum" => AggFunc::Sum,
                "avg" | "mean" => AggFunc::Avg,
                "min" => AggFunc::Min,
                "max" => AggFunc::Max,
                "first_value" => AggFunc::FirstValue,
                "last_value" => AggFunc::LastValue,
                "string_agg" | "listagg" => {
                    if let Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _)) = params.args.get(1) {
                        sep = s.clone();
                    }
                    AggFunc::ListAgg(sep.clone())
                }
                other => return Err(unsupported(format!("the aggregate function {} is not supported yet", other.to_uppercase()))),
            };
            let arg = match func_kind {
                AggFunc::CountStar => None,
                _ => {
                    let Some(arg) = params.args.first() else {
                        return Err(unsupported(format!("{} without an argument", func.name())));
                    };
                    if params.args.len() > 1 && !matches!(func_kind, AggFunc::ListAgg(_)) {
                        return Err(unsupported(format!("{} with {} arguments", func.name(), params.args.len())));
                    }
                    let (dt, nullable) = arg.to_field(in_schema).map(|(_, f)| (f.data_type().clone(), f.is_nullable()))?;
                    pre_fields.push(Field::new(format!("$a{j}"), dt, nullable));
                    pre_exprs.push(physical(arg, in_schema)?);
                    texts.push(arg.to_string());
                    Some(pre_exprs.len() - 1)
                }
            };
            let filter = match &params.filter {
                None => None,
                Some(f) => {
                    pre_fields.push(Field::new(format!("$f{j}"), DataType::Boolean, true));
                    pre_exprs.push(physical(f, in_schema)?);
                    texts.push(f.to_string());
                    Some(pre_exprs.len() - 1)
                }
            };
            calls.push(AggCall {
                func: func_kind,
                arg,
                distinct: params.distinct,
                filter,
                output_type: out_schema.field(ng + j).data_type().clone(),
                name: e.schema_name().to_string(),
            });
        }
        let pre_schema = Arc::new(Schema::new(pre_fields));
        let pre = self.add(
            NodeKind::Calc { filter: None, exprs: pre_exprs, filter_text: None, expr_texts: texts.clone() },
            vec![input.id],
            pre_schema,
            input.mode.clone(),
            None,
            format!("Calc(select=[{}])", texts.join(", ")),
        );
        let group: Vec<usize> = (0..ng).collect();
        let agg_text: Vec<String> = a.aggr_expr.iter().map(|e| e.schema_name().to_string()).collect();
        if let Some((ws, we, w)) = window_group(a) {
            // Window aggregation: GROUP BY window_start, window_end [, keys] over a window TVF.
            let names: Vec<String> = (0..ng).map(|i| out_schema.field(i).name().clone()).collect();
            let keys: Vec<&str> = (0..ng).filter(|i| *i != ws && *i != we).map(|i| names[i].as_str()).collect();
            let mut select: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            select.extend(agg_text.iter().cloned());
            select.push(format!("start('w$) AS {}", names[ws]));
            select.push(format!("end('w$) AS {}", names[we]));
            let group_text = if keys.is_empty() { String::new() } else { format!("groupBy=[{}], ", keys.join(", ")) };
            let describe = format!("WindowAggregate({group_text}window=[{}], select=[{}])", w.spec.describe(&w.time_col), select.join(", "));
            let kind = NodeKind::WindowAggregate { group: group.clone(), window_start: ws, window_end: we, aggs: calls };
            return Ok(self.add(kind, vec![pre.id], out_schema, ChangelogMode::InsertOnly, Some(group), describe));
        }
        let group_names: Vec<String> = (0..ng).map(|i| out_schema.field(i).name().clone()).collect();
        let describe = if ng == 0 {
            format!("GroupAggregate(select=[{}])", agg_text.join(", "))
        } else {
            format!("GroupAggregate(groupBy=[{}], select=[{}])", group_names.join(", "), agg_text.join(", "))
        };
        Ok(self.add(
            NodeKind::GroupAggregate { group: group.clone(), aggs: calls },
            vec![pre.id],
            out_schema,
            ChangelogMode::All,
            Some(group),
            describe,
        ))
    }
}

/// A time attribute: a computed `PROCTIME()` column or a table's WATERMARK column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeAttr {
    Proctime,
    Rowtime,
}

pub(crate) fn is_proctime_call(sql: &str) -> bool {
    let s: String = sql.chars().filter(|c| !c.is_whitespace()).collect();
    s.eq_ignore_ascii_case("PROCTIME()")
}

/// When an aggregate groups by the window_start and window_end of one window table function:
/// their positions among the group expressions, and the window.
fn window_group(a: &Aggregate) -> Option<(usize, usize, Arc<WindowTvf>)> {
    let in_schema = a.input.schema();
    let mut start = None;
    let mut end = None;
    for (i, g) in a.group_expr.iter().enumerate() {
        let Expr::Column(c) = strip_alias(g) else { continue };
        let Some(idx) = in_schema.index_of_column(c).ok() else { continue };
        match window_column(&a.input, idx) {
            Some((0, w)) => start = Some((i, w)),
            Some((1, w)) => end = Some((i, w)),
            _ => {}
        }
    }
    let ((s, ws), (e, we)) = (start?, end?);
    Arc::ptr_eq(&ws, &we).then_some((s, e, ws))
}

/// Whether column `idx` of a view's plan is a time attribute.
pub(crate) fn time_attribute_of_view(plan: &LogicalPlan, idx: usize) -> Option<TimeAttr> {
    time_attribute(plan, idx)
}

/// Which window column of a window table function column `idx` of `plan` is (0 window_start,
/// 1 window_end, 2 window_time), following plain column references down to the function.
fn window_column(plan: &LogicalPlan, idx: usize) -> Option<(usize, Arc<WindowTvf>)> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let full = match &scan.projection {
                Some(p) => *p.get(idx)?,
                None => idx,
            };
            let ct = scan.source.as_ref().downcast_ref::<CatalogTable>()?;
            let w = ct.window.as_ref()?;
            let n_in = ct.schema.fields().len() - 3;
            (full >= n_in).then(|| (full - n_in, w.clone()))
        }
        LogicalPlan::Projection(p) => match strip_alias(p.expr.get(idx)?) {
            Expr::Column(c) => window_column(&p.input, p.input.schema().index_of_column(c).ok()?),
            _ => None,
        },
        LogicalPlan::Filter(f) => window_column(&f.input, idx),
        LogicalPlan::SubqueryAlias(a) => window_column(&a.input, idx),
        _ => None,
    }
}

/// Follows column `idx` of `plan` down to a table column through plain column references and
/// tells whether it is a time attribute.
fn time_attribute(plan: &LogicalPlan, idx: usize) -> Option<TimeAttr> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let full = match &scan.projection {
                Some(p) => *p.get(idx)?,
                None => idx,
            };
            let ct = scan.source.as_ref().downcast_ref::<CatalogTable>()?;
            if let Some(w) = &ct.window {
                // window_time is an event-time attribute; the function's time column is not one
                // any more, as in Flink.
                let n_in = ct.schema.fields().len() - 3;
                if full == n_in + 2 {
                    return Some(TimeAttr::Rowtime);
                }
                if full >= n_in || ct.schema.field(full).name() == &w.time_col {
                    return None;
                }
            }
            match &ct.entry {
                CatalogEntry::Table(t) => {
                    let c = t.columns.get(full)?;
                    if matches!(&c.kind, ColumnKind::Computed(sql) if is_proctime_call(sql)) {
                        Some(TimeAttr::Proctime)
                    } else if t.watermark.as_ref().map(|w| w.column == c.name).unwrap_or(false) {
                        Some(TimeAttr::Rowtime)
                    } else {
                        None
                    }
                }
                CatalogEntry::View(v) => time_attribute(&v.plan, full),
            }
        }
        LogicalPlan::Projection(p) => match strip_alias(p.expr.get(idx)?) {
            Expr::Column(c) => time_attribute(&p.input, p.input.schema().index_of_column(c).ok()?),
            _ => None,
        },
        LogicalPlan::Filter(f) => time_attribute(&f.input, idx),
        LogicalPlan::SubqueryAlias(a) => time_attribute(&a.input, idx),
        LogicalPlan::Window(w) if idx < w.input.schema().fields().len() => time_attribute(&w.input, idx),
        // A column of UNION ALL is a time attribute when it is the same one in every input.
        LogicalPlan::Union(u) => {
            let first = time_attribute(u.inputs.first()?, idx)?;
            u.inputs.iter().skip(1).all(|i| time_attribute(i, idx) == Some(first)).then_some(first)
        }
        _ => None,
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(Alias { expr, .. }) => strip_alias(expr),
        other => other,
    }
}

fn strip_casts(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        Expr::Alias(Alias { expr, .. }) => strip_casts(expr),
        other => other,
    }
}

/// The filter below a projection (through subquery aliases).
fn peel_alias(plan: &LogicalPlan) -> Option<&Filter> {
    match plan {
        LogicalPlan::Filter(f) => Some(f),
        LogicalPlan::SubqueryAlias(a) => peel_alias(&a.input),
        _ => None,
    }
}

/// The window below column-only projections, and for each column of `plan` the window column it is.
fn window_below(plan: &LogicalPlan) -> Option<(&Window, Vec<usize>)> {
    match plan {
        LogicalPlan::Window(w) => Some((w, (0..w.schema.fields().len()).collect())),
        LogicalPlan::SubqueryAlias(a) => window_below(&a.input),
        LogicalPlan::Projection(p) => {
            let (w, inner) = window_below(&p.input)?;
            let m = p
                .expr
                .iter()
                .map(|e| match strip_alias(e) {
                    Expr::Column(c) => p.input.schema().index_of_column(c).ok().map(|i| inner[i]),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((w, m))
        }
        _ => None,
    }
}

/// `rn <op> constant` (or `constant <op> rn`, turned around) as an operator and an integer.
fn rank_comparison(e: &Expr, is_rank: &dyn Fn(&Expr) -> bool) -> Option<(BinaryOp, i64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return None };
    let constant = |x: &Expr| match strip_casts(x) {
        Expr::Literal(v, _) if !v.is_null() => match v.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(i)) => Some(i),
            _ => None,
        },
        _ => None,
    };
    let (op, v) = if is_rank(left) {
        (*op, constant(right)?)
    } else if is_rank(right) {
        let flipped = match op {
            BinaryOp::Lt => BinaryOp::Gt,
            BinaryOp::LtEq => BinaryOp::GtEq,
            BinaryOp::Gt => BinaryOp::Lt,
            BinaryOp::GtEq => BinaryOp::LtEq,
            other => *other,
        };
        (flipped, constant(left)?)
    } else {
        return None;
    };
    matches!(op, BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq | BinaryOp::Eq).then_some((op, v))
}

/// PARTITION BY and ORDER BY of a ROW_NUMBER() as columns of the window's input.
fn rank_columns(wf: &WindowFunction, w: &Window) -> Result<(Vec<usize>, Vec<SortColumn>)> {
    let schema = w.input.schema();
    let column = |e: &Expr, what: &str| -> Result<usize> {
        match strip_alias(e) {
            Expr::Column(c) => Ok(schema.index_of_column(c)?),
            other => Err(unsupported(format!(
                "ROW_NUMBER() OVER ({what} {other}): {what} must name columns; compute the expression in a subquery and {what} its alias"
            ))),
        }
    };
    let partition = wf.params.partition_by.iter().map(|e| column(e, "PARTITION BY")).collect::<Result<Vec<_>>>()?;
    if wf.params.order_by.is_empty() {
        return Err(unsupported("ROW_NUMBER() for Top-N needs an ORDER BY in its OVER clause, for example OVER (PARTITION BY a ORDER BY b DESC)"));
    }
    let order = wf
        .params
        .order_by
        .iter()
        .map(|s| Ok(SortColumn { column: column(&s.expr, "ORDER BY")?, descending: !s.asc, nulls_first: s.nulls_first }))
        .collect::<Result<Vec<_>>>()?;
    Ok((partition, order))
}

/// Why a window cannot run: RANK / DENSE_RANK as in Flink, other OVER windows not yet, and
/// ROW_NUMBER() without a filter on its result.
fn window_error(w: &Window) -> RsqlError {
    for e in &w.window_expr {
        if let Expr::WindowFunction(wf) = strip_alias(e) {
            let name = wf.fun.name().to_ascii_uppercase();
            match name.as_str() {
                "ROW_NUMBER" => {}
                "RANK" | "DENSE_RANK" => {
                    return unsupported(format!(
                        "{name}() is not supported on streaming queries (Flink supports only ROW_NUMBER() for Top-N); use ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)"
                    ))
                }
                other => {
                    return unsupported(format!(
                        "OVER windows ({other}(...) OVER (...)) are not supported yet; only ROW_NUMBER() for Top-N and deduplication is"
                    ))
                }
            }
        }
    }
    unsupported(
        "ROW_NUMBER() OVER (...) runs only as Top-N or deduplication: filter its result with a constant bound in an outer query, for example SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b DESC) AS rn FROM t) WHERE rn <= 3",
    )
}
