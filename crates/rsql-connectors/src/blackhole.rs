//! The `blackhole` connector: a sink that accepts every change (inserts and updates) and
//! discards it, counting rows. Like Flink's, it takes no options besides `connector`. The count
//! is kept in a shared counter (`BlackholeSink::counter`) and logged when the sink closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rsql_common::catalog::TableDef;
use rsql_common::options::OptionSchema;
use rsql_common::{ChangeBatch, Result};
use rsql_runtime::{ChangelogMode, ConnectorFactory, ConnectorRegistry, ProducedColumn, Sink, Source, SourceInfo};

use crate::print::write_only;

pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(BlackholeFactory));
}

/// The factory registered as `'connector' = 'blackhole'`.
pub struct BlackholeFactory;

impl ConnectorFactory for BlackholeFactory {
    fn name(&self) -> &'static str {
        "blackhole"
    }

    fn options(&self, _table: &TableDef) -> OptionSchema {
        OptionSchema::default()
    }

    fn supports_source(&self) -> bool {
        false
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        Err(write_only(table, "blackhole"))
    }

    fn create_source(&self, table: &TableDef, _columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        Err(write_only(table, "blackhole"))
    }

    fn create_sink(&self, table: &TableDef, _input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        Ok(Box::new(BlackholeSink::new(&table.path.name)))
    }
}

/// Discards rows; counts them.
pub struct BlackholeSink {
    table: String,
    rows: Arc<AtomicU64>,
}

impl BlackholeSink {
    pub fn new(table: &str) -> Self {
        BlackholeSink { table: table.to_string(), rows: Arc::new(AtomicU64::new(0)) }
    }

    /// The shared count of rows discarded so far.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.rows.clone()
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        self.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        tracing::debug!(table = %self.table, rows = self.rows(), "blackhole sink discarded rows");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::arrow::array::{ArrayRef, Int32Array};
    use rsql_common::arrow::datatypes::{DataType, Field, Schema};
    use rsql_common::arrow::record_batch::RecordBatch;
    use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue};
    use rsql_common::error::Location;
    use rsql_common::types::{FlinkType, LogicalType};
    use rsql_common::RowKind;
    use std::collections::BTreeMap;

    fn table(extra: Option<(&str, &str)>) -> TableDef {
        let mut options = BTreeMap::new();
        options.insert("connector".to_string(), OptionValue { value: "blackhole".into(), location: Location::new(1, 1) });
        if let Some((k, v)) = extra {
            options.insert(k.to_string(), OptionValue { value: v.to_string(), location: Location::new(2, 1) });
        }
        TableDef {
            path: ObjectPath::new("c", "d", "sink"),
            columns: vec![ColumnDef::physical("a", LogicalType::nullable(FlinkType::Int))],
            primary_key: None,
            watermark: None,
            options,
            comment: None,
            temporary: false,
            location: Location::new(1, 1),
        }
    }

    #[tokio::test]
    async fn counts_and_discards_every_kind() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let data = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef]).unwrap();
        let mut sink = BlackholeSink::new("sink");
        let counter = sink.counter();
        sink.write(ChangeBatch::inserts(data.clone())).await.unwrap();
        sink.write(ChangeBatch::new(data, vec![RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::Delete])).await.unwrap();
        sink.flush().await.unwrap();
        sink.close().await.unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn options_and_directions() {
        let mut reg = ConnectorRegistry::new();
        register(&mut reg);
        let f = reg.validate(&table(None)).unwrap();
        assert!(!f.supports_source());
        assert!(f.supports_sink());
        assert!(f.sink_accepts_updates(&table(None)));
        assert!(f.create_sink(&table(None), &ChangelogMode::All).is_ok());
        assert!(f.source_info(&table(None)).is_err());
        assert!(reg.validate(&table(Some(("path", "/tmp/x")))).is_err());
    }
}
