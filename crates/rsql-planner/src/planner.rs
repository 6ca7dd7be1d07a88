//! The session a script runs in: catalog, configuration (SET), connectors and functions; and the
//! planning of statements: CREATE TABLE / VIEW checked and registered, queries planned through
//! DataFusion's SQL planner with a chosen set of analyzer and optimizer rules, INSERTs checked
//! against their sink, and whole statement sets lowered into one job graph.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion_common::arrow::datatypes::Schema;
use datafusion_common::{DFSchema, DataFusionError, ScalarValue, SchemaError};
use datafusion_expr::logical_plan::{LogicalPlan, LogicalPlanBuilder};
use datafusion_expr::{Expr, ExprSchemable};
use datafusion_optimizer::analyzer::type_coercion::TypeCoercion;
use datafusion_optimizer::analyzer::Analyzer;
use datafusion_optimizer::optimizer::{Optimizer, OptimizerContext, OptimizerRule};
use datafusion_sql::planner::{NullOrdering, ParserOptions, PlannerContext, SqlToRel};
use datafusion_sql::sqlparser::ast as sp;
use rsql_common::catalog::{ColumnDef, ColumnKind, ObjectPath, OptionValue, TableDef};
use rsql_common::options::did_you_mean;
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{Location, Result, RsqlError};
use rsql_runtime::graph::{JobGraph, NodeKind, PhysExpr, SinkFactoryFn};
use rsql_runtime::{ChangelogMode, ConnectorFactory, ConnectorRegistry};
use rsql_sql::{CreateTable, LikeOption, Name};

use crate::catalog::{Catalog, CatalogEntry, ViewDef};
use crate::lower::{physical, Lowered, Lowerer};
use crate::provider::{CatalogTable, Functions, Provider};

/// A planned INSERT: the query's logical plan and the table it writes.
#[derive(Clone, Debug)]
pub struct InsertPlan {
    pub plan: LogicalPlan,
    pub sink: Arc<TableDef>,
    /// For each sink physical column, the query column feeding it (None: NULL).
    pub mapping: Vec<Option<usize>>,
    pub location: Location,
}

pub struct Session {
    pub catalog: Catalog,
    pub config: BTreeMap<String, String>,
    pub registry: ConnectorRegistry,
    functions: Functions,
}

/// Where an error in a query was; DataFusion's spans come from our tokens, so they are script
/// positions already.
fn df_error(e: DataFusionError, fallback: Location) -> RsqlError {
    let location = e.diagnostic().and_then(|d| d.span).map(|s| Location::new(s.start.line, s.start.column)).filter(|l| l.line > 0);
    let mut root = &e;
    loop {
        match root {
            DataFusionError::Diagnostic(_, inner) | DataFusionError::Context(_, inner) => root = inner,
            _ => break,
        }
    }
    let message = match root {
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            SchemaError::FieldNotFound { field, valid_fields } => {
                let names: Vec<String> = valid_fields.iter().map(|c| c.name.clone()).collect();
                let hint = match did_you_mean(&field.name, names.iter().map(|s| s.as_str())) {
                    Some(s) => {
                        let q = valid_fields.iter().find(|c| c.name == s).map(|c| c.flat_name()).unwrap_or_else(|| s.to_string());
                        format!("; did you mean '{q}'?")
                    }
                    None => {
                        let mut all: Vec<String> = valid_fields.iter().map(|c| c.flat_name()).collect();
                        all.dedup();
                        format!("; available columns: {}", all.join(", "))
                    }
                };
                format!("column '{}' not found{}", field.flat_name(), hint)
            }
            other => other.to_string(),
        },
        DataFusionError::Plan(m) => crate::nested::unsupported_function_message(m).unwrap_or_else(|| m.clone()),
        DataFusionError::NotImplemented(m) | DataFusionError::Execution(m) => m.clone(),
        other => other.strip_backtrace(),
    };
    let message = message.replace(".\nDid you mean", "; did you mean").replace('\n', " ");
    RsqlError::validation(message, Some(location.unwrap_or(fallback)))
}

fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    use datafusion_optimizer::*;
    vec![
        Arc::new(optimize_unions::OptimizeUnions::new()),
        Arc::new(simplify_expressions::SimplifyExpressions::new()),
        Arc::new(replace_distinct_aggregate::ReplaceDistinctWithAggregate::new()),
        Arc::new(extract_equijoin_predicate::ExtractEquijoinPredicate::new()),
        Arc::new(eliminate_cross_join::EliminateCrossJoin::new()),
        Arc::new(push_down_filter::PushDownFilter::new()),
        Arc::new(optimize_projections::OptimizeProjections::new()),
    ]
}

impl Session {
    pub fn new(registry: ConnectorRegistry) -> Self {
        Session { catalog: Catalog::default(), config: BTreeMap::new(), registry, functions: Functions::default() }
    }

    /// Makes `NOW()`, `CURRENT_TIMESTAMP`, `PROCTIME()` and the other processing-time functions
    /// of statements planned from now on read `clock` (the wall clock by default).
    pub fn set_clock(&mut self, clock: rsql_runtime::clock::Clock) {
        self.functions.set_clock(clock);
    }

    fn sql_to_rel<'a>(&self, provider: &'a Provider<'a>) -> SqlToRel<'a, Provider<'a>> {
        let opts = ParserOptions::new()
            .with_collect_spans(true)
            .with_map_string_types_to_utf8view(false)
            .with_parse_float_as_decimal(true)
            // Flink's null order: NULL is the smallest value (first in ASC, last in DESC).
            .with_default_null_ordering(NullOrdering::NullsMin);
        let opts = ParserOptions { enable_ident_normalization: false, ..opts };
        SqlToRel::new_with_options(provider, opts)
    }

    fn analyze_and_optimize(&self, plan: LogicalPlan, location: Location) -> Result<LogicalPlan> {
        let analyzer = Analyzer::with_rules(vec![Arc::new(TypeCoercion::new())]);
        let plan = analyzer.execute_and_check(plan, &self.functions.options, |_, _| {}).map_err(|e| df_error(e, location))?;
        let optimizer = Optimizer::with_rules(optimizer_rules());
        let ctx = OptimizerContext::new().with_skip_failing_rules(false);
        optimizer.optimize(plan, &ctx, |_, _| {}).map_err(|e| df_error(e, location))
    }

    /// Plans a query into an optimized logical plan.
    pub fn plan_query(&self, query: &sp::Query, location: Location) -> Result<LogicalPlan> {
        let lookups = self.lookup_tables(query, location)?;
        let mut query = query.clone();
        let windows = crate::window::rewrite_window_tvfs(&mut query, &self.catalog, location)?;
        let provider = Provider { catalog: &self.catalog, functions: &self.functions, lookups, windows };
        let planner = self.sql_to_rel(&provider);
        let plan = planner
            .sql_statement_to_plan(sp::Statement::Query(Box::new(query)))
            .map_err(|e| df_error(e, location))?;
        self.analyze_and_optimize(plan, location)
    }

    /// The tables a query reads with `FOR SYSTEM_TIME AS OF` (the dimension sides of lookup
    /// joins). A table read both with and without it in one query is an error, as is any other
    /// kind of time travel.
    fn lookup_tables(&self, query: &sp::Query, location: Location) -> Result<HashSet<ObjectPath>> {
        let mut refs: Vec<(sp::ObjectName, Option<sp::TableVersion>)> = Vec::new();
        collect_tables(query, &mut refs);
        let mut versioned = HashSet::new();
        let mut plain = HashSet::new();
        for (name, version) in refs {
            let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect();
            let Some(path) = self.catalog.qualify_parts(&parts) else { continue };
            match version {
                None => {
                    plain.insert(path);
                }
                Some(sp::TableVersion::ForSystemTimeAsOf(_)) => {
                    versioned.insert(path);
                }
                Some(other) => {
                    return Err(RsqlError::unsupported(format!("{other} on table {name} is not supported; use FOR SYSTEM_TIME AS OF for a lookup join")).at(location))
                }
            }
        }
        if let Some(p) = versioned.iter().find(|p| plain.contains(*p)) {
            return Err(RsqlError::unsupported(format!(
                "table {p} is read both with and without FOR SYSTEM_TIME AS OF in one query; read it one way (or through a view)"
            ))
            .at(location));
        }
        Ok(versioned)
    }

    /// Plans a scalar expression (computed column) over a table's physical and metadata columns.
    pub fn plan_column_expr(&self, table: &TableDef, sql: &str, schema: &DFSchema) -> Result<Expr> {
        let dialect = rsql_sql::FlinkDialect;
        let ast = datafusion_sql::sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| RsqlError::parse(format!("computed column of {}: {e}", table.path), Some(table.location)))?;
        let provider = Provider { catalog: &self.catalog, functions: &self.functions, lookups: HashSet::new(), windows: Default::default() };
        let planner = self.sql_to_rel(&provider);
        let e = planner.sql_to_expr(ast, schema, &mut PlannerContext::new()).map_err(|e| df_error(e, table.location))?;
        // Coerce types by planning it as a projection over the table.
        let source = Arc::new(CatalogTable {
            path: table.path.clone(),
            entry: CatalogEntry::Table(Arc::new(table.clone())),
            schema: Arc::new(schema.as_arrow().clone()),
            lookup: false,
            window: None,
        });
        let plan = LogicalPlanBuilder::scan(table.path.name.clone(), source, None)
            .and_then(|b| b.project(vec![e]))
            .and_then(|b| b.build())
            .map_err(|e| df_error(e, table.location))?;
        let analyzer = Analyzer::with_rules(vec![Arc::new(TypeCoercion::new())]);
        let plan = analyzer.execute_and_check(plan, &self.functions.options, |_, _| {}).map_err(|e| df_error(e, table.location))?;
        match plan {
            LogicalPlan::Projection(p) => {
                let e = p.expr[0].clone();
                // Strip the qualifier the scan added so the expression binds to plain columns.
                Ok(unqualify(e))
            }
            _ => Err(RsqlError::execution("computed column did not plan as a projection")),
        }
    }

    /// CREATE TABLE: builds, checks and registers the table definition.
    pub fn create_table(&mut self, ct: &CreateTable, location: Location) -> Result<Option<Arc<TableDef>>> {
        let path = self.catalog.qualify(&ct.name)?;
        let mut columns = ct.columns.clone();
        let mut options: BTreeMap<String, OptionValue> = BTreeMap::new();
        let mut primary_key = ct.primary_key.as_ref().map(|(k, _)| k.clone());
        let mut watermark = ct.watermark.clone();
        if let Some((src, like_opts)) = &ct.like {
            let (_, entry) = self.catalog.resolve(src)?;
            let CatalogEntry::Table(base) = entry else {
                return Err(RsqlError::validation(format!("LIKE needs a table, and {src} is a view"), Some(src.location)));
            };
            let excluding = |what: &str| {
                like_opts.iter().any(|o| matches!(o, LikeOption::Excluding(w) if w == what || w == "ALL"))
            };
            let mut merged: Vec<ColumnDef> = base.columns.iter().filter(|c| !(excluding("GENERATED") && matches!(c.kind, ColumnKind::Computed(_))) && !(excluding("METADATA") && matches!(c.kind, ColumnKind::Metadata { .. }))).cloned().collect();
            for c in columns.drain(..) {
                if merged.iter().any(|m| m.name == c.name) {
                    return Err(RsqlError::validation(format!("column '{}' is already defined in {}", c.name, base.path), Some(c.location)));
                }
                merged.push(c);
            }
            columns = merged;
            if !excluding("OPTIONS") {
                options = base.options.clone();
            }
            if primary_key.is_none() && !excluding("CONSTRAINTS") {
                primary_key = base.primary_key.clone();
            }
            if watermark.is_none() && !excluding("WATERMARKS") {
                watermark = base.watermark.clone();
            }
        }
        for (k, v, l) in &ct.options {
            options.insert(k.clone(), OptionValue { value: v.clone(), location: *l });
        }
        let mut def = TableDef {
            path: path.clone(),
            columns,
            primary_key,
            watermark,
            options,
            comment: ct.comment.clone(),
            temporary: ct.temporary,
            location,
        };
        if let Some(q) = &ct.as_query {
            let plan = self.plan_query(q, location)?;
            if !def.columns.is_empty() {
                return Err(RsqlError::unsupported("CREATE TABLE ... AS SELECT with a column list is not supported yet; let the query define the columns").at(location));
            }
            for f in plan.schema().fields() {
                let ty = FlinkType::from_arrow(f.data_type())
                    .ok_or_else(|| RsqlError::unsupported(format!("column '{}' has type {} which no table can hold", f.name(), f.data_type())))?;
                def.columns.push(ColumnDef::physical(f.name(), LogicalType::new(ty, f.is_nullable())));
            }
        }
        if def.columns.is_empty() {
            return Err(RsqlError::validation(format!("table {path} has no columns"), Some(location)));
        }
        // Primary key columns must be physical columns; they become NOT NULL.
        if let Some(pk) = def.primary_key.clone() {
            let pk_loc = ct.primary_key.as_ref().map(|(_, l)| *l).unwrap_or(location);
            for k in &pk {
                match def.columns.iter_mut().find(|c| &c.name == k) {
                    Some(c) if c.is_physical() => c.ty.nullable = false,
                    Some(c) => {
                        return Err(RsqlError::validation(
                            format!("primary key column '{}' of {} is not a physical column (computed and metadata columns cannot be keys)", c.name, path),
                            Some(pk_loc),
                        ))
                    }
                    None => {
                        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
                        let hint = did_you_mean(k, names.iter().copied()).map(|s| format!("; did you mean '{s}'?")).unwrap_or_default();
                        return Err(RsqlError::validation(format!("primary key column '{k}' is not a column of {path}{hint}"), Some(pk_loc)));
                    }
                }
            }
        }
        // Connector and options first: a wrong option is the most common mistake.
        let factory = self.registry.validate(&def)?;
        let meta_keys = factory.metadata_keys();
        for c in &def.columns {
            if let Some(key) = c.metadata_key() {
                match meta_keys.iter().find(|(k, _)| *k == key) {
                    None => {
                        let hint = did_you_mean(key, meta_keys.iter().map(|(k, _)| *k)).map(|s| format!("; did you mean '{s}'?")).unwrap_or_else(|| {
                            let all: Vec<&str> = meta_keys.iter().map(|(k, _)| *k).collect();
                            if all.is_empty() { "; this connector provides no metadata".to_string() } else { format!("; available keys: {}", all.join(", ")) }
                        });
                        return Err(RsqlError::validation(
                            format!("connector '{}' has no metadata key '{}' (column '{}'){}", factory.name(), key, c.name, hint),
                            Some(c.location),
                        ));
                    }
                    Some((_, ty)) if !ty.ty.can_assign_to(&c.ty.ty) => {
                        return Err(RsqlError::validation(
                            format!("metadata column '{}' is declared {} but the key '{}' is {}", c.name, c.ty, key, ty),
                            Some(c.location),
                        ))
                    }
                    _ => {}
                }
            }
        }
        // Types of computed columns.
        if def.columns.iter().any(|c| matches!(c.kind, ColumnKind::Computed(_))) {
            let base: Vec<_> = def.columns.iter().filter(|c| !matches!(c.kind, ColumnKind::Computed(_))).map(|c| c.ty.to_field(&c.name)).collect();
            let df = DFSchema::try_from(Schema::new(base))?;
            let snapshot = def.clone();
            for c in def.columns.iter_mut() {
                if let ColumnKind::Computed(sql) = &c.kind {
                    let e = self.plan_column_expr(&snapshot, sql, &df).map_err(|e| e.at(c.location))?;
                    let (dt, nullable) = e.to_field(&df).map(|(_, f)| (f.data_type().clone(), f.is_nullable())).map_err(|e| df_error(e, c.location))?;
                    let ty = FlinkType::from_arrow(&dt).ok_or_else(|| {
                        RsqlError::unsupported(format!("computed column '{}' has type {dt}, which tables cannot hold", c.name)).at(c.location)
                    })?;
                    c.ty = LogicalType::new(ty, nullable);
                }
            }
        }
        if let Some(w) = &def.watermark {
            match def.column(&w.column) {
                None => return Err(RsqlError::validation(format!("WATERMARK FOR '{}': no such column in {}", w.column, path), Some(location))),
                Some(c) if !matches!(c.ty.ty, FlinkType::Timestamp(_) | FlinkType::TimestampLtz(_)) => {
                    return Err(RsqlError::validation(
                        format!("WATERMARK FOR '{}': the rowtime column must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}", w.column, c.ty),
                        Some(c.location),
                    ))
                }
                _ => {}
            }
        }
        let def = Arc::new(def);
        let created = self.catalog.register(&path, CatalogEntry::Table(def.clone()), ct.if_not_exists, ct.name.location)?;
        Ok(if created { Some(def) } else { None })
    }

    pub fn create_view(&mut self, name: &Name, columns: &[String], query: &sp::Query, if_not_exists: bool, text: &str, location: Location) -> Result<()> {
        let path = self.catalog.qualify(name)?;
        let mut plan = self.plan_query(query, location)?;
        if !columns.is_empty() {
            if columns.len() != plan.schema().fields().len() {
                return Err(RsqlError::validation(
                    format!("view {path} names {} columns but its query has {}", columns.len(), plan.schema().fields().len()),
                    Some(location),
                ));
            }
            let exprs: Vec<Expr> = plan.schema().columns().into_iter().zip(columns).map(|(c, n)| Expr::Column(c).alias(n)).collect();
            plan = LogicalPlanBuilder::from(plan).project(exprs).and_then(|b| b.build()).map_err(|e| df_error(e, location))?;
        }
        let view = ViewDef { path: path.clone(), plan: Arc::new(plan), text: text.to_string() };
        self.catalog.register(&path, CatalogEntry::View(Arc::new(view)), if_not_exists, location)?;
        Ok(())
    }

    /// INSERT INTO table [(columns)] query: plans the query and checks it against the sink.
    pub fn plan_insert(&self, table: &Name, columns: &[String], query: &sp::Query, location: Location) -> Result<InsertPlan> {
        let (path, entry) = self.catalog.resolve(table)?;
        let CatalogEntry::Table(sink) = entry else {
            return Err(RsqlError::validation(format!("{path} is a view; INSERT needs a table"), Some(table.location)));
        };
        let factory = self.registry.validate(&sink)?;
        if !factory.supports_sink() {
            return Err(RsqlError::validation(
                format!("connector '{}' of table {} can only be read, not written", factory.name(), path),
                Some(table.location),
            ));
        }
        check_writable_metadata(&sink, factory.as_ref(), table.location)?;
        let plan = self.plan_query(query, location)?;
        let qfields: Vec<_> = plan.schema().fields().iter().cloned().collect();
        let targets: Vec<&ColumnDef> = sink.sink_columns().collect();
        let mut mapping: Vec<Option<usize>> = vec![None; targets.len()];
        if columns.is_empty() {
            // Without a column list the query gives the written columns in declaration order.
            let declared: Vec<&ColumnDef> = sink.columns.iter().filter(|c| targets.iter().any(|t| t.name == c.name)).collect();
            if qfields.len() != targets.len() {
                return Err(RsqlError::validation(
                    format!(
                        "the query gives {} columns but table {} has {} {} ({}); list the target columns or fix the SELECT list",
                        qfields.len(),
                        path,
                        targets.len(),
                        if declared.iter().all(|c| c.is_physical()) { "physical columns" } else { "physical and persisted metadata columns" },
                        declared.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    Some(location),
                ));
            }
            for (qi, c) in declared.iter().enumerate() {
                if let Some(ti) = targets.iter().position(|t| t.name == c.name) {
                    mapping[ti] = Some(qi);
                }
            }
        } else {
            if columns.len() != qfields.len() {
                return Err(RsqlError::validation(
                    format!("INSERT names {} columns but the query gives {}", columns.len(), qfields.len()),
                    Some(location),
                ));
            }
            for (qi, name) in columns.iter().enumerate() {
                let Some(ti) = targets.iter().position(|c| &c.name == name) else {
                    let hint = did_you_mean(name, targets.iter().map(|c| c.name.as_str())).map(|s| format!("; did you mean '{s}'?")).unwrap_or_default();
                    return Err(RsqlError::validation(format!("table {path} has no {} '{name}'{hint}", if targets.iter().all(|c| c.is_physical()) { "physical column" } else { "physical or persisted metadata column" }), Some(location)));
                };
                mapping[ti] = Some(qi);
            }
            for (ti, m) in mapping.iter().enumerate() {
                if m.is_none() && !targets[ti].ty.nullable {
                    return Err(RsqlError::validation(
                        format!("column '{}' of {} is NOT NULL and the INSERT does not give it a value", targets[ti].name, path),
                        Some(location),
                    ));
                }
            }
        }
        for (ti, m) in mapping.iter().enumerate() {
            let Some(qi) = m else { continue };
            let f = &qfields[*qi];
            let target = &targets[ti].ty;
            let ok = match FlinkType::from_arrow(f.data_type()) {
                Some(t) => t.can_assign_to(&target.ty),
                None => false,
            };
            if !ok {
                let shown = FlinkType::from_arrow(f.data_type()).map(|t| t.to_string()).unwrap_or_else(|| f.data_type().to_string());
                return Err(RsqlError::validation(
                    format!(
                        "column '{}' of {} is {}, but the query gives {} (query column {} '{}'); add a CAST",
                        targets[ti].name,
                        path,
                        target,
                        shown,
                        qi + 1,
                        f.name()
                    ),
                    Some(location),
                ));
            }
        }
        Ok(InsertPlan { plan, sink, mapping, location })
    }

    /// Lowers INSERTs (one job, sources shared) and optionally one collected query into a graph.
    pub fn build_job(&self, inserts: &[InsertPlan], collect: Option<(&LogicalPlan, SinkFactoryFn)>) -> Result<JobGraph> {
        let computed = |t: &TableDef, sql: &str, s: &DFSchema| self.plan_column_expr(t, sql, s);
        let mut lw = Lowerer::new(&self.registry, &computed);
        lw.reuse_sub_plans =
            !self.config.get("table.optimizer.reuse-sub-plan-enabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        for ins in inserts {
            self.lower_insert(&mut lw, ins).map_err(|e| e.at(ins.location))?;
        }
        if let Some((plan, sink)) = collect {
            let q = lw.lower(plan)?;
            let schema = lw.schema_of(q.id);
            lw.add(NodeKind::Sink { label: "collect".into(), create: sink }, vec![q.id], schema, q.mode.clone(), q.unique_key.clone(), "Sink(table=[*result*])".into());
        }
        Ok(lw.graph)
    }

    fn lower_insert(&self, lw: &mut Lowerer, ins: &InsertPlan) -> Result<()> {
        let q: Lowered = lw.lower(&ins.plan)?;
        let sink = ins.sink.clone();
        let factory = self.registry.validate(&sink)?;
        let targets: Vec<&ColumnDef> = sink.sink_columns().collect();
        let qschema = ins.plan.schema();
        let sink_schema = sink.sink_schema();
        // Cast and order the query's columns into the sink's columns.
        let identity = ins.mapping.iter().enumerate().all(|(i, m)| *m == Some(i))
            && qschema.fields().iter().zip(sink_schema.fields()).all(|(a, b)| a.data_type() == b.data_type() && a.name() == b.name());
        let mut cur = q.clone();
        if !identity {
            let mut exprs: Vec<PhysExpr> = Vec::new();
            let mut texts = Vec::new();
            for (ti, m) in ins.mapping.iter().enumerate() {
                let dt = sink_schema.field(ti).data_type();
                let e = match m {
                    Some(qi) => {
                        let c = Expr::Column(qschema.columns()[*qi].clone());
                        if qschema.field(*qi).data_type() == dt {
                            c
                        } else if crate::nested::is_nested(dt) {
                            crate::nested::assign(c, dt)
                        } else {
                            c.cast_to(dt, qschema.as_ref())?
                        }
                    }
                    None => Expr::Literal(ScalarValue::try_from(dt)?, None),
                };
                texts.push(format!("{} AS {}", e, targets[ti].name));
                exprs.push(physical(&e, qschema)?);
            }
            let uk = q.unique_key.as_ref().and_then(|k| {
                k.iter().map(|qi| ins.mapping.iter().position(|m| *m == Some(*qi))).collect::<Option<Vec<_>>>()
            });
            let describe = format!("Calc(select=[{}])", texts.join(", "));
            let kind = NodeKind::Calc { filter: None, exprs, filter_text: None, expr_texts: texts };
            cur = lw.add(kind, vec![q.id], sink_schema.clone(), q.mode.clone(), uk, describe);
        }
        let updating = !cur.mode.is_insert_only();
        if updating && !factory.sink_accepts_updates(&sink) {
            // Name the node that turns the stream into an updating one.
            let mut at = q.id;
            while let Some(&i) = lw.graph.node(at).inputs.iter().find(|&&i| !lw.graph.node(i).mode.is_insert_only()) {
                at = i;
            }
            let producer = lw.graph.node(at).describe.clone();
            return Err(RsqlError::validation(
                format!(
                    "table {} (connector '{}') cannot take the updates and deletes produced by {}; write into a table with a PRIMARY KEY and an upsert connector such as 'upsert-kafka', or into 'print'",
                    sink.path,
                    factory.name(),
                    producer
                ),
                Some(ins.location),
            ));
        }
        let mut mode = cur.mode.clone();
        if updating {
            if let Some(pk) = sink.primary_key_indices() {
                let covered = cur.unique_key.as_ref().map(|k| k.iter().all(|i| pk.contains(i))).unwrap_or(false);
                let disabled = self.config.get("table.exec.sink.upsert-materialize").map(|v| v.eq_ignore_ascii_case("none")).unwrap_or(false);
                if !covered && !disabled {
                    let names: Vec<&str> = pk.iter().map(|i| targets[*i].name.as_str()).collect();
                    let describe = format!("SinkMaterializer(pk=[{}])", names.join(", "));
                    cur = lw.add(NodeKind::SinkMaterializer { key: pk.clone() }, vec![cur.id], sink_schema.clone(), ChangelogMode::All, Some(pk.clone()), describe);
                }
                mode = ChangelogMode::Upsert { key: pk.iter().map(|i| targets[*i].name.clone()).collect() };
            }
        }
        let f2 = factory.clone();
        let s2 = sink.clone();
        let input_mode = cur.mode.clone();
        let create: SinkFactoryFn = Arc::new(move || f2.create_sink(&s2, &input_mode));
        let describe = format!(
            "Sink(table=[{}.{}.{}], fields=[{}])",
            sink.path.catalog,
            sink.path.database,
            sink.path.name,
            targets.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        lw.add(NodeKind::Sink { label: sink.path.to_string(), create }, vec![cur.id], sink_schema, mode, cur.unique_key.clone(), describe);
        Ok(())
    }
}

/// A sink writes its metadata columns not declared VIRTUAL, so their keys must be writable by the
/// connector (as Flink checks when it plans an INSERT); VIRTUAL ones are left out of the sink.
fn check_writable_metadata(sink: &TableDef, factory: &dyn ConnectorFactory, at: Location) -> Result<()> {
    let writable = factory.writable_metadata_keys();
    for c in sink.columns.iter() {
        let (ColumnKind::Metadata { is_virtual: false, .. }, Some(key)) = (&c.kind, c.metadata_key()) else { continue };
        match writable.iter().find(|(k, _)| *k == key) {
            Some((_, ty)) if !c.ty.ty.can_assign_to(&ty.ty) => {
                return Err(RsqlError::validation(
                    format!("table {}: metadata column '{}' is {} but connector '{}' writes metadata key '{key}' as {ty}; change the column's type", sink.path, c.name, c.ty, factory.name()),
                    Some(c.location),
                ))
            }
            Some(_) => {}
            None => {
                let list = if writable.is_empty() {
                    "it writes no metadata".to_string()
                } else {
                    format!("the keys it writes are: {}", writable.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "))
                };
                return Err(RsqlError::validation(
                    format!(
                        "table {}: metadata column '{}' (key '{key}') is not writable: connector '{}' only reads it and {list}; \
                         declare the column VIRTUAL to leave it out of INSERTs into the table",
                        sink.path,
                        c.name,
                        factory.name()
                    ),
                    Some(at),
                ));
            }
        }
    }
    Ok(())
}

/// Every table a query names in FROM / JOIN (through CTEs, subqueries and set operations), with
/// its time travel clause if it has one.
fn collect_tables(q: &sp::Query, out: &mut Vec<(sp::ObjectName, Option<sp::TableVersion>)>) {
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            collect_tables(&cte.query, out);
        }
    }
    collect_set_expr(&q.body, out);
}

fn collect_set_expr(e: &sp::SetExpr, out: &mut Vec<(sp::ObjectName, Option<sp::TableVersion>)>) {
    match e {
        sp::SetExpr::Select(s) => {
            for twj in &s.from {
                collect_table_with_joins(twj, out);
            }
        }
        sp::SetExpr::Query(q) => collect_tables(q, out),
        sp::SetExpr::SetOperation { left, right, .. } => {
            collect_set_expr(left, out);
            collect_set_expr(right, out);
        }
        _ => {}
    }
}

fn collect_table_with_joins(t: &sp::TableWithJoins, out: &mut Vec<(sp::ObjectName, Option<sp::TableVersion>)>) {
    collect_factor(&t.relation, out);
    for j in &t.joins {
        collect_factor(&j.relation, out);
    }
}

fn collect_factor(f: &sp::TableFactor, out: &mut Vec<(sp::ObjectName, Option<sp::TableVersion>)>) {
    match f {
        sp::TableFactor::Table { name, version, .. } => out.push((name.clone(), version.clone())),
        sp::TableFactor::Derived { subquery, .. } => collect_tables(subquery, out),
        sp::TableFactor::NestedJoin { table_with_joins, .. } => collect_table_with_joins(table_with_joins, out),
        _ => {}
    }
}

/// Removes table qualifiers from column references.
fn unqualify(e: Expr) -> Expr {
    use datafusion_common::tree_node::{Transformed, TreeNode};
    e.transform(|x| match x {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(datafusion_common::Column::new_unqualified(c.name)))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .unwrap_or_else(|e| Expr::Literal(ScalarValue::Utf8(Some(e.to_string())), None))
}

impl Session {
    /// Names of the functions queries can call.
    pub fn function_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.functions.scalar.keys().chain(self.functions.aggregate.keys()).chain(self.functions.window.keys()).cloned().collect();
        v.sort();
        v.dedup();
        v
    }
}
