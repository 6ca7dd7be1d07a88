//! The `print` connector: a sink that writes every row to standard output (or standard error)
//! the way Flink's print sink does: `+I[1, 10.0, beijing, 1]`, prefixed with `identifier> ` when
//! `print-identifier` is set. Options: `print-identifier`, `standard-error`, `sink.parallelism`
//! (accepted; rows are printed by one writer, so no subtask number is added to the prefix).
//!
//! Values are printed as Flink's Java objects print themselves: FLOAT and DOUBLE as Java's
//! `Float.toString` / `Double.toString` (`10.0`, `1.0E-5`, `1.0E7`), DECIMAL as
//! `BigDecimal.toString` (`0.00100000`, `1E-8`), TIMESTAMP as `LocalDateTime` (`2024-01-02T03:04`,
//! `2024-01-02T03:04:05.123`), TIMESTAMP_LTZ as `Instant` (`1970-01-01T00:00:01.500Z`), TIME as
//! `LocalTime`, BYTES as signed bytes (`[0, -1]`), ARRAY as `[1, null, 3]`, MAP as `{k=1}`,
//! ROW as `+I[1, z]`, and NULL as `null`. `format_row` and `write_value` expose the formatting;
//! the number layouts come from `formats::text`, shared with the JSON format.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use rsql_common::arrow::array::{Array, AsArray};
use rsql_common::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::arrow::util::display::{ArrayFormatter, FormatOptions};
use rsql_common::catalog::TableDef;
use rsql_common::options::{option_location, OptionKind, OptionSchema, OptionSpec, Opts};
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::{ChangelogMode, ConnectorFactory, ConnectorRegistry, ProducedColumn, Sink, Source, SourceInfo};

use crate::formats::{java_double_to_string, java_float_to_string};

pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(PrintFactory));
}

/// The factory registered as `'connector' = 'print'`.
pub struct PrintFactory;

impl ConnectorFactory for PrintFactory {
    fn name(&self) -> &'static str {
        "print"
    }

    fn options(&self, _table: &TableDef) -> OptionSchema {
        OptionSchema::new(vec![
            OptionSpec::optional("print-identifier", OptionKind::String),
            OptionSpec::optional("standard-error", OptionKind::Bool),
            OptionSpec::optional("sink.parallelism", OptionKind::Int),
        ])
    }

    fn supports_source(&self) -> bool {
        false
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        Err(write_only(table, "print"))
    }

    fn create_source(&self, table: &TableDef, _columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        Err(write_only(table, "print"))
    }

    fn create_sink(&self, table: &TableDef, _input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        let opts = Opts::new(table);
        let target = if opts.bool("standard-error", false)? { Target::Stderr } else { Target::Stdout };
        Ok(Box::new(PrintSink::new(&table.path.name, opts.get("print-identifier"), target)))
    }
}

/// The error for reading from a write-only connector.
pub(crate) fn write_only(table: &TableDef, connector: &str) -> RsqlError {
    RsqlError::Options {
        table: table.path.name.clone(),
        message: format!(
            "the '{connector}' connector can only be written to; read from a 'datagen', 'filesystem' or another source table"
        ),
        location: Some(option_location(table, "connector")),
    }
}

/// Where printed rows go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
    /// Kept in memory (for tests): see `PrintSink::captured`.
    Memory,
}

pub struct PrintSink {
    table: String,
    /// `identifier> ` or empty.
    prefix: String,
    target: Target,
    captured: String,
    /// Reused between batches.
    buf: String,
}

impl PrintSink {
    pub fn new(table: &str, identifier: Option<&str>, target: Target) -> Self {
        let prefix = match identifier {
            Some(id) if !id.is_empty() => format!("{id}> "),
            _ => String::new(),
        };
        PrintSink { table: table.to_string(), prefix, target, captured: String::new(), buf: String::new() }
    }

    /// Everything printed so far when the target is `Target::Memory`.
    pub fn captured(&self) -> &str {
        &self.captured
    }
}

#[async_trait]
impl Sink for PrintSink {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        self.buf.clear();
        for row in 0..batch.num_rows() {
            self.buf.push_str(&self.prefix);
            write_row(&mut self.buf, batch.kinds[row], &batch.data, row);
            self.buf.push('\n');
        }
        let io_err = |e: std::io::Error| RsqlError::io(format!("print sink '{}'", self.table), e);
        match self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(self.buf.as_bytes()).map_err(io_err)?;
                out.flush().map_err(io_err)
            }
            Target::Stderr => {
                let mut out = std::io::stderr().lock();
                out.write_all(self.buf.as_bytes()).map_err(io_err)?;
                out.flush().map_err(io_err)
            }
            Target::Memory => {
                self.captured.push_str(&self.buf);
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// One row as Flink prints it: `+I[1, a, null]`.
pub fn format_row(kind: RowKind, batch: &RecordBatch, row: usize) -> String {
    let mut s = String::new();
    write_row(&mut s, kind, batch, row);
    s
}

/// Appends one row as Flink prints it.
pub fn write_row(out: &mut String, kind: RowKind, batch: &RecordBatch, row: usize) {
    out.push_str(kind.short_string());
    out.push('[');
    for (i, col) in batch.columns().iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_value(out, col.as_ref(), row);
    }
    out.push(']');
}

/// Appends one value as Flink prints it (Java's `toString` of the value's external class).
pub fn write_value(out: &mut String, arr: &dyn Array, row: usize) {
    if arr.is_null(row) {
        out.push_str("null");
        return;
    }
    macro_rules! num {
        ($t:ty) => {{
            let _ = write!(out, "{}", arr.as_primitive::<$t>().value(row));
        }};
    }
    match arr.data_type() {
        DataType::Null => out.push_str("null"),
        DataType::Boolean => out.push_str(if arr.as_boolean().value(row) { "true" } else { "false" }),
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float16 => out.push_str(&java_float_to_string(arr.as_primitive::<Float16Type>().value(row).to_f32())),
        DataType::Float32 => out.push_str(&java_float_to_string(arr.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => out.push_str(&java_double_to_string(arr.as_primitive::<Float64Type>().value(row))),
        DataType::Decimal128(_, s) => out.push_str(&java_big_decimal(arr.as_primitive::<Decimal128Type>().value(row), *s)),
        DataType::Utf8 => out.push_str(arr.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(arr.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(arr.as_string_view().value(row)),
        DataType::Binary => write_bytes(out, arr.as_binary::<i32>().value(row)),
        DataType::LargeBinary => write_bytes(out, arr.as_binary::<i64>().value(row)),
        DataType::BinaryView => write_bytes(out, arr.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => write_bytes(out, arr.as_fixed_size_binary().value(row)),
        DataType::Date32 => write_date(out, arr.as_primitive::<Date32Type>().value(row) as i64),
        DataType::Date64 => write_date(out, arr.as_primitive::<Date64Type>().value(row).div_euclid(86_400_000)),
        DataType::Time32(TimeUnit::Second) => write_time(out, arr.as_primitive::<Time32SecondType>().value(row) as i64 * 1_000_000_000, false),
        DataType::Time32(_) => write_time(out, arr.as_primitive::<Time32MillisecondType>().value(row) as i64 * 1_000_000, false),
        DataType::Time64(TimeUnit::Nanosecond) => write_time(out, arr.as_primitive::<Time64NanosecondType>().value(row), false),
        DataType::Time64(_) => write_time(out, arr.as_primitive::<Time64MicrosecondType>().value(row) * 1000, false),
        DataType::Timestamp(unit, tz) => {
            let (secs, nanos) = match unit {
                TimeUnit::Second => (arr.as_primitive::<TimestampSecondType>().value(row), 0),
                TimeUnit::Millisecond => split(arr.as_primitive::<TimestampMillisecondType>().value(row), 1000, 1_000_000),
                TimeUnit::Microsecond => split(arr.as_primitive::<TimestampMicrosecondType>().value(row), 1_000_000, 1000),
                TimeUnit::Nanosecond => split(arr.as_primitive::<TimestampNanosecondType>().value(row), 1_000_000_000, 1),
            };
            write_date(out, secs.div_euclid(86_400));
            out.push('T');
            let nanos_of_day = secs.rem_euclid(86_400) * 1_000_000_000 + nanos;
            if tz.is_some() {
                // java.time.Instant: seconds always shown, then 'Z'.
                write_time(out, nanos_of_day, true);
                out.push('Z');
            } else {
                write_time(out, nanos_of_day, false);
            }
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) | DataType::ListView(_) | DataType::LargeListView(_) => {
            let values = match arr.data_type() {
                DataType::List(_) => arr.as_list::<i32>().value(row),
                DataType::LargeList(_) => arr.as_list::<i64>().value(row),
                DataType::FixedSizeList(..) => arr.as_fixed_size_list().value(row),
                DataType::ListView(_) => arr.as_list_view::<i32>().value(row),
                _ => arr.as_list_view::<i64>().value(row),
            };
            out.push('[');
            for i in 0..values.len() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, values.as_ref(), i);
            }
            out.push(']');
        }
        DataType::Map(..) => {
            let entries = arr.as_map().value(row);
            out.push('{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, entries.column(0).as_ref(), i);
                out.push('=');
                write_value(out, entries.column(1).as_ref(), i);
            }
            out.push('}');
        }
        DataType::Struct(_) => {
            let s = arr.as_struct();
            out.push_str("+I[");
            for (i, c) in s.columns().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, c.as_ref(), row);
            }
            out.push(']');
        }
        _ => {
            let opts = FormatOptions::default().with_null("null");
            match ArrayFormatter::try_new(arr, &opts) {
                Ok(f) => {
                    let _ = write!(out, "{}", f.value(row));
                }
                Err(_) => out.push('?'),
            }
        }
    }
}

fn split(v: i64, per_sec: i64, nanos_per_unit: i64) -> (i64, i64) {
    (v.div_euclid(per_sec), v.rem_euclid(per_sec) * nanos_per_unit)
}

/// Java's `Arrays.toString(byte[])`: signed bytes.
fn write_bytes(out: &mut String, b: &[u8]) {
    out.push('[');
    for (i, v) in b.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", *v as i8);
    }
    out.push(']');
}

/// `java.time.LocalDate.toString()` of a day count since 1970-01-01.
fn write_date(out: &mut String, days: i64) {
    let Some(d) = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::Duration::try_days(days)?))
    else {
        let _ = write!(out, "{days}");
        return;
    };
    use chrono::Datelike;
    let y = d.year();
    if y.abs() < 1000 {
        if y < 0 {
            let _ = write!(out, "-{:04}", -y);
        } else {
            let _ = write!(out, "{y:04}");
        }
    } else if y > 9999 {
        let _ = write!(out, "+{y}");
    } else {
        let _ = write!(out, "{y}");
    }
    let _ = write!(out, "-{:02}-{:02}", d.month(), d.day());
}

/// `java.time.LocalTime.toString()` (seconds dropped when zero unless `always_seconds`, as
/// `Instant` does), fraction in groups of three digits.
fn write_time(out: &mut String, nanos_of_day: i64, always_seconds: bool) {
    let secs = nanos_of_day / 1_000_000_000;
    let nano = nanos_of_day % 1_000_000_000;
    let _ = write!(out, "{:02}:{:02}", secs / 3600, (secs / 60) % 60);
    let s = secs % 60;
    if always_seconds || s > 0 || nano > 0 {
        let _ = write!(out, ":{s:02}");
        if nano > 0 {
            if nano % 1_000_000 == 0 {
                let _ = write!(out, ".{:03}", nano / 1_000_000);
            } else if nano % 1000 == 0 {
                let _ = write!(out, ".{:06}", nano / 1000);
            } else {
                let _ = write!(out, ".{nano:09}");
            }
        }
    }
}

/// Java's `BigDecimal.toString()`: plain notation unless the adjusted exponent is below -6
/// (`1E-8`, `1.2E-8`).
pub fn java_big_decimal(unscaled: i128, scale: i8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let mut s = String::with_capacity(digits.len() + 8);
    if unscaled < 0 {
        s.push('-');
    }
    let adjusted = -(scale as i64) + (digits.len() as i64 - 1);
    if scale == 0 {
        s.push_str(&digits);
    } else if scale > 0 && adjusted >= -6 {
        let scale = scale as usize;
        if digits.len() > scale {
            let (a, b) = digits.split_at(digits.len() - scale);
            let _ = write!(s, "{a}.{b}");
        } else {
            let _ = write!(s, "0.{}{digits}", "0".repeat(scale - digits.len()));
        }
    } else {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let _ = write!(s, "E{}{adjusted}", if adjusted >= 0 { "+" } else { "" });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int32Array,
        ListArray, MapArray, StringArray, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    };
    use rsql_common::arrow::buffer::OffsetBuffer;
    use rsql_common::arrow::datatypes::{Field, Fields, Schema};
    use rsql_common::builder::{parse_date, parse_time, parse_timestamp};
    use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue};
    use rsql_common::error::Location;
    use rsql_common::types::{FlinkType, LogicalType};
    use std::collections::BTreeMap;

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let schema = Schema::new(cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>());
        RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, a)| a).collect()).unwrap()
    }

    #[test]
    fn numbers_print_like_java() {
        let b = batch(vec![
            ("f", Arc::new(Float32Array::from(vec![1.1310393f32, 3.4e38, 0.001])) as ArrayRef),
            ("d", Arc::new(Float64Array::from(vec![1.408284602540736e308, 123456789.125, 0.1 + 0.2]))),
            ("dc", Arc::new(Decimal128Array::from(vec![100000, 1000000000000000000, 3072]).with_precision_and_scale(20, 8).unwrap())),
            ("dz", Arc::new(Decimal128Array::from(vec![12345, 0, -7]).with_precision_and_scale(5, 0).unwrap())),
        ]);
        // As printed by Apache Flink 2.3 for the same values.
        assert_eq!(format_row(RowKind::Insert, &b, 0), "+I[1.1310393, 1.408284602540736E308, 0.00100000, 12345]");
        assert_eq!(format_row(RowKind::Insert, &b, 1), "+I[3.4E38, 1.23456789125E8, 10000000000.00000000, 0]");
        assert_eq!(format_row(RowKind::Insert, &b, 2), "+I[0.001, 0.30000000000000004, 0.00003072, -7]");
        for (u, sc, s) in [(1, 8, "1E-8"), (12, 9, "1.2E-8"), (100, 8, "0.00000100"), (-150000000, 8, "-1.50000000"), (0, 2, "0.00"), (5, 2, "0.05")] {
            assert_eq!(java_big_decimal(u, sc), s, "{u} scale {sc}");
        }
    }

    #[test]
    fn rows_print_like_flink() {
        // Expected lines were printed by Apache Flink 2.3's print sink for the same values.
        let ts = |s: &str| parse_timestamp(s).unwrap();
        let b = batch(vec![
            ("f", Arc::new(Float32Array::from(vec![Some(100.0), None])) as ArrayRef),
            ("d", Arc::new(Float64Array::from(vec![1e-5, 1e7]))),
            ("dc", Arc::new(Decimal128Array::from(vec![1, -150000000]).with_precision_and_scale(20, 8).unwrap())),
            ("s", Arc::new(StringArray::from(vec![Some("a, b"), Some("")]))),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![ts("2024-01-02 03:04:00"), ts("2024-01-02 03:04:05.123456")])),
            ),
            (
                "lt",
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1_500_000]).with_timezone("UTC")),
            ),
            ("tm", Arc::new(Time64MicrosecondArray::from(vec![parse_time("03:04:00").unwrap(), parse_time("00:00:00.5").unwrap()]))),
            ("dt", Arc::new(Date32Array::from(vec![parse_date("2024-01-02").unwrap(), parse_date("1969-12-31").unwrap()]))),
            ("bn", Arc::new(BinaryArray::from(vec![&[0u8, 255][..], &[][..]]))),
            ("bo", Arc::new(BooleanArray::from(vec![Some(true), None]))),
            ("n", Arc::new(Int32Array::from(vec![None, Some(5)]))),
        ]);
        assert_eq!(
            format_row(RowKind::Insert, &b, 0),
            "+I[100.0, 1.0E-5, 1E-8, a, b, 2024-01-02T03:04, 1970-01-01T00:00:00Z, 03:04, 2024-01-02, [0, -1], true, null]"
        );
        assert_eq!(
            format_row(RowKind::UpdateBefore, &b, 1),
            "-U[null, 1.0E7, -1.50000000, , 2024-01-02T03:04:05.123456, 1970-01-01T00:00:01.500Z, 00:00:00.500, 1969-12-31, [], null, 5]"
        );
    }

    #[test]
    fn nested_values() {
        let list = ListArray::new(
            Arc::new(Field::new("element", DataType::Int32, true)),
            OffsetBuffer::new(vec![0, 3, 3].into()),
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
            None,
        );
        let row = StructArray::new(
            Fields::from(vec![Field::new("x", DataType::Int32, true), Field::new("y", DataType::Utf8, true)]),
            vec![Arc::new(Int32Array::from(vec![Some(1), None])), Arc::new(StringArray::from(vec![Some("z"), None]))],
            None,
        );
        let entries = StructArray::new(
            Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Int32, true)]),
            vec![Arc::new(StringArray::from(vec!["a", "b"])), Arc::new(Int32Array::from(vec![Some(1), None]))],
            None,
        );
        let map = MapArray::new(
            Arc::new(Field::new("entries", entries.data_type().clone(), false)),
            OffsetBuffer::new(vec![0, 2, 2].into()),
            entries,
            None,
            false,
        );
        let b = batch(vec![("a", Arc::new(list) as ArrayRef), ("r", Arc::new(row)), ("m", Arc::new(map))]);
        assert_eq!(format_row(RowKind::Insert, &b, 0), "+I[[1, null, 3], +I[1, z], {a=1, b=null}]");
        assert_eq!(format_row(RowKind::Delete, &b, 1), "-D[[], +I[null, null], {}]");
    }

    fn table(opts: &[(&str, &str)]) -> TableDef {
        let mut options = BTreeMap::new();
        options.insert("connector".to_string(), OptionValue { value: "print".into(), location: Location::new(1, 1) });
        for (k, v) in opts {
            options.insert(k.to_string(), OptionValue { value: v.to_string(), location: Location::new(2, 1) });
        }
        TableDef {
            path: ObjectPath::new("c", "d", "out"),
            columns: vec![ColumnDef::physical("a", LogicalType::nullable(FlinkType::Int))],
            primary_key: None,
            watermark: None,
            options,
            comment: None,
            temporary: false,
            location: Location::new(1, 1),
        }
    }

    #[tokio::test]
    async fn sink_prefixes_and_validates() {
        let b = batch(vec![("a", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef)]);
        let mut sink = PrintSink::new("out", Some("agg"), Target::Memory);
        sink.write(ChangeBatch::new(b.clone(), vec![RowKind::UpdateBefore, RowKind::UpdateAfter])).await.unwrap();
        assert_eq!(sink.captured(), "agg> -U[1]\nagg> +U[2]\n");
        let mut sink = PrintSink::new("out", Some(""), Target::Memory);
        sink.write(ChangeBatch::inserts(b)).await.unwrap();
        assert_eq!(sink.captured(), "+I[1]\n+I[2]\n");

        let mut reg = ConnectorRegistry::new();
        register(&mut reg);
        let f = reg.validate(&table(&[("print-identifier", "x"), ("standard-error", "true"), ("sink.parallelism", "2")])).unwrap();
        assert!(!f.supports_source());
        assert!(f.sink_accepts_updates(&table(&[])));
        assert!(f.create_sink(&table(&[("standard-error", "true")]), &ChangelogMode::All).is_ok());
        let e = reg.validate(&table(&[("print-identifer", "x")])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("did you mean 'print-identifier'"), "{e}");
        assert!(reg.validate(&table(&[("standard-error", "yes")])).is_err());
        assert!(f.create_source(&table(&[]), &[]).is_err());
    }
}
