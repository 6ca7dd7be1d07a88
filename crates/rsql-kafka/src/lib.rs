//! The `kafka` and `upsert-kafka` connectors over librdkafka (rdkafka with its bundled
//! librdkafka), with Flink's option names and semantics.
//!
//! * `kafka`: reads a topic list or pattern from a chosen start (`scan.startup.mode`), optionally
//!   up to a bound (`scan.bounded.mode`), and writes rows as messages; the key is optional
//!   (`key.format` + `key.fields`). Its changelog mode is that of its value format: insert-only
//!   for `json`/`csv`/`raw`, every row kind for `debezium-json`/`canal-json`/`maxwell-json`.
//! * `upsert-kafka`: a compacted-topic view of a table keyed by its primary key. The sink writes
//!   +I/+U as the row under its key, -D as a tombstone and drops -U; the source reads from the
//!   earliest offset and yields +U per value and -D per tombstone (ChangelogNormalize in the
//!   engine turns these upserts into a proper changelog).
//!
//! Module map: [`config`] resolves a table's options (formats, key and value fields, topics,
//! start and bound), [`source`] runs the consumer, [`sink`] the producer, [`rollback`] undoes a
//! failed run's upserts on resume, [`probe`] asks a broker which requests it supports.

pub mod config;
pub mod probe;
pub mod rollback;
pub mod sink;
pub mod source;

use std::sync::Arc;

use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::Result;
use rsql_connectors::formats;
use rsql_runtime::connector::{ChangelogMode, ConnectorFactory, ConnectorRegistry, ProducedColumn, Sink, Source, SourceInfo};

pub use config::KafkaTable;

/// Registers `kafka` and `upsert-kafka`.
pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(KafkaFactory));
    reg.register(Arc::new(UpsertKafkaFactory));
}

const STARTUP_MODES: &[&str] = &["earliest-offset", "latest-offset", "group-offsets", "timestamp", "specific-offsets"];
const BOUNDED_MODES: &[&str] = &["unbounded", "latest-offset", "group-offsets", "timestamp", "specific-offsets"];
const FIELDS_INCLUDE: &[&str] = &["ALL", "EXCEPT_KEY"];
const DELIVERY: &[&str] = &["none", "at-least-once", "exactly-once"];

fn common_specs() -> Vec<OptionSpec> {
    use OptionKind::*;
    vec![
        OptionSpec::optional("topic", String),
        OptionSpec::optional("key.format", String),
        OptionSpec::optional("value.format", String),
        OptionSpec::optional("key.fields-prefix", String),
        OptionSpec::optional("value.fields-include", Enum(FIELDS_INCLUDE)),
        OptionSpec::optional("scan.bounded.mode", Enum(BOUNDED_MODES)),
        OptionSpec::optional("scan.bounded.specific-offsets", String),
        OptionSpec::optional("scan.bounded.timestamp-millis", Int),
        OptionSpec::optional("scan.parallelism", Int),
        OptionSpec::optional("sink.parallelism", Int),
        OptionSpec::optional("sink.delivery-guarantee", Enum(DELIVERY)),
        OptionSpec::optional("sink.transactional-id-prefix", String),
    ]
}

fn add_format_specs(schema: &mut OptionSchema, table: &TableDef) {
    for (key, prefix) in [("format", ""), ("key.format", "key."), ("value.format", "value.")] {
        if let Some(f) = table.option(key) {
            if let Ok(specs) = formats::format_options(f, prefix) {
                schema.extend(specs);
            }
        }
    }
}

/// Metadata a kafka source can read, with Flink's types.
pub fn metadata_columns() -> Vec<(&'static str, LogicalType)> {
    vec![
        ("topic", LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH))),
        ("partition", LogicalType::not_null(FlinkType::Int)),
        (
            "headers",
            LogicalType::not_null(FlinkType::Map(
                Box::new(LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH))),
                Box::new(LogicalType::nullable(FlinkType::Varbinary(MAX_LENGTH))),
            )),
        ),
        ("leader-epoch", LogicalType::nullable(FlinkType::Int)),
        ("offset", LogicalType::not_null(FlinkType::BigInt)),
        ("timestamp", LogicalType::not_null(FlinkType::TimestampLtz(3))),
        ("timestamp-type", LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH))),
    ]
}

/// Metadata a kafka sink writes, with Flink's types: the record's timestamp (NULL: the producer
/// stamps it) and its headers.
pub fn writable_metadata_columns() -> Vec<(&'static str, LogicalType)> {
    vec![
        (
            "headers",
            LogicalType::nullable(FlinkType::Map(
                Box::new(LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH))),
                Box::new(LogicalType::nullable(FlinkType::Varbinary(MAX_LENGTH))),
            )),
        ),
        ("timestamp", LogicalType::nullable(FlinkType::TimestampLtz(3))),
    ]
}

/// The `kafka` connector.
pub struct KafkaFactory;

impl ConnectorFactory for KafkaFactory {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn options(&self, table: &TableDef) -> OptionSchema {
        use OptionKind::*;
        let mut specs = common_specs();
        specs.extend([
            OptionSpec::optional("topic-pattern", String),
            OptionSpec::optional("format", String),
            OptionSpec::optional("key.fields", String),
            OptionSpec::optional("scan.startup.mode", Enum(STARTUP_MODES)),
            OptionSpec::optional("scan.startup.specific-offsets", String),
            OptionSpec::optional("scan.startup.timestamp-millis", Int),
            OptionSpec::optional("scan.topic-partition-discovery.interval", Duration),
            OptionSpec::optional("sink.partitioner", String),
            OptionSpec::optional("sink.semantic", Enum(DELIVERY)),
        ]);
        let mut schema = OptionSchema::new(specs).with_prefixes(&["properties."]);
        add_format_specs(&mut schema, table);
        schema
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        KafkaTable::resolve(table, false).map(|_| ())
    }

    fn metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        metadata_columns()
    }

    fn writable_metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        writable_metadata_columns()
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        let t = KafkaTable::resolve(table, false)?;
        let changelog_mode =
            if formats::is_changelog_format(&t.value_format) { ChangelogMode::All } else { ChangelogMode::InsertOnly };
        Ok(SourceInfo { changelog_mode, bounded: t.bounded.is_some() })
    }

    fn sink_accepts_updates(&self, table: &TableDef) -> bool {
        KafkaTable::resolve(table, false).map(|t| formats::is_changelog_format(&t.value_format)).unwrap_or(false)
    }

    fn create_source(&self, table: &TableDef, columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        let t = KafkaTable::resolve(table, false)?;
        Ok(Box::new(source::KafkaSource::new(t, columns)?))
    }

    fn create_sink(&self, table: &TableDef, input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        let t = KafkaTable::resolve(table, false)?;
        Ok(Box::new(sink::KafkaSink::new(t, input_mode)?))
    }
}

/// The `upsert-kafka` connector.
pub struct UpsertKafkaFactory;

impl ConnectorFactory for UpsertKafkaFactory {
    fn name(&self) -> &'static str {
        "upsert-kafka"
    }

    fn options(&self, table: &TableDef) -> OptionSchema {
        use OptionKind::*;
        let mut specs = common_specs();
        specs.extend([
            OptionSpec::optional("sink.buffer-flush.max-rows", Int),
            OptionSpec::optional("sink.buffer-flush.interval", Duration),
        ]);
        let mut schema = OptionSchema::new(specs).with_prefixes(&["properties."]);
        add_format_specs(&mut schema, table);
        schema
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        KafkaTable::resolve(table, true).map(|_| ())
    }

    fn metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        metadata_columns()
    }

    fn writable_metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        writable_metadata_columns()
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        let t = KafkaTable::resolve(table, true)?;
        let key = table.primary_key.clone().unwrap_or_default();
        Ok(SourceInfo { changelog_mode: ChangelogMode::Upsert { key }, bounded: t.bounded.is_some() })
    }

    fn sink_accepts_updates(&self, _table: &TableDef) -> bool {
        true
    }

    fn create_source(&self, table: &TableDef, columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        let t = KafkaTable::resolve(table, true)?;
        Ok(Box::new(source::KafkaSource::new(t, columns)?))
    }

    fn create_sink(&self, table: &TableDef, input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        let t = KafkaTable::resolve(table, true)?;
        Ok(Box::new(sink::KafkaSink::new(t, input_mode)?))
    }
}

/// Forwards librdkafka's own log lines to tracing at the matching level, naming the table.
pub(crate) fn log_librdkafka(table: &str, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
    use rdkafka::config::RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => tracing::error!(table = %table, facility = fac, "librdkafka: {log_message}"),
        Warning => tracing::warn!(table = %table, facility = fac, "librdkafka: {log_message}"),
        Notice | Info => tracing::info!(table = %table, facility = fac, "librdkafka: {log_message}"),
        Debug => tracing::debug!(table = %table, facility = fac, "librdkafka: {log_message}"),
    }
}
