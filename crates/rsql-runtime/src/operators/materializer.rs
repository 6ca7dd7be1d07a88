//! SinkMaterializer: sits before an upsert sink whose primary key is not a unique key of the
//! incoming changelog. It keeps, per sink key, every row currently present (in arrival order),
//! so that a retraction of one row emits -D only when no other row holds the key, and otherwise
//! re-emits the row that now represents the key.
//!
//! With `table.exec.state.ttl` a key's rows expire when the key was not written (a row added or
//! retracted) for the TTL, as Flink's materializer state does: a retraction of an expired key
//! is dropped and the key's next row is emitted as `+I`.

use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};

use super::state::{KeyedStore, RowCodec, StateReader, StateTtl, StateWriter};
use super::Operator;

pub struct SinkMaterializer {
    key: RowCodec,
    row: RowCodec,
    schema: SchemaRef,
    /// Per sink key, the rows present, oldest first.
    rows: KeyedStore<Vec<Vec<u8>>>,
    ttl: StateTtl,
}

impl SinkMaterializer {
    pub fn new(schema: SchemaRef, key: &[usize]) -> Result<Self> {
        Ok(SinkMaterializer {
            key: RowCodec::new(&schema, Some(key))?,
            row: RowCodec::new(&schema, None)?,
            schema,
            rows: KeyedStore::default(),
            ttl: StateTtl::default(),
        })
    }

    /// Bounds the state with a TTL (`table.exec.state.ttl`).
    pub fn with_ttl(mut self, ttl: StateTtl) -> Self {
        self.ttl = ttl;
        self
    }
}

impl Operator for SinkMaterializer {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let keys = self.key.encode(batch.data.columns())?;
        let rows = self.row.encode(batch.data.columns())?;
        let now = self.ttl.now();
        let mut emitted: Vec<(Vec<u8>, RowKind)> = Vec::new();
        for i in 0..batch.num_rows() {
            let k = keys.row(i);
            let r = rows.row(i).as_ref().to_vec();
            let id = self.rows.find_live(k.as_ref(), &self.ttl, now);
            if batch.kinds[i].is_accumulate() {
                let kind = match id.and_then(|id| self.rows.get_mut(id)) {
                    Some(slot) => {
                        slot.value.push(r.clone());
                        slot.written = now;
                        RowKind::UpdateAfter
                    }
                    None => {
                        self.rows.insert(k.as_ref(), vec![r.clone()], now);
                        RowKind::Insert
                    }
                };
                emitted.push((r, kind));
            } else {
                // A retraction of a key never seen (or expired) changes nothing.
                let Some(id) = id else { continue };
                let slot = self.rows.get_mut(id).ok_or_else(|| RsqlError::execution("materializer state slot vanished"))?;
                let list = &mut slot.value;
                let Some(pos) = list.iter().rposition(|x| *x == r) else { continue };
                let was_last = pos + 1 == list.len();
                list.remove(pos);
                slot.written = now;
                if list.is_empty() {
                    self.rows.remove(id);
                    emitted.push((r, RowKind::Delete));
                } else if was_last {
                    if let Some(now) = list.last() {
                        emitted.push((now.clone(), RowKind::UpdateAfter));
                    }
                }
            }
        }
        self.rows.sweep_expired(&self.ttl, batch.num_rows());
        if emitted.is_empty() {
            return Ok(());
        }
        let cols = self.row.decode(emitted.iter().map(|(r, _)| r.as_slice()))?;
        let data = RecordBatch::try_new(self.schema.clone(), cols)?;
        out.push(ChangeBatch::new(data, emitted.into_iter().map(|(_, k)| k).collect()));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.u64(self.rows.len() as u64);
        for (_, slot) in self.rows.iter() {
            w.bytes(&slot.key);
            w.u64(slot.written);
            w.u64(slot.value.len() as u64);
            for r in &slot.value {
                w.bytes(r);
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        self.rows.clear();
        for _ in 0..r.u64()? {
            let k = r.bytes()?;
            let written = r.u64()?;
            let n = r.u64()?;
            let mut list = Vec::new();
            for _ in 0..n {
                list.push(r.bytes()?.to_vec());
            }
            if self.rows.find(k).is_some() {
                return Err(RsqlError::execution("sink materializer state snapshot is corrupt: a key appears twice"));
            }
            self.rows.insert(k, list, written);
        }
        if !r.is_empty() {
            return Err(RsqlError::execution("sink materializer state snapshot has trailing bytes"));
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.rows.iter().map(|(_, s)| s.key.len() + s.value.iter().map(|r| r.len() + 24).sum::<usize>() + 56).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testutil::{batch, manual_ttl, schema, show};
    use std::sync::atomic::Ordering;

    #[test]
    fn a_key_is_deleted_only_when_no_row_holds_it() {
        let s = schema(&["k", "v"], false);
        let mut m = SinkMaterializer::new(s.clone(), &[0]).unwrap();
        let mut out = Vec::new();
        m.process(0, batch(&s, &[("+I", &[1, 10]), ("+I", &[1, 20]), ("-D", &[1, 20]), ("-D", &[1, 10])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 10]", "+U[1, 20]", "+U[1, 10]", "-D[1, 10]"]);
    }

    #[test]
    fn state_ttl_forgets_keys_that_were_not_written() {
        let s = schema(&["k", "v"], false);
        let (now, ttl) = manual_ttl();
        let mut m = SinkMaterializer::new(s.clone(), &[0]).unwrap().with_ttl(ttl);
        let mut out = Vec::new();
        m.process(0, batch(&s, &[("+I", &[1, 10]), ("+I", &[2, 20])]), &mut out).unwrap();
        now.store(60, Ordering::SeqCst);
        // Writing key 1 again keeps it alive; key 2 is left alone.
        m.process(0, batch(&s, &[("+I", &[1, 11])]), &mut out).unwrap();
        now.store(120, Ordering::SeqCst);
        out.clear();
        // Key 2 expired: its retraction is dropped, and its next row is a new insert.
        m.process(0, batch(&s, &[("-D", &[2, 20]), ("+I", &[2, 21]), ("-D", &[1, 11])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[2, 21]", "+U[1, 10]"]);
        // Restored state keeps the write times.
        let snap = m.snapshot().unwrap();
        let (_, ttl2) = manual_ttl();
        let mut m2 = SinkMaterializer::new(s.clone(), &[0]).unwrap().with_ttl(ttl2);
        m2.restore(&snap).unwrap();
        assert_eq!(m2.snapshot().unwrap(), snap);
        assert!(m2.restore(&snap[..snap.len() - 1]).is_err());
        now.store(400, Ordering::SeqCst);
        out.clear();
        m.process(0, batch(&s, &[("+I", &[1, 12])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 12]"]);
        // The sweep dropped key 2 without anyone reading it.
        assert_eq!(m.rows.len(), 1);
    }
}
