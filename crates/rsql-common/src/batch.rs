//! A changelog batch: an Arrow RecordBatch plus one row kind per row.

use datafusion_common::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array, UInt8Array};
use datafusion_common::arrow::compute;
use datafusion_common::arrow::datatypes::SchemaRef;
use datafusion_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::Result;
use crate::row_kind::RowKind;

#[derive(Clone, Debug)]
pub struct ChangeBatch {
    pub data: RecordBatch,
    pub kinds: Vec<RowKind>,
}

impl ChangeBatch {
    pub fn new(data: RecordBatch, kinds: Vec<RowKind>) -> Self {
        debug_assert_eq!(data.num_rows(), kinds.len());
        ChangeBatch { data, kinds }
    }

    /// Every row an insert.
    pub fn inserts(data: RecordBatch) -> Self {
        let n = data.num_rows();
        ChangeBatch { data, kinds: vec![RowKind::Insert; n] }
    }

    pub fn empty(schema: SchemaRef) -> Self {
        ChangeBatch { data: RecordBatch::new_empty(schema), kinds: Vec::new() }
    }

    pub fn num_rows(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn schema(&self) -> SchemaRef {
        self.data.schema()
    }

    pub fn is_insert_only(&self) -> bool {
        self.kinds.iter().all(|k| *k == RowKind::Insert)
    }

    /// The row kinds as an Arrow column (Flink's byte values).
    pub fn kinds_array(&self) -> UInt8Array {
        UInt8Array::from_iter_values(self.kinds.iter().map(|k| *k as u8))
    }

    /// Keeps the rows where `mask` is true (nulls drop the row).
    pub fn filter(&self, mask: &BooleanArray) -> Result<ChangeBatch> {
        let data = compute::filter_record_batch(&self.data, mask)?;
        let kinds = self
            .kinds
            .iter()
            .zip(mask.iter())
            .filter_map(|(k, m)| if m == Some(true) { Some(*k) } else { None })
            .collect();
        Ok(ChangeBatch { data, kinds })
    }

    /// Takes rows by index, with the given kinds.
    pub fn take(&self, indices: &[u32], kinds: Vec<RowKind>) -> Result<ChangeBatch> {
        let idx = UInt32Array::from(indices.to_vec());
        let cols = self
            .data
            .columns()
            .iter()
            .map(|c| compute::take(c.as_ref(), &idx, None))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        let data = RecordBatch::try_new_with_options(
            self.data.schema(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(indices.len())),
        )?;
        Ok(ChangeBatch { data, kinds })
    }

    /// Concatenates batches of one schema.
    pub fn concat(schema: &SchemaRef, batches: &[ChangeBatch]) -> Result<ChangeBatch> {
        if batches.len() == 1 {
            return Ok(batches[0].clone());
        }
        let data = compute::concat_batches(schema, batches.iter().map(|b| &b.data))?;
        let kinds = batches.iter().flat_map(|b| b.kinds.iter().copied()).collect();
        Ok(ChangeBatch { data, kinds })
    }

    /// Replaces the columns, keeping the kinds (for projections).
    pub fn with_columns(&self, schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<ChangeBatch> {
        let data = RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(self.kinds.len())),
        )?;
        Ok(ChangeBatch { data, kinds: self.kinds.clone() })
    }
}

/// Checks that a column is long enough for the batch (used in debug assertions by operators).
pub fn same_len(a: &dyn Array, n: usize) -> bool {
    a.len() == n
}
