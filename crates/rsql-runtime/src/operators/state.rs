//! Keyed state helpers: rows and keys encoded with arrow's row format (compact, comparable, and
//! hashable as bytes), and a small length-prefixed encoding for snapshots.

use rsql_common::arrow::array::ArrayRef;
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::row::{RowConverter, Rows, SortField};
use rsql_common::{Result, RsqlError};

/// Encodes chosen columns of batches to row bytes and back.
pub struct RowCodec {
    converter: RowConverter,
    indices: Vec<usize>,
}

impl RowCodec {
    /// A codec over `indices` of `schema` (all columns when `indices` is None).
    pub fn new(schema: &SchemaRef, indices: Option<&[usize]>) -> Result<Self> {
        let indices: Vec<usize> = match indices {
            Some(i) => i.to_vec(),
            None => (0..schema.fields().len()).collect(),
        };
        let fields = indices.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect();
        Ok(RowCodec { converter: RowConverter::new(fields)?, indices })
    }

    /// Encodes the codec's columns of `columns` (the whole batch's columns).
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        let cols: Vec<ArrayRef> = self.indices.iter().map(|i| columns[*i].clone()).collect();
        Ok(self.converter.convert_columns(&cols)?)
    }

    /// Decodes row bytes produced by `encode` back into columns.
    pub fn decode<'a>(&self, rows: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let parsed: Vec<_> = rows.into_iter().map(|b| parser.parse(b)).collect();
        Ok(self.converter.convert_rows(parsed)?)
    }
}

/// Writes snapshot bytes.
#[derive(Default)]
pub struct StateWriter {
    pub buf: Vec<u8>,
}

impl StateWriter {
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
}

/// Reads snapshot bytes; truncated or corrupt input is an error, never a panic.
pub struct StateReader<'a> {
    buf: &'a [u8],
}

impl<'a> StateReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        StateReader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(RsqlError::execution("operator state snapshot is truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| RsqlError::execution("operator state snapshot is corrupt"))?;
        self.take(n)
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}
