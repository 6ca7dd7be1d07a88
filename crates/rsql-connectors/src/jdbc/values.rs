//! Values between Arrow and MySQL for the jdbc connector: Arrow cells into MySQL statement
//! parameters, a key encoding that groups changes by primary key, and how a row is shown in
//! error messages.

use rsql_common::arrow::array::{Array, Float32Array};
use rsql_common::arrow::datatypes::DataType;
use rsql_common::builder::{datum_at, format_date, format_decimal, format_time, format_timestamp, Datum};
use rsql_common::types::FlinkType;
use rsql_common::{Result, RowKind, RsqlError};

use mysql_async::Value;

/// Whether the jdbc sink can write a column of this type; the reason when it cannot.
pub fn writable_type(t: &FlinkType) -> std::result::Result<(), String> {
    match t {
        FlinkType::Array(_) | FlinkType::Map(..) | FlinkType::Row(_) => Err(format!("{t} is a nested type")),
        _ => Ok(()),
    }
}

/// Days since 1970-01-01 -> (year, month, day).
fn civil(days: i64) -> Option<(i32, u32, u32)> {
    use chrono::Datelike;
    let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(days))?;
    Some((d.year(), d.month(), d.day()))
}

/// MySQL DATETIME parameter from microseconds since the epoch (wall clock).
fn datetime(micros: i64) -> Option<Value> {
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil(days)?;
    if !(0..=9999).contains(&y) {
        return None;
    }
    let secs = rest / 1_000_000;
    Some(Value::Date(
        y as u16,
        m as u8,
        d as u8,
        (secs / 3600) as u8,
        ((secs / 60) % 60) as u8,
        (secs % 60) as u8,
        (rest % 1_000_000) as u32,
    ))
}

/// The MySQL parameter for row `i` of `arr`.
pub fn param_at(arr: &dyn Array, i: usize) -> Result<Value> {
    if arr.is_null(i) {
        return Ok(Value::NULL);
    }
    if let DataType::Float32 = arr.data_type() {
        // Keep FLOAT values FLOAT so a FLOAT column gets exactly the value.
        if let Some(a) = arr.as_any().downcast_ref::<Float32Array>() {
            return Ok(Value::Float(a.value(i)));
        }
    }
    let d = datum_at(arr, i)?;
    Ok(match d {
        Datum::Null => Value::NULL,
        Datum::Bool(b) => Value::Int(b as i64),
        Datum::Int(v) => Value::Int(v),
        Datum::UInt(v) => Value::UInt(v),
        Datum::Float(v) => Value::Double(v),
        Datum::Decimal(v, s) => Value::Bytes(format_decimal(v, s).into_bytes()),
        Datum::Str(s) => Value::Bytes(s.into_bytes()),
        Datum::Bytes(b) => Value::Bytes(b),
        Datum::Date(days) => match civil(days as i64) {
            Some((y, m, d)) if (0..=9999).contains(&y) => Value::Date(y as u16, m as u8, d as u8, 0, 0, 0, 0),
            _ => Value::Bytes(format_date(days).into_bytes()),
        },
        Datum::Time(us) => {
            let secs = us.div_euclid(1_000_000);
            Value::Time(false, 0, (secs / 3600) as u8, ((secs / 60) % 60) as u8, (secs % 60) as u8, us.rem_euclid(1_000_000) as u32)
        }
        Datum::Timestamp(us) => datetime(us).unwrap_or_else(|| Value::Bytes(format_timestamp(us, 6).into_bytes())),
        Datum::Nested(_) => {
            return Err(RsqlError::unsupported(format!(
                "the jdbc sink cannot write ARRAY, MAP or ROW values (Arrow type {}); cast the column to STRING",
                arr.data_type()
            )))
        }
    })
}

/// Appends a self-delimiting encoding of `v` to `out` (equal values, equal bytes), for grouping
/// changes by key.
pub fn encode_key_part(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::NULL => out.push(0),
        Value::Bytes(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        Value::Int(x) => {
            out.push(2);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::UInt(x) => {
            out.push(3);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Float(x) => {
            out.push(4);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::Double(x) => {
            out.push(5);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::Date(y, m, d, h, mi, s, us) => {
            out.push(6);
            out.extend_from_slice(&y.to_le_bytes());
            out.extend_from_slice(&[*m, *d, *h, *mi, *s]);
            out.extend_from_slice(&us.to_le_bytes());
        }
        Value::Time(neg, d, h, mi, s, us) => {
            out.push(7);
            out.push(*neg as u8);
            out.extend_from_slice(&d.to_le_bytes());
            out.extend_from_slice(&[*h, *mi, *s]);
            out.extend_from_slice(&us.to_le_bytes());
        }
    }
}

/// A value as it reads in an error message (strings quoted and cut at 64 characters).
pub fn show_value(v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                let cut: String = s.chars().take(64).collect();
                let more = if cut.len() < s.len() { format!("...({} bytes)", s.len()) } else { String::new() };
                format!("'{}'{more}", cut.replace('\'', "''"))
            }
            Err(_) => format!("<{} bytes>", b.len()),
        },
        Value::Int(x) => x.to_string(),
        Value::UInt(x) => x.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::Date(y, m, d, h, mi, s, us) => {
            let base = format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}");
            if *us > 0 {
                format!("'{base}.{us:06}'")
            } else {
                format!("'{base}'")
            }
        }
        Value::Time(neg, d, h, mi, s, us) => {
            let total_h = *d as u64 * 24 + *h as u64;
            let micros = *us as i64 + ((total_h as i64 * 3600 + *mi as i64 * 60 + *s as i64) * 1_000_000);
            format!("'{}{}'", if *neg { "-" } else { "" }, format_time(micros, 6))
        }
    }
}

/// `+I (order_id=1, order_region='beijing')`.
pub fn show_row(kind: RowKind, names: &[String], values: &[Value]) -> String {
    let cells: Vec<String> = names.iter().zip(values).map(|(n, v)| format!("{n}={}", show_value(v))).collect();
    format!("{kind} ({})", cells.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::arrow::array::*;
    use std::sync::Arc;

    #[test]
    fn parameters() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(7), None]));
        assert_eq!(param_at(a.as_ref(), 0).unwrap(), Value::Int(7));
        assert_eq!(param_at(a.as_ref(), 1).unwrap(), Value::NULL);
        let f: ArrayRef = Arc::new(Float32Array::from(vec![10.1f32]));
        assert_eq!(param_at(f.as_ref(), 0).unwrap(), Value::Float(10.1));
        let s: ArrayRef = Arc::new(StringArray::from(vec!["beijing"]));
        assert_eq!(param_at(s.as_ref(), 0).unwrap(), Value::Bytes(b"beijing".to_vec()));
        let b: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        assert_eq!(param_at(b.as_ref(), 0).unwrap(), Value::Int(1));
        let d: ArrayRef = Arc::new(Decimal128Array::from(vec![12345i128]).with_precision_and_scale(10, 2).unwrap());
        assert_eq!(param_at(d.as_ref(), 0).unwrap(), Value::Bytes(b"123.45".to_vec()));
        let day: ArrayRef = Arc::new(Date32Array::from(vec![19_723]));
        assert_eq!(param_at(day.as_ref(), 0).unwrap(), Value::Date(2024, 1, 1, 0, 0, 0, 0));
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1_704_164_645_123_456i64]));
        assert_eq!(param_at(ts.as_ref(), 0).unwrap(), Value::Date(2024, 1, 2, 3, 4, 5, 123_456));
        let t: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![(13 * 3600 + 5) * 1_000_000 + 7]));
        assert_eq!(param_at(t.as_ref(), 0).unwrap(), Value::Time(false, 0, 13, 0, 5, 7));
    }

    #[test]
    fn keys_and_messages() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        encode_key_part(&Value::Bytes(b"ab".to_vec()), &mut a);
        encode_key_part(&Value::Bytes(b"c".to_vec()), &mut a);
        encode_key_part(&Value::Bytes(b"a".to_vec()), &mut b);
        encode_key_part(&Value::Bytes(b"bc".to_vec()), &mut b);
        assert_ne!(a, b);
        let names = vec!["id".to_string(), "name".to_string()];
        assert_eq!(
            show_row(RowKind::Insert, &names, &[Value::Int(1), Value::Bytes(b"it's".to_vec())]),
            "+I (id=1, name='it''s')"
        );
        assert!(show_value(&Value::Bytes(vec![b'x'; 100])).ends_with("...(100 bytes)"));
        assert_eq!(show_value(&Value::Date(2024, 1, 2, 3, 4, 5, 0)), "'2024-01-02 03:04:05'");
    }
}
