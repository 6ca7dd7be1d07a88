//! Top-N and deduplication over changelogs, with Flink's semantics.
//!
//! `Rank` keeps, per partition, rows ordered by a sort key (byte-comparable: arrow's row format
//! with each column's direction and null order, or an arrival sequence number when the ORDER BY
//! is a processing-time attribute). Rows with equal sort keys keep their arrival order. On an
//! insert-only input only the rows up to the rank end are kept (a row pushed out can never come
//! back); on an updating input every row is kept, so that a retraction inside the range lets the
//! next row move up. Without the row number in the output a change emits at most one `-D` (the
//! row leaving the range) and one `+I` (the row entering it); with the row number every position
//! whose row changed emits `-U`/`+U` (or `-D` / `+I` when the position empties or fills), so the
//! output is keyed by partition and row number.
//!
//! `Deduplicate` keeps the first or last row per key of an insert-only input: by arrival for a
//! processing-time attribute (keep-first emits only `+I`; keep-last emits `-U`/`+U` when a later
//! row replaces the kept one), or by an event-time column (a row replaces the kept one when its
//! time is smaller, for keep-first, or not smaller, for keep-last).
//!
//! With `table.exec.state.ttl` (processing time, as Flink's): a Top-N partition whose rows were
//! not stored or removed for the TTL is dropped whole, and a deduplication key whose kept row was
//! not written for the TTL is forgotten (keep-first by arrival writes only the first row, so a
//! key re-emits `+I` once the TTL has passed since its first row). Expired state is never
//! returned: retractions of it are dropped and the next row starts from empty.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use rsql_common::arrow::array::{ArrayRef, UInt64Array};
use rsql_common::arrow::compute::SortOptions;
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::arrow::row::{RowConverter, SortField};
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::state::{KeyedStore, RowCodec, StateReader, StateTtl, StateWriter};
use super::Operator;
use crate::graph::{DedupOrder, NodeKind, RankOrder};

/// Builds the operator of a `Rank` or `Deduplicate` node.
pub fn build(kind: &NodeKind, input: SchemaRef, output: SchemaRef, append_only: bool, ttl: &StateTtl) -> Result<Box<dyn Operator>> {
    match kind {
        NodeKind::Rank { partition, order, range, output_rank, proctime } => {
            Ok(Box::new(Rank::new(input, output, partition, order, *range, *output_rank, proctime, append_only)?.with_ttl(ttl.clone())))
        }
        NodeKind::Deduplicate { key, keep_last, order } => {
            Ok(Box::new(Deduplicate::new(input, output, key, *keep_last, order)?.with_ttl(ttl.clone())))
        }
        other => Err(RsqlError::execution(format!("{} is not a rank or deduplicate node", other.name()))),
    }
}

/// How sort keys are made.
enum SortKey {
    Columns { converter: RowConverter, indices: Vec<usize> },
    Arrival { descending: bool },
}

/// One stored row; `ident` is what retractions are matched on when it differs from the row
/// (processing-time columns left out).
#[derive(Clone, Debug)]
struct Entry {
    row: Vec<u8>,
    ident: Option<Vec<u8>>,
}

impl Entry {
    fn matches(&self, row: &[u8], ident: Option<&[u8]>) -> bool {
        match (&self.ident, ident) {
            (Some(a), Some(b)) => a.as_slice() == b,
            _ => self.row.as_slice() == row,
        }
    }
}

#[derive(Default)]
struct Partition {
    rows: BTreeMap<Vec<u8>, Vec<Entry>>,
    len: usize,
    /// Arrival order on an updating input: the sort keys of the rows with each ident.
    by_ident: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl Partition {
    /// Rows at 0-based positions `from..=to` in rank order.
    fn rows_at(&self, from: usize, to: usize) -> Vec<Vec<u8>> {
        if to < from {
            return Vec::new();
        }
        self.rows.values().flat_map(|l| l.iter()).skip(from).take(to - from + 1).map(|e| e.row.clone()).collect()
    }

    fn row_at(&self, i: usize) -> Option<Vec<u8>> {
        self.rows.values().flat_map(|l| l.iter()).nth(i).map(|e| e.row.clone())
    }

    /// Number of rows whose sort key is below `key` (or not above it, with `inclusive`),
    /// counting no further than `cap`.
    fn count_before(&self, key: &[u8], inclusive: bool, cap: usize) -> usize {
        let upper = if inclusive { Bound::Included(key) } else { Bound::Excluded(key) };
        let mut n = 0;
        for (_, l) in self.rows.range::<[u8], _>((Bound::Unbounded, upper)) {
            n += l.len();
            if n > cap {
                return n;
            }
        }
        n
    }

    fn push(&mut self, key: Vec<u8>, entry: Entry, index_ident: bool) {
        if index_ident {
            if let Some(id) = &entry.ident {
                self.by_ident.entry(id.clone()).or_default().push(key.clone());
            }
        }
        self.rows.entry(key).or_default().push(entry);
        self.len += 1;
    }

    /// Removes entry `idx` of the list at `key`.
    fn remove(&mut self, key: &[u8], idx: usize) -> Option<Entry> {
        let list = self.rows.get_mut(key)?;
        if idx >= list.len() {
            return None;
        }
        let e = list.remove(idx);
        if list.is_empty() {
            self.rows.remove(key);
        }
        self.len -= 1;
        if let Some(id) = &e.ident {
            if let Some(keys) = self.by_ident.get_mut(id) {
                if let Some(p) = keys.iter().position(|k| k.as_slice() == key) {
                    keys.remove(p);
                }
                if keys.is_empty() {
                    self.by_ident.remove(id);
                }
            }
        }
        Some(e)
    }

    fn pop_last(&mut self) {
        let Some(mut last) = self.rows.last_entry() else { return };
        last.get_mut().pop();
        if last.get().is_empty() {
            last.remove();
        }
        self.len -= 1;
    }
}

/// A row of output: row bytes, row number, kind.
type OutRow = (Vec<u8>, u64, RowKind);

pub struct Rank {
    partition: Option<RowCodec>,
    sort: SortKey,
    row: RowCodec,
    ident: Option<RowCodec>,
    /// 0-based first and last position of the range.
    first: usize,
    last: usize,
    output_rank: bool,
    append_only: bool,
    schema: SchemaRef,
    seq: u64,
    parts: KeyedStore<Partition>,
    ttl: StateTtl,
    /// Processing time of the batch being processed (0 without a TTL).
    now: u64,
}

impl Rank {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: SchemaRef,
        output: SchemaRef,
        partition: &[usize],
        order: &RankOrder,
        range: (u64, u64),
        output_rank: bool,
        proctime: &[usize],
        append_only: bool,
    ) -> Result<Self> {
        let (start, end) = range;
        if start == 0 || end < start {
            return Err(RsqlError::execution(format!("invalid rank range [{start}, {end}]")));
        }
        let first = usize::try_from(start - 1).map_err(|_| RsqlError::execution("rank range too large"))?;
        let last = usize::try_from(end - 1).map_err(|_| RsqlError::execution("rank range too large"))?;
        let sort = match order {
            RankOrder::Columns(cols) => {
                let fields = cols
                    .iter()
                    .map(|c| {
                        let opts = SortOptions { descending: c.descending, nulls_first: c.nulls_first };
                        SortField::new_with_options(input.field(c.column).data_type().clone(), opts)
                    })
                    .collect();
                SortKey::Columns { converter: RowConverter::new(fields)?, indices: cols.iter().map(|c| c.column).collect() }
            }
            RankOrder::Arrival { descending } => SortKey::Arrival { descending: *descending },
        };
        let ident = if proctime.is_empty() {
            None
        } else {
            let keep: Vec<usize> = (0..input.fields().len()).filter(|i| !proctime.contains(i)).collect();
            Some(RowCodec::new(&input, Some(&keep))?)
        };
        Ok(Rank {
            partition: if partition.is_empty() { None } else { Some(RowCodec::new(&input, Some(partition))?) },
            sort,
            row: RowCodec::new(&input, None)?,
            ident,
            first,
            last,
            output_rank,
            append_only,
            schema: output,
            seq: 0,
            parts: KeyedStore::default(),
            ttl: StateTtl::default(),
            now: 0,
        })
    }

    /// Bounds the state with a TTL (`table.exec.state.ttl`): a partition whose rows were not
    /// written (stored or removed) for the TTL is dropped whole.
    pub fn with_ttl(mut self, ttl: StateTtl) -> Self {
        self.ttl = ttl;
        self
    }

    fn arrival_key(&mut self, descending: bool) -> Vec<u8> {
        self.seq += 1;
        let v = if descending { u64::MAX - self.seq } else { self.seq };
        v.to_be_bytes().to_vec()
    }

    fn insert(&mut self, pkey: Vec<u8>, skey: Vec<u8>, entry: Entry, out: &mut Vec<OutRow>) {
        let (first, last, output_rank, append_only) = (self.first, self.last, self.output_rank, self.append_only);
        let index_ident = matches!(self.sort, SortKey::Arrival { .. }) && !append_only;
        let now = self.now;
        let id = match self.parts.find_live(&pkey, &self.ttl, now) {
            Some(id) => id,
            None => self.parts.insert(&pkey, Partition::default(), now),
        };
        let Some(slot) = self.parts.get_mut(id) else { return };
        let part = &mut slot.value;
        let p = part.count_before(&skey, true, last);
        if p > last {
            if !append_only {
                part.push(skey, entry, index_ident);
                slot.written = now;
            }
            return;
        }
        slot.written = now;
        if output_rank {
            let from = p.max(first);
            let old = part.rows_at(from, last);
            part.push(skey, entry, index_ident);
            let new = part.rows_at(from, last);
            diff_positions(from, old, new, out);
        } else {
            let leaving = if part.len > last { part.row_at(last) } else { None };
            let entering = if p >= first { Some(entry.row.clone()) } else { part.row_at(first - 1) };
            part.push(skey, entry, index_ident);
            emit_swap(leaving, entering, first as u64 + 1, out);
        }
        if append_only {
            while part.len > last + 1 {
                part.pop_last();
            }
        }
    }

    fn retract(&mut self, pkey: &[u8], skey: Option<Vec<u8>>, row: &[u8], ident: Option<&[u8]>, out: &mut Vec<OutRow>) {
        let (first, last, output_rank, now) = (self.first, self.last, self.output_rank, self.now);
        // Rows of an expired partition are gone: their retractions change nothing.
        let Some(id) = self.parts.find_live(pkey, &self.ttl, now) else { return };
        let Some(slot) = self.parts.get_mut(id) else { return };
        slot.written = now;
        let part = &mut slot.value;
        // Where the row is: its sort key and its index among rows with that key.
        let found = match skey {
            Some(k) => part.rows.get(&k).and_then(|l| l.iter().position(|e| e.matches(row, ident))).map(|i| (k, i)),
            None => ident.and_then(|id| part.by_ident.get(id)).and_then(|keys| {
                keys.iter().find_map(|k| part.rows.get(k).and_then(|l| l.iter().position(|e| e.matches(row, ident))).map(|i| (k.clone(), i)))
            }),
        };
        // A retraction of a row never seen (or dropped as out of range) changes nothing.
        let Some((k, idx)) = found else { return };
        let p = part.count_before(&k, false, last) + idx;
        if p > last {
            part.remove(&k, idx);
        } else if output_rank {
            let from = p.max(first);
            let old = part.rows_at(from, last);
            part.remove(&k, idx);
            let new = part.rows_at(from, last);
            diff_positions(from, old, new, out);
        } else {
            let leaving = if p >= first { part.rows.get(&k).map(|l| l[idx].row.clone()) } else { part.row_at(first) };
            let entering = part.row_at(last + 1);
            part.remove(&k, idx);
            emit_swap(leaving, entering, first as u64 + 1, out);
        }
        if part.len == 0 {
            self.parts.remove(id);
        }
    }

    fn build(&self, rows: &[OutRow]) -> Result<RecordBatch> {
        let mut cols = self.row.decode(rows.iter().map(|(r, _, _)| r.as_slice()))?;
        cols.push(Arc::new(UInt64Array::from(rows.iter().map(|(_, n, _)| *n).collect::<Vec<_>>())) as ArrayRef);
        let cols = super::conform(cols, &self.schema)?;
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

/// Without row numbers: the row leaving the range goes first, then the row entering it.
fn emit_swap(leaving: Option<Vec<u8>>, entering: Option<Vec<u8>>, number: u64, out: &mut Vec<OutRow>) {
    if let (Some(a), Some(b)) = (&leaving, &entering) {
        if a == b {
            return;
        }
    }
    if let Some(r) = leaving {
        out.push((r, number, RowKind::Delete));
    }
    if let Some(r) = entering {
        out.push((r, number, RowKind::Insert));
    }
}

/// With row numbers: compares the rows at each position from `from` on before and after.
fn diff_positions(from: usize, old: Vec<Vec<u8>>, new: Vec<Vec<u8>>, out: &mut Vec<OutRow>) {
    let n = old.len().max(new.len());
    let mut old = old.into_iter();
    let mut new = new.into_iter();
    for i in 0..n {
        let number = (from + i) as u64 + 1;
        match (old.next(), new.next()) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                out.push((a, number, RowKind::UpdateBefore));
                out.push((b, number, RowKind::UpdateAfter));
            }
            (Some(a), None) => out.push((a, number, RowKind::Delete)),
            (None, Some(b)) => out.push((b, number, RowKind::Insert)),
            (None, None) => {}
        }
    }
}

impl Operator for Rank {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let cols = batch.data.columns();
        let pkeys = match &self.partition {
            Some(c) => Some(c.encode(cols)?),
            None => None,
        };
        let rows = self.row.encode(cols)?;
        let idents = match &self.ident {
            Some(c) => Some(c.encode(cols)?),
            None => None,
        };
        let skeys = match &self.sort {
            SortKey::Columns { converter, indices } => {
                let sc: Vec<ArrayRef> = indices.iter().map(|i| cols[*i].clone()).collect();
                Some(converter.convert_columns(&sc)?)
            }
            SortKey::Arrival { .. } => None,
        };
        self.now = self.ttl.now();
        let mut emitted: Vec<OutRow> = Vec::new();
        for i in 0..batch.num_rows() {
            let pkey = pkeys.as_ref().map(|k| k.row(i).as_ref().to_vec()).unwrap_or_default();
            let row = rows.row(i).as_ref().to_vec();
            let ident = idents.as_ref().map(|r| r.row(i).as_ref().to_vec());
            let column_key = skeys.as_ref().map(|k| k.row(i).as_ref().to_vec());
            if batch.kinds[i].is_accumulate() {
                let skey = match (column_key, &self.sort) {
                    (Some(k), _) => k,
                    (None, SortKey::Arrival { descending }) => {
                        let d = *descending;
                        self.arrival_key(d)
                    }
                    (None, SortKey::Columns { .. }) => continue,
                };
                self.insert(pkey, skey, Entry { row, ident }, &mut emitted);
            } else {
                self.retract(&pkey, column_key, &row, ident.as_deref(), &mut emitted);
            }
        }
        self.parts.sweep_expired(&self.ttl, batch.num_rows());
        if !emitted.is_empty() {
            let data = self.build(&emitted)?;
            out.push(ChangeBatch::new(data, emitted.into_iter().map(|(_, _, k)| k).collect()));
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.u64(self.seq);
        w.u64(self.parts.len() as u64);
        for (_, slot) in self.parts.iter() {
            let part = &slot.value;
            w.bytes(&slot.key);
            w.u64(slot.written);
            w.u64(part.rows.len() as u64);
            for (k, list) in &part.rows {
                w.bytes(k);
                w.u64(list.len() as u64);
                for e in list {
                    w.bytes(&e.row);
                    match &e.ident {
                        Some(id) => {
                            w.u64(1);
                            w.bytes(id);
                        }
                        None => w.u64(0),
                    }
                }
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        let index_ident = matches!(self.sort, SortKey::Arrival { .. }) && !self.append_only;
        let seq = r.u64()?;
        let mut parts = KeyedStore::default();
        for _ in 0..r.u64()? {
            let pk = r.bytes()?;
            let written = r.u64()?;
            let mut part = Partition::default();
            for _ in 0..r.u64()? {
                let k = r.bytes()?.to_vec();
                for _ in 0..r.u64()? {
                    let row = r.bytes()?.to_vec();
                    let ident = match r.u64()? {
                        0 => None,
                        1 => Some(r.bytes()?.to_vec()),
                        _ => return Err(RsqlError::execution("rank state snapshot is corrupt")),
                    };
                    part.push(k.clone(), Entry { row, ident }, index_ident);
                }
            }
            if parts.find(pk).is_some() {
                return Err(RsqlError::execution("rank state snapshot is corrupt: a partition appears twice"));
            }
            parts.insert(pk, part, written);
        }
        if !r.is_empty() {
            return Err(RsqlError::execution("rank state snapshot has trailing bytes"));
        }
        self.seq = seq;
        self.parts = parts;
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.parts
            .iter()
            .map(|(_, slot)| (&slot.key, &slot.value))
            .map(|(pk, p)| {
                pk.len()
                    + 64
                    + p.rows
                        .iter()
                        .map(|(k, l)| k.len() + 48 + l.iter().map(|e| e.row.len() + e.ident.as_ref().map_or(0, |i| i.len()) + 48).sum::<usize>())
                        .sum::<usize>()
            })
            .sum()
    }
}

/// The kept row of a key: its event time (row-format bytes, for rowtime order) and the row.
struct Kept {
    time: Vec<u8>,
    row: Vec<u8>,
}

pub struct Deduplicate {
    key: RowCodec,
    row: RowCodec,
    rowtime: Option<RowCodec>,
    keep_last: bool,
    schema: SchemaRef,
    state: KeyedStore<Kept>,
    ttl: StateTtl,
}

impl Deduplicate {
    pub fn new(input: SchemaRef, output: SchemaRef, key: &[usize], keep_last: bool, order: &DedupOrder) -> Result<Self> {
        let rowtime = match order {
            DedupOrder::Proctime => None,
            DedupOrder::Rowtime(c) => Some(RowCodec::new(&input, Some(&[*c]))?),
        };
        Ok(Deduplicate {
            key: RowCodec::new(&input, Some(key))?,
            row: RowCodec::new(&input, None)?,
            rowtime,
            keep_last,
            schema: output,
            state: KeyedStore::default(),
            ttl: StateTtl::default(),
        })
    }

    /// Bounds the state with a TTL (`table.exec.state.ttl`).
    pub fn with_ttl(mut self, ttl: StateTtl) -> Self {
        self.ttl = ttl;
        self
    }
}

impl Operator for Deduplicate {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let cols = batch.data.columns();
        let keys = self.key.encode(cols)?;
        let rows = self.row.encode(cols)?;
        let times = match &self.rowtime {
            Some(c) => Some(c.encode(cols)?),
            None => None,
        };
        // Keep-first by arrival only needs to know that a key was seen.
        let store_rows = self.keep_last || self.rowtime.is_some();
        let now = self.ttl.now();
        let mut emitted: Vec<(Vec<u8>, RowKind)> = Vec::new();
        for i in 0..batch.num_rows() {
            if batch.kinds[i].is_retract() {
                return Err(RsqlError::execution(
                    "Deduplicate received a retraction, but it only runs on insert-only input; this is a planning error",
                ));
            }
            let key_row = keys.row(i);
            let key = key_row.as_ref();
            let time = times.as_ref().map(|t| t.row(i).as_ref().to_vec()).unwrap_or_default();
            let row = if store_rows { rows.row(i).as_ref().to_vec() } else { Vec::new() };
            match self.state.find_live(key, &self.ttl, now).and_then(|id| self.state.get_mut(id)) {
                None => {
                    let shown = if store_rows { row.clone() } else { rows.row(i).as_ref().to_vec() };
                    self.state.insert(key, Kept { time, row }, now);
                    emitted.push((shown, RowKind::Insert));
                }
                Some(slot) => {
                    let kept = &mut slot.value;
                    let replace = match (&self.rowtime, self.keep_last) {
                        (None, keep_last) => keep_last,
                        (Some(_), true) => kept.time <= time,
                        (Some(_), false) => time < kept.time,
                    };
                    // Only a replacement writes the state (keep-first by arrival expires the
                    // TTL after the key's first row, as Flink's does).
                    if replace {
                        let old = std::mem::replace(kept, Kept { time, row: row.clone() });
                        slot.written = now;
                        emitted.push((old.row, RowKind::UpdateBefore));
                        emitted.push((row, RowKind::UpdateAfter));
                    }
                }
            }
        }
        self.state.sweep_expired(&self.ttl, batch.num_rows());
        if emitted.is_empty() {
            return Ok(());
        }
        let mut cols = self.row.decode(emitted.iter().map(|(r, _)| r.as_slice()))?;
        cols.push(Arc::new(UInt64Array::from(vec![1u64; emitted.len()])) as ArrayRef);
        let cols = super::conform(cols, &self.schema)?;
        let data = RecordBatch::try_new(self.schema.clone(), cols)?;
        out.push(ChangeBatch::new(data, emitted.into_iter().map(|(_, k)| k).collect()));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.u64(self.state.len() as u64);
        for (_, slot) in self.state.iter() {
            w.bytes(&slot.key);
            w.u64(slot.written);
            w.bytes(&slot.value.time);
            w.bytes(&slot.value.row);
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        let mut state = KeyedStore::default();
        for _ in 0..r.u64()? {
            let k = r.bytes()?;
            let written = r.u64()?;
            let time = r.bytes()?.to_vec();
            let row = r.bytes()?.to_vec();
            if state.find(k).is_some() {
                return Err(RsqlError::execution("deduplicate state snapshot is corrupt: a key appears twice"));
            }
            state.insert(k, Kept { time, row }, written);
        }
        if !r.is_empty() {
            return Err(RsqlError::execution("deduplicate state snapshot has trailing bytes"));
        }
        self.state = state;
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.state.iter().map(|(_, s)| s.key.len() + s.value.time.len() + s.value.row.len() + 72).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::SortColumn;
    use crate::operators::testutil::{batch, manual_ttl, schema, show};
    use rsql_common::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::atomic::Ordering;

    /// Input (p, v, id); output (p, v, id, rn) with the row number as BIGINT for `show`.
    fn io() -> (SchemaRef, SchemaRef) {
        let input = schema(&["p", "v", "id"], false);
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("rn", DataType::Int64, false));
        (input, Arc::new(Schema::new(fields)))
    }

    fn by_v_desc() -> RankOrder {
        RankOrder::Columns(vec![SortColumn { column: 1, descending: true, nulls_first: false }])
    }

    fn rank(range: (u64, u64), output_rank: bool, append_only: bool) -> Rank {
        let (i, o) = io();
        Rank::new(i, o, &[0], &by_v_desc(), range, output_rank, &[], append_only).unwrap()
    }

    fn run(op: &mut dyn Operator, rows: &[(&str, &[i32])]) -> Vec<String> {
        let (i, _) = io();
        let mut out = Vec::new();
        op.process(0, batch(&i, rows), &mut out).unwrap();
        show(&out)
    }

    #[test]
    fn top2_without_row_number_swaps_rows_in_and_out() {
        let mut r = rank((1, 2), false, true);
        assert_eq!(run(&mut r, &[("+I", &[1, 10, 1]), ("+I", &[1, 30, 2])]), vec!["+I[1, 10, 1, 1]", "+I[1, 30, 2, 1]"]);
        // 20 enters between 30 and 10: 10 leaves.
        assert_eq!(run(&mut r, &[("+I", &[1, 20, 3])]), vec!["-D[1, 10, 1, 1]", "+I[1, 20, 3, 1]"]);
        // Below the range, and another partition.
        assert_eq!(run(&mut r, &[("+I", &[1, 5, 4]), ("+I", &[2, 5, 5])]), vec!["+I[2, 5, 5, 1]"]);
        // A tie with 30 goes after it (arrival order): 20 leaves.
        assert_eq!(run(&mut r, &[("+I", &[1, 30, 6])]), vec!["-D[1, 20, 3, 1]", "+I[1, 30, 6, 1]"]);
        // On an insert-only input only the rows up to the rank end are kept.
        assert_eq!(r.parts.iter().map(|(_, s)| s.value.len).sum::<usize>(), 3);
    }

    #[test]
    fn row_numbers_shift_with_update_pairs() {
        let mut r = rank((1, 3), true, true);
        assert_eq!(run(&mut r, &[("+I", &[1, 10, 1]), ("+I", &[1, 30, 2])]), vec!["+I[1, 10, 1, 1]", "-U[1, 10, 1, 1]", "+U[1, 30, 2, 1]", "+I[1, 10, 1, 2]"]);
        assert_eq!(
            run(&mut r, &[("+I", &[1, 20, 3]), ("+I", &[1, 40, 4])]),
            vec![
                "-U[1, 10, 1, 2]",
                "+U[1, 20, 3, 2]",
                "+I[1, 10, 1, 3]",
                "-U[1, 30, 2, 1]",
                "+U[1, 40, 4, 1]",
                "-U[1, 20, 3, 2]",
                "+U[1, 30, 2, 2]",
                "-U[1, 10, 1, 3]",
                "+U[1, 20, 3, 3]",
            ]
        );
    }

    #[test]
    fn retractions_let_the_next_row_move_up() {
        let mut r = rank((1, 2), false, false);
        run(&mut r, &[("+I", &[1, 10, 1]), ("+I", &[1, 20, 2]), ("+I", &[1, 30, 3])]);
        // 30 and 20 are in; deleting 30 brings 10 in.
        assert_eq!(run(&mut r, &[("-D", &[1, 30, 3])]), vec!["-D[1, 30, 3, 1]", "+I[1, 10, 1, 1]"]);
        // An update moving row 1 to the top: its old row leaves, then its new row enters.
        assert_eq!(run(&mut r, &[("-U", &[1, 10, 1]), ("+U", &[1, 50, 1])]), vec!["-D[1, 10, 1, 1]", "+I[1, 50, 1, 1]"]);
        // Unknown retractions change nothing.
        assert!(run(&mut r, &[("-D", &[1, 99, 9]), ("-D", &[7, 1, 1])]).is_empty());
        // A retraction below the range changes nothing visible.
        run(&mut r, &[("+I", &[1, 1, 8])]);
        assert!(run(&mut r, &[("-D", &[1, 1, 8])]).is_empty());
    }

    #[test]
    fn offset_range_with_row_numbers() {
        let mut r = rank((2, 3), true, false);
        assert_eq!(run(&mut r, &[("+I", &[1, 10, 1])]), Vec::<String>::new());
        assert_eq!(run(&mut r, &[("+I", &[1, 20, 2])]), vec!["+I[1, 10, 1, 2]"]);
        assert_eq!(run(&mut r, &[("+I", &[1, 30, 3])]), vec!["-U[1, 10, 1, 2]", "+U[1, 20, 2, 2]", "+I[1, 10, 1, 3]"]);
        assert_eq!(run(&mut r, &[("-D", &[1, 30, 3])]), vec!["-U[1, 20, 2, 2]", "+U[1, 10, 1, 2]", "-D[1, 10, 1, 3]"]);
        // Without row numbers an offset range swaps rows too.
        let mut r = rank((2, 3), false, false);
        run(&mut r, &[("+I", &[1, 10, 1]), ("+I", &[1, 20, 2]), ("+I", &[1, 30, 3])]);
        assert_eq!(run(&mut r, &[("+I", &[1, 40, 4])]), vec!["-D[1, 10, 1, 2]", "+I[1, 30, 3, 2]"]);
        assert_eq!(run(&mut r, &[("-D", &[1, 40, 4])]), vec!["-D[1, 30, 3, 2]", "+I[1, 10, 1, 2]"]);
    }

    #[test]
    fn global_top1_by_arrival_matches_retractions_without_proctime() {
        // ORDER BY proctime DESC over (p, v, proc): the newest row; column 2 is the attribute.
        let (i, o) = io();
        let mut r = Rank::new(i, o, &[], &RankOrder::Arrival { descending: true }, (1, 1), false, &[2], false).unwrap();
        assert_eq!(run(&mut r, &[("+I", &[1, 10, 100])]), vec!["+I[1, 10, 100, 1]"]);
        assert_eq!(run(&mut r, &[("+I", &[2, 20, 101])]), vec!["-D[1, 10, 100, 1]", "+I[2, 20, 101, 1]"]);
        // The retraction carries a later processing time; it still finds its row.
        assert_eq!(run(&mut r, &[("-D", &[2, 20, 555])]), vec!["-D[2, 20, 101, 1]", "+I[1, 10, 100, 1]"]);
    }

    #[test]
    fn deduplicate_first_last_and_rowtime() {
        let (i, o) = io();
        let mut first = Deduplicate::new(i.clone(), o.clone(), &[0], false, &DedupOrder::Proctime).unwrap();
        assert_eq!(run(&mut first, &[("+I", &[1, 10, 1]), ("+I", &[1, 20, 2]), ("+I", &[2, 5, 3])]), vec!["+I[1, 10, 1, 1]", "+I[2, 5, 3, 1]"]);
        let mut last = Deduplicate::new(i.clone(), o.clone(), &[0], true, &DedupOrder::Proctime).unwrap();
        assert_eq!(run(&mut last, &[("+I", &[1, 10, 1]), ("+I", &[1, 20, 2])]), vec!["+I[1, 10, 1, 1]", "-U[1, 10, 1, 1]", "+U[1, 20, 2, 1]"]);
        // Event time in column 2: keep-first replaces with an earlier time only.
        let mut rt = Deduplicate::new(i.clone(), o.clone(), &[0], false, &DedupOrder::Rowtime(2)).unwrap();
        assert_eq!(
            run(&mut rt, &[("+I", &[1, 10, 5]), ("+I", &[1, 20, 7]), ("+I", &[1, 30, 3]), ("+I", &[1, 40, 3])]),
            vec!["+I[1, 10, 5, 1]", "-U[1, 10, 5, 1]", "+U[1, 30, 3, 1]"]
        );
        let mut rt = Deduplicate::new(i.clone(), o.clone(), &[0], true, &DedupOrder::Rowtime(2)).unwrap();
        assert_eq!(
            run(&mut rt, &[("+I", &[1, 10, 5]), ("+I", &[1, 20, 3]), ("+I", &[1, 30, 5])]),
            vec!["+I[1, 10, 5, 1]", "-U[1, 10, 5, 1]", "+U[1, 30, 5, 1]"]
        );
        let mut out = Vec::new();
        assert!(rt.process(0, batch(&i, &[("-D", &[1, 30, 5])]), &mut out).is_err());
    }

    /// Random inserts and retractions against a model that re-sorts every partition: the
    /// materialized output must equal the model's ranks after every batch.
    #[test]
    fn random_changes_match_a_full_recomputation() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..40u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let start = rng.random_range(1..3u64);
            let end = start + rng.random_range(0..3u64);
            let output_rank = rng.random_bool(0.5);
            let append_only = seed % 4 == 0;
            let mut op = rank((start, end), output_rank, append_only);
            let mut live: Vec<[i32; 3]> = Vec::new();
            let mut result: Vec<String> = Vec::new();
            for _ in 0..30 {
                let mut rows: Vec<(&str, [i32; 3])> = Vec::new();
                for _ in 0..rng.random_range(1..4) {
                    if !append_only && !live.is_empty() && rng.random_bool(0.4) {
                        // Of identical rows the earliest goes, as in the operator.
                        let pick = live[rng.random_range(0..live.len())];
                        let first = live.iter().position(|x| *x == pick).unwrap_or(0);
                        let r = live.remove(first);
                        rows.push((if rng.random_bool(0.5) { "-D" } else { "-U" }, r));
                    } else {
                        let r = [rng.random_range(0..2), rng.random_range(0..5), rng.random_range(0..3)];
                        live.push(r);
                        rows.push(("+I", r));
                    }
                }
                let refs: Vec<(&str, &[i32])> = rows.iter().map(|(k, r)| (*k, &r[..])).collect();
                for line in run(&mut op, &refs) {
                    let (kind, body) = line.split_at(2);
                    if kind == "+I" || kind == "+U" {
                        result.push(body.to_string());
                    } else {
                        let p = result.iter().position(|x| x == body).unwrap_or_else(|| panic!("seed {seed}: {line} never emitted"));
                        result.remove(p);
                    }
                }
                // The model: per partition, rows in arrival order, stably sorted by v DESC.
                let mut expected = Vec::new();
                for part in 0..2 {
                    let mut rows: Vec<&[i32; 3]> = live.iter().filter(|r| r[0] == part).collect();
                    rows.sort_by_key(|r| std::cmp::Reverse(r[1]));
                    for (i, r) in rows.iter().enumerate() {
                        let n = i as u64 + 1;
                        if n >= start && n <= end {
                            let shown = if output_rank { n } else { start };
                            expected.push(format!("[{}, {}, {}, {shown}]", r[0], r[1], r[2]));
                        }
                    }
                }
                let mut got = result.clone();
                got.sort();
                expected.sort();
                assert_eq!(got, expected, "seed {seed}, range [{start}, {end}], output_rank {output_rank}");
            }
        }
    }

    #[test]
    fn snapshot_and_restore_continue_identically() {
        let steps: Vec<Vec<(&str, &[i32])>> = vec![
            vec![("+I", &[1, 10, 1]), ("+I", &[1, 30, 2]), ("+I", &[2, 7, 3])],
            vec![("+I", &[1, 20, 4]), ("-D", &[1, 30, 2])],
            vec![("+I", &[1, 25, 5]), ("-U", &[2, 7, 3]), ("+U", &[2, 9, 3])],
            vec![("-D", &[1, 20, 4]), ("+I", &[1, 40, 6])],
        ];
        for (output_rank, append_only) in [(true, false), (false, false), (true, true)] {
            let steps: Vec<Vec<(&str, &[i32])>> = if append_only {
                steps.iter().map(|s| s.iter().filter(|r| r.0 == "+I").copied().collect()).collect()
            } else {
                steps.clone()
            };
            let mut a = rank((1, 2), output_rank, append_only);
            for s in &steps[..2] {
                run(&mut a, s);
            }
            let snap = a.snapshot().unwrap();
            let mut b = rank((1, 2), output_rank, append_only);
            b.restore(&snap).unwrap();
            for s in &steps[2..] {
                assert_eq!(run(&mut a, s), run(&mut b, s), "output_rank={output_rank} append_only={append_only}");
            }
            assert_eq!(a.snapshot().unwrap().len(), b.snapshot().unwrap().len());
            assert!(b.restore(&snap[..snap.len() / 2]).is_err());
        }
        // Arrival order keeps its sequence across a restore.
        let (i, o) = io();
        let mk = || Rank::new(i.clone(), o.clone(), &[0], &RankOrder::Arrival { descending: false }, (1, 2), true, &[2], false).unwrap();
        let mut a = mk();
        run(&mut a, &[("+I", &[1, 10, 1]), ("+I", &[1, 20, 2])]);
        let mut b = mk();
        b.restore(&a.snapshot().unwrap()).unwrap();
        for s in [vec![("-D", &[1, 10, 9][..])], vec![("+I", &[1, 30, 3][..])], vec![("+I", &[1, 40, 4][..]), ("-D", &[1, 20, 9][..])]] {
            assert_eq!(run(&mut a, &s), run(&mut b, &s));
        }
        let mut d1 = Deduplicate::new(i.clone(), o.clone(), &[0], true, &DedupOrder::Proctime).unwrap();
        run(&mut d1, &[("+I", &[1, 10, 1])]);
        let mut d2 = Deduplicate::new(i.clone(), o.clone(), &[0], true, &DedupOrder::Proctime).unwrap();
        d2.restore(&d1.snapshot().unwrap()).unwrap();
        assert_eq!(run(&mut d1, &[("+I", &[1, 20, 2])]), run(&mut d2, &[("+I", &[1, 20, 2])]));
    }

    #[test]
    fn state_ttl_expires_dedup_keys_and_rank_partitions() {
        let (i, o) = io();
        // Keep-first by arrival: state is written once, so the key comes back after the TTL.
        let (now, ttl) = manual_ttl();
        let mut first = Deduplicate::new(i.clone(), o.clone(), &[0], false, &DedupOrder::Proctime).unwrap().with_ttl(ttl.clone());
        assert_eq!(run(&mut first, &[("+I", &[1, 10, 1]), ("+I", &[2, 20, 2])]), vec!["+I[1, 10, 1, 1]", "+I[2, 20, 2, 1]"]);
        now.store(99, Ordering::SeqCst);
        assert!(run(&mut first, &[("+I", &[1, 11, 3])]).is_empty());
        now.store(100, Ordering::SeqCst);
        assert_eq!(run(&mut first, &[("+I", &[1, 12, 4])]), vec!["+I[1, 12, 4, 1]"]);
        // Keep-last writes on every row: a key seen within the TTL stays; a silent one starts over.
        now.store(0, Ordering::SeqCst);
        let mut last = Deduplicate::new(i.clone(), o.clone(), &[0], true, &DedupOrder::Proctime).unwrap().with_ttl(ttl.clone());
        assert_eq!(run(&mut last, &[("+I", &[1, 10, 1]), ("+I", &[2, 20, 2])]), vec!["+I[1, 10, 1, 1]", "+I[2, 20, 2, 1]"]);
        now.store(60, Ordering::SeqCst);
        assert_eq!(run(&mut last, &[("+I", &[1, 11, 3])]), vec!["-U[1, 10, 1, 1]", "+U[1, 11, 3, 1]"]);
        now.store(130, Ordering::SeqCst);
        assert_eq!(run(&mut last, &[("+I", &[1, 12, 4]), ("+I", &[2, 21, 5])]), vec!["-U[1, 11, 3, 1]", "+U[1, 12, 4, 1]", "+I[2, 21, 5, 1]"]);
        let snap = last.snapshot().unwrap();
        let mut again = Deduplicate::new(i.clone(), o.clone(), &[0], true, &DedupOrder::Proctime).unwrap().with_ttl(ttl.clone());
        again.restore(&snap).unwrap();
        assert_eq!(again.snapshot().unwrap(), snap);

        // Top-2 per partition over an updating input: partition 1 is not written and expires.
        now.store(1000, Ordering::SeqCst);
        let mut r = rank((1, 2), true, false).with_ttl(ttl);
        assert_eq!(run(&mut r, &[("+I", &[1, 10, 1]), ("+I", &[2, 20, 2])]), vec!["+I[1, 10, 1, 1]", "+I[2, 20, 2, 1]"]);
        now.store(1060, Ordering::SeqCst);
        assert_eq!(run(&mut r, &[("+I", &[2, 30, 3])]), vec!["-U[2, 20, 2, 1]", "+U[2, 30, 3, 1]", "+I[2, 20, 2, 2]"]);
        now.store(1120, Ordering::SeqCst);
        // Partition 1 expired: its retraction is dropped and a new row starts at rank 1.
        assert!(run(&mut r, &[("-D", &[1, 10, 1])]).is_empty());
        assert_eq!(run(&mut r, &[("+I", &[1, 5, 4]), ("-D", &[2, 30, 3])]), vec!["+I[1, 5, 4, 1]", "-U[2, 30, 3, 1]", "+U[2, 20, 2, 1]", "-D[2, 20, 2, 2]"]);
        let snap = r.snapshot().unwrap();
        let mut b = rank((1, 2), true, false);
        b.restore(&snap).unwrap();
        assert_eq!(b.snapshot().unwrap(), snap);
    }
}
