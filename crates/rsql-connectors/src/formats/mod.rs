//! Formats shared by the kafka, upsert-kafka and filesystem connectors: how a message (or a line
//! of a file) turns into rows, and rows into messages, with Flink's option names and semantics.
//!
//! Formats: `json`, `csv`, `raw`, and the changelog formats `debezium-json`, `canal-json` and
//! `maxwell-json` (which carry +I/-U/+U/-D). `json` decodes each message field by field straight
//! into the Arrow column builders ([`DecodedRows`], [`RowDecoder::decode_columns`]), rolling
//! back a message that fails halfway; the other decoders parse a message into a row of typed
//! values (ARRAY / MAP / ROW values as nested values) that is then appended to the builders.
//! Encoders read Arrow arrays directly and write
//! bytes, with Flink's output conventions (FLOAT `10.0`, TIMESTAMP `2024-01-02 03:04:05.123`,
//! DECIMAL as a JSON number, ...).
//!
//! Options are read under a prefix so one table can hold two formats: `json.ignore-parse-errors`
//! for `'format' = 'json'`, `key.json.*` for `'key.format' = 'json'`, `value.json.*` for
//! `'value.format' = 'json'`.
//!
//! Decode errors name what failed (column, field, value); the caller adds where (file and line,
//! or topic, partition and offset) with [`describe_bytes`] showing the first bytes of the input.

mod changelog;
mod csv;
pub(crate) mod json;
mod raw;
pub(crate) mod text;

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::{ColumnBuilder, Datum, RowsBuilder};
use rsql_common::catalog::TableDef;
use rsql_common::options::{did_you_mean, OptionKind, OptionSpec, Opts};
use rsql_common::types::LogicalType;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

pub use changelog::{CanalJsonDecoder, ChangelogJsonEncoder, DebeziumJsonDecoder, MaxwellJsonDecoder};
pub use csv::{CsvDecoder, CsvEncoder};
pub use json::{JsonDecoder, JsonEncoder};
pub use raw::{RawDecoder, RawEncoder};
pub use text::{java_double_to_string, java_float_to_string};

/// Every format name this module knows.
pub const FORMATS: &[&str] = &["json", "csv", "raw", "debezium-json", "canal-json", "maxwell-json"];

/// Whether the format carries updates and deletes (+I/-U/+U/-D) rather than only inserts.
pub fn is_changelog_format(format: &str) -> bool {
    matches!(format, "debezium-json" | "canal-json" | "maxwell-json")
}

/// Checks that `format` is known; the error names the option it came from and suggests a fix.
pub fn check_format(table: &TableDef, option_key: &str, format: &str) -> Result<()> {
    if FORMATS.contains(&format) {
        return Ok(());
    }
    let hint = match did_you_mean(format, FORMATS.iter().copied()) {
        Some(s) => format!("did you mean '{s}'?"),
        None => format!("supported formats: {}", FORMATS.join(", ")),
    };
    Err(Opts::new(table).error(option_key, format!("unknown format '{format}'; {hint}")))
}

fn intern(s: String) -> &'static str {
    static KEYS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let set = KEYS.get_or_init(|| Mutex::new(HashSet::new()));
    let mut guard = match set.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(k) = guard.get(s.as_str()) {
        return k;
    }
    let leaked: &'static str = Box::leak(s.into_boxed_str());
    guard.insert(leaked);
    leaked
}

const TIMESTAMP_STANDARDS: &[&str] = &["SQL", "ISO-8601"];
const MAP_NULL_KEY_MODES: &[&str] = &["FAIL", "DROP", "LITERAL"];

/// The options of `format` under `prefix` (`""`, `"key."`, `"value."`), e.g.
/// `value.json.ignore-parse-errors`.
pub fn format_options(format: &str, prefix: &str) -> Result<Vec<OptionSpec>> {
    use OptionKind::*;
    let json_common: &[(&str, OptionKind)] = &[
        ("ignore-parse-errors", Bool),
        ("timestamp-format.standard", Enum(TIMESTAMP_STANDARDS)),
        ("map-null-key.mode", Enum(MAP_NULL_KEY_MODES)),
        ("map-null-key.literal", String),
        ("encode.decimal-as-plain-number", Bool),
        ("encode.ignore-null-fields", Bool),
    ];
    let mut list: Vec<(&str, OptionKind)> = Vec::new();
    match format {
        "json" => {
            list.extend(json_common.iter().cloned());
            list.push(("fail-on-missing-field", Bool));
        }
        "debezium-json" => {
            list.extend(json_common.iter().cloned());
            list.push(("schema-include", Bool));
        }
        "canal-json" => {
            list.extend(json_common.iter().cloned());
            list.push(("database.include", String));
            list.push(("table.include", String));
        }
        "maxwell-json" => list.extend(json_common.iter().cloned()),
        "csv" => list.extend([
            ("field-delimiter", String),
            ("disable-quote-character", Bool),
            ("quote-character", String),
            ("allow-comments", Bool),
            ("ignore-parse-errors", Bool),
            ("array-element-delimiter", String),
            ("escape-character", String),
            ("null-literal", String),
            ("write-bigdecimal-in-scientific-notation", Bool),
        ]),
        "raw" => list.extend([("charset", String), ("endianness", Enum(&["big-endian", "little-endian"]))]),
        other => {
            let hint = match did_you_mean(other, FORMATS.iter().copied()) {
                Some(s) => format!("did you mean '{s}'?"),
                None => format!("supported formats: {}", FORMATS.join(", ")),
            };
            return Err(RsqlError::unsupported(format!("unknown format '{other}'; {hint}")));
        }
    }
    Ok(list.into_iter().map(|(k, kind)| OptionSpec::optional(intern(format!("{prefix}{format}.{k}")), kind)).collect())
}

/// Reads the options of one format for one table: `get("ignore-parse-errors")` reads
/// `{prefix}{format}.ignore-parse-errors`.
pub(crate) struct FormatOpts<'a> {
    opts: Opts<'a>,
    base: String,
}

impl<'a> FormatOpts<'a> {
    pub(crate) fn new(table: &'a TableDef, format: &str, prefix: &str) -> Self {
        FormatOpts { opts: Opts::new(table), base: format!("{prefix}{format}.") }
    }
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{}", self.base, name)
    }
    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.opts.get(&self.key(name))
    }
    pub(crate) fn bool(&self, name: &str, default: bool) -> Result<bool> {
        self.opts.bool(&self.key(name), default)
    }
    pub(crate) fn error(&self, name: &str, message: impl Into<String>) -> RsqlError {
        self.opts.error(&self.key(name), message)
    }
    /// A single character option (csv delimiters and quotes); `\t` and `\\t` both mean a tab.
    pub(crate) fn char(&self, name: &str, default: u8) -> Result<u8> {
        match self.get(name) {
            None => Ok(default),
            Some("\\t") | Some("\t") => Ok(b'\t'),
            Some(v) if v.len() == 1 => Ok(v.as_bytes()[0]),
            Some(v) => Err(self.error(name, format!("'{v}' must be a single ASCII character"))),
        }
    }
}

/// Rows decoded from messages, built straight into Arrow columns, with their row kinds.
pub struct DecodedRows {
    builder: RowsBuilder,
    kinds: Vec<RowKind>,
}

impl DecodedRows {
    pub fn new(columns: &[(String, LogicalType)], capacity: usize) -> Result<Self> {
        Ok(DecodedRows { builder: RowsBuilder::new(columns, capacity)?, kinds: Vec::with_capacity(capacity) })
    }

    /// Appends one row; on error nothing is appended.
    pub fn push(&mut self, kind: RowKind, values: Vec<Datum>) -> Result<()> {
        self.builder.append_row(values)?;
        self.kinds.push(kind);
        Ok(())
    }

    /// Column `i`, for appending a row's values field by field; end the row with
    /// [`DecodedRows::commit`] or drop its values with [`DecodedRows::rollback`].
    pub fn column(&mut self, i: usize) -> &mut ColumnBuilder {
        self.builder.column(i)
    }

    /// Ends a row appended column by column.
    pub fn commit(&mut self, kind: RowKind) -> Result<()> {
        self.builder.commit_row()?;
        self.kinds.push(kind);
        Ok(())
    }

    /// Drops the values appended since the last committed row.
    pub fn rollback(&mut self) -> Result<()> {
        self.builder.rollback_row()
    }

    /// Drops every row after the first `rows` (see [`DecodedRows::len`]), committed or not.
    pub fn rollback_to(&mut self, rows: usize) -> Result<()> {
        self.builder.rollback_to(rows)?;
        self.kinds.truncate(rows);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn schema(&self) -> SchemaRef {
        self.builder.schema()
    }

    /// The rows so far as a batch; the builder starts over empty.
    pub fn finish(&mut self) -> Result<ChangeBatch> {
        let data = self.builder.finish()?;
        let kinds = std::mem::take(&mut self.kinds);
        Ok(ChangeBatch::new(data, kinds))
    }
}

/// Completes a row whose decoded fields are in: appends the columns the decoder does not fill
/// and commits the row ([`DecodedRows::commit`]) with the given kind.
pub type CompleteRow<'a> = dyn FnMut(&mut DecodedRows, RowKind) -> Result<()> + 'a;

/// Appends a row of decoded values to the columns `targets` names (value `i` to column
/// `targets[i]`, None: not produced), then `complete`s it; on error nothing of the row stays.
pub fn append_values(
    out: &mut DecodedRows,
    targets: &[Option<usize>],
    values: Vec<Datum>,
    kind: RowKind,
    complete: &mut CompleteRow<'_>,
) -> Result<()> {
    let mut r = Ok(());
    for (v, t) in values.into_iter().zip(targets) {
        if let Some(c) = t {
            r = out.column(*c).append(v);
            if r.is_err() {
                break;
            }
        }
    }
    let r = r.and_then(|_| complete(out, kind));
    if r.is_err() {
        out.rollback()?;
    }
    r
}

/// Turns one message into zero or more rows.
/// Why a message could not be appended to the columns field by field.
pub(crate) enum AppendError {
    /// The input does not fit the columns (skipped with `ignore-parse-errors`).
    Parse(String),
    /// A column refused a value (a NULL in a NOT NULL column), or the caller could not complete
    /// the row.
    Store(RsqlError),
}

/// A format's `ignore-parse-errors`: a message that does not parse is skipped and counted, or
/// stops the job with how to skip it.
pub(crate) struct ParseErrors {
    format: &'static str,
    /// What the format's messages are called in the error ("messages", "records").
    unit: &'static str,
    ignore: bool,
    pub(crate) skipped: u64,
}

impl ParseErrors {
    pub(crate) fn new(format: &'static str, unit: &'static str, ignore: bool) -> Self {
        ParseErrors { format, unit, ignore, skipped: 0 }
    }

    /// A message that does not parse.
    pub(crate) fn bad(&mut self, e: String) -> Result<()> {
        if self.ignore {
            self.skipped += 1;
            return Ok(());
        }
        Err(RsqlError::data(self.format, format!("{e}; set '{}.ignore-parse-errors' = 'true' to skip such {}", self.format, self.unit)))
    }

    /// Ends a message appended field by field into `out`, whose rows before it are the first
    /// `start`: on an error the message's values and rows are rolled back, and a parse error is
    /// skipped or reported as [`ParseErrors::bad`] says.
    pub(crate) fn settle(&mut self, out: &mut DecodedRows, start: usize, appended: std::result::Result<(), AppendError>) -> Result<()> {
        let Err(e) = appended else { return Ok(()) };
        out.rollback()?;
        out.rollback_to(start)?;
        match e {
            AppendError::Parse(e) => self.bad(e),
            AppendError::Store(e) => Err(e),
        }
    }
}

/// Column `i` to column `i`, for decoding into a batch of the decoder's own columns.
const IDENTITY: [Option<usize>; 64] = {
    let mut a = [None; 64];
    let mut i = 0;
    while i < 64 {
        a[i] = Some(i);
        i += 1;
    }
    a
};

pub trait RowDecoder: Send {
    /// Decodes `bytes` and hands every row to `emit`, values in the decoder's column order.
    /// With the format's `ignore-parse-errors` a bad message is skipped and counted instead.
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()>;

    /// Decodes `bytes` into `out` (whose columns are the decoder's), through
    /// [`RowDecoder::decode_columns`].
    fn decode(&mut self, bytes: &[u8], out: &mut DecodedRows) -> Result<()> {
        let n = out.schema().fields().len();
        let commit: &mut CompleteRow<'_> = &mut |out, kind| out.commit(kind);
        match IDENTITY.get(..n) {
            Some(targets) => self.decode_columns(bytes, targets, out, commit),
            None => self.decode_columns(bytes, &(0..n).map(Some).collect::<Vec<_>>(), out, commit),
        }
    }

    /// Decodes `bytes` into columns of `out`: field `i` of the decoder's columns goes to column
    /// `targets[i]` (None: not produced); after each row's fields `complete` fills the other
    /// columns and commits the row. A message that fails or is skipped leaves nothing behind.
    /// This default goes through a row of values ([`RowDecoder::decode_with`]); `json` appends
    /// field by field straight into the columns.
    fn decode_columns(
        &mut self,
        bytes: &[u8],
        targets: &[Option<usize>],
        out: &mut DecodedRows,
        complete: &mut CompleteRow<'_>,
    ) -> Result<()> {
        self.decode_with(bytes, &mut |kind, values| append_values(out, targets, values, kind, complete))
    }

    /// A message without a payload (a Kafka tombstone or an empty line). Most formats produce
    /// nothing; `raw` produces one NULL row.
    fn decode_null(&mut self, _emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        Ok(())
    }

    /// Messages skipped so far because of `ignore-parse-errors`.
    fn skipped(&self) -> u64 {
        0
    }
}

/// Turns one row of a batch into one message.
pub trait RowEncoder: Send {
    /// Appends the encoding of row `row` of `batch` to `buf`. Returns `Ok(false)` when the row has
    /// no payload (a NULL value in the `raw` format), which a Kafka sink writes as a null value.
    fn encode(&mut self, batch: &RecordBatch, row: usize, kind: RowKind, buf: &mut Vec<u8>) -> Result<bool>;
}

/// A decoder of `format` for the given columns (in the order values are emitted), reading its
/// options under `prefix`.
pub fn create_decoder(
    format: &str,
    columns: &[(String, LogicalType)],
    table: &TableDef,
    prefix: &str,
) -> Result<Box<dyn RowDecoder>> {
    let fo = FormatOpts::new(table, format, prefix);
    Ok(match format {
        "json" => Box::new(JsonDecoder::new(columns, &fo)?),
        "csv" => Box::new(CsvDecoder::new(columns, &fo)?),
        "raw" => Box::new(RawDecoder::new(columns, &fo)?),
        "debezium-json" => Box::new(DebeziumJsonDecoder::new(columns, &fo)?),
        "canal-json" => Box::new(CanalJsonDecoder::new(columns, &fo)?),
        "maxwell-json" => Box::new(MaxwellJsonDecoder::new(columns, &fo)?),
        other => return Err(format_options(other, prefix).err().unwrap_or_else(|| RsqlError::unsupported(other))),
    })
}

/// An encoder of `format` writing the batch columns at `indices`, named and typed by `columns`.
pub fn create_encoder(
    format: &str,
    columns: &[(String, LogicalType)],
    indices: &[usize],
    table: &TableDef,
    prefix: &str,
) -> Result<Box<dyn RowEncoder>> {
    if columns.len() != indices.len() {
        return Err(RsqlError::execution(format!(
            "format '{format}': {} column names for {} column indices",
            columns.len(),
            indices.len()
        )));
    }
    let fo = FormatOpts::new(table, format, prefix);
    Ok(match format {
        "json" => Box::new(JsonEncoder::new(columns, indices, &fo)?),
        "csv" => Box::new(CsvEncoder::new(columns, indices, &fo)?),
        "raw" => Box::new(RawEncoder::new(columns, indices, &fo)?),
        "debezium-json" | "canal-json" | "maxwell-json" => {
            Box::new(ChangelogJsonEncoder::new(format, columns, indices, &fo)?)
        }
        other => return Err(format_options(other, prefix).err().unwrap_or_else(|| RsqlError::unsupported(other))),
    })
}

/// Where the records of a text file in `format` start and end: one per line, except that a CSV
/// record may hold line breaks inside quotes. Ranges exclude the line break.
pub fn record_ranges(format: &str, data: &[u8], table: &TableDef, prefix: &str) -> Result<Vec<std::ops::Range<usize>>> {
    let ends = if format == "csv" {
        let fo = FormatOpts::new(table, format, prefix);
        csv::record_ends(data, &csv::CsvDialect::from_opts(&fo)?)
    } else {
        let mut ends: Vec<usize> = data.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
        if ends.last().copied().unwrap_or(0) < data.len() {
            ends.push(data.len());
        }
        ends
    };
    let mut out = Vec::with_capacity(ends.len());
    let mut start = 0;
    for end in ends {
        let mut e = end;
        if e > start && data[e - 1] == b'\n' {
            e -= 1;
            if e > start && data[e - 1] == b'\r' {
                e -= 1;
            }
        }
        out.push(start..e);
        start = end;
    }
    Ok(out)
}

/// The first bytes of a message for error messages: text when it is UTF-8, hex otherwise.
pub fn describe_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let head = &bytes[..bytes.len().min(MAX)];
    let more = if bytes.len() > MAX { format!("... ({} bytes)", bytes.len()) } else { String::new() };
    match std::str::from_utf8(head) {
        Ok(s) => format!("'{}'{}", s.escape_debug(), more),
        Err(e) if e.valid_up_to() + 4 > head.len() && bytes.len() > MAX => {
            // Cut in the middle of a multi-byte character.
            let s = String::from_utf8_lossy(&head[..e.valid_up_to()]);
            format!("'{}'{}", s.escape_debug(), more)
        }
        Err(_) => {
            let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{}{}", hex.join(""), more)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_the_prefix() {
        let specs = format_options("json", "value.").unwrap();
        assert!(specs.iter().any(|s| s.key == "value.json.ignore-parse-errors"));
        assert!(format_options("jsn", "").is_err());
        let e = format_options("jsn", "").unwrap_err().to_string();
        assert!(e.contains("did you mean 'json'"), "{e}");
    }

    #[test]
    fn bytes_are_described() {
        assert_eq!(describe_bytes(b"{\"a\":1}"), "'{\\\"a\\\":1}'");
        assert_eq!(describe_bytes(&[0xff, 0x00]), "0xff00");
        assert!(describe_bytes(&[b'a'; 100]).ends_with("... (100 bytes)"));
    }
}
