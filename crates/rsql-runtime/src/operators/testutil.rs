//! Helpers for operator unit tests: build small changelog batches of Int32 columns, read them
//! back as `kind[a, b]` strings, and drive state TTL with a clock the test sets.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use rsql_common::arrow::array::{Array, ArrayRef, AsArray, Int32Array};
use rsql_common::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, RowKind};

use super::state::StateTtl;

/// A TTL of 100 ms read from the returned clock (milliseconds), which starts at 0.
pub fn manual_ttl() -> (Arc<AtomicU64>, StateTtl) {
    let (now, clock) = crate::clock::manual_clock(0);
    (now, StateTtl::with_clock(Duration::from_millis(100), clock))
}

pub fn schema(names: &[&str], nullable: bool) -> SchemaRef {
    Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Int32, nullable)).collect::<Vec<_>>()))
}

/// Rows like `("+I", [1, 2])`.
pub fn batch(schema: &SchemaRef, rows: &[(&str, &[i32])]) -> ChangeBatch {
    let cols: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|c| Arc::new(Int32Array::from(rows.iter().map(|r| r.1[c]).collect::<Vec<_>>())) as ArrayRef)
        .collect();
    let data = RecordBatch::try_new(schema.clone(), cols).expect("batch");
    ChangeBatch::new(data, rows.iter().map(|r| RowKind::parse(r.0).expect("kind")).collect())
}

pub fn show(out: &[ChangeBatch]) -> Vec<String> {
    let mut v = Vec::new();
    for b in out {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .data
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(i) {
                        "null".to_string()
                    } else {
                        match c.data_type() {
                            DataType::Int32 => c.as_primitive::<Int32Type>().value(i).to_string(),
                            DataType::Int64 => c.as_primitive::<rsql_common::arrow::datatypes::Int64Type>().value(i).to_string(),
                            other => format!("<{other}>"),
                        }
                    }
                })
                .collect();
            v.push(format!("{}[{}]", b.kinds[i], cells.join(", ")));
        }
    }
    v
}
