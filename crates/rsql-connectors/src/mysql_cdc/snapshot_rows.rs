//! The rows of one snapshot chunk, converted straight from the driver's rows into the Arrow
//! columns of the produced table (no per-row vectors of intermediate values), with the natural
//! values of each row's primary key kept beside the batch for reconciling the chunk with the
//! binlog and for recording how far the snapshot got.

use std::sync::Arc;

use mysql_async::{Row, Value};
use rsql_common::arrow::array::{
    ArrayRef, BooleanArray, Date32Builder, Decimal128Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    Int8Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rsql_common::builder::{days_from_civil, ColumnBuilder, Datum};
use rsql_common::types::FlinkType;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::ProducedColumn;

use super::chunks::{self, SortKey};
use super::decode::{datetime_micros, from_text_of, to_declared_of};
use super::schema::{Family, MySqlColumn};
use super::source::{metadata_value, row_error, Captured};

/// How the produced columns of one captured table are filled from the table's rows.
pub(crate) struct ChunkDecoder {
    table: Arc<Captured>,
    schema: SchemaRef,
    /// The produced columns' names and types, for new builders.
    columns: Vec<ProducedColumn>,
    /// Per MySQL column: the produced columns it fills, in order.
    targets: Vec<Vec<usize>>,
    /// Per MySQL column: its place in the primary key, if it is a key column.
    key_slot: Vec<Option<usize>>,
    /// Per MySQL column that fills exactly one produced column: the direct conversion of its
    /// usual values, if it has one (for key columns only integers, whose natural value is the
    /// integer itself).
    fast: Vec<Option<Fast>>,
    /// Produced metadata columns and their value in every snapshot row.
    constants: Vec<(usize, Datum)>,
    tz_offset_us: i64,
}

impl ChunkDecoder {
    /// `schema` is the produced columns' Arrow schema (the one every emitted batch has).
    pub(crate) fn new(table: Arc<Captured>, columns: &[ProducedColumn], schema: SchemaRef, tz_offset_us: i64) -> ChunkDecoder {
        let ncols = table.schema.columns.len();
        let mut targets = vec![Vec::new(); ncols];
        let mut constants = Vec::new();
        for (n, (pc, m)) in columns.iter().zip(&table.map).enumerate() {
            match (pc, m) {
                (ProducedColumn::Physical { .. }, Some(i)) => targets[*i].push(n),
                (ProducedColumn::Metadata { key, .. }, _) => {
                    constants.push((n, metadata_value(key, &table, RowKind::Insert, 0)))
                }
                _ => constants.push((n, Datum::Null)),
            }
        }
        let mut key_slot = vec![None; ncols];
        for (slot, i) in table.schema.primary_key.iter().enumerate() {
            if let Some(s) = key_slot.get_mut(*i) {
                *s = Some(slot);
            }
        }
        let fast = (0..ncols)
            .map(|i| match targets[i].as_slice() {
                [n] => match &columns[*n] {
                    ProducedColumn::Physical { ty, .. } => Fast::of(&table.schema.columns[i], table.families[i], &ty.ty)
                        .filter(|f| key_slot[i].is_none() || matches!(f, Fast::Int(_))),
                    ProducedColumn::Metadata { .. } => None,
                },
                _ => None,
            })
            .collect();
        ChunkDecoder { table, schema, columns: columns.to_vec(), targets, key_slot, fast, constants, tz_offset_us }
    }

    pub(crate) fn table(&self) -> &Arc<Captured> {
        &self.table
    }

    fn builders(&self, capacity: usize) -> Result<Vec<ColumnBuilder>> {
        self.columns.iter().map(|c| ColumnBuilder::new(c.name(), c.ty(), capacity)).collect()
    }

    /// A reader for the rows of one chunk query (the table's columns, then the weights of its
    /// collated key columns), about `capacity` of them.
    pub(crate) fn chunk(&self, capacity: usize) -> Result<ChunkReader<'_>> {
        Ok(ChunkReader {
            dec: self,
            builders: self.builders(capacity)?,
            keys: Vec::with_capacity(capacity * self.table.schema.primary_key.len()),
            rows: 0,
        })
    }

    /// The key of a row of a chunk query: its server order (with the weights the query gives
    /// after the table's columns) and its natural values in key column order.
    pub(crate) fn row_key(&self, row: &Row, doing: &str) -> Result<(SortKey, Vec<Datum>)> {
        let t = &*self.table;
        let ncols = t.schema.columns.len();
        let mut natural = vec![Datum::Null; ncols];
        for i in &t.schema.primary_key {
            let v = row.as_ref(*i).cloned().ok_or_else(|| {
                RsqlError::data(doing.to_string(), "the server returned fewer columns than the table has")
            })?;
            natural[*i] = from_text_of(&t.schema.columns[*i], t.families[*i], v)?;
        }
        let weights: Vec<Vec<u8>> = (ncols..row.len())
            .map(|j| match row.as_ref(j) {
                Some(Value::Bytes(b)) => b.clone(),
                _ => Vec::new(),
            })
            .collect();
        let sort = chunks::sort_key(&t.schema, &natural, &weights);
        let key = t.schema.primary_key.iter().map(|i| std::mem::replace(&mut natural[*i], Datum::Null)).collect();
        Ok((sort, key))
    }
}

/// Converts the rows of one chunk query as they arrive.
pub(crate) struct ChunkReader<'a> {
    dec: &'a ChunkDecoder,
    builders: Vec<ColumnBuilder>,
    keys: Vec<Datum>,
    rows: usize,
}

impl ChunkReader<'_> {
    /// Converts one row of the chunk query, given as its values (`Row::unwrap_raw`); `doing`
    /// describes the query for errors.
    pub(crate) fn push(&mut self, values: Vec<Option<Value>>, doing: &str) -> Result<()> {
        let dec = self.dec;
        let t = &*dec.table;
        let ncols = t.schema.columns.len();
        if values.len() < ncols {
            return Err(RsqlError::data(doing.to_string(), "the server returned fewer columns than the table has"));
        }
        let npk = t.schema.primary_key.len();
        let base = self.keys.len();
        self.keys.resize(base + npk, Datum::Null);
        for (i, v) in values.into_iter().enumerate().take(ncols) {
            if !t.needed[i] {
                continue;
            }
            let v = v.unwrap_or(Value::NULL);
            let v = match dec.fast[i] {
                Some(f) => {
                    let key = match (dec.key_slot[i], &v) {
                        (Some(slot), Value::Int(x)) => Some((slot, *x)),
                        _ => None,
                    };
                    match self.append_fast(f, dec.targets[i][0], v) {
                        None => {
                            if let Some((slot, x)) = key {
                                self.keys[base + slot] = Datum::Int(x);
                            }
                            continue;
                        }
                        Some(v) => v,
                    }
                }
                None => v,
            };
            let col = &t.schema.columns[i];
            let natural = from_text_of(col, t.families[i], v)?;
            if let Some(slot) = dec.key_slot[i] {
                self.keys[base + slot] = natural.clone();
            }
            let targets = &dec.targets[i];
            let Some((last, first)) = targets.split_last() else { continue };
            for n in first {
                self.append(*n, natural.clone())?;
            }
            self.append(*last, natural)?;
        }
        for (n, d) in &dec.constants {
            self.builders[*n].append(d.clone()).map_err(|e| row_error(t, e))?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends a value by its direct conversion; gives the value back when it is not one the
    /// conversion takes (NULL, a value out of the column's range), for the general path.
    fn append_fast(&mut self, f: Fast, n: usize, v: Value) -> Option<Value> {
        match f.append(&mut self.builders[n], &v, self.dec.tz_offset_us) {
            Some(()) => None,
            None => Some(v),
        }
    }

    /// Appends a natural value of a physical produced column, converted to its declared type.
    fn append(&mut self, n: usize, natural: Datum) -> Result<()> {
        let dec = self.dec;
        let t = &*dec.table;
        let (ProducedColumn::Physical { ty, .. }, Some(i)) = (&dec.columns[n], t.map[n]) else {
            return Ok(());
        };
        let d = to_declared_of(&t.schema.columns[i], t.families[i], natural, ty, dec.tz_offset_us);
        self.builders[n].append(d).map_err(|e| row_error(t, e))
    }

    pub(crate) fn finish(mut self) -> Result<ChunkRows> {
        let t = &*self.dec.table;
        let cols: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let batch = RecordBatch::try_new_with_options(
            self.dec.schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(self.rows)),
        )?;
        Ok(ChunkRows { batch, keys: self.keys, npk: t.schema.primary_key.len() })
    }
}

/// The rows of one chunk in key order, as produced rows.
pub(crate) struct ChunkRows {
    pub batch: RecordBatch,
    /// The natural values of each row's primary key (`npk` per row, in key column order).
    keys: Vec<Datum>,
    npk: usize,
}

impl ChunkRows {
    pub(crate) fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// The natural primary-key values of row `r`.
    pub(crate) fn key(&self, r: usize) -> &[Datum] {
        &self.keys[r * self.npk..(r + 1) * self.npk]
    }

    /// The rows as inserts, without those whose key `drop` says (their binlog changes replace
    /// them; None when the binlog touched no row of the chunk), cut into batches of at most
    /// `batch_size` rows.
    pub(crate) fn into_batches(self, batch_size: usize, drop: Option<&dyn Fn(&[Datum]) -> bool>) -> Result<Vec<ChangeBatch>> {
        let mask: Option<BooleanArray> = drop.and_then(|drop| {
            let keep: Vec<bool> = (0..self.len()).map(|r| !drop(self.key(r))).collect();
            keep.contains(&false).then(|| BooleanArray::from(keep))
        });
        let all = ChangeBatch::inserts(self.batch);
        let kept = match mask {
            Some(m) => all.filter(&m)?,
            None => all,
        };
        let n = kept.num_rows();
        let size = batch_size.max(1);
        Ok((0..n).step_by(size).map(|at| ChangeBatch::inserts(kept.data.slice(at, size.min(n - at)))).collect())
    }
}

/// A direct conversion from the binary protocol's value of a column to its declared Arrow type,
/// for the usual pairs of column and declared type; it gives the same values as the general
/// path (natural value, then declared value, then the column builder) and leaves everything
/// else (NULLs, values out of range, unusual text) to it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fast {
    /// A signed integer column into TINYINT / SMALLINT / INT / BIGINT (bits of the target).
    Int(u8),
    /// A text column into CHAR / VARCHAR.
    Utf8,
    /// DECIMAL into DECIMAL of the same scale; `bound` is 10^precision of the declared type.
    Decimal { scale: usize, bound: u128 },
    /// DOUBLE into DOUBLE.
    Double,
    /// DATE into DATE.
    Date,
    /// DATETIME (wall clock) or TIMESTAMP (UTC, `shift` to the server's zone) into TIMESTAMP.
    Timestamp { shift: bool },
}

impl Fast {
    /// Appends `v` to `b`; None (and nothing appended) when `v` is not a value it takes.
    fn append(self, b: &mut ColumnBuilder, v: &Value, tz_offset_us: i64) -> Option<()> {
        match (self, v) {
            (Fast::Int(8), Value::Int(i)) => b.arrow_builder::<Int8Builder>()?.append_value(i8::try_from(*i).ok()?),
            (Fast::Int(16), Value::Int(i)) => b.arrow_builder::<Int16Builder>()?.append_value(i16::try_from(*i).ok()?),
            (Fast::Int(32), Value::Int(i)) => b.arrow_builder::<Int32Builder>()?.append_value(i32::try_from(*i).ok()?),
            (Fast::Int(_), Value::Int(i)) => b.arrow_builder::<Int64Builder>()?.append_value(*i),
            (Fast::Utf8, Value::Bytes(bytes)) => {
                b.arrow_builder::<StringBuilder>()?.append_value(std::str::from_utf8(bytes).ok()?)
            }
            (Fast::Decimal { scale, bound }, Value::Bytes(bytes)) => {
                let d = parse_plain_decimal(bytes, scale).filter(|d| d.unsigned_abs() < bound)?;
                b.arrow_builder::<Decimal128Builder>()?.append_value(d)
            }
            (Fast::Double, Value::Double(x)) => b.arrow_builder::<Float64Builder>()?.append_value(*x),
            (Fast::Date, Value::Date(y, mo, d, ..)) => {
                b.arrow_builder::<Date32Builder>()?.append_value(days_from_civil(*y as i64, *mo as u32, *d as u32)?)
            }
            (Fast::Timestamp { shift }, Value::Date(y, mo, d, h, mi, sec, us)) => {
                let t = datetime_micros(*y, *mo, *d, *h, *mi, *sec, *us)?;
                b.arrow_builder::<TimestampMicrosecondBuilder>()?.append_value(if shift { t + tz_offset_us } else { t })
            }
            _ => return None,
        }
        Some(())
    }

    fn of(col: &MySqlColumn, fam: Family, declared: &FlinkType) -> Option<Fast> {
        use FlinkType as F;
        Some(match (fam, declared) {
            // Unsigned columns (UInt values) and MEDIUMINT (with its sign fix-up) stay on the
            // general path.
            (Family::Int, _) if col.unsigned || col.data_type == "mediumint" => return None,
            (Family::Int, F::TinyInt) => Fast::Int(8),
            (Family::Int, F::SmallInt) => Fast::Int(16),
            (Family::Int, F::Int) => Fast::Int(32),
            (Family::Int, F::BigInt) => Fast::Int(64),
            (Family::Text, F::Char(_) | F::Varchar(_)) => Fast::Utf8,
            (Family::Decimal, &F::Decimal(p, s)) if s as i64 == col.scale as i64 && p <= 38 => {
                Fast::Decimal { scale: s as usize, bound: 10u128.pow(p as u32) }
            }
            (Family::Double, F::Double) => Fast::Double,
            (Family::Date, F::Date) => Fast::Date,
            (Family::DateTime, F::Timestamp(_)) => Fast::Timestamp { shift: false },
            (Family::Timestamp, F::Timestamp(_)) => Fast::Timestamp { shift: true },
            _ => return None,
        })
    }
}

/// A DECIMAL as the server prints it (`-123.45`, exactly `scale` fraction digits, at most 18
/// digits) as an unscaled integer; None for any other form (left to `parse_decimal`).
fn parse_plain_decimal(b: &[u8], scale: usize) -> Option<i128> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let (int, frac) = match digits.iter().position(|c| *c == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if int.is_empty() || frac.len() != scale || int.len() + frac.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for c in int.iter().chain(frac) {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(if neg { -(v as i128) } else { v as i128 })
}

#[cfg(test)]
mod tests {
    use rsql_common::builder::{datum_at, parse_decimal, RowsBuilder};
    use rsql_common::types::LogicalType;

    use super::super::schema::tests::col;
    use super::super::schema::TableSchema;
    use super::super::source::produced_row;
    use super::*;

    fn table() -> (Arc<Captured>, Vec<ProducedColumn>) {
        let c = |name: &str, data_type: &str, column_type: &str, scale: u32| {
            let mut m = col(data_type, column_type);
            m.name = name.into();
            m.scale = scale as _;
            m
        };
        let schema = TableSchema {
            database: "d".into(),
            table: "t".into(),
            columns: vec![
                c("id", "int", "int(11)", 0),
                c("name", "varchar", "varchar(40)", 0),
                c("amount", "decimal", "decimal(10,2)", 2),
                c("at", "datetime", "datetime(3)", 0),
                c("ts", "timestamp", "timestamp(3)", 0),
                c("day", "date", "date", 0),
                c("f", "double", "double", 0),
                c("u", "int", "int(10) unsigned", 0),
                c("mi", "mediumint", "mediumint(9)", 0),
                c("small", "smallint", "smallint(6)", 0),
                c("flag", "tinyint", "tinyint(1)", 0),
            ],
            primary_key: vec![0],
            estimated_rows: 0,
        };
        let p = |name: &str, ty: FlinkType| ProducedColumn::Physical { name: name.into(), ty: LogicalType::nullable(ty) };
        let produced = vec![
            ProducedColumn::Physical { name: "id".into(), ty: LogicalType::new(FlinkType::Int, false) },
            p("name", FlinkType::Varchar(40)),
            p("amount", FlinkType::Decimal(10, 2)),
            p("at", FlinkType::Timestamp(3)),
            p("ts", FlinkType::Timestamp(3)),
            p("day", FlinkType::Date),
            p("f", FlinkType::Double),
            p("u", FlinkType::BigInt),
            p("mi", FlinkType::Int),
            p("small", FlinkType::SmallInt),
            p("flag", FlinkType::Boolean),
            ProducedColumn::Metadata { key: "row_kind".into(), name: "op".into(), ty: LogicalType::nullable(FlinkType::Varchar(4)) },
        ];
        let map = vec![Some(0), Some(1), Some(2), Some(3), Some(4), Some(5), Some(6), Some(7), Some(8), Some(9), Some(10), None];
        (Arc::new(Captured::from_parts(schema, map, vec![true; 11], 0)), produced)
    }

    /// The direct conversions give what the general path (natural value, declared value, row
    /// builder) gives, for usual values, NULLs and values they leave to it.
    #[test]
    fn chunks_convert_as_rows_through_the_general_path_do() {
        let (t, produced) = table();
        let b = |s: &[u8]| Some(Value::Bytes(s.to_vec()));
        let rows: Vec<Vec<Option<Value>>> = vec![
            vec![
                Some(Value::Int(1)),
                b(b"name-1"),
                b(b"12.30"),
                Some(Value::Date(2024, 1, 1, 10, 0, 0, 123_000)),
                Some(Value::Date(2024, 2, 29, 23, 59, 59, 0)),
                Some(Value::Date(2024, 2, 29, 0, 0, 0, 0)),
                Some(Value::Double(1.5)),
                Some(Value::UInt(4_000_000_000)),
                Some(Value::Int(-8_388_608)),
                Some(Value::Int(-7)),
                Some(Value::Int(1)),
            ],
            vec![Some(Value::Int(2)), None, None, None, None, None, None, None, None, None, None]
                .into_iter()
                .enumerate()
                .map(|(i, v)| if i == 0 { v } else { Some(Value::NULL) })
                .collect(),
            vec![
                Some(Value::Int(3)),
                b(&[0xff, b'a']),
                b(b"-0.05"),
                Some(Value::Date(0, 0, 0, 0, 0, 0, 0)),
                Some(Value::Date(1970, 1, 1, 0, 0, 1, 0)),
                Some(Value::Date(0, 0, 0, 0, 0, 0, 0)),
                Some(Value::Double(-0.0)),
                Some(Value::Int(5)),
                Some(Value::Int(8_388_607)),
                Some(Value::Int(32_767)),
                Some(Value::Int(0)),
            ],
            vec![
                Some(Value::Int(i32::MAX as i64)),
                b(b""),
                b(b" 99999999.99"),
                Some(Value::Date(9999, 12, 31, 23, 59, 59, 999_000)),
                Some(Value::Date(2038, 1, 19, 3, 14, 7, 0)),
                Some(Value::Date(1, 1, 1, 0, 0, 0, 0)),
                Some(Value::Double(f64::MAX)),
                Some(Value::UInt(0)),
                Some(Value::Int(0)),
                Some(Value::Int(-32_768)),
                Some(Value::Int(2)),
            ],
        ];
        let tz = 8 * 3_600_000_000i64;
        let cols: Vec<(String, LogicalType)> = produced.iter().map(|c| (c.name().to_string(), c.ty().clone())).collect();
        let mut general = RowsBuilder::new(&cols, 4).unwrap();
        for row in &rows {
            let natural: Vec<Datum> = t
                .schema
                .columns
                .iter()
                .zip(row)
                .enumerate()
                .map(|(i, (c, v))| from_text_of(c, t.families[i], v.clone().unwrap_or(Value::NULL)).unwrap())
                .collect();
            general.append_row(produced_row(&produced, &t, RowKind::Insert, natural, 0, tz)).unwrap();
        }
        let want = general.finish().unwrap();

        let dec = ChunkDecoder::new(t.clone(), &produced, want.schema(), tz);
        assert!(dec.fast.iter().filter(|f| f.is_some()).count() >= 7, "{:?}", dec.fast);
        let mut chunk = dec.chunk(rows.len()).unwrap();
        for row in rows.clone() {
            chunk.push(row, "test").unwrap();
        }
        let got = chunk.finish().unwrap();
        assert_eq!(got.len(), rows.len());
        for (c, (w, g)) in want.columns().iter().zip(got.batch.columns()).enumerate() {
            for r in 0..rows.len() {
                assert_eq!(datum_at(w.as_ref(), r).unwrap(), datum_at(g.as_ref(), r).unwrap(), "column {c}, row {r}");
            }
        }
        assert_eq!(got.key(2), &[Datum::Int(3)]);

        // A chunk's rows leave out those the binlog replaced, in batches of the asked size.
        let batches = got.into_batches(3, Some(&|k: &[Datum]| k == [Datum::Int(2)])).unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![3]);
        let ids: Vec<Datum> = (0..3).map(|r| datum_at(batches[0].data.column(0).as_ref(), r).unwrap()).collect();
        assert_eq!(ids, vec![Datum::Int(1), Datum::Int(3), Datum::Int(i32::MAX as i64)]);
    }

    #[test]
    fn plain_decimals_parse_as_the_general_parser_does() {
        for (text, scale) in [("-12.30", 2), ("0.05", 2), ("123", 0), ("-0.001", 3), ("999999999999999999", 0)] {
            assert_eq!(parse_plain_decimal(text.as_bytes(), scale), parse_decimal(text, scale as i8), "{text}");
        }
        // Other forms are left to the general parser.
        for (text, scale) in [("1.5", 2), (".5", 1), ("1e3", 0), ("12.3x", 2), ("", 0), ("1234567890123456789", 0)] {
            assert_eq!(parse_plain_decimal(text.as_bytes(), scale), None, "{text}");
        }
    }
}
