//! Regular (unwindowed) equi-join over two changelogs, with state on both sides.
//!
//! Each side keeps its current rows per join key. An input row is matched against the other
//! side's rows for its key (and the optional non-equi condition). Inner joins pass the input's
//! row kind through (+I/+U/-U/-D). Outer joins keep, per stored row, its number of matches (its
//! degree): a row with no match is emitted padded with NULLs, and that padded row is retracted
//! when a first match appears and emitted again when the last match goes away. Rows whose key
//! holds a NULL never match, as in SQL.
//!
//! A batch's keys and rows are encoded once with arrow's row format; each side's state is a
//! keyed slot store of per-key row lists, and output rows are collected as byte ranges in one
//! buffer and decoded into columns once per batch. With `table.exec.state.ttl` each stored row
//! expires when it was not written (stored, or its degree changed) for the TTL, as Flink's
//! per-row join state does: expired rows are dropped when their key is next accessed and by an
//! incremental sweep, and are never matched again.

use rsql_common::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray};
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::state::{KeyedStore, RowCodec, StateReader, StateTtl, StateWriter, PREFETCH_ENTRY, PREFETCH_SLOT};
use super::Operator;
use crate::graph::{JoinKind, PhysExpr};

/// One stored row and how many rows of the other side it currently matches.
#[derive(Clone, Debug)]
struct Entry {
    row: Box<[u8]>,
    /// A hash of `row`, compared before the bytes when a retraction looks for its row, so that
    /// scanning a key's rows does not follow every row's pointer.
    fp: u32,
    degree: u32,
    /// Processing time of the last write (0 without a TTL).
    written: u64,
}

impl Entry {
    fn new(row: &[u8], degree: u32, written: u64) -> Entry {
        Entry { row: row.into(), fp: fingerprint(row), degree, written }
    }
}

fn fingerprint(row: &[u8]) -> u32 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x0f1a_9e7).hash_one(row) as u32
}

struct Side {
    key: RowCodec,
    row: RowCodec,
    key_indices: Vec<usize>,
    outer: bool,
    state: KeyedStore<Vec<Entry>>,
    null_row: Vec<u8>,
}

impl Side {
    fn new(schema: SchemaRef, keys: &[usize], outer: bool) -> Result<Side> {
        let row = RowCodec::new(&schema, None)?;
        let nulls: Vec<ArrayRef> = schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect();
        let null_row = row.encode(&nulls)?.row(0).as_ref().to_vec();
        Ok(Side {
            key: RowCodec::new(&schema, Some(keys))?,
            row,
            key_indices: keys.to_vec(),
            outer,
            state: KeyedStore::default(),
            null_row,
        })
    }

    /// The slot of `key` with its expired rows dropped (None when nothing is left).
    fn find_live(&mut self, h: u64, key: &[u8], ttl: &StateTtl, now: u64) -> Option<u32> {
        let id = self.state.find_hashed(h, key)?;
        if ttl.enabled() {
            let slot = self.state.get_mut(id)?;
            if slot.value.iter().any(|e| ttl.expired(e.written, now)) {
                slot.value.retain(|e| !ttl.expired(e.written, now));
                if slot.value.is_empty() {
                    self.state.remove(id);
                    return None;
                }
            }
        }
        Some(id)
    }
}

/// Output rows of a batch: left and right row bytes as ranges of one buffer (None = NULL
/// padding), and row kinds.
#[derive(Default)]
struct OutBuf {
    bytes: Vec<u8>,
    rows: Vec<[Option<(usize, usize)>; 2]>,
    kinds: Vec<RowKind>,
}

impl OutBuf {
    fn range(&mut self, b: Option<&[u8]>) -> Option<(usize, usize)> {
        b.map(|b| {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(b);
            (at, b.len())
        })
    }

    /// Appends a row made of `mine` (side `s`) and `other` (the other side).
    fn push(&mut self, s: usize, mine: Option<&[u8]>, other: Option<&[u8]>, kind: RowKind) {
        let (l, r) = if s == 0 { (mine, other) } else { (other, mine) };
        let l = self.range(l);
        let r = self.range(r);
        self.rows.push([l, r]);
        self.kinds.push(kind);
    }

    fn side<'a>(&'a self, i: usize, null_row: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.rows.iter().map(move |r| match r[i] {
            Some((at, len)) => &self.bytes[at..at + len],
            None => null_row,
        })
    }
}

pub struct Join {
    sides: [Side; 2],
    filter: Option<PhysExpr>,
    schema: SchemaRef,
    ttl: StateTtl,
}

impl Join {
    pub fn new(
        kind: JoinKind,
        left: SchemaRef,
        right: SchemaRef,
        left_keys: &[usize],
        right_keys: &[usize],
        filter: Option<PhysExpr>,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(Join {
            sides: [Side::new(left, left_keys, kind.left_outer())?, Side::new(right, right_keys, kind.right_outer())?],
            filter,
            schema,
            ttl: StateTtl::default(),
        })
    }

    /// Bounds both sides' state with a TTL (`table.exec.state.ttl`).
    pub fn with_ttl(mut self, ttl: StateTtl) -> Self {
        self.ttl = ttl;
        self
    }

    /// Builds output columns from collected rows.
    fn build(&self, rows: &OutBuf) -> Result<RecordBatch> {
        let l = &self.sides[0];
        let r = &self.sides[1];
        let mut cols = l.row.decode(rows.side(0, &l.null_row))?;
        cols.extend(r.row.decode(rows.side(1, &r.null_row))?);
        let cols = super::conform(cols, &self.schema)?;
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    /// Indices of the rows in the other side's slot `other` that match `row` (side `s`): all of
    /// them without a non-equi condition, else those satisfying it.
    fn matches(&self, s: usize, row: &[u8], other: Option<u32>, into: &mut Vec<usize>) -> Result<()> {
        into.clear();
        let Some(entries) = other.and_then(|id| self.sides[1 - s].state.get(id)).map(|slot| &slot.value) else { return Ok(()) };
        let Some(f) = &self.filter else {
            into.extend(0..entries.len());
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        let mut pairs = OutBuf::default();
        for e in entries {
            pairs.push(s, Some(row), Some(&e.row), RowKind::Insert);
        }
        let batch = self.build(&pairs)?;
        let v = f.evaluate(&batch)?.into_array(batch.num_rows())?;
        let m = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| RsqlError::execution("join condition is not BOOLEAN"))?;
        into.extend((0..m.len()).filter(|&i| m.is_valid(i) && m.value(i)));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn process_row(&mut self, s: usize, h: u64, key: &[u8], key_null: bool, row: &[u8], kind: RowKind, now: u64, matched: &mut Vec<usize>, out: &mut OutBuf) -> Result<()> {
        let o = 1 - s;
        let other_outer = self.sides[o].outer;
        let self_outer = self.sides[s].outer;
        let ttl = &self.ttl;
        let other = if key_null { None } else { self.sides[o].find_live(h, key, ttl, now) };
        self.matches(s, row, other, matched)?;

        if kind.is_accumulate() {
            if let Some(slot) = other.and_then(|id| self.sides[o].state.get_mut(id)) {
                // Update the other side's degrees and emit the joined rows.
                let k = if self_outer || other_outer { RowKind::Insert } else { kind };
                for &i in matched.iter() {
                    let e = &mut slot.value[i];
                    if other_outer {
                        if e.degree == 0 {
                            out.push(o, Some(&e.row), None, RowKind::Delete);
                        }
                        e.degree += 1;
                        e.written = now;
                    }
                    out.push(s, Some(row), Some(&e.row), k);
                }
                if other_outer && !matched.is_empty() {
                    slot.written = now;
                }
            }
            if matched.is_empty() && self_outer {
                out.push(s, Some(row), None, RowKind::Insert);
            }
            let entry = Entry::new(row, matched.len() as u32, now);
            let side = &mut self.sides[s];
            match side.find_live(h, key, ttl, now).and_then(|id| side.state.get_mut(id)) {
                Some(slot) => {
                    slot.value.push(entry);
                    slot.written = now;
                }
                None => {
                    side.state.insert_hashed(h, key, vec![entry], now);
                }
            }
        } else {
            // Remove one stored occurrence; a retraction of a row never seen (or expired) is
            // dropped.
            let side = &mut self.sides[s];
            let Some(id) = side.find_live(h, key, ttl, now) else { return Ok(()) };
            let Some(slot) = side.state.get_mut(id) else { return Ok(()) };
            let fp = fingerprint(row);
            let Some(p) = slot.value.iter().position(|e| e.fp == fp && &*e.row == row) else { return Ok(()) };
            slot.value.remove(p);
            if slot.value.is_empty() {
                side.state.remove(id);
            }
            if matched.is_empty() {
                if self_outer {
                    out.push(s, Some(row), None, RowKind::Delete);
                }
                return Ok(());
            }
            if let Some(slot) = other.and_then(|id| self.sides[o].state.get_mut(id)) {
                let k = if self_outer || other_outer { RowKind::Delete } else { kind };
                for &i in matched.iter() {
                    let e = &mut slot.value[i];
                    out.push(s, Some(row), Some(&e.row), k);
                    if other_outer {
                        e.degree = e.degree.saturating_sub(1);
                        e.written = now;
                        if e.degree == 0 {
                            out.push(o, Some(&e.row), None, RowKind::Insert);
                        }
                    }
                }
                if other_outer {
                    slot.written = now;
                }
            }
        }
        Ok(())
    }
}

impl Operator for Join {
    fn process(&mut self, input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let s = input.min(1);
        let keys = self.sides[s].key.encode(batch.data.columns())?;
        let rows = self.sides[s].row.encode(batch.data.columns())?;
        let key_cols: Vec<ArrayRef> = self.sides[s].key_indices.iter().map(|i| batch.data.column(*i).clone()).collect();
        let now = self.ttl.now();
        let mut emitted = OutBuf::default();
        let mut matched = Vec::new();
        // Both sides' stores hash alike: one hash per row serves both lookups, and lookups a few
        // rows ahead are prefetched so that their cache misses overlap.
        let hashes: Vec<u64> = (0..batch.num_rows()).map(|i| self.sides[0].state.hash(keys.row(i).data())).collect();
        for i in 0..batch.num_rows() {
            for side in &self.sides {
                if let Some(h) = hashes.get(i + PREFETCH_ENTRY) {
                    side.state.prefetch(*h, false);
                }
                if let Some(h) = hashes.get(i + PREFETCH_SLOT) {
                    side.state.prefetch(*h, true);
                }
            }
            let key_null = key_cols.iter().any(|c| c.is_null(i));
            self.process_row(s, hashes[i], keys.row(i).data(), key_null, rows.row(i).data(), batch.kinds[i], now, &mut matched, &mut emitted)?;
        }
        if self.ttl.enabled() {
            // Incremental cleanup of keys whose every row has expired.
            let ttl = self.ttl.clone();
            let budget = batch.num_rows().max(64) * 2;
            for side in &mut self.sides {
                side.state.sweep(budget, |slot| ttl.expired(slot.written, now));
            }
        }
        if !emitted.kinds.is_empty() {
            let data = self.build(&emitted)?;
            out.push(ChangeBatch::new(data, std::mem::take(&mut emitted.kinds)));
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        for side in &self.sides {
            w.u64(side.state.len() as u64);
            for (_, slot) in side.state.iter() {
                w.bytes(&slot.key);
                w.u64(slot.written);
                w.u64(slot.value.len() as u64);
                for e in &slot.value {
                    w.bytes(&e.row);
                    w.u64(e.degree as u64);
                    w.u64(e.written);
                }
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        for side in &mut self.sides {
            side.state.clear();
            for _ in 0..r.u64()? {
                let k = r.bytes()?;
                let written = r.u64()?;
                let n = r.u64()?;
                let mut list = Vec::new();
                for _ in 0..n {
                    let row = r.bytes()?;
                    let degree = u32::try_from(r.u64()?).map_err(|_| RsqlError::execution("join snapshot is corrupt"))?;
                    list.push(Entry::new(row, degree, r.u64()?));
                }
                if side.state.find(k).is_some() {
                    return Err(RsqlError::execution("join snapshot is corrupt: a key appears twice"));
                }
                side.state.insert(k, list, written);
            }
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        let entry = std::mem::size_of::<Entry>();
        self.sides
            .iter()
            .map(|s| s.state.iter().map(|(_, slot)| slot.key.len() + 48 + slot.value.iter().map(|e| e.row.len() + entry).sum::<usize>()).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testutil::{batch, manual_ttl, schema, show};

    fn join(kind: JoinKind) -> Join {
        let l = schema(&["lk", "lv"], false);
        let r = schema(&["rk", "rv"], false);
        let out = schema(&["lk", "lv", "rk", "rv"], true);
        Join::new(kind, l, r, &[0], &[0], None, out).unwrap()
    }

    #[test]
    fn inner_join_passes_row_kinds_through() {
        let mut j = join(JoinKind::Inner);
        let (l, r) = (schema(&["lk", "lv"], false), schema(&["rk", "rv"], false));
        let mut out = Vec::new();
        j.process(1, batch(&r, &[("+I", &[1, 10])]), &mut out).unwrap();
        assert!(out.is_empty());
        j.process(0, batch(&l, &[("+I", &[1, 100])]), &mut out).unwrap();
        j.process(1, batch(&r, &[("-U", &[1, 10]), ("+U", &[1, 11])]), &mut out).unwrap();
        j.process(0, batch(&l, &[("-D", &[1, 100])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 100, 1, 10]", "-U[1, 100, 1, 10]", "+U[1, 100, 1, 11]", "-D[1, 100, 1, 11]"]);
    }

    #[test]
    fn left_join_swaps_null_padded_rows() {
        let mut j = join(JoinKind::Left);
        let (l, r) = (schema(&["lk", "lv"], false), schema(&["rk", "rv"], false));
        let mut out = Vec::new();
        // An order before its customer: NULL-padded, then replaced by the match, then back.
        j.process(0, batch(&l, &[("+I", &[1, 100])]), &mut out).unwrap();
        j.process(1, batch(&r, &[("+I", &[1, 10])]), &mut out).unwrap();
        j.process(1, batch(&r, &[("+I", &[1, 20])]), &mut out).unwrap();
        j.process(1, batch(&r, &[("-D", &[1, 10])]), &mut out).unwrap();
        j.process(1, batch(&r, &[("-D", &[1, 20])]), &mut out).unwrap();
        assert_eq!(
            show(&out),
            vec![
                "+I[1, 100, null, null]",
                "-D[1, 100, null, null]",
                "+I[1, 100, 1, 10]",
                "+I[1, 100, 1, 20]",
                "-D[1, 100, 1, 10]",
                "-D[1, 100, 1, 20]",
                "+I[1, 100, null, null]",
            ]
        );
    }

    #[test]
    fn snapshot_and_restore_continue_identically() {
        let (l, r) = (schema(&["lk", "lv"], false), schema(&["rk", "rv"], false));
        let mut a = join(JoinKind::Full);
        let mut out = Vec::new();
        a.process(0, batch(&l, &[("+I", &[1, 100]), ("+I", &[2, 200])]), &mut out).unwrap();
        a.process(1, batch(&r, &[("+I", &[2, 20])]), &mut out).unwrap();
        let snap = a.snapshot().unwrap();
        let mut b = join(JoinKind::Full);
        b.restore(&snap).unwrap();
        let (mut oa, mut ob) = (Vec::new(), Vec::new());
        let next = batch(&r, &[("+I", &[1, 10]), ("-D", &[2, 20])]);
        a.process(1, next.clone(), &mut oa).unwrap();
        b.process(1, next, &mut ob).unwrap();
        assert_eq!(show(&oa), show(&ob));
        assert!(b.restore(&snap[..snap.len() / 2]).is_err());
    }

    #[test]
    fn state_ttl_expires_rows_that_were_not_written() {
        use std::sync::atomic::Ordering::SeqCst;
        let (now, ttl) = manual_ttl();
        let (l, r) = (schema(&["lk", "lv"], false), schema(&["rk", "rv"], false));
        let mut j = join(JoinKind::Inner).with_ttl(ttl.clone());
        let mut out = Vec::new();
        j.process(1, batch(&r, &[("+I", &[1, 10])]), &mut out).unwrap();
        now.store(50, SeqCst);
        j.process(0, batch(&l, &[("+I", &[1, 100])]), &mut out).unwrap();
        // The right row was written at 0: expired at 120, so it no longer matches.
        now.store(120, SeqCst);
        j.process(0, batch(&l, &[("+I", &[1, 101])]), &mut out).unwrap();
        // Its retraction finds nothing to take back; the left row of 50 is still there and goes.
        now.store(130, SeqCst);
        j.process(1, batch(&r, &[("-D", &[1, 10])]), &mut out).unwrap();
        j.process(0, batch(&l, &[("-D", &[1, 100])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 100, 1, 10]"]);
        assert_eq!(j.sides[0].state.len(), 1);
        // Write timestamps survive a snapshot, and the sweep drops keys nobody reads again.
        let mut k = join(JoinKind::Inner).with_ttl(ttl);
        k.restore(&j.snapshot().unwrap()).unwrap();
        now.store(219, SeqCst);
        k.process(1, batch(&r, &[("+I", &[2, 20])]), &mut out).unwrap();
        assert_eq!(k.sides[0].state.len(), 1);
        now.store(220, SeqCst);
        k.process(1, batch(&r, &[("+I", &[3, 30])]), &mut out).unwrap();
        assert_eq!(k.sides[0].state.len(), 0);
        assert_eq!(k.sides[1].state.len(), 2);
    }
}
