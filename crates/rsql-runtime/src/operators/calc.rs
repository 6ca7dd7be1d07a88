//! Filter and projection over whole batches with DataFusion physical expressions.
//!
//! Filtering a changelog row by row is correct for +I/-D. For an update pair (-U then +U) where
//! only one half passes, the half that passes keeps its kind's meaning only if it becomes a plain
//! change: a lone -U becomes -D and a lone +U becomes +I, so downstream never sees an update of
//! a row it never saw.

use rsql_common::arrow::array::{Array, ArrayRef, BooleanArray};
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::Operator;
use crate::graph::PhysExpr;

pub struct Calc {
    filter: Option<PhysExpr>,
    exprs: Vec<PhysExpr>,
    schema: SchemaRef,
}

impl Calc {
    pub fn new(filter: Option<PhysExpr>, exprs: Vec<PhysExpr>, schema: SchemaRef) -> Self {
        Calc { filter, exprs, schema }
    }
}

/// Fixes row kinds after a filter: an update half whose partner was dropped becomes a plain
/// insert or delete.
fn fix_update_pairs(kinds: &mut [RowKind], keep: &[bool]) {
    let n = kinds.len();
    let mut i = 0;
    while i < n {
        if kinds[i] == RowKind::UpdateBefore && i + 1 < n && kinds[i + 1] == RowKind::UpdateAfter {
            match (keep[i], keep[i + 1]) {
                (true, false) => kinds[i] = RowKind::Delete,
                (false, true) => kinds[i + 1] = RowKind::Insert,
                _ => {}
            }
            i += 2;
        } else {
            i += 1;
        }
    }
}

impl Operator for Calc {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let mut batch = batch;
        if let Some(f) = &self.filter {
            let v = f.evaluate(&batch.data)?.into_array(batch.num_rows())?;
            let mask = v
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| RsqlError::execution("filter condition is not BOOLEAN"))?;
            let keep: Vec<bool> = (0..mask.len()).map(|i| mask.is_valid(i) && mask.value(i)).collect();
            if keep.iter().all(|k| !k) {
                return Ok(());
            }
            if !keep.iter().all(|k| *k) {
                let mut kinds = batch.kinds.clone();
                fix_update_pairs(&mut kinds, &keep);
                let filtered = batch.filter(mask)?;
                let kinds = kinds.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(x, _)| x).collect();
                batch = ChangeBatch::new(filtered.data, kinds);
            }
        }
        let cols = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&batch.data).and_then(|v| v.into_array(batch.num_rows())))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        let cols = super::conform(cols, &self.schema)?;
        out.push(batch.with_columns(self.schema.clone(), cols)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_update_pairs_become_plain_changes() {
        let mut k = vec![RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::UpdateBefore, RowKind::UpdateAfter];
        fix_update_pairs(&mut k, &[true, false, false, true]);
        assert_eq!(k, vec![RowKind::Delete, RowKind::UpdateAfter, RowKind::UpdateBefore, RowKind::Insert]);
    }
}
