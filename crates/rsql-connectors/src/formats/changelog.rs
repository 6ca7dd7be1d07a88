//! The changelog formats `debezium-json`, `canal-json` and `maxwell-json`: each message holds a
//! change (insert, update with its old values, delete) that becomes +I, -U/+U or -D rows; and the
//! other way, each row becomes one message the way Flink writes them (+I/+U as an insert, -U/-D
//! as a delete: an update is written as a delete of the old row and an insert of the new one).

use regex::Regex;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::Datum;
use rsql_common::types::LogicalType;
use rsql_common::{Result, RowKind, RsqlError};

use super::json::{check_json_types, field_prefixes, parse, write_object, JVal, JsonWriteOptions, ObjectReader};
use super::{AppendError, CompleteRow, DecodedRows, FormatOpts, ParseErrors, RowDecoder, RowEncoder};

/// One row of a changelog message: its kind, the object holding its fields, the object that
/// supplies the fields it lacks (canal's and maxwell's `old` holds only what an update changed,
/// the rest is in `data`), and what errors call it.
struct Part<'v, 'a> {
    kind: RowKind,
    obj: &'v JVal<'a>,
    fallback: Option<&'v JVal<'a>>,
    what: &'static str,
    /// Appended to a conversion error of this row.
    hint: &'static str,
}

impl<'v, 'a> Part<'v, 'a> {
    /// A row read from the `what` field of a message, which must be an object.
    fn of(kind: RowKind, v: Option<&'v JVal<'a>>, what: &'static str) -> std::result::Result<Self, String> {
        match v {
            Some(o @ JVal::Obj(_)) => Ok(Part { kind, obj: o, fallback: None, what, hint: "" }),
            Some(JVal::Null) | None => Err(format!("the \"{what}\" field is missing or null")),
            Some(_) => Err(format!("the \"{what}\" field is not a JSON object")),
        }
    }

    fn error(&self, e: &str) -> String {
        format!("\"{}\": {e}{}", self.what, self.hint)
    }
}

/// What the three decoders share: the row reader, error handling and counting.
struct Common {
    reader: ObjectReader,
    errors: ParseErrors,
    /// Scratch for [`ObjectReader::append`].
    slots: Vec<usize>,
}

impl Common {
    fn new(format: &'static str, columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        check_json_types(columns, format, "read")?;
        Ok(Common {
            reader: ObjectReader::new(columns, false),
            errors: ParseErrors::new(format, "messages", fo.bool("ignore-parse-errors", false)?),
            slots: Vec::with_capacity(columns.len()),
        })
    }

    /// Decodes a message through rows of values: every row is read before any is handed on.
    fn decode_with<'m>(
        &mut self,
        bytes: &'m [u8],
        plan: impl for<'v> FnOnce(&'v JVal<'m>) -> std::result::Result<Vec<Part<'v, 'm>>, String>,
        emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>,
    ) -> Result<()> {
        let root = match parse(bytes) {
            Ok(None) => return Ok(()),
            Ok(Some(root)) => root,
            Err(e) => return self.errors.bad(format!("malformed JSON: {e}")),
        };
        let rows: std::result::Result<Vec<(RowKind, Vec<Datum>)>, String> = plan(&root).and_then(|parts| {
            parts.iter().map(|p| self.reader.read(p.obj, p.fallback).map(|r| (p.kind, r)).map_err(|e| p.error(&e))).collect()
        });
        match rows {
            Ok(rows) => {
                for (k, r) in rows {
                    emit(k, r)?;
                }
                Ok(())
            }
            Err(e) => self.errors.bad(e),
        }
    }

    /// Decodes a message field by field into the columns of `out`; a message that fails leaves
    /// none of its rows behind.
    fn decode_columns<'m>(
        &mut self,
        bytes: &'m [u8],
        plan: impl for<'v> FnOnce(&'v JVal<'m>) -> std::result::Result<Vec<Part<'v, 'm>>, String>,
        targets: &[Option<usize>],
        out: &mut DecodedRows,
        complete: &mut CompleteRow<'_>,
    ) -> Result<()> {
        let root = match parse(bytes) {
            Ok(None) => return Ok(()),
            Ok(Some(root)) => root,
            Err(e) => return self.errors.bad(format!("malformed JSON: {e}")),
        };
        let parts = match plan(&root) {
            Ok(parts) => parts,
            Err(e) => return self.errors.bad(e),
        };
        let start = out.len();
        let mut done = Ok(());
        for p in &parts {
            done = match self.reader.append(p.obj, p.fallback, targets, out, &mut self.slots) {
                Ok(()) => complete(out, p.kind).map_err(AppendError::Store),
                Err(AppendError::Parse(e)) => Err(AppendError::Parse(p.error(&e))),
                Err(store) => Err(store),
            };
            if done.is_err() {
                break;
            }
        }
        self.errors.settle(out, start, done)
    }
}

/// Decoder of `debezium-json`: `op` c/r -> +I (after), u -> -U (before) and +U (after),
/// d -> -D (before). With `debezium-json.schema-include` (or when the message has a `payload`
/// envelope and no `op`) the change is read from `payload`.
pub struct DebeziumJsonDecoder {
    common: Common,
    schema_include: bool,
}

impl DebeziumJsonDecoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        Ok(DebeziumJsonDecoder {
            common: Common::new("debezium-json", columns, fo)?,
            schema_include: fo.bool("schema-include", false)?,
        })
    }

    fn plan<'v, 'a>(schema_include: bool, root: &'v JVal<'a>) -> std::result::Result<Vec<Part<'v, 'a>>, String> {
        let payload = match root.get("payload") {
            Some(p @ JVal::Obj(_)) if schema_include || root.get("op").is_none() => p,
            _ if schema_include => {
                return Err("'debezium-json.schema-include' is true but the message has no \"payload\" object".into())
            }
            _ => root,
        };
        let op = match payload.get("op") {
            Some(JVal::Str(s)) => s.as_ref(),
            Some(_) => return Err("the \"op\" field is not a string".into()),
            None => return Err("the message has no \"op\" field; is it a Debezium change event?".into()),
        };
        Ok(match op {
            "c" | "r" => vec![Part::of(RowKind::Insert, payload.get("after"), "after")?],
            "u" => {
                let mut before =
                    Part::of(RowKind::UpdateBefore, payload.get("before"), "before").map_err(|e| format!("{e}{FULL_BEFORE_IMAGES}"))?;
                before.hint = FULL_BEFORE_IMAGES;
                vec![before, Part::of(RowKind::UpdateAfter, payload.get("after"), "after")?]
            }
            "d" => vec![Part::of(RowKind::Delete, payload.get("before"), "before")?],
            other => return Err(format!("unknown \"op\" value \"{other}\"")),
        })
    }
}

/// Why an update's before image is missing or incomplete, most of the time.
const FULL_BEFORE_IMAGES: &str = " in an update; the source database must log full before images (for Postgres: REPLICA IDENTITY FULL)";

impl RowDecoder for DebeziumJsonDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        self.common.decode_with(bytes, |root| Self::plan(self.schema_include, root), emit)
    }

    fn decode_columns(&mut self, bytes: &[u8], targets: &[Option<usize>], out: &mut DecodedRows, complete: &mut CompleteRow<'_>) -> Result<()> {
        self.common.decode_columns(bytes, |root| Self::plan(self.schema_include, root), targets, out, complete)
    }

    fn skipped(&self) -> u64 {
        self.common.errors.skipped
    }
}

fn include_regex(fo: &FormatOpts<'_>, name: &str) -> Result<Option<Regex>> {
    match fo.get(name) {
        None => Ok(None),
        Some(p) => Regex::new(&format!("^(?:{p})$"))
            .map(Some)
            .map_err(|e| fo.error(name, format!("'{p}' is not a valid regular expression: {e}"))),
    }
}

/// Decoder of `canal-json`: `type` INSERT -> +I per `data` row, UPDATE -> -U (the row with the
/// `old` values) and +U per row, DELETE -> -D per row; CREATE and other DDL messages are skipped.
/// `canal-json.database.include` / `table.include` keep only matching messages.
pub struct CanalJsonDecoder {
    common: Common,
    database: Option<Regex>,
    table: Option<Regex>,
}

impl CanalJsonDecoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        Ok(CanalJsonDecoder {
            common: Common::new("canal-json", columns, fo)?,
            database: include_regex(fo, "database.include")?,
            table: include_regex(fo, "table.include")?,
        })
    }

    fn plan<'v, 'a>(
        database: &Option<Regex>,
        table: &Option<Regex>,
        root: &'v JVal<'a>,
    ) -> std::result::Result<Vec<Part<'v, 'a>>, String> {
        for (field, re) in [("database", database), ("table", table)] {
            if let Some(re) = re {
                let v = root.get(field).and_then(JVal::as_str).unwrap_or("");
                if !re.is_match(v) {
                    return Ok(Vec::new());
                }
            }
        }
        if matches!(root.get("isDdl"), Some(JVal::Bool(true))) {
            return Ok(Vec::new());
        }
        let ty = match root.get("type") {
            Some(JVal::Str(s)) => s.as_ref(),
            _ => return Err("the message has no string \"type\" field; is it a Canal message?".into()),
        };
        let data: &[JVal<'_>] = match root.get("data") {
            Some(JVal::Arr(a)) => a,
            Some(JVal::Null) | None => &[],
            Some(_) => return Err("the \"data\" field is not an array".into()),
        };
        let mut parts = Vec::new();
        match ty {
            "INSERT" => {
                for d in data {
                    parts.push(Part::of(RowKind::Insert, Some(d), "data")?);
                }
            }
            "DELETE" => {
                for d in data {
                    parts.push(Part::of(RowKind::Delete, Some(d), "data")?);
                }
            }
            "UPDATE" => {
                let old: &[JVal<'_>] = match root.get("old") {
                    Some(JVal::Arr(a)) => a,
                    _ => return Err("an UPDATE message needs an \"old\" array".into()),
                };
                for (i, d) in data.iter().enumerate() {
                    let after = Part::of(RowKind::UpdateAfter, Some(d), "data")?;
                    let before = match old.get(i) {
                        Some(o @ JVal::Obj(_)) => Part { kind: RowKind::UpdateBefore, obj: o, fallback: Some(d), what: "old", hint: "" },
                        _ => return Err(format!("the \"old\" array has no object for data row {i}")),
                    };
                    parts.push(before);
                    parts.push(after);
                }
            }
            "CREATE" | "ALTER" | "ERASE" | "QUERY" | "TRUNCATE" | "RENAME" | "CINDEX" | "DINDEX" => {}
            other => return Err(format!("unknown \"type\" value \"{other}\"")),
        }
        Ok(parts)
    }
}

impl RowDecoder for CanalJsonDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        self.common.decode_with(bytes, |root| Self::plan(&self.database, &self.table, root), emit)
    }

    fn decode_columns(&mut self, bytes: &[u8], targets: &[Option<usize>], out: &mut DecodedRows, complete: &mut CompleteRow<'_>) -> Result<()> {
        self.common.decode_columns(bytes, |root| Self::plan(&self.database, &self.table, root), targets, out, complete)
    }

    fn skipped(&self) -> u64 {
        self.common.errors.skipped
    }
}

/// Decoder of `maxwell-json`: `type` insert -> +I, update -> -U (with the `old` values) and +U,
/// delete -> -D.
pub struct MaxwellJsonDecoder {
    common: Common,
}

impl MaxwellJsonDecoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        Ok(MaxwellJsonDecoder { common: Common::new("maxwell-json", columns, fo)? })
    }

    fn plan<'v, 'a>(root: &'v JVal<'a>) -> std::result::Result<Vec<Part<'v, 'a>>, String> {
        let ty = match root.get("type") {
            Some(JVal::Str(s)) => s.as_ref(),
            _ => return Err("the message has no string \"type\" field; is it a Maxwell message?".into()),
        };
        Ok(match ty {
            "insert" => vec![Part::of(RowKind::Insert, root.get("data"), "data")?],
            "delete" => vec![Part::of(RowKind::Delete, root.get("data"), "data")?],
            "update" => {
                let after = Part::of(RowKind::UpdateAfter, root.get("data"), "data")?;
                let before = match root.get("old") {
                    Some(o @ JVal::Obj(_)) => Part { kind: RowKind::UpdateBefore, obj: o, fallback: Some(after.obj), what: "old", hint: "" },
                    _ => Part { kind: RowKind::UpdateBefore, ..after },
                };
                vec![before, after]
            }
            other => return Err(format!("unknown \"type\" value \"{other}\"")),
        })
    }
}

impl RowDecoder for MaxwellJsonDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        self.common.decode_with(bytes, |root| Self::plan(root), emit)
    }

    fn decode_columns(&mut self, bytes: &[u8], targets: &[Option<usize>], out: &mut DecodedRows, complete: &mut CompleteRow<'_>) -> Result<()> {
        self.common.decode_columns(bytes, |root| Self::plan(root), targets, out, complete)
    }

    fn skipped(&self) -> u64 {
        self.common.errors.skipped
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Envelope {
    Debezium,
    Canal,
    Maxwell,
}

/// Encoder of `debezium-json`, `canal-json` and `maxwell-json`.
pub struct ChangelogJsonEncoder {
    envelope: Envelope,
    names: Vec<Vec<u8>>,
    indices: Vec<usize>,
    opts: JsonWriteOptions,
}

impl ChangelogJsonEncoder {
    pub(crate) fn new(format: &str, columns: &[(String, LogicalType)], indices: &[usize], fo: &FormatOpts<'_>) -> Result<Self> {
        check_json_types(columns, format, "write")?;
        let envelope = match format {
            "debezium-json" => Envelope::Debezium,
            "canal-json" => Envelope::Canal,
            "maxwell-json" => Envelope::Maxwell,
            other => return Err(RsqlError::unsupported(format!("'{other}' is not a changelog format"))),
        };
        Ok(ChangelogJsonEncoder {
            envelope,
            names: field_prefixes(columns),
            indices: indices.to_vec(),
            opts: JsonWriteOptions::from_opts(fo)?,
        })
    }
}

impl RowEncoder for ChangelogJsonEncoder {
    fn encode(&mut self, batch: &RecordBatch, row: usize, kind: RowKind, buf: &mut Vec<u8>) -> Result<bool> {
        let insert = kind.is_accumulate();
        match self.envelope {
            Envelope::Debezium => {
                if insert {
                    buf.extend_from_slice(b"{\"before\":null,\"after\":");
                    write_object(buf, batch, row, &self.names, &self.indices, &self.opts)?;
                    buf.extend_from_slice(b",\"op\":\"c\"}");
                } else {
                    buf.extend_from_slice(b"{\"before\":");
                    write_object(buf, batch, row, &self.names, &self.indices, &self.opts)?;
                    buf.extend_from_slice(b",\"after\":null,\"op\":\"d\"}");
                }
            }
            Envelope::Canal => {
                buf.extend_from_slice(b"{\"data\":[");
                write_object(buf, batch, row, &self.names, &self.indices, &self.opts)?;
                buf.extend_from_slice(if insert { &b"],\"type\":\"INSERT\"}"[..] } else { &b"],\"type\":\"DELETE\"}"[..] });
            }
            Envelope::Maxwell => {
                buf.extend_from_slice(b"{\"data\":");
                write_object(buf, batch, row, &self.names, &self.indices, &self.opts)?;
                buf.extend_from_slice(if insert { &b",\"type\":\"insert\"}"[..] } else { &b",\"type\":\"delete\"}"[..] });
            }
        }
        Ok(true)
    }
}
