//! Regular (unwindowed) equi-join over two changelogs, with state on both sides.
//!
//! Each side keeps its current rows per join key. An input row is matched against the other
//! side's rows for its key (and the optional non-equi condition). Inner joins pass the input's
//! row kind through (+I/+U/-U/-D). Outer joins keep, per stored row, its number of matches (its
//! degree): a row with no match is emitted padded with NULLs, and that padded row is retracted
//! when a first match appears and emitted again when the last match goes away. Rows whose key
//! holds a NULL never match, as in SQL.

use std::collections::HashMap;

use rsql_common::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray};
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::state::{RowCodec, StateReader, StateWriter};
use super::Operator;
use crate::graph::{JoinKind, PhysExpr};

/// One stored row and how many rows of the other side it currently matches.
#[derive(Clone, Debug)]
struct Entry {
    row: Vec<u8>,
    degree: u32,
}

struct Side {
    key: RowCodec,
    row: RowCodec,
    key_indices: Vec<usize>,
    outer: bool,
    state: HashMap<Vec<u8>, Vec<Entry>>,
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
            state: HashMap::new(),
            null_row,
        })
    }
}

/// A row of output: left bytes, right bytes (None = NULL padding), kind.
type OutRow = (Option<Vec<u8>>, Option<Vec<u8>>, RowKind);

pub struct Join {
    sides: [Side; 2],
    filter: Option<PhysExpr>,
    schema: SchemaRef,
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
        })
    }

    /// Builds output columns from (left, right) row bytes.
    fn build(&self, rows: &[OutRow]) -> Result<RecordBatch> {
        let l = &self.sides[0];
        let r = &self.sides[1];
        let mut cols = l.row.decode(rows.iter().map(|(a, _, _)| a.as_deref().unwrap_or(&l.null_row)))?;
        cols.extend(r.row.decode(rows.iter().map(|(_, b, _)| b.as_deref().unwrap_or(&r.null_row)))?);
        let cols = super::conform(cols, &self.schema)?;
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    /// Which of `candidates` (rows of the other side) satisfy the non-equi condition with `row`.
    fn filter_matches(&self, s: usize, row: &[u8], candidates: &[Vec<u8>]) -> Result<Vec<bool>> {
        let Some(f) = &self.filter else { return Ok(vec![true; candidates.len()]) };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<OutRow> = candidates
            .iter()
            .map(|c| if s == 0 { (Some(row.to_vec()), Some(c.clone()), RowKind::Insert) } else { (Some(c.clone()), Some(row.to_vec()), RowKind::Insert) })
            .collect();
        let batch = self.build(&pairs)?;
        let v = f.evaluate(&batch)?.into_array(batch.num_rows())?;
        let m = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| RsqlError::execution("join condition is not BOOLEAN"))?;
        Ok((0..m.len()).map(|i| m.is_valid(i) && m.value(i)).collect())
    }

    fn pair(s: usize, mine: Option<Vec<u8>>, other: Option<Vec<u8>>, kind: RowKind) -> OutRow {
        if s == 0 {
            (mine, other, kind)
        } else {
            (other, mine, kind)
        }
    }

    fn process_row(&mut self, s: usize, key: &[u8], key_null: bool, row: Vec<u8>, kind: RowKind, out: &mut Vec<OutRow>) -> Result<()> {
        let o = 1 - s;
        let other_outer = self.sides[o].outer;
        let self_outer = self.sides[s].outer;
        // Candidate rows of the other side for this key.
        let candidates: Vec<Vec<u8>> = if key_null {
            Vec::new()
        } else {
            self.sides[o].state.get(key).map(|v| v.iter().map(|e| e.row.clone()).collect()).unwrap_or_default()
        };
        let pass = self.filter_matches(s, &row, &candidates)?;
        let matched: Vec<usize> = pass.iter().enumerate().filter(|(_, p)| **p).map(|(i, _)| i).collect();

        if kind.is_accumulate() {
            if !matched.is_empty() {
                // Update the other side's degrees and emit the joined rows.
                if let Some(entries) = self.sides[o].state.get_mut(key) {
                    for &i in &matched {
                        let e = &mut entries[i];
                        if other_outer {
                            if e.degree == 0 {
                                out.push(Self::pair(o, Some(e.row.clone()), None, RowKind::Delete));
                            }
                            e.degree += 1;
                        }
                        let k = if self_outer || other_outer { RowKind::Insert } else { kind };
                        out.push(Self::pair(s, Some(row.clone()), Some(e.row.clone()), k));
                    }
                }
            } else if self_outer {
                out.push(Self::pair(s, Some(row.clone()), None, RowKind::Insert));
            }
            self.sides[s].state.entry(key.to_vec()).or_default().push(Entry { row, degree: matched.len() as u32 });
        } else {
            // Remove one stored occurrence; a retraction of a row never seen is dropped.
            let removed = match self.sides[s].state.get_mut(key) {
                Some(list) => match list.iter().rposition(|e| e.row == row) {
                    Some(p) => {
                        list.remove(p);
                        if list.is_empty() {
                            self.sides[s].state.remove(key);
                        }
                        true
                    }
                    None => false,
                },
                None => false,
            };
            if !removed {
                return Ok(());
            }
            if matched.is_empty() {
                if self_outer {
                    out.push(Self::pair(s, Some(row), None, RowKind::Delete));
                }
                return Ok(());
            }
            if let Some(entries) = self.sides[o].state.get_mut(key) {
                for &i in &matched {
                    let e = &mut entries[i];
                    let k = if self_outer || other_outer { RowKind::Delete } else { kind };
                    out.push(Self::pair(s, Some(row.clone()), Some(e.row.clone()), k));
                    if other_outer {
                        e.degree = e.degree.saturating_sub(1);
                        if e.degree == 0 {
                            out.push(Self::pair(o, Some(e.row.clone()), None, RowKind::Insert));
                        }
                    }
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
        let mut emitted: Vec<OutRow> = Vec::new();
        for i in 0..batch.num_rows() {
            let key_null = key_cols.iter().any(|c| c.is_null(i));
            let key = keys.row(i).as_ref().to_vec();
            let row = rows.row(i).as_ref().to_vec();
            self.process_row(s, &key, key_null, row, batch.kinds[i], &mut emitted)?;
        }
        if !emitted.is_empty() {
            let data = self.build(&emitted)?;
            out.push(ChangeBatch::new(data, emitted.into_iter().map(|(_, _, k)| k).collect()));
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        for side in &self.sides {
            w.u64(side.state.len() as u64);
            for (k, list) in &side.state {
                w.bytes(k);
                w.u64(list.len() as u64);
                for e in list {
                    w.bytes(&e.row);
                    w.u64(e.degree as u64);
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
                let k = r.bytes()?.to_vec();
                let n = r.u64()?;
                let mut list = Vec::new();
                for _ in 0..n {
                    let row = r.bytes()?.to_vec();
                    let degree = r.u64()? as u32;
                    list.push(Entry { row, degree });
                }
                side.state.insert(k, list);
            }
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.sides
            .iter()
            .map(|s| s.state.iter().map(|(k, l)| k.len() + 48 + l.iter().map(|e| e.row.len() + 28).sum::<usize>()).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testutil::{batch, schema, show};

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
}
