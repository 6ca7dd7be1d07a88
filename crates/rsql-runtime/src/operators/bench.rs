//! Throughput of the stateful operators in isolation: a program that prints rows per second,
//! run on demand (it is ignored by default; use a release build for meaningful figures):
//!
//! `cargo test -p rsql-runtime --release --lib -- --ignored --nocapture operator_throughput`

use std::sync::Arc;
use std::time::Instant;

use rsql_common::arrow::array::{ArrayRef, Float64Array, Int32Array};
use rsql_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, RowKind};

use super::aggregate::GroupAggregate;
use super::join::Join;
use super::Operator;
use crate::graph::{AggCall, AggFunc, JoinKind};

/// A small deterministic generator (no seeding from the environment, so runs compare).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % below as u64) as u32
    }
}

fn int_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Int32, true)).collect::<Vec<_>>()))
}

fn ints(schema: &SchemaRef, rows: &[Vec<i32>], kinds: Vec<RowKind>) -> ChangeBatch {
    let cols: Vec<ArrayRef> = (0..schema.fields().len()).map(|c| Arc::new(Int32Array::from(rows.iter().map(|r| r[c]).collect::<Vec<_>>())) as ArrayRef).collect();
    ChangeBatch::new(RecordBatch::try_new(schema.clone(), cols).expect("bench batch"), kinds)
}

fn report(what: &str, rows: usize, started: Instant) {
    let s = started.elapsed().as_secs_f64();
    println!("{what}: {rows} rows in {s:.3} s = {:.0} rows/s", rows as f64 / s);
}

#[test]
#[ignore]
fn operator_throughput() {
    const BATCH: usize = 4096;
    // Keyed aggregate: COUNT(*), SUM(amount), MAX(amount) GROUP BY user_id over 100 K keys.
    let input = Arc::new(Schema::new(vec![Field::new("user_id", DataType::Int32, true), Field::new("amount", DataType::Float64, true)]));
    let out = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int32, true),
        Field::new("c", DataType::Int64, true),
        Field::new("s", DataType::Float64, true),
        Field::new("m", DataType::Float64, true),
    ]));
    let call = |func, arg, t: DataType| AggCall { func, arg, distinct: false, filter: None, output_type: t, name: "x".into() };
    let calls = vec![call(AggFunc::CountStar, None, DataType::Int64), call(AggFunc::Sum, Some(1), DataType::Float64), call(AggFunc::Max, Some(1), DataType::Float64)];
    let mut rng = Lcg(7);
    let batches: Vec<ChangeBatch> = (0..500)
        .map(|_| {
            let k: Vec<i32> = (0..BATCH).map(|_| rng.next(100_000) as i32 + 1).collect();
            let a: Vec<f64> = (0..BATCH).map(|_| rng.next(1000) as f64).collect();
            let cols: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(k)), Arc::new(Float64Array::from(a))];
            ChangeBatch::inserts(RecordBatch::try_new(input.clone(), cols).expect("bench batch"))
        })
        .collect();
    let rows = batches.len() * BATCH;
    let mut agg = GroupAggregate::new(input.clone(), &[0], calls, out, true).expect("aggregate");
    let mut sink = Vec::new();
    let started = Instant::now();
    for b in batches {
        agg.process(0, b, &mut sink).expect("process");
        sink.clear();
    }
    report("keyed aggregate (COUNT, SUM, MAX; 100 K keys)", rows, started);

    // Join: 1 M orders over 100 K customers, then every customer changes (-U/+U), each change
    // retracting and re-emitting its ~10 joined orders.
    let orders = int_schema(&["order_id", "customer_id", "amount"]);
    let customers = int_schema(&["customer_id", "region"]);
    let joined = int_schema(&["order_id", "customer_id", "amount", "c_id", "region"]);
    let mut join = Join::new(JoinKind::Inner, orders.clone(), customers.clone(), &[1], &[0], None, joined).expect("join");
    let mut fed = 0usize;
    let started = Instant::now();
    for chunk in (0..100_000).collect::<Vec<i32>>().chunks(BATCH) {
        let rows: Vec<Vec<i32>> = chunk.iter().map(|c| vec![c + 1, 0]).collect();
        fed += rows.len();
        join.process(1, ints(&customers, &rows, vec![RowKind::Insert; chunk.len()]), &mut sink).expect("process");
        sink.clear();
    }
    for chunk in (0..1_000_000).collect::<Vec<i32>>().chunks(BATCH) {
        let rows: Vec<Vec<i32>> = chunk.iter().map(|o| vec![*o, rng.next(100_000) as i32 + 1, rng.next(500) as i32]).collect();
        fed += rows.len();
        join.process(0, ints(&orders, &rows, vec![RowKind::Insert; chunk.len()]), &mut sink).expect("process");
        sink.clear();
    }
    let mut emitted = 0usize;
    for chunk in (0..100_000).collect::<Vec<i32>>().chunks(BATCH / 2) {
        let mut rows = Vec::new();
        let mut kinds = Vec::new();
        for c in chunk {
            rows.push(vec![c + 1, 0]);
            kinds.push(RowKind::UpdateBefore);
            rows.push(vec![c + 1, 1]);
            kinds.push(RowKind::UpdateAfter);
        }
        fed += rows.len();
        join.process(1, ints(&customers, &rows, kinds), &mut sink).expect("process");
        emitted += sink.iter().map(|b| b.num_rows()).sum::<usize>();
        sink.clear();
    }
    report(&format!("join (1 M orders, 100 K customers, 200 K updates emitting {emitted} rows)"), fed, started);
}
