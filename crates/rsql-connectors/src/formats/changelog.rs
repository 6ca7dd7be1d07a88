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
use super::{FormatOpts, RowDecoder, RowEncoder};

type Rows = Vec<(RowKind, Vec<Datum>)>;

/// What the three decoders share: the row reader, error handling and counting.
struct Common {
    format: &'static str,
    reader: ObjectReader,
    ignore_parse_errors: bool,
    skipped: u64,
}

/// Parses a changelog message and turns its envelope into rows; `None` for an empty message.
fn envelope_rows(bytes: &[u8], rows: impl FnOnce(&JVal<'_>) -> std::result::Result<Rows, String>) -> Option<std::result::Result<Rows, String>> {
    match parse(bytes) {
        Ok(None) => None,
        Ok(Some(root)) => Some(rows(&root)),
        Err(e) => Some(Err(format!("malformed JSON: {e}"))),
    }
}

impl Common {
    fn new(format: &'static str, columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        check_json_types(columns, format, "read")?;
        Ok(Common {
            format,
            reader: ObjectReader::new(columns, false),
            ignore_parse_errors: fo.bool("ignore-parse-errors", false)?,
            skipped: 0,
        })
    }

    fn finish(
        &mut self,
        rows: std::result::Result<Rows, String>,
        emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>,
    ) -> Result<()> {
        match rows {
            Ok(rows) => {
                for (k, r) in rows {
                    emit(k, r)?;
                }
                Ok(())
            }
            Err(_) if self.ignore_parse_errors => {
                self.skipped += 1;
                Ok(())
            }
            Err(e) => Err(RsqlError::data(
                self.format,
                format!("{e}; set '{}.ignore-parse-errors' = 'true' to skip such messages", self.format),
            )),
        }
    }

    fn row(&self, v: Option<&JVal<'_>>, what: &str) -> std::result::Result<Vec<Datum>, String> {
        match v {
            Some(o @ JVal::Obj(_)) => self.reader.read(o, None).map_err(|e| format!("\"{what}\": {e}")),
            Some(JVal::Null) | None => Err(format!("the \"{what}\" field is missing or null")),
            Some(_) => Err(format!("the \"{what}\" field is not a JSON object")),
        }
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

    fn rows(&self, root: &JVal<'_>) -> std::result::Result<Rows, String> {
        let payload = match root.get("payload") {
            Some(p @ JVal::Obj(_)) if self.schema_include || root.get("op").is_none() => p,
            _ if self.schema_include => {
                return Err("'debezium-json.schema-include' is true but the message has no \"payload\" object".into())
            }
            _ => root,
        };
        let op = match payload.get("op") {
            Some(JVal::Str(s)) => s.as_ref(),
            Some(_) => return Err("the \"op\" field is not a string".into()),
            None => return Err("the message has no \"op\" field; is it a Debezium change event?".into()),
        };
        let c = &self.common;
        Ok(match op {
            "c" | "r" => vec![(RowKind::Insert, c.row(payload.get("after"), "after")?)],
            "u" => {
                let before = c.row(payload.get("before"), "before").map_err(|e| {
                    format!("{e} in an update; the source database must log full before images (for Postgres: REPLICA IDENTITY FULL)")
                })?;
                let after = c.row(payload.get("after"), "after")?;
                vec![(RowKind::UpdateBefore, before), (RowKind::UpdateAfter, after)]
            }
            "d" => vec![(RowKind::Delete, c.row(payload.get("before"), "before")?)],
            other => return Err(format!("unknown \"op\" value \"{other}\"")),
        })
    }
}

impl RowDecoder for DebeziumJsonDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        match envelope_rows(bytes, |root| self.rows(root)) {
            None => Ok(()),
            Some(rows) => self.common.finish(rows, emit),
        }
    }

    fn skipped(&self) -> u64 {
        self.common.skipped
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

    fn rows(&self, root: &JVal<'_>) -> std::result::Result<Rows, String> {
        for (field, re) in [("database", &self.database), ("table", &self.table)] {
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
        let c = &self.common;
        let mut rows = Vec::new();
        match ty {
            "INSERT" => {
                for d in data {
                    rows.push((RowKind::Insert, c.row(Some(d), "data")?));
                }
            }
            "DELETE" => {
                for d in data {
                    rows.push((RowKind::Delete, c.row(Some(d), "data")?));
                }
            }
            "UPDATE" => {
                let old: &[JVal<'_>] = match root.get("old") {
                    Some(JVal::Arr(a)) => a,
                    _ => return Err("an UPDATE message needs an \"old\" array".into()),
                };
                for (i, d) in data.iter().enumerate() {
                    let after = c.row(Some(d), "data")?;
                    let before = match old.get(i) {
                        Some(o @ JVal::Obj(_)) => c.reader.read(o, Some(&after)).map_err(|e| format!("\"old\": {e}"))?,
                        _ => return Err(format!("the \"old\" array has no object for data row {i}")),
                    };
                    rows.push((RowKind::UpdateBefore, before));
                    rows.push((RowKind::UpdateAfter, after));
                }
            }
            "CREATE" | "ALTER" | "ERASE" | "QUERY" | "TRUNCATE" | "RENAME" | "CINDEX" | "DINDEX" => {}
            other => return Err(format!("unknown \"type\" value \"{other}\"")),
        }
        Ok(rows)
    }
}

impl RowDecoder for CanalJsonDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        match envelope_rows(bytes, |root| self.rows(root)) {
            None => Ok(()),
            Some(rows) => self.common.finish(rows, emit),
        }
    }

    fn skipped(&self) -> u64 {
        self.common.skipped
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

    fn rows(&self, root: &JVal<'_>) -> std::result::Result<Rows, String> {
        let ty = match root.get("type") {
            Some(JVal::Str(s)) => s.as_ref(),
            _ => return Err("the message has no string \"type\" field; is it a Maxwell message?".into()),
        };
        let c = &self.common;
        Ok(match ty {
            "insert" => vec![(RowKind::Insert, c.row(root.get("data"), "data")?)],
            "delete" => vec![(RowKind::Delete, c.row(root.get("data"), "data")?)],
            "update" => {
                let after = c.row(root.get("data"), "data")?;
                let before = match root.get("old") {
                    Some(o @ JVal::Obj(_)) => c.reader.read(o, Some(&after)).map_err(|e| format!("\"old\": {e}"))?,
                    _ => after.clone(),
                };
                vec![(RowKind::UpdateBefore, before), (RowKind::UpdateAfter, after)]
            }
            other => return Err(format!("unknown \"type\" value \"{other}\"")),
        })
    }
}

impl RowDecoder for MaxwellJsonDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        match envelope_rows(bytes, |root| self.rows(root)) {
            None => Ok(()),
            Some(rows) => self.common.finish(rows, emit),
        }
    }

    fn skipped(&self) -> u64 {
        self.common.skipped
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
