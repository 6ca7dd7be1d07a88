//! Turns MySQL values into `Datum`s: first into a "natural" value that does not depend on how
//! it was read (snapshot rows come as text, binlog rows as binary images, and both must give
//! the same value), then into the value the declared Flink type wants (time zones, BOOLEAN from
//! TINYINT(1) / BIT(1), labels of ENUM / SET, text of temporal columns).
//!
//! Natural values: integers `Int`/`UInt`, DECIMAL `Decimal(unscaled, scale)`, FLOAT/DOUBLE
//! `Float`, DATE `Date`, DATETIME `Timestamp` (wall clock), TIMESTAMP `Timestamp` (UTC), TIME
//! `Time` (may be negative or over 24 h), YEAR `Int`, textual columns `Str`, binary, BIT and
//! spatial columns `Bytes`. Zero dates ('0000-00-00') read as NULL.

use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value;
use rsql_common::builder::{days_from_civil, format_date, format_decimal, format_timestamp, parse_decimal, Datum};
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{Result, RsqlError};

use super::schema::{Family, MySqlColumn};

fn bad(col: &MySqlColumn, what: impl std::fmt::Display) -> RsqlError {
    RsqlError::data(format!("mysql-cdc: column '{}' ({})", col.name, col.column_type), what)
}

fn decode_text(col: &MySqlColumn, b: Vec<u8>) -> String {
    match col.charset.as_deref() {
        Some("latin1") => b.iter().map(|&c| c as char).collect(),
        _ => utf8_or_lossy(b),
    }
}

/// The bytes as a String, moved when they are UTF-8 (the usual case).
fn utf8_or_lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn micros_of(h: i64, m: i64, s: i64, us: i64) -> i64 {
    ((h * 60 + m) * 60 + s) * 1_000_000 + us
}

pub(crate) fn datetime_micros(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<i64> {
    let days = days_from_civil(y as i64, mo as u32, d as u32)? as i64;
    Some(days * 86_400_000_000 + micros_of(h as i64, mi as i64, s as i64, us as i64))
}

/// Parses `HH:MM:SS[.ffffff]`, with an optional sign and more than 24 hours.
fn parse_time_text(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next()?.parse().ok()?;
    let mut us = 0i64;
    for (i, c) in frac.chars().take(6).enumerate() {
        us += c.to_digit(10)? as i64 * 10i64.pow(5 - i as u32);
    }
    let v = micros_of(h, m, sec, us);
    Some(if neg { -v } else { v })
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (zero dates give None).
fn parse_datetime_text(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ').unwrap_or((s, "00:00:00"));
    let mut it = date.split('-');
    let y: u16 = it.next()?.parse().ok()?;
    let mo: u8 = it.next()?.parse().ok()?;
    let d: u8 = it.next()?.parse().ok()?;
    let t = parse_time_text(time)?;
    Some(datetime_micros(y, mo, d, 0, 0, 0, 0)? + t)
}

/// A value of a snapshot row (the session time zone is UTC). Text values of the text protocol,
/// and those the binary protocol sends as text (DECIMAL, strings, ENUM, SET, BIT, JSON), are
/// parsed; the binary protocol's numbers and temporal values are taken as they are.
pub fn from_text(col: &MySqlColumn, v: Value) -> Result<Datum> {
    from_text_of(col, col.family(), v)
}

/// `from_text` with the column's family already known (`col.family()`).
pub(crate) fn from_text_of(col: &MySqlColumn, fam: Family, v: Value) -> Result<Datum> {
    let b = match v {
        Value::NULL => return Ok(Datum::Null),
        Value::Bytes(b) => b,
        other => return from_binary_value_of(col, fam, other),
    };
    match fam {
        // Moved, not copied.
        Family::Text | Family::Enum | Family::Set => return Ok(Datum::Str(utf8_or_lossy(b))),
        Family::Binary | Family::Bit => return Ok(Datum::Bytes(b)),
        _ => {}
    }
    let b = b.as_slice();
    let text = || std::str::from_utf8(b).map_err(|_| bad(col, "the server sent a value that is not UTF-8 text"));
    Ok(match fam {
        Family::Int | Family::Year => {
            let s = text()?;
            match s.parse::<i64>() {
                Ok(i) => Datum::Int(i),
                Err(_) => Datum::UInt(s.parse::<u64>().map_err(|_| bad(col, format!("'{s}' is not an integer")))?),
            }
        }
        Family::Decimal => {
            let s = text()?;
            Datum::Decimal(
                parse_decimal(s, col.scale as i8).ok_or_else(|| bad(col, format!("'{s}' is not a decimal")))?,
                col.scale as i8,
            )
        }
        Family::Float => Datum::Float(text()?.parse::<f32>().map_err(|_| bad(col, "not a number"))? as f64),
        Family::Double => Datum::Float(text()?.parse::<f64>().map_err(|_| bad(col, "not a number"))?),
        Family::Date => match rsql_common::builder::parse_date(text()?) {
            Some(d) => Datum::Date(d),
            None => Datum::Null,
        },
        Family::DateTime | Family::Timestamp => match parse_datetime_text(text()?) {
            Some(t) => Datum::Timestamp(t),
            None => Datum::Null,
        },
        Family::Time => Datum::Time(parse_time_text(text()?).ok_or_else(|| bad(col, "not a time"))?),
        Family::Text | Family::Enum | Family::Set => Datum::Str(String::from_utf8_lossy(b).into_owned()),
        Family::Binary | Family::Bit => Datum::Bytes(b.to_vec()),
    })
}

/// A value decoded from a binlog row image.
pub fn from_binlog(col: &MySqlColumn, v: BinlogValue<'_>) -> Result<Datum> {
    match v {
        BinlogValue::Value(v) => from_binary_value(col, v),
        BinlogValue::Jsonb(j) => {
            let json = serde_json::Value::try_from(j).map_err(|e| bad(col, format!("bad JSON value: {e}")))?;
            Ok(Datum::Str(json.to_string()))
        }
        BinlogValue::JsonDiff(_) => Err(bad(
            col,
            "the binlog holds a partial JSON update; set binlog_row_value_options='' on the server so rows are logged whole",
        )),
    }
}

fn from_binary_value(col: &MySqlColumn, v: Value) -> Result<Datum> {
    from_binary_value_of(col, col.family(), v)
}

/// `from_binary_value` with the column's family already known (`col.family()`).
pub(crate) fn from_binary_value_of(col: &MySqlColumn, fam: Family, v: Value) -> Result<Datum> {
    Ok(match v {
        Value::NULL => Datum::Null,
        Value::Int(i) => match fam {
            Family::Enum => enum_label(col, i as u64)?,
            // Without binlog_row_metadata the binlog does not say a column is unsigned, so the
            // decoder reads it signed; information_schema knows better.
            Family::Int if col.unsigned && i < 0 => match col.data_type.as_str() {
                "tinyint" => Datum::Int(i + (1 << 8)),
                "smallint" => Datum::Int(i + (1 << 16)),
                "mediumint" => Datum::Int(i + (1 << 24)),
                "int" | "integer" => Datum::Int(i + (1 << 32)),
                _ => Datum::UInt(i as u64),
            },
            // The decoder reads MEDIUMINT's minimum (0x800000) as +8388608.
            Family::Int if !col.unsigned && col.data_type == "mediumint" && i > 8_388_607 => Datum::Int(i - (1 << 24)),
            _ => Datum::Int(i),
        },
        Value::UInt(u) => match fam {
            Family::Enum => enum_label(col, u)?,
            // MySQL 8 logs signedness (binlog_row_metadata MINIMAL or FULL), so unsigned columns
            // come unsigned; the snapshot reads them as signed when they fit, and so must this.
            _ => match i64::try_from(u) {
                Ok(i) => Datum::Int(i),
                Err(_) => Datum::UInt(u),
            },
        },
        Value::Float(f) => Datum::Float(f as f64),
        Value::Double(f) => Datum::Float(f),
        Value::Date(y, mo, d, h, mi, s, us) => {
            if fam == Family::Date {
                match days_from_civil(y as i64, mo as u32, d as u32) {
                    Some(days) => Datum::Date(days),
                    None => Datum::Null,
                }
            } else {
                match datetime_micros(y, mo, d, h, mi, s, us) {
                    Some(t) => Datum::Timestamp(t),
                    None => Datum::Null,
                }
            }
        }
        Value::Time(neg, days, h, m, s, us) => {
            let v = micros_of(days as i64 * 24 + h as i64, m as i64, s as i64, us as i64);
            Datum::Time(if neg { -v } else { v })
        }
        Value::Bytes(b) => return from_bytes_of(col, fam, b),
    })
}

/// A binlog value the decoder gives as bytes, by the column's family.
pub(crate) fn from_bytes_of(col: &MySqlColumn, fam: Family, b: Vec<u8>) -> Result<Datum> {
    Ok(match fam {
        Family::Decimal => {
            let s = String::from_utf8_lossy(&b);
            Datum::Decimal(
                parse_decimal(&s, col.scale as i8).ok_or_else(|| bad(col, format!("'{s}' is not a decimal")))?,
                col.scale as i8,
            )
        }
        // TIMESTAMP(n): seconds since the epoch, optionally with `.ffffff`; zero is 0000-00-00.
        Family::Timestamp => {
            let s = String::from_utf8_lossy(&b);
            let (sec, frac) = s.split_once('.').unwrap_or((&s, ""));
            let sec: i64 = sec.parse().map_err(|_| bad(col, format!("'{s}' is not a timestamp")))?;
            let us: i64 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| bad(col, "bad fraction"))? };
            if sec == 0 && us == 0 {
                Datum::Null
            } else {
                Datum::Timestamp(sec * 1_000_000 + us)
            }
        }
        // The binlog decoder gives 1900 + the stored byte; 0 stands for the year 0000.
        Family::Year => {
            let y: i64 = String::from_utf8_lossy(&b).parse().map_err(|_| bad(col, "bad YEAR"))?;
            Datum::Int(if y == 1900 { 0 } else { y })
        }
        Family::Set => {
            let mut mask: u64 = 0;
            for (i, byte) in b.iter().enumerate().take(8) {
                mask |= (*byte as u64) << (8 * i);
            }
            let names: Vec<&str> = col
                .labels
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1u64 << i) != 0)
                .map(|(_, l)| l.as_str())
                .collect();
            Datum::Str(names.join(","))
        }
        Family::Text | Family::Enum => Datum::Str(decode_text(col, b)),
        // The binlog drops the trailing zero bytes of BINARY(n); SELECT returns them.
        Family::Binary if col.data_type == "binary" && (b.len() as u64) < col.length => {
            let mut v = b;
            v.resize(col.length as usize, 0);
            Datum::Bytes(v)
        }
        Family::Int => {
            let s = String::from_utf8_lossy(&b);
            Datum::Int(s.parse().map_err(|_| bad(col, format!("'{s}' is not an integer")))?)
        }
        _ => Datum::Bytes(b),
    })
}

fn enum_label(col: &MySqlColumn, idx: u64) -> Result<Datum> {
    if idx == 0 {
        // The "error" value MySQL stores for an invalid ENUM in non-strict mode.
        return Ok(Datum::Str(String::new()));
    }
    col.labels.get(idx as usize - 1).map(|l| Datum::Str(l.clone())).ok_or_else(|| {
        bad(col, format!("ENUM index {idx} is beyond its {} values; the table changed?", col.labels.len()))
    })
}

/// Text of a TIME value as MySQL prints it (`-838:59:59.000000`).
fn format_mysql_time(micros: i64, fsp: u32) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let secs = m / 1_000_000;
    let base = format!("{sign}{:02}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60);
    if fsp == 0 {
        base
    } else {
        let f = format!("{:06}", m % 1_000_000);
        format!("{base}.{}", &f[..fsp.min(6) as usize])
    }
}

/// Converts a natural value into what the declared column wants. `tz_offset_us` is the
/// server time zone's offset from UTC in microseconds.
pub fn to_declared(col: &MySqlColumn, natural: Datum, declared: &LogicalType, tz_offset_us: i64) -> Datum {
    to_declared_of(col, col.family(), natural, declared, tz_offset_us)
}

/// `to_declared` with the column's family already known (`col.family()`).
pub(crate) fn to_declared_of(col: &MySqlColumn, fam: Family, natural: Datum, declared: &LogicalType, tz_offset_us: i64) -> Datum {
    use FlinkType as F;
    if matches!(natural, Datum::Null) {
        return natural;
    }
    match (fam, &declared.ty, natural) {
        (Family::Timestamp, F::Timestamp(_), Datum::Timestamp(t)) => Datum::Timestamp(t + tz_offset_us),
        (Family::Timestamp, F::Char(_) | F::Varchar(_), Datum::Timestamp(t)) => {
            Datum::Str(format_timestamp(t + tz_offset_us, col.fsp as u8))
        }
        (Family::DateTime, F::TimestampLtz(_), Datum::Timestamp(t)) => Datum::Timestamp(t - tz_offset_us),
        (Family::DateTime, F::Char(_) | F::Varchar(_), Datum::Timestamp(t)) => {
            Datum::Str(format_timestamp(t, col.fsp as u8))
        }
        (Family::Date, F::TimestampLtz(_), Datum::Date(d)) => {
            Datum::Timestamp(d as i64 * 86_400_000_000 - tz_offset_us)
        }
        (Family::Date, F::Char(_) | F::Varchar(_), Datum::Date(d)) => Datum::Str(format_date(d)),
        (Family::Time, F::Char(_) | F::Varchar(_), Datum::Time(t)) => Datum::Str(format_mysql_time(t, col.fsp)),
        (Family::Decimal, F::Char(_) | F::Varchar(_), Datum::Decimal(v, s)) => Datum::Str(format_decimal(v, s)),
        (Family::Float, F::Char(_) | F::Varchar(_), Datum::Float(f)) => Datum::Str(format!("{}", f as f32)),
        (Family::Bit, F::Boolean, Datum::Bytes(b)) => Datum::Bool(b.iter().any(|x| *x != 0)),
        (Family::Bit, F::TinyInt | F::SmallInt | F::Int | F::BigInt, Datum::Bytes(b)) => {
            Datum::UInt(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64))
        }
        (_, _, d) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::tests::col;
    use super::*;

    fn bytes(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn snapshot_and_binlog_agree() {
        let mut dec = col("decimal", "decimal(10,2)");
        dec.scale = 2;
        assert_eq!(from_text(&dec, bytes("-12.30")).unwrap(), Datum::Decimal(-1230, 2));
        assert_eq!(from_binlog(&dec, BinlogValue::Value(bytes("-12.30"))).unwrap(), Datum::Decimal(-1230, 2));

        let dt = col("datetime", "datetime(6)");
        let want = Datum::Timestamp(rsql_common::builder::parse_timestamp("2024-02-29 23:59:59.123456").unwrap());
        assert_eq!(from_text(&dt, bytes("2024-02-29 23:59:59.123456")).unwrap(), want);
        assert_eq!(from_binlog(&dt, BinlogValue::Value(Value::Date(2024, 2, 29, 23, 59, 59, 123456))).unwrap(), want);
        assert_eq!(from_text(&dt, bytes("0000-00-00 00:00:00")).unwrap(), Datum::Null);

        let ts = col("timestamp", "timestamp(3)");
        let want = Datum::Timestamp(1_700_000_000_250_000);
        assert_eq!(from_binlog(&ts, BinlogValue::Value(bytes("1700000000.250000"))).unwrap(), want);
        assert_eq!(from_text(&ts, bytes("2023-11-14 22:13:20.250")).unwrap(), want);

        let d = col("date", "date");
        assert_eq!(from_text(&d, bytes("1970-01-02")).unwrap(), Datum::Date(1));
        assert_eq!(from_binlog(&d, BinlogValue::Value(Value::Date(1970, 1, 2, 0, 0, 0, 0))).unwrap(), Datum::Date(1));
        assert_eq!(from_binlog(&d, BinlogValue::Value(Value::Date(0, 0, 0, 0, 0, 0, 0))).unwrap(), Datum::Null);

        let t = col("time", "time(1)");
        assert_eq!(
            from_text(&t, bytes("-838:59:59.5")).unwrap(),
            Datum::Time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 500_000)
        );
        assert_eq!(
            from_binlog(&t, BinlogValue::Value(Value::Time(true, 34, 22, 59, 59, 500_000))).unwrap(),
            Datum::Time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 500_000)
        );

        let y = col("year", "year(4)");
        assert_eq!(from_binlog(&y, BinlogValue::Value(bytes("2155"))).unwrap(), Datum::Int(2155));
        assert_eq!(from_binlog(&y, BinlogValue::Value(bytes("1900"))).unwrap(), Datum::Int(0));
        assert_eq!(from_text(&y, bytes("2155")).unwrap(), Datum::Int(2155));

        let tu = col("tinyint", "tinyint(3) unsigned");
        assert_eq!(from_binlog(&tu, BinlogValue::Value(Value::Int(-1))).unwrap(), Datum::Int(255));
        let mu = col("mediumint", "mediumint(8) unsigned");
        assert_eq!(from_binlog(&mu, BinlogValue::Value(Value::Int(-1))).unwrap(), Datum::Int(16_777_215));
        let mi = col("mediumint", "mediumint(9)");
        assert_eq!(from_binlog(&mi, BinlogValue::Value(Value::Int(8_388_608))).unwrap(), Datum::Int(-8_388_608));
        let iu = col("int", "int(10) unsigned");
        assert_eq!(from_binlog(&iu, BinlogValue::Value(Value::Int(-2))).unwrap(), Datum::Int(4_294_967_294));
        let u = col("bigint", "bigint(20) unsigned");
        assert_eq!(from_binlog(&u, BinlogValue::Value(Value::Int(-1))).unwrap(), Datum::UInt(u64::MAX));
        assert_eq!(from_text(&u, bytes("18446744073709551615")).unwrap(), Datum::UInt(u64::MAX));
        assert_eq!(from_binlog(&u, BinlogValue::Value(Value::UInt(u64::MAX))).unwrap(), Datum::UInt(u64::MAX));

        let f = col("float", "float");
        assert_eq!(
            from_text(&f, bytes("0.1")).unwrap(),
            from_binlog(&f, BinlogValue::Value(Value::Float(0.1))).unwrap()
        );
    }

    #[test]
    fn enums_sets_bits_binary() {
        let e = col("enum", "enum('small','large')");
        assert_eq!(from_binlog(&e, BinlogValue::Value(Value::Int(2))).unwrap(), Datum::Str("large".into()));
        assert!(from_binlog(&e, BinlogValue::Value(Value::Int(3))).is_err());
        let s = col("set", "set('r','w','x')");
        assert_eq!(from_binlog(&s, BinlogValue::Value(Value::Bytes(vec![0b101]))).unwrap(), Datum::Str("r,x".into()));
        assert_eq!(from_text(&s, bytes("r,x")).unwrap(), Datum::Str("r,x".into()));
        let mut b = col("binary", "binary(4)");
        b.length = 4;
        assert_eq!(
            from_binlog(&b, BinlogValue::Value(Value::Bytes(vec![1, 2]))).unwrap(),
            Datum::Bytes(vec![1, 2, 0, 0])
        );
        let mut bit = col("bit", "bit(1)");
        bit.length = 1;
        let v = from_binlog(&bit, BinlogValue::Value(Value::Bytes(vec![1]))).unwrap();
        assert_eq!(to_declared(&bit, v, &LogicalType::nullable(FlinkType::Boolean), 0), Datum::Bool(true));
        let mut latin = col("varchar", "varchar(10)");
        latin.charset = Some("latin1".into());
        assert_eq!(from_binlog(&latin, BinlogValue::Value(Value::Bytes(vec![0xe9]))).unwrap(), Datum::Str("é".into()));
    }

    #[test]
    fn time_zones_and_text() {
        let hour = 3_600_000_000i64;
        let ts = col("timestamp", "timestamp");
        assert_eq!(
            to_declared(&ts, Datum::Timestamp(0), &LogicalType::nullable(FlinkType::Timestamp(0)), 8 * hour),
            Datum::Timestamp(8 * hour)
        );
        assert_eq!(
            to_declared(&ts, Datum::Timestamp(0), &LogicalType::nullable(FlinkType::TimestampLtz(0)), 8 * hour),
            Datum::Timestamp(0)
        );
        let dt = col("datetime", "datetime");
        assert_eq!(
            to_declared(&dt, Datum::Timestamp(8 * hour), &LogicalType::nullable(FlinkType::TimestampLtz(0)), 8 * hour),
            Datum::Timestamp(0)
        );
        let mut t = col("time", "time(2)");
        t.fsp = 2;
        assert_eq!(
            to_declared(&t, Datum::Time(-1_500_000), &LogicalType::nullable(FlinkType::Varchar(20)), 0),
            Datum::Str("-00:00:01.50".into())
        );
    }
}
