//! SinkMaterializer: sits before an upsert sink whose primary key is not a unique key of the
//! incoming changelog. It keeps, per sink key, every row currently present (in arrival order),
//! so that a retraction of one row emits -D only when no other row holds the key, and otherwise
//! re-emits the row that now represents the key.

use std::collections::HashMap;

use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::{ChangeBatch, Result, RowKind};

use super::state::{RowCodec, StateReader, StateWriter};
use super::Operator;

pub struct SinkMaterializer {
    key: RowCodec,
    row: RowCodec,
    schema: SchemaRef,
    rows: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl SinkMaterializer {
    pub fn new(schema: SchemaRef, key: &[usize]) -> Result<Self> {
        Ok(SinkMaterializer {
            key: RowCodec::new(&schema, Some(key))?,
            row: RowCodec::new(&schema, None)?,
            schema,
            rows: HashMap::new(),
        })
    }
}

impl Operator for SinkMaterializer {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let keys = self.key.encode(batch.data.columns())?;
        let rows = self.row.encode(batch.data.columns())?;
        let mut emitted: Vec<(Vec<u8>, RowKind)> = Vec::new();
        for i in 0..batch.num_rows() {
            let k = keys.row(i);
            let r = rows.row(i).as_ref().to_vec();
            if batch.kinds[i].is_accumulate() {
                let list = self.rows.entry(k.as_ref().to_vec()).or_default();
                let kind = if list.is_empty() { RowKind::Insert } else { RowKind::UpdateAfter };
                list.push(r.clone());
                emitted.push((r, kind));
            } else {
                let Some(list) = self.rows.get_mut(k.as_ref()) else { continue };
                let Some(pos) = list.iter().rposition(|x| *x == r) else { continue };
                let was_last = pos + 1 == list.len();
                list.remove(pos);
                if list.is_empty() {
                    self.rows.remove(k.as_ref());
                    emitted.push((r, RowKind::Delete));
                } else if was_last {
                    if let Some(now) = list.last() {
                        emitted.push((now.clone(), RowKind::UpdateAfter));
                    }
                }
            }
        }
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
        for (k, list) in &self.rows {
            w.bytes(k);
            w.u64(list.len() as u64);
            for r in list {
                w.bytes(r);
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        self.rows.clear();
        for _ in 0..r.u64()? {
            let k = r.bytes()?.to_vec();
            let n = r.u64()?;
            let mut list = Vec::new();
            for _ in 0..n {
                list.push(r.bytes()?.to_vec());
            }
            self.rows.insert(k, list);
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.rows.iter().map(|(k, l)| k.len() + l.iter().map(|r| r.len() + 24).sum::<usize>() + 48).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testutil::{batch, schema, show};

    #[test]
    fn a_key_is_deleted_only_when_no_row_holds_it() {
        let s = schema(&["k", "v"], false);
        let mut m = SinkMaterializer::new(s.clone(), &[0]).unwrap();
        let mut out = Vec::new();
        m.process(0, batch(&s, &[("+I", &[1, 10]), ("+I", &[1, 20]), ("-D", &[1, 20]), ("-D", &[1, 10])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 10]", "+U[1, 20]", "+U[1, 10]", "-D[1, 10]"]);
    }
}
