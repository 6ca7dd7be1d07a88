//! Group aggregate with retraction. Per group it keeps a row count and one accumulator per
//! aggregate call; every accumulator can take a value back (MIN/MAX keep a value -> count
//! multiset, FIRST_VALUE/LAST_VALUE/LISTAGG keep the values in arrival order, DISTINCT keeps
//! value counts). After each input batch it compares every touched group's result with the one
//! it had before the batch: a new group emits +I, a group whose row count reached zero emits -D,
//! a changed result emits -U/+U, and an unchanged result emits nothing (with a state TTL set it
//! emits -U/+U anyway, as Flink does, so downstream state is written again too).
//!
//! State is a struct of arrays: [`KeySlots`] maps each group key to a dense slot id, and the row
//! counts and every call's accumulators are columns indexed by that id. COUNT(*) is the row
//! count itself, COUNT is an i64, SUM/AVG over integers an i64 sum (moved to a wide side map for
//! the rare group that leaves the i64 range) with its value count, insert-only MIN/MAX/
//! FIRST_VALUE/LAST_VALUE over numbers a value plus a bit; only the accumulators that keep
//! values (and DISTINCT value counts) are boxed, per group, and absent until used.
//!
//! A batch is processed column-wise: the group keys of the whole batch are encoded once, every
//! row is resolved to its group's slot in one hash lookup, accumulators are updated from typed
//! arrays, and the output is built from typed value vectors and a `take` of the key columns.
//! With `table.exec.state.ttl` a group not written for the TTL is dropped (on access and by an
//! incremental sweep) and starts again from empty.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use datafusion_common::ScalarValue;
use rsql_common::arrow::array::{new_empty_array, Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, UInt32Array};
use rsql_common::arrow::compute::{cast, take};
use rsql_common::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::state::{put, Bits, KeySlots, RowCodec, StateReader, StateTtl, StateWriter, PREFETCH_ENTRY, PREFETCH_SLOT};
use super::Operator;
use crate::graph::{AggCall, AggFunc};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Numeric {
    Int,
    Float,
    Decimal(u8, i8),
}

/// One group's accumulator for one call: how the value-keeping ones are stored (boxed), and the
/// form every accumulator is read in for results and snapshots.
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

/// DISTINCT value bytes -> how many times present.
type ValueCounts = HashMap<Vec<u8>, i64>;

/// One aggregate call's accumulators, one entry per slot id.
enum AccCol {
    /// COUNT(*) without FILTER: the group's row count, nothing of its own.
    RowCount,
    Count(Vec<i64>),
    /// SUM/AVG over integers and decimals: (sum, values summed). A group whose sum leaves the
    /// i64 range keeps its sum in `wide` from then on.
    SumInt { sums: Vec<(i64, i64)>, wide: HashMap<u32, i128> },
    /// SUM/AVG over floating point: (sum, values summed).
    SumFloat(Vec<(f64, i64)>),
    /// Insert-only MIN/MAX/FIRST_VALUE/LAST_VALUE over integers (widened to i64): the value
    /// kept, valid where `set` is.
    KeptInt { v: Vec<i64>, set: Bits, rule: Keep },
    /// The same over floating point (ordered by `total_cmp`).
    KeptFloat { v: Vec<f64>, set: Bits, rule: Keep },
    /// Every other accumulator, boxed per group; a group without one yet reads as `empty`.
    Boxed { empty: Acc, v: Vec<Option<Box<Acc>>> },
}

impl AccCol {
    /// The column for a call whose empty accumulator is `empty`; `row_count` when it is the
    /// group's row count.
    fn new(empty: &Acc, row_count: bool) -> AccCol {
        match empty {
            _ if row_count => AccCol::RowCount,
            Acc::Count(_) => AccCol::Count(Vec::new()),
            Acc::SumInt { .. } => AccCol::SumInt { sums: Vec::new(), wide: HashMap::new() },
            Acc::SumFloat { .. } => AccCol::SumFloat(Vec::new()),
            Acc::KeptInt { rule, .. } => AccCol::KeptInt { v: Vec::new(), set: Bits::default(), rule: *rule },
            Acc::KeptFloat { rule, .. } => AccCol::KeptFloat { v: Vec::new(), set: Bits::default(), rule: *rule },
            other => AccCol::Boxed { empty: other.clone(), v: Vec::new() },
        }
    }

    /// Starts slot `s` empty (a new group, possibly on a reused id).
    fn reset(&mut self, s: u32) {
        match self {
            AccCol::RowCount => {}
            AccCol::Count(v) => put(v, s, 0),
            AccCol::SumInt { sums, wide } => {
                put(sums, s, (0, 0));
                if !wide.is_empty() {
                    wide.remove(&s);
                }
            }
            AccCol::SumFloat(v) => put(v, s, (0.0, 0)),
            AccCol::KeptInt { v, set, .. } => {
                put(v, s, 0);
                set.set(s, false);
            }
            AccCol::KeptFloat { v, set, .. } => {
                put(v, s, 0.0);
                set.set(s, false);
            }
            AccCol::Boxed { v, .. } => put(v, s, None),
        }
    }

    /// Frees what slot `s` holds on the heap (its group is gone).
    fn release(&mut self, s: u32) {
        match self {
            AccCol::SumInt { wide, .. } if !wide.is_empty() => {
                wide.remove(&s);
            }
            AccCol::Boxed { v, .. } => {
                if let Some(x) = v.get_mut(s as usize) {
                    *x = None;
                }
            }
            _ => {}
        }
    }

    /// Slot `s`'s accumulator as one value (borrowed when boxed); `count` is its row count.
    fn get(&self, s: u32, count: i64) -> Cow<'_, Acc> {
        let i = s as usize;
        Cow::Owned(match self {
            AccCol::RowCount => Acc::Count(count),
            AccCol::Count(v) => Acc::Count(v.get(i).copied().unwrap_or(0)),
            AccCol::SumInt { sums, wide } => {
                let (sum, n) = sums.get(i).copied().unwrap_or_default();
                Acc::SumInt { sum: wide.get(&s).copied().unwrap_or(sum as i128), n }
            }
            AccCol::SumFloat(v) => {
                let (sum, n) = v.get(i).copied().unwrap_or_default();
                Acc::SumFloat { sum, n }
            }
            AccCol::KeptInt { v, set, rule } => Acc::KeptInt { v: v.get(i).copied().filter(|_| set.get(s)), rule: *rule },
            AccCol::KeptFloat { v, set, rule } => Acc::KeptFloat { v: v.get(i).copied().filter(|_| set.get(s)), rule: *rule },
            AccCol::Boxed { empty, v } => return Cow::Borrowed(v.get(i).and_then(|b| b.as_deref()).unwrap_or(empty)),
        })
    }

    /// Sets slot `s`'s accumulator from one value of the kind the column holds (a restore).
    fn set(&mut self, s: u32, acc: Acc) -> Result<()> {
        match (self, acc) {
            (AccCol::RowCount, Acc::Count(_)) => {}
            (AccCol::Count(v), Acc::Count(n)) => put(v, s, n),
            (AccCol::SumInt { sums, wide }, Acc::SumInt { sum, n }) => match i64::try_from(sum) {
                Ok(x) => put(sums, s, (x, n)),
                Err(_) => {
                    put(sums, s, (0, n));
                    wide.insert(s, sum);
                }
            },
            (AccCol::SumFloat(v), Acc::SumFloat { sum, n }) => put(v, s, (sum, n)),
            (AccCol::KeptInt { v, set, .. }, Acc::KeptInt { v: x, .. }) => {
                put(v, s, x.unwrap_or(0));
                set.set(s, x.is_some());
            }
            (AccCol::KeptFloat { v, set, .. }, Acc::KeptFloat { v: x, .. }) => {
                put(v, s, x.unwrap_or(0.0));
                set.set(s, x.is_some());
            }
            (AccCol::Boxed { v, .. }, acc) => put(v, s, Some(Box::new(acc))),
            _ => return Err(RsqlError::execution("aggregate snapshot does not match the aggregate's calls")),
        }
        Ok(())
    }

    /// Adds (`w` > 0) or takes back (`w` < 0) value `i` of `arg` into slot `s`.
    #[inline]
    fn apply(&mut self, arg: &Arg, i: usize, s: u32, w: i64) {
        let x = s as usize;
        match (self, arg) {
            (AccCol::RowCount, _) => {}
            (AccCol::Count(v), _) => {
                if let Some(n) = v.get_mut(x) {
                    *n += w;
                }
            }
            (AccCol::SumInt { sums, wide }, Arg::Int(a)) => add_int(sums, wide, s, a.value(i) as i128 * w as i128, w),
            (AccCol::SumInt { sums, wide }, Arg::Decimal(a)) => add_int(sums, wide, s, a.value(i).wrapping_mul(w as i128), w),
            (AccCol::SumFloat(v), Arg::Float(a)) => {
                if let Some(e) = v.get_mut(x) {
                    e.0 += a.value(i) * w as f64;
                    e.1 += w;
                }
            }
            (AccCol::KeptInt { v, set, rule }, Arg::Int(a)) => {
                let new = a.value(i);
                if let Some(cur) = v.get_mut(x).filter(|_| w > 0) {
                    if !set.get(s) || rule.replaces(new.cmp(cur)) {
                        *cur = new;
                        set.set(s, true);
                    }
                }
            }
            (AccCol::KeptFloat { v, set, rule }, Arg::Float(a)) => {
                let new = a.value(i);
                if let Some(cur) = v.get_mut(x).filter(|_| w > 0) {
                    if !set.get(s) || rule.replaces(new.total_cmp(cur)) {
                        *cur = new;
                        set.set(s, true);
                    }
                }
            }
            (AccCol::Boxed { empty, v }, arg) => {
                if let Some(b) = v.get_mut(x) {
                    apply(b.get_or_insert_with(|| Box::new(empty.clone())), arg, i, w);
                }
            }
            _ => {}
        }
    }

    /// Memory held (boxed accumulators counted by their inline size).
    fn bytes(&self) -> usize {
        match self {
            AccCol::RowCount => 0,
            AccCol::Count(v) => v.capacity() * 8,
            AccCol::SumInt { sums, wide } => sums.capacity() * 16 + wide.capacity() * 32,
            AccCol::SumFloat(v) => v.capacity() * 16,
            AccCol::KeptInt { v, set, .. } => v.capacity() * 8 + set.bytes(),
            AccCol::KeptFloat { v, set, .. } => v.capacity() * 8 + set.bytes(),
            AccCol::Boxed { v, .. } => v.capacity() * 8 + v.iter().flatten().count() * std::mem::size_of::<Acc>(),
        }
    }
}

/// Adds `delta` (value times weight `w`) to slot `s`'s integer sum.
#[inline]
fn add_int(sums: &mut [(i64, i64)], wide: &mut HashMap<u32, i128>, s: u32, delta: i128, w: i64) {
    let Some(e) = sums.get_mut(s as usize) else { return };
    e.1 += w;
    if !wide.is_empty() {
        if let Some(x) = wide.get_mut(&s) {
            *x = x.wrapping_add(delta);
            return;
        }
    }
    match i64::try_from(delta).ok().and_then(|d| e.0.checked_add(d)) {
        Some(v) => e.0 = v,
        None => {
            wide.insert(s, (e.0 as i128).wrapping_add(delta));
        }
    }
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
    /// The accumulator of a group that has seen no value.
    empty: Acc,
}

pub struct GroupAggregate {
    group_codec: RowCodec,
    group: Vec<usize>,
    /// No GROUP BY: one group for every row.
    global: bool,
    calls: Vec<CallInfo>,
    schema: SchemaRef,
    /// Group keys -> slot ids, which index the columns below.
    keys: KeySlots,
    /// Rows per group.
    count: Vec<i64>,
    /// Groups the current batch has touched.
    touched: Bits,
    /// One column of accumulators per call.
    cols: Vec<AccCol>,
    /// Per call, for DISTINCT calls: each group's value counts.
    distinct: Vec<Option<Vec<Option<Box<ValueCounts>>>>>,
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

/// The accumulator of a group that has seen no value, for a call over an argument of the given
/// kind (`kept_value`: an insert-only kept value of a non-numeric type).
fn empty_acc(call: &AggCall, numeric: Option<Numeric>, kept_numeric: Option<Numeric>, kept_value: bool) -> Acc {
    let rule = match call.func {
        AggFunc::Min => Keep::Min,
        AggFunc::Max => Keep::Max,
        AggFunc::FirstValue => Keep::First,
        _ => Keep::Last,
    };
    match (&call.func, numeric) {
        (AggFunc::Count | AggFunc::CountStar, _) => Acc::Count(0),
        (AggFunc::Sum | AggFunc::Avg, Some(Numeric::Float)) => Acc::SumFloat { sum: 0.0, n: 0 },
        (AggFunc::Sum | AggFunc::Avg, _) => Acc::SumInt { sum: 0, n: 0 },
        (AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue, _) if kept_numeric == Some(Numeric::Int) => Acc::KeptInt { v: None, rule },
        (AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue, _) if kept_numeric == Some(Numeric::Float) => Acc::KeptFloat { v: None, rule },
        (AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue, _) if kept_value => Acc::Kept { v: None, rule },
        (AggFunc::Min | AggFunc::Max, _) => Acc::Ordered(BTreeMap::new()),
        (AggFunc::FirstValue | AggFunc::LastValue, _) => Acc::Seq(Vec::new()),
        (AggFunc::ListAgg(_), _) => Acc::Strings(Vec::new()),
    }
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
            let empty = empty_acc(&call, numeric, kept_numeric, value_codec.is_some());
            calls.push(CallInfo { call, numeric, codec, value_codec, kept_numeric, out, empty });
        }
        let mut agg = GroupAggregate {
            group_codec: RowCodec::new(&input, Some(group))?,
            group: group.to_vec(),
            global: group.is_empty(),
            calls,
            schema,
            keys: KeySlots::default(),
            count: Vec::new(),
            touched: Bits::default(),
            cols: Vec::new(),
            distinct: Vec::new(),
            ttl: StateTtl::default(),
        };
        agg.clear_state();
        Ok(agg)
    }

    /// Bounds the state with a TTL (`table.exec.state.ttl`).
    pub fn with_ttl(mut self, ttl: StateTtl) -> Self {
        if ttl.enabled() {
            self.keys.track_written();
        }
        self.ttl = ttl;
        self
    }

    /// Drops every group.
    fn clear_state(&mut self) {
        self.keys.clear();
        self.count = Vec::new();
        self.touched.clear();
        self.cols = self.calls.iter().map(|c| AccCol::new(&c.empty, c.call.func == AggFunc::CountStar && c.call.filter.is_none() && !c.call.distinct)).collect();
        self.distinct = self.calls.iter().map(|c| c.call.distinct.then(Vec::new)).collect();
    }

    /// Starts slot `s` as an empty group.
    fn init_slot(&mut self, s: u32) {
        put(&mut self.count, s, 0);
        self.touched.set(s, false);
        for col in &mut self.cols {
            col.reset(s);
        }
        for d in self.distinct.iter_mut().flatten() {
            put(d, s, None);
        }
    }

    /// Drops the group in slot `s`.
    fn remove_group(&mut self, s: u32) {
        self.keys.remove(s);
        self.release_slot(s);
    }

    /// Frees the heap memory of slot `s` (removed from `keys` already).
    fn release_slot(&mut self, s: u32) {
        for col in &mut self.cols {
            col.release(s);
        }
        for d in self.distinct.iter_mut().flatten() {
            if let Some(x) = d.get_mut(s as usize) {
                *x = None;
            }
        }
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

    /// Appends slot `s`'s result for every call to `cols`.
    fn push_result(&self, s: u32, cols: &mut [OutCol]) -> Result<()> {
        let i = s as usize;
        let count = self.count.get(i).copied().unwrap_or(0);
        for ((c, acc), col) in self.calls.iter().zip(&self.cols).zip(cols.iter_mut()) {
            match (col, acc) {
                (OutCol::Int(v), AccCol::RowCount) => v.push(Some(count)),
                (OutCol::Int(v), AccCol::Count(x)) => v.push(Some(x.get(i).copied().unwrap_or(0))),
                (OutCol::Int(v), AccCol::SumInt { sums, wide }) => {
                    let (sum, n) = sums.get(i).copied().unwrap_or_default();
                    v.push(if n == 0 {
                        None
                    } else {
                        let sum = if wide.is_empty() { sum as i128 } else { wide.get(&s).copied().unwrap_or(sum as i128) };
                        // Flink's AVG over integers is an integer (truncated).
                        Some(if c.call.func == AggFunc::Avg { (sum / n as i128) as i64 } else { sum as i64 })
                    })
                }
                (OutCol::Int(v), AccCol::KeptInt { v: x, set, .. }) => v.push(x.get(i).copied().filter(|_| set.get(s))),
                (OutCol::Float(v), AccCol::SumFloat(x)) => {
                    let (sum, n) = x.get(i).copied().unwrap_or_default();
                    v.push(if n == 0 {
                        None
                    } else {
                        Some(if c.call.func == AggFunc::Avg { sum / n as f64 } else { sum })
                    })
                }
                (OutCol::Float(v), AccCol::KeptFloat { v: x, set, .. }) => v.push(x.get(i).copied().filter(|_| set.get(s))),
                (OutCol::Scalar(v), acc) => {
                    let x = self.scalar_result(c, &acc.get(s, count))?;
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
        let ttl_on = self.ttl.enabled();
        let mut slots = Vec::with_capacity(n);
        let mut touched: Vec<Touch> = Vec::new();
        let mut prev_len = 0u32;
        // Keys first seen as retractions of groups that do not exist (rare).
        let mut missing: HashSet<Vec<u8>> = HashSet::new();
        // Key hashes first, so that each lookup can start loading the index entry and the
        // key bytes of the lookups a few rows ahead (their cache misses then overlap).
        let hashes: Vec<u64> = match &keys {
            Some(k) => (0..n).map(|i| self.keys.hash(k.row(i).data())).collect(),
            None => vec![self.keys.hash(&[]); n],
        };
        for i in 0..n {
            if let Some(h) = hashes.get(i + PREFETCH_ENTRY) {
                self.keys.prefetch(*h, false);
            }
            if let Some(h) = hashes.get(i + PREFETCH_SLOT) {
                self.keys.prefetch(*h, true);
            }
            let kb: &[u8] = match &keys {
                Some(k) => k.row(i).data(),
                None => &[],
            };
            let mut id = self.keys.find_hashed(hashes[i], kb);
            if let Some(s) = id {
                if ttl_on && !self.touched.get(s) && self.ttl.expired(self.keys.written(s), now) {
                    // Never return expired state: the group starts again from empty.
                    self.remove_group(s);
                    id = None;
                }
            }
            match id {
                Some(s) => {
                    self.keys.touch(s, now);
                    if !self.touched.get(s) {
                        self.touched.set(s, true);
                        let mut p = None;
                        if self.count.get(s as usize).is_some_and(|c| *c > 0) {
                            self.push_result(s, prev)?;
                            p = Some(prev_len);
                            prev_len += 1;
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
                    let s = self.keys.insert_hashed(hashes[i], kb, now);
                    self.init_slot(s);
                    self.touched.set(s, true);
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
                    t.slot = self.keys.find(keys.row(t.row as usize).data()).unwrap_or(MISSING);
                }
            } else if let Some(t) = touched.iter_mut().find(|t| t.slot == MISSING) {
                t.slot = self.keys.find(&[]).unwrap_or(MISSING);
            }
        }
        Ok((slots, touched))
    }
}

/// Adds (`w` > 0) or takes back (`w` < 0) value `i` of `arg` into a boxed accumulator (the
/// numeric ones live in typed columns, see [`AccCol::apply`]).
fn apply(acc: &mut Acc, arg: &Arg, i: usize, w: i64) {
    match (acc, arg) {
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
        let n = batch.num_rows();
        let mut prev: Vec<OutCol> = self.calls.iter().map(|c| OutCol::new(c.out)).collect();
        let (slots, touched) = self.resolve(&batch, &mut prev)?;
        let args = self.prepare_args(&batch.data)?;
        let weights: Vec<i64> = batch.kinds.iter().map(|k| k.weight()).collect();

        for (s, w) in slots.iter().zip(&weights) {
            if let Some(c) = self.count.get_mut(*s as usize) {
                *c += w;
            }
        }
        for (j, arg) in args.iter().enumerate() {
            let filter: Option<BooleanArray> = self.calls[j].call.filter.map(|f| batch.data.column(f).as_boolean().clone());
            let distinct = self.calls[j].call.distinct;
            let numeric_arg = match arg {
                Arg::Distinct(_, numeric) => numeric.as_ref(),
                other => other,
            };
            let col = &mut self.cols[j];
            if matches!(col, AccCol::RowCount) {
                continue;
            }
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
                let w = weights[i];
                if distinct {
                    let (Arg::Bytes(rows, _) | Arg::Distinct(rows, _)) = arg else { continue };
                    let Some(Some(d)) = self.distinct.get_mut(j).map(|d| d.as_mut().and_then(|d| d.get_mut(s as usize))) else { continue };
                    if !distinct_contributes(d.get_or_insert_with(Default::default), rows, i, w) {
                        continue;
                    }
                }
                col.apply(numeric_arg, i, s, w);
            }
        }

        // Results after the batch; groups whose row count reached zero go.
        let mut now: Vec<OutCol> = self.calls.iter().map(|c| OutCol::new(c.out)).collect();
        let mut now_pos: Vec<Option<u32>> = Vec::with_capacity(touched.len());
        let mut now_len = 0u32;
        for t in &touched {
            let live = t.slot != MISSING && self.keys.is_live(t.slot) && {
                if self.count.get(t.slot as usize).is_some_and(|c| *c > 0) {
                    self.push_result(t.slot, &mut now)?;
                    true
                } else {
                    self.remove_group(t.slot);
                    false
                }
            };
            now_pos.push(if live {
                now_len += 1;
                Some(now_len - 1)
            } else {
                None
            });
        }
        for t in touched.iter().filter(|t| t.slot != MISSING) {
            self.touched.set(t.slot, false);
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
            for s in self.keys.sweep(n.max(64) * 2, |written| ttl.expired(written, at)) {
                self.release_slot(s);
            }
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
        w.u64(self.keys.len() as u64);
        for s in self.keys.iter() {
            let count = self.count.get(s as usize).copied().unwrap_or(0);
            w.bytes(self.keys.key(s));
            w.u64(self.keys.written(s));
            w.i64(count);
            for (j, col) in self.cols.iter().enumerate() {
                match &*col.get(s, count) {
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
                match self.distinct.get(j) {
                    Some(Some(d)) => {
                        let m = d.get(s as usize).and_then(|m| m.as_deref());
                        w.u64(m.map_or(0, |m| m.len()) as u64);
                        for (v, c) in m.into_iter().flatten() {
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
        self.clear_state();
        let n = r.u64()?;
        for _ in 0..n {
            let k = r.bytes()?;
            let written = r.u64()?;
            if self.keys.find(k).is_some() {
                return Err(corrupt());
            }
            let s = self.keys.insert_hashed(self.keys.hash(k), k, written);
            self.init_slot(s);
            put(&mut self.count, s, r.i64()?);
            for j in 0..self.calls.len() {
                let mut acc = self.calls[j].empty.clone();
                match &mut acc {
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
                self.cols[j].set(s, acc)?;
                let dn = r.u64()?;
                if dn != u64::MAX {
                    let mut m = ValueCounts::new();
                    for _ in 0..dn {
                        let v = r.bytes()?.to_vec();
                        m.insert(v, r.i64()?);
                    }
                    match self.distinct.get_mut(j) {
                        Some(Some(d)) => put(d, s, Some(Box::new(m))),
                        _ => return Err(corrupt()),
                    }
                }
            }
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        let distinct: usize = self.distinct.iter().flatten().map(|d| d.capacity() * 8 + d.iter().flatten().map(|m| m.len() * 40).sum::<usize>()).sum();
        self.keys.bytes() + self.count.capacity() * 8 + self.touched.bytes() + self.cols.iter().map(AccCol::bytes).sum::<usize>() + distinct
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
        assert!(a.keys.is_empty());

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
        assert_eq!(b.keys.len(), 1);
        assert!(b.keys.iter().all(|s| b.keys.written(s) == 470));
        // The incremental sweep drops state nobody reads again.
        now.store(1000, SeqCst);
        let mut out = Vec::new();
        b.process(0, batch(&s, &[("+I", &[3, 1])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[3, 1, 1, 1]"]);
        assert_eq!(b.keys.len(), 1);
        assert!(b.keys.iter().all(|s| b.keys.written(s) == 1000));
    }

    fn int64_batch(rows: &[(&str, i32, i64)]) -> (SchemaRef, ChangeBatch) {
        use rsql_common::arrow::array::Int32Array;
        let s = std::sync::Arc::new(rsql_common::arrow::datatypes::Schema::new(vec![Field::new("k", DataType::Int32, false), Field::new("v", DataType::Int64, false)]));
        let cols: Vec<ArrayRef> = vec![
            std::sync::Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            std::sync::Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ];
        let data = RecordBatch::try_new(s.clone(), cols).unwrap();
        (s, ChangeBatch::new(data, rows.iter().map(|r| RowKind::parse(r.0).unwrap()).collect()))
    }

    /// A sum that leaves the i64 range moves to the wide side map: AVG stays exact, SUM wraps as
    /// a BIGINT sum does, and both survive a snapshot and a retraction.
    #[test]
    fn integer_sums_beyond_i64_stay_exact() {
        let calls = vec![
            AggCall { func: AggFunc::Sum, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int64, name: "s".into() },
            AggCall { func: AggFunc::Avg, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int64, name: "a".into() },
        ];
        let out_schema = std::sync::Arc::new(rsql_common::arrow::datatypes::Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("s", DataType::Int64, true),
            Field::new("a", DataType::Int64, true),
        ]));
        let max = i64::MAX;
        let (s, b1) = int64_batch(&[("+I", 1, max), ("+I", 1, max), ("+I", 2, 5)]);
        let mut a = GroupAggregate::new(s.clone(), &[0], calls.clone(), out_schema.clone(), false).unwrap();
        let mut out = Vec::new();
        a.process(0, b1, &mut out).unwrap();
        let mut b = GroupAggregate::new(s.clone(), &[0], calls, out_schema, false).unwrap();
        b.restore(&a.snapshot().unwrap()).unwrap();
        let (_, b2) = int64_batch(&[("+I", 1, max), ("-D", 1, max), ("-D", 1, max)]);
        b.process(0, b2, &mut out).unwrap();
        let wrapped = max.wrapping_add(max);
        assert_eq!(
            show(&out),
            vec![format!("+I[1, {wrapped}, {max}]"), "+I[2, 5, 5]".to_string(), format!("-U[1, {wrapped}, {max}]"), format!("+U[1, {max}, {max}]")]
        );
    }

    /// Slots freed by deleted groups are reused, and a reused slot starts empty.
    #[test]
    fn freed_slots_are_reused_and_start_empty() {
        let s = schema(&["k", "v"], false);
        let calls = vec![
            AggCall { func: AggFunc::CountStar, arg: None, distinct: false, filter: None, output_type: DataType::Int64, name: "c".into() },
            AggCall { func: AggFunc::Sum, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int64, name: "s".into() },
            AggCall { func: AggFunc::Max, arg: Some(1), distinct: false, filter: None, output_type: DataType::Int32, name: "mx".into() },
            AggCall { func: AggFunc::Min, arg: Some(1), distinct: true, filter: None, output_type: DataType::Int32, name: "mn".into() },
        ];
        let out_schema = std::sync::Arc::new(rsql_common::arrow::datatypes::Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("c", DataType::Int64, false),
            Field::new("s", DataType::Int64, true),
            Field::new("mx", DataType::Int32, true),
            Field::new("mn", DataType::Int32, true),
        ]));
        let mut a = GroupAggregate::new(s.clone(), &[0], calls, out_schema, false).unwrap();
        let mut out = Vec::new();
        a.process(0, batch(&s, &[("+I", &[1, 10]), ("+I", &[2, 20]), ("+I", &[3, 30])]), &mut out).unwrap();
        a.process(0, batch(&s, &[("-D", &[2, 20])]), &mut out).unwrap();
        a.process(0, batch(&s, &[("+I", &[4, 1])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 1, 10, 10, 10]", "+I[2, 1, 20, 20, 20]", "+I[3, 1, 30, 30, 30]", "-D[2, 1, 20, 20, 20]", "+I[4, 1, 1, 1, 1]"]);
        assert_eq!(a.count.len(), 3, "key 4 took the slot key 2 freed");
        assert_eq!(a.keys.len(), 3);
    }
}
