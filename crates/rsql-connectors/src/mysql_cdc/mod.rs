//! The `'connector' = 'mysql-cdc'` source (Flink CDC's MySQL connector): a consistent snapshot of
//! the captured tables followed by their binlog, as one changelog (+I, -U/+U, -D).
//!
//! This module owns the factory: the options Flink CDC accepts, their validation and their
//! parsing into a [`CdcConfig`]. `source` runs the reader (`snapshot_rows` converts snapshot
//! chunks into Arrow batches), `schema` reads table definitions,
//! `events` turns binlog events into transactions of row changes, `decode` maps values,
//! `mariadb_events` parses MariaDB's own binlog events and `position` holds binlog positions
//! and GTID sets.

pub(crate) mod chunks;
pub(crate) mod decode;
pub(crate) mod events;
#[cfg(test)]
mod fixture;
pub mod mariadb_events;
pub mod position;
pub(crate) mod rowimage;
pub mod schema;
pub(crate) mod snapshot_rows;
mod source;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec, Opts};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::{Result, RsqlError};
use rsql_runtime::{ChangelogMode, ConnectorFactory, ConnectorRegistry, ProducedColumn, Sink, Source, SourceInfo};

pub use position::BinlogPosition;
pub use source::{MySqlCdcSource, PositionHandle};

/// Registers the `mysql-cdc` connector.
pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(MySqlCdcFactory));
}

const STARTUP_MODES: &[&str] =
    &["initial", "snapshot", "latest-offset", "earliest-offset", "specific-offset", "timestamp"];

/// Where the source starts reading.
#[derive(Clone, Debug, PartialEq)]
pub enum StartupMode {
    /// Snapshot, then the binlog from the snapshot's position.
    Initial,
    /// Snapshot only; the source then ends.
    Snapshot,
    /// The binlog from its current end.
    LatestOffset,
    /// The binlog from the oldest file the server still has.
    EarliestOffset,
    /// The binlog from a file and offset, or (MariaDB) from a GTID position.
    SpecificOffset { file: Option<String>, pos: u64, gtid_set: Option<String> },
    /// The binlog from the oldest file, skipping transactions committed before this time (ms).
    Timestamp(i64),
}

/// The parsed options of one mysql-cdc table.
#[derive(Clone, Debug)]
pub struct CdcConfig {
    /// The Flink table, for messages.
    pub table_name: String,
    pub hostname: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub database_name: String,
    pub table_name_pattern: String,
    /// First id of the `server-id` option (one id or a range `5400-5404`); random when unset.
    pub server_id: Option<u32>,
    pub server_time_zone: Option<String>,
    pub startup: StartupMode,
    pub chunk_size: usize,
    pub fetch_size: usize,
    pub connect_timeout: Duration,
    pub connect_max_retries: u32,
    pub heartbeat_interval: Duration,
    /// `jdbc.properties.*`; accepted for compatibility, not used by this driver.
    pub jdbc_properties: BTreeMap<String, String>,
    pub incremental_snapshot: bool,
}

impl CdcConfig {
    pub fn from_table(table: &TableDef) -> Result<CdcConfig> {
        let o = Opts::new(table);
        let port = o.int("port", 3306)?;
        let port = u16::try_from(port).map_err(|_| o.error("port", format!("{port} is not a TCP port (1-65535)")))?;
        let server_id = match o.get("server-id") {
            None => None,
            Some(v) => Some(parse_server_id(v).ok_or_else(|| {
                o.error("server-id", format!("'{v}' is not a server id or range such as '5400' or '5400-5408'"))
            })?),
        };
        let mode = o.string("scan.startup.mode", "initial").to_ascii_lowercase();
        let startup = match mode.as_str() {
            "initial" => StartupMode::Initial,
            "snapshot" => StartupMode::Snapshot,
            "latest-offset" => StartupMode::LatestOffset,
            "earliest-offset" => StartupMode::EarliestOffset,
            "specific-offset" => {
                let file = o.get("scan.startup.specific-offset.file").map(str::to_string);
                let gtid_set = o.get("scan.startup.specific-offset.gtid-set").map(str::to_string);
                let pos = o.int("scan.startup.specific-offset.pos", 4)?;
                if file.is_none() && gtid_set.is_none() {
                    return Err(o.error(
                        "scan.startup.mode",
                        "'specific-offset' needs 'scan.startup.specific-offset.file' (and '.pos') or 'scan.startup.specific-offset.gtid-set'",
                    ));
                }
                StartupMode::SpecificOffset { file, pos: pos.max(4) as u64, gtid_set }
            }
            "timestamp" => match o.opt_int("scan.startup.timestamp-millis")? {
                Some(ms) => StartupMode::Timestamp(ms),
                None => return Err(o.error("scan.startup.mode", "'timestamp' needs 'scan.startup.timestamp-millis'")),
            },
            other => {
                return Err(
                    o.error("scan.startup.mode", format!("'{other}' is not one of {}", STARTUP_MODES.join(", ")))
                )
            }
        };
        let positive = |key: &str, default: i64| -> Result<usize> {
            let v = o.int(key, default)?;
            if v <= 0 {
                return Err(o.error(key, format!("{v} must be greater than 0")));
            }
            Ok(v as usize)
        };
        Ok(CdcConfig {
            table_name: table.path.name.clone(),
            hostname: o.required("hostname")?.to_string(),
            port,
            username: o.required("username")?.to_string(),
            password: o.required("password")?.to_string(),
            database_name: o.required("database-name")?.to_string(),
            table_name_pattern: o.required("table-name")?.to_string(),
            server_id,
            server_time_zone: o.get("server-time-zone").map(str::to_string),
            startup,
            chunk_size: positive("scan.incremental.snapshot.chunk.size", 8096)?,
            fetch_size: positive("scan.snapshot.fetch.size", 1024)?,
            connect_timeout: o.duration("connect.timeout", Duration::from_secs(30))?,
            connect_max_retries: o.int("connect.max-retries", 3)?.clamp(0, 1_000) as u32,
            heartbeat_interval: o.duration("heartbeat.interval", Duration::from_secs(30))?,
            jdbc_properties: o.with_prefix("jdbc.properties."),
            incremental_snapshot: o.bool("scan.incremental.snapshot.enabled", true)?,
        })
    }
}

/// `5400` or `5400-5408` -> the first id.
fn parse_server_id(v: &str) -> Option<u32> {
    let v = v.trim();
    let (a, b) = match v.split_once('-') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (v, None),
    };
    let first: u32 = a.parse().ok()?;
    if let Some(b) = b {
        let last: u32 = b.parse().ok()?;
        if last < first {
            return None;
        }
    }
    (first > 0).then_some(first)
}

pub struct MySqlCdcFactory;

fn metadata_type(key: &str) -> Option<LogicalType> {
    Some(match key {
        "database_name" | "table_name" | "row_kind" => LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH)),
        "op_ts" => LogicalType::not_null(FlinkType::TimestampLtz(3)),
        _ => return None,
    })
}

impl ConnectorFactory for MySqlCdcFactory {
    fn name(&self) -> &'static str {
        "mysql-cdc"
    }

    fn options(&self, _table: &TableDef) -> OptionSchema {
        use OptionKind::*;
        OptionSchema::new(vec![
            OptionSpec::required("hostname", String),
            OptionSpec::optional("port", Int),
            OptionSpec::required("username", String),
            OptionSpec::required("password", String),
            OptionSpec::required("database-name", String),
            OptionSpec::required("table-name", String),
            OptionSpec::optional("server-id", String),
            OptionSpec::optional("server-time-zone", String),
            OptionSpec::optional("scan.startup.mode", Enum(STARTUP_MODES)),
            OptionSpec::optional("scan.startup.specific-offset.file", String),
            OptionSpec::optional("scan.startup.specific-offset.pos", Int),
            OptionSpec::optional("scan.startup.specific-offset.gtid-set", String),
            OptionSpec::optional("scan.startup.timestamp-millis", Int),
            OptionSpec::optional("scan.incremental.snapshot.enabled", Bool),
            OptionSpec::optional("scan.incremental.snapshot.chunk.size", Int),
            OptionSpec::optional("scan.snapshot.fetch.size", Int),
            OptionSpec::optional("connect.timeout", Duration),
            OptionSpec::optional("connect.max-retries", Int),
            OptionSpec::optional("connection.pool.size", Int),
            OptionSpec::optional("heartbeat.interval", Duration),
        ])
        .with_prefixes(&["jdbc.properties.", "debezium."])
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        let cfg = CdcConfig::from_table(table)?;
        let needs_key = matches!(cfg.startup, StartupMode::Initial | StartupMode::Snapshot);
        if needs_key && table.primary_key.as_ref().is_none_or(|k| k.is_empty()) {
            return Err(RsqlError::Options {
                table: table.path.name.clone(),
                message: "a mysql-cdc table read with a snapshot needs a primary key (the incremental snapshot splits \
                          and merges rows by it); add PRIMARY KEY (...) NOT ENFORCED with the MySQL table's key columns, \
                          or set 'scan.startup.mode' = 'latest-offset'"
                    .into(),
                location: Some(table.location),
            });
        }
        for c in &table.columns {
            if let Some(key) = c.metadata_key() {
                if metadata_type(key).is_none() {
                    return Err(RsqlError::Options {
                        table: table.path.name.clone(),
                        message: format!(
                            "column '{}' reads metadata '{}', which mysql-cdc does not provide; available: database_name, table_name, op_ts, row_kind",
                            c.name, key
                        ),
                        location: Some(c.location),
                    });
                }
            }
        }
        Ok(())
    }

    fn metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        ["database_name", "table_name", "op_ts", "row_kind"]
            .into_iter()
            .filter_map(|k| metadata_type(k).map(|t| (k, t)))
            .collect()
    }

    fn supports_sink(&self) -> bool {
        false
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        let cfg = CdcConfig::from_table(table)?;
        Ok(SourceInfo { changelog_mode: ChangelogMode::All, bounded: cfg.startup == StartupMode::Snapshot })
    }

    fn create_source(&self, table: &TableDef, columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        let cfg = CdcConfig::from_table(table)?;
        for c in columns {
            if let ProducedColumn::Metadata { key, name, .. } = c {
                if metadata_type(key).is_none() {
                    return Err(RsqlError::unsupported(format!(
                        "table '{}': column '{name}' reads unknown metadata '{key}'",
                        table.path.name
                    )));
                }
            }
        }
        Ok(Box::new(MySqlCdcSource::new(cfg, columns.to_vec())))
    }

    fn create_sink(&self, table: &TableDef, _input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        Err(RsqlError::unsupported(format!(
            "table '{}': the mysql-cdc connector only reads; write to MySQL with the 'jdbc' connector",
            table.path.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue};
    use rsql_common::Location;

    pub(crate) fn table(opts: &[(&str, &str)], pk: bool) -> TableDef {
        TableDef {
            path: ObjectPath::new("default_catalog", "default_database", "orders"),
            columns: vec![
                ColumnDef::physical("order_id", LogicalType::not_null(FlinkType::Int)),
                ColumnDef::physical("order_region", LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
            ],
            primary_key: pk.then(|| vec!["order_id".to_string()]),
            watermark: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Location::default() }))
                .collect(),
            comment: None,
            temporary: false,
            location: Location::default(),
        }
    }

    const BASE: &[(&str, &str)] = &[
        ("connector", "mysql-cdc"),
        ("hostname", "127.0.0.1"),
        ("port", "3306"),
        ("username", "u"),
        ("password", "p"),
        ("database-name", "flink_cdc"),
        ("table-name", "orders"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn options_and_validation() {
        let f = MySqlCdcFactory;
        let t = table(BASE, true);
        f.options(&t).validate(&t).unwrap();
        f.validate(&t).unwrap();
        let info = f.source_info(&t).unwrap();
        assert_eq!(info.changelog_mode, ChangelogMode::All);
        assert!(!info.bounded);
        assert!(!f.supports_sink());

        let bad = table(&with(&[("hostnme", "x")]), true);
        let e = f.options(&bad).validate(&bad).unwrap_err().to_string();
        assert!(e.contains("did you mean 'hostname'"), "{e}");

        let missing: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != "password").collect();
        let t = table(&missing, true);
        assert!(f.options(&t).validate(&t).unwrap_err().to_string().contains("'password'"));

        let no_pk = table(BASE, false);
        assert!(f.validate(&no_pk).unwrap_err().to_string().contains("primary key"));
        f.validate(&table(&with(&[("scan.startup.mode", "latest-offset")]), false)).unwrap();

        let jdbc = table(&with(&[("jdbc.properties.useSSL", "false")]), true);
        f.options(&jdbc).validate(&jdbc).unwrap();
    }

    #[test]
    fn startup_modes() {
        let f = MySqlCdcFactory;
        let snap = table(&with(&[("scan.startup.mode", "snapshot")]), true);
        assert!(f.source_info(&snap).unwrap().bounded);
        let t = table(
            &with(&[
                ("scan.startup.mode", "specific-offset"),
                ("scan.startup.specific-offset.file", "binlog.000002"),
                ("scan.startup.specific-offset.pos", "1234"),
            ]),
            true,
        );
        assert_eq!(
            CdcConfig::from_table(&t).unwrap().startup,
            StartupMode::SpecificOffset { file: Some("binlog.000002".into()), pos: 1234, gtid_set: None }
        );
        let t = table(&with(&[("scan.startup.mode", "specific-offset")]), true);
        assert!(CdcConfig::from_table(&t).is_err());
        let t = table(&with(&[("scan.startup.mode", "timestamp")]), true);
        assert!(CdcConfig::from_table(&t).unwrap_err().to_string().contains("timestamp-millis"));
        let t = table(
            &with(&[("scan.startup.mode", "timestamp"), ("scan.startup.timestamp-millis", "1700000000000")]),
            true,
        );
        assert_eq!(CdcConfig::from_table(&t).unwrap().startup, StartupMode::Timestamp(1_700_000_000_000));
    }

    #[test]
    fn heartbeat_interval() {
        assert_eq!(CdcConfig::from_table(&table(BASE, true)).unwrap().heartbeat_interval, Duration::from_secs(30));
        let t = table(&with(&[("heartbeat.interval", "5s")]), true);
        assert_eq!(CdcConfig::from_table(&t).unwrap().heartbeat_interval, Duration::from_secs(5));
        let off = table(&with(&[("heartbeat.interval", "0")]), true);
        assert!(CdcConfig::from_table(&off).unwrap().heartbeat_interval.is_zero());
        let bad = table(&with(&[("heartbeat.interval", "often")]), true);
        assert!(CdcConfig::from_table(&bad).unwrap_err().to_string().contains("heartbeat.interval"));
    }

    #[test]
    fn server_ids() {
        assert_eq!(parse_server_id("5400"), Some(5400));
        assert_eq!(parse_server_id("5400-5408"), Some(5400));
        assert_eq!(parse_server_id("5408-5400"), None);
        assert_eq!(parse_server_id("0"), None);
        assert_eq!(parse_server_id("x"), None);
        let t = table(&with(&[("server-id", "abc")]), true);
        assert!(CdcConfig::from_table(&t).unwrap_err().to_string().contains("server-id"));
        let t = table(&with(&[("port", "70000")]), true);
        assert!(CdcConfig::from_table(&t).is_err());
    }
}
