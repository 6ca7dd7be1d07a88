//! The `'connector' = 'starrocks'` sink (flink-connector-starrocks' options): rows are buffered,
//! encoded as CSV or JSON, and loaded with StarRocks' Stream Load HTTP API, one load (one label)
//! per buffer.
//!
//! This module owns the factory: the options, their validation (with flink-connector-starrocks'
//! ranges, so a script valid here is valid there) and their parsing into a [`StarRocksConfig`].
//! `encode` turns rows into the load body, `client` speaks Stream Load (redirects, response
//! statuses, retries), `sink` buffers and labels the loads, and `endpoint` (tests only) stands in
//! for a StarRocks FE and BE.
//!
//! What is supported: `sink.semantic` = `at-least-once` (each buffer is one load under one label;
//! a retry of the buffer reuses its label, so StarRocks loads it at most once), CSV and JSON
//! bodies, the `__op` column for upserts and deletes on tables with a primary key, `http://` and
//! `https://` load URLs (TLS with rustls; the system's CA certificates are trusted, plus those of
//! the rsql-only option `rsql.tls.ca-file`), and `exactly-once`: StarRocks transactions prepared at
//! checkpoint barriers and committed once the checkpoint is complete (see `sink`). `jdbc-url` is required as in Flink and checked for its form, but not
//! used: columns come from the table's DDL, not from StarRocks' catalog.

pub mod client;
pub mod encode;
#[cfg(any(test, feature = "stream-load-endpoint"))]
pub mod endpoint;
pub mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec, Opts};
use rsql_common::types::LogicalType;
use rsql_common::{Result, RsqlError};
use rsql_runtime::{ChangelogMode, ConnectorFactory, ConnectorRegistry, ProducedColumn, Sink, Source, SourceInfo};

pub use sink::StarRocksSink;

/// Registers the `starrocks` connector.
pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(StarRocksFactory));
}

const MB: i64 = 1024 * 1024;
const SEMANTICS: &[&str] = &["at-least-once", "exactly-once"];
const FORMATS: &[&str] = &["csv", "json"];

/// The body format of the loads (`sink.properties.format`).
#[derive(Clone, Debug, PartialEq)]
pub enum LoadFormat {
    /// Fields separated by `column_separator` (default `\t`), each row ended by `row_delimiter`
    /// (default `\n`); NULL is `\N`.
    Csv { column_separator: Vec<u8>, row_delimiter: Vec<u8> },
    /// A JSON array of objects (`strip_outer_array` = `true`).
    Json,
}

/// The parsed options of one starrocks table.
#[derive(Clone, Debug)]
pub struct StarRocksConfig {
    /// The Flink table, for messages.
    pub flink_table: String,
    pub jdbc_url: String,
    /// `http://host:port` (or `https://`) of each FE (or BE) in `load-url`.
    pub load_urls: Vec<String>,
    /// `rsql.tls.ca-file`: a PEM file of CA certificates trusted for https besides the system's.
    pub ca_file: Option<String>,
    pub database: String,
    pub table: String,
    pub username: String,
    pub password: String,
    pub label_prefix: Option<String>,
    pub max_rows: usize,
    pub max_bytes: usize,
    pub flush_interval: Duration,
    pub max_retries: u32,
    pub retry_interval: Duration,
    pub connect_timeout: Duration,
    /// `sink.socket.timeout-ms`; None waits as long as the server takes.
    pub socket_timeout: Option<Duration>,
    pub format: LoadFormat,
    /// `sink.properties.*` with the prefix removed and keys in lower case: sent as headers.
    pub properties: BTreeMap<String, String>,
    /// `sink.ignore.update-before`: drop -U rows (true) or load them as deletes.
    pub ignore_update_before: bool,
    /// Physical columns of the Flink table.
    pub columns: Vec<(String, LogicalType)>,
    /// Whether the table has a primary key: loads then carry `__op` (0 upsert, 1 delete).
    pub upsert: bool,
    /// `sink.semantic` = `exactly-once`: one StarRocks transaction per checkpoint.
    pub exactly_once: bool,
    /// On restore, how many transactions after the restored checkpoint to roll back
    /// (`sink.exactly-once.check-num-lingering-txn`; 0 when
    /// `sink.exactly-once.enable-abort-lingering-txn` = false).
    pub lingering_txns: u64,
}

/// `\x01` -> byte 1, `\t`-style escapes as StarRocks reads them, anything else as written.
pub fn parse_delimiter(s: &str) -> std::result::Result<Vec<u8>, String> {
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        if hex.is_empty() || hex.len() % 2 != 0 {
            return Err(format!("'{s}' is not a hex delimiter such as '\\x01'"));
        }
        return (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| format!("'{s}' is not a hex delimiter such as '\\x01'")))
            .collect();
    }
    let out = match s {
        "\\t" => b"\t".to_vec(),
        "\\n" => b"\n".to_vec(),
        "\\r\\n" => b"\r\n".to_vec(),
        _ => s.as_bytes().to_vec(),
    };
    if out.is_empty() {
        return Err("a delimiter cannot be empty".into());
    }
    Ok(out)
}

/// `host:port`, `http://host:port` -> `http://host:port`; `https://host:port` stays https.
fn parse_load_url(u: &str) -> std::result::Result<String, String> {
    let u = u.trim().trim_end_matches('/');
    let (scheme, hostport) = match (u.get(..7), u.get(..8)) {
        (_, Some(p)) if p.eq_ignore_ascii_case("https://") => ("https", &u[8..]),
        (Some(p), _) if p.eq_ignore_ascii_case("http://") => ("http", &u[7..]),
        _ => ("http", u),
    };
    if hostport.contains('/') {
        return Err(format!("'{u}' has a path; give only 'host:http_port'"));
    }
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(format!("could not parse '{u}': it should follow the format 'host_name:port'"));
    };
    if host.is_empty() || port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
        return Err(format!("could not parse '{u}': it should follow the format 'host_name:port'"));
    }
    Ok(format!("{scheme}://{hostport}"))
}

fn valid_label_part(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl StarRocksConfig {
    pub fn from_table(table: &TableDef) -> Result<StarRocksConfig> {
        let o = Opts::new(table);
        let jdbc_url = o.required("jdbc-url")?.to_string();
        if !jdbc_url.trim().to_ascii_lowercase().starts_with("jdbc:mysql://") {
            return Err(o.error("jdbc-url", format!("'{jdbc_url}' should look like 'jdbc:mysql://fe_host:9030'")));
        }
        let mut load_urls = Vec::new();
        for u in o.required("load-url")?.split(';').filter(|s| !s.trim().is_empty()) {
            load_urls.push(parse_load_url(u).map_err(|m| o.error("load-url", m))?);
        }
        if load_urls.is_empty() {
            return Err(o.error("load-url", "names no host; write 'fe_host:8030' (several separated by ';')"));
        }
        let semantic = o.string("sink.semantic", "at-least-once").to_ascii_lowercase();
        let exactly_once = semantic == "exactly-once";
        let lingering = o.int("sink.exactly-once.check-num-lingering-txn", 3)?;
        if !(0..=1000).contains(&lingering) {
            return Err(o.error("sink.exactly-once.check-num-lingering-txn", format!("{lingering} is outside the supported range [0, 1000]")));
        }
        let abort_lingering = o.bool("sink.exactly-once.enable-abort-lingering-txn", true)?;
        let label_prefix = o.get("sink.label-prefix").map(str::to_string);
        if let Some(p) = &label_prefix {
            if !valid_label_part(p) || p.len() > 64 {
                return Err(o.error("sink.label-prefix", format!("'{p}' may hold only [-_A-Za-z0-9] and at most 64 characters")));
            }
        }
        let ranged = |key: &str, default: i64, lo: i64, hi: i64| -> Result<i64> {
            let v = o.int(key, default)?;
            if o.get(key).is_some() && !(lo..=hi).contains(&v) {
                return Err(o.error(key, format!("{v} is outside the supported range [{lo}, {hi}]")));
            }
            Ok(v)
        };
        let max_rows = ranged("sink.buffer-flush.max-rows", 500_000, 64_000, 5_000_000)?;
        let max_bytes = ranged("sink.buffer-flush.max-bytes", 90 * MB, 64 * MB, 10 * 1024 * MB)?;
        let interval = ranged("sink.buffer-flush.interval-ms", 300_000, 1000, 3_600_000)?;
        let max_retries = ranged("sink.max-retries", 3, 0, 1000)?;
        let retry_interval = o.int("sink.retry.interval-ms", 10_000)?.max(0);
        let connect_timeout = o.int("sink.connect.timeout-ms", 30_000)?.clamp(100, 60_000);
        let socket_timeout = o.int("sink.socket.timeout-ms", -1)?;
        let properties: BTreeMap<String, String> =
            o.with_prefix("sink.properties.").into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let format = match properties.get("format").map(|f| f.to_ascii_lowercase()).unwrap_or_else(|| "csv".into()) {
            f if f == "csv" => LoadFormat::Csv {
                column_separator: parse_delimiter(properties.get("column_separator").map(String::as_str).unwrap_or("\\t"))
                    .map_err(|m| o.error("sink.properties.column_separator", m))?,
                row_delimiter: parse_delimiter(properties.get("row_delimiter").map(String::as_str).unwrap_or("\\n"))
                    .map_err(|m| o.error("sink.properties.row_delimiter", m))?,
            },
            f if f == "json" => LoadFormat::Json,
            f => return Err(o.error("sink.properties.format", format!("'{f}' must be one of: {}", FORMATS.join(", ")))),
        };
        if let LoadFormat::Csv { column_separator, row_delimiter } = &format {
            if column_separator == row_delimiter {
                return Err(o.error("sink.properties.column_separator", "must differ from 'sink.properties.row_delimiter'"));
            }
        }
        let columns: Vec<(String, LogicalType)> = table.physical_columns().map(|c| (c.name.clone(), c.ty.clone())).collect();
        Ok(StarRocksConfig {
            flink_table: table.path.name.clone(),
            jdbc_url,
            load_urls,
            ca_file: o.get("rsql.tls.ca-file").map(str::to_string),
            database: o.required("database-name")?.to_string(),
            table: o.required("table-name")?.to_string(),
            username: o.required("username")?.to_string(),
            password: o.required("password")?.to_string(),
            label_prefix,
            max_rows: max_rows as usize,
            max_bytes: max_bytes as usize,
            flush_interval: Duration::from_millis(interval as u64),
            max_retries: max_retries as u32,
            retry_interval: Duration::from_millis(retry_interval as u64),
            connect_timeout: Duration::from_millis(connect_timeout as u64),
            socket_timeout: (socket_timeout > 0).then(|| Duration::from_millis(socket_timeout as u64)),
            format,
            properties,
            ignore_update_before: o.bool("sink.ignore.update-before", true)?,
            columns,
            upsert: table.primary_key.as_ref().is_some_and(|k| !k.is_empty()),
            exactly_once,
            lingering_txns: if abort_lingering { lingering as u64 } else { 0 },
        })
    }

    /// `table 'flink_name' (starrocks db.table)`, for messages.
    pub fn context(&self) -> String {
        format!("table '{}' (starrocks {}.{})", self.flink_table, self.database, self.table)
    }
}

/// The factory registered as `'connector' = 'starrocks'`.
pub struct StarRocksFactory;

impl ConnectorFactory for StarRocksFactory {
    fn name(&self) -> &'static str {
        "starrocks"
    }

    fn options(&self, _table: &TableDef) -> OptionSchema {
        use OptionKind::*;
        OptionSchema::new(vec![
            OptionSpec::required("jdbc-url", String),
            OptionSpec::required("load-url", String),
            OptionSpec::required("database-name", String),
            OptionSpec::required("table-name", String),
            OptionSpec::required("username", String),
            OptionSpec::required("password", String),
            OptionSpec::optional("sink.semantic", Enum(SEMANTICS)),
            OptionSpec::optional("sink.label-prefix", String),
            OptionSpec::optional("sink.buffer-flush.max-rows", Int),
            OptionSpec::optional("sink.buffer-flush.max-bytes", Int),
            OptionSpec::optional("sink.buffer-flush.interval-ms", Int),
            OptionSpec::optional("sink.max-retries", Int),
            OptionSpec::optional("sink.retry.interval-ms", Int),
            OptionSpec::optional("sink.connect.timeout-ms", Int),
            OptionSpec::optional("sink.socket.timeout-ms", Int),
            OptionSpec::optional("sink.ignore.update-before", Bool),
            // rsql only (flink-connector-starrocks has no such option).
            OptionSpec::optional("rsql.tls.ca-file", String),
            // Accepted for compatibility with flink-connector-starrocks; they tune its Java
            // threads and queues and have no effect here.
            OptionSpec::optional("sink.version", String),
            OptionSpec::optional("sink.wait-for-continue.timeout-ms", Int),
            OptionSpec::optional("sink.io.thread-count", Int),
            OptionSpec::optional("sink.chunk-limit", Int),
            OptionSpec::optional("sink.scan-frequency.ms", Int),
            OptionSpec::optional("sink.buffer-flush.enqueue-timeout-ms", Int),
            OptionSpec::optional("sink.metric.histogram-window-size", Int),
            OptionSpec::optional("sink.parallelism", Int),
            OptionSpec::optional("sink.at-least-once.use-transaction-stream-load", Bool),
            OptionSpec::optional("sink.use.new-sink-api", Bool),
            OptionSpec::optional("sink.wrap-json-as-array", Bool),
            OptionSpec::optional("sink.exactly-once.enable-label-gen", Bool),
            // Honoured: stale transactions rolled back when resuming from a checkpoint.
            OptionSpec::optional("sink.exactly-once.enable-abort-lingering-txn", Bool),
            OptionSpec::optional("sink.exactly-once.check-num-lingering-txn", Int),
        ])
        .with_prefixes(&["sink.properties."])
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        let cfg = StarRocksConfig::from_table(table)?;
        for c in &table.columns {
            if c.metadata_key().is_some() {
                return Err(RsqlError::Options {
                    table: table.path.name.clone(),
                    message: format!("column '{}' reads metadata, which the starrocks connector does not provide", c.name),
                    location: Some(c.location),
                });
            }
        }
        if cfg.upsert && cfg.columns.iter().any(|(n, _)| n.eq_ignore_ascii_case("__op")) {
            return Err(RsqlError::Options {
                table: table.path.name.clone(),
                message: "a column named '__op' clashes with the operation column the sink adds for tables with a primary key".into(),
                location: Some(table.location),
            });
        }
        Ok(())
    }

    fn supports_source(&self) -> bool {
        false
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        Err(not_a_source(table))
    }

    fn sink_accepts_updates(&self, table: &TableDef) -> bool {
        table.primary_key.as_ref().is_some_and(|k| !k.is_empty())
    }

    fn create_source(&self, table: &TableDef, _columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        Err(not_a_source(table))
    }

    fn create_sink(&self, table: &TableDef, input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        let cfg = StarRocksConfig::from_table(table)?;
        if !cfg.upsert && !input_mode.is_insert_only() {
            return Err(RsqlError::unsupported(format!(
                "table '{}': the starrocks sink needs a PRIMARY KEY (a StarRocks primary key table) to apply updates and deletes",
                table.path.name
            )));
        }
        Ok(Box::new(StarRocksSink::new(cfg)?))
    }
}

fn not_a_source(table: &TableDef) -> RsqlError {
    RsqlError::unsupported(format!(
        "table '{}': the starrocks connector is a sink here; reading StarRocks as a source is not supported",
        table.path.name
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue};
    use rsql_common::types::{FlinkType, MAX_LENGTH};
    use rsql_common::Location;

    pub(crate) fn table(opts: &[(&str, &str)], pk: bool) -> TableDef {
        TableDef {
            path: ObjectPath::new("default_catalog", "default_database", "sr_orders"),
            columns: vec![
                ColumnDef::physical("order_id", LogicalType::not_null(FlinkType::Int)),
                ColumnDef::physical("order_revenue", LogicalType::nullable(FlinkType::Float)),
                ColumnDef::physical("order_region", LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
            ],
            primary_key: pk.then(|| vec!["order_id".to_string()]),
            watermark: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Location::new(5, 3) }))
                .collect(),
            comment: None,
            temporary: false,
            location: Location::new(1, 1),
        }
    }

    pub(crate) const BASE: &[(&str, &str)] = &[
        ("connector", "starrocks"),
        ("jdbc-url", "jdbc:mysql://127.0.0.1:9030"),
        ("load-url", "127.0.0.1:8030"),
        ("database-name", "flink_cdc"),
        ("table-name", "orders"),
        ("username", "root"),
        ("password", ""),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        v
    }

    fn err(opts: &[(&str, &str)]) -> String {
        let t = table(opts, true);
        let f = StarRocksFactory;
        match f.options(&t).validate(&t).and_then(|_| f.validate(&t)) {
            Ok(()) => panic!("expected an error for {opts:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn options_like_flink() {
        let f = StarRocksFactory;
        let t = table(BASE, true);
        f.options(&t).validate(&t).unwrap();
        f.validate(&t).unwrap();
        let cfg = StarRocksConfig::from_table(&t).unwrap();
        assert_eq!(cfg.load_urls, vec!["http://127.0.0.1:8030"]);
        assert_eq!(cfg.format, LoadFormat::Csv { column_separator: b"\t".to_vec(), row_delimiter: b"\n".to_vec() });
        assert_eq!((cfg.max_rows, cfg.flush_interval, cfg.max_retries), (500_000, Duration::from_secs(300), 3));
        assert!(cfg.upsert && cfg.ignore_update_before);
        assert!(f.sink_accepts_updates(&t));
        assert!(!f.sink_accepts_updates(&table(BASE, false)));

        let cfg = StarRocksConfig::from_table(&table(
            &with(&[
                ("load-url", "fe1:8030;http://fe2:8030"),
                ("sink.properties.format", "json"),
                ("sink.properties.strip_outer_array", "true"),
                ("sink.label-prefix", "seed_dws"),
                ("sink.buffer-flush.interval-ms", "1000"),
            ]),
            true,
        ))
        .unwrap();
        assert_eq!(cfg.load_urls, vec!["http://fe1:8030", "http://fe2:8030"]);
        assert_eq!(cfg.format, LoadFormat::Json);
        assert_eq!(cfg.properties.get("strip_outer_array").map(String::as_str), Some("true"));

        let cfg = StarRocksConfig::from_table(&table(&with(&[("sink.semantic", "exactly-once")]), true)).unwrap();
        assert!(cfg.exactly_once && cfg.lingering_txns == 3);
        assert!(err(&with(&[("sink.exactly-once.check-num-lingering-txn", "-1")])).contains("[0, 1000]"));
        assert!(err(&with(&[("sink.semantic", "exactly")])).contains("at-least-once, exactly-once"));
        let cfg = StarRocksConfig::from_table(&table(&with(&[("load-url", "https://fe:8443;HTTP://fe2:8030")]), true)).unwrap();
        assert_eq!(cfg.load_urls, vec!["https://fe:8443", "http://fe2:8030"]);
        assert!(err(&with(&[("load-url", "fe")])).contains("host_name:port"));
        assert!(err(&with(&[("sink.buffer-flush.max-rows", "10")])).contains("[64000, 5000000]"));
        assert!(err(&with(&[("sink.buffer-flush.interval-ms", "10")])).contains("[1000, 3600000]"));
        assert!(err(&with(&[("sink.max-retries", "1001")])).contains("[0, 1000]"));
        assert!(err(&with(&[("sink.label-prefix", "a.b")])).contains("[-_A-Za-z0-9]"));
        assert!(err(&with(&[("sink.properties.format", "parquet")])).contains("csv, json"));
        assert!(err(&with(&[("jdbc-url", "jdbc:postgresql://h")])).contains("jdbc:mysql://"));
        assert!(err(&with(&[("sink.buffer-flush.max-row", "1")])).contains("did you mean 'sink.buffer-flush.max-rows'"));
        let missing: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != "load-url").collect();
        assert!(err(&missing).contains("'load-url'"));
        // Stream Load properties pass through.
        let t = table(&with(&[("sink.properties.max_filter_ratio", "0.1"), ("sink.properties.partial_update", "true")]), true);
        f.options(&t).validate(&t).unwrap();
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter("\\x01").unwrap(), vec![1]);
        assert_eq!(parse_delimiter("\\x0102").unwrap(), vec![1, 2]);
        assert_eq!(parse_delimiter("\\t").unwrap(), b"\t".to_vec());
        assert_eq!(parse_delimiter(",").unwrap(), b",".to_vec());
        assert_eq!(parse_delimiter("||").unwrap(), b"||".to_vec());
        assert!(parse_delimiter("\\x1").is_err());
        assert!(parse_delimiter("\\xzz").is_err());
        assert!(err(&with(&[("sink.properties.column_separator", "\\x0a")])).contains("must differ"));
    }
}
