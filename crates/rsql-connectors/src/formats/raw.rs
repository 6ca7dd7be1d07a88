//! The `raw` format: the whole message is the value of the table's single column. Strings are
//! UTF-8 text (`raw.charset`), BYTES are the bytes as they are, and the fixed-size types
//! (BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE) are their binary encoding in
//! `raw.endianness` (big-endian by default). A message without a payload is a NULL value.

use rsql_common::arrow::array::*;
use rsql_common::arrow::datatypes::DataType;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::Datum;
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{Result, RowKind, RsqlError};

use super::{CompleteRow, DecodedRows, FormatOpts, RowDecoder, RowEncoder};

fn check(columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<(LogicalType, bool)> {
    if columns.len() != 1 {
        return Err(RsqlError::unsupported(format!(
            "format 'raw' reads and writes exactly one column, but {} are given ({}); use another format or declare one column",
            columns.len(),
            columns.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some(cs) = fo.get("charset") {
        let c = cs.to_ascii_uppercase().replace('_', "-");
        if c != "UTF-8" && c != "UTF8" {
            return Err(fo.error("charset", format!("'{cs}' is not supported; only UTF-8 is")));
        }
    }
    let big = match fo.get("endianness").map(|s| s.to_ascii_lowercase()) {
        None => true,
        Some(s) if s == "big-endian" => true,
        Some(s) if s == "little-endian" => false,
        Some(s) => return Err(fo.error("endianness", format!("'{s}' must be 'big-endian' or 'little-endian'"))),
    };
    let ty = columns[0].1.clone();
    match ty.ty {
        FlinkType::Char(_)
        | FlinkType::Varchar(_)
        | FlinkType::Binary(_)
        | FlinkType::Varbinary(_)
        | FlinkType::Boolean
        | FlinkType::TinyInt
        | FlinkType::SmallInt
        | FlinkType::Int
        | FlinkType::BigInt
        | FlinkType::Float
        | FlinkType::Double => Ok((ty, big)),
        _ => Err(RsqlError::unsupported(format!(
            "format 'raw' does not support column '{}' of type {}; use STRING, BYTES or a fixed-size numeric type",
            columns[0].0, ty
        ))),
    }
}

/// Decoder of the `raw` format.
pub struct RawDecoder {
    name: String,
    ty: LogicalType,
    big_endian: bool,
}

impl RawDecoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], fo: &FormatOpts<'_>) -> Result<Self> {
        let (ty, big_endian) = check(columns, fo)?;
        Ok(RawDecoder { name: columns[0].0.clone(), ty, big_endian })
    }

    fn fixed<const N: usize>(&self, bytes: &[u8]) -> Result<[u8; N]> {
        let mut a: [u8; N] = bytes.try_into().map_err(|_| {
            RsqlError::data(
                "raw",
                format!("column '{}' of type {} needs exactly {} bytes, the message has {}", self.name, self.ty, N, bytes.len()),
            )
        })?;
        if !self.big_endian {
            a.reverse();
        }
        Ok(a)
    }
}

impl RawDecoder {
    /// The message as the column's one value.
    fn value(&self, bytes: &[u8]) -> Result<Datum> {
        Ok(match self.ty.ty {
            FlinkType::Char(_) | FlinkType::Varchar(_) => Datum::Str(
                std::str::from_utf8(bytes)
                    .map_err(|e| RsqlError::data("raw", format!("column '{}': the message is not UTF-8 text ({e})", self.name)))?
                    .to_string(),
            ),
            FlinkType::Binary(_) | FlinkType::Varbinary(_) => Datum::Bytes(bytes.to_vec()),
            FlinkType::Boolean => Datum::Bool(self.fixed::<1>(bytes)?[0] != 0),
            FlinkType::TinyInt => Datum::Int(i8::from_be_bytes(self.fixed::<1>(bytes)?) as i64),
            FlinkType::SmallInt => Datum::Int(i16::from_be_bytes(self.fixed::<2>(bytes)?) as i64),
            FlinkType::Int => Datum::Int(i32::from_be_bytes(self.fixed::<4>(bytes)?) as i64),
            FlinkType::BigInt => Datum::Int(i64::from_be_bytes(self.fixed::<8>(bytes)?)),
            FlinkType::Float => Datum::Float(f32::from_be_bytes(self.fixed::<4>(bytes)?) as f64),
            FlinkType::Double => Datum::Float(f64::from_be_bytes(self.fixed::<8>(bytes)?)),
            _ => return Err(RsqlError::unsupported(format!("format 'raw' cannot read {}", self.ty))),
        })
    }
}

impl RowDecoder for RawDecoder {
    fn decode_with(&mut self, bytes: &[u8], emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        emit(RowKind::Insert, vec![self.value(bytes)?])
    }

    /// The one value goes straight into its column.
    fn decode_columns(&mut self, bytes: &[u8], targets: &[Option<usize>], out: &mut DecodedRows, complete: &mut CompleteRow<'_>) -> Result<()> {
        let v = self.value(bytes)?;
        let r = match targets.first().copied().flatten() {
            Some(c) => out.column(c).append(v),
            None => Ok(()),
        }
        .and_then(|()| complete(out, RowKind::Insert));
        if r.is_err() {
            out.rollback()?;
        }
        r
    }

    fn decode_null(&mut self, emit: &mut dyn FnMut(RowKind, Vec<Datum>) -> Result<()>) -> Result<()> {
        emit(RowKind::Insert, vec![Datum::Null])
    }
}

/// Encoder of the `raw` format.
pub struct RawEncoder {
    index: usize,
    big_endian: bool,
}

impl RawEncoder {
    pub(crate) fn new(columns: &[(String, LogicalType)], indices: &[usize], fo: &FormatOpts<'_>) -> Result<Self> {
        let (_, big_endian) = check(columns, fo)?;
        Ok(RawEncoder { index: indices[0], big_endian })
    }

    fn put(&self, buf: &mut Vec<u8>, be: &[u8]) {
        if self.big_endian {
            buf.extend_from_slice(be);
        } else {
            buf.extend(be.iter().rev());
        }
    }
}

impl RowEncoder for RawEncoder {
    fn encode(&mut self, batch: &RecordBatch, row: usize, _kind: RowKind, buf: &mut Vec<u8>) -> Result<bool> {
        let arr = batch
            .columns()
            .get(self.index)
            .ok_or_else(|| RsqlError::execution(format!("raw: the batch has no column {}", self.index)))?;
        if arr.is_null(row) {
            return Ok(false);
        }
        macro_rules! get {
            ($t:ty) => {
                arr.as_any().downcast_ref::<$t>().ok_or_else(|| RsqlError::execution("array type mismatch"))?.value(row)
            };
        }
        match arr.data_type() {
            DataType::Utf8 => buf.extend_from_slice(get!(StringArray).as_bytes()),
            DataType::LargeUtf8 => buf.extend_from_slice(get!(LargeStringArray).as_bytes()),
            DataType::Utf8View => buf.extend_from_slice(get!(StringViewArray).as_bytes()),
            DataType::Binary => buf.extend_from_slice(get!(BinaryArray)),
            DataType::LargeBinary => buf.extend_from_slice(get!(LargeBinaryArray)),
            DataType::BinaryView => buf.extend_from_slice(get!(BinaryViewArray)),
            DataType::Boolean => buf.push(get!(BooleanArray) as u8),
            DataType::Int8 => self.put(buf, &get!(Int8Array).to_be_bytes()),
            DataType::Int16 => self.put(buf, &get!(Int16Array).to_be_bytes()),
            DataType::Int32 => self.put(buf, &get!(Int32Array).to_be_bytes()),
            DataType::Int64 => self.put(buf, &get!(Int64Array).to_be_bytes()),
            DataType::Float32 => self.put(buf, &get!(Float32Array).to_be_bytes()),
            DataType::Float64 => self.put(buf, &get!(Float64Array).to_be_bytes()),
            other => return Err(RsqlError::unsupported(format!("format 'raw' cannot write values of Arrow type {other}"))),
        }
        Ok(true)
    }
}
