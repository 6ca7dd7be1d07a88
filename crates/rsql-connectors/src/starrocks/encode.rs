//! The body of a Stream Load: rows as CSV lines or as a JSON array of objects, with the `__op`
//! column (0 upsert, 1 delete) last for tables with a primary key, and the `columns` header that
//! names the fields in order.
//!
//! Values are written as flink-connector-starrocks writes them: numbers as text (FLOAT `10.0`),
//! DECIMAL plain, DATE `yyyy-MM-dd`, TIMESTAMP `yyyy-MM-dd HH:mm:ss[.ffffff]` (TIMESTAMP_LTZ as
//! its UTC wall clock), nested values as JSON text; in CSV NULL is `\N`.

use rsql_common::arrow::array::*;
use rsql_common::arrow::datatypes::{DataType, TimeUnit};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::format_decimal;
use rsql_common::{Result, RsqlError};

use super::{LoadFormat, StarRocksConfig};
use crate::formats::json::{timestamp_micros, write_value, JsonWriteOptions, MapNullKey, TimestampStandard};
use crate::formats::text::{java_double_to_string, java_float_to_string, write_date, write_json_string, write_time_iso, write_timestamp};

/// Encodes rows of the sink's columns into a load body.
pub struct BodyEncoder {
    format: LoadFormat,
    upsert: bool,
    names: Vec<String>,
    /// `"name":` per column, escaped once (JSON).
    json_names: Vec<Vec<u8>>,
    json: JsonWriteOptions,
}

impl BodyEncoder {
    pub fn new(cfg: &StarRocksConfig) -> BodyEncoder {
        let names: Vec<String> = cfg.columns.iter().map(|(n, _)| n.clone()).collect();
        let json_names = names
            .iter()
            .map(|n| {
                let mut b = Vec::with_capacity(n.len() + 3);
                write_json_string(&mut b, n);
                b.push(b':');
                b
            })
            .collect();
        BodyEncoder {
            format: cfg.format.clone(),
            upsert: cfg.upsert,
            names,
            json_names,
            json: JsonWriteOptions {
                timestamp: TimestampStandard::Sql,
                map_null_key: MapNullKey::Fail,
                decimal_plain: true,
                ignore_null_fields: false,
            },
        }
    }

    /// The `columns` header: `` `a`,`b`,`__op` ``.
    pub fn columns_header(&self) -> String {
        let mut cols: Vec<String> = self.names.iter().map(|n| format!("`{}`", n.replace('`', ""))).collect();
        if self.upsert {
            cols.push("__op".into());
        }
        cols.join(",")
    }

    pub fn is_json(&self) -> bool {
        self.format == LoadFormat::Json
    }

    /// Appends row `row` of `batch` to `body`; `op` is 0 (upsert) or 1 (delete) for tables with a
    /// primary key. `first` says whether the body holds no row yet.
    pub fn encode_row(&self, batch: &RecordBatch, row: usize, op: u8, body: &mut Vec<u8>, first: bool) -> Result<()> {
        match &self.format {
            LoadFormat::Json => {
                body.push(if first { b'[' } else { b',' });
                body.push(b'{');
                for (c, name) in self.json_names.iter().enumerate() {
                    if c > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(name);
                    json_cell(body, batch.column(c).as_ref(), row, &self.json)?;
                }
                if self.upsert {
                    body.extend_from_slice(b",\"__op\":");
                    body.push(b'0' + op);
                }
                body.push(b'}');
            }
            LoadFormat::Csv { column_separator, row_delimiter } => {
                for c in 0..self.names.len() {
                    if c > 0 {
                        body.extend_from_slice(column_separator);
                    }
                    let start = body.len();
                    csv_cell(body, batch.column(c).as_ref(), row, &self.json)?;
                    let cell = &body[start..];
                    if contains(cell, column_separator) || contains(cell, row_delimiter) {
                        return Err(RsqlError::data(
                            format!("column '{}'", self.names[c]),
                            format!(
                                "the value {} holds the column separator or the row delimiter, which a CSV load cannot carry; \
                                 set 'sink.properties.format' = 'json' (or other 'sink.properties.column_separator' / 'row_delimiter')",
                                crate::formats::describe_bytes(cell)
                            ),
                        ));
                    }
                }
                if self.upsert {
                    body.extend_from_slice(column_separator);
                    body.push(b'0' + op);
                }
                body.extend_from_slice(row_delimiter);
            }
        }
        Ok(())
    }

    /// Closes a body that holds at least one row (the JSON array's `]`).
    pub fn finish(&self, body: &mut Vec<u8>) {
        if self.is_json() && !body.is_empty() {
            body.push(b']');
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

macro_rules! get {
    ($arr:expr, $t:ty, $i:expr) => {
        $arr.as_any().downcast_ref::<$t>().ok_or_else(|| RsqlError::execution("array type mismatch"))?.value($i)
    };
}

/// A JSON value; timestamps without the `Z` of Flink's JSON format for TIMESTAMP_LTZ.
fn json_cell(buf: &mut Vec<u8>, arr: &dyn Array, i: usize, o: &JsonWriteOptions) -> Result<()> {
    if arr.is_null(i) {
        buf.extend_from_slice(b"null");
        return Ok(());
    }
    match arr.data_type() {
        DataType::Timestamp(unit, _) => {
            let micros = timestamp_micros(arr, i, unit)?;
            buf.push(b'"');
            write_timestamp(buf, micros, false, false);
            buf.push(b'"');
            Ok(())
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            buf.push(b'"');
            write_time_iso(buf, get!(arr, Time64MicrosecondArray, i));
            buf.push(b'"');
            Ok(())
        }
        _ => write_value(buf, arr, i, o),
    }
}

/// A CSV field as text.
fn csv_cell(buf: &mut Vec<u8>, arr: &dyn Array, i: usize, o: &JsonWriteOptions) -> Result<()> {
    if arr.is_null(i) {
        buf.extend_from_slice(b"\\N");
        return Ok(());
    }
    match arr.data_type() {
        DataType::Boolean => buf.extend_from_slice(if get!(arr, BooleanArray, i) { b"true" } else { b"false" }),
        DataType::Int8 => buf.extend_from_slice(get!(arr, Int8Array, i).to_string().as_bytes()),
        DataType::Int16 => buf.extend_from_slice(get!(arr, Int16Array, i).to_string().as_bytes()),
        DataType::Int32 => buf.extend_from_slice(get!(arr, Int32Array, i).to_string().as_bytes()),
        DataType::Int64 => buf.extend_from_slice(get!(arr, Int64Array, i).to_string().as_bytes()),
        DataType::UInt8 => buf.extend_from_slice(get!(arr, UInt8Array, i).to_string().as_bytes()),
        DataType::UInt16 => buf.extend_from_slice(get!(arr, UInt16Array, i).to_string().as_bytes()),
        DataType::UInt32 => buf.extend_from_slice(get!(arr, UInt32Array, i).to_string().as_bytes()),
        DataType::UInt64 => buf.extend_from_slice(get!(arr, UInt64Array, i).to_string().as_bytes()),
        DataType::Float32 => buf.extend_from_slice(java_float_to_string(get!(arr, Float32Array, i)).as_bytes()),
        DataType::Float64 => buf.extend_from_slice(java_double_to_string(get!(arr, Float64Array, i)).as_bytes()),
        DataType::Decimal128(_, s) => buf.extend_from_slice(format_decimal(get!(arr, Decimal128Array, i), *s).as_bytes()),
        DataType::Utf8 => buf.extend_from_slice(get!(arr, StringArray, i).as_bytes()),
        DataType::LargeUtf8 => buf.extend_from_slice(get!(arr, LargeStringArray, i).as_bytes()),
        DataType::Utf8View => buf.extend_from_slice(get!(arr, StringViewArray, i).as_bytes()),
        DataType::Binary => buf.extend_from_slice(get!(arr, BinaryArray, i)),
        DataType::Date32 => write_date(buf, get!(arr, Date32Array, i)),
        DataType::Time64(TimeUnit::Microsecond) => write_time_iso(buf, get!(arr, Time64MicrosecondArray, i)),
        DataType::Timestamp(unit, _) => write_timestamp(buf, timestamp_micros(arr, i, unit)?, false, false),
        DataType::List(_) | DataType::LargeList(_) | DataType::Map(..) | DataType::Struct(_) => write_value(buf, arr, i, o)?,
        other => return Err(RsqlError::unsupported(format!("the starrocks sink cannot write values of Arrow type {other}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starrocks::tests::{table, BASE};
    use rsql_common::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int32, false),
            Field::new("order_revenue", DataType::Float32, true),
            Field::new("order_region", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(Float32Array::from(vec![Some(10.0), None])),
                Arc::new(StringArray::from(vec![Some("bei\"jing"), Some("a\tb")])),
            ],
        )
        .unwrap()
    }

    fn cfg(extra: &[(&'static str, &'static str)], pk: bool) -> StarRocksConfig {
        let mut o = BASE.to_vec();
        o.extend_from_slice(extra);
        StarRocksConfig::from_table(&table(&o, pk)).unwrap()
    }

    #[test]
    fn json_bodies() {
        let e = BodyEncoder::new(&cfg(&[("sink.properties.format", "json")], true));
        assert_eq!(e.columns_header(), "`order_id`,`order_revenue`,`order_region`,__op");
        let b = batch();
        let mut body = Vec::new();
        e.encode_row(&b, 0, 0, &mut body, true).unwrap();
        e.encode_row(&b, 1, 1, &mut body, false).unwrap();
        e.finish(&mut body);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"[{"order_id":1,"order_revenue":10.0,"order_region":"bei\"jing","__op":0},{"order_id":2,"order_revenue":null,"order_region":"a\tb","__op":1}]"#
        );
    }

    #[test]
    fn csv_bodies() {
        let e = BodyEncoder::new(&cfg(&[("sink.properties.column_separator", "\\x01")], false));
        assert_eq!(e.columns_header(), "`order_id`,`order_revenue`,`order_region`");
        let b = batch();
        let mut body = Vec::new();
        e.encode_row(&b, 0, 0, &mut body, true).unwrap();
        e.encode_row(&b, 1, 0, &mut body, false).unwrap();
        e.finish(&mut body);
        assert_eq!(body, b"1\x0110.0\x01bei\"jing\n2\x01\\N\x01a\tb\n".to_vec());
        // A tab inside a value cannot go into a tab-separated load.
        let e = BodyEncoder::new(&cfg(&[], true));
        let mut body = Vec::new();
        e.encode_row(&b, 0, 1, &mut body, true).unwrap();
        assert_eq!(body, b"1\t10.0\tbei\"jing\t1\n".to_vec());
        let err = e.encode_row(&b, 1, 0, &mut body, false).unwrap_err().to_string();
        assert!(err.contains("column 'order_region'") && err.contains("'sink.properties.format' = 'json'"), "{err}");
    }

    #[test]
    fn temporal_values() {
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1_704_164_645_123_000i64]).with_timezone("UTC"));
        let d: ArrayRef = Arc::new(Date32Array::from(vec![19_723]));
        let o = JsonWriteOptions { timestamp: TimestampStandard::Sql, map_null_key: MapNullKey::Fail, decimal_plain: true, ignore_null_fields: false };
        let mut buf = Vec::new();
        json_cell(&mut buf, ts.as_ref(), 0, &o).unwrap();
        buf.push(b' ');
        csv_cell(&mut buf, d.as_ref(), 0, &o).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "\"2024-01-02 03:04:05.123\" 2024-01-01");
    }
}
