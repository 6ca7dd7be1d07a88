//! Group aggregate with retraction. Per group it keeps a row count and one accumulator per
//! aggregate call; every accumulator can take a value back (MIN/MAX keep a value -> count
//! multiset, FIRST_VALUE/LAST_VALUE/LISTAGG keep the values in arrival order, DISTINCT keeps
//! value counts). After each input batch it compares every touched group's result with the one
//! it had before the batch: a new group emits +I, a group whose row count reached zero emits -D,
//! a changed result emits -U/+U, and an unchanged result emits nothing (with a state TTL set it
//! emits -U/+U anyway, as Flink does, so downstream state is written again too).
//!
//! A batch is processed column-wise: the group keys of the whole batch are encoded once, every
//! row is resolved to its group's slot in one hash lookup, accumulators are updated from typed
//! arrays, and the output is built from typed value vectors and a `take` of the key columns.
//! With `table.exec.state.ttl` a group not written for the TTL is dropped (on access and by an
//! incremental sweep) and starts again from empty.

use std::collections::{BTreeMap, HashMap, HashSet};

use datafusion_common::ScalarValue;
use rsql_common::arrow::array::{new_empty_array, Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, UInt32Array};
use rsql_common::arrow::compute::{cast, take};
use rsql_common::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::state::{KeyedStore, RowCodec, StateReader, StateTtl, StateWriter, PREFETCH_ENTRY, PREFETCH_SLOT};
use super::Operator;
use crate::graph::{AggCall, AggFunc};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Numeric {
    Int,
    Float,
    Decimal(u8, i8),
}

#[derive(Clone, Debug)]
enum Acc {
    Count(i64),
    SumInt { sum: i128, n: i64 },
    SumFloat { sum: f64, n: i64 },
    /// Value bytes (row format, so ordered as the values) -> how many times present.
    Ordered(BTreeMap<Vec<u8>, i64>),
    /// Values in arrival order.
    Seq(Vec<Vec<u8>>),
    Strings(Vec<String>),
    /// Over an insert-only input, MIN/MAX/FIRST_VALUE/LAST_VALUE need only the value they keep.
    Kept { v: Option<Box<ScalarValue>>, rule: Keep },
    /// The same over an integer argument (widened to i64).
    KeptInt { v: Option<i64>, rule: Keep },
    /// The same over a floating-point argument (widened to f64; ordered by `total_cmp`).
    KeptFloat { v: Option<f64>, rule: Keep },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Keep {
    Min,
    Max,
    First,
    Last,
}

impl Keep {
    fn replaces(self, ord: std::cmp::Ordering) -> bool {
        match self {
            Keep::Min => ord == std::cmp::Ordering::Less,
            Keep::Max => ord == std::cmp::Ordering::Greater,
            Keep::First => false,
            Keep::Last => true,
        }
    }
}

#[derive(Clone, Debug)]
struct GroupState {
    count: i64,
    /// The batch that last touched the group (see `GroupAggregate::epoch`).
    epoch: u64,
    accs: Box<[Acc]>,
    /// Per aggregate call (empty when no call is DISTINCT): for DISTINCT calls, value -> count.
    distinct: Vec<Option<HashMap<Vec<u8>, i64>>>,
}

/// How a call's result is collected for output.
#[derive(Clone, Copy, Debug, PartialEq)]
enum OutKind {
    Int,
    Float,
    Scalar,
}

struct CallInfo {
    call: AggCall,
    numeric: Option<Numeric>,
    /// Codec over the argument column for value-keeping accumulators and DISTINCT.
    codec: Option<RowCodec>,
    /// Codec over a lone value of the argument's type (snapshots of kept values).
    value_codec: Option<RowCodec>,
    /// Insert-only MIN/MAX/FIRST_VALUE/LAST_VALUE over a primitive number: kept as i64 or f64.
    kept_numeric: Option<Numeric>,
    out: OutKind,
}

pub struct GroupAggregate {
    group_codec: RowCodec,
    group: Vec<usize>,
    /// No GROUP BY: one group for every row.
    global: bool,
    calls: Vec<CallInfo>,
    schema: SchemaRef,
    groups: KeyedStore<GroupState>,
    epoch: u64,
    ttl: StateTtl,
}

/// A prepared argument column for one batch.
enum Arg {
    None,
    Int(Int64Array),
    Float(Float64Array),
    Decimal(Decimal128Array),
    Bytes(rsql_common::arrow::row::Rows, ArrayRef),
    /// SUM / AVG (DISTINCT): the values' bytes for the distinct count, and the numeric argument.
    Distinct(rsql_common::arrow::row::Rows, Box<Arg>),
    Str(ArrayRef),
    Plain(ArrayRef),
}

/// One call's results for a list of groups, typed where the accumulator allows.
enum OutCol {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Scalar(Vec<ScalarValue>),
}

impl OutCol {
    fn new(kind: OutKind) -> OutCol {
        match kind {
            OutKind::Int => OutCol::Int(Vec::new()),
            OutKind::Float => OutCol::Float(Vec::new()),
            OutKind::Scalar => OutCol::Scalar(Vec::new()),
        }
    }

    /// Whether value `a` of `self` equals value `b` of `other` (floats by bits, as ScalarValue).
    fn same(&self, a: usize, other: &OutCol, b: usize) -> bool {
        match (self, other) {
            (OutCol::Int(x), OutCol::Int(y)) => x[a] == y[b],
            (OutCol::Float(x), OutCol::Float(y)) => match (x[a], y[b]) {
                (Some(p), Some(q)) => p.to_bits() == q.to_bits(),
                (p, q) => p.is_none() && q.is_none(),
            },
            (OutCol::Scalar(x), OutCol::Scalar(y)) => x[a] == y[b],
            _ => false,
        }
    }

    /// Appends value `i` of `from` (a column of the same kind).
    fn push_from(&mut self, from: &OutCol, i: usize) {
        match (self, from) {
            (OutCol::Int(x), OutCol::Int(y)) => x.push(y[i]),
            (OutCol::Float(x), OutCol::Float(y)) => x.push(y[i]),
            (OutCol::Scalar(x), OutCol::Scalar(y)) => x.push(y[i].clone()),
            _ => {}
        }
    }

    fn finish(self, output_type: &DataType) -> Result<ArrayRef> {
        Ok(match self {
            OutCol::Int(v) => std::sync::Arc::new(Int64Array::from(v)),
            OutCol::Float(v) => std::sync::Arc::new(Float64Array::from(v)),
            OutCol::Scalar(v) if v.is_empty() => new_empty_array(output_type),
            OutCol::Scalar(v) => ScalarValue::iter_to_array(v)?,
        })
    }
}

fn is_int(t: &DataType) -> bool {
    matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32)
}

const MISSING: u32 = u32::MAX;

/// A group touched by the current batch, in first-touch order.
struct Touch {
    /// First input row with the group's key (its key columns come from there).
    row: u32,
    /// The group's slot; MISSING when its first row retracted a group that did not exist.
    slot: u32,
    /// Position of its result before the batch in the `prev` columns.
    prev: Option<u32>,
}

impl GroupAggregate {
    /// `append_only`: the input never retracts, so value-keeping aggregates keep one value.
    pub fn new(input: SchemaRef, group: &[usize], aggs: Vec<AggCall>, schema: SchemaRef, append_only: bool) -> Result<Self> {
        let mut calls = Vec::new();
        for call in aggs {
            let arg_type = call.arg.map(|i| input.field(i).data_type().clone());
            let numeric = match (&call.func, &arg_type) {
                (AggFunc::Sum | AggFunc::Avg, Some(t)) => Some(match t {
                    t if is_int(t) => Numeric::Int,
                    DataType::Float32 | DataType::Float64 | DataType::UInt64 => Numeric::Float,
                    DataType::Decimal128(p, s) => Numeric::Decimal(*p, *s),
                    other => return Err(RsqlError::unsupported(format!("{} over a value of type {other}", call.func))),
                }),
                _ => None,
            };
            let keeps_values = matches!(call.func, AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue);
            let needs_codec = call.distinct || (keeps_values && !append_only);
            let kept_numeric = match (keeps_values && append_only && !call.distinct, &arg_type) {
                (true, Some(t)) if is_int(t) || *t == DataType::Int64 => Some(Numeric::Int),
                (true, Some(DataType::Float32 | DataType::Float64)) => Some(Numeric::Float),
                _ => None,
            };
            let value_codec = match (keeps_values && append_only && kept_numeric.is_none(), &arg_type) {
                (true, Some(t)) => {
                    let one = std::sync::Arc::new(rsql_common::arrow::datatypes::Schema::new(vec![rsql_common::arrow::datatypes::Field::new("v", t.clone(), true)]));
                    Some(RowCodec::new(&one, None)?)
                }
                _ => None,
            };
            let codec = match (needs_codec, call.arg) {
                (true, Some(i)) => Some(RowCodec::new(&input, Some(&[i]))?),
                _ => None,
            };
            let out = match (&call.func, numeric, kept_numeric) {
                (AggFunc::Count | AggFunc::CountStar, _, _) => OutKind::Int,
                (AggFunc::Sum | AggFunc::Avg, Some(Numeric::Int), _) => OutKind::Int,
                (AggFunc::Sum | AggFunc::Avg, Some(Numeric::Float), _) => OutKind::Float,
                (_, _, Some(Numeric::Int)) => OutKind::Int,
                (_, _, Some(Numeric::Float)) => OutKind::Float,
                _ => OutKind::Scalar,
            };
            calls.push(CallInfo { call, numeric, codec, value_codec, kept_numeric, out });
        }
        Ok(GroupAggregate {
            group_codec: RowCodec::new(&input, Some(group))?,
            group: group.to_vec(),
            global: group.is_empty(),
            calls,
            schema,
            groups: KeyedStore::default(),
            epoch: 0,
            ttl: StateTtl::default(),
        })
    }

    /// Bounds the state with a TTL (`table.exec.state.ttl`).
    pub fn with_ttl(mut self, ttl: StateTtl) -> Self {
        self.ttl = ttl;
        self
    }

    fn new_group(&self) -> GroupState {
        let accs = self
            .calls
            .iter()
            .map(|c| {
                let rule = match c.call.func {
                    AggFunc::Min => Keep::Min,
                    AggFunc::Max => Keep::Max,
                    AggFunc::FirstValue => Keep::First,
                    _ => Keep::Last,
                };
                match (&c.call.func, c.numeric) {
                    (AggFunc::Count | AggFunc::CountStar, _) => Acc::Count(0),
                    (AggFunc::Sum | AggFunc::Avg, Some(Numeric::Float)) => Acc::SumFloat { sum: 0.0, n: 0 },
                    (AggFunc::Sum | AggFunc::Avg, _) => Acc::SumInt { sum: 0, n: 0 },
                    (AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue, _) if c.kept_numeric == Some(Numeric::Int) => {
                        Acc::KeptInt { v: None, rule }
                    }
                    (AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue, _) if c.kept_numeric == Some(Numeric::Float) => {
                        Acc::KeptFloat { v: None, rule }
                    }
                    (AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue, _) if c.value_codec.is_some() => Acc::Kept { v: None, rule },
                    (AggFunc::Min | AggFunc::Max, _) => Acc::Ordered(BTreeMap::new()),
                    (AggFunc::FirstValue | AggFunc::LastValue, _) => Acc::Seq(Vec::new()),
                    (AggFunc::ListAgg(_), _) => Acc::Strings(Vec::new()),
                }
            })
            .collect();
        let distinct = if self.calls.iter().any(|c| c.call.distinct) {
            self.calls.iter().map(|c| if c.call.distinct { Some(HashMap::new()) } else { None }).collect()
        } else {
            Vec::new()
        };
        GroupState { count: 0, epoch: 0, accs, distinct }
    }

    fn prepare_args(&self, batch: &RecordBatch) -> Result<Vec<Arg>> {
        let int = |col: &ArrayRef| -> Result<Arg> { Ok(Arg::Int(cast(col, &DataType::Int64)?.as_primitive::<Int64Type>().clone())) };
        let float = |col: &ArrayRef| -> Result<Arg> { Ok(Arg::Float(cast(col, &DataType::Float64)?.as_primitive::<Float64Type>().clone())) };
        let decimal = |col: &ArrayRef| -> Result<Arg> {
            col.as_any()
                .downcast_ref::<Decimal128Array>()
                .map(|a| Arg::Decimal(a.clone()))
                .ok_or_else(|| RsqlError::execution(format!("SUM/AVG argument is {} where DECIMAL was planned", col.data_type())))
        };
        self.calls
            .iter()
            .map(|c| {
                let Some(i) = c.call.arg else { return Ok(Arg::None) };
                let col = batch.column(i).clone();
                if let Some(codec) = &c.codec {
                    let rows = codec.encode(batch.columns())?;
                    return Ok(match c.numeric {
                        Some(Numeric::Int) => Arg::Distinct(rows, Box::new(int(&col)?)),
                        Some(Numeric::Float) => Arg::Distinct(rows, Box::new(float(&col)?)),
                        Some(Numeric::Decimal(..)) => Arg::Distinct(rows, Box::new(decimal(&col)?)),
                        None => Arg::Bytes(rows, col),
                    });
                }
                match (&c.call.func, c.numeric.or(c.kept_numeric)) {
                    (_, Some(Numeric::Int)) => int(&col),
                    (_, Some(Numeric::Float)) => float(&col),
                    (_, Some(Numeric::Decimal(..))) => decimal(&col),
                    (AggFunc::ListAgg(_), _) => Ok(Arg::Str(cast(&col, &DataType::Utf8)?)),
                    _ => Ok(Arg::Plain(col)),
                }
            })
            .collect()
    }

    /// Appends group `g`'s result for every call to `cols`.
    fn push_result(&self, g: &GroupState, cols: &mut [OutCol]) -> Result<()> {
        for ((c, acc), col) in self.calls.iter().zip(g.accs.iter()).zip(cols.iter_mut()) {
            match (col, acc) {
                (OutCol::Int(v), Acc::Count(n)) => v.push(Some(*n)),
                (OutCol::Int(v), Acc::SumInt { n: 0, .. }) => v.push(None),
                (OutCol::Int(v), Acc::SumInt { sum, n }) => v.push(Some(if c.call.func == AggFunc::Avg {
                    // Flink's AVG over integers is an integer (truncated).
                    (*sum / *n as i128) as i64
                } else {
                    *sum as i64
                })),
                (OutCol::Int(v), Acc::KeptInt { v: x, .. }) => v.push(*x),
                (OutCol::Float(v), Acc::SumFloat { n: 0, .. }) => v.push(None),
                (OutCol::Float(v), Acc::SumFloat { sum, n }) => v.push(Some(if c.call.func == AggFunc::Avg { *sum / *n as f64 } else { *sum })),
                (OutCol::Float(v), Acc::KeptFloat { v: x, .. }) => v.push(*x),
                (OutCol::Scalar(v), acc) => {
                    let x = self.scalar_result(c, acc)?;
                    let ot = &c.call.output_type;
                    v.push(if x.data_type() == *ot { x } else { x.cast_to(ot)? });
                }
                _ => return Err(RsqlError::execution("aggregate state mismatch")),
            }
        }
        Ok(())
    }

    fn scalar_result(&self, c: &CallInfo, acc: &Acc) -> Result<ScalarValue> {
        let ot = &c.call.output_type;
        Ok(match (acc, &c.call.func) {
            (Acc::Count(n), _) => ScalarValue::Int64(Some(*n)),
            (Acc::SumInt { n: 0, .. } | Acc::SumFloat { n: 0, .. }, _) => ScalarValue::try_from(ot)?,
            (Acc::SumInt { sum, n }, AggFunc::Avg) => match c.numeric {
                Some(Numeric::Decimal(_, s)) => match ot {
                    DataType::Decimal128(op, os) => {
                        let scaled = sum.checked_mul(10i128.pow((*os - s).max(0) as u32)).unwrap_or(*sum);
                        ScalarValue::Decimal128(Some(scaled / *n as i128), *op, *os)
                    }
                    _ => ScalarValue::Float64(Some(*sum as f64 / 10f64.powi(s as i32) / *n as f64)),
                },
                _ => ScalarValue::Int64(Some((*sum / *n as i128) as i64)),
            },
            (Acc::SumInt { sum, .. }, _) => match c.numeric {
                Some(Numeric::Decimal(p, s)) => ScalarValue::Decimal128(Some(*sum), p.max(38), s),
                _ => ScalarValue::Int64(Some(*sum as i64)),
            },
            (Acc::SumFloat { sum, n }, AggFunc::Avg) => ScalarValue::Float64(Some(*sum / *n as f64)),
            (Acc::SumFloat { sum, .. }, _) => ScalarValue::Float64(Some(*sum)),
            (Acc::Ordered(m), f) => {
                let v = if *f == AggFunc::Min { m.keys().next() } else { m.keys().next_back() };
                self.decode_value(c, v)?
            }
            (Acc::Seq(s), f) => {
                let v = if *f == AggFunc::FirstValue { s.first() } else { s.last() };
                self.decode_value(c, v)?
            }
            (Acc::Strings(s), AggFunc::ListAgg(sep)) => {
                if s.is_empty() {
                    ScalarValue::Utf8(None)
                } else {
                    ScalarValue::Utf8(Some(s.join(sep)))
                }
            }
            (Acc::Strings(_), _) => return Err(RsqlError::execution("aggregate state mismatch")),
            (Acc::Kept { v: Some(v), .. }, _) => (**v).clone(),
            (Acc::KeptInt { v: Some(v), .. }, _) => ScalarValue::Int64(Some(*v)),
            (Acc::KeptFloat { v: Some(v), .. }, _) => ScalarValue::Float64(Some(*v)),
            (Acc::Kept { v: None, .. } | Acc::KeptInt { v: None, .. } | Acc::KeptFloat { v: None, .. }, _) => ScalarValue::try_from(ot)?,
        })
    }

    fn decode_value(&self, c: &CallInfo, v: Option<&Vec<u8>>) -> Result<ScalarValue> {
        match (v, &c.codec) {
            (Some(bytes), Some(codec)) => {
                let cols = codec.decode([bytes.as_slice()])?;
                Ok(ScalarValue::try_from_array(cols[0].as_ref(), 0)?)
            }
            _ => Ok(ScalarValue::try_from(&c.call.output_type)?),
        }
    }

    /// Resolves every row of the batch to its group's slot (creating groups for accumulating
    /// rows), recording touched groups and their results before the batch. Rows that retract a
    /// group that does not exist get MISSING: there is nothing to take back.
    fn resolve(&mut self, batch: &ChangeBatch, prev: &mut [OutCol]) -> Result<(Vec<u32>, Vec<Touch>)> {
        let n = batch.num_rows();
        let keys = if self.global { None } else { Some(self.group_codec.encode(batch.data.columns())?) };
        let now = self.ttl.now();
        let epoch = self.epoch;
        let mut slots = Vec::with_capacity(n);
        let mut touched: Vec<Touch> = Vec::new();
        let mut prev_len = 0u32;
        // Keys first seen as retractions of groups that do not exist (rare).
        let mut missing: HashSet<Vec<u8>> = HashSet::new();
        // Key hashes first, so that each lookup can start loading the index entry and the
        // slot of the lookups a few rows ahead (their cache misses then overlap).
        let hashes: Vec<u64> = match &keys {
            Some(k) => (0..n).map(|i| self.groups.hash(k.row(i).data())).collect(),
            None => vec![self.groups.hash(&[]); n],
        };
        for i in 0..n {
            if let Some(h) = hashes.get(i + PREFETCH_ENTRY) {
                self.groups.prefetch(*h, false);
            }
            if let Some(h) = hashes.get(i + PREFETCH_SLOT) {
                self.groups.prefetch(*h, true);
            }
            let kb: &[u8] = match &keys {
                Some(k) => k.row(i).data(),
                None => &[],
            };
            let mut id = self.groups.find_hashed(hashes[i], kb);
            if let Some(s) = id {
                let expired = self.groups.get(s).is_some_and(|g| g.value.epoch != epoch && self.ttl.expired(g.written, now));
                if expired {
                    // Never return expired state: the group starts again from empty.
                    self.groups.remove(s);
                    id = None;
                }
            }
            match id {
                Some(s) => {
                    let first = match self.groups.get_mut(s) {
                        Some(g) => {
                            g.written = now;
                            let first = g.value.epoch != epoch;
                            g.value.epoch = epoch;
                            first
                        }
                        None => return Err(RsqlError::execution("aggregate state slot vanished")),
                    };
                    if first {
                        let mut p = None;
                        if let Some(g) = self.groups.get(s) {
                            if g.value.count > 0 {
                                self.push_result(&g.value, prev)?;
                                p = Some(prev_len);
                                prev_len += 1;
                            }
                        }
                        touched.push(Touch { row: i as u32, slot: s, prev: p });
                    }
                    slots.push(s);
                }
                None if batch.kinds[i].weight() < 0 => {
                    if missing.insert(kb.to_vec()) {
                        touched.push(Touch { row: i as u32, slot: MISSING, prev: None });
                    }
                    slots.push(MISSING);
                }
                None => {
                    let mut g = self.new_group();
                    g.epoch = epoch;
                    let s = self.groups.insert_hashed(hashes[i], kb, g, now);
                    if missing.is_empty() || !missing.contains(kb) {
                        touched.push(Touch { row: i as u32, slot: s, prev: None });
                    }
                    slots.push(s);
                }
            }
        }
        // Groups first touched by a retraction and created later in the batch.
        if !missing.is_empty() {
            if let Some(keys) = &keys {
                for t in touched.iter_mut().filter(|t| t.slot == MISSING) {
                    t.slot = self.groups.find(keys.row(t.row as usize).data()).unwrap_or(MISSING);
                }
            } else if let Some(t) = touched.iter_mut().find(|t| t.slot == MISSING) {
                t.slot = self.groups.find(&[]).unwrap_or(MISSING);
            }
        }
        Ok((slots, touched))
    }
}

fn apply(acc: &mut Acc, arg: &Arg, i: usize, w: i64) {
    match (acc, arg) {
        (Acc::Count(n), _) => *n += w,
        (Acc::SumInt { sum, n }, Arg::Int(a)) => {
            *sum += a.value(i) as i128 * w as i128;
            *n += w;
        }
        (Acc::SumFloat { sum, n }, Arg::Float(a)) => {
            *sum += a.value(i) * w as f64;
            *n += w;
        }
        (Acc::KeptInt { v, rule }, Arg::Int(a)) => {
            if w > 0 {
                let new = a.value(i);
                if v.is_none_or(|cur| rule.replaces(new.cmp(&cur))) {
                    *v = Some(new);
                }
            }
        }
        (Acc::KeptFloat { v, rule }, Arg::Float(a)) => {
            if w > 0 {
                let new = a.value(i);
                if v.is_none_or(|cur| rule.replaces(new.total_cmp(&cur))) {
                    *v = Some(new);
                }
            }
        }
        (Acc::SumInt { sum, n }, Arg::Decimal(a)) => {
            *sum += a.value(i) * w as i128;
            *n += w;
        }
        (Acc::Kept { v, rule }, Arg::Plain(a) | Arg::Bytes(_, a)) => {
            if w <= 0 {
                return;
            }
            let Ok(new) = ScalarValue::try_from_array(a.as_ref(), i) else { return };
            let replace = match v.as_deref() {
                None => true,
                Some(cur) => new.partial_cmp(cur).is_some_and(|o| rule.replaces(o)) || (*rule == Keep::Last),
            };
            if replace {
                *v = Some(Box::new(new));
            }
        }
        (Acc::Ordered(m), Arg::Bytes(rows, _)) => {
            let k = rows.row(i).as_ref().to_vec();
            let e = m.entry(k).or_insert(0);
            *e += w;
            if *e <= 0 {
                let k = rows.row(i).as_ref().to_vec();
                m.remove(&k);
            }
        }
        (Acc::Seq(s), Arg::Bytes(rows, _)) => {
            let row = rows.row(i);
            let k = row.as_ref();
            if w > 0 {
                s.push(k.to_vec());
            } else if let Some(p) = s.iter().rposition(|x| x.as_slice() == k) {
                s.remove(p);
            }
        }
        (Acc::Strings(s), Arg::Str(a)) => {
            let v = a.as_string::<i32>().value(i);
            if w > 0 {
                s.push(v.to_string());
            } else if let Some(p) = s.iter().rposition(|x| x == v) {
                s.remove(p);
            }
        }
        _ => {}
    }
}

fn arg_is_null(arg: &Arg, i: usize) -> bool {
    match arg {
        Arg::None => false,
        Arg::Int(a) => a.is_null(i),
        Arg::Float(a) => a.is_null(i),
        Arg::Decimal(a) => a.is_null(i),
        Arg::Str(a) | Arg::Bytes(_, a) | Arg::Plain(a) => a.is_null(i),
        Arg::Distinct(_, inner) => arg_is_null(inner, i),
    }
}

/// Takes value `i` of a DISTINCT call's argument into the group's value counts; true when the
/// value's presence changed (it is new to the group or its last occurrence went), that is when
/// the underlying accumulator must see the row.
fn distinct_contributes(d: &mut HashMap<Vec<u8>, i64>, rows: &rsql_common::arrow::row::Rows, i: usize, w: i64) -> bool {
    let k = rows.row(i).as_ref().to_vec();
    let c = d.entry(k.clone()).or_insert(0);
    let before = *c;
    *c += w;
    let after = *c;
    if after <= 0 {
        d.remove(&k);
    }
    (before <= 0 && after > 0) || (before > 0 && after <= 0)
}

impl Operator for GroupAggregate {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        self.epoch += 1;
        let n = batch.num_rows();
        let mut prev: Vec<OutCol> = self.calls.iter().map(|c| OutCol::new(c.out)).collect();
        let (slots, touched) = self.resolve(&batch, &mut prev)?;
        let args = self.prepare_args(&batch.data)?;
        let weights: Vec<i64> = batch.kinds.iter().map(|k| k.weight()).collect();

        for i in 0..n {
            if slots[i] != MISSING {
                if let Some(g) = self.groups.get_mut(slots[i]) {
                    g.value.count += weights[i];
                }
            }
        }
        for (j, arg) in args.iter().enumerate() {
            let filter: Option<BooleanArray> = self.calls[j].call.filter.map(|f| batch.data.column(f).as_boolean().clone());
            let distinct = self.calls[j].call.distinct;
            let numeric_arg = match arg {
                Arg::Distinct(_, numeric) => numeric.as_ref(),
                other => other,
            };
            for i in 0..n {
                let s = slots[i];
                if s == MISSING {
                    continue;
                }
                if let Some(f) = &filter {
                    if !(f.is_valid(i) && f.value(i)) {
                        continue;
                    }
                }
                if arg_is_null(arg, i) {
                    continue;
                }
                let Some(g) = self.groups.get_mut(s) else { continue };
                let w = weights[i];
                if distinct {
                    let (Arg::Bytes(rows, _) | Arg::Distinct(rows, _)) = arg else { continue };
                    let Some(Some(d)) = g.value.distinct.get_mut(j) else { continue };
                    if !distinct_contributes(d, rows, i, w) {
                        continue;
                    }
                }
                apply(&mut g.value.accs[j], numeric_arg, i, w);
            }
        }

        // Results after the batch; groups whose row count reached zero go.
        let mut now: Vec<OutCol> = self.calls.iter().map(|c| OutCol::new(c.out)).collect();
        let mut now_pos: Vec<Option<u32>> = Vec::with_capacity(touched.len());
        let mut now_len = 0u32;
        for t in &touched {
            let live = match self.groups.get(t.slot) {
                Some(g) if g.value.count > 0 => {
                    self.push_result(&g.value, &mut now)?;
                    true
                }
                Some(_) => {
                    self.groups.remove(t.slot);
                    false
                }
                None => false,
            };
            now_pos.push(if live {
                now_len += 1;
                Some(now_len - 1)
            } else {
                None
            });
        }
        let refresh = self.ttl.enabled();
        let mut cols: Vec<OutCol> = self.calls.iter().map(|c| OutCol::new(c.out)).collect();
        let mut key_rows: Vec<u32> = Vec::new();
        let mut kinds: Vec<RowKind> = Vec::new();
        for (t, np) in touched.iter().zip(&now_pos) {
            let changed = |p: u32, q: u32| refresh || prev.iter().zip(&now).any(|(a, b)| !a.same(p as usize, b, q as usize));
            let emit: &[(bool, u32, RowKind)] = &match (t.prev, *np) {
                (None, Some(q)) => [(true, q, RowKind::Insert), (false, 0, RowKind::Insert)],
                (Some(p), None) => [(false, p, RowKind::Delete), (false, 0, RowKind::Insert)],
                (Some(p), Some(q)) if changed(p, q) => [(false, p, RowKind::UpdateBefore), (true, q, RowKind::UpdateAfter)],
                _ => continue,
            };
            let count = if matches!(emit[0].2, RowKind::UpdateBefore) { 2 } else { 1 };
            for &(from_now, pos, kind) in &emit[..count] {
                let src = if from_now { &now } else { &prev };
                for (c, s) in cols.iter_mut().zip(src) {
                    c.push_from(s, pos as usize);
                }
                key_rows.push(t.row);
                kinds.push(kind);
            }
        }

        if refresh {
            // Incremental cleanup: look at a few more slots than rows came in.
            let ttl = self.ttl.clone();
            let at = self.ttl.now();
            self.groups.sweep(n.max(64) * 2, |slot| ttl.expired(slot.written, at));
        }
        if kinds.is_empty() {
            return Ok(());
        }
        let mut out_cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if !self.global {
            let idx = UInt32Array::from(key_rows);
            for &g in &self.group {
                out_cols.push(take(batch.data.column(g).as_ref(), &idx, None)?);
            }
        }
        for (c, info) in cols.into_iter().zip(&self.calls) {
            out_cols.push(c.finish(&info.call.output_type)?);
        }
        let out_cols = super::conform(out_cols, &self.schema)?;
        let data = RecordBatch::try_new(self.schema.clone(), out_cols)?;
        out.push(ChangeBatch::new(data, kinds));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.u64(self.groups.len() as u64);
        for (_, slot) in self.groups.iter() {
            let g = &slot.value;
            w.bytes(&slot.key);
            w.u64(slot.written);
            w.i64(g.count);
            for (j, acc) in g.accs.iter().enumerate() {
                match acc {
                    Acc::Kept { v, .. } => match (v, &self.calls[j].value_codec) {
                        (Some(v), Some(codec)) => {
                            w.u64(1);
                            let rows = codec.encode(&[v.to_array()?])?;
                            w.bytes(rows.row(0).as_ref());
                        }
                        _ => w.u64(0),
                    },
                    Acc::KeptInt { v, .. } => match v {
                        Some(v) => {
                            w.u64(1);
                            w.i64(*v);
                        }
                        None => w.u64(0),
                    },
                    Acc::KeptFloat { v, .. } => match v {
                        Some(v) => {
                            w.u64(1);
                            w.u64(v.to_bits());
                        }
                        None => w.u64(0),
                    },
                    Acc::Count(n) => w.i64(*n),
                    Acc::SumInt { sum, n } => {
                        w.bytes(&sum.to_le_bytes());
                        w.i64(*n);
                    }
                    Acc::SumFloat { sum, n } => {
                        w.u64(sum.to_bits());
                        w.i64(*n);
                    }
                    Acc::Ordered(m) => {
                        w.u64(m.len() as u64);
                        for (v, c) in m {
                            w.bytes(v);
                            w.i64(*c);
                        }
                    }
                    Acc::Seq(s) => {
                        w.u64(s.len() as u64);
                        for v in s {
                            w.bytes(v);
                        }
                    }
                    Acc::Strings(s) => {
                        w.u64(s.len() as u64);
                        for v in s {
                            w.bytes(v.as_bytes());
                        }
                    }
                }
                match g.distinct.get(j) {
                    Some(Some(m)) => {
                        w.u64(m.len() as u64);
                        for (v, c) in m {
                            w.bytes(v);
                            w.i64(*c);
                        }
                    }
                    _ => w.u64(u64::MAX),
                }
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let corrupt = || RsqlError::execution("aggregate snapshot is corrupt");
        let mut r = StateReader::new(bytes);
        self.groups.clear();
        let n = r.u64()?;
        for _ in 0..n {
            let k = r.bytes()?;
            let written = r.u64()?;
            let mut g = self.new_group();
            g.count = r.i64()?;
            for j in 0..g.accs.len() {
                match &mut g.accs[j] {
                    Acc::Kept { v, .. } => {
                        if r.u64()? == 1 {
                            let bytes = r.bytes()?;
                            let codec = self.calls[j].value_codec.as_ref().ok_or_else(corrupt)?;
                            let cols = codec.decode([bytes])?;
                            *v = Some(Box::new(ScalarValue::try_from_array(cols[0].as_ref(), 0)?));
                        }
                    }
                    Acc::KeptInt { v, .. } => {
                        if r.u64()? == 1 {
                            *v = Some(r.i64()?);
                        }
                    }
                    Acc::KeptFloat { v, .. } => {
                        if r.u64()? == 1 {
                            *v = Some(f64::from_bits(r.u64()?));
                        }
                    }
                    Acc::Count(n) => *n = r.i64()?,
                    Acc::SumInt { sum, n } => {
                        let b = r.bytes()?;
                        let arr: [u8; 16] = b.try_into().map_err(|_| corrupt())?;
                        *sum = i128::from_le_bytes(arr);
                        *n = r.i64()?;
                    }
                    Acc::SumFloat { sum, n } => {
                        *sum = f64::from_bits(r.u64()?);
                        *n = r.i64()?;
                    }
                    Acc::Ordered(m) => {
                        for _ in 0..r.u64()? {
                            let v = r.bytes()?.to_vec();
                            m.insert(v, r.i64()?);
                        }
                    }
                    Acc::Seq(s) => {
                        for _ in 0..r.u64()? {
                            s.push(r.bytes()?.to_vec());
                        }
                    }
                    Acc::Strings(s) => {
                        for _ in 0..r.u64()? {
                            s.push(String::from_utf8_lossy(r.bytes()?).into_owned());
                        }
                    }
                }
                let dn = r.u64()?;
                if dn != u64::MAX {
                    let mut m = HashMap::new();
                    for _ in 0..dn {
                        let v = r.bytes()?.to_vec();
                        m.insert(v, r.i64()?);
                    }
                    match g.distinct.get_mut(j) {
                        Some(d) => *d = Some(m),
                        None => return Err(corrupt()),
                    }
                }
            }
            if self.groups.find(k).is_some() {
                return Err(corrupt());
            }
            self.groups.insert(k, g, written);
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        let per_group = std::mem::size_of::<Option<super::state::Slot<GroupState>>>() + 8 + self.calls.len() * std::mem::size_of::<Acc>();
        self.groups.iter().map(|(_, s)| s.key.len() + per_group).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testutil::{batch, manual_ttl, schema, show};
    use rsql_common::arrow::datatypes::Field;

    #[test]
    fn min_max_and_count_retract_correctly() {
        let s = schema(&["k", "v"], false);
        let calls = vec![
            AggCall { func: AggFunc::CountStar, arg: None, distinct: false, filter: None, output_type: DataType::Int64, name: "c".into() },
            AggCall { func: AggFunc::Min, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int32, name: "mn".into() },
            AggCall { func: AggFunc::Max, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int32, name: "mx".into() },
        ];
        let out_schema = std::sync::Arc::new(rsql_common::arrow::datatypes::Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("c", DataType::Int64, false),
            Field::new("mn", DataType::Int32, true),
            Field::new("mx", DataType::Int32, true),
        ]));
        let mut a = GroupAggregate::new(s.clone(), &[0], calls.clone(), out_schema.clone(), false).unwrap();
        let mut out = Vec::new();
        a.process(0, batch(&s, &[("+I", &[1, 5]), ("+I", &[1, 9])]), &mut out).unwrap();
        // Retracting the current maximum falls back to the next value.
        a.process(0, batch(&s, &[("-D", &[1, 9])]), &mut out).unwrap();
        // An unchanged result emits nothing.
        a.process(0, batch(&s, &[("+I", &[1, 7]), ("-D", &[1, 7])]), &mut out).unwrap();
        // The last row of a group deletes it.
        a.process(0, batch(&s, &[("-D", &[1, 5])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 2, 5, 9]", "-U[1, 2, 5, 9]", "+U[1, 1, 5, 5]", "-D[1, 1, 5, 5]"]);
        assert!(a.groups.is_empty());

        // Over an insert-only input the same calls keep one value each, and survive a snapshot.
        let mut b = GroupAggregate::new(s.clone(), &[0], calls.clone(), out_schema.clone(), true).unwrap();
        let mut out = Vec::new();
        b.process(0, batch(&s, &[("+I", &[1, 5]), ("+I", &[1, 9]), ("+I", &[1, 3])]), &mut out).unwrap();
        let mut c = GroupAggregate::new(s.clone(), &[0], calls, out_schema, true).unwrap();
        c.restore(&b.snapshot().unwrap()).unwrap();
        c.process(0, batch(&s, &[("+I", &[1, 4])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 3, 3, 9]", "-U[1, 3, 3, 9]", "+U[1, 4, 3, 9]"]);
    }

    #[test]
    fn sum_distinct_adds_each_value_once() {
        let s = schema(&["k", "v"], false);
        let calls = vec![AggCall { func: AggFunc::Sum, arg: Some(1), distinct: true, filter: None, output_type: DataType::Int64, name: "sd".into() }];
        let out_schema = std::sync::Arc::new(rsql_common::arrow::datatypes::Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("sd", DataType::Int64, true),
        ]));
        let mut a = GroupAggregate::new(s.clone(), &[0], calls, out_schema, false).unwrap();
        let mut out = Vec::new();
        a.process(0, batch(&s, &[("+I", &[1, 5]), ("+I", &[1, 5]), ("+I", &[1, 2])]), &mut out).unwrap();
        // One of two equal values goes: the sum keeps it; the last one goes: the sum drops it.
        a.process(0, batch(&s, &[("-D", &[1, 5])]), &mut out).unwrap();
        a.process(0, batch(&s, &[("-D", &[1, 5])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 7]", "-U[1, 7]", "+U[1, 2]"]);
    }

    #[test]
    fn state_ttl_expires_groups_that_were_not_written() {
        use std::sync::atomic::Ordering::SeqCst;
        let s = schema(&["k", "v"], false);
        let calls = vec![
            AggCall { func: AggFunc::CountStar, arg: None, distinct: false, filter: None, output_type: DataType::Int64, name: "c".into() },
            AggCall { func: AggFunc::Min, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int32, name: "mn".into() },
            AggCall { func: AggFunc::Max, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int32, name: "mx".into() },
        ];
        let out_schema = std::sync::Arc::new(rsql_common::arrow::datatypes::Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("c", DataType::Int64, false),
            Field::new("mn", DataType::Int32, true),
            Field::new("mx", DataType::Int32, true),
        ]));
        let (now, ttl) = manual_ttl();
        let mut a = GroupAggregate::new(s.clone(), &[0], calls.clone(), out_schema.clone(), false).unwrap().with_ttl(ttl.clone());
        let mut out = Vec::new();
        a.process(0, batch(&s, &[("+I", &[1, 5])]), &mut out).unwrap();
        now.store(50, SeqCst);
        a.process(0, batch(&s, &[("+I", &[1, 7])]), &mut out).unwrap();
        // 70 ms after the last write: still there.
        now.store(120, SeqCst);
        a.process(0, batch(&s, &[("+I", &[1, 3])]), &mut out).unwrap();
        // 180 ms after the last write: expired, so the group starts again and emits +I.
        now.store(300, SeqCst);
        a.process(0, batch(&s, &[("+I", &[1, 9])]), &mut out).unwrap();
        // A retraction of expired state has nothing to take back.
        now.store(450, SeqCst);
        a.process(0, batch(&s, &[("-D", &[1, 9])]), &mut out).unwrap();
        // With a TTL an unchanged result is emitted again (-U/+U), as Flink does.
        now.store(460, SeqCst);
        a.process(0, batch(&s, &[("+I", &[2, 4])]), &mut out).unwrap();
        now.store(470, SeqCst);
        a.process(0, batch(&s, &[("+I", &[2, 4]), ("-D", &[2, 4])]), &mut out).unwrap();
        assert_eq!(
            show(&out),
            vec![
                "+I[1, 1, 5, 5]",
                "-U[1, 1, 5, 5]",
                "+U[1, 2, 5, 7]",
                "-U[1, 2, 5, 7]",
                "+U[1, 3, 3, 7]",
                "+I[1, 1, 9, 9]",
                "+I[2, 1, 4, 4]",
                "-U[2, 1, 4, 4]",
                "+U[2, 1, 4, 4]",
            ]
        );
        // Write timestamps survive a snapshot: restored, key 2 expires at the same time.
        let mut b = GroupAggregate::new(s.clone(), &[0], calls, out_schema, false).unwrap().with_ttl(ttl);
        b.restore(&a.snapshot().unwrap()).unwrap();
        // Key 1 went when its expired state was accessed at 450; key 2 is left.
        assert_eq!(b.groups.len(), 1);
        assert!(b.groups.iter().all(|(_, g)| g.written == 470));
        // The incremental sweep drops state nobody reads again.
        now.store(1000, SeqCst);
        let mut out = Vec::new();
        b.process(0, batch(&s, &[("+I", &[3, 1])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[3, 1, 1, 1]"]);
        assert_eq!(b.groups.len(), 1);
        assert!(b.groups.iter().all(|(_, g)| g.written == 1000));
    }
}
