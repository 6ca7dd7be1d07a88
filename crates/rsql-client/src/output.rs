//! How results look: Flink SQL client's boxed tables for SHOW/DESCRIBE and for query results in
//! 'tableau' (a changelog streamed as rows arrive), 'changelog' and 'table' (the materialized final
//! result) modes.

use std::io::Write;

use std::fmt::Write as _;

use rsql_common::arrow::array::{Array, AsArray};
use rsql_common::arrow::datatypes::{DataType, Float32Type, Float64Type, SchemaRef};
use rsql_connectors::formats::{java_double_to_string, java_float_to_string};
use rsql_common::arrow::util::display::{ArrayFormatter, FormatOptions};
use rsql_common::{ChangeBatch, RowKind};

/// Renders rows of strings as a boxed table.
pub fn boxed(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let sep = format!("+{}+\n", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
    let line = |cells: &[String], right: bool| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| if right { format!(" {:>w$} ", c, w = w) } else { format!(" {:<w$} ", c, w = w) })
            .collect();
        format!("|{}|\n", parts.join("|"))
    };
    let mut s = String::new();
    s.push_str(&sep);
    s.push_str(&line(headers, false));
    s.push_str(&sep);
    for r in rows {
        s.push_str(&line(r, true));
    }
    if !rows.is_empty() {
        s.push_str(&sep);
    }
    s
}

/// How the client shows a TIMESTAMP or TIMESTAMP_LTZ: as Flink's client casts a TIMESTAMP(3) to
/// STRING, `2024-01-02 03:04:05.120` (TIMESTAMP_LTZ in the session time zone, UTC). Columns keep
/// no precision here, so every timestamp shows milliseconds.
fn display_options() -> FormatOptions<'static> {
    const TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S%.3f";
    FormatOptions::default().with_timestamp_format(Some(TIMESTAMP)).with_timestamp_tz_format(Some(TIMESTAMP))
}

/// BOOLEAN, FLOAT, DOUBLE and BYTES values as Flink casts them to STRING for its client: `TRUE`,
/// Java's float and double text (`1.0E10`), `x'6162'`. None for the other types.
fn flink_scalar(arr: &dyn Array, i: usize) -> Option<String> {
    Some(match arr.data_type() {
        DataType::Boolean => (if arr.as_boolean().value(i) { "TRUE" } else { "FALSE" }).to_string(),
        DataType::Float32 => java_float_to_string(arr.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => java_double_to_string(arr.as_primitive::<Float64Type>().value(i)),
        DataType::Binary => hex_literal(arr.as_binary::<i32>().value(i)),
        DataType::LargeBinary => hex_literal(arr.as_binary::<i64>().value(i)),
        DataType::BinaryView => hex_literal(arr.as_binary_view().value(i)),
        _ => return None,
    })
}

fn hex_literal(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2 + 3);
    s.push_str("x'");
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s.push('\'');
    s
}

/// Formats every row of a batch as strings (NULL as `<NULL>`, as Flink's client shows it).
/// ARRAY, MAP and ROW values render as Flink casts them to STRING: `[a, b]`, `{k=1, j=null}`,
/// `(1, x)`, with `null` for a NULL inside.
pub fn rows_of(batch: &ChangeBatch) -> Vec<Vec<String>> {
    let opts = display_options().with_null("<NULL>");
    let fmts: Vec<_> = batch.data.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect();
    (0..batch.num_rows())
        .map(|i| {
            fmts.iter()
                .zip(batch.data.columns())
                .map(|(f, c)| match f {
                    _ if !c.is_valid(i) => "<NULL>".to_string(),
                    _ if is_nested(c.data_type()) => {
                        let mut s = String::new();
                        write_nested(&mut s, c.as_ref(), i);
                        s
                    }
                    Ok(f) => flink_scalar(c.as_ref(), i).unwrap_or_else(|| f.value(i).to_string()),
                    Err(_) => "?".to_string(),
                })
                .collect()
        })
        .collect()
}

fn is_nested(dt: &DataType) -> bool {
    matches!(dt, DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) | DataType::Map(..) | DataType::Struct(_))
}

/// Appends one value the way Flink's cast to STRING writes it (what its SQL client shows).
fn write_nested(out: &mut String, arr: &dyn Array, i: usize) {
    if arr.is_null(i) {
        out.push_str("null");
        return;
    }
    let elements = |out: &mut String, values: &dyn Array, open: char, close: char| {
        out.push(open);
        for k in 0..values.len() {
            if k > 0 {
                out.push_str(", ");
            }
            write_nested(out, values, k);
        }
        out.push(close);
    };
    match arr.data_type() {
        DataType::List(_) => elements(out, arr.as_list::<i32>().value(i).as_ref(), '[', ']'),
        DataType::LargeList(_) => elements(out, arr.as_list::<i64>().value(i).as_ref(), '[', ']'),
        DataType::FixedSizeList(..) => elements(out, arr.as_fixed_size_list().value(i).as_ref(), '[', ']'),
        DataType::Map(..) => {
            let entries = arr.as_map().value(i);
            out.push('{');
            for k in 0..entries.len() {
                if k > 0 {
                    out.push_str(", ");
                }
                write_nested(out, entries.column(0).as_ref(), k);
                out.push('=');
                write_nested(out, entries.column(1).as_ref(), k);
            }
            out.push('}');
        }
        DataType::Struct(_) => {
            out.push('(');
            for (k, field) in arr.as_struct().columns().iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                write_nested(out, field.as_ref(), i);
            }
            out.push(')');
        }
        _ => match (flink_scalar(arr, i), ArrayFormatter::try_new(arr, &display_options())) {
            (Some(v), _) => out.push_str(&v),
            (None, Ok(f)) => {
                let _ = write!(out, "{}", f.value(i));
            }
            (None, Err(_)) => out.push('?'),
        },
    }
}

/// Flink's `sql-client.display.max-column-width`: the width of a streamed ARRAY, MAP or ROW
/// column (at least its name's); longer values are cut to it, ending in `...`.
const NESTED_COLUMN_WIDTH: usize = 30;

/// `value` cut to `width` characters, its end replaced by `...`, as Flink's tableau does.
fn fit(value: &str, width: usize) -> String {
    if value.chars().count() <= width {
        return value.to_string();
    }
    let keep = width.saturating_sub(3);
    let mut s: String = value.chars().take(keep).collect();
    s.push_str(&".".repeat(width - keep));
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultMode {
    Table,
    Tableau,
    Changelog,
}

impl ResultMode {
    pub fn parse(s: &str) -> Option<ResultMode> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Some(ResultMode::Table),
            "tableau" => Some(ResultMode::Tableau),
            "changelog" => Some(ResultMode::Changelog),
            _ => None,
        }
    }
}

/// Collects or streams a query's result.
pub struct ResultPrinter {
    mode: ResultMode,
    headers: Vec<String>,
    with_op: bool,
    widths: Vec<usize>,
    /// Columns of a fixed width whose longer values are cut (ARRAY, MAP and ROW columns).
    fixed: Vec<bool>,
    header_printed: bool,
    /// Materialized rows for 'table' mode.
    rows: Vec<Vec<String>>,
    pub received: u64,
    /// Redraw the materialized table as it changes (an interactive terminal).
    live: bool,
    last_draw: Option<std::time::Instant>,
}

impl ResultPrinter {
    pub fn new(mode: ResultMode, schema: &SchemaRef, insert_only: bool) -> Self {
        let mut headers: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let with_op = mode == ResultMode::Changelog || (mode == ResultMode::Tableau && !insert_only);
        if with_op {
            headers.insert(0, "op".to_string());
        }
        let mut fixed: Vec<bool> = schema.fields().iter().map(|f| is_nested(f.data_type())).collect();
        if with_op {
            fixed.insert(0, false);
        }
        let widths = headers
            .iter()
            .zip(&fixed)
            .map(|(h, nested)| h.chars().count().max(if *nested { NESTED_COLUMN_WIDTH } else { 12 }))
            .collect();
        ResultPrinter { mode, headers, with_op, widths, fixed, header_printed: false, rows: Vec::new(), received: 0, live: false, last_draw: None }
    }

    /// In 'table' mode, redraw the table on the terminal as rows change.
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    fn draw(&mut self, out: &mut dyn Write) {
        let _ = write!(out, "\x1b[2J\x1b[H{}", boxed(&self.headers, &self.rows));
        let _ = writeln!(out, "{} rows, {} changes received. Press Ctrl-C to stop.", self.rows.len(), self.received);
        let _ = out.flush();
        self.last_draw = Some(std::time::Instant::now());
    }

    fn sep(&self) -> String {
        format!("+{}+", self.widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"))
    }

    fn line(&self, cells: &[String]) -> String {
        let parts: Vec<String> = cells.iter().zip(&self.widths).map(|(c, w)| format!(" {:>w$} ", c, w = w)).collect();
        format!("|{}|", parts.join("|"))
    }

    pub fn write(&mut self, batch: &ChangeBatch, out: &mut dyn Write) {
        let rows = rows_of(batch);
        self.received += rows.len() as u64;
        match self.mode {
            ResultMode::Table => {
                for (r, k) in rows.into_iter().zip(&batch.kinds) {
                    if k.is_accumulate() {
                        self.rows.push(r);
                    } else if let Some(p) = self.rows.iter().rposition(|x| *x == r) {
                        self.rows.remove(p);
                    }
                }
                let due = self.last_draw.map(|t| t.elapsed() >= std::time::Duration::from_millis(250)).unwrap_or(true);
                if self.live && due {
                    self.draw(out);
                }
            }
            ResultMode::Tableau | ResultMode::Changelog => {
                if !self.header_printed {
                    let _ = writeln!(out, "{}", self.sep());
                    let hs: Vec<String> = self.headers.clone();
                    let parts: Vec<String> = hs.iter().zip(&self.widths).map(|(c, w)| format!(" {:>w$} ", c, w = w)).collect();
                    let _ = writeln!(out, "|{}|", parts.join("|"));
                    let _ = writeln!(out, "{}", self.sep());
                    self.header_printed = true;
                }
                for (mut r, k) in rows.into_iter().zip(&batch.kinds) {
                    if self.with_op {
                        r.insert(0, k.short_string().to_string());
                    }
                    for (i, c) in r.iter_mut().enumerate() {
                        if i >= self.widths.len() {
                            continue;
                        }
                        if self.fixed[i] {
                            *c = fit(c, self.widths[i]);
                        } else if c.chars().count() > self.widths[i] {
                            self.widths[i] = c.chars().count();
                        }
                    }
                    let _ = writeln!(out, "{}", self.line(&r));
                }
                let _ = out.flush();
            }
        }
    }

    pub fn finish(&mut self, out: &mut dyn Write) {
        match self.mode {
            ResultMode::Table => {
                let _ = write!(out, "{}", boxed(&self.headers, &self.rows));
                let n = self.rows.len();
                let _ = writeln!(out, "{} row{} in set", n, if n == 1 { "" } else { "s" });
            }
            _ => {
                if self.header_printed {
                    let _ = writeln!(out, "{}", self.sep());
                } else {
                    let _ = writeln!(out, "Empty set");
                }
                let _ = writeln!(out, "Received a total of {} row{}", self.received, if self.received == 1 { "" } else { "s" });
            }
        }
        let _ = out.flush();
    }
}

#[allow(dead_code)]
pub fn kind_name(k: RowKind) -> &'static str {
    k.short_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::builder::{Datum, RowsBuilder};
    use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};

    fn nested_batch(kinds: Vec<RowKind>) -> ChangeBatch {
        let string = || LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH));
        let cols = vec![
            ("tags".to_string(), LogicalType::nullable(FlinkType::Array(Box::new(string())))),
            ("m".to_string(), LogicalType::nullable(FlinkType::Map(Box::new(string().with_nullable(false)), Box::new(LogicalType::nullable(FlinkType::Int))))),
            ("r".to_string(), LogicalType::nullable(FlinkType::Row(vec![("a".into(), LogicalType::nullable(FlinkType::Int)), ("b".into(), string())]))),
        ];
        let mut b = RowsBuilder::new(&cols, 2).unwrap();
        let s = |v: &str| Datum::Str(v.to_string());
        b.append_row(vec![
            Datum::list(vec![s("a"), Datum::Null, s("b")]),
            Datum::map(vec![(s("k"), Datum::Int(1)), (s("j"), Datum::Null)]),
            Datum::row(vec![Datum::Int(1), s("x")]),
        ])
        .unwrap();
        b.append_row(vec![
            Datum::list((0..20).map(|i| s(&format!("v{i}"))).collect()),
            Datum::Null,
            Datum::row(vec![Datum::Null, Datum::Null]),
        ])
        .unwrap();
        ChangeBatch::new(b.finish().unwrap(), kinds)
    }

    #[test]
    fn nested_values_render_as_flink_casts_them_to_string() {
        let rows = rows_of(&nested_batch(vec![RowKind::Insert, RowKind::Insert]));
        assert_eq!(rows[0], vec!["[a, null, b]", "{k=1, j=null}", "(1, x)"]);
        assert_eq!(rows[1][1], "<NULL>");
        assert_eq!(rows[1][2], "(null, null)");
        assert!(rows[1][0].starts_with("[v0, v1, v2"));
    }

    // Flink 2.3's client shows TRUE, x'6162', 1.0E10, 1.23456789125E8 and 1.5 for these values.
    #[test]
    fn scalars_render_as_flink_casts_them_to_string() {
        use rsql_common::arrow::array::{ArrayRef, BinaryArray, BooleanArray, Float64Array};
        use std::sync::Arc;
        let b: ArrayRef = Arc::new(BooleanArray::from(vec![true, false]));
        let y: ArrayRef = Arc::new(BinaryArray::from(vec![&b"ab"[..], &[][..]]));
        let d: ArrayRef = Arc::new(Float64Array::from(vec![1e10, 123456789.125]));
        let d2: ArrayRef = Arc::new(Float64Array::from(vec![1.5, 1e-4]));
        let cells: Vec<Option<String>> = [(&b, 0), (&b, 1), (&y, 0), (&y, 1), (&d, 0), (&d, 1), (&d2, 0), (&d2, 1)]
            .iter()
            .map(|(a, i)| flink_scalar(a.as_ref(), *i))
            .collect();
        let want = ["TRUE", "FALSE", "x'6162'", "x''", "1.0E10", "1.23456789125E8", "1.5", "1.0E-4"];
        assert_eq!(cells, want.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>());
    }

    #[test]
    fn tableau_gives_nested_columns_flinks_width_and_cuts_longer_values() {
        let batch = nested_batch(vec![RowKind::Insert, RowKind::UpdateAfter]);
        let mut p = ResultPrinter::new(ResultMode::Tableau, &batch.data.schema(), false);
        let mut out = Vec::new();
        p.write(&batch, &mut out);
        p.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Every line of the table has the same width: op (12) and three columns of 30.
        let width = lines[0].chars().count();
        assert_eq!(width, 1 + (12 + 3) + 3 * (30 + 3));
        for l in &lines[..6] {
            assert_eq!(l.chars().count(), width, "{text}");
        }
        assert!(lines[3].contains("|                   [a, null, b] |                  {k=1, j=null} |                         (1, x) |"), "{text}");
        assert!(lines[4].contains("| [v0, v1, v2, v3, v4, v5, v6... |                         <NULL> |                   (null, null) |"), "{text}");
        assert!(lines[4].trim_start_matches('|').trim_start().starts_with("+U"), "{text}");
    }
}
