//! Flink's logical types, how they print, and how they map to Arrow.
//!
//! Mapping: BOOLEAN->Boolean, TINYINT..BIGINT->Int8..Int64, FLOAT->Float32, DOUBLE->Float64,
//! DECIMAL(p,s)->Decimal128(p,s), CHAR/VARCHAR/STRING->Utf8, BINARY/VARBINARY/BYTES->Binary,
//! DATE->Date32, TIME(p)->Time64(us), TIMESTAMP(p)->Timestamp(us), TIMESTAMP_LTZ(p)->Timestamp(us, UTC),
//! ARRAY->List, MAP->Map, ROW->Struct.

use std::fmt;
use std::sync::Arc;

use datafusion_common::arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// The largest length Flink allows for VARCHAR / VARBINARY; `STRING` is `VARCHAR(MAX_LENGTH)`.
pub const MAX_LENGTH: u32 = i32::MAX as u32;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlinkType {
    Boolean,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    Decimal(u8, i8),
    Char(u32),
    Varchar(u32),
    Binary(u32),
    Varbinary(u32),
    Date,
    Time(u8),
    Timestamp(u8),
    TimestampLtz(u8),
    Array(Box<LogicalType>),
    Map(Box<LogicalType>, Box<LogicalType>),
    Row(Vec<(String, LogicalType)>),
    Null,
}

/// A Flink type together with its nullability.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogicalType {
    pub ty: FlinkType,
    pub nullable: bool,
}

impl LogicalType {
    pub fn new(ty: FlinkType, nullable: bool) -> Self {
        LogicalType { ty, nullable }
    }
    pub fn nullable(ty: FlinkType) -> Self {
        LogicalType { ty, nullable: true }
    }
    pub fn not_null(ty: FlinkType) -> Self {
        LogicalType { ty, nullable: false }
    }
    pub fn with_nullable(mut self, nullable: bool) -> Self {
        self.nullable = nullable;
        self
    }
    pub fn to_arrow(&self) -> DataType {
        self.ty.to_arrow()
    }
    pub fn to_field(&self, name: &str) -> Field {
        Field::new(name, self.to_arrow(), self.nullable)
    }
}

impl fmt::Display for LogicalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ty)?;
        if !self.nullable {
            f.write_str(" NOT NULL")?;
        }
        Ok(())
    }
}

impl FlinkType {
    pub fn to_arrow(&self) -> DataType {
        match self {
            FlinkType::Boolean => DataType::Boolean,
            FlinkType::TinyInt => DataType::Int8,
            FlinkType::SmallInt => DataType::Int16,
            FlinkType::Int => DataType::Int32,
            FlinkType::BigInt => DataType::Int64,
            FlinkType::Float => DataType::Float32,
            FlinkType::Double => DataType::Float64,
            FlinkType::Decimal(p, s) => DataType::Decimal128(*p, *s),
            FlinkType::Char(_) | FlinkType::Varchar(_) => DataType::Utf8,
            FlinkType::Binary(_) | FlinkType::Varbinary(_) => DataType::Binary,
            FlinkType::Date => DataType::Date32,
            FlinkType::Time(_) => DataType::Time64(TimeUnit::Microsecond),
            FlinkType::Timestamp(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
            FlinkType::TimestampLtz(_) => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            FlinkType::Array(e) => DataType::List(Arc::new(e.to_field("element"))),
            FlinkType::Map(k, v) => {
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![k.to_field("key").with_nullable(false), v.to_field("value")])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            FlinkType::Row(fields) => {
                DataType::Struct(fields.iter().map(|(n, t)| t.to_field(n)).collect::<Vec<_>>().into())
            }
            FlinkType::Null => DataType::Null,
        }
    }

    /// The Flink type that best describes an Arrow type (for query results).
    pub fn from_arrow(dt: &DataType) -> Option<FlinkType> {
        Some(match dt {
            DataType::Boolean => FlinkType::Boolean,
            DataType::Int8 => FlinkType::TinyInt,
            DataType::Int16 | DataType::UInt8 => FlinkType::SmallInt,
            DataType::Int32 | DataType::UInt16 => FlinkType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => FlinkType::BigInt,
            DataType::Float16 | DataType::Float32 => FlinkType::Float,
            DataType::Float64 => FlinkType::Double,
            DataType::Decimal128(p, s) => FlinkType::Decimal(*p, *s),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FlinkType::Varchar(MAX_LENGTH),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => FlinkType::Varbinary(MAX_LENGTH),
            DataType::Date32 | DataType::Date64 => FlinkType::Date,
            DataType::Time32(_) | DataType::Time64(_) => FlinkType::Time(0),
            DataType::Timestamp(u, tz) => {
                let p = match u {
                    TimeUnit::Second => 0,
                    TimeUnit::Millisecond => 3,
                    TimeUnit::Microsecond => 6,
                    TimeUnit::Nanosecond => 9,
                };
                if tz.is_some() {
                    FlinkType::TimestampLtz(p)
                } else {
                    FlinkType::Timestamp(p)
                }
            }
            DataType::List(f) | DataType::LargeList(f) => {
                FlinkType::Array(Box::new(LogicalType::new(FlinkType::from_arrow(f.data_type())?, f.is_nullable())))
            }
            DataType::Struct(fs) => FlinkType::Row(
                fs.iter()
                    .map(|f| Some((f.name().clone(), LogicalType::new(FlinkType::from_arrow(f.data_type())?, f.is_nullable()))))
                    .collect::<Option<Vec<_>>>()?,
            ),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => FlinkType::Map(
                    Box::new(LogicalType::new(FlinkType::from_arrow(kv[0].data_type())?, kv[0].is_nullable())),
                    Box::new(LogicalType::new(FlinkType::from_arrow(kv[1].data_type())?, kv[1].is_nullable())),
                ),
                _ => return None,
            },
            DataType::Null => FlinkType::Null,
            _ => return None,
        })
    }

    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            FlinkType::TinyInt
                | FlinkType::SmallInt
                | FlinkType::Int
                | FlinkType::BigInt
                | FlinkType::Float
                | FlinkType::Double
                | FlinkType::Decimal(..)
        )
    }

    pub fn is_string(&self) -> bool {
        matches!(self, FlinkType::Char(_) | FlinkType::Varchar(_))
    }

    /// Whether a value of `self` may be written into a column of `target` without an explicit CAST,
    /// following Flink's implicit cast rules for INSERT (numeric widening and narrowing among
    /// numerics, character strings among themselves, and so on).
    pub fn can_assign_to(&self, target: &FlinkType) -> bool {
        use FlinkType::*;
        if self == target || matches!(self, Null) {
            return true;
        }
        match (self, target) {
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (a, b) if a.is_string() && b.is_string() => true,
            (Binary(_) | Varbinary(_), Binary(_) | Varbinary(_)) => true,
            (Timestamp(_) | TimestampLtz(_), Timestamp(_) | TimestampLtz(_)) => true,
            (Time(_), Time(_)) => true,
            (Array(a), Array(b)) => a.ty.can_assign_to(&b.ty),
            (Map(ak, av), Map(bk, bv)) => ak.ty.can_assign_to(&bk.ty) && av.ty.can_assign_to(&bv.ty),
            (Row(a), Row(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.1.ty.can_assign_to(&y.1.ty)),
            _ => false,
        }
    }
}

impl fmt::Display for FlinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlinkType::Boolean => f.write_str("BOOLEAN"),
            FlinkType::TinyInt => f.write_str("TINYINT"),
            FlinkType::SmallInt => f.write_str("SMALLINT"),
            FlinkType::Int => f.write_str("INT"),
            FlinkType::BigInt => f.write_str("BIGINT"),
            FlinkType::Float => f.write_str("FLOAT"),
            FlinkType::Double => f.write_str("DOUBLE"),
            FlinkType::Decimal(p, s) => write!(f, "DECIMAL({p}, {s})"),
            FlinkType::Char(n) => write!(f, "CHAR({n})"),
            FlinkType::Varchar(n) if *n == MAX_LENGTH => f.write_str("STRING"),
            FlinkType::Varchar(n) => write!(f, "VARCHAR({n})"),
            FlinkType::Binary(n) => write!(f, "BINARY({n})"),
            FlinkType::Varbinary(n) if *n == MAX_LENGTH => f.write_str("BYTES"),
            FlinkType::Varbinary(n) => write!(f, "VARBINARY({n})"),
            FlinkType::Date => f.write_str("DATE"),
            FlinkType::Time(p) => write!(f, "TIME({p})"),
            FlinkType::Timestamp(p) => write!(f, "TIMESTAMP({p})"),
            FlinkType::TimestampLtz(p) => write!(f, "TIMESTAMP_LTZ({p})"),
            FlinkType::Array(e) => write!(f, "ARRAY<{e}>"),
            FlinkType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
            FlinkType::Row(fields) => {
                f.write_str("ROW<")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{n}` {t}")?;
                }
                f.write_str(">")
            }
            FlinkType::Null => f.write_str("NULL"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_flink() {
        assert_eq!(FlinkType::Varchar(MAX_LENGTH).to_string(), "STRING");
        assert_eq!(FlinkType::Varchar(40).to_string(), "VARCHAR(40)");
        assert_eq!(LogicalType::not_null(FlinkType::Int).to_string(), "INT NOT NULL");
        let arr = FlinkType::Array(Box::new(LogicalType::nullable(FlinkType::BigInt)));
        assert_eq!(arr.to_string(), "ARRAY<BIGINT>");
    }

    #[test]
    fn arrow_round_trip_keeps_the_family() {
        for t in [FlinkType::Int, FlinkType::Float, FlinkType::Decimal(10, 2), FlinkType::Date, FlinkType::TimestampLtz(6)] {
            assert_eq!(FlinkType::from_arrow(&t.to_arrow()), Some(t));
        }
    }

    #[test]
    fn implicit_casts() {
        assert!(FlinkType::Int.can_assign_to(&FlinkType::Float));
        assert!(FlinkType::Varchar(40).can_assign_to(&FlinkType::Varchar(MAX_LENGTH)));
        assert!(!FlinkType::Varchar(40).can_assign_to(&FlinkType::Int));
        assert!(!FlinkType::Boolean.can_assign_to(&FlinkType::Int));
    }
}
