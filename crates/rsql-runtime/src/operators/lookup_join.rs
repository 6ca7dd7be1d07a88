//! Lookup join (Flink's `JOIN dim FOR SYSTEM_TIME AS OF probe.proc_time ON ...`): every input row
//! looks its key up in a dimension table at the time it arrives, through the table's connector,
//! and is joined with the rows found. The operator keeps no state: a later change of the
//! dimension table does not change rows joined before (Flink's processing-time semantics).
//!
//! Row kinds pass through: an input -U/-D is joined with what the table holds when it arrives,
//! as in Flink. Rows whose key holds a NULL match nothing. With `left_outer` an input row without
//! a (filtered) match is emitted once, padded with NULLs.
//!
//! The lookup function blocks while it asks the external system; on a multi-threaded runtime the
//! call runs under `block_in_place` so the runtime's other tasks keep running.

use std::sync::Arc;

use rsql_common::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use rsql_common::arrow::compute;
use rsql_common::arrow::datatypes::{Field, Schema, SchemaRef};
use rsql_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rsql_common::{ChangeBatch, Result, RsqlError};

use super::{conform, Operator};
use crate::connector::LookupFunction;
use crate::graph::PhysExpr;

pub struct LookupJoin {
    lookup: Box<dyn LookupFunction>,
    probe_keys: Vec<usize>,
    dim_columns: Vec<usize>,
    dim_filters: Vec<PhysExpr>,
    left_outer: bool,
    filter: Option<PhysExpr>,
    schema: SchemaRef,
}

/// Runs a blocking call without stalling a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn take(cols: &[ArrayRef], idx: &UInt32Array) -> Result<Vec<ArrayRef>> {
    cols.iter().map(|c| compute::take(c.as_ref(), idx, None).map_err(RsqlError::from)).collect()
}

impl LookupJoin {
    pub fn new(
        lookup: Box<dyn LookupFunction>,
        probe_keys: &[usize],
        dim_columns: &[usize],
        dim_filters: Vec<PhysExpr>,
        left_outer: bool,
        filter: Option<PhysExpr>,
        schema: SchemaRef,
    ) -> LookupJoin {
        LookupJoin { lookup, probe_keys: probe_keys.to_vec(), dim_columns: dim_columns.to_vec(), dim_filters, left_outer, filter, schema }
    }

    /// The rows found that pass `dim_filters`, projected to the joined columns.
    fn dim_rows(&self, found: RecordBatch, of: Vec<u32>) -> Result<(Vec<ArrayRef>, Vec<u32>)> {
        let mut found = found;
        let mut of = of;
        for f in &self.dim_filters {
            if of.is_empty() {
                break;
            }
            let v = f.evaluate(&found)?.into_array(found.num_rows())?;
            let mask = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| RsqlError::execution("lookup filter is not BOOLEAN"))?;
            let keep: Vec<u32> = (0..mask.len()).filter(|&k| mask.is_valid(k) && mask.value(k)).map(|k| k as u32).collect();
            let idx = UInt32Array::from(keep.clone());
            found = RecordBatch::try_new(found.schema(), take(found.columns(), &idx)?)?;
            of = keep.iter().map(|&k| of[k as usize]).collect();
        }
        let cols: Vec<ArrayRef> = self
            .dim_columns
            .iter()
            .map(|&i| {
                found.columns().get(i).cloned().ok_or_else(|| RsqlError::execution(format!("the lookup function returned no column {i}")))
            })
            .collect::<Result<_>>()?;
        Ok((cols, of))
    }

    fn batch(&self, cols: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let cols = conform(cols, &self.schema)?;
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), cols, &RecordBatchOptions::new().with_row_count(Some(rows)))?)
    }
}

impl Operator for LookupJoin {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let key_cols: Vec<ArrayRef> = self.probe_keys.iter().map(|&i| batch.data.column(i).clone()).collect();
        let key_fields: Vec<Field> =
            key_cols.iter().enumerate().map(|(i, c)| Field::new(format!("k{i}"), c.data_type().clone(), true)).collect();
        let keys = RecordBatch::try_new(Arc::new(Schema::new(key_fields)), key_cols)?;
        let lookup = &mut self.lookup;
        let (found, of) = blocking(|| lookup.lookup(&keys))?;
        if found.num_rows() != of.len() || of.iter().any(|&i| i as usize >= n) {
            return Err(RsqlError::execution("the lookup function answered rows for keys it was not asked"));
        }
        let (dim, of) = self.dim_rows(found, of)?;
        // Matches grouped by input row, input order kept.
        let mut matches: Vec<(u32, u32)> = of.iter().enumerate().map(|(m, &i)| (i, m as u32)).collect();
        matches.sort();
        let probe: Vec<ArrayRef> = batch.data.columns().to_vec();
        if let Some(f) = &self.filter {
            if !matches.is_empty() {
                let pi = UInt32Array::from(matches.iter().map(|m| m.0).collect::<Vec<_>>());
                let di = UInt32Array::from(matches.iter().map(|m| m.1).collect::<Vec<_>>());
                let mut cols = take(&probe, &pi)?;
                cols.extend(take(&dim, &di)?);
                let joined = self.batch(cols, matches.len())?;
                let v = f.evaluate(&joined)?.into_array(matches.len())?;
                let mask = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| RsqlError::execution("join condition is not BOOLEAN"))?;
                let mut kept = Vec::with_capacity(matches.len());
                for (k, m) in matches.iter().enumerate() {
                    if mask.is_valid(k) && mask.value(k) {
                        kept.push(*m);
                    }
                }
                matches = kept;
            }
        }
        let mut probe_idx: Vec<u32> = Vec::with_capacity(matches.len() + n);
        let mut dim_idx: Vec<Option<u32>> = Vec::with_capacity(matches.len() + n);
        let mut next = 0;
        for i in 0..n as u32 {
            let start = next;
            while next < matches.len() && matches[next].0 == i {
                probe_idx.push(i);
                dim_idx.push(Some(matches[next].1));
                next += 1;
            }
            if next == start && self.left_outer {
                probe_idx.push(i);
                dim_idx.push(None);
            }
        }
        if probe_idx.is_empty() {
            return Ok(());
        }
        let rows = probe_idx.len();
        let kinds = probe_idx.iter().map(|&i| batch.kinds[i as usize]).collect();
        let mut cols = take(&probe, &UInt32Array::from(probe_idx))?;
        cols.extend(take(&dim, &UInt32Array::from(dim_idx))?);
        out.push(ChangeBatch::new(self.batch(cols, rows)?, kinds));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::arrow::array::{Int32Array, StringArray};
    use rsql_common::arrow::datatypes::DataType;
    use rsql_common::RowKind;
    use std::collections::HashMap;

    /// A dimension table in memory: id -> names (several rows per id allowed).
    struct Dim(HashMap<i32, Vec<&'static str>>);

    impl LookupFunction for Dim {
        fn lookup(&mut self, keys: &RecordBatch) -> Result<(RecordBatch, Vec<u32>)> {
            let k = keys.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            let (mut ids, mut names, mut of) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..k.len() {
                if k.is_null(i) {
                    continue;
                }
                for n in self.0.get(&k.value(i)).cloned().unwrap_or_default() {
                    ids.push(k.value(i));
                    names.push(n);
                    of.push(i as u32);
                }
            }
            let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false), Field::new("name", DataType::Utf8, true)]));
            let b = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(ids)), Arc::new(StringArray::from(names))])?;
            Ok((b, of))
        }
    }

    fn op(left_outer: bool, filter: Option<PhysExpr>) -> LookupJoin {
        let dim = Dim(HashMap::from([(1, vec!["one"]), (2, vec!["two", "deux"])]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("oid", DataType::Int32, false),
            Field::new("cid", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        LookupJoin::new(Box::new(dim), &[1], &[1], Vec::new(), left_outer, filter, schema)
    }

    fn input(rows: &[(RowKind, i32, Option<i32>)]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("oid", DataType::Int32, false), Field::new("cid", DataType::Int32, true)]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Int32Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        ChangeBatch::new(b, rows.iter().map(|r| r.0).collect())
    }

    fn rows(out: &[ChangeBatch]) -> Vec<String> {
        let mut v = Vec::new();
        for b in out {
            for i in 0..b.num_rows() {
                let cells: Vec<String> = b
                    .data
                    .columns()
                    .iter()
                    .map(|c| match rsql_common::builder::datum_at(c.as_ref(), i).unwrap() {
                        rsql_common::builder::Datum::Null => "NULL".to_string(),
                        rsql_common::builder::Datum::Int(x) => x.to_string(),
                        rsql_common::builder::Datum::Str(s) => s,
                        other => format!("{other:?}"),
                    })
                    .collect();
                v.push(format!("{}{}", b.kinds[i], cells.join(",")));
            }
        }
        v
    }

    #[test]
    fn inner_and_left_lookups() {
        use RowKind::*;
        let batch = input(&[(Insert, 10, Some(2)), (Insert, 11, Some(3)), (Delete, 12, Some(1)), (Insert, 13, None)]);
        let mut out = Vec::new();
        op(false, None).process(0, batch.clone(), &mut out).unwrap();
        assert_eq!(rows(&out), vec!["+I10,2,two", "+I10,2,deux", "-D12,1,one"]);
        let mut out = Vec::new();
        op(true, None).process(0, batch, &mut out).unwrap();
        assert_eq!(rows(&out), vec!["+I10,2,two", "+I10,2,deux", "+I11,3,NULL", "-D12,1,one", "+I13,NULL,NULL"]);
    }

    #[test]
    fn the_condition_filters_matches() {
        use datafusion_physical_expr::expressions::{col, lit, BinaryExpr};
        use datafusion_expr::Operator as Op;
        let schema = Schema::new(vec![
            Field::new("oid", DataType::Int32, false),
            Field::new("cid", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]);
        let f: PhysExpr = Arc::new(BinaryExpr::new(col("name", &schema).unwrap(), Op::NotEq, lit("two")));
        let mut out = Vec::new();
        op(true, Some(f)).process(0, input(&[(RowKind::Insert, 1, Some(2)), (RowKind::Insert, 2, Some(1))]), &mut out).unwrap();
        assert_eq!(rows(&out), vec!["+I1,2,deux", "+I2,1,one"]);
    }
}
