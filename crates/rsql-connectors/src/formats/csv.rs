//! The `csv` format: one record per message (or per record of a file), columns by position, with
//! Flink's options (`csv.field-delimiter`, `csv.quote-character`, `csv.disable-quote-character`,
//! `csv.allow-comments`, `csv.ignore-parse-errors`, `csv.escape-character`, `csv.null-literal`,
//! `csv.array-element-delimiter`, `csv.write-bigdecimal-in-scientific-notation`) and the output
//! conventions of Flink's Jackson CSV writer (a string is quoted when it is longer than 24
//! characters or holds a character below the delimiter/quote, such as a space). ARRAY and ROW
//! columns of simple types are one field, their values joined by `csv.array-element-delimiter`;
//! MAP and deeper nesting are refused, as in Flink.

use std::borrow::Cow;

use rsql_common::arrow::array::*;
use rsql_common::arrow::datatypes::{DataType, TimeUnit};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::Datum;
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{Result, RowKind, RsqlError};

use super::json::timestamp_micros;
use super::text::*;
use super::{AppendError, CompleteRow, DecodedRows, FormatOpts, ParseErrors, RowDecoder, RowEncoder};

/// The shape of the CSV text: delimiter, quoting, escaping, comments.
#[derive(Clone, Debug)]
pub(crate) struct CsvDialect {
    pub delimiter: u8,
    pub quote: Option<u8>,
    pub escape: Option<u8>,
    pub allow_comments: bool,
    pub null_literal: Option<String>,
    pub array_delimiter: String,
}

impl CsvDialect {
    pub(crate) fn from_opts(fo: &FormatOpts<'_>) -> Result<Self> {
        let delimiter = fo.char("field-delimiter", b',')?;
        let quote = if fo.bool("disable-quote-character", false)? {
            if fo.get("quote-character").is_some() {
                return Err(fo.error(
                    "quote-character",
                    format!("cannot be set together with '{}' = 'true'", fo.key("disable-quote-character")),
                ));
            }
            None
        } else {
            Some(fo.char("quote-character", b'"')?)
        };
        let escape = match fo.get("escape-character") {
            None => None,
            Some(_) => Some(fo.char("escape-character", b'\\')?),
        };
        if Some(delimiter) == quote {
            return Err(fo.error("quote-character", "must differ from the field delimiter"));
        }
        Ok(CsvDialect {
            delimiter,
            quote,
            escape,
            allow_comments: fo.bool("allow-comments", false)?,
            null_literal: fo.get("null-literal").map(str::to_string),
            array_delimiter: fo.get("array-element-delimiter").unwrap_or(";").to_string(),
        })
    }
}

/// Splits one record into its fields. A trailing line break is ignored.
pub(crate) fn split_record<'a>(line: &'a [u8], d: &CsvDialect) -> std::result::Result<Vec<Cow<'a, [u8]>>, String> {
    let mut line = line;
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l.strip_suffix(b"\r").unwrap_or(l);
    }
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        if d.quote.is_some() && line.get(i) == d.quote.as_ref() {
            let q = line[i];
            i += 1;
            let mut out = Vec::new();
            loop {
                match line.get(i) {
                    None => return Err("unterminated quoted field".into()),
                    Some(&c) if Some(c) == d.escape => {
                        let n = *line.get(i + 1).ok_or_else(|| "escape character at the end of the record".to_string())?;
                        out.push(n);
                        i += 2;
                    }
                    Some(&c) if c == q => {
                        if line.get(i + 1) == Some(&q) {
                            out.push(q);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&c) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            fields.push(Cow::Owned(out));
            match line.get(i) {
                None => return Ok(fields),
                Some(&c) if c == d.delimiter => i += 1,
                Some(&c) => {
                    return Err(format!("unexpected character '{}' after a quoted field at byte {i}", c.escape_ascii()))
                }
            }
        } else {
            let start = i;
            let mut owned: Option<Vec<u8>> = None;
            while i < line.len() && line[i] != d.delimiter {
                if Some(line[i]) == d.escape && i + 1 < line.len() {
                    let o = owned.get_or_insert_with(|| line[start..i].to_vec());
                    o.push(line[i + 1]);
                    i += 2;
                    continue;
                }
                if let Some(o) = owned.as_mut() {
                    o.push(line[i]);
                }
                i += 1;
            }
            fields.push(match owned {
                Some(o) => Cow::Owned(o),
                None => Cow::Borrowed(&line[start..i]),
            });
            if i >= line.len() {
                return Ok(fields);
            }
            i += 1; // delimiter
        }
    }
}

/// Converts one CSV field into a value of the column's type (Flink's CSV rules: numbers trimmed,
/// an empty field is NULL for every non-string type).
fn field_to_datum(name: &str, ty: &LogicalType, raw: &[u8], d: &CsvDialect) -> std::result::Result<Datum, String> {
    let text = std::str::from_utf8(raw).map_err(|_| format!("column '{name}': the field is not valid UTF-8"))?;
    if d.null_literal.as_deref() == Some(text) {
        return Ok(Datum::Null);
    }
    let is_string = matches!(ty.ty, FlinkType::Char(_) | FlinkType::Varchar(_));
    if text.is_empty() && !is_string {
        return Ok(Datum::Null);
    }
    let bad = |why: &str| {
        let shown: String = text.chars().take(60).collect();
        format!("column '{name}': cannot read '{shown}' as {ty}{}", if why.is_empty() { String::new() } else { format!(" ({why})") })
    };
    let t = text.trim();
    let int = |lo: i64, hi: i64| -> std::result::Result<Datum, String> {
        match t.parse::<i64>() {
            Ok(v) if v >= lo && v <= hi => Ok(Datum::Int(v)),
            Ok(_) => Err(bad("out of range")),
            Err(_) => Err(bad("")),
        }
    };
    match &ty.ty {
        FlinkType::Char(_) | FlinkType::Varchar(_) => Ok(Datum::Str(text.to_string())),
        FlinkType::Boolean => Ok(Datum::Bool(t.eq_ignore_ascii_case("true"))),
        FlinkType::TinyInt => int(i8::MIN as i64, i8::MAX as i64),
        FlinkType::SmallInt => int(i16::MIN as i64, i16::MAX as i64),
        FlinkType::Int => int(i32::MIN as i64, i32::MAX as i64),
        FlinkType::BigInt => int(i64::MIN, i64::MAX),
        FlinkType::Float | FlinkType::Double => t.parse::<f64>().map(Datum::Float).map_err(|_| bad("")),
        FlinkType::Decimal(p, s) => match parse_decimal_text(t, *p, *s) {
            Ok(Some(v)) => Ok(Datum::Decimal(v, *s)),
            Ok(None) if ty.nullable => Ok(Datum::Null),
            Ok(None) => Err(bad("does not fit the precision")),
            Err(()) => Err(bad("")),
        },
        FlinkType::Binary(_) | FlinkType::Varbinary(_) => base64_decode(t).map(Datum::Bytes).ok_or_else(|| bad("not base64")),
        FlinkType::Date => parse_date_text(t).map(Datum::Date).ok_or_else(|| bad("expected yyyy-MM-dd")),
        FlinkType::Time(_) => parse_time_text(t).map(Datum::Time).ok_or_else(|| bad("expected HH:mm:ss")),
        FlinkType::Timestamp(_) | FlinkType::TimestampLtz(_) => {
            parse_timestamp_text(t).map(Datum::Timestamp).ok_or_else(|| bad("expected yyyy-MM-dd HH:mm:ss[.fff]"))
        }
        FlinkType::Null => Ok(Datum::Null),
        // ARRAY and ROW values are their elements / fields joined by 'csv.array-element-delimiter'.
        FlinkType::Array(e) => text
            .split(d.array_delimiter.as_str())
            .enumerate()
            .map(|(j, part)| field_to_datum(&format!("{name}[{j}]"), e, part.as_bytes(), d))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Datum::list),
        FlinkType::Row(fields) => {
            let parts: Vec<&str> = text.split(d.array_delimiter.as_str()).collect();
            if parts.len() > fields.len() {
                return Err(bad(&format!("{} values for {} fields", parts.len(), fields.len())));
            }
            fields
                .iter()
                .enumerate()
                .map(|(j, (f, t))| match parts.get(j) {
                    Some(part) => field_to_datum(&format!("{name}.{f}"), t, part.as_bytes(), d),
                    None => Ok(Datum::Null),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Datum::row)
        }
        FlinkType::Map(..) => Err(bad("the csv format has no MAP values")),
    }
}

/// Flink's CSV format carries ARRAY and ROW of simple types (their values joined by
/// `csv.array-element-delimiter`) and no MAP; checked when a table is created.
fn check_csv_types(columns: &[(String, LogicalType)], what: &str) -> Result<()> {
    let nested = |t: &FlinkType| matches!(t, FlinkType::Array(_) | FlinkType::Map(..) | FlinkType::Row(_));
    for (name, ty) in columns {
        let inner: Vec<&LogicalType> = match &ty.ty {
            FlinkType::Map(..) => {
                return Err(RsqlError::unsupported(format!(
                    "format 'csv' cannot {what} column '{name}' of type {ty}: CSV has no MAP values (as in Flink); \
                     use the 'json' format or declare the column as STRING"
                )))
            }
            FlinkType::Array(e) => vec![e.as_ref()],
            FlinkType::Row(fields) => fields.iter().map(|(_, t)| t).collect(),
            _ => continue,
        };
        if let Some(t) = inner.iter().find(|t| nested(&t.ty)) {
            return Err(RsqlError::unsupported(format!(
                "format 'csv' cannot {what} column '{name}' of type {ty}: only simple types are supported in the second \
                 level of nesting (found {t}), as in Flink; use the 'json' format"
            )));
        }
    }
    Ok(())
}

/// Decoder of the `csv` format.
pub struct CsvDecoder {
    columns: Vec<(String, LogicalType)>,
    dialect: CsvDialect,
    errors: ParseErrors,
}

impl CsvDecoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        check_csv_types(columns, "read")?;
        Ok(CsvDecoder {
            columns: columns.to_vec(),
            dialect: CsvDialect::from_opts(fo)?,
            errors: ParseErrors::new("csv", "records", fo.bool("ignore-parse-errors", false)?),
        })
    }

    /// The record's fields, None for a blank line or a comment.
    fn fields<'b>(&self, bytes: &'b [u8]) -> std::result::Result<Option<Vec<Cow<'b, [u8]>>>, String> {
        let trimmed_end = bytes.strip_suffix(b"\n").map(|l| l.strip_suffix(b"\r").unwrap_or(l)).unwrap_or(bytes);
        if trimmed_end.is_empty() {
            return Ok(None);
        }
        if self.dialect.allow_comments && trimmed_end.first() == Some(&b'#') {
            return Ok(None);
        }
        let fields = split_record(bytes, &self.dialect)?;
        if fields.len() > self.columns.len() {
            return Err(format!("the record has {} fields but the table has {} columns", fields.len(), self.columns.len()));
        }
        Ok(Some(fields))
    }

    fn row(&self, bytes: &[u8]) -> std::result::Result<Option<Vec<Datum>>, String> {
        let Some(fields) = self.fields(bytes)? else { return Ok(None) };
        let mut row = Vec::with_capacity(self.columns.len());
        for (i, (name, ty)) in self.columns.iter().enumerate() {
            match fields.get(i) {
                Some(f) => row.push(field_to_datum(name, ty, f, &self.dialect)?),
                None => row.push(Datum::Null),
            }
        }
        Ok(Some(row))
    }

    /// Appends the record's fields straight into the columns `targets` names; false for a blank
    /// line or a comment. On error some columns may hold the record's first values.
    fn append(&self, bytes: &[u8], targets: &[Option<usize>], out: &mut DecodedRows) -> std::result::Result<bool, AppendError> {
        let Some(fields) = self.fields(bytes).map_err(AppendError::Parse)? else { return Ok(false) };
        for (i, ((name, ty), target)) in self.columns.iter().zip(targets).enumerate() {
            let Some(c) = target else { continue };
            let v = match fields.get(i) {
                Some(f) => field_to_datum(name, ty, f, &self.dialect).map_err(AppendError::Parse)?,
                None => Datum::Null,
            };
            out.column(*c).append(v).map_err(AppendError::Store)?;
        }
        Ok(true)
    }
}

impl RowDecoder for CsvDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        match self.row(bytes) {
            Ok(Some(r)) => emit(RowKind::Insert, r),
            Ok(None) => Ok(()),
            Err(e) => self.errors.bad(e),
        }
    }

    /// Appends the record field by field; a record that fails leaves nothing behind.
    fn decode_columns(&mut self, bytes: &[u8], targets: &[Option<usize>], out: &mut DecodedRows, complete: &mut CompleteRow<'_>) -> Result<()> {
        let start = out.len();
        let done = match self.append(bytes, targets, out) {
            Ok(false) => return Ok(()),
            Ok(true) => complete(out, RowKind::Insert).map_err(AppendError::Store),
            Err(e) => Err(e),
        };
        self.errors.settle(out, start, done)
    }

    fn skipped(&self) -> u64 {
        self.errors.skipped
    }
}

/// Finds where CSV records end in `data` (after each line break outside quotes). Returns the end
/// offsets (exclusive, including the line break); a last record without a line break ends at
/// `data.len()`.
pub(crate) fn record_ends(data: &[u8], d: &CsvDialect) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut in_quotes = false;
    let mut field_start = true;
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        if in_quotes {
            if Some(c) == d.escape {
                i += 2;
                continue;
            }
            if Some(c) == d.quote {
                if data.get(i + 1) == Some(&c) {
                    i += 2;
                    continue;
                }
                in_quotes = false;
            }
        } else if field_start && Some(c) == d.quote {
            in_quotes = true;
        } else if c == b'\n' {
            ends.push(i + 1);
            field_start = true;
            i += 1;
            continue;
        }
        field_start = !in_quotes && c == d.delimiter;
        i += 1;
    }
    if ends.last().copied().unwrap_or(0) < data.len() {
        ends.push(data.len());
    }
    ends
}

/// Encoder of the `csv` format (no line break after the record; the filesystem sink adds one).
pub struct CsvEncoder {
    indices: Vec<usize>,
    dialect: CsvDialect,
    min_safe: u8,
    scientific_decimals: bool,
}

impl CsvEncoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], indices: &[usize], fo: &FormatOpts<'_>) -> Result<Self> {
        check_csv_types(columns, "write")?;
        let dialect = CsvDialect::from_opts(fo)?;
        let min_safe = dialect.delimiter.max(dialect.quote.unwrap_or(0)).max(b'\n') + 1;
        Ok(CsvEncoder {
            indices: indices.to_vec(),
            dialect,
            min_safe,
            scientific_decimals: fo.bool("write-bigdecimal-in-scientific-notation", true)?,
        })
    }

    fn write_str(&self, buf: &mut Vec<u8>, s: &str) {
        let q = match self.dialect.quote {
            Some(q) => q,
            None => {
                buf.extend_from_slice(s.as_bytes());
                return;
            }
        };
        let needs = s.chars().count() > 24
            || s.bytes().any(|b| b < self.min_safe || Some(b) == self.dialect.escape);
        if !needs {
            buf.extend_from_slice(s.as_bytes());
            return;
        }
        buf.push(q);
        for b in s.bytes() {
            if b == q {
                buf.push(q);
            } else if Some(b) == self.dialect.escape {
                buf.push(b);
            }
            buf.push(b);
        }
        buf.push(q);
    }

    fn write_field(&self, buf: &mut Vec<u8>, arr: &dyn Array, i: usize) -> Result<()> {
        if arr.is_null(i) {
            if let Some(l) = &self.dialect.null_literal {
                buf.extend_from_slice(l.as_bytes());
            }
            return Ok(());
        }
        macro_rules! get {
            ($t:ty) => {
                arr.as_any().downcast_ref::<$t>().ok_or_else(|| RsqlError::execution("array type mismatch"))?.value(i)
            };
        }
        let mut tmp = Vec::new();
        match arr.data_type() {
            DataType::Boolean => buf.extend_from_slice(if get!(BooleanArray) { b"true" } else { b"false" }),
            DataType::Int8 => buf.extend_from_slice(get!(Int8Array).to_string().as_bytes()),
            DataType::Int16 => buf.extend_from_slice(get!(Int16Array).to_string().as_bytes()),
            DataType::Int32 => buf.extend_from_slice(get!(Int32Array).to_string().as_bytes()),
            DataType::Int64 => buf.extend_from_slice(get!(Int64Array).to_string().as_bytes()),
            DataType::UInt8 => buf.extend_from_slice(get!(UInt8Array).to_string().as_bytes()),
            DataType::UInt16 => buf.extend_from_slice(get!(UInt16Array).to_string().as_bytes()),
            DataType::UInt32 => buf.extend_from_slice(get!(UInt32Array).to_string().as_bytes()),
            DataType::UInt64 => buf.extend_from_slice(get!(UInt64Array).to_string().as_bytes()),
            DataType::Float32 => buf.extend_from_slice(java_float_to_string(get!(Float32Array)).as_bytes()),
            DataType::Float64 => buf.extend_from_slice(java_double_to_string(get!(Float64Array)).as_bytes()),
            DataType::Decimal128(_, s) => {
                let v = get!(Decimal128Array);
                let t = if self.scientific_decimals { big_decimal_to_string(v, *s) } else { big_decimal_to_plain(v, *s) };
                buf.extend_from_slice(t.as_bytes());
            }
            DataType::Utf8 => self.write_str(buf, get!(StringArray)),
            DataType::LargeUtf8 => self.write_str(buf, get!(LargeStringArray)),
            DataType::Utf8View => self.write_str(buf, get!(StringViewArray)),
            DataType::Binary => {
                base64_encode(get!(BinaryArray), &mut tmp);
                self.write_str(buf, &String::from_utf8_lossy(&tmp));
            }
            DataType::LargeBinary => {
                base64_encode(get!(LargeBinaryArray), &mut tmp);
                self.write_str(buf, &String::from_utf8_lossy(&tmp));
            }
            DataType::Date32 => write_date(buf, get!(Date32Array)),
            DataType::Time64(TimeUnit::Microsecond) => write_time_iso(buf, get!(Time64MicrosecondArray)),
            DataType::Time64(_) => write_time_iso(buf, get!(Time64NanosecondArray) / 1000),
            DataType::Time32(TimeUnit::Second) => write_time_iso(buf, get!(Time32SecondArray) as i64 * 1_000_000),
            DataType::Time32(_) => write_time_iso(buf, get!(Time32MillisecondArray) as i64 * 1000),
            DataType::Timestamp(unit, tz) => {
                let micros = timestamp_micros(arr, i, unit)?;
                write_timestamp(&mut tmp, micros, false, tz.is_some());
                self.write_str(buf, &String::from_utf8_lossy(&tmp));
            }
            DataType::List(_) => {
                let items = get!(ListArray);
                let parts: Vec<(&dyn Array, usize)> = (0..items.len()).map(|j| (items.as_ref(), j)).collect();
                self.write_joined(buf, &parts)?;
            }
            DataType::Struct(_) => {
                let s = arr.as_any().downcast_ref::<StructArray>().ok_or_else(|| RsqlError::execution("array type mismatch"))?;
                let parts: Vec<(&dyn Array, usize)> = s.columns().iter().map(|c| (c.as_ref(), i)).collect();
                self.write_joined(buf, &parts)?;
            }
            other => return Err(RsqlError::unsupported(format!("CSV format cannot write values of Arrow type {other}"))),
        }
        Ok(())
    }

    /// ARRAY elements or ROW fields as one field, joined by the array element delimiter.
    fn write_joined(&self, buf: &mut Vec<u8>, parts: &[(&dyn Array, usize)]) -> Result<()> {
        let inner = CsvEncoder { dialect: CsvDialect { quote: None, ..self.dialect.clone() }, ..self.clone_shallow() };
        let mut joined = Vec::new();
        for (n, (arr, j)) in parts.iter().enumerate() {
            if n > 0 {
                joined.extend_from_slice(self.dialect.array_delimiter.as_bytes());
            }
            inner.write_field(&mut joined, *arr, *j)?;
        }
        self.write_str(buf, &String::from_utf8_lossy(&joined));
        Ok(())
    }

    fn clone_shallow(&self) -> CsvEncoder {
        CsvEncoder {
            indices: Vec::new(),
            dialect: self.dialect.clone(),
            min_safe: self.min_safe,
            scientific_decimals: self.scientific_decimals,
        }
    }
}

impl RowEncoder for CsvEncoder {
    fn encode(&mut self, batch: &RecordBatch, row: usize, _kind: RowKind, buf: &mut Vec<u8>) -> Result<bool> {
        for (n, &c) in self.indices.iter().enumerate() {
            if n > 0 {
                buf.push(self.dialect.delimiter);
            }
            let col = batch.columns().get(c).ok_or_else(|| RsqlError::execution(format!("csv: the batch has no column {c}")))?;
            self.write_field(buf, col.as_ref(), row)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect() -> CsvDialect {
        CsvDialect { delimiter: b',', quote: Some(b'"'), escape: None, allow_comments: false, null_literal: None, array_delimiter: ";".into() }
    }

    #[test]
    fn splits_records() {
        let d = dialect();
        let f = split_record(b"1,\"a,b\",\"x\"\"y\",,z\r\n", &d).unwrap();
        let f: Vec<&[u8]> = f.iter().map(|c| c.as_ref()).collect();
        assert_eq!(f, vec![&b"1"[..], b"a,b", b"x\"y", b"", b"z"]);
        assert!(split_record(b"\"abc", &d).is_err());
        assert!(split_record(b"\"a\"b", &d).is_err());
    }

    #[test]
    fn finds_record_ends_outside_quotes() {
        let d = dialect();
        let data = b"1,\"a\nb\"\n2,c\n3,d";
        assert_eq!(record_ends(data, &d), vec![8, 12, 15]);
    }
}
