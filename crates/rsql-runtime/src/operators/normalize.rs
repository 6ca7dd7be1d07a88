//! ChangelogNormalize: turns an upsert stream (+I/+U carrying the full new row, -D carrying at
//! least the key) into a proper changelog. It keeps the last row per key: the first row of a key
//! becomes +I, a changed row becomes -U(old) +U(new), an identical row is dropped, and a delete
//! becomes -D with the full last row; a delete of an unknown key is dropped.

use std::collections::HashMap;

use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::{ChangeBatch, Result, RowKind};

use super::state::{RowCodec, StateReader, StateWriter};
use super::Operator;

pub struct ChangelogNormalize {
    key: RowCodec,
    row: RowCodec,
    schema: SchemaRef,
    last: HashMap<Vec<u8>, Vec<u8>>,
}

impl ChangelogNormalize {
    pub fn new(schema: SchemaRef, key: &[usize]) -> Result<Self> {
        Ok(ChangelogNormalize {
            key: RowCodec::new(&schema, Some(key))?,
            row: RowCodec::new(&schema, None)?,
            schema,
            last: HashMap::new(),
        })
    }
}

impl Operator for ChangelogNormalize {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let keys = self.key.encode(batch.data.columns())?;
        let rows = self.row.encode(batch.data.columns())?;
        let mut emitted: Vec<(Vec<u8>, RowKind)> = Vec::new();
        for i in 0..batch.num_rows() {
            let k = keys.row(i);
            let kind = batch.kinds[i];
            if kind.is_accumulate() {
                let new = rows.row(i).as_ref().to_vec();
                match self.last.get_mut(k.as_ref()) {
                    Some(old) if *old == new => {}
                    Some(old) => {
                        let prev = std::mem::replace(old, new.clone());
                        emitted.push((prev, RowKind::UpdateBefore));
                        emitted.push((new, RowKind::UpdateAfter));
                    }
                    None => {
                        self.last.insert(k.as_ref().to_vec(), new.clone());
                        emitted.push((new, RowKind::Insert));
                    }
                }
            } else if kind == RowKind::Delete {
                if let Some(old) = self.last.remove(k.as_ref()) {
                    emitted.push((old, RowKind::Delete));
                }
            }
            // A lone -U carries no information an upsert stream needs: the +U that follows
            // replaces the row.
        }
        if emitted.is_empty() {
            return Ok(());
        }
        let cols = self.row.decode(emitted.iter().map(|(r, _)| r.as_slice()))?;
        let data = rsql_common::arrow::record_batch::RecordBatch::try_new(self.schema.clone(), cols)?;
        out.push(ChangeBatch::new(data, emitted.into_iter().map(|(_, k)| k).collect()));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.u64(self.last.len() as u64);
        for (k, v) in &self.last {
            w.bytes(k);
            w.bytes(v);
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        let n = r.u64()?;
        self.last.clear();
        for _ in 0..n {
            let k = r.bytes()?.to_vec();
            let v = r.bytes()?.to_vec();
            self.last.insert(k, v);
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.last.iter().map(|(k, v)| k.len() + v.len() + 48).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testutil::{batch, schema, show};

    #[test]
    fn upserts_become_a_changelog() {
        let s = schema(&["k", "v"], true);
        let mut n = ChangelogNormalize::new(s.clone(), &[0]).unwrap();
        let mut out = Vec::new();
        n.process(0, batch(&s, &[("+U", &[1, 10]), ("+U", &[1, 10]), ("+U", &[1, 11]), ("-D", &[1, 0]), ("-D", &[2, 0])]), &mut out).unwrap();
        assert_eq!(show(&out), vec!["+I[1, 10]", "-U[1, 10]", "+U[1, 11]", "-D[1, 11]"]);
    }
}
