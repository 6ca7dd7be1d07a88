//! Group aggregate with retraction. Per group it keeps a row count and one accumulator per
//! aggregate call; every accumulator can take a value back (MIN/MAX keep a value -> count
//! multiset, FIRST_VALUE/LAST_VALUE/LISTAGG keep the values in arrival order, DISTINCT keeps
//! value counts). After each input batch it compares every touched group's result with the one
//! it had before the batch: a new group emits +I, a group whose row count reached zero emits -D,
//! a changed result emits -U/+U, and an unchanged result emits nothing.

use std::collections::{BTreeMap, HashMap};

use datafusion_common::ScalarValue;
use rsql_common::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use rsql_common::arrow::compute::cast;
use rsql_common::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type, SchemaRef};
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::state::{RowCodec, StateReader, StateWriter};
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
    Kept { v: Option<ScalarValue>, rule: Keep },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Keep {
    Min,
    Max,
    First,
    Last,
}

#[derive(Clone, Debug)]
struct GroupState {
    count: i64,
    accs: Vec<Acc>,
    /// Per DISTINCT aggregate: value -> count.
    distinct: Vec<Option<HashMap<Vec<u8>, i64>>>,
}

struct CallInfo {
    call: AggCall,
    numeric: Option<Numeric>,
    /// Codec over the argument column for value-keeping accumulators and DISTINCT.
    codec: Option<RowCodec>,
    /// Codec over a lone value of the argument's type (snapshots of kept values).
    value_codec: Option<RowCodec>,
}

pub struct GroupAggregate {
    group_codec: RowCodec,
    /// No GROUP BY: one group for every row.
    global: bool,
    calls: Vec<CallInfo>,
    schema: SchemaRef,
    groups: HashMap<Vec<u8>, GroupState>,
}

/// A prepared argument column for one batch.
enum Arg {
    None,
    Int(ArrayRef),
    Float(ArrayRef),
    Decimal(ArrayRef),
    Bytes(rsql_common::arrow::row::Rows, ArrayRef),
    /// SUM / AVG (DISTINCT): the values' bytes for the distinct count, and the numeric argument.
    Distinct(rsql_common::arrow::row::Rows, Box<Arg>),
    Str(ArrayRef),
    Plain(ArrayRef),
}

impl GroupAggregate {
    /// `append_only`: the input never retracts, so value-keeping aggregates keep one value.
    pub fn new(input: SchemaRef, group: &[usize], aggs: Vec<AggCall>, schema: SchemaRef, append_only: bool) -> Result<Self> {
        let mut calls = Vec::new();
        for call in aggs {
            let arg_type = call.arg.map(|i| input.field(i).data_type().clone());
            let numeric = match (&call.func, &arg_type) {
                (AggFunc::Sum | AggFunc::Avg, Some(t)) => Some(match t {
                    DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => Numeric::Int,
                    DataType::Float32 | DataType::Float64 | DataType::UInt64 => Numeric::Float,
                    DataType::Decimal128(p, s) => Numeric::Decimal(*p, *s),
                    other => return Err(RsqlError::unsupported(format!("{} over a value of type {other}", call.func))),
                }),
                _ => None,
            };
            let keeps_values = matches!(call.func, AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue);
            let needs_codec = call.distinct || (keeps_values && !append_only);
            let value_codec = match (keeps_values && append_only, &arg_type) {
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
            calls.push(CallInfo { call, numeric, codec, value_codec });
        }
        Ok(GroupAggregate { group_codec: RowCodec::new(&input, Some(group))?, global: group.is_empty(), calls, schema, groups: HashMap::new() })
    }

    fn new_group(&self) -> GroupState {
        GroupState {
            count: 0,
            accs: self
                .calls
                .iter()
                .map(|c| match (&c.call.func, c.numeric) {
                    (AggFunc::Count | AggFunc::CountStar, _) => Acc::Count(0),
                    (AggFunc::Sum | AggFunc::Avg, Some(Numeric::Float)) => Acc::SumFloat { sum: 0.0, n: 0 },
                    (AggFunc::Sum | AggFunc::Avg, _) => Acc::SumInt { sum: 0, n: 0 },
                    (AggFunc::Min, _) if c.value_codec.is_some() => Acc::Kept { v: None, rule: Keep::Min },
                    (AggFunc::Max, _) if c.value_codec.is_some() => Acc::Kept { v: None, rule: Keep::Max },
                    (AggFunc::FirstValue, _) if c.value_codec.is_some() => Acc::Kept { v: None, rule: Keep::First },
                    (AggFunc::LastValue, _) if c.value_codec.is_some() => Acc::Kept { v: None, rule: Keep::Last },
                    (AggFunc::Min | AggFunc::Max, _) => Acc::Ordered(BTreeMap::new()),
                    (AggFunc::FirstValue | AggFunc::LastValue, _) => Acc::Seq(Vec::new()),
                    (AggFunc::ListAgg(_), _) => Acc::Strings(Vec::new()),
                })
                .collect(),
            distinct: self.calls.iter().map(|c| if c.call.distinct { Some(HashMap::new()) } else { None }).collect(),
        }
    }

    fn prepare_args(&self, batch: &RecordBatch) -> Result<Vec<Arg>> {
        self.calls
            .iter()
            .map(|c| {
                let Some(i) = c.call.arg else { return Ok(Arg::None) };
                let col = batch.column(i).clone();
                if let Some(codec) = &c.codec {
                    let rows = codec.encode(batch.columns())?;
                    return Ok(match c.numeric {
                        Some(Numeric::Int) => Arg::Distinct(rows, Box::new(Arg::Int(cast(&col, &DataType::Int64)?))),
                        Some(Numeric::Float) => Arg::Distinct(rows, Box::new(Arg::Float(cast(&col, &DataType::Float64)?))),
                        Some(Numeric::Decimal(..)) => Arg::Distinct(rows, Box::new(Arg::Decimal(col))),
                        None => Arg::Bytes(rows, col),
                    });
                }
                Ok(match (&c.call.func, c.numeric) {
                    (_, Some(Numeric::Int)) => Arg::Int(cast(&col, &DataType::Int64)?),
                    (_, Some(Numeric::Float)) => Arg::Float(cast(&col, &DataType::Float64)?),
                    (_, Some(Numeric::Decimal(..))) => Arg::Decimal(col),
                    (AggFunc::ListAgg(_), _) => Arg::Str(cast(&col, &DataType::Utf8)?),
                    _ => Arg::Plain(col),
                })
            })
            .collect()
    }

    fn result(&self, g: &GroupState) -> Result<Vec<ScalarValue>> {
        let mut out = Vec::with_capacity(self.calls.len());
        for (c, acc) in self.calls.iter().zip(&g.accs) {
            let ot = &c.call.output_type;
            let v = match (acc, &c.call.func) {
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
                    // Flink's AVG over integers is an integer (truncated).
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
                (Acc::Kept { v: Some(v), .. }, _) => v.clone(),
                (Acc::Kept { v: None, .. }, _) => ScalarValue::try_from(ot)?,
            };
            let v = if v.data_type() == *ot { v } else { v.cast_to(ot)? };
            out.push(v);
        }
        Ok(out)
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
}

fn apply(acc: &mut Acc, arg: &Arg, i: usize, w: i64) {
    match (acc, arg) {
        (Acc::Kept { v, rule }, Arg::Plain(a) | Arg::Bytes(_, a)) => {
            if w <= 0 {
                return;
            }
            let Ok(new) = ScalarValue::try_from_array(a.as_ref(), i) else { return };
            let replace = match (v.as_ref(), rule) {
                (None, _) => true,
                (Some(cur), Keep::Min) => new.partial_cmp(cur) == Some(std::cmp::Ordering::Less),
                (Some(cur), Keep::Max) => new.partial_cmp(cur) == Some(std::cmp::Ordering::Greater),
                (Some(_), Keep::First) => false,
                (Some(_), Keep::Last) => true,
            };
            if replace {
                *v = Some(new);
            }
        }
        (Acc::Count(n), _) => *n += w,
        (Acc::SumInt { sum, n }, Arg::Int(a)) => {
            *sum += a.as_primitive::<Int64Type>().value(i) as i128 * w as i128;
            *n += w;
        }
        (Acc::SumInt { sum, n }, Arg::Decimal(a)) => {
            *sum += a.as_primitive::<Decimal128Type>().value(i) * w as i128;
            *n += w;
        }
        (Acc::SumFloat { sum, n }, Arg::Float(a)) => {
            *sum += a.as_primitive::<Float64Type>().value(i) * w as f64;
            *n += w;
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
        Arg::Int(a) | Arg::Float(a) | Arg::Decimal(a) | Arg::Str(a) | Arg::Bytes(_, a) | Arg::Plain(a) => a.is_null(i),
        Arg::Distinct(_, inner) => arg_is_null(inner, i),
    }
}

impl Operator for GroupAggregate {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let keys = if self.global { None } else { Some(self.group_codec.encode(batch.data.columns())?) };
        let args = self.prepare_args(&batch.data)?;
        let filters: Vec<Option<BooleanArray>> = self
            .calls
            .iter()
            .map(|c| c.call.filter.map(|f| batch.data.column(f).as_boolean().clone()))
            .collect();
        // Touched groups in first-touch order, with their result before this batch.
        let mut touched: Vec<(Vec<u8>, Option<Vec<ScalarValue>>)> = Vec::new();
        let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
        for i in 0..batch.num_rows() {
            let key = keys.as_ref().map(|k| k.row(i));
            let kb: &[u8] = key.as_ref().map(|k| k.as_ref()).unwrap_or(&[]);
            if !seen.contains_key(kb) {
                let prev = match self.groups.get(kb) {
                    Some(g) if g.count > 0 => Some(self.result(g)?),
                    _ => None,
                };
                seen.insert(kb.to_vec(), ());
                touched.push((kb.to_vec(), prev));
            }
            let w = batch.kinds[i].weight();
            if !self.groups.contains_key(kb) {
                if w < 0 {
                    // Retraction for a group that does not exist: nothing to take back.
                    continue;
                }
                let g = self.new_group();
                self.groups.insert(kb.to_vec(), g);
            }
            let Some(g) = self.groups.get_mut(kb) else { continue };
            g.count += w;
            for (j, arg) in args.iter().enumerate() {
                if let Some(f) = &filters[j] {
                    if !(f.is_valid(i) && f.value(i)) {
                        continue;
                    }
                }
                if arg_is_null(arg, i) {
                    continue;
                }
                if let Some(d) = &mut g.distinct[j] {
                    let (Arg::Bytes(rows, _) | Arg::Distinct(rows, _)) = arg else { continue };
                    let k = rows.row(i).as_ref().to_vec();
                    let c = d.entry(k.clone()).or_insert(0);
                    let before = *c;
                    *c += w;
                    let after = *c;
                    if after <= 0 {
                        d.remove(&k);
                    }
                    let contributes = (before <= 0 && after > 0) || (before > 0 && after <= 0);
                    if !contributes {
                        continue;
                    }
                }
                let arg = match arg {
                    Arg::Distinct(_, numeric) => numeric.as_ref(),
                    other => other,
                };
                apply(&mut g.accs[j], arg, i, w);
            }
        }
        let mut rows: Vec<(Vec<u8>, Vec<ScalarValue>, RowKind)> = Vec::new();
        for (key, prev) in touched {
            let now = match self.groups.get(&key) {
                Some(g) if g.count > 0 => Some(self.result(g)?),
                _ => {
                    self.groups.remove(&key);
                    None
                }
            };
            match (prev, now) {
                (None, Some(n)) => rows.push((key, n, RowKind::Insert)),
                (Some(p), None) => rows.push((key, p, RowKind::Delete)),
                (Some(p), Some(n)) if p != n => {
                    rows.push((key.clone(), p, RowKind::UpdateBefore));
                    rows.push((key, n, RowKind::UpdateAfter));
                }
                _ => {}
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut cols = if self.global { Vec::new() } else { self.group_codec.decode(rows.iter().map(|r| r.0.as_slice()))? };
        for j in 0..self.calls.len() {
            let vals = rows.iter().map(|r| r.1[j].clone());
            cols.push(ScalarValue::iter_to_array(vals)?);
        }
        let cols = super::conform(cols, &self.schema)?;
        let data = RecordBatch::try_new(self.schema.clone(), cols)?;
        out.push(ChangeBatch::new(data, rows.into_iter().map(|r| r.2).collect()));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.u64(self.groups.len() as u64);
        for (k, g) in &self.groups {
            w.bytes(k);
            w.i64(g.count);
            for (j, (acc, d)) in g.accs.iter().zip(&g.distinct).enumerate() {
                match acc {
                    Acc::Kept { v, .. } => match (v, &self.calls[j].value_codec) {
                        (Some(v), Some(codec)) => {
                            w.u64(1);
                            let rows = codec.encode(&[v.to_array()?])?;
                            w.bytes(rows.row(0).as_ref());
                        }
                        _ => w.u64(0),
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
                match d {
                    None => w.u64(u64::MAX),
                    Some(m) => {
                        w.u64(m.len() as u64);
                        for (v, c) in m {
                            w.bytes(v);
                            w.i64(*c);
                        }
                    }
                }
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        self.groups.clear();
        let n = r.u64()?;
        for _ in 0..n {
            let k = r.bytes()?.to_vec();
            let mut g = self.new_group();
            g.count = r.i64()?;
            for j in 0..g.accs.len() {
                match &mut g.accs[j] {
                    Acc::Kept { v, .. } => {
                        if r.u64()? == 1 {
                            let bytes = r.bytes()?;
                            let codec = self.calls[j].value_codec.as_ref().ok_or_else(|| RsqlError::execution("aggregate snapshot is corrupt"))?;
                            let cols = codec.decode([bytes])?;
                            *v = Some(ScalarValue::try_from_array(cols[0].as_ref(), 0)?);
                        }
                    }
                    Acc::Count(n) => *n = r.i64()?,
                    Acc::SumInt { sum, n } => {
                        let b = r.bytes()?;
                        let arr: [u8; 16] = b.try_into().map_err(|_| RsqlError::execution("aggregate snapshot is corrupt"))?;
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
                    g.distinct[j] = Some(m);
                }
            }
            self.groups.insert(k, g);
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.groups.keys().map(|k| k.len() + 48 + self.calls.len() * 40).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testutil::{batch, schema, show};
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
}
