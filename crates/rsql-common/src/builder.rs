//! Builds Arrow columns of a Flink type from dynamic values, for connectors that decode rows one
//! at a time (JSON, CSV, binlog rows, datagen). Values are converted to the column's type with
//! Flink's rules; a value that cannot be converted is an error naming the column.

use std::sync::Arc;

use datafusion_common::arrow::array::*;
use datafusion_common::arrow::buffer::NullBuffer;
use datafusion_common::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{Result, RsqlError};
use crate::types::{FlinkType, LogicalType};

/// A dynamically typed value on its way into a column.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    Null,
    Bool(bool),
    Int(i64),
    /// Unsigned values that may not fit i64 (BIGINT UNSIGNED).
    UInt(u64),
    Float(f64),
    /// Unscaled value and scale (e.g. 1234, 2 = 12.34).
    Decimal(i128, i8),
    Str(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 1970-01-01 00:00:00 (local wall clock for TIMESTAMP, UTC for LTZ).
    Timestamp(i64),
    /// An ARRAY, MAP or ROW value.
    Nested(Box<Nested>),
}

/// The value of an ARRAY, MAP or ROW column; its parts are values of the element, key, value
/// and field types.
#[derive(Clone, Debug, PartialEq)]
pub enum Nested {
    /// ARRAY elements in order.
    List(Vec<Datum>),
    /// MAP entries in order.
    Map(Vec<(Datum, Datum)>),
    /// ROW fields in declared order.
    Row(Vec<Datum>),
}

impl Datum {
    pub fn list(items: Vec<Datum>) -> Datum {
        Datum::Nested(Box::new(Nested::List(items)))
    }
    pub fn map(entries: Vec<(Datum, Datum)>) -> Datum {
        Datum::Nested(Box::new(Nested::Map(entries)))
    }
    pub fn row(fields: Vec<Datum>) -> Datum {
        Datum::Nested(Box::new(Nested::Row(fields)))
    }
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i32> {
    chrono::NaiveDate::from_ymd_opt(y as i32, m, d).map(|dt| {
        (dt - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
    })
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<i32> {
    let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    Some((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

/// Parses `HH:MM:SS[.fff]` into microseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let t = chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f").ok()?;
    use chrono::Timelike;
    Some(t.num_seconds_from_midnight() as i64 * 1_000_000 + (t.nanosecond() / 1000) as i64)
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fff]`, `YYYY-MM-DDTHH:MM:SS[.fff][Z]` into microseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix('Z').unwrap_or(s);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    parse_date(s).map(|d| d as i64 * 86_400_000_000)
}

/// Parses a decimal literal into an unscaled i128 at `scale`, rounding half up.
pub fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let scale = scale.max(0) as usize;
    let mut v: i128 = 0;
    for c in int.chars() {
        v = v.checked_mul(10)?.checked_add((c as u8 - b'0') as i128)?;
    }
    let fb = frac.as_bytes();
    for i in 0..scale {
        let d = fb.get(i).map(|b| (b - b'0') as i128).unwrap_or(0);
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    if fb.get(scale).map(|b| *b >= b'5').unwrap_or(false) {
        v = v.checked_add(1)?;
    }
    Some(if neg { -v } else { v })
}

/// Rescales an unscaled decimal from one scale to another (rounding half up).
pub fn rescale(v: i128, from: i8, to: i8) -> Option<i128> {
    if from == to {
        return Some(v);
    }
    if to > from {
        v.checked_mul(10i128.checked_pow((to - from) as u32)?)
    } else {
        let div = 10i128.checked_pow((from - to) as u32)?;
        let q = v / div;
        let r = (v % div).abs();
        Some(if r * 2 >= div { if v < 0 { q - 1 } else { q + 1 } } else { q })
    }
}

/// Formats an unscaled decimal.
pub fn format_decimal(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return v.to_string();
    }
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = if digits.len() <= scale { format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits) } else { digits };
    let (a, b) = padded.split_at(padded.len() - scale);
    format!("{}{}.{}", if neg { "-" } else { "" }, a, b)
}

/// Formats microseconds since the epoch as `YYYY-MM-DD HH:MM:SS[.ffffff]` trimmed to `precision`.
pub fn format_timestamp(micros: i64, precision: u8) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let dt = chrono::DateTime::from_timestamp(secs, (frac * 1000) as u32).map(|d| d.naive_utc());
    match dt {
        Some(d) => {
            let base = d.format("%Y-%m-%d %H:%M:%S").to_string();
            fraction(base, frac, precision)
        }
        None => micros.to_string(),
    }
}

pub fn format_time(micros: i64, precision: u8) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let base = format!("{:02}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60);
    fraction(base, frac, precision)
}

fn fraction(base: String, frac: i64, precision: u8) -> String {
    let p = precision.min(6) as usize;
    if p == 0 {
        return base;
    }
    let f = format!("{:06}", frac);
    format!("{}.{}", base, &f[..p])
}

pub fn format_date(days: i32) -> String {
    match chrono::NaiveDate::from_ymd_opt(1970, 1, 1).and_then(|e| e.checked_add_signed(chrono::Duration::days(days as i64))) {
        Some(d) => d.format("%Y-%m-%d").to_string(),
        None => days.to_string(),
    }
}

/// One column under construction.
pub struct ColumnBuilder {
    pub name: String,
    pub ty: LogicalType,
    inner: Box<dyn ArrayBuilder>,
}

impl ColumnBuilder {
    pub fn new(name: &str, ty: &LogicalType, capacity: usize) -> Result<Self> {
        let dt = ty.to_arrow();
        let inner: Box<dyn ArrayBuilder> = match &ty.ty {
            FlinkType::Decimal(p, s) => Box::new(Decimal128Builder::with_capacity(capacity).with_data_type(DataType::Decimal128(*p, *s))),
            FlinkType::TimestampLtz(_) => Box::new(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC")),
            FlinkType::Array(_) | FlinkType::Map(..) | FlinkType::Row(_) => Box::new(NestedBuilder::new(name, ty, dt, capacity)?),
            _ => make_builder(&dt, capacity),
        };
        Ok(ColumnBuilder { name: name.to_string(), ty: ty.clone(), inner })
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }

    /// The Arrow builder underneath, for decoders that append already-typed values on a hot
    /// path (`T` must be the builder of the column's Arrow type; None otherwise). Values that
    /// need converting or checking (NULLs, other types) still go through [`Self::append`].
    pub fn arrow_builder<T: ArrayBuilder>(&mut self) -> Option<&mut T> {
        self.inner.as_any_mut().downcast_mut::<T>()
    }

    fn err(&self, d: &Datum) -> RsqlError {
        RsqlError::data(format!("column '{}'", self.name), format!("cannot store {:?} in a column of type {}", d, self.ty))
    }

    pub fn append_null(&mut self) -> Result<()> {
        self.append(Datum::Null)
    }

    /// Appends a value, converting it to the column's type.
    pub fn append(&mut self, d: Datum) -> Result<()> {
        macro_rules! b {
            ($t:ty) => {
                self.inner.as_any_mut().downcast_mut::<$t>().ok_or_else(|| RsqlError::execution("builder type mismatch"))?
            };
        }
        if matches!(d, Datum::Null) {
            if !self.ty.nullable {
                return Err(RsqlError::data(
                    format!("column '{}'", self.name),
                    format!("NULL in a column declared {}; declare the column without NOT NULL or filter the NULLs out", self.ty),
                ));
            }
            append_null_any(self.inner.as_mut(), &self.ty.ty);
            return Ok(());
        }
        // By reference: cloning the type per value costs a copy (and, for nested types, heap
        // allocations) on the hottest path of every decoding connector.
        match &self.ty.ty {
            FlinkType::Boolean => {
                let v = match &d {
                    Datum::Bool(b) => *b,
                    Datum::Int(i) => *i != 0,
                    Datum::UInt(i) => *i != 0,
                    Datum::Str(s) => match s.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(self.err(&d)),
                    },
                    _ => return Err(self.err(&d)),
                };
                b!(BooleanBuilder).append_value(v)
            }
            FlinkType::TinyInt => {
                let v = self.to_i64(&d)?;
                let v = i8::try_from(v).map_err(|_| self.overflow(v))?;
                b!(Int8Builder).append_value(v)
            }
            FlinkType::SmallInt => {
                let v = self.to_i64(&d)?;
                let v = i16::try_from(v).map_err(|_| self.overflow(v))?;
                b!(Int16Builder).append_value(v)
            }
            FlinkType::Int => {
                let v = self.to_i64(&d)?;
                let v = i32::try_from(v).map_err(|_| self.overflow(v))?;
                b!(Int32Builder).append_value(v)
            }
            FlinkType::BigInt => {
                let v = self.to_i64(&d)?;
                b!(Int64Builder).append_value(v)
            }
            FlinkType::Float => {
                let v = self.to_f64(&d)?;
                b!(Float32Builder).append_value(v as f32)
            }
            FlinkType::Double => {
                let v = self.to_f64(&d)?;
                b!(Float64Builder).append_value(v)
            }
            &FlinkType::Decimal(p, s) => {
                let v = match &d {
                    Datum::Decimal(v, sc) => rescale(*v, *sc, s),
                    Datum::Int(i) => rescale(*i as i128, 0, s),
                    Datum::UInt(i) => rescale(*i as i128, 0, s),
                    Datum::Float(f) => parse_decimal(&format!("{f}"), s),
                    Datum::Str(t) => parse_decimal(t, s),
                    _ => None,
                }
                .ok_or_else(|| self.err(&d))?;
                if v.unsigned_abs() >= 10u128.pow(p as u32) {
                    // Flink turns a decimal that overflows its precision into NULL.
                    if self.ty.nullable {
                        b!(Decimal128Builder).append_null();
                        return Ok(());
                    }
                    return Err(self.err(&d));
                }
                b!(Decimal128Builder).append_value(v)
            }
            FlinkType::Char(_) | FlinkType::Varchar(_) => {
                let s = match d {
                    Datum::Str(s) => s,
                    Datum::Bool(b) => b.to_string(),
                    Datum::Int(i) => i.to_string(),
                    Datum::UInt(i) => i.to_string(),
                    Datum::Float(f) => f.to_string(),
                    Datum::Decimal(v, s) => format_decimal(v, s),
                    Datum::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                    Datum::Date(dd) => format_date(dd),
                    Datum::Time(t) => format_time(t, 6),
                    Datum::Timestamp(t) => format_timestamp(t, 6),
                    Datum::Null => unreachable!("handled above"),
                    nested @ Datum::Nested(_) => return Err(self.err(&nested)),
                };
                b!(StringBuilder).append_value(s)
            }
            FlinkType::Binary(_) | FlinkType::Varbinary(_) => {
                let v = match d {
                    Datum::Bytes(b) => b,
                    Datum::Str(s) => s.into_bytes(),
                    other => return Err(self.err(&other)),
                };
                b!(BinaryBuilder).append_value(v)
            }
            FlinkType::Date => {
                let v = match &d {
                    Datum::Date(x) => *x,
                    Datum::Timestamp(t) => t.div_euclid(86_400_000_000) as i32,
                    Datum::Str(s) => parse_date(s).ok_or_else(|| self.err(&d))?,
                    Datum::Int(i) => i32::try_from(*i).map_err(|_| self.err(&d))?,
                    _ => return Err(self.err(&d)),
                };
                b!(Date32Builder).append_value(v)
            }
            FlinkType::Time(_) => {
                let v = match &d {
                    Datum::Time(x) => *x,
                    Datum::Str(s) => parse_time(s).ok_or_else(|| self.err(&d))?,
                    Datum::Int(i) => *i * 1000,
                    _ => return Err(self.err(&d)),
                };
                b!(Time64MicrosecondBuilder).append_value(v)
            }
            FlinkType::Timestamp(_) | FlinkType::TimestampLtz(_) => {
                let v = match &d {
                    Datum::Timestamp(x) => *x,
                    Datum::Date(x) => *x as i64 * 86_400_000_000,
                    Datum::Str(s) => parse_timestamp(s).ok_or_else(|| self.err(&d))?,
                    Datum::Int(i) => i.checked_mul(1000).ok_or_else(|| self.err(&d))?,
                    _ => return Err(self.err(&d)),
                };
                b!(TimestampMicrosecondBuilder).append_value(v)
            }
            FlinkType::Null => b!(NullBuilder).append_null(),
            FlinkType::Array(_) | FlinkType::Map(..) | FlinkType::Row(_) => {
                let value = match d {
                    Datum::Nested(n) => n,
                    other => return Err(self.err(&other)),
                };
                b!(NestedBuilder).append(*value)?
            }
        }
        Ok(())
    }

    /// The Arrow builder underneath, when it is a `T` (for decoders that append typed values
    /// straight into the column; see [`ColumnBuilder::new`] for which builder each type uses).
    pub fn typed<T: ArrayBuilder>(&mut self) -> Option<&mut T> {
        self.inner.as_any_mut().downcast_mut::<T>()
    }

    /// Drops every value after the first `len` (rolling back a partly appended value; rare).
    fn truncate(&mut self, len: usize) -> Result<()> {
        if self.inner.len() <= len {
            return Ok(());
        }
        let arr = self.inner.finish();
        self.inner = rebuild(arr.slice(0, len), &self.ty)?;
        Ok(())
    }

    fn overflow(&self, v: i64) -> RsqlError {
        RsqlError::data(format!("column '{}'", self.name), format!("{} does not fit in {}; declare a wider type", v, self.ty.ty))
    }

    fn to_i64(&self, d: &Datum) -> Result<i64> {
        Ok(match d {
            Datum::Int(i) => *i,
            Datum::UInt(u) => i64::try_from(*u).map_err(|_| self.err(d))?,
            Datum::Bool(b) => *b as i64,
            Datum::Float(f) if f.is_finite() => f.trunc() as i64,
            Datum::Decimal(v, s) => i64::try_from(rescale(*v, *s, 0).ok_or_else(|| self.err(d))?).map_err(|_| self.err(d))?,
            Datum::Str(s) => s.trim().parse::<i64>().map_err(|_| self.err(d))?,
            _ => return Err(self.err(d)),
        })
    }

    fn to_f64(&self, d: &Datum) -> Result<f64> {
        Ok(match d {
            Datum::Int(i) => *i as f64,
            Datum::UInt(u) => *u as f64,
            Datum::Float(f) => *f,
            Datum::Bool(b) => *b as i64 as f64,
            Datum::Decimal(v, s) => *v as f64 / 10f64.powi(*s as i32),
            Datum::Str(s) => s.trim().parse::<f64>().map_err(|_| self.err(d))?,
            _ => return Err(self.err(d)),
        })
    }

    pub fn finish(&mut self) -> ArrayRef {
        self.inner.finish()
    }
}

fn append_null_any(b: &mut dyn ArrayBuilder, ty: &FlinkType) {
    macro_rules! n {
        ($t:ty) => {
            if let Some(x) = b.as_any_mut().downcast_mut::<$t>() {
                x.append_null();
                return;
            }
        };
    }
    match ty {
        FlinkType::Boolean => n!(BooleanBuilder),
        FlinkType::TinyInt => n!(Int8Builder),
        FlinkType::SmallInt => n!(Int16Builder),
        FlinkType::Int => n!(Int32Builder),
        FlinkType::BigInt => n!(Int64Builder),
        FlinkType::Float => n!(Float32Builder),
        FlinkType::Double => n!(Float64Builder),
        FlinkType::Decimal(..) => n!(Decimal128Builder),
        FlinkType::Char(_) | FlinkType::Varchar(_) => n!(StringBuilder),
        FlinkType::Binary(_) | FlinkType::Varbinary(_) => n!(BinaryBuilder),
        FlinkType::Date => n!(Date32Builder),
        FlinkType::Time(_) => n!(Time64MicrosecondBuilder),
        FlinkType::Timestamp(_) | FlinkType::TimestampLtz(_) => n!(TimestampMicrosecondBuilder),
        FlinkType::Null => n!(NullBuilder),
        FlinkType::Array(_) | FlinkType::Map(..) | FlinkType::Row(_) => n!(NestedBuilder),
    }
}

/// The parts of a nested column under construction.
enum Parts {
    List(Box<ColumnBuilder>),
    Map(Box<ColumnBuilder>, Box<ColumnBuilder>),
    Row(Vec<ColumnBuilder>),
}

/// An ARRAY, MAP or ROW column: validity and offsets here, the parts in child builders (named by
/// their path, `col[]`, `col.key`, `col.value`, `col.field`, so errors say which part failed).
struct NestedBuilder {
    name: String,
    ty: LogicalType,
    dt: DataType,
    parts: Parts,
    nulls: NullBufferBuilder,
    /// End offsets of ARRAY and MAP values, starting with 0.
    offsets: Vec<i32>,
    len: usize,
}

impl NestedBuilder {
    fn new(name: &str, ty: &LogicalType, dt: DataType, capacity: usize) -> Result<Self> {
        let parts = match &ty.ty {
            FlinkType::Array(e) => Parts::List(Box::new(ColumnBuilder::new(&format!("{name}[]"), e, capacity)?)),
            FlinkType::Map(k, v) => Parts::Map(
                // Arrow map keys are never NULL.
                Box::new(ColumnBuilder::new(&format!("{name}.key"), &k.clone().with_nullable(false), capacity)?),
                Box::new(ColumnBuilder::new(&format!("{name}.value"), v, capacity)?),
            ),
            FlinkType::Row(fields) => Parts::Row(
                fields
                    .iter()
                    .map(|(f, t)| ColumnBuilder::new(&format!("{name}.{f}"), t, capacity))
                    .collect::<Result<Vec<_>>>()?,
            ),
            other => return Err(RsqlError::execution(format!("column '{name}': {other} is not a nested type"))),
        };
        Ok(NestedBuilder {
            name: name.to_string(),
            ty: ty.clone(),
            dt,
            parts,
            nulls: NullBufferBuilder::new(capacity),
            offsets: vec![0],
            len: 0,
        })
    }

    fn children(&mut self) -> Vec<&mut ColumnBuilder> {
        match &mut self.parts {
            Parts::List(c) => vec![c.as_mut()],
            Parts::Map(k, v) => vec![k.as_mut(), v.as_mut()],
            Parts::Row(fields) => fields.iter_mut().collect(),
        }
    }

    fn end_offset(&self, n: usize) -> Result<i32> {
        i32::try_from(n).map_err(|_| {
            RsqlError::data(format!("column '{}'", self.name), "more than 2^31 nested values in one batch; use smaller batches")
        })
    }

    /// A NULL value; a ROW's fields get placeholder NULLs (hidden by the ROW's own NULL).
    fn append_null(&mut self) {
        match &mut self.parts {
            Parts::List(_) | Parts::Map(..) => {
                let last = self.offsets.last().copied().unwrap_or(0);
                self.offsets.push(last);
            }
            Parts::Row(fields) => {
                for f in fields {
                    append_null_any(f.inner.as_mut(), &f.ty.ty);
                }
            }
        }
        self.nulls.append_null();
        self.len += 1;
    }

    /// Appends a value whole or not at all.
    fn append(&mut self, value: Nested) -> Result<()> {
        let before: Vec<usize> = self.children().iter().map(|c| c.len()).collect();
        let r = self.append_parts(value);
        if r.is_err() {
            for (c, n) in self.children().into_iter().zip(before) {
                c.truncate(n)?;
            }
        }
        r
    }

    fn append_parts(&mut self, value: Nested) -> Result<()> {
        let mismatch = |v: &Nested| {
            RsqlError::data(format!("column '{}'", self.name), format!("cannot store {v:?} in a column of type {}", self.ty))
        };
        let end = match (&mut self.parts, value) {
            (Parts::List(child), Nested::List(items)) => {
                for item in items {
                    child.append(item)?;
                }
                Some(child.len())
            }
            (Parts::Map(keys, values), Nested::Map(entries)) => {
                for (k, v) in entries {
                    keys.append(k)?;
                    values.append(v)?;
                }
                Some(keys.len())
            }
            (Parts::Row(fields), Nested::Row(vals)) if vals.len() == fields.len() => {
                for (f, v) in fields.iter_mut().zip(vals) {
                    f.append(v)?;
                }
                None
            }
            (_, other) => return Err(mismatch(&other)),
        };
        if let Some(n) = end {
            let n = self.end_offset(n)?;
            self.offsets.push(n);
        }
        self.nulls.append_non_null();
        self.len += 1;
        Ok(())
    }

    fn assemble(&self, children: Vec<ArrayRef>, offsets: Vec<i32>, nulls: Option<NullBuffer>, len: usize) -> Result<ArrayRef> {
        use datafusion_common::arrow::buffer::OffsetBuffer;
        let bad = || RsqlError::execution(format!("column '{}': nested builder out of shape", self.name));
        let mut children = children.into_iter();
        Ok(match &self.dt {
            DataType::List(field) => {
                let values = children.next().ok_or_else(bad)?;
                Arc::new(ListArray::try_new(field.clone(), OffsetBuffer::new(offsets.into()), values, nulls)?)
            }
            DataType::Map(entries, sorted) => {
                let DataType::Struct(kv) = entries.data_type() else { return Err(bad()) };
                let (k, v) = (children.next().ok_or_else(bad)?, children.next().ok_or_else(bad)?);
                let entries_array = StructArray::try_new(kv.clone(), vec![k, v], None)?;
                Arc::new(MapArray::try_new(entries.clone(), OffsetBuffer::new(offsets.into()), entries_array, nulls, *sorted)?)
            }
            DataType::Struct(fields) if fields.is_empty() => Arc::new(StructArray::new_empty_fields(len, nulls)),
            DataType::Struct(fields) => Arc::new(StructArray::try_new(fields.clone(), children.collect(), nulls)?),
            _ => return Err(bad()),
        })
    }
}

impl std::fmt::Debug for NestedBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NestedBuilder({}: {}, {} values)", self.name, self.ty, self.len)
    }
}

impl ArrayBuilder for NestedBuilder {
    fn len(&self) -> usize {
        self.len
    }
    fn finish(&mut self) -> ArrayRef {
        let len = std::mem::take(&mut self.len);
        let nulls = self.nulls.finish();
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let children: Vec<ArrayRef> = self.children().into_iter().map(|c| c.finish()).collect();
        // The parts are appended together, so assembling cannot fail; if it ever did, NULLs
        // keep the batch well-formed.
        self.assemble(children, offsets, nulls, len).unwrap_or_else(|_| new_null_array(&self.dt, len))
    }
    fn finish_cloned(&self) -> ArrayRef {
        let children: Vec<ArrayRef> = match &self.parts {
            Parts::List(c) => vec![c.inner.finish_cloned()],
            Parts::Map(k, v) => vec![k.inner.finish_cloned(), v.inner.finish_cloned()],
            Parts::Row(fields) => fields.iter().map(|c| c.inner.finish_cloned()).collect(),
        };
        self.assemble(children, self.offsets.clone(), self.nulls.finish_cloned(), self.len)
            .unwrap_or_else(|_| new_null_array(&self.dt, self.len))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn into_box_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Builds a RecordBatch row by row for a schema of Flink-typed columns.
pub struct RowsBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl RowsBuilder {
    pub fn new(columns: &[(String, LogicalType)], capacity: usize) -> Result<Self> {
        let schema = Arc::new(datafusion_common::arrow::datatypes::Schema::new(
            columns.iter().map(|(n, t)| t.to_field(n)).collect::<Vec<_>>(),
        ));
        let columns = columns.iter().map(|(n, t)| ColumnBuilder::new(n, t, capacity)).collect::<Result<Vec<_>>>()?;
        Ok(RowsBuilder { schema, columns, rows: 0 })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn column(&mut self, i: usize) -> &mut ColumnBuilder {
        &mut self.columns[i]
    }

    pub fn num_columns(&self) -> usize {
        self.columns.len()
    }

    /// Appends one whole row; on error the builder is left as it was before the call.
    pub fn append_row(&mut self, mut values: Vec<Datum>) -> Result<()> {
        self.append_row_drain(&mut values)
    }

    /// Appends one whole row taken out of `values`, which is left empty (its allocation can be
    /// reused for the next row); on error the builder is left as it was before the call.
    pub fn append_row_drain(&mut self, values: &mut Vec<Datum>) -> Result<()> {
        if values.len() != self.columns.len() {
            let n = values.len();
            values.clear();
            return Err(RsqlError::data("row", format!("has {n} values, the table has {} columns", self.columns.len())));
        }
        // Check first so a bad value does not leave columns of different lengths.
        for (c, v) in self.columns.iter().zip(values.iter()) {
            if matches!(v, Datum::Null) && !c.ty.nullable {
                values.clear();
                return Err(RsqlError::data(
                    format!("column '{}'", c.name),
                    format!("NULL in a column declared {}", c.ty),
                ));
            }
        }
        let mut done = 0;
        let mut result = Ok(());
        for (c, v) in self.columns.iter_mut().zip(values.drain(..)) {
            if let Err(e) = c.append(v) {
                result = Err(e);
                break;
            }
            done += 1;
        }
        if let Err(e) = result {
            // Roll back: rebuild columns without the partial row.
            self.truncate_partial(done)?;
            return Err(e);
        }
        self.rows += 1;
        Ok(())
    }

    fn truncate_partial(&mut self, appended: usize) -> Result<()> {
        if appended == 0 {
            return Ok(());
        }
        for i in 0..appended {
            let arr = self.columns[i].finish();
            let keep = arr.slice(0, self.rows);
            let mut nb = ColumnBuilder::new(&self.columns[i].name.clone(), &self.columns[i].ty.clone(), self.rows)?;
            nb.inner = rebuild(keep, &self.columns[i].ty)?;
            self.columns[i] = nb;
        }
        Ok(())
    }

    /// Ends a row whose values were appended column by column (through [`RowsBuilder::column`]):
    /// every column must hold one more value than before, else the row is rolled back and this
    /// is an error.
    pub fn commit_row(&mut self) -> Result<()> {
        if let Some(c) = self.columns.iter().find(|c| c.len() != self.rows + 1) {
            let msg = format!("has {} values where the row ends at {}", c.len(), self.rows + 1);
            let name = c.name.clone();
            self.rollback_row()?;
            return Err(RsqlError::execution(format!("column '{name}' {msg}")));
        }
        self.rows += 1;
        Ok(())
    }

    /// Drops the values appended column by column since the last committed row (a message that
    /// failed halfway). Cheap when nothing was appended; otherwise the touched columns are rebuilt.
    pub fn rollback_row(&mut self) -> Result<()> {
        for c in &mut self.columns {
            c.truncate(self.rows)?;
        }
        Ok(())
    }

    /// Drops every row after the first `rows`, committed or not: a message of several rows that
    /// failed after some of them were committed.
    pub fn rollback_to(&mut self, rows: usize) -> Result<()> {
        let rows = rows.min(self.rows);
        for c in &mut self.columns {
            c.truncate(rows)?;
        }
        self.rows = rows;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(&mut self) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        let n = self.rows;
        self.rows = 0;
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), cols, &RecordBatchOptions::new().with_row_count(Some(n)))?)
    }
}

/// A builder pre-filled with the values of `arr` (for rolling back a partial row; rare path).
fn rebuild(arr: ArrayRef, ty: &LogicalType) -> Result<Box<dyn ArrayBuilder>> {
    let mut nb = ColumnBuilder::new("", &ty.clone().with_nullable(true), arr.len())?;
    for i in 0..arr.len() {
        nb.append(datum_at(arr.as_ref(), i)?)?;
    }
    Ok(nb.inner)
}

/// Reads one value of an Arrow array as a Datum (for rebuilding and for tests).
pub fn datum_at(arr: &dyn Array, i: usize) -> Result<Datum> {
    if arr.is_null(i) {
        return Ok(Datum::Null);
    }
    macro_rules! get {
        ($t:ty) => {
            arr.as_any().downcast_ref::<$t>().ok_or_else(|| RsqlError::execution("array type mismatch"))?.value(i)
        };
    }
    Ok(match arr.data_type() {
        DataType::Boolean => Datum::Bool(get!(BooleanArray)),
        DataType::Int8 => Datum::Int(get!(Int8Array) as i64),
        DataType::Int16 => Datum::Int(get!(Int16Array) as i64),
        DataType::Int32 => Datum::Int(get!(Int32Array) as i64),
        DataType::Int64 => Datum::Int(get!(Int64Array)),
        DataType::UInt8 => Datum::Int(get!(UInt8Array) as i64),
        DataType::UInt16 => Datum::Int(get!(UInt16Array) as i64),
        DataType::UInt32 => Datum::Int(get!(UInt32Array) as i64),
        DataType::UInt64 => Datum::UInt(get!(UInt64Array)),
        DataType::Float32 => Datum::Float(get!(Float32Array) as f64),
        DataType::Float64 => Datum::Float(get!(Float64Array)),
        DataType::Decimal128(_, s) => Datum::Decimal(get!(Decimal128Array), *s),
        DataType::Utf8 => Datum::Str(get!(StringArray).to_string()),
        DataType::LargeUtf8 => Datum::Str(get!(LargeStringArray).to_string()),
        DataType::Utf8View => Datum::Str(get!(StringViewArray).to_string()),
        DataType::Binary => Datum::Bytes(get!(BinaryArray).to_vec()),
        DataType::Date32 => Datum::Date(get!(Date32Array)),
        DataType::Time64(TimeUnit::Microsecond) => Datum::Time(get!(Time64MicrosecondArray)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Datum::Timestamp(get!(TimestampMicrosecondArray)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Datum::Timestamp(get!(TimestampMillisecondArray) * 1000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Datum::Timestamp(get!(TimestampNanosecondArray) / 1000),
        DataType::Timestamp(TimeUnit::Second, _) => Datum::Timestamp(get!(TimestampSecondArray) * 1_000_000),
        DataType::List(_) => {
            let items = arr.as_any().downcast_ref::<ListArray>().ok_or_else(|| RsqlError::execution("array type mismatch"))?.value(i);
            Datum::list((0..items.len()).map(|j| datum_at(items.as_ref(), j)).collect::<Result<_>>()?)
        }
        DataType::Map(..) => {
            let entries = arr.as_any().downcast_ref::<MapArray>().ok_or_else(|| RsqlError::execution("array type mismatch"))?.value(i);
            let (k, v) = (entries.column(0), entries.column(1));
            Datum::map((0..entries.len()).map(|j| Ok((datum_at(k.as_ref(), j)?, datum_at(v.as_ref(), j)?))).collect::<Result<_>>()?)
        }
        DataType::Struct(_) => {
            let s = arr.as_any().downcast_ref::<StructArray>().ok_or_else(|| RsqlError::execution("array type mismatch"))?;
            Datum::row(s.columns().iter().map(|c| datum_at(c.as_ref(), i)).collect::<Result<_>>()?)
        }
        other => return Err(RsqlError::unsupported(format!("reading values of Arrow type {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("12.345", 2), Some(1235));
        assert_eq!(parse_decimal("-0.5", 0), Some(-1));
        assert_eq!(parse_decimal("abc", 2), None);
        assert_eq!(format_decimal(1235, 2), "12.35");
        assert_eq!(format_decimal(-5, 3), "-0.005");
        assert_eq!(rescale(12345, 3, 1), Some(123));
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2024-01-02 03:04:05.123").unwrap();
        assert_eq!(format_timestamp(t, 3), "2024-01-02 03:04:05.123");
        assert_eq!(format_date(parse_date("2020-02-29").unwrap()), "2020-02-29");
        assert_eq!(format_time(parse_time("23:59:59.5").unwrap(), 1), "23:59:59.5");
    }

    #[test]
    fn rows_and_rollback() {
        let cols = vec![
            ("a".to_string(), LogicalType::not_null(FlinkType::Int)),
            ("b".to_string(), LogicalType::nullable(FlinkType::Varchar(10))),
        ];
        let mut b = RowsBuilder::new(&cols, 4).unwrap();
        b.append_row(vec![Datum::Int(1), Datum::Str("x".into())]).unwrap();
        assert!(b.append_row(vec![Datum::Null, Datum::Null]).is_err());
        assert!(b.append_row(vec![Datum::Int(1 << 40), Datum::Null]).is_err());
        b.append_row(vec![Datum::Str("7".into()), Datum::Null]).unwrap();
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(datum_at(batch.column(0).as_ref(), 1).unwrap(), Datum::Int(7));
    }

    #[test]
    fn rows_appended_column_by_column_commit_and_roll_back() {
        let cols = vec![
            ("a".to_string(), LogicalType::not_null(FlinkType::Int)),
            ("b".to_string(), LogicalType::nullable(FlinkType::Varchar(10))),
        ];
        let mut b = RowsBuilder::new(&cols, 4).unwrap();
        b.column(0).typed::<Int32Builder>().unwrap().append_value(1);
        b.column(1).append(Datum::Str("x".into())).unwrap();
        b.commit_row().unwrap();
        // A row that stops halfway is rolled back.
        b.column(0).append(Datum::Int(2)).unwrap();
        b.rollback_row().unwrap();
        // Committing a row some column has no value for is an error, and rolls it back.
        b.column(0).append(Datum::Int(3)).unwrap();
        assert!(b.commit_row().is_err());
        b.column(0).append(Datum::Int(4)).unwrap();
        b.column(1).append_null().unwrap();
        b.commit_row().unwrap();
        assert!(b.column(0).typed::<StringBuilder>().is_none());
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(datum_at(batch.column(0).as_ref(), 1).unwrap(), Datum::Int(4));
        assert_eq!(datum_at(batch.column(1).as_ref(), 1).unwrap(), Datum::Null);
    }

    #[test]
    fn nested_columns_round_trip_and_roll_back() {
        let int = LogicalType::nullable(FlinkType::Int);
        let s = LogicalType::nullable(FlinkType::Varchar(10));
        let row_ty = LogicalType::nullable(FlinkType::Row(vec![
            ("a".into(), LogicalType::not_null(FlinkType::Int)),
            ("tags".into(), LogicalType::nullable(FlinkType::Array(Box::new(s.clone())))),
        ]));
        let cols = vec![
            ("id".to_string(), LogicalType::not_null(FlinkType::Int)),
            ("xs".to_string(), LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::not_null(FlinkType::Int))))),
            ("m".to_string(), LogicalType::nullable(FlinkType::Map(Box::new(s.clone()), Box::new(int.clone())))),
            ("r".to_string(), row_ty),
        ];
        let mut b = RowsBuilder::new(&cols, 2).unwrap();
        let r1 = vec![
            Datum::Int(1),
            Datum::list(vec![Datum::Int(1), Datum::Str("2".into())]),
            Datum::map(vec![(Datum::Str("k".into()), Datum::Null)]),
            Datum::row(vec![Datum::Int(5), Datum::list(vec![Datum::Str("t".into()), Datum::Null])]),
        ];
        b.append_row(r1).unwrap();
        b.append_row(vec![Datum::Int(2), Datum::Null, Datum::Null, Datum::Null]).unwrap();
        // A NULL element of ARRAY<INT NOT NULL> fails after the first element went in: rolled back.
        let e = b.append_row(vec![Datum::Int(3), Datum::list(vec![Datum::Int(9), Datum::Null]), Datum::Null, Datum::Null]);
        assert!(e.unwrap_err().to_string().contains("xs[]"));
        // A NOT NULL row field that is NULL names the field.
        let e = b.append_row(vec![Datum::Int(3), Datum::Null, Datum::Null, Datum::row(vec![Datum::Null, Datum::Null])]);
        assert!(e.unwrap_err().to_string().contains("r.a"));
        // A value of the wrong shape.
        assert!(b.append_row(vec![Datum::Int(3), Datum::row(vec![]), Datum::Null, Datum::Null]).is_err());
        b.append_row(vec![Datum::Int(4), Datum::list(vec![]), Datum::map(vec![]), Datum::row(vec![Datum::Int(0), Datum::Null])]).unwrap();
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 3);
        let at = |c: usize, r: usize| datum_at(batch.column(c).as_ref(), r).unwrap();
        assert_eq!(at(1, 0), Datum::list(vec![Datum::Int(1), Datum::Int(2)]));
        assert_eq!(at(2, 0), Datum::map(vec![(Datum::Str("k".into()), Datum::Null)]));
        assert_eq!(at(3, 0), Datum::row(vec![Datum::Int(5), Datum::list(vec![Datum::Str("t".into()), Datum::Null])]));
        assert_eq!((at(1, 1), at(2, 1), at(3, 1)), (Datum::Null, Datum::Null, Datum::Null));
        assert_eq!(at(1, 2), Datum::list(vec![]));
        assert_eq!(at(3, 2), Datum::row(vec![Datum::Int(0), Datum::Null]));
        for (i, (n, t)) in cols.iter().enumerate() {
            assert_eq!(batch.schema().field(i), &t.to_field(n));
        }
    }
}
