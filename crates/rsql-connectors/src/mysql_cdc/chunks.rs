//! The key order of snapshot chunks. A table is read in chunks of its primary key (one column
//! or several, of any type MySQL can index), and binlog changes during a chunk are sorted into
//! "already emitted", "in this chunk" and "later" by comparing their key with the chunk's
//! bounds exactly as the server orders them.
//!
//! Numbers, dates and times compare by value and binary strings by bytes. Text compares by its
//! collation, which may fold case, accents and trailing spaces: the server computes the sort
//! weight (`WEIGHT_STRING`) of each text key value, for chunk rows in the chunk query itself
//! and for binlog keys in one query per transaction, so the order is the server's own.

use std::cmp::Ordering;

use mysql_async::Value;
use rsql_common::builder::{format_date, format_decimal, format_timestamp, Datum};

use super::schema::{quote_ident, quote_str, Family, MySqlColumn, TableSchema};

/// One key column's value in the server's order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KeyPart {
    Null,
    Num(i128),
    /// A float by the bits of its total order.
    Float(i64),
    /// Bytes of a binary string, or the collation weight of a text value.
    Bytes(Vec<u8>),
}

/// A primary key in the server's order.
pub(crate) type SortKey = Vec<KeyPart>;

/// Whether a key column's order needs the server's collation weights (ENUM and SET order by
/// their numbers instead).
pub(crate) fn is_collated(col: &MySqlColumn) -> bool {
    col.family() == Family::Text && col.charset.is_some()
}

/// The number MySQL orders an ENUM (1-based index) or SET (bit mask) value by.
fn enum_or_set_number(col: &MySqlColumn, label: &str) -> Option<u64> {
    match col.family() {
        Family::Enum => col.labels.iter().position(|l| l == label).map(|i| i as u64 + 1).or(Some(0)),
        Family::Set => Some(
            label
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| col.labels.iter().position(|l| l == p))
                .fold(0u64, |m, i| m | (1u64 << i.min(63))),
        ),
        _ => None,
    }
}

/// A key part from a natural value; `weight` is the server's weight of a collated text value.
pub(crate) fn key_part(v: &Datum, weight: Option<&[u8]>) -> KeyPart {
    if let Some(w) = weight {
        return KeyPart::Bytes(w.to_vec());
    }
    match v {
        Datum::Null => KeyPart::Null,
        Datum::Bool(b) => KeyPart::Num(*b as i128),
        Datum::Int(i) => KeyPart::Num(*i as i128),
        Datum::UInt(u) => KeyPart::Num(*u as i128),
        Datum::Decimal(d, _) => KeyPart::Num(*d),
        Datum::Date(d) => KeyPart::Num(*d as i128),
        Datum::Time(t) | Datum::Timestamp(t) => KeyPart::Num(*t as i128),
        Datum::Float(f) => {
            let b = f.to_bits() as i64;
            KeyPart::Float(b ^ (((b >> 63) as u64) >> 1) as i64)
        }
        Datum::Str(s) => KeyPart::Bytes(s.as_bytes().to_vec()),
        Datum::Bytes(b) => KeyPart::Bytes(b.clone()),
        // MySQL key columns are never ARRAY, MAP or ROW.
        Datum::Nested(n) => KeyPart::Bytes(format!("{n:?}").into_bytes()),
    }
}

/// The value of a key column as an SQL expression of the column's type (and, for text, its
/// character set and collation), for chunk conditions and weight queries.
pub(crate) fn literal(col: &MySqlColumn, v: &Datum) -> String {
    if let Datum::Str(label) = v {
        if let Some(n) = enum_or_set_number(col, label) {
            return n.to_string();
        }
    }
    let hex = |b: &[u8]| -> String { b.iter().map(|x| format!("{x:02X}")).collect() };
    match v {
        Datum::Null => "NULL".into(),
        Datum::Bool(b) => (*b as i32).to_string(),
        Datum::Int(i) => i.to_string(),
        Datum::UInt(u) => u.to_string(),
        Datum::Decimal(d, s) => format_decimal(*d, *s),
        Datum::Float(f) => format!("{f:e}"),
        Datum::Date(d) => quote_str(&format_date(*d)),
        Datum::Timestamp(t) => quote_str(&format_timestamp(*t, 6)),
        Datum::Time(t) => {
            let sign = if *t < 0 { "-" } else { "" };
            let m = t.unsigned_abs();
            let s = m / 1_000_000;
            quote_str(&format!("{sign}{}:{:02}:{:02}.{:06}", s / 3600, (s / 60) % 60, s % 60, m % 1_000_000))
        }
        Datum::Str(s) => {
            let bytes: Vec<u8> = match col.charset.as_deref() {
                Some("latin1") => s.chars().map(|c| c as u32 as u8).collect(),
                _ => s.as_bytes().to_vec(),
            };
            let cs = col.charset.as_deref().unwrap_or("utf8mb4");
            match &col.collation {
                Some(coll) => format!("CONVERT(X'{}' USING {cs}) COLLATE {coll}", hex(&bytes)),
                None => format!("CONVERT(X'{}' USING {cs})", hex(&bytes)),
            }
        }
        Datum::Bytes(b) => format!("X'{}'", hex(b)),
        // MySQL key columns are never ARRAY, MAP or ROW.
        Datum::Nested(_) => "NULL".into(),
    }
}

/// `WHERE` condition for keys after `after` (in key column order): `k1 > v1 OR (k1 = v1 AND
/// k2 > v2) ...`, which both MySQL and MariaDB read as an index range.
pub(crate) fn after_condition(schema: &TableSchema, after: &[Datum]) -> String {
    let values: Vec<String> =
        schema.primary_key.iter().zip(after).map(|(i, v)| literal(&schema.columns[*i], v)).collect();
    range_terms(schema, &values)
}

/// `after_condition` with `?` in place of the key values, and the values in the order of the
/// `?`s, when every key column is an integer: the statement text is then the same for every
/// chunk, so the server prepares it once. None for other keys.
pub(crate) fn after_condition_params(schema: &TableSchema, after: &[Datum]) -> Option<(String, Vec<Value>)> {
    let mut values = Vec::with_capacity(after.len());
    for (i, v) in schema.primary_key.iter().zip(after) {
        if schema.columns[*i].family() != Family::Int {
            return None;
        }
        values.push(match v {
            Datum::Int(x) => Value::Int(*x),
            Datum::UInt(x) => Value::UInt(*x),
            _ => return None,
        });
    }
    let marks = vec!["?".to_string(); values.len()];
    let params = (0..values.len()).flat_map(|n| values[..=n].iter().cloned()).collect();
    Some((range_terms(schema, &marks), params))
}

/// `(k1 > v1) OR (k1 = v1 AND k2 > v2) ...` over the key columns with the given value texts.
fn range_terms(schema: &TableSchema, values: &[String]) -> String {
    let names: Vec<String> = schema.primary_key.iter().map(|i| quote_ident(&schema.columns[*i].name)).collect();
    let n = names.len().min(values.len());
    (0..n)
        .map(|last| {
            let mut t: Vec<String> = (0..last).map(|j| format!("{} = {}", names[j], values[j])).collect();
            t.push(format!("{} > {}", names[last], values[last]));
            format!("({})", t.join(" AND "))
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The key columns in order, for `ORDER BY`.
pub(crate) fn order_by(schema: &TableSchema) -> String {
    schema.primary_key.iter().map(|i| quote_ident(&schema.columns[*i].name)).collect::<Vec<_>>().join(", ")
}

/// The extra select items giving the weights of the collated key columns, in key order.
pub(crate) fn weight_columns(schema: &TableSchema) -> Vec<String> {
    schema
        .primary_key
        .iter()
        .filter(|i| is_collated(&schema.columns[**i]))
        .map(|i| format!("WEIGHT_STRING({})", quote_ident(&schema.columns[*i].name)))
        .collect()
}

/// A key's sort key from its natural row and the weights of its collated columns (in key order).
pub(crate) fn sort_key(schema: &TableSchema, row: &[Datum], weights: &[Vec<u8>]) -> SortKey {
    let mut w = weights.iter();
    schema
        .primary_key
        .iter()
        .map(|i| {
            let col = &schema.columns[*i];
            let v = row.get(*i).unwrap_or(&Datum::Null);
            if let Datum::Str(label) = v {
                if let Some(n) = enum_or_set_number(col, label) {
                    return KeyPart::Num(n as i128);
                }
            }
            if is_collated(col) && !matches!(v, Datum::Null) {
                key_part(v, w.next().map(Vec::as_slice))
            } else {
                key_part(v, None)
            }
        })
        .collect()
}

pub(crate) fn compare(a: &SortKey, b: &SortKey) -> Ordering {
    a.cmp(b)
}

#[cfg(test)]
mod tests {
    use super::super::schema::tests::col;
    use super::*;

    fn schema() -> TableSchema {
        let mut name = col("varchar", "varchar(20)");
        name.name = "name".into();
        name.collation = Some("utf8mb4_general_ci".into());
        let mut n = col("int", "int(11)");
        n.name = "n".into();
        TableSchema { database: "d".into(), table: "t".into(), columns: vec![name, n], primary_key: vec![0, 1], estimated_rows: 0 }
    }

    #[test]
    fn conditions_and_literals() {
        let s = schema();
        let c = after_condition(&s, &[Datum::Str("it's".into()), Datum::Int(7)]);
        assert_eq!(
            c,
            "(`name` > CONVERT(X'69742773' USING utf8mb4) COLLATE utf8mb4_general_ci) OR \
             (`name` = CONVERT(X'69742773' USING utf8mb4) COLLATE utf8mb4_general_ci AND `n` > 7)"
        );
        assert_eq!(order_by(&s), "`name`, `n`");
        assert_eq!(after_condition_params(&s, &[Datum::Str("a".into()), Datum::Int(7)]), None);
        let mut a = col("int", "int(11)");
        a.name = "a".into();
        let mut b = col("bigint", "bigint(20)");
        b.name = "b".into();
        let ints = TableSchema { columns: vec![a, b], ..s.clone() };
        assert_eq!(
            after_condition_params(&ints, &[Datum::Int(3), Datum::Int(-9)]),
            Some((
                "(`a` > ?) OR (`a` = ? AND `b` > ?)".to_string(),
                vec![Value::Int(3), Value::Int(3), Value::Int(-9)]
            ))
        );
        assert_eq!(after_condition(&ints, &[Datum::Int(3), Datum::Int(-9)]), "(`a` > 3) OR (`a` = 3 AND `b` > -9)");
        assert_eq!(weight_columns(&s), vec!["WEIGHT_STRING(`name`)"]);
        let d = col("date", "date");
        assert_eq!(literal(&d, &Datum::Date(1)), "'1970-01-02'");
        assert_eq!(literal(&d, &Datum::Bytes(vec![0, 255])), "X'00FF'");
    }

    #[test]
    fn sort_keys_follow_weights_and_values() {
        let s = schema();
        let a = sort_key(&s, &[Datum::Str("B".into()), Datum::Int(2)], &[vec![0x42]]);
        let b = sort_key(&s, &[Datum::Str("b".into()), Datum::Int(10)], &[vec![0x42]]);
        let c = sort_key(&s, &[Datum::Str("a".into()), Datum::Int(99)], &[vec![0x41]]);
        assert_eq!(compare(&a, &b), Ordering::Less, "same weight: the second column decides");
        assert_eq!(compare(&c, &a), Ordering::Less);
        let f = |x: f64| key_part(&Datum::Float(x), None);
        assert!(f(-2.0) < f(-1.0) && f(-1.0) < f(0.0) && f(0.0) < f(1.5));
        assert!(key_part(&Datum::UInt(u64::MAX), None) > key_part(&Datum::Int(-1), None));

        let e = col("enum", "enum('z','a')");
        assert_eq!(literal(&e, &Datum::Str("a".into())), "2");
        let st = col("set", "set('r','w','x')");
        assert_eq!(literal(&st, &Datum::Str("r,x".into())), "5");
        assert!(!is_collated(&e) && !is_collated(&st));
    }
}
