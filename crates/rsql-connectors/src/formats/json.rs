//! The `json` format: one JSON object per message (or per line of a file), fields matched to
//! columns by name, with the conversions of Flink's JSON format (ARRAY as a JSON array, ROW as an
//! object by field name, MAP as an object with string keys, to any depth); and the JSON reader
//! and Arrow-to-JSON writer the changelog formats reuse. The parser keeps number text exact (DECIMAL reads every digit) and
//! borrows strings that hold no escapes.

use std::borrow::Cow;
use std::collections::HashMap;

use rsql_common::arrow::array::*;
use rsql_common::arrow::datatypes::{DataType, TimeUnit};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::{ColumnBuilder, Datum};
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{Result, RowKind, RsqlError};

use super::text::*;
use super::{AppendError, CompleteRow, DecodedRows, FormatOpts, ParseErrors, RowDecoder, RowEncoder};

/// Deepest nesting the parser accepts (deeper input is an error, never a stack overflow).
const MAX_DEPTH: usize = 128;

/// A parsed JSON value borrowing from the message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum JVal<'a> {
    Null,
    Bool(bool),
    /// The number's text as written.
    Num(&'a str),
    Str(Cow<'a, str>),
    Arr(Vec<JVal<'a>>),
    Obj(Vec<(Cow<'a, str>, JVal<'a>)>),
}

impl<'a> JVal<'a> {
    /// The fields of an object; None for another kind of value.
    pub(crate) fn fields(&self) -> Option<&[(Cow<'a, str>, JVal<'a>)]> {
        match self {
            JVal::Obj(f) => Some(f),
            _ => None,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&JVal<'a>> {
        match self {
            JVal::Obj(fields) => fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            JVal::Str(s) => Some(s),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            JVal::Null => "null",
            JVal::Bool(_) => "a boolean",
            JVal::Num(_) => "a number",
            JVal::Str(_) => "a string",
            JVal::Arr(_) => "an array",
            JVal::Obj(_) => "an object",
        }
    }

    /// Compact JSON text (what Flink stores when a non-string value lands in a STRING column).
    pub(crate) fn write_compact(&self, out: &mut Vec<u8>) {
        match self {
            JVal::Null => out.extend_from_slice(b"null"),
            JVal::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            JVal::Num(n) => out.extend_from_slice(n.as_bytes()),
            JVal::Str(s) => write_json_string(out, s),
            JVal::Arr(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_compact(out);
                }
                out.push(b']');
            }
            JVal::Obj(fields) => {
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_string(out, k);
                    out.push(b':');
                    v.write_compact(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The value as text: strings as they are, anything else as compact JSON.
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match self {
            JVal::Str(s) => Cow::Borrowed(s),
            JVal::Num(n) => Cow::Borrowed(n),
            other => {
                let mut b = Vec::new();
                other.write_compact(&mut b);
                Cow::Owned(String::from_utf8_lossy(&b).into_owned())
            }
        }
    }
}

/// Parses one JSON document; `Ok(None)` for empty or blank input.
pub(crate) fn parse(bytes: &[u8]) -> std::result::Result<Option<JVal<'_>>, String> {
    let mut p = Parser { b: bytes, i: 0 };
    p.ws();
    if p.i == p.b.len() {
        return Ok(None);
    }
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(format!("unexpected {} after the JSON value at byte {}", p.what(), p.i));
    }
    Ok(Some(v))
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn what(&self) -> String {
        match self.b.get(self.i) {
            None => "end of input".into(),
            Some(c) if c.is_ascii_graphic() => format!("'{}'", *c as char),
            Some(c) => format!("byte 0x{c:02x}"),
        }
    }

    fn err<T>(&self, expected: &str) -> std::result::Result<T, String> {
        Err(format!("expected {expected} at byte {} but found {}", self.i, self.what()))
    }

    fn value(&mut self, depth: usize) -> std::result::Result<JVal<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("JSON nested deeper than {MAX_DEPTH} levels"));
        }
        match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(JVal::Obj(fields));
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return self.err("a field name in double quotes");
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return self.err("':'");
                    }
                    self.i += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    fields.push((k, v));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(JVal::Obj(fields));
                        }
                        _ => return self.err("',' or '}'"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(JVal::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(JVal::Arr(items));
                        }
                        _ => return self.err("',' or ']'"),
                    }
                }
            }
            Some(b'"') => Ok(JVal::Str(self.string()?)),
            Some(b't') => self.word(b"true", JVal::Bool(true)),
            Some(b'f') => self.word(b"false", JVal::Bool(false)),
            Some(b'n') => self.word(b"null", JVal::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("a JSON value"),
        }
    }

    fn word(&mut self, w: &[u8], v: JVal<'a>) -> std::result::Result<JVal<'a>, String> {
        if self.b[self.i..].starts_with(w) {
            self.i += w.len();
            Ok(v)
        } else {
            self.err(&format!("'{}'", String::from_utf8_lossy(w)))
        }
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - s
    }

    fn number(&mut self) -> std::result::Result<JVal<'a>, String> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        let n = self.digits();
        if n == 0 {
            return self.err("a digit");
        }
        if n > 1 && self.b[int_start] == b'0' {
            return Err(format!("leading zero in a number at byte {int_start}"));
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("a digit after the decimal point");
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("a digit in the exponent");
            }
        }
        // Only ASCII was consumed, so this is valid UTF-8.
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|e| e.to_string())?;
        Ok(JVal::Num(text))
    }

    fn hex4(&mut self) -> std::result::Result<u32, String> {
        let h = self.b.get(self.i..self.i + 4).ok_or_else(|| "truncated \\u escape".to_string())?;
        let s = std::str::from_utf8(h).map_err(|_| "bad \\u escape".to_string())?;
        let v = u32::from_str_radix(s, 16).map_err(|_| format!("bad \\u escape '\\u{s}'"))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> std::result::Result<Cow<'a, str>, String> {
        self.i += 1; // opening quote
        let start = self.i;
        // Fast path: no escapes.
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    let s = std::str::from_utf8(&self.b[start..self.i])
                        .map_err(|_| format!("invalid UTF-8 in a string at byte {start}"))?;
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => break,
                c if c < 0x20 => return Err(format!("unescaped control character 0x{c:02x} in a string at byte {}", self.i)),
                _ => self.i += 1,
            }
        }
        let mut out: Vec<u8> = self.b[start..self.i].to_vec();
        loop {
            match self.b.get(self.i) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(out)
                        .map(Cow::Owned)
                        .map_err(|_| format!("invalid UTF-8 in a string at byte {start}"));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.b.get(self.i).ok_or_else(|| "unterminated escape".to_string())?;
                    self.i += 1;
                    match c {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) && self.b[self.i..].starts_with(b"\\u") {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                } else {
                                    self.i = save;
                                }
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut tmp = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                        }
                        other => return Err(format!("bad escape '\\{}' at byte {}", other as char, self.i - 1)),
                    }
                }
                Some(&c) if c < 0x20 => {
                    return Err(format!("unescaped control character 0x{c:02x} in a string at byte {}", self.i))
                }
                Some(&c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

/// How TIMESTAMP values are written: `SQL` (`2024-01-02 03:04:05`) or `ISO-8601` (`...T...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimestampStandard {
    Sql,
    Iso8601,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MapNullKey {
    Fail,
    Drop,
    Literal(String),
}

/// Options of the JSON writer (shared with the changelog formats).
#[derive(Clone, Debug)]
pub(crate) struct JsonWriteOptions {
    pub timestamp: TimestampStandard,
    pub map_null_key: MapNullKey,
    pub decimal_plain: bool,
    pub ignore_null_fields: bool,
}

impl JsonWriteOptions {
    pub(crate) fn from_opts(fo: &FormatOpts<'_>) -> Result<Self> {
        let timestamp = match fo.get("timestamp-format.standard").map(|s| s.to_ascii_uppercase()) {
            None => TimestampStandard::Sql,
            Some(s) if s == "SQL" => TimestampStandard::Sql,
            Some(s) if s == "ISO-8601" => TimestampStandard::Iso8601,
            Some(s) => return Err(fo.error("timestamp-format.standard", format!("'{s}' must be 'SQL' or 'ISO-8601'"))),
        };
        let map_null_key = match fo.get("map-null-key.mode").map(|s| s.to_ascii_uppercase()) {
            None => MapNullKey::Fail,
            Some(s) if s == "FAIL" => MapNullKey::Fail,
            Some(s) if s == "DROP" => MapNullKey::Drop,
            Some(s) if s == "LITERAL" => MapNullKey::Literal(fo.get("map-null-key.literal").unwrap_or("null").to_string()),
            Some(s) => return Err(fo.error("map-null-key.mode", format!("'{s}' must be FAIL, DROP or LITERAL"))),
        };
        Ok(JsonWriteOptions {
            timestamp,
            map_null_key,
            decimal_plain: fo.bool("encode.decimal-as-plain-number", false)?,
            ignore_null_fields: fo.bool("encode.ignore-null-fields", false)?,
        })
    }
}

/// Whether Flink's JSON format can carry the type: anything, with MAP keys as strings (nested
/// types to any depth).
fn json_supports(t: &FlinkType) -> bool {
    match t {
        FlinkType::Map(k, v) => matches!(k.ty, FlinkType::Char(_) | FlinkType::Varchar(_)) && json_supports(&v.ty),
        FlinkType::Array(e) => json_supports(&e.ty),
        FlinkType::Row(fs) => fs.iter().all(|(_, t)| json_supports(&t.ty)),
        _ => true,
    }
}

/// Checks at creation that every column type can be read or written as JSON (`what` is `read`
/// or `write`); the error names the column and the format.
pub(crate) fn check_json_types(columns: &[(String, LogicalType)], format: &str, what: &str) -> Result<()> {
    for (name, ty) in columns {
        if !json_supports(&ty.ty) {
            return Err(RsqlError::unsupported(format!(
                "format '{format}' cannot {what} column '{name}' of type {ty}: JSON map keys are strings, so MAP keys must be \
                 CHAR, VARCHAR or STRING (as in Flink)"
            )));
        }
    }
    Ok(())
}

fn conv_err(name: &str, ty: &LogicalType, v: &JVal<'_>, why: &str) -> String {
    let mut t = Vec::new();
    v.write_compact(&mut t);
    t.truncate(80);
    format!(
        "field '{name}': cannot read {} {} as {}{}",
        v.kind(),
        String::from_utf8_lossy(&t),
        ty,
        if why.is_empty() { String::new() } else { format!(" ({why})") }
    )
}

fn is_integral(n: &str) -> bool {
    !n.contains(['.', 'e', 'E'])
}

/// Converts a JSON value into a value of the column's type with the rules of Flink's JSON format
/// (numbers in strings are read, a non-string in a STRING column keeps its JSON text, ...).
/// `name` is the value's path (`col`, `col[2]`, `col.field`, `col['key']`); `fail_on_missing`
/// makes a ROW field missing from its object an error.
pub(crate) fn to_datum(name: &str, ty: &LogicalType, v: &JVal<'_>, fail_on_missing: bool) -> std::result::Result<Datum, String> {
    if matches!(v, JVal::Null) {
        return Ok(Datum::Null);
    }
    let int_in = |lo: i64, hi: i64, via_double: bool| -> std::result::Result<Datum, String> {
        let parsed = match v {
            JVal::Num(n) if is_integral(n) => n.parse::<i64>().ok(),
            JVal::Num(n) if via_double => n.parse::<f64>().ok().filter(|f| *f >= lo as f64 && *f <= hi as f64).map(|f| f.trunc() as i64),
            JVal::Num(_) => None,
            JVal::Str(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match parsed {
            Some(x) if x >= lo && x <= hi => Ok(Datum::Int(x)),
            Some(_) => Err(conv_err(name, ty, v, "out of range")),
            None => Err(conv_err(name, ty, v, "")),
        }
    };
    match &ty.ty {
        FlinkType::Boolean => Ok(Datum::Bool(match v {
            JVal::Bool(b) => *b,
            other => other.text().trim().eq_ignore_ascii_case("true"),
        })),
        FlinkType::TinyInt => int_in(i8::MIN as i64, i8::MAX as i64, false),
        FlinkType::SmallInt => int_in(i16::MIN as i64, i16::MAX as i64, false),
        FlinkType::Int => int_in(i32::MIN as i64, i32::MAX as i64, true),
        FlinkType::BigInt => int_in(i64::MIN, i64::MAX, true),
        FlinkType::Float | FlinkType::Double => match v {
            JVal::Num(n) => n.parse::<f64>().map(Datum::Float).map_err(|_| conv_err(name, ty, v, "")),
            JVal::Str(s) => s.trim().parse::<f64>().map(Datum::Float).map_err(|_| conv_err(name, ty, v, "")),
            _ => Err(conv_err(name, ty, v, "")),
        },
        FlinkType::Decimal(p, s) => {
            let t = match v {
                JVal::Num(n) => *n,
                JVal::Str(t) => t.as_ref(),
                _ => return Err(conv_err(name, ty, v, "")),
            };
            match parse_decimal_text(t, *p, *s) {
                Ok(Some(x)) => Ok(Datum::Decimal(x, *s)),
                // Flink reads a decimal that does not fit the precision as NULL.
                Ok(None) if ty.nullable => Ok(Datum::Null),
                Ok(None) => Err(conv_err(name, ty, v, "does not fit the precision")),
                Err(()) => Err(conv_err(name, ty, v, "")),
            }
        }
        FlinkType::Char(_) | FlinkType::Varchar(_) => Ok(Datum::Str(v.text().into_owned())),
        FlinkType::Binary(_) | FlinkType::Varbinary(_) => match v {
            JVal::Str(s) => base64_decode(s).map(Datum::Bytes).ok_or_else(|| conv_err(name, ty, v, "not base64")),
            _ => Err(conv_err(name, ty, v, "")),
        },
        FlinkType::Date => match v {
            JVal::Str(s) => parse_date_text(s).map(Datum::Date).ok_or_else(|| conv_err(name, ty, v, "expected yyyy-MM-dd")),
            _ => Err(conv_err(name, ty, v, "")),
        },
        FlinkType::Time(_) => match v {
            JVal::Str(s) => parse_time_text(s).map(Datum::Time).ok_or_else(|| conv_err(name, ty, v, "expected HH:mm:ss")),
            _ => Err(conv_err(name, ty, v, "")),
        },
        FlinkType::Timestamp(_) | FlinkType::TimestampLtz(_) => match v {
            JVal::Str(s) => parse_timestamp_text(s)
                .map(Datum::Timestamp)
                .ok_or_else(|| conv_err(name, ty, v, "expected yyyy-MM-dd HH:mm:ss[.fff]")),
            _ => Err(conv_err(name, ty, v, "")),
        },
        FlinkType::Null => Ok(Datum::Null),
        FlinkType::Array(e) => match v {
            JVal::Arr(items) => items
                .iter()
                .enumerate()
                .map(|(j, x)| nested_part(&format!("{name}[{j}]"), e, x, fail_on_missing))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Datum::list),
            _ => Err(conv_err(name, ty, v, "expected a JSON array")),
        },
        FlinkType::Map(k, val) => match v {
            JVal::Obj(fields) => fields
                .iter()
                .map(|(key, x)| {
                    let path = format!("{name}['{key}']");
                    Ok((nested_part(&path, k, &JVal::Str(key.clone()), fail_on_missing)?, nested_part(&path, val, x, fail_on_missing)?))
                })
                .collect::<std::result::Result<Vec<_>, String>>()
                .map(Datum::map),
            _ => Err(conv_err(name, ty, v, "expected a JSON object")),
        },
        FlinkType::Row(fields) => match v {
            JVal::Obj(_) => fields
                .iter()
                .map(|(f, t)| {
                    let path = format!("{name}.{f}");
                    match v.get(f) {
                        Some(x) => nested_part(&path, t, x, fail_on_missing),
                        None if fail_on_missing => Err(format!("could not find field with name '{path}'")),
                        None => nested_part(&path, t, &JVal::Null, fail_on_missing),
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Datum::row),
            _ => Err(conv_err(name, ty, v, "expected a JSON object")),
        },
    }
}

/// An element, map key or value, or row field: like a column, but a NULL where the type says
/// NOT NULL is an error naming the path.
fn nested_part(path: &str, ty: &LogicalType, v: &JVal<'_>, fail_on_missing: bool) -> std::result::Result<Datum, String> {
    let d = to_datum(path, ty, v, fail_on_missing)?;
    if matches!(d, Datum::Null) && !ty.nullable {
        return Err(format!("field '{path}': null where the type is {ty}"));
    }
    Ok(d)
}

/// Marks a slot of [`ObjectReader::append`] that points into the fallback object.
const FROM_FALLBACK: usize = 1 << (usize::BITS - 1);

/// Reads the columns of one JSON object, matched by field name.
pub(crate) struct ObjectReader {
    columns: Vec<(String, LogicalType)>,
    index: HashMap<String, usize>,
    fail_on_missing_field: bool,
}

impl ObjectReader {
    pub(crate) fn new(columns: &[(String, LogicalType)], fail_on_missing_field: bool) -> Self {
        let index = columns.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        ObjectReader { columns: columns.to_vec(), index, fail_on_missing_field }
    }

    /// The row in `obj`; `fallback` (for changelog formats: the row after an update, under the
    /// fields an update changed) supplies fields that `obj` does not have.
    pub(crate) fn read<'v, 'a>(&self, obj: &'v JVal<'a>, fallback: Option<&'v JVal<'a>>) -> std::result::Result<Vec<Datum>, String> {
        let fields = match obj {
            JVal::Obj(f) => f,
            other => return Err(format!("expected a JSON object but found {}", other.kind())),
        };
        let mut slots: Vec<Option<&'v JVal<'a>>> = vec![None; self.columns.len()];
        for (k, v) in fallback.and_then(JVal::fields).unwrap_or(&[]).iter().chain(fields) {
            if let Some(&i) = self.index.get(k.as_ref()) {
                slots[i] = Some(v);
            }
        }
        let mut row = Vec::with_capacity(self.columns.len());
        for ((name, ty), slot) in self.columns.iter().zip(slots) {
            match slot {
                Some(v) => row.push(to_datum(name, ty, v, self.fail_on_missing_field)?),
                None if self.fail_on_missing_field => return Err(format!("could not find field with name '{name}'")),
                None => row.push(Datum::Null),
            }
        }
        Ok(row)
    }
}


impl ObjectReader {
    /// Appends the fields of `obj` straight into the columns of `out` that `targets` names
    /// (column `i` of the reader to `targets[i]`, None: read but not kept), in column order;
    /// `fallback` supplies the fields `obj` lacks (see [`ObjectReader::read`]).
    /// On error some columns may hold the row's first values: the caller rolls them back.
    /// `slots` is scratch space kept by the caller between messages.
    pub(crate) fn append<'v, 'a>(
        &self,
        obj: &'v JVal<'a>,
        fallback: Option<&'v JVal<'a>>,
        targets: &[Option<usize>],
        out: &mut DecodedRows,
        slots: &mut Vec<usize>,
    ) -> std::result::Result<(), AppendError> {
        let fields = match obj {
            JVal::Obj(f) => f,
            other => return Err(AppendError::Parse(format!("expected a JSON object but found {}", other.kind()))),
        };
        let spare: &'v [(Cow<'a, str>, JVal<'a>)] = fallback.and_then(JVal::fields).unwrap_or(&[]);
        // Column -> index of its field in `fields` (the last one when a name repeats), or in
        // `spare` with the FROM_FALLBACK bit.
        slots.clear();
        slots.resize(self.columns.len(), usize::MAX);
        for (j, (k, _)) in spare.iter().enumerate() {
            if let Some(&i) = self.index.get(k.as_ref()) {
                slots[i] = j | FROM_FALLBACK;
            }
        }
        for (j, (k, _)) in fields.iter().enumerate() {
            // Fields usually come in column order: compare with that column before hashing.
            let i = match self.columns.get(j) {
                Some((name, _)) if name.as_str() == k.as_ref() => Some(j),
                _ => self.index.get(k.as_ref()).copied(),
            };
            if let Some(i) = i {
                slots[i] = j;
            }
        }
        for (((name, ty), &slot), target) in self.columns.iter().zip(slots.iter()).zip(targets) {
            let slot = match slot {
                usize::MAX => None,
                s if s & FROM_FALLBACK != 0 => spare.get(s & !FROM_FALLBACK).map(|(_, v)| v),
                s => fields.get(s).map(|(_, v)| v),
            };
            match (slot, target) {
                (None, _) if self.fail_on_missing_field => {
                    return Err(AppendError::Parse(format!("could not find field with name '{name}'")))
                }
                (_, None) => {}
                (Some(v), Some(c)) => append_json(out.column(*c), name, ty, v, self.fail_on_missing_field)?,
                (None, Some(c)) => out.column(*c).append_null().map_err(AppendError::Store)?,
            }
        }
        Ok(())
    }
}

/// Appends one JSON value to its column with the conversions of [`to_datum`]: the common cases
/// (numbers into numeric columns, strings into STRING and temporal columns, booleans, NULL)
/// go straight into the typed Arrow builder; anything else through a value.
fn append_json(col: &mut ColumnBuilder, name: &str, ty: &LogicalType, v: &JVal<'_>, fail_on_missing: bool) -> std::result::Result<(), AppendError> {
    macro_rules! put {
        ($b:ty, $v:expr) => {
            if let Some(b) = col.typed::<$b>() {
                b.append_value($v);
                return Ok(());
            }
        };
    }
    match (&ty.ty, v) {
        (_, JVal::Null) if ty.nullable => return col.append_null().map_err(AppendError::Store),
        (FlinkType::Int, JVal::Num(n)) if is_integral(n) => {
            if let Ok(x) = n.parse::<i32>() {
                put!(Int32Builder, x)
            }
        }
        (FlinkType::BigInt, JVal::Num(n)) if is_integral(n) => {
            if let Ok(x) = n.parse::<i64>() {
                put!(Int64Builder, x)
            }
        }
        (FlinkType::SmallInt, JVal::Num(n)) if is_integral(n) => {
            if let Ok(x) = n.parse::<i16>() {
                put!(Int16Builder, x)
            }
        }
        (FlinkType::TinyInt, JVal::Num(n)) if is_integral(n) => {
            if let Ok(x) = n.parse::<i8>() {
                put!(Int8Builder, x)
            }
        }
        (FlinkType::Double, JVal::Num(n)) => {
            if let Ok(x) = n.parse::<f64>() {
                put!(Float64Builder, x)
            }
        }
        (FlinkType::Float, JVal::Num(n)) => {
            if let Ok(x) = n.parse::<f64>() {
                put!(Float32Builder, x as f32)
            }
        }
        (FlinkType::Char(_) | FlinkType::Varchar(_), JVal::Str(t)) => put!(StringBuilder, t.as_ref()),
        (FlinkType::Boolean, JVal::Bool(b)) => put!(BooleanBuilder, *b),
        (FlinkType::Timestamp(_) | FlinkType::TimestampLtz(_), JVal::Str(t)) => {
            if let Some(x) = parse_timestamp_text(t) {
                put!(TimestampMicrosecondBuilder, x)
            }
        }
        (FlinkType::Date, JVal::Str(t)) => {
            if let Some(x) = parse_date_text(t) {
                put!(Date32Builder, x)
            }
        }
        _ => {}
    }
    let d = to_datum(name, ty, v, fail_on_missing).map_err(AppendError::Parse)?;
    col.append(d).map_err(AppendError::Store)
}

/// Decoder of the `json` format.
pub struct JsonDecoder {
    reader: ObjectReader,
    errors: ParseErrors,
    /// Scratch: where each column's field is in the current message.
    slots: Vec<usize>,
}

impl JsonDecoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        check_json_types(columns, "json", "read")?;
        let fail = fo.bool("fail-on-missing-field", false)?;
        let ignore = fo.bool("ignore-parse-errors", false)?;
        if fail && ignore {
            return Err(fo.error(
                "fail-on-missing-field",
                format!("cannot be 'true' together with '{}' = 'true'; choose one", fo.key("ignore-parse-errors")),
            ));
        }
        Ok(JsonDecoder {
            reader: ObjectReader::new(columns, fail),
            errors: ParseErrors::new("json", "messages", ignore),
            slots: Vec::with_capacity(columns.len()),
        })
    }
}

impl RowDecoder for JsonDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        let row = match parse(bytes) {
            Ok(None) => return Ok(()),
            Ok(Some(v)) => self.reader.read(&v, None),
            Err(e) => Err(format!("malformed JSON: {e}")),
        };
        match row {
            Ok(r) => emit(RowKind::Insert, r),
            Err(e) => self.errors.bad(e),
        }
    }

    fn decode_columns(
        &mut self,
        bytes: &[u8],
        targets: &[Option<usize>],
        out: &mut DecodedRows,
        complete: &mut CompleteRow<'_>,
    ) -> Result<()> {
        let start = out.len();
        let appended = match parse(bytes) {
            Ok(None) => return Ok(()),
            Ok(Some(v)) => self.reader.append(&v, None, targets, out, &mut self.slots),
            Err(e) => Err(AppendError::Parse(format!("malformed JSON: {e}"))),
        };
        let done = appended.and_then(|()| complete(out, RowKind::Insert).map_err(AppendError::Store));
        self.errors.settle(out, start, done)
    }

    fn skipped(&self) -> u64 {
        self.errors.skipped
    }
}

/// Writes one Arrow value as JSON the way Flink's JSON format does.
pub(crate) fn write_value(buf: &mut Vec<u8>, arr: &dyn Array, i: usize, o: &JsonWriteOptions) -> Result<()> {
    if arr.is_null(i) {
        buf.extend_from_slice(b"null");
        return Ok(());
    }
    macro_rules! get {
        ($t:ty) => {
            arr.as_any().downcast_ref::<$t>().ok_or_else(|| RsqlError::execution("array type mismatch"))?.value(i)
        };
    }
    macro_rules! int {
        ($t:ty) => {{
            let mut b = itoa_buf(get!($t) as i128);
            buf.append(&mut b);
        }};
    }
    match arr.data_type() {
        DataType::Null => buf.extend_from_slice(b"null"),
        DataType::Boolean => buf.extend_from_slice(if get!(BooleanArray) { b"true" } else { b"false" }),
        DataType::Int8 => int!(Int8Array),
        DataType::Int16 => int!(Int16Array),
        DataType::Int32 => int!(Int32Array),
        DataType::Int64 => int!(Int64Array),
        DataType::UInt8 => int!(UInt8Array),
        DataType::UInt16 => int!(UInt16Array),
        DataType::UInt32 => int!(UInt32Array),
        DataType::UInt64 => int!(UInt64Array),
        DataType::Float32 => float_json(buf, get!(Float32Array).is_finite(), || java_float_to_string(get_f32(arr, i))),
        DataType::Float64 => float_json(buf, get!(Float64Array).is_finite(), || java_double_to_string(get_f64(arr, i))),
        DataType::Decimal128(_, s) => {
            let v = get!(Decimal128Array);
            let t = if o.decimal_plain { big_decimal_to_plain(v, *s) } else { big_decimal_to_string(v, *s) };
            buf.extend_from_slice(t.as_bytes());
        }
        DataType::Utf8 => write_json_string(buf, get!(StringArray)),
        DataType::LargeUtf8 => write_json_string(buf, get!(LargeStringArray)),
        DataType::Utf8View => write_json_string(buf, get!(StringViewArray)),
        DataType::Binary => b64_json(buf, get!(BinaryArray)),
        DataType::LargeBinary => b64_json(buf, get!(LargeBinaryArray)),
        DataType::BinaryView => b64_json(buf, get!(BinaryViewArray)),
        DataType::FixedSizeBinary(_) => b64_json(buf, get!(FixedSizeBinaryArray)),
        DataType::Date32 => {
            buf.push(b'"');
            write_date(buf, get!(Date32Array));
            buf.push(b'"');
        }
        DataType::Date64 => {
            buf.push(b'"');
            write_date(buf, get!(Date64Array).div_euclid(86_400_000) as i32);
            buf.push(b'"');
        }
        DataType::Time32(TimeUnit::Second) => quoted_time(buf, get!(Time32SecondArray) as i64),
        DataType::Time32(_) => quoted_time(buf, get!(Time32MillisecondArray) as i64 / 1000),
        DataType::Time64(TimeUnit::Microsecond) => quoted_time(buf, get!(Time64MicrosecondArray) / 1_000_000),
        DataType::Time64(_) => quoted_time(buf, get!(Time64NanosecondArray) / 1_000_000_000),
        DataType::Timestamp(unit, tz) => {
            let micros = timestamp_micros(arr, i, unit)?;
            buf.push(b'"');
            write_timestamp(buf, micros, o.timestamp == TimestampStandard::Iso8601, tz.is_some());
            buf.push(b'"');
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let items = match arr.as_any().downcast_ref::<ListArray>() {
                Some(l) => l.value(i),
                None => get!(LargeListArray),
            };
            buf.push(b'[');
            for j in 0..items.len() {
                if j > 0 {
                    buf.push(b',');
                }
                write_value(buf, items.as_ref(), j, o)?;
            }
            buf.push(b']');
        }
        DataType::Struct(fields) => {
            let s = arr.as_any().downcast_ref::<StructArray>().ok_or_else(|| RsqlError::execution("array type mismatch"))?;
            buf.push(b'{');
            let mut first = true;
            for (f, col) in fields.iter().zip(s.columns()) {
                if o.ignore_null_fields && col.is_null(i) {
                    continue;
                }
                if !first {
                    buf.push(b',');
                }
                first = false;
                write_json_string(buf, f.name());
                buf.push(b':');
                write_value(buf, col.as_ref(), i, o)?;
            }
            buf.push(b'}');
        }
        DataType::Map(_, _) => {
            let m = arr.as_any().downcast_ref::<MapArray>().ok_or_else(|| RsqlError::execution("array type mismatch"))?;
            let entries = m.value(i);
            let keys = entries.column(0);
            let values = entries.column(1);
            buf.push(b'{');
            let mut first = true;
            for j in 0..entries.len() {
                let key: Option<String> = if keys.is_null(j) {
                    None
                } else {
                    match rsql_common::builder::datum_at(keys.as_ref(), j)? {
                        Datum::Str(s) => Some(s),
                        other => {
                            return Err(RsqlError::unsupported(format!(
                                "JSON format writes only maps with string keys, found key {other:?}"
                            )))
                        }
                    }
                };
                let key = match (key, &o.map_null_key) {
                    (Some(k), _) => k,
                    (None, MapNullKey::Drop) => continue,
                    (None, MapNullKey::Literal(l)) => l.clone(),
                    (None, MapNullKey::Fail) => {
                        return Err(RsqlError::data(
                            "json",
                            "a map with a NULL key cannot be written; set 'json.map-null-key.mode' to 'DROP' or 'LITERAL'",
                        ))
                    }
                };
                if !first {
                    buf.push(b',');
                }
                first = false;
                write_json_string(buf, &key);
                buf.push(b':');
                write_value(buf, values.as_ref(), j, o)?;
            }
            buf.push(b'}');
        }
        other => return Err(RsqlError::unsupported(format!("JSON format cannot write values of Arrow type {other}"))),
    }
    Ok(())
}

fn get_f32(arr: &dyn Array, i: usize) -> f32 {
    arr.as_any().downcast_ref::<Float32Array>().map(|a| a.value(i)).unwrap_or(0.0)
}

fn get_f64(arr: &dyn Array, i: usize) -> f64 {
    arr.as_any().downcast_ref::<Float64Array>().map(|a| a.value(i)).unwrap_or(0.0)
}

fn float_json(buf: &mut Vec<u8>, finite: bool, text: impl FnOnce() -> String) {
    let t = text();
    if finite {
        buf.extend_from_slice(t.as_bytes());
    } else {
        // Jackson writes NaN and the infinities as strings.
        buf.push(b'"');
        buf.extend_from_slice(t.as_bytes());
        buf.push(b'"');
    }
}

fn b64_json(buf: &mut Vec<u8>, data: &[u8]) {
    buf.push(b'"');
    base64_encode(data, buf);
    buf.push(b'"');
}

fn quoted_time(buf: &mut Vec<u8>, secs: i64) {
    buf.push(b'"');
    write_time_seconds(buf, secs);
    buf.push(b'"');
}

pub(crate) fn timestamp_micros(arr: &dyn Array, i: usize, unit: &TimeUnit) -> Result<i64> {
    let mismatch = || RsqlError::execution("array type mismatch");
    Ok(match unit {
        TimeUnit::Second => arr.as_any().downcast_ref::<TimestampSecondArray>().ok_or_else(mismatch)?.value(i).saturating_mul(1_000_000),
        TimeUnit::Millisecond => arr.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or_else(mismatch)?.value(i).saturating_mul(1000),
        TimeUnit::Microsecond => arr.as_any().downcast_ref::<TimestampMicrosecondArray>().ok_or_else(mismatch)?.value(i),
        TimeUnit::Nanosecond => arr.as_any().downcast_ref::<TimestampNanosecondArray>().ok_or_else(mismatch)?.value(i).div_euclid(1000),
    })
}

fn itoa_buf(v: i128) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Writes a JSON object of the batch columns at `indices`, named by the pre-escaped `names`.
pub(crate) fn write_object(
    buf: &mut Vec<u8>,
    batch: &RecordBatch,
    row: usize,
    names: &[Vec<u8>],
    indices: &[usize],
    o: &JsonWriteOptions,
) -> Result<()> {
    buf.push(b'{');
    let mut first = true;
    for (name, &c) in names.iter().zip(indices) {
        let col = batch
            .columns()
            .get(c)
            .ok_or_else(|| RsqlError::execution(format!("json: the batch has no column {c}")))?;
        if o.ignore_null_fields && col.is_null(row) {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        buf.extend_from_slice(name);
        write_value(buf, col.as_ref(), row, o)?;
    }
    buf.push(b'}');
    Ok(())
}

/// `"name":` as bytes, escaped once.
pub(crate) fn field_prefixes(columns: &[(String, LogicalType)]) -> Vec<Vec<u8>> {
    columns
        .iter()
        .map(|(n, _)| {
            let mut b = Vec::with_capacity(n.len() + 3);
            write_json_string(&mut b, n);
            b.push(b':');
            b
        })
        .collect()
}

/// Encoder of the `json` format.
pub struct JsonEncoder {
    names: Vec<Vec<u8>>,
    indices: Vec<usize>,
    opts: JsonWriteOptions,
}

impl JsonEncoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], indices: &[usize], fo: &FormatOpts<'_>) -> Result<Self> {
        check_json_types(columns, "json", "write")?;
        Ok(JsonEncoder { names: field_prefixes(columns), indices: indices.to_vec(), opts: JsonWriteOptions::from_opts(fo)? })
    }
}

impl RowEncoder for JsonEncoder {
    fn encode(&mut self, batch: &RecordBatch, row: usize, _kind: RowKind, buf: &mut Vec<u8>) -> Result<bool> {
        write_object(buf, batch, row, &self.names, &self.indices, &self.opts)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json() {
        let v = parse(br#" {"a": [1, -2.5e3, "x\u00e9\"", true, null], "b": {}} "#).unwrap().unwrap();
        let a = v.get("a").unwrap();
        assert_eq!(
            a,
            &JVal::Arr(vec![
                JVal::Num("1"),
                JVal::Num("-2.5e3"),
                JVal::Str(Cow::Owned("xé\"".into())),
                JVal::Bool(true),
                JVal::Null
            ])
        );
        assert_eq!(parse(b"  ").unwrap(), None);
        for bad in [&b"{"[..], b"{\"a\"}", b"[1,]", b"01", b"\"\x01\"", b"{} x", b"tru", b"\"\\x\"", b"-", b"1.e3"] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(10_000);
        assert!(parse(deep.as_bytes()).is_err());
        assert_eq!(parse(br#""\ud83d\ude00""#).unwrap(), Some(JVal::Str(Cow::Owned("😀".into()))));
    }

    #[test]
    fn converts_like_flink() {
        let int = LogicalType::nullable(FlinkType::Int);
        assert_eq!(to_datum("a", &int, &JVal::Num("12"), false), Ok(Datum::Int(12)));
        assert_eq!(to_datum("a", &int, &JVal::Str(" 12 ".into()), false), Ok(Datum::Int(12)));
        assert_eq!(to_datum("a", &int, &JVal::Num("12.7"), false), Ok(Datum::Int(12)));
        assert!(to_datum("a", &int, &JVal::Num("3000000000"), false).is_err());
        let tiny = LogicalType::nullable(FlinkType::TinyInt);
        assert!(to_datum("a", &tiny, &JVal::Num("1.5"), false).is_err());
        let s = LogicalType::nullable(FlinkType::Varchar(10));
        let obj = parse(br#"{"x": [1, "a"]}"#).unwrap().unwrap();
        assert_eq!(to_datum("a", &s, &obj, false), Ok(Datum::Str(r#"{"x":[1,"a"]}"#.into())));
        let dec = LogicalType::nullable(FlinkType::Decimal(5, 2));
        assert_eq!(to_datum("a", &dec, &JVal::Num("123.456"), false), Ok(Datum::Decimal(12346, 2)));
        assert_eq!(to_datum("a", &dec, &JVal::Num("12345.6"), false), Ok(Datum::Null));
        let b = LogicalType::nullable(FlinkType::Boolean);
        assert_eq!(to_datum("a", &b, &JVal::Str("TRUE".into()), false), Ok(Datum::Bool(true)));
        assert_eq!(to_datum("a", &b, &JVal::Str("yes".into()), false), Ok(Datum::Bool(false)));
    }

    #[test]
    fn reads_nested_values_like_flink() {
        let int = LogicalType::nullable(FlinkType::Int);
        let s = LogicalType::nullable(FlinkType::Varchar(10));
        let arr = LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::not_null(FlinkType::Int))));
        let map = LogicalType::nullable(FlinkType::Map(Box::new(s.clone()), Box::new(int.clone())));
        let row = LogicalType::nullable(FlinkType::Row(vec![("a".into(), int.clone()), ("m".into(), map.clone())]));
        fn v(t: &str) -> JVal<'_> {
            parse(t.as_bytes()).unwrap().unwrap()
        }
        assert_eq!(to_datum("c", &arr, &v("[1, \"2\"]"), false), Ok(Datum::list(vec![Datum::Int(1), Datum::Int(2)])));
        assert_eq!(to_datum("c", &arr, &v("null"), false), Ok(Datum::Null));
        let e = to_datum("c", &arr, &v("[1, null]"), false).unwrap_err();
        assert!(e.contains("'c[1]'") && e.contains("NOT NULL"), "{e}");
        let e = to_datum("c", &arr, &v("[1, \"x\"]"), false).unwrap_err();
        assert!(e.contains("'c[1]'"), "{e}");
        assert!(to_datum("c", &arr, &v("{}"), false).unwrap_err().contains("expected a JSON array"));
        assert_eq!(
            to_datum("c", &map, &v(r#"{"k": 1, "n": null}"#), false),
            Ok(Datum::map(vec![(Datum::Str("k".into()), Datum::Int(1)), (Datum::Str("n".into()), Datum::Null)]))
        );
        let e = to_datum("c", &map, &v(r#"{"k": true}"#), false).unwrap_err();
        assert!(e.contains("c['k']"), "{e}");
        assert_eq!(
            to_datum("c", &row, &v(r#"{"m": {"x": 2}, "zzz": 1}"#), false),
            Ok(Datum::row(vec![Datum::Null, Datum::map(vec![(Datum::Str("x".into()), Datum::Int(2))])]))
        );
        let e = to_datum("c", &row, &v(r#"{"m": {}}"#), true).unwrap_err();
        assert!(e.contains("'c.a'"), "{e}");
        let e = to_datum("c", &row, &v(r#"{"a": [1]}"#), false).unwrap_err();
        assert!(e.contains("field 'c.a'"), "{e}");
        // MAP keys must be strings, as in Flink.
        let bad = vec![("m".to_string(), LogicalType::nullable(FlinkType::Map(Box::new(int.clone()), Box::new(int))))];
        let e = check_json_types(&bad, "json", "read").unwrap_err().to_string();
        assert!(e.contains("column 'm'") && e.contains("MAP keys"), "{e}");
    }
}
