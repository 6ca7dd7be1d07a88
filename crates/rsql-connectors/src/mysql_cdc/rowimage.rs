//! Decodes the row images of binlog rows events straight into natural values, for tables whose
//! columns all have a common type: integers, FLOAT/DOUBLE, DECIMAL (up to 38 digits), CHAR /
//! VARCHAR / TEXT / BLOB, DATE, DATETIME(n), TIMESTAMP(n), YEAR, ENUM, SET and BIT (TIME(n),
//! JSON and the pre-5.6 temporal types only when the source does not read the column).
//!
//! The generic driver decoder describes every column of every row anew and turns DECIMAL,
//! TIMESTAMP and YEAR values into text that would then be parsed back; here the layout of a
//! table is worked out once per table map (`RowPlan`) and each value is read from the bytes
//! once. Values are converted by the same functions as the driver's (`decode`), so both paths
//! give the same natural values; a table with another column type has no plan and is decoded
//! by the driver.

use mysql_async::binlog::events::TableMapEvent;
use mysql_async::consts::ColumnType;
use mysql_async::Value;
use rsql_common::builder::Datum;
use rsql_common::{Result, RsqlError};

use super::decode::{from_binary_value_of, from_bytes_of};
use super::schema::{Family, TableSchema};

/// How one column's value is stored in a row image.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// A little-endian integer of 1, 2, 3, 4 or 8 bytes.
    Int(usize),
    Float,
    Double,
    /// MySQL's binary DECIMAL with this many integer and fraction digits.
    Decimal { intg: usize, frac: usize },
    /// Bytes after a little-endian length of this many bytes (VARCHAR, CHAR, BLOB, TEXT).
    Prefixed(usize),
    /// DATE: 3 bytes.
    Date,
    /// DATETIME2 with this many fractional digits.
    DateTime2(u8),
    /// TIMESTAMP2 with this many fractional digits.
    Timestamp2(u8),
    Year,
    /// ENUM index of 1 or 2 bytes.
    Enum(usize),
    /// SET bit mask or BIT value of this many bytes.
    Bits(usize),
    /// Skipped, never decoded: this many bytes.
    Skip(usize),
    /// Skipped, never decoded: JSON (a 4-byte length and the document).
    SkipJson,
}

/// How to read the row images of one table map.
#[derive(Debug)]
pub(crate) struct RowPlan {
    columns: Vec<(Layout, Family, bool)>,
}

/// Bytes of the leftover digits of a DECIMAL digit group.
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

fn decimal_len(intg: usize, frac: usize) -> usize {
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (frac / 9) * 4 + DIG2BYTES[frac % 9]
}

impl RowPlan {
    /// The plan of a table map, or None when a column the source reads (`needed`) has a type
    /// this decoder leaves to the driver, or the map disagrees with the table's columns.
    pub(crate) fn new(tme: &TableMapEvent<'_>, schema: &TableSchema, needed: &[bool]) -> Option<RowPlan> {
        use ColumnType::*;
        let n = tme.columns_count() as usize;
        if n != schema.columns.len() || needed.len() != n {
            return None;
        }
        let mut columns = Vec::with_capacity(n);
        for (i, col) in schema.columns.iter().enumerate() {
            let ty = tme.get_column_type(i).ok()??;
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let m = |k: usize| meta.get(k).copied().map(usize::from);
            let fam = col.family();
            let layout = match ty {
                MYSQL_TYPE_TINY => Layout::Int(1),
                MYSQL_TYPE_SHORT => Layout::Int(2),
                MYSQL_TYPE_INT24 => Layout::Int(3),
                MYSQL_TYPE_LONG => Layout::Int(4),
                MYSQL_TYPE_LONGLONG => Layout::Int(8),
                MYSQL_TYPE_FLOAT => Layout::Float,
                MYSQL_TYPE_DOUBLE => Layout::Double,
                MYSQL_TYPE_NEWDECIMAL => {
                    let (precision, scale) = (m(0)?, m(1)?);
                    if scale > precision {
                        return None;
                    }
                    Layout::Decimal { intg: precision - scale, frac: scale }
                }
                MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
                    let max = m(0)? | (m(1)? << 8);
                    Layout::Prefixed(if max < 256 { 1 } else { 2 })
                }
                MYSQL_TYPE_STRING => {
                    let (b0, b1) = (m(0)?, m(1)?);
                    let max = if b0 & 0x30 != 0x30 { b1 | (((b0 & 0x30) ^ 0x30) << 4) } else { b1 };
                    Layout::Prefixed(if max < 256 { 1 } else { 2 })
                }
                MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB
                | MYSQL_TYPE_GEOMETRY => match m(0)? {
                    w @ 1..=4 => Layout::Prefixed(w),
                    _ => return None,
                },
                MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE => Layout::Date,
                MYSQL_TYPE_DATETIME2 => Layout::DateTime2(*meta.first()?),
                MYSQL_TYPE_TIMESTAMP2 => Layout::Timestamp2(*meta.first()?),
                MYSQL_TYPE_YEAR => Layout::Year,
                MYSQL_TYPE_ENUM => match m(1)? {
                    w @ 1..=2 => Layout::Enum(w),
                    _ => return None,
                },
                MYSQL_TYPE_SET => Layout::Bits(m(1)?),
                MYSQL_TYPE_BIT => Layout::Bits((m(1)? * 8 + m(0)?).div_ceil(8)),
                MYSQL_TYPE_TIME2 => Layout::Skip(3 + (m(0)? + 1) / 2),
                MYSQL_TYPE_TIMESTAMP => Layout::Skip(4),
                MYSQL_TYPE_DATETIME => Layout::Skip(8),
                MYSQL_TYPE_TIME => Layout::Skip(3),
                MYSQL_TYPE_JSON => Layout::SkipJson,
                _ => return None,
            };
            // Only the combinations whose conversion is exactly the driver path's.
            let decodable = match layout {
                Layout::Int(_) => fam == Family::Int,
                Layout::Decimal { intg, frac } => {
                    fam == Family::Decimal && intg + frac <= 38 && frac == col.scale as usize
                }
                Layout::Timestamp2(_) => fam == Family::Timestamp,
                Layout::DateTime2(_) => fam == Family::DateTime,
                Layout::Date => fam == Family::Date,
                Layout::Year => fam == Family::Year,
                Layout::Enum(_) => fam == Family::Enum,
                Layout::Bits(_) => matches!(fam, Family::Set | Family::Bit),
                Layout::Prefixed(_) => matches!(fam, Family::Text | Family::Binary),
                Layout::Float | Layout::Double => true,
                Layout::Skip(_) | Layout::SkipJson => false,
            };
            if needed[i] && !decodable {
                return None;
            }
            columns.push((layout, fam, needed[i]));
        }
        Some(RowPlan { columns })
    }

    /// Decodes one row image (NULL bitmap, then the values of every column) from the front of
    /// `data`, leaving the rest. Columns not needed read as NULL.
    pub(crate) fn decode(&self, schema: &TableSchema, data: &mut &[u8]) -> Result<Vec<Datum>> {
        let n = self.columns.len();
        let nulls = take(data, n.div_ceil(8), schema)?;
        let mut row = Vec::with_capacity(n);
        for (i, ((layout, fam, needed), col)) in self.columns.iter().zip(&schema.columns).enumerate() {
            if nulls[i / 8] & (1 << (i % 8)) != 0 {
                row.push(Datum::Null);
                continue;
            }
            if !*needed {
                skip(*layout, data, schema)?;
                row.push(Datum::Null);
                continue;
            }
            let v = match *layout {
                Layout::Int(w) => {
                    let b = take(data, w, schema)?;
                    let mut raw = [0u8; 8];
                    raw[..w].copy_from_slice(b);
                    let u = u64::from_le_bytes(raw);
                    if col.unsigned {
                        match i64::try_from(u) {
                            Ok(i) => Datum::Int(i),
                            Err(_) => Datum::UInt(u),
                        }
                    } else {
                        // Sign-extend from the stored width.
                        let shift = 64 - 8 * w as u32;
                        Datum::Int(((u << shift) as i64) >> shift)
                    }
                }
                Layout::Float => {
                    let b = take(data, 4, schema)?;
                    Datum::Float(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                }
                Layout::Double => {
                    let b = take(data, 8, schema)?;
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(b);
                    Datum::Float(f64::from_le_bytes(raw))
                }
                Layout::Decimal { intg, frac } => {
                    let b = take(data, decimal_len(intg, frac), schema)?;
                    Datum::Decimal(read_decimal(b, intg, frac), frac as i8)
                }
                Layout::Prefixed(w) => {
                    let len = le(take(data, w, schema)?) as usize;
                    from_bytes_of(col, *fam, take(data, len, schema)?.to_vec())?
                }
                Layout::Date => {
                    let v = le(take(data, 3, schema)?);
                    let (y, m, d) = ((v >> 9) as u16, ((v >> 5) & 15) as u8, (v & 31) as u8);
                    from_binary_value_of(col, *fam, Value::Date(y, m, d, 0, 0, 0, 0))?
                }
                Layout::DateTime2(dec) => {
                    let int_part = be(take(data, 5, schema)?) as i64 - 0x80_0000_0000;
                    let frac = match dec {
                        1 | 2 => take(data, 1, schema)?[0] as i8 as i64 * 10_000,
                        3 | 4 => be(take(data, 2, schema)?) as u16 as i16 as i64 * 100,
                        5 | 6 => sign_extend_24(be(take(data, 3, schema)?)),
                        _ => 0,
                    };
                    let packed = ((int_part << 24) + frac).abs();
                    let us = packed % (1 << 24);
                    let ymdhms = packed >> 24;
                    let (ymd, hms) = (ymdhms >> 17, ymdhms % (1 << 17));
                    let ym = ymd >> 5;
                    let value = Value::Date(
                        (ym / 13) as u16,
                        (ym % 13) as u8,
                        (ymd % 32) as u8,
                        (hms >> 12) as u8,
                        ((hms >> 6) % 64) as u8,
                        (hms % 64) as u8,
                        us as u32,
                    );
                    from_binary_value_of(col, *fam, value)?
                }
                Layout::Timestamp2(dec) => {
                    let secs = be(take(data, 4, schema)?) as u32 as i32 as i64;
                    let us = match dec {
                        1 | 2 => take(data, 1, schema)?[0] as i8 as i64 * 10_000,
                        3 | 4 => be(take(data, 2, schema)?) as u16 as i16 as i64 * 100,
                        5 | 6 => sign_extend_24(be(take(data, 3, schema)?)),
                        _ => 0,
                    };
                    // Zero is '0000-00-00 00:00:00'.
                    if secs == 0 && us == 0 {
                        Datum::Null
                    } else {
                        Datum::Timestamp(secs * 1_000_000 + us)
                    }
                }
                Layout::Year => {
                    let y = take(data, 1, schema)?[0] as i64;
                    Datum::Int(if y == 0 { 0 } else { 1900 + y })
                }
                Layout::Enum(w) => {
                    let idx = le(take(data, w, schema)?) as i64;
                    from_binary_value_of(col, *fam, Value::Int(idx))?
                }
                Layout::Bits(w) => {
                    from_bytes_of(col, *fam, take(data, w, schema)?.to_vec())?
                }
                Layout::Skip(_) | Layout::SkipJson => {
                    skip(*layout, data, schema)?;
                    Datum::Null
                }
            };
            row.push(v);
        }
        Ok(row)
    }
}

/// Steps over one non-NULL value.
fn skip(layout: Layout, data: &mut &[u8], schema: &TableSchema) -> Result<()> {
    let n = match layout {
        Layout::Int(w) | Layout::Enum(w) | Layout::Bits(w) | Layout::Skip(w) => w,
        Layout::Float => 4,
        Layout::Double => 8,
        Layout::Decimal { intg, frac } => decimal_len(intg, frac),
        Layout::Prefixed(w) => le(take(data, w, schema)?) as usize,
        Layout::SkipJson => le(take(data, 4, schema)?) as usize,
        Layout::Date => 3,
        Layout::DateTime2(dec) => 5 + (dec as usize + 1) / 2,
        Layout::Timestamp2(dec) => 4 + (dec as usize + 1) / 2,
        Layout::Year => 1,
    };
    take(data, n, schema).map(|_| ())
}

/// The next `n` bytes of `data`.
fn take<'a>(data: &mut &'a [u8], n: usize, schema: &TableSchema) -> Result<&'a [u8]> {
    if data.len() < n {
        return Err(RsqlError::data(
            format!("mysql-cdc table {}", schema.qualified()),
            "a binlog row image ends inside a value; the table's definition may have changed while it was captured: restart the job with a new snapshot",
        ));
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

fn sign_extend_24(v: u64) -> i64 {
    ((v << 40) as i64) >> 40
}

/// The unscaled value of a binary DECIMAL: the integer digits, then the fraction digits, in
/// groups of nine (four big-endian bytes) with the leftover digits of the integer part first
/// and of the fraction part last in fewer bytes; the sign bit of the first byte is flipped,
/// and every byte is inverted for a negative value.
fn read_decimal(b: &[u8], intg: usize, frac: usize) -> i128 {
    let neg = b.first().is_some_and(|x| x & 0x80 == 0);
    let byte = |i: usize| -> u8 {
        let x = if i == 0 { b[0] ^ 0x80 } else { b[i] };
        if neg {
            !x
        } else {
            x
        }
    };
    let mut at = 0usize;
    let mut group = |len: usize| -> i128 {
        let v = (at..at + len).fold(0i128, |acc, i| (acc << 8) | byte(i) as i128);
        at += len;
        v
    };
    let mut v: i128 = 0;
    let lead = intg % 9;
    if lead > 0 {
        v = group(DIG2BYTES[lead]);
    }
    for _ in 0..intg / 9 {
        v = v.wrapping_mul(1_000_000_000).wrapping_add(group(4));
    }
    for _ in 0..frac / 9 {
        v = v.wrapping_mul(1_000_000_000).wrapping_add(group(4));
    }
    // Wrapping: damaged bytes give a wrong value, never a panic (at most 38 digits fit).
    let tail = frac % 9;
    if tail > 0 {
        v = v.wrapping_mul(10i128.pow(tail as u32)).wrapping_add(group(DIG2BYTES[tail]));
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_layouts() {
        assert_eq!(decimal_len(8, 2), 5);
        assert_eq!(decimal_len(14, 6), 10);
        assert_eq!(decimal_len(9, 0), 4);
        // DECIMAL(14,4) 1234567890.1234: leftover digit '1' (1 byte), 234567890 (4 bytes),
        // fraction 1234 (2 bytes); the sign bit set for a positive value.
        let mut b = vec![0x01];
        b.extend_from_slice(&234_567_890u32.to_be_bytes());
        b.extend_from_slice(&1234u16.to_be_bytes());
        b[0] ^= 0x80;
        assert_eq!(read_decimal(&b, 10, 4), 12_345_678_901_234);
        let neg: Vec<u8> = b.iter().map(|x| !x).collect();
        assert_eq!(read_decimal(&neg, 10, 4), -12_345_678_901_234);
    }

    #[test]
    fn truncated_images_are_errors() {
        let schema = super::super::schema::tests::int_key_table();
        let plan = RowPlan { columns: vec![(Layout::Int(4), Family::Int, true)] };
        let mut data: &[u8] = &[0, 1, 0, 0, 0, 0, 7];
        assert_eq!(plan.decode(&schema, &mut data).unwrap(), vec![Datum::Int(1)]);
        assert_eq!(data, &[0, 7]);
        let e = plan.decode(&schema, &mut data).unwrap_err().to_string();
        assert!(e.contains("d.t") && e.contains("ends inside a value"), "{e}");
    }
}
