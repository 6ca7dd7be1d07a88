//! The `datagen` connector: a source that invents rows, with Flink's option names and meanings.
//!
//! Table options: `rows-per-second` (default 10000), `number-of-rows` (bounded when set; a
//! negative value yields no rows, as in Flink), `scan.parallelism` (accepted). Per physical
//! column `#`: `fields.#.kind` = `random` (default) | `sequence`, and for the kind and type:
//!
//! | type                         | random                       | sequence       |
//! |------------------------------|------------------------------|----------------|
//! | TINYINT .. BIGINT            | min, max, null-rate          | start, end     |
//! | FLOAT, DOUBLE, DECIMAL       | min, max, null-rate          | start, end     |
//! | BOOLEAN                      | null-rate                    | -              |
//! | CHAR(n)                      | null-rate (length n)         | start, end     |
//! | VARCHAR(n) / STRING          | length, var-len, null-rate   | start, end     |
//! | BINARY(n)                    | - (length n)                 | start, end     |
//! | VARBINARY(n) / BYTES         | length, var-len              | start, end     |
//! | DATE, TIME                   | - (the current date / time)  | -              |
//! | TIMESTAMP, TIMESTAMP_LTZ     | max-past, null-rate          | -              |
//! | ARRAY                        | length (3), null-rate, element.* | -          |
//! | MAP                          | length (3), null-rate, key.*, value.* | -     |
//! | ROW                          | null-rate, <field>.*         | -              |
//!
//! Defaults follow Flink: numbers span the whole range of their type (FLOAT and DOUBLE from the
//! smallest positive value to the largest, DECIMAL from 0 to its largest value), random strings
//! are lowercase hex of length 100 for STRING (the declared length otherwise), random bytes 100
//! long for BYTES, timestamps are "now" minus a random span up to `max-past`. A sequence column
//! yields each value of `[start, end]` once, in order; the source ends after the shortest
//! sequence or after `number-of-rows`, whichever comes first, even when the sequence column is
//! not read by the query. Any `fields.*` option that does not apply is an error naming the
//! column (with a suggestion when the column name looks misspelled).
//!
//! Values are written straight into Arrow buffers, a batch of up to `batch_size` rows at a time.
//! Random values come from a small fast generator seeded per table and column, so a script
//! produces the same rows on every run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use rsql_common::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, Int8Array, ListArray, MapArray, StringArray, StructArray, Time64MicrosecondArray,
    TimestampMicrosecondArray, UInt32Array,
};
use rsql_common::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use rsql_common::arrow::compute;
use rsql_common::arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use rsql_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rsql_common::builder::{datum_at, Datum};
use rsql_common::catalog::TableDef;
use rsql_common::options::{did_you_mean, option_location, parse_bool, parse_duration, OptionKind, OptionSchema, OptionSpec};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::{ChangeBatch, Result, RsqlError};
use rsql_runtime::{ChangelogMode, ConnectorFactory, ConnectorRegistry, ProducedColumn, Sink, Source, SourceContext, SourceInfo};

/// Flink's default emit rate.
pub const DEFAULT_ROWS_PER_SECOND: u64 = 10_000;
/// Length of random STRING / BYTES values when no `length` is given.
pub const DEFAULT_VAR_LENGTH: usize = 100;
/// Number of elements of random ARRAY / MAP values when no `length` is given.
pub const DEFAULT_COLLECTION_LENGTH: usize = 3;
/// A batch never holds more than this many bytes of string / binary data.
const MAX_BATCH_BYTES: usize = 1 << 28;

pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(DatagenFactory));
}

/// The factory registered as `'connector' = 'datagen'`.
pub struct DatagenFactory;

impl ConnectorFactory for DatagenFactory {
    fn name(&self) -> &'static str {
        "datagen"
    }

    fn options(&self, _table: &TableDef) -> OptionSchema {
        OptionSchema::new(vec![
            OptionSpec::optional("rows-per-second", OptionKind::Int),
            OptionSpec::optional("number-of-rows", OptionKind::Int),
            OptionSpec::optional("scan.parallelism", OptionKind::Int),
        ])
        .with_prefixes(&["fields."])
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        DatagenSpec::from_table(table).map(|_| ())
    }

    fn supports_sink(&self) -> bool {
        false
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        let spec = DatagenSpec::from_table(table)?;
        Ok(SourceInfo { changelog_mode: ChangelogMode::InsertOnly, bounded: spec.row_limit().is_some() })
    }

    fn create_source(&self, table: &TableDef, columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        Ok(Box::new(DatagenSource::new(table, columns)?))
    }

    fn create_sink(&self, table: &TableDef, _input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        Err(RsqlError::Options {
            table: table.path.name.clone(),
            message: "the 'datagen' connector can only be read from; write into a 'print', 'blackhole' or another sink table".into(),
            location: Some(option_location(table, "connector")),
        })
    }
}

/// The validated options of one datagen table.
#[derive(Clone, Debug)]
pub struct DatagenSpec {
    pub rows_per_second: u64,
    /// `number-of-rows`; negative values count as 0.
    pub number_of_rows: Option<u64>,
    /// One per physical column, in declaration order.
    pub columns: Vec<FieldSpec>,
}

/// How the values of one column (or of a nested field) are made.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    /// The option path: the column name, or `col.element`, `col.key`, `col.field` when nested.
    pub path: String,
    pub ty: LogicalType,
    pub generator: Generator,
    /// Probability of NULL per value (Flink's `null-rate`); 0 never, 1 always.
    pub null_rate: f32,
}

#[derive(Clone, Debug)]
pub enum Generator {
    /// `start`, `start + 1`, ..., `end` (inclusive), each value once.
    Sequence { start: i64, end: i64 },
    /// Uniform whole numbers in `[min, max]`.
    Int { min: i64, max: i64 },
    /// Uniform floating point numbers in `[min, max]`.
    Float { min: f64, max: f64 },
    /// Uniform decimals in `[min, max]`, rounded to the column's scale.
    Decimal { min: f64, max: f64 },
    Bool,
    /// Lowercase hex strings of `length` characters (1 to `length - 1` when `var_len`).
    String { length: usize, var_len: bool },
    /// Random bytes, `length` of them (1 to `length - 1` when `var_len`).
    Bytes { length: usize, var_len: bool },
    /// Today's date in the machine's time zone.
    CurrentDate,
    /// The current time of day (millisecond precision) in the machine's time zone.
    CurrentTime,
    /// The current instant (milliseconds) minus a random span of up to `max_past_ms`.
    Timestamp { max_past_ms: u64 },
    Array { length: usize, element: Box<FieldSpec> },
    Map { length: usize, key: Box<FieldSpec>, value: Box<FieldSpec> },
    Row { fields: Vec<FieldSpec> },
}

impl DatagenSpec {
    /// Reads and checks every datagen option of a table.
    pub fn from_table(table: &TableDef) -> Result<DatagenSpec> {
        let mut p = OptionReader { table, allowed: BTreeSet::new() };
        let rows_per_second = match p.int("rows-per-second")? {
            None => DEFAULT_ROWS_PER_SECOND,
            Some(v) if v > 0 => v as u64,
            Some(v) => {
                return Err(p.error(
                    "rows-per-second",
                    format!("must be a positive number of rows, not {v}; set it high (e.g. '1000000000') for no limit"),
                ))
            }
        };
        let number_of_rows = p.int("number-of-rows")?.map(|v| v.max(0) as u64);
        p.int("scan.parallelism")?;

        let mut columns = Vec::new();
        for col in table.physical_columns() {
            let kind_key = format!("fields.{}.kind", col.name);
            let kind = p.string(&kind_key).unwrap_or("random");
            let spec = match kind {
                "random" => random_field(&mut p, &col.name, &col.ty)?,
                "sequence" => sequence_field(&mut p, &col.name, &col.ty)?,
                other => {
                    return Err(p.error(
                        &kind_key,
                        format!("unknown generator kind '{other}'; use 'random' or 'sequence'"),
                    ))
                }
            };
            columns.push(spec);
        }
        p.reject_unused(&columns)?;
        Ok(DatagenSpec { rows_per_second, number_of_rows, columns })
    }

    /// How many rows the source yields before it ends, or None when it never ends.
    pub fn row_limit(&self) -> Option<u64> {
        let mut limit = self.number_of_rows;
        for c in &self.columns {
            if let Generator::Sequence { start, end } = c.generator {
                let n = (end as i128 - start as i128 + 1).clamp(0, u64::MAX as i128) as u64;
                limit = Some(limit.map_or(n, |l| l.min(n)));
            }
        }
        limit
    }
}

/// Reads options of one table, remembering every key that applies to it.
struct OptionReader<'a> {
    table: &'a TableDef,
    /// Every option key that the table's columns accept (whether given or not).
    allowed: BTreeSet<String>,
}

impl<'a> OptionReader<'a> {
    fn error(&self, key: &str, message: impl Into<String>) -> RsqlError {
        RsqlError::Options {
            table: self.table.path.name.clone(),
            message: format!("option '{key}' {}", message.into()),
            location: Some(option_location(self.table, key)),
        }
    }

    fn string(&mut self, key: &str) -> Option<&'a str> {
        self.allowed.insert(key.to_string());
        self.table.option(key).map(str::trim)
    }

    fn int(&mut self, key: &str) -> Result<Option<i64>> {
        match self.string(key) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| self.error(key, format!("has the value '{v}', but it must be a whole number"))),
        }
    }

    /// A whole number within `[lo, hi]` (the range of the column's type).
    fn int_in(&mut self, key: &str, lo: i64, hi: i64, what: &str) -> Result<Option<i64>> {
        match self.int(key)? {
            Some(v) if v < lo || v > hi => Err(self.error(key, format!("is {v}, outside the range of {what} ({lo} to {hi})"))),
            other => Ok(other),
        }
    }

    fn float(&mut self, key: &str) -> Result<Option<f64>> {
        match self.string(key) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(self.error(key, format!("has the value '{v}', but it must be a finite number"))),
            },
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.string(key) {
            None => Ok(None),
            Some(v) => parse_bool(v).map(Some).ok_or_else(|| self.error(key, format!("has the value '{v}', but it must be 'true' or 'false'"))),
        }
    }

    fn length(&mut self, key: &str) -> Result<Option<usize>> {
        match self.int(key)? {
            None => Ok(None),
            Some(v) if (0..=i32::MAX as i64).contains(&v) => Ok(Some(v as usize)),
            Some(v) => Err(self.error(key, format!("is {v}, but a length must be between 0 and {}", i32::MAX))),
        }
    }

    /// `null-rate` of a field, refusing NULLs in a NOT NULL column.
    fn null_rate(&mut self, path: &str, ty: &LogicalType) -> Result<f32> {
        let key = format!("fields.{path}.null-rate");
        let rate = self.float(&key)?.unwrap_or(0.0) as f32;
        if rate > 0.0 && !ty.nullable {
            return Err(self.error(
                &key,
                format!("would write NULLs into '{path}', which is declared {ty}; remove the option or drop NOT NULL"),
            ));
        }
        Ok(rate)
    }

    /// Fails on the first `fields.*` option that no column accepts.
    fn reject_unused(&self, columns: &[FieldSpec]) -> Result<()> {
        for key in self.table.options.keys() {
            if !key.starts_with("fields.") || self.allowed.contains(key) {
                continue;
            }
            return Err(self.unused_option_error(key, columns));
        }
        Ok(())
    }

    fn unused_option_error(&self, key: &str, columns: &[FieldSpec]) -> RsqlError {
        let rest = &key["fields.".len()..];
        let names_column = |name: &str| rest.starts_with(&format!("{name}."));
        if let Some(col) = columns.iter().filter(|c| names_column(&c.path)).max_by_key(|c| c.path.len()) {
            let prefix = format!("fields.{}.", col.path);
            let accepted: Vec<&str> = self.allowed.iter().filter(|k| k.starts_with(&prefix)).map(|k| k.as_str()).collect();
            let kind = match col.generator {
                Generator::Sequence { .. } => "sequence",
                _ => "random",
            };
            let hint = match did_you_mean(key, accepted.iter().copied()) {
                Some(s) => format!("did you mean '{s}'? "),
                None => String::new(),
            };
            return self.error(
                key,
                format!(
                    "does not apply to column '{}' of type {} with kind '{kind}'; {hint}the options for this column are: {}",
                    col.path,
                    col.ty,
                    accepted.join(", ")
                ),
            );
        }
        if let Some(c) = self.table.columns.iter().filter(|c| !c.is_physical() && names_column(&c.name)).max_by_key(|c| c.name.len()) {
            return self.error(
                key,
                format!("names column '{}', which is computed or metadata; datagen generates only physical columns", c.name),
            );
        }
        let name = rest.rsplit_once('.').map(|(a, _)| a).unwrap_or(rest);
        let physical: Vec<&str> = columns.iter().map(|c| c.path.as_str()).collect();
        let hint = match did_you_mean(name, physical.iter().copied()) {
            Some(s) => format!("did you mean '{s}'?"),
            None => format!("the table's physical columns are: {}", physical.join(", ")),
        };
        self.error(key, format!("names no column '{name}' of this table; {hint}"))
    }
}

fn random_field(p: &mut OptionReader<'_>, path: &str, ty: &LogicalType) -> Result<FieldSpec> {
    let key = |opt: &str| format!("fields.{path}.{opt}");
    let fixed_length_error = |p: &OptionReader<'_>| {
        p.error(&key("length"), format!("cannot be set for '{path}': CHAR(n) and BINARY(n) values always have length n"))
    };
    let mut null_rate = 0.0;
    let generator = match &ty.ty {
        FlinkType::Boolean => {
            null_rate = p.null_rate(path, ty)?;
            Generator::Bool
        }
        FlinkType::Char(n) => {
            if p.table.option(&key("length")).is_some() {
                return Err(fixed_length_error(p));
            }
            null_rate = p.null_rate(path, ty)?;
            Generator::String { length: *n as usize, var_len: false }
        }
        FlinkType::Varchar(n) => {
            let declared = if *n == MAX_LENGTH { DEFAULT_VAR_LENGTH } else { *n as usize };
            let length = p.length(&key("length"))?.unwrap_or(declared);
            null_rate = p.null_rate(path, ty)?;
            let var_len = p.bool(&key("var-len"))?.unwrap_or(false);
            Generator::String { length, var_len }
        }
        FlinkType::Binary(n) => {
            if p.table.option(&key("length")).is_some() {
                return Err(fixed_length_error(p));
            }
            Generator::Bytes { length: *n as usize, var_len: false }
        }
        FlinkType::Varbinary(n) => {
            let declared = if *n == MAX_LENGTH { DEFAULT_VAR_LENGTH } else { *n as usize };
            let length = p.length(&key("length"))?.unwrap_or(declared);
            let var_len = p.bool(&key("var-len"))?.unwrap_or(false);
            Generator::Bytes { length, var_len }
        }
        FlinkType::TinyInt | FlinkType::SmallInt | FlinkType::Int | FlinkType::BigInt => {
            let (lo, hi) = int_range(&ty.ty);
            let what = ty.ty.to_string();
            let min = p.int_in(&key("min"), lo, hi, &what)?.unwrap_or(lo);
            let max = p.int_in(&key("max"), lo, hi, &what)?.unwrap_or(hi);
            check_min_max(p, path, min as f64, max as f64)?;
            null_rate = p.null_rate(path, ty)?;
            Generator::Int { min, max }
        }
        FlinkType::Float | FlinkType::Double => {
            let (lo, hi) = if ty.ty == FlinkType::Float {
                (f32::from_bits(1) as f64, f32::MAX as f64)
            } else {
                (f64::from_bits(1), f64::MAX)
            };
            let min = p.float(&key("min"))?.unwrap_or(lo);
            let max = p.float(&key("max"))?.unwrap_or(hi);
            check_min_max(p, path, min, max)?;
            null_rate = p.null_rate(path, ty)?;
            Generator::Float { min, max }
        }
        FlinkType::Decimal(prec, scale) => {
            let largest = 10f64.powi(*prec as i32 - *scale as i32) - 10f64.powi(-(*scale as i32));
            let min = p.float(&key("min"))?.unwrap_or(f64::from_bits(1));
            let max = p.float(&key("max"))?.unwrap_or(f64::MAX);
            check_min_max(p, path, min, max)?;
            null_rate = p.null_rate(path, ty)?;
            Generator::Decimal { min: min.max(-largest), max: max.min(largest).max(min.max(-largest)) }
        }
        FlinkType::Date => Generator::CurrentDate,
        FlinkType::Time(_) => Generator::CurrentTime,
        FlinkType::Timestamp(_) | FlinkType::TimestampLtz(_) => {
            let k = key("max-past");
            let max_past = match p.string(&k) {
                None => Duration::ZERO,
                Some(v) => parse_duration(v)
                    .ok_or_else(|| p.error(&k, format!("has the value '{v}', but it must be a duration such as '10 s', '5 min' or '1 h'")))?,
            };
            null_rate = p.null_rate(path, ty)?;
            Generator::Timestamp { max_past_ms: max_past.as_millis().min(i64::MAX as u128) as u64 }
        }
        FlinkType::Array(element) => {
            let length = p.length(&key("length"))?.unwrap_or(DEFAULT_COLLECTION_LENGTH);
            null_rate = p.null_rate(path, ty)?;
            let element = random_field(p, &format!("{path}.element"), element)?;
            Generator::Array { length, element: Box::new(element) }
        }
        FlinkType::Map(k, v) => {
            let length = p.length(&key("length"))?.unwrap_or(DEFAULT_COLLECTION_LENGTH);
            null_rate = p.null_rate(path, ty)?;
            // Arrow map keys are never NULL.
            let key_rate = format!("fields.{path}.key.null-rate");
            if p.float(&key_rate)?.is_some_and(|r| r > 0.0) {
                return Err(p.error(&key_rate, "cannot be used: map keys are never NULL here; remove the option"));
            }
            let key_spec = random_field(p, &format!("{path}.key"), &k.as_ref().clone().with_nullable(false))?;
            let value_spec = random_field(p, &format!("{path}.value"), v)?;
            Generator::Map { length, key: Box::new(key_spec), value: Box::new(value_spec) }
        }
        FlinkType::Row(fields) => {
            null_rate = p.null_rate(path, ty)?;
            let fields = fields
                .iter()
                .map(|(name, fty)| random_field(p, &format!("{path}.{name}"), fty))
                .collect::<Result<Vec<_>>>()?;
            Generator::Row { fields }
        }
        FlinkType::Null => {
            return Err(p.error(&key("kind"), format!("cannot generate values for '{path}' of type {}", ty)));
        }
    };
    Ok(FieldSpec { path: path.to_string(), ty: ty.clone(), generator, null_rate })
}

fn check_min_max(p: &OptionReader<'_>, path: &str, min: f64, max: f64) -> Result<()> {
    if min > max {
        return Err(p.error(
            &format!("fields.{path}.min"),
            format!("({min}) is greater than 'fields.{path}.max' ({max}); swap them"),
        ));
    }
    Ok(())
}

fn int_range(ty: &FlinkType) -> (i64, i64) {
    match ty {
        FlinkType::TinyInt => (i8::MIN as i64, i8::MAX as i64),
        FlinkType::SmallInt => (i16::MIN as i64, i16::MAX as i64),
        FlinkType::Int => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

fn sequence_field(p: &mut OptionReader<'_>, path: &str, ty: &LogicalType) -> Result<FieldSpec> {
    let start_key = format!("fields.{path}.start");
    let end_key = format!("fields.{path}.end");
    // Flink reads start/end of FLOAT, DOUBLE and DECIMAL sequences as INT values.
    let (lo, hi) = match &ty.ty {
        FlinkType::TinyInt | FlinkType::SmallInt | FlinkType::Int | FlinkType::BigInt => int_range(&ty.ty),
        FlinkType::Float | FlinkType::Double | FlinkType::Decimal(..) => (i32::MIN as i64, i32::MAX as i64),
        FlinkType::Char(_) | FlinkType::Varchar(_) | FlinkType::Binary(_) | FlinkType::Varbinary(_) => (i64::MIN, i64::MAX),
        other => {
            return Err(p.error(
                &format!("fields.{path}.kind"),
                format!("is 'sequence', but the sequence generator does not support columns of type {other}; use 'random'"),
            ))
        }
    };
    let what = format!("a {} sequence", ty.ty);
    let start = p.int_in(&start_key, lo, hi, &what)?;
    let end = p.int_in(&end_key, lo, hi, &what)?;
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) => (s, e),
        (None, _) => return Err(p.error(&start_key, "is required for a 'sequence' column; set both 'start' and 'end' (inclusive)")),
        (_, None) => return Err(p.error(&end_key, "is required for a 'sequence' column; set both 'start' and 'end' (inclusive)")),
    };
    if start > end {
        return Err(p.error(&start_key, format!("({start}) is greater than '{end_key}' ({end}); a sequence counts upwards")));
    }
    if let FlinkType::Decimal(prec, scale) = ty.ty {
        let limit = 10i128.pow(prec as u32);
        let fits = |v: i64| (v as i128).checked_mul(10i128.pow(scale.max(0) as u32)).is_some_and(|x| x.abs() < limit);
        if !fits(start) || !fits(end) {
            return Err(p.error(&end_key, format!("makes values that do not fit {}; narrow the range or widen the type", ty.ty)));
        }
    }
    Ok(FieldSpec { path: path.to_string(), ty: ty.clone(), generator: Generator::Sequence { start, end }, null_rate: 0.0 })
}

/// One produced column and the state of its random generator.
struct ColumnGen {
    spec: FieldSpec,
    field: FieldRef,
    rng: SmallRng,
}

/// A running datagen source. `next_batch` makes batches synchronously; `run` paces them.
pub struct DatagenSource {
    table: String,
    schema: SchemaRef,
    columns: Vec<ColumnGen>,
    rows_per_second: u64,
    limit: Option<u64>,
    /// Rows made so far; the position in every sequence.
    produced: u64,
    /// Upper bound of rows per batch so string data stays within `MAX_BATCH_BYTES`.
    max_rows_by_size: usize,
}

impl DatagenSource {
    pub fn new(table: &TableDef, produced: &[ProducedColumn]) -> Result<Self> {
        let spec = DatagenSpec::from_table(table)?;
        let tname = table.path.name.clone();
        let mut columns = Vec::with_capacity(produced.len());
        for pc in produced {
            let (name, ty) = match pc {
                ProducedColumn::Physical { name, ty } => (name, ty),
                ProducedColumn::Metadata { key, name, .. } => {
                    return Err(RsqlError::Options {
                        table: tname,
                        message: format!(
                            "column '{name}' reads metadata '{key}', but the 'datagen' connector provides no metadata; declare it as a physical column"
                        ),
                        location: Some(table.location),
                    })
                }
            };
            let col = spec.columns.iter().find(|c| &c.path == name).ok_or_else(|| {
                RsqlError::execution(format!("datagen table '{tname}': the query reads column '{name}', which the table does not declare"))
            })?;
            if col.ty.ty != ty.ty {
                return Err(RsqlError::execution(format!(
                    "datagen table '{tname}': column '{name}' is declared {} but read as {}",
                    col.ty.ty, ty.ty
                )));
            }
            let seed = fnv1a(&[table.path.to_string().as_bytes(), b"\0", name.as_bytes()]);
            columns.push(ColumnGen { spec: col.clone(), field: Arc::new(ty.to_field(name)), rng: SmallRng::seed_from_u64(seed) });
        }
        let schema = Arc::new(Schema::new(columns.iter().map(|c| c.field.as_ref().clone()).collect::<Vec<_>>()));
        let row_bytes: usize = columns.iter().map(|c| bytes_per_row(&c.spec)).fold(0usize, |a, b| a.saturating_add(b));
        if row_bytes > i32::MAX as usize {
            return Err(RsqlError::Options {
                table: tname,
                message: format!("one generated row would hold {row_bytes} bytes; lower the 'length' options"),
                location: Some(table.location),
            });
        }
        let max_rows_by_size = (MAX_BATCH_BYTES / row_bytes.max(1)).max(1);
        Ok(DatagenSource {
            table: tname,
            schema,
            columns,
            rows_per_second: spec.rows_per_second,
            limit: spec.row_limit(),
            produced: 0,
            max_rows_by_size,
        })
    }

    /// Replaces the seeds of the random generators (each column gets its own stream).
    pub fn with_seed(mut self, seed: u64) -> Self {
        for (i, c) in self.columns.iter_mut().enumerate() {
            c.rng = SmallRng::seed_from_u64(seed ^ fnv1a(&[c.spec.path.as_bytes(), &(i as u64).to_le_bytes()]));
        }
        self
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows the source yields in total, or None when unbounded.
    pub fn row_limit(&self) -> Option<u64> {
        self.limit
    }

    /// Makes the next batch of at most `max_rows` rows, or None once the source is exhausted.
    pub fn next_batch(&mut self, max_rows: usize) -> Result<Option<ChangeBatch>> {
        let remaining = self.limit.map_or(u64::MAX, |l| l.saturating_sub(self.produced));
        let n = (max_rows.max(1).min(self.max_rows_by_size) as u64).min(remaining) as usize;
        if n == 0 {
            return Ok(None);
        }
        let now = Clock::now();
        let offset = self.produced;
        let mut arrays = Vec::with_capacity(self.columns.len());
        for c in &mut self.columns {
            let arr = generate(&c.spec, c.field.data_type(), &mut c.rng, n, offset, &now)
                .map_err(|e| RsqlError::data(format!("datagen table '{}', column '{}'", self.table, c.spec.path), e))?;
            arrays.push(arr);
        }
        let data = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &RecordBatchOptions::new().with_row_count(Some(n)))?;
        self.produced += n as u64;
        Ok(Some(ChangeBatch::inserts(data)))
    }
}

#[async_trait]
impl Source for DatagenSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<()> {
        let mut stop = ctx.stop.clone();
        let stopped = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    // The job dropped its stop handle: keep running until the channel closes.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::pin!(stopped);

        let rate = self.rows_per_second as f64;
        // A batch never holds more than the rows due within one latency bound, so slow rates
        // still deliver rows promptly.
        let due_per_delay = if ctx.max_batch_delay.is_zero() {
            f64::INFINITY
        } else {
            (rate * ctx.max_batch_delay.as_secs_f64()).floor().max(1.0)
        };
        let batch_rows = (ctx.batch_size.max(1) as f64).min(due_per_delay) as usize;
        let started = Instant::now();
        let first = self.produced;
        loop {
            if ctx.is_stopping() {
                return Ok(());
            }
            let due = started + Duration::from_secs_f64(((self.produced - first) as f64 / rate).min(1e12));
            if due > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = &mut stopped => return Ok(()),
                }
            }
            let Some(batch) = self.next_batch(batch_rows)? else {
                return Ok(());
            };
            tokio::select! {
                r = ctx.emit(batch) => r?,
                _ = &mut stopped => return Ok(()),
            }
            ctx.position(self.produced.to_le_bytes().to_vec()).await?;
        }
    }

    fn checkpointable(&self) -> bool {
        true
    }

    /// Resumes after the rows already produced: sequences continue where they were; random
    /// columns draw new values, as Flink's datagen does after a restore.
    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let b: [u8; 8] = position.try_into().map_err(|_| {
            RsqlError::execution(format!("datagen table '{}': the saved position is not a row count", self.table))
        })?;
        self.produced = u64::from_le_bytes(b);
        Ok(())
    }
}

/// The clock readings one batch shares (Flink reads the clock per row; a batch takes
/// microseconds, so its rows agree to the millisecond anyway).
struct Clock {
    epoch_ms: i64,
    local_date: i32,
    local_time_us: i64,
}

impl Clock {
    fn now() -> Clock {
        let epoch_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let local = chrono::Local::now().naive_local();
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        use chrono::Timelike;
        let t = local.time();
        Clock {
            epoch_ms,
            local_date: (local.date() - epoch).num_days() as i32,
            local_time_us: (t.num_seconds_from_midnight() as i64 * 1000 + (t.nanosecond() / 1_000_000).min(999) as i64) * 1000,
        }
    }
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Bytes of variable-length data one row of a field holds at most.
fn bytes_per_row(spec: &FieldSpec) -> usize {
    match &spec.generator {
        Generator::String { length, .. } | Generator::Bytes { length, .. } => *length,
        Generator::Sequence { .. } => 20,
        Generator::Array { length, element } => length.saturating_mul(bytes_per_row(element).max(8)),
        Generator::Map { length, key, value } => {
            length.saturating_mul(bytes_per_row(key).max(8).saturating_add(bytes_per_row(value).max(8)))
        }
        Generator::Row { fields } => fields.iter().map(bytes_per_row).fold(0usize, |a, b| a.saturating_add(b)),
        _ => 8,
    }
}

fn null_buffer(rng: &mut SmallRng, n: usize, rate: f32) -> Option<NullBuffer> {
    if rate <= 0.0 {
        return None;
    }
    // Flink keeps a value when a uniform float in [0, 1) is greater than the rate.
    Some(NullBuffer::new(BooleanBuffer::collect_bool(n, |_| rng.random::<f32>() > rate)))
}

fn uniform_f64(rng: &mut SmallRng, min: f64, max: f64) -> f64 {
    if min == max {
        return min;
    }
    let u: f64 = rng.random();
    // Interpolating keeps the result finite even when max - min overflows.
    (min * (1.0 - u) + max * u).clamp(min, max)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Makes `n` values of one field as an Arrow array of type `dt`. `offset` is the index of the
/// first row in the stream (the position in a sequence).
fn generate(spec: &FieldSpec, dt: &DataType, rng: &mut SmallRng, n: usize, offset: u64, now: &Clock) -> Result<ArrayRef> {
    let nulls = null_buffer(rng, n, spec.null_rate);
    let arr: ArrayRef = match &spec.generator {
        Generator::Sequence { start, .. } => sequence(spec, dt, *start, n, offset)?,
        Generator::Int { min, max } => {
            let (min, max) = (*min, *max);
            let mut draw = || -> i64 {
                if min == i64::MIN && max == i64::MAX {
                    rng.next_u64() as i64
                } else {
                    rng.random_range(min..=max)
                }
            };
            match &spec.ty.ty {
                FlinkType::TinyInt => Arc::new(Int8Array::new((0..n).map(|_| draw() as i8).collect(), nulls)),
                FlinkType::SmallInt => Arc::new(Int16Array::new((0..n).map(|_| draw() as i16).collect(), nulls)),
                FlinkType::Int => Arc::new(Int32Array::new((0..n).map(|_| draw() as i32).collect(), nulls)),
                _ => Arc::new(Int64Array::new((0..n).map(|_| draw()).collect(), nulls)),
            }
        }
        Generator::Float { min, max } => {
            if spec.ty.ty == FlinkType::Float {
                Arc::new(Float32Array::new((0..n).map(|_| uniform_f64(rng, *min, *max) as f32).collect(), nulls))
            } else {
                Arc::new(Float64Array::new((0..n).map(|_| uniform_f64(rng, *min, *max)).collect(), nulls))
            }
        }
        Generator::Decimal { min, max } => {
            let FlinkType::Decimal(p, s) = spec.ty.ty else {
                return Err(RsqlError::execution("decimal generator on a non-decimal column"));
            };
            let factor = 10f64.powi(s as i32);
            let limit = 10i128.pow(p as u32) - 1;
            let values: ScalarBuffer<i128> = (0..n)
                .map(|_| {
                    let x = uniform_f64(rng, *min, *max) * factor;
                    let rounded = if x >= 0.0 { (x + 0.5).floor() } else { (x - 0.5).ceil() };
                    (rounded as i128).clamp(-limit, limit)
                })
                .collect();
            Arc::new(Decimal128Array::new(values, nulls).with_precision_and_scale(p, s)?)
        }
        Generator::Bool => Arc::new(BooleanArray::new(BooleanBuffer::collect_bool(n, |_| rng.random::<bool>()), nulls)),
        Generator::String { length, var_len } => {
            let (offsets, values) = random_bytes(rng, n, *length, *var_len, true)?;
            Arc::new(StringArray::try_new(offsets, values, nulls)?)
        }
        Generator::Bytes { length, var_len } => {
            let (offsets, values) = random_bytes(rng, n, *length, *var_len, false)?;
            Arc::new(BinaryArray::try_new(offsets, values, nulls)?)
        }
        Generator::CurrentDate => Arc::new(Date32Array::new(ScalarBuffer::from(vec![now.local_date; n]), nulls)),
        Generator::CurrentTime => Arc::new(Time64MicrosecondArray::new(ScalarBuffer::from(vec![now.local_time_us; n]), nulls)),
        Generator::Timestamp { max_past_ms } => {
            let values: ScalarBuffer<i64> = (0..n)
                .map(|_| {
                    let past = if *max_past_ms > 0 { rng.random_range(0..=*max_past_ms) as i64 } else { 0 };
                    now.epoch_ms.saturating_sub(past).saturating_mul(1000)
                })
                .collect();
            Arc::new(TimestampMicrosecondArray::new(values, nulls).with_data_type(dt.clone()))
        }
        Generator::Array { length, element } => {
            let DataType::List(item) = dt else {
                return Err(RsqlError::execution(format!("ARRAY column has Arrow type {dt}")));
            };
            let total = n.checked_mul(*length).ok_or_else(|| RsqlError::execution("array too large"))?;
            let values = generate(element, item.data_type(), rng, total, 0, now)?;
            let offsets = OffsetBuffer::new(ScalarBuffer::from(
                (0..=n).map(|i| i32::try_from(i * length)).collect::<std::result::Result<Vec<i32>, _>>().map_err(|_| {
                    RsqlError::execution(format!("ARRAY values of '{}' are too large for one batch", spec.path))
                })?,
            ));
            Arc::new(ListArray::try_new(item.clone(), offsets, values, nulls)?)
        }
        Generator::Map { length, key, value } => random_map(dt, rng, n, *length, key, value, nulls, now)?,
        Generator::Row { fields } => {
            let DataType::Struct(arrow_fields) = dt else {
                return Err(RsqlError::execution(format!("ROW column has Arrow type {dt}")));
            };
            let children = fields
                .iter()
                .zip(arrow_fields.iter())
                .map(|(f, af)| generate(f, af.data_type(), rng, n, 0, now))
                .collect::<Result<Vec<_>>>()?;
            Arc::new(StructArray::try_new(arrow_fields.clone(), children, nulls)?)
        }
    };
    Ok(arr)
}

/// `n` random values as (offsets, data): lowercase hex characters or raw bytes.
fn random_bytes(rng: &mut SmallRng, n: usize, length: usize, var_len: bool, hex: bool) -> Result<(OffsetBuffer<i32>, Buffer)> {
    let total = n.checked_mul(length).filter(|t| *t <= i32::MAX as usize).ok_or_else(|| {
        RsqlError::execution(format!("{n} values of length {length} do not fit one batch; lower the 'length' option"))
    })?;
    let mut offsets = Vec::with_capacity(n + 1);
    let mut data: Vec<u8> = Vec::with_capacity(total);
    offsets.push(0i32);
    for _ in 0..n {
        let len = if var_len && length > 1 { rng.random_range(1..length) } else { length };
        let mut left = len;
        while left > 0 {
            let mut bits = rng.next_u64();
            if hex {
                let take = left.min(16);
                for _ in 0..take {
                    data.push(HEX[(bits & 0xf) as usize]);
                    bits >>= 4;
                }
                left -= take;
            } else {
                let take = left.min(8);
                data.extend_from_slice(&bits.to_le_bytes()[..take]);
                left -= take;
            }
        }
        offsets.push(data.len() as i32);
    }
    Ok((OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(data)))
}

fn sequence(spec: &FieldSpec, dt: &DataType, start: i64, n: usize, offset: u64) -> Result<ArrayRef> {
    // Validation keeps every value of the sequence within the column's type.
    let value = |i: usize| start.wrapping_add(offset as i64).wrapping_add(i as i64);
    Ok(match &spec.ty.ty {
        FlinkType::TinyInt => Arc::new(Int8Array::from_iter_values((0..n).map(|i| value(i) as i8))),
        FlinkType::SmallInt => Arc::new(Int16Array::from_iter_values((0..n).map(|i| value(i) as i16))),
        FlinkType::Int => Arc::new(Int32Array::from_iter_values((0..n).map(|i| value(i) as i32))),
        FlinkType::BigInt => Arc::new(Int64Array::from_iter_values((0..n).map(value))),
        FlinkType::Float => Arc::new(Float32Array::from_iter_values((0..n).map(|i| value(i) as f32))),
        FlinkType::Double => Arc::new(Float64Array::from_iter_values((0..n).map(|i| value(i) as f64))),
        FlinkType::Decimal(p, s) => {
            let factor = 10i128.pow((*s).max(0) as u32);
            Arc::new(Decimal128Array::from_iter_values((0..n).map(|i| value(i) as i128 * factor)).with_precision_and_scale(*p, *s)?)
        }
        FlinkType::Char(_) | FlinkType::Varchar(_) => {
            let mut offsets = Vec::with_capacity(n + 1);
            let mut data: Vec<u8> = Vec::with_capacity(n * 8);
            offsets.push(0i32);
            for i in 0..n {
                data.extend_from_slice(value(i).to_string().as_bytes());
                offsets.push(i32::try_from(data.len()).map_err(|_| RsqlError::execution("sequence batch too large"))?);
            }
            Arc::new(StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(data), None)?)
        }
        FlinkType::Binary(_) | FlinkType::Varbinary(_) => {
            Arc::new(BinaryArray::from_iter_values((0..n).map(|i| value(i).to_be_bytes())))
        }
        other => return Err(RsqlError::execution(format!("no sequence generator for {other} (Arrow {dt})"))),
    })
}

#[allow(clippy::too_many_arguments)]
fn random_map(
    dt: &DataType,
    rng: &mut SmallRng,
    n: usize,
    length: usize,
    key: &FieldSpec,
    value: &FieldSpec,
    nulls: Option<NullBuffer>,
    now: &Clock,
) -> Result<ArrayRef> {
    let DataType::Map(entries_field, _) = dt else {
        return Err(RsqlError::execution(format!("MAP column has Arrow type {dt}")));
    };
    let DataType::Struct(kv) = entries_field.data_type() else {
        return Err(RsqlError::execution(format!("MAP entries have Arrow type {}", entries_field.data_type())));
    };
    if kv.len() != 2 {
        return Err(RsqlError::execution("MAP entries must have a key and a value"));
    }
    let total = n.checked_mul(length).ok_or_else(|| RsqlError::execution("map too large"))?;
    let keys = generate(key, kv[0].data_type(), rng, total, 0, now)?;
    let values = generate(value, kv[1].data_type(), rng, total, 0, now)?;
    // Like a Java map, a key drawn twice keeps one entry holding the last value drawn for it.
    let mut take: Vec<u32> = Vec::with_capacity(total);
    let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
    offsets.push(0);
    for row in 0..n {
        let base = row * length;
        let mut entries: Vec<(Datum, usize)> = Vec::with_capacity(length);
        for j in 0..length {
            let k = datum_at(keys.as_ref(), base + j)?;
            match entries.iter_mut().find(|(d, _)| *d == k) {
                Some(e) => e.1 = base + j,
                None => entries.push((k, base + j)),
            }
        }
        for (_, idx) in entries {
            take.push(u32::try_from(idx).map_err(|_| RsqlError::execution("map batch too large"))?);
        }
        offsets.push(i32::try_from(take.len()).map_err(|_| RsqlError::execution("map batch too large"))?);
    }
    let idx = UInt32Array::from(take);
    let keys = compute::take(keys.as_ref(), &idx, None)?;
    let values = compute::take(values.as_ref(), &idx, None)?;
    let entries = StructArray::try_new(Fields::from(vec![kv[0].as_ref().clone(), kv[1].as_ref().clone()]), vec![keys, values], None)?;
    Ok(Arc::new(MapArray::try_new(entries_field.clone(), OffsetBuffer::new(ScalarBuffer::from(offsets)), entries, nulls, false)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::arrow::array::{Array, AsArray};
    use rsql_common::arrow::datatypes::{Int32Type, Int64Type};
    use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue};
    use rsql_common::error::Location;
    use std::collections::BTreeMap;
    use rsql_common::builder::{datum_at, Datum};

    fn table(cols: &[(&str, LogicalType)], opts: &[(&str, &str)]) -> TableDef {
        let mut options = BTreeMap::new();
        options.insert("connector".to_string(), OptionValue { value: "datagen".into(), location: Location::new(1, 1) });
        for (i, (k, v)) in opts.iter().enumerate() {
            options.insert(k.to_string(), OptionValue { value: v.to_string(), location: Location::new(2 + i as u64, 3) });
        }
        TableDef {
            path: ObjectPath::new("default_catalog", "default_database", "gen"),
            columns: cols.iter().map(|(n, t)| ColumnDef::physical(*n, t.clone())).collect(),
            primary_key: None,
            watermark: None,
            options,
            comment: None,
            temporary: true,
            location: Location::new(1, 1),
        }
    }

    fn nullable(t: FlinkType) -> LogicalType {
        LogicalType::nullable(t)
    }

    fn produced(t: &TableDef) -> Vec<ProducedColumn> {
        t.physical_columns().map(|c| ProducedColumn::Physical { name: c.name.clone(), ty: c.ty.clone() }).collect()
    }

    fn err(t: &TableDef) -> String {
        match DatagenSpec::from_table(t) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn drain(src: &mut DatagenSource, batch: usize) -> Vec<ChangeBatch> {
        let mut out = Vec::new();
        while let Some(b) = src.next_batch(batch).unwrap() {
            out.push(b);
        }
        out
    }

    #[test]
    fn sequence_yields_each_value_once_then_ends() {
        let t = table(
            &[("id", nullable(FlinkType::BigInt)), ("s", nullable(FlinkType::Varchar(MAX_LENGTH)))],
            &[("fields.id.kind", "sequence"), ("fields.id.start", "5"), ("fields.id.end", "1004")],
        );
        assert!(DatagenFactory.source_info(&t).unwrap().bounded);
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        let batches = drain(&mut src, 300);
        assert_eq!(batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![300, 300, 300, 100]);
        let ids: Vec<i64> = batches.iter().flat_map(|b| b.data.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(ids, (5..=1004).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.is_insert_only()));
        let s = batches[0].data.column(1).as_string::<i32>();
        assert_eq!(s.value(0).len(), 100);
        assert!(s.value(0).bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn number_of_rows_and_the_shortest_sequence_bound_the_source() {
        let t = table(
            &[("a", nullable(FlinkType::Int)), ("b", nullable(FlinkType::Int))],
            &[
                ("number-of-rows", "10"),
                ("fields.a.kind", "sequence"),
                ("fields.a.start", "1"),
                ("fields.a.end", "3"),
            ],
        );
        // Only `b` is read, yet the sequence on `a` still ends the source after 3 rows.
        let mut src = DatagenSource::new(&t, &produced(&t)[1..]).unwrap();
        assert_eq!(drain(&mut src, 100).iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let t = table(&[("a", nullable(FlinkType::Int))], &[("number-of-rows", "7")]);
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        assert_eq!(drain(&mut src, 5).iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![5, 2]);
        let t = table(&[("a", nullable(FlinkType::Int))], &[("number-of-rows", "-1")]);
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        assert!(src.next_batch(5).unwrap().is_none());
        let t = table(&[("a", nullable(FlinkType::Int))], &[]);
        assert!(!DatagenFactory.source_info(&t).unwrap().bounded);
    }

    #[test]
    fn random_numbers_stay_within_min_and_max() {
        let t = table(
            &[
                ("i", nullable(FlinkType::Int)),
                ("t", nullable(FlinkType::TinyInt)),
                ("d", nullable(FlinkType::Double)),
                ("m", nullable(FlinkType::Decimal(6, 2))),
                ("f", nullable(FlinkType::Float)),
            ],
            &[
                ("fields.i.min", "-3"),
                ("fields.i.max", "3"),
                ("fields.t.min", "5"),
                ("fields.t.max", "5"),
                ("fields.d.min", "0.5"),
                ("fields.d.max", "1.5"),
                ("fields.m.min", "1.5"),
                ("fields.m.max", "2.5"),
            ],
        );
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        let b = src.next_batch(5000).unwrap().unwrap();
        let i = b.data.column(0).as_primitive::<Int32Type>();
        assert!(i.values().iter().all(|v| (-3..=3).contains(v)));
        let distinct: BTreeSet<i32> = i.values().iter().copied().collect();
        assert_eq!(distinct.len(), 7, "both ends of [min, max] are drawn");
        assert!(b.data.column(1).as_primitive::<rsql_common::arrow::datatypes::Int8Type>().values().iter().all(|v| *v == 5));
        let d = b.data.column(2).as_primitive::<rsql_common::arrow::datatypes::Float64Type>();
        assert!(d.values().iter().all(|v| (0.5..=1.5).contains(v)));
        let m = b.data.column(3).as_primitive::<rsql_common::arrow::datatypes::Decimal128Type>();
        assert!(m.values().iter().all(|v| (150..=250).contains(v)));
        // FLOAT defaults span (0, Float.MAX_VALUE] like Flink's.
        let f = b.data.column(4).as_primitive::<rsql_common::arrow::datatypes::Float32Type>();
        assert!(f.values().iter().all(|v| *v > 0.0 && v.is_finite()));
        assert_eq!(b.data.null_count_total(), 0);
    }

    trait NullCount {
        fn null_count_total(&self) -> usize;
    }
    impl NullCount for RecordBatch {
        fn null_count_total(&self) -> usize {
            self.columns().iter().map(|c| c.null_count()).sum()
        }
    }

    #[test]
    fn null_rate_and_lengths() {
        let t = table(
            &[
                ("a", nullable(FlinkType::Int)),
                ("s", nullable(FlinkType::Varchar(MAX_LENGTH))),
                ("v", nullable(FlinkType::Varchar(7))),
                ("c", nullable(FlinkType::Char(4))),
                ("b", nullable(FlinkType::Varbinary(MAX_LENGTH))),
                ("bn", nullable(FlinkType::Binary(3))),
                ("z", nullable(FlinkType::Int)),
            ],
            &[
                ("fields.a.null-rate", "0.5"),
                ("fields.s.length", "10"),
                ("fields.s.var-len", "true"),
                ("fields.z.null-rate", "1"),
            ],
        );
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        let b = src.next_batch(4000).unwrap().unwrap();
        let nulls = b.data.column(0).null_count();
        assert!((1600..2400).contains(&nulls), "about half NULL, got {nulls}");
        let s = b.data.column(1).as_string::<i32>();
        assert!(s.iter().all(|v| v.is_some_and(|v| (1..10).contains(&v.len()))));
        assert!(b.data.column(2).as_string::<i32>().iter().all(|v| v.is_some_and(|v| v.len() == 7)));
        assert!(b.data.column(3).as_string::<i32>().iter().all(|v| v.is_some_and(|v| v.len() == 4)));
        assert!(b.data.column(4).as_binary::<i32>().iter().all(|v| v.is_some_and(|v| v.len() == 100)));
        assert!(b.data.column(5).as_binary::<i32>().iter().all(|v| v.is_some_and(|v| v.len() == 3)));
        assert_eq!(b.data.column(6).null_count(), 4000);
    }

    #[test]
    fn same_table_same_rows() {
        let t = table(&[("a", nullable(FlinkType::BigInt)), ("s", nullable(FlinkType::Varchar(8)))], &[]);
        let a = DatagenSource::new(&t, &produced(&t)).unwrap().next_batch(100).unwrap().unwrap();
        let b = DatagenSource::new(&t, &produced(&t)).unwrap().next_batch(100).unwrap().unwrap();
        assert_eq!(a.data, b.data);
        // Reading one column alone gives it the same values.
        let only_s = DatagenSource::new(&t, &produced(&t)[1..]).unwrap().next_batch(100).unwrap().unwrap();
        assert_eq!(only_s.data.column(0), a.data.column(1));
        let c = DatagenSource::new(&t, &produced(&t)).unwrap().with_seed(42).next_batch(100).unwrap().unwrap();
        assert_ne!(a.data, c.data);
    }

    #[test]
    fn temporal_and_nested_types() {
        let int = nullable(FlinkType::Int);
        let t = table(
            &[
                ("d", nullable(FlinkType::Date)),
                ("tm", nullable(FlinkType::Time(0))),
                ("ts", nullable(FlinkType::Timestamp(3))),
                ("lt", nullable(FlinkType::TimestampLtz(3))),
                ("arr", nullable(FlinkType::Array(Box::new(int.clone())))),
                ("mp", nullable(FlinkType::Map(Box::new(nullable(FlinkType::Varchar(MAX_LENGTH))), Box::new(int.clone())))),
                ("r", nullable(FlinkType::Row(vec![("x".into(), int.clone()), ("y".into(), nullable(FlinkType::Varchar(MAX_LENGTH)))]))),
            ],
            &[
                ("fields.ts.max-past", "1 h"),
                ("fields.arr.length", "2"),
                ("fields.arr.element.min", "1"),
                ("fields.arr.element.max", "3"),
                ("fields.mp.key.length", "1"),
                ("fields.mp.length", "40"),
                ("fields.r.x.min", "0"),
                ("fields.r.x.max", "9"),
                ("fields.r.y.length", "2"),
            ],
        );
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 * 1000;
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        let b = src.next_batch(50).unwrap().unwrap();
        assert_eq!(b.data.schema(), t.physical_schema());
        let ts = b.data.column(2).as_primitive::<rsql_common::arrow::datatypes::TimestampMicrosecondType>();
        assert!(ts.values().iter().all(|v| *v <= before + 60_000_000 && *v >= before - 3_700_000_000));
        let arr = b.data.column(4).as_list::<i32>();
        assert!((0..50).all(|i| arr.value(i).len() == 2));
        let mp = b.data.column(5).as_map();
        // 40 draws from 16 one-character hex keys: duplicates collapse into one entry each.
        assert!((0..50).all(|i| (1..=16).contains(&mp.value(i).len())));
        let r = b.data.column(6).as_struct();
        assert!(r.column(1).as_string::<i32>().iter().all(|v| v.is_some_and(|v| v.len() == 2)));
    }

    #[test]
    fn sequence_of_other_types() {
        let t = table(
            &[
                ("s", nullable(FlinkType::Varchar(MAX_LENGTH))),
                ("d", nullable(FlinkType::Decimal(5, 2))),
                ("b", nullable(FlinkType::Varbinary(MAX_LENGTH))),
                ("f", nullable(FlinkType::Double)),
            ],
            &[
                ("fields.s.kind", "sequence"),
                ("fields.s.start", "-1"),
                ("fields.s.end", "1"),
                ("fields.d.kind", "sequence"),
                ("fields.d.start", "1"),
                ("fields.d.end", "999"),
                ("fields.b.kind", "sequence"),
                ("fields.b.start", "1"),
                ("fields.b.end", "10"),
                ("fields.f.kind", "sequence"),
                ("fields.f.start", "1"),
                ("fields.f.end", "10"),
            ],
        );
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        let b = src.next_batch(10).unwrap().unwrap();
        assert_eq!(b.num_rows(), 3);
        let s: Vec<&str> = b.data.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(s, vec!["-1", "0", "1"]);
        assert_eq!(datum_at(b.data.column(1).as_ref(), 2).unwrap(), Datum::Decimal(300, 2));
        assert_eq!(b.data.column(2).as_binary::<i32>().value(0), &1i64.to_be_bytes());
        assert!(src.next_batch(10).unwrap().is_none());
    }

    #[test]
    fn option_errors_name_the_problem() {
        let cols = [("user_id", nullable(FlinkType::Int)), ("b", nullable(FlinkType::Boolean)), ("nn", LogicalType::not_null(FlinkType::Int))];
        let e = err(&table(&cols, &[("fields.usr_id.kind", "random")]));
        assert!(e.contains("no column 'usr_id'") && e.contains("did you mean 'user_id'?"), "{e}");
        let e = err(&table(&cols, &[("fields.zzz.min", "1")]));
        assert!(e.contains("physical columns are: user_id, b, nn"), "{e}");
        let e = err(&table(&cols, &[("fields.user_id.lenght", "1")]));
        assert!(e.contains("does not apply to column 'user_id'") && e.contains("fields.user_id.max"), "{e}");
        let e = err(&table(&cols, &[("fields.b.min", "1")]));
        assert!(e.contains("BOOLEAN") && e.contains("fields.b.null-rate"), "{e}");
        let e = err(&table(&cols, &[("fields.user_id.kind", "sequence"), ("fields.user_id.start", "1")]));
        assert!(e.contains("'fields.user_id.end' is required"), "{e}");
        let e = err(&table(&cols, &[("fields.user_id.kind", "seq")]));
        assert!(e.contains("unknown generator kind 'seq'"), "{e}");
        let e = err(&table(&cols, &[("fields.b.kind", "sequence"), ("fields.b.start", "1"), ("fields.b.end", "2")]));
        assert!(e.contains("does not support columns of type BOOLEAN"), "{e}");
        let e = err(&table(&cols, &[("fields.user_id.min", "9"), ("fields.user_id.max", "1")]));
        assert!(e.contains("greater than"), "{e}");
        let e = err(&table(&cols, &[("fields.user_id.kind", "sequence"), ("fields.user_id.start", "5"), ("fields.user_id.end", "1")]));
        assert!(e.contains("greater than"), "{e}");
        let e = err(&table(&cols, &[("fields.user_id.max", "99999999999")]));
        assert!(e.contains("outside the range of INT"), "{e}");
        let e = err(&table(&cols, &[("fields.nn.null-rate", "0.1")]));
        assert!(e.contains("NOT NULL"), "{e}");
        let e = err(&table(&cols, &[("rows-per-second", "0")]));
        assert!(e.contains("positive"), "{e}");
        let e = err(&table(&[("c", nullable(FlinkType::Char(3)))], &[("fields.c.length", "2")]));
        assert!(e.contains("always have length"), "{e}");
        let e = err(&table(&[("b", nullable(FlinkType::Varbinary(MAX_LENGTH)))], &[("fields.b.null-rate", "0.5")]));
        assert!(e.contains("does not apply"), "{e}");
        let e = err(&table(&[("t", nullable(FlinkType::Timestamp(3)))], &[("fields.t.max-past", "soon")]));
        assert!(e.contains("duration"), "{e}");
        // Errors point at the option in the script.
        let t = table(&cols, &[("fields.usr_id.kind", "random")]);
        assert_eq!(DatagenSpec::from_table(&t).unwrap_err().location(), Some(Location::new(2, 3)));
        // Nested fields are named by path.
        let arr = table(&[("a", nullable(FlinkType::Array(Box::new(nullable(FlinkType::Int)))))], &[("fields.a.element.lenght", "1")]);
        let e = err(&arr);
        assert!(e.contains("fields.a.element.max"), "{e}");
    }

    #[test]
    fn registry_validation_runs_the_checks() {
        let mut reg = ConnectorRegistry::new();
        register(&mut reg);
        let t = table(&[("a", nullable(FlinkType::Int))], &[("rows-per-secnd", "5")]);
        let e = reg.validate(&t).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("did you mean 'rows-per-second'"), "{e}");
        let t = table(&[("a", nullable(FlinkType::Int))], &[("fields.b.kind", "random")]);
        assert!(reg.validate(&t).is_err());
        let t = table(&[("a", nullable(FlinkType::Int))], &[("scan.parallelism", "1"), ("rows-per-second", "5")]);
        let f = reg.validate(&t).unwrap();
        assert!(!f.supports_sink());
        assert!(f.create_sink(&t, &ChangelogMode::InsertOnly).is_err());
    }

    #[test]
    fn metadata_and_empty_projections() {
        let t = table(&[("a", nullable(FlinkType::Int))], &[("number-of-rows", "3")]);
        let meta = [ProducedColumn::Metadata { key: "offset".into(), name: "o".into(), ty: nullable(FlinkType::BigInt) }];
        assert!(DatagenSource::new(&t, &meta).is_err());
        // SELECT COUNT(*) reads no column: rows still flow.
        let mut src = DatagenSource::new(&t, &[]).unwrap();
        assert_eq!(src.next_batch(10).unwrap().unwrap().num_rows(), 3);
    }

    #[test]
    fn sequences_resume_after_the_saved_row_count() {
        let t = table(&[("a", nullable(FlinkType::BigInt))], &[("fields.a.kind", "sequence"), ("fields.a.start", "1"), ("fields.a.end", "10")]);
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        src.restore(&4u64.to_le_bytes()).unwrap();
        let b = src.next_batch(100).unwrap().unwrap();
        assert_eq!(b.num_rows(), 6);
        assert_eq!(datum_at(b.data.column(0).as_ref(), 0).unwrap(), Datum::Int(5));
        assert!(src.restore(b"bad").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn run_paces_rows_and_ends() {
        let t = table(&[("a", nullable(FlinkType::Int))], &[("rows-per-second", "1000"), ("number-of-rows", "250")]);
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ctx = SourceContext {
            out: tx,
            stop: stop_rx,
            table: "gen".into(),
            max_batch_delay: Duration::from_millis(10),
            batch_size: 8192,
        };
        let started = Instant::now();
        src.run(ctx).await.unwrap();
        let elapsed = started.elapsed();
        let mut rows = 0;
        let mut batches = 0;
        while let Ok(m) = rx.try_recv() {
            let rsql_runtime::Message::Batch(b) = m else { continue };
            assert!(b.num_rows() <= 10, "one latency bound of rows per batch");
            rows += b.num_rows();
            batches += 1;
        }
        assert_eq!(rows, 250);
        assert_eq!(batches, 25);
        // 250 rows at 1000 rows/s: the last batch is due at 0.24 s (never sooner).
        assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn run_stops_when_asked() {
        let t = table(&[("a", nullable(FlinkType::Int))], &[("rows-per-second", "100")]);
        let mut src = DatagenSource::new(&t, &produced(&t)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ctx = SourceContext { out: tx, stop: stop_rx, table: "gen".into(), max_batch_delay: Duration::from_millis(100), batch_size: 100 };
        let task = tokio::spawn(async move { src.run(ctx).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        let mut rows = 0;
        while let Ok(m) = rx.try_recv() {
            let rsql_runtime::Message::Batch(b) = m else { continue };
            rows += b.num_rows();
        }
        // 100 rows/s in batches of 10: the first batches are due at 0, 100 ms, 200 ms...
        assert!((10..=100).contains(&rows), "{rows}");
    }
}
