//! How results look: Flink SQL client's boxed tables for SHOW/DESCRIBE and for query results in
//! 'tableau' (a changelog streamed as rows arrive), 'changelog' and 'table' (the materialized final
//! result) modes.

use std::io::Write;

use rsql_common::arrow::array::Array;
use rsql_common::arrow::datatypes::SchemaRef;
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

/// Formats every row of a batch as strings (NULL as `<NULL>`, as Flink's client shows it).
pub fn rows_of(batch: &ChangeBatch) -> Vec<Vec<String>> {
    let opts = FormatOptions::default().with_null("<NULL>");
    let fmts: Vec<_> = batch.data.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect();
    (0..batch.num_rows())
        .map(|i| {
            fmts.iter()
                .zip(batch.data.columns())
                .map(|(f, c)| match f {
                    Ok(f) if c.is_valid(i) => f.value(i).to_string(),
                    Ok(_) => "<NULL>".to_string(),
                    Err(_) => "?".to_string(),
                })
                .collect()
        })
        .collect()
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
        let widths = headers.iter().map(|h| h.chars().count().max(12)).collect();
        ResultPrinter { mode, headers, with_op, widths, header_printed: false, rows: Vec::new(), received: 0, live: false, last_draw: None }
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
                    for (i, c) in r.iter().enumerate() {
                        if i < self.widths.len() && c.chars().count() > self.widths[i] {
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
