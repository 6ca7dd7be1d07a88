//! Window table functions in FROM (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))`,
//! `HOP`, `CUMULATE`, positional or with named arguments): before DataFusion plans a query, each
//! call is checked (the input table or view, the DESCRIPTOR naming an event-time attribute, the
//! intervals) and replaced by a reference to a synthetic table whose columns are the input's plus
//! `window_start`, `window_end` and `window_time`. The provider resolves that name to the input
//! with the window attached, and lowering turns it into a WindowTableFunction node.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_sql::sqlparser::ast as sp;
use rsql_common::catalog::{ColumnKind, ObjectPath};
use rsql_common::{Location, Result, RsqlError};
use rsql_runtime::graph::{WindowKind, WindowSpec};

use crate::catalog::{Catalog, CatalogEntry};
use crate::lower::{time_attribute_of_view, TimeAttr};

/// Names of the synthetic tables start with this.
pub const WINDOW_TABLE_PREFIX: &str = "__rsql_window_";

/// One window table function call of a query.
#[derive(Clone, Debug)]
pub struct WindowTvf {
    pub spec: WindowSpec,
    /// The DESCRIPTOR column.
    pub time_col: String,
    /// The input table or view.
    pub input: ObjectPath,
    /// The call as written, for messages.
    pub text: String,
    pub location: Location,
}

impl WindowTvf {
    /// The input's columns followed by the window columns.
    pub fn schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let time = input.field_with_name(&self.time_col)?;
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts, false));
        fields.push(Field::new("window_time", time.data_type().clone(), false));
        Ok(Arc::new(Schema::new(fields)))
    }
}

fn loc(span: datafusion_sql::sqlparser::tokenizer::Span, fallback: Location) -> Location {
    if span.start.line > 0 {
        Location::new(span.start.line, span.start.column)
    } else {
        fallback
    }
}

/// Replaces every window table function of `query` by a synthetic table name; returns the
/// windows by those names.
pub fn rewrite_window_tvfs(query: &mut sp::Query, catalog: &Catalog, location: Location) -> Result<HashMap<String, Arc<WindowTvf>>> {
    let mut out = HashMap::new();
    rewrite_query(query, catalog, location, &mut out)?;
    Ok(out)
}

type Found = HashMap<String, Arc<WindowTvf>>;

fn rewrite_query(q: &mut sp::Query, catalog: &Catalog, location: Location, out: &mut Found) -> Result<()> {
    if let Some(with) = &mut q.with {
        for cte in &mut with.cte_tables {
            rewrite_query(&mut cte.query, catalog, location, out)?;
        }
    }
    rewrite_set_expr(&mut q.body, catalog, location, out)
}

fn rewrite_set_expr(e: &mut sp::SetExpr, catalog: &Catalog, location: Location, out: &mut Found) -> Result<()> {
    match e {
        sp::SetExpr::Select(s) => {
            for twj in &mut s.from {
                rewrite_table_with_joins(twj, catalog, location, out)?;
            }
            Ok(())
        }
        sp::SetExpr::Query(q) => rewrite_query(q, catalog, location, out),
        sp::SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, catalog, location, out)?;
            rewrite_set_expr(right, catalog, location, out)
        }
        _ => Ok(()),
    }
}

fn rewrite_table_with_joins(t: &mut sp::TableWithJoins, catalog: &Catalog, location: Location, out: &mut Found) -> Result<()> {
    rewrite_factor(&mut t.relation, catalog, location, out)?;
    for j in &mut t.joins {
        rewrite_factor(&mut j.relation, catalog, location, out)?;
    }
    Ok(())
}

fn rewrite_factor(f: &mut sp::TableFactor, catalog: &Catalog, location: Location, out: &mut Found) -> Result<()> {
    match f {
        sp::TableFactor::Derived { subquery, .. } => rewrite_query(subquery, catalog, location, out),
        sp::TableFactor::NestedJoin { table_with_joins, .. } => rewrite_table_with_joins(table_with_joins, catalog, location, out),
        sp::TableFactor::TableFunction { expr, alias } => {
            let sp::Expr::Function(func) = expr else { return Ok(()) };
            let fname = func.name.to_string().to_ascii_uppercase();
            let at = func.name.0.first().and_then(|p| p.as_ident()).map(|i| loc(i.span, location)).unwrap_or(location);
            let kind = match fname.as_str() {
                "TUMBLE" => WindowKind::Tumble,
                "HOP" => WindowKind::Hop,
                "CUMULATE" => WindowKind::Cumulate,
                "SESSION" => {
                    return Err(RsqlError::unsupported(
                        "the SESSION window table function is not supported yet; use TUMBLE, HOP or CUMULATE",
                    )
                    .at(at))
                }
                _ => return Ok(()),
            };
            let tvf = parse_call(kind, func, catalog, at)?;
            let name = format!("{WINDOW_TABLE_PREFIX}{}", out.len());
            // Without an alias the columns are qualified by the input's name, as in Flink.
            let alias = alias.clone().unwrap_or(sp::TableAlias { explicit: true, name: sp::Ident::new(tvf.input.name.clone()), columns: Vec::new(), at: None });
            *f = table_factor(&name, alias)?;
            out.insert(name, Arc::new(tvf));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `FROM name AS alias` as sqlparser builds it.
fn table_factor(name: &str, alias: sp::TableAlias) -> Result<sp::TableFactor> {
    let dialect = rsql_sql::FlinkDialect;
    let q = datafusion_sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(&format!("SELECT * FROM {name}"))
        .and_then(|mut p| p.parse_query())
        .map_err(|e| RsqlError::execution(format!("window table function rewrite: {e}")))?;
    if let sp::SetExpr::Select(s) = *q.body {
        if let Some(twj) = s.from.into_iter().next() {
            if let sp::TableFactor::Table { name, args, with_hints, version, with_ordinality, partitions, json_path, sample, index_hints, .. } = twj.relation {
                return Ok(sp::TableFactor::Table { name, alias: Some(alias), args, with_hints, version, with_ordinality, partitions, json_path, sample, index_hints });
            }
        }
    }
    Err(RsqlError::execution("window table function rewrite: unexpected parse"))
}

/// The arguments of a window call by role, from positional or named arguments.
fn parse_call(kind: WindowKind, func: &sp::Function, catalog: &Catalog, at: Location) -> Result<WindowTvf> {
    let fname = match kind {
        WindowKind::Tumble => "TUMBLE",
        WindowKind::Hop => "HOP",
        WindowKind::Cumulate => "CUMULATE",
    };
    let text = func.to_string().replacen('(', "(TABLE ", 1);
    let err = |m: String| RsqlError::validation(format!("{fname}: {m}"), Some(at));
    let positional: &[&str] = match kind {
        WindowKind::Tumble => &["DATA", "TIMECOL", "SIZE", "OFFSET"],
        WindowKind::Hop => &["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"],
        WindowKind::Cumulate => &["DATA", "TIMECOL", "STEP", "SIZE", "OFFSET"],
    };
    let usage = match kind {
        WindowKind::Tumble => "TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND [, offset])",
        WindowKind::Hop => "HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND /* slide */, INTERVAL '10' SECOND /* size */ [, offset])",
        WindowKind::Cumulate => "CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND /* step */, INTERVAL '10' SECOND /* max size */ [, offset])",
    };
    let sp::FunctionArguments::List(list) = &func.args else {
        return Err(err(format!("expected arguments, as in {usage}")));
    };
    let mut args: HashMap<&str, &sp::Expr> = HashMap::new();
    for (i, a) in list.args.iter().enumerate() {
        let (name, e) = match a {
            sp::FunctionArg::Unnamed(sp::FunctionArgExpr::Expr(e)) => match positional.get(i) {
                Some(n) => (n.to_string(), e),
                None => return Err(err(format!("too many arguments; expected {usage}"))),
            },
            sp::FunctionArg::Named { name, arg: sp::FunctionArgExpr::Expr(e), .. } => (name.value.to_ascii_uppercase(), e),
            sp::FunctionArg::ExprNamed { name: sp::Expr::Identifier(name), arg: sp::FunctionArgExpr::Expr(e), .. } => (name.value.to_ascii_uppercase(), e),
            other => return Err(err(format!("unexpected argument {other}; expected {usage}"))),
        };
        let Some(key) = positional.iter().find(|p| **p == name) else {
            return Err(err(format!("unknown argument name {name}; {fname} takes {}", positional.join(", "))));
        };
        if args.insert(key, e).is_some() {
            return Err(err(format!("argument {name} is given twice")));
        }
    }
    let need = |k: &str| args.get(k).copied().ok_or_else(|| err(format!("missing argument {k}; expected {usage}")));
    // DATA: a table or view name (the TABLE keyword was dropped by the parser).
    let parts: Vec<String> = match need("DATA")? {
        sp::Expr::Identifier(i) => vec![i.value.clone()],
        sp::Expr::CompoundIdentifier(ids) => ids.iter().map(|i| i.value.clone()).collect(),
        other => return Err(err(format!("the first argument must be TABLE name, not {other}; expected {usage}"))),
    };
    let path = catalog.qualify_parts(&parts).ok_or_else(|| err(format!("'{}' is not a valid table name", parts.join("."))))?;
    let Some(entry) = catalog.lookup(&path) else {
        return Err(err(format!("table {path} does not exist")));
    };
    // TIMECOL: DESCRIPTOR(column), an event-time attribute of the input.
    let time_col = match need("TIMECOL")? {
        sp::Expr::Function(d) if d.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") => match &d.args {
            sp::FunctionArguments::List(l) if l.args.len() == 1 => match &l.args[0] {
                sp::FunctionArg::Unnamed(sp::FunctionArgExpr::Expr(sp::Expr::Identifier(i))) => i.value.clone(),
                _ => return Err(err("DESCRIPTOR takes one column name, as in DESCRIPTOR(ts)".into())),
            },
            _ => return Err(err("DESCRIPTOR takes one column name, as in DESCRIPTOR(ts)".into())),
        },
        other => return Err(err(format!("the time column must be given as DESCRIPTOR(column), not {other}"))),
    };
    check_time_attribute(fname, entry, &path, &time_col, &err)?;
    let interval = |k: &str| -> Result<Option<i64>> {
        match args.get(k) {
            None => Ok(None),
            Some(e) => interval_micros(e).map(Some).ok_or_else(|| {
                err(format!(
                    "{k} must be a positive interval of days, hours, minutes, seconds or milliseconds, like INTERVAL '10' SECOND, not {e}"
                ))
            }),
        }
    };
    let size = interval("SIZE")?.ok_or_else(|| err(format!("missing argument SIZE; expected {usage}")))?;
    let offset = match args.get("OFFSET") {
        None => 0,
        Some(e) => signed_interval_micros(e).ok_or_else(|| err(format!("OFFSET must be an interval like INTERVAL '1' SECOND, not {e}")))?,
    };
    let step = match kind {
        WindowKind::Tumble => size,
        WindowKind::Hop => interval("SLIDE")?.ok_or_else(|| err(format!("missing argument SLIDE; expected {usage}")))?,
        WindowKind::Cumulate => interval("STEP")?.ok_or_else(|| err(format!("missing argument STEP; expected {usage}")))?,
    };
    match kind {
        WindowKind::Hop if size % step != 0 => {
            return Err(err(format!(
                "the size ({}) must be a whole multiple of the slide ({})",
                rsql_runtime::graph::duration_text(size),
                rsql_runtime::graph::duration_text(step)
            )))
        }
        WindowKind::Cumulate if size % step != 0 => {
            return Err(err(format!(
                "the max size ({}) must be a whole multiple of the step ({})",
                rsql_runtime::graph::duration_text(size),
                rsql_runtime::graph::duration_text(step)
            )))
        }
        _ => {}
    }
    Ok(WindowTvf { spec: WindowSpec { kind, size, step, offset }, time_col, input: path, text, location: at })
}

fn check_time_attribute(fname: &str, entry: &CatalogEntry, path: &ObjectPath, col: &str, err: &dyn Fn(String) -> RsqlError) -> Result<()> {
    let attr = match entry {
        CatalogEntry::Table(t) => {
            let Some(c) = t.columns.iter().find(|c| c.name == col) else {
                let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                return Err(err(format!("DESCRIPTOR({col}): table {path} has no column '{col}'; its columns are {}", names.join(", "))));
            };
            if matches!(&c.kind, ColumnKind::Computed(sql) if crate::lower::is_proctime_call(sql)) {
                Some(TimeAttr::Proctime)
            } else if t.watermark.as_ref().is_some_and(|w| w.column == col) {
                Some(TimeAttr::Rowtime)
            } else {
                None
            }
        }
        CatalogEntry::View(v) => {
            let schema = v.plan.schema();
            let Some(i) = schema.fields().iter().position(|f| f.name() == col) else {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(err(format!("DESCRIPTOR({col}): view {path} has no column '{col}'; its columns are {}", names.join(", "))));
            };
            time_attribute_of_view(&v.plan, i)
        }
    };
    match attr {
        Some(TimeAttr::Rowtime) => Ok(()),
        Some(TimeAttr::Proctime) => Err(RsqlError::unsupported(format!(
            "{fname}: processing-time windows (DESCRIPTOR({col}) names a PROCTIME() column) are not supported yet; use an event-time attribute declared with WATERMARK FOR"
        ))),
        None => Err(err(format!(
            "DESCRIPTOR({col}): column '{col}' of {path} is not a time attribute; declare it as the table's event time with WATERMARK FOR {col} AS {col} - INTERVAL '5' SECOND"
        ))),
    }
}

/// A positive interval literal in microseconds (whole milliseconds).
fn interval_micros(e: &sp::Expr) -> Option<i64> {
    signed_interval_micros(e).filter(|v| *v > 0)
}

fn signed_interval_micros(e: &sp::Expr) -> Option<i64> {
    let sp::Expr::Interval(iv) = e else { return None };
    if iv.last_field.is_some() {
        return None;
    }
    let text = match iv.value.as_ref() {
        sp::Expr::Value(v) => match &v.value {
            sp::Value::SingleQuotedString(s) => s.trim().to_string(),
            sp::Value::Number(n, _) => n.clone(),
            _ => return None,
        },
        _ => return None,
    };
    use sp::DateTimeField as F;
    let unit_ms: i64 = match iv.leading_field.as_ref()? {
        F::Millisecond | F::Milliseconds => 1,
        F::Second | F::Seconds => 1000,
        F::Minute | F::Minutes => 60_000,
        F::Hour | F::Hours => 3_600_000,
        F::Day | F::Days => 86_400_000,
        _ => return None,
    };
    let v: f64 = text.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let ms = v * unit_ms as f64;
    if ms.fract() != 0.0 || ms.abs() > 1e15 {
        return None;
    }
    Some(ms as i64 * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(sql: &str) -> Option<i64> {
        let dialect = rsql_sql::FlinkDialect;
        let e = datafusion_sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(sql).and_then(|mut p| p.parse_expr()).expect("expr");
        interval_micros(&e)
    }

    #[test]
    fn intervals() {
        assert_eq!(iv("INTERVAL '10' SECOND"), Some(10_000_000));
        assert_eq!(iv("INTERVAL '10' MINUTES"), Some(600_000_000));
        assert_eq!(iv("INTERVAL '1.5' SECOND"), Some(1_500_000));
        assert_eq!(iv("INTERVAL '2' HOUR"), Some(7_200_000_000));
        assert_eq!(iv("INTERVAL '0' SECOND"), None);
        assert_eq!(iv("INTERVAL '-1' SECOND"), None);
        assert_eq!(iv("INTERVAL '1' MONTH"), None);
        assert_eq!(iv("INTERVAL 'x' SECOND"), None);
        assert_eq!(iv("10"), None);
    }
}
