//! The `'connector' = 'jdbc'` sink (Flink's JDBC connector, MySQL / MariaDB dialect): upserts by
//! primary key into a MySQL or MariaDB table, or plain inserts for append-only streams.
//!
//! This module owns the factory: the options Flink's JDBC connector accepts, their validation and
//! their parsing into a [`JdbcConfig`], including the conversion of `jdbc:mysql://host:port/db?...`
//! URLs. `schema` checks the target table against the declared columns, `values` converts Arrow
//! values into MySQL parameters, and `sink` buffers, batches and writes the changes.
//!
//! Only the MySQL protocol is spoken: `jdbc:mysql:` and `jdbc:mariadb:` URLs. Other JDBC URL
//! schemes are an error naming the `url` option.

pub mod lookup;
pub mod schema;
pub mod sink;
pub mod values;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec, Opts};
use rsql_common::types::LogicalType;
use rsql_common::{Result, RsqlError};
use rsql_runtime::{ChangelogMode, ConnectorFactory, ConnectorRegistry, LookupFunction, ProducedColumn, Sink, Source, SourceInfo};

pub use sink::JdbcSink;

/// Registers the `jdbc` connector.
pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(JdbcFactory));
}

/// Where a `jdbc:mysql://` URL points.
#[derive(Clone, Debug, PartialEq)]
pub struct MySqlUrl {
    pub host: String,
    pub port: u16,
    /// The database in the URL path, if any.
    pub database: Option<String>,
    /// Query parameters (`useSSL=false`, ...); accepted, and reported as unused.
    pub params: BTreeMap<String, String>,
}

/// Parses `jdbc:mysql://host[:port][/database][?k=v&...]` (also `jdbc:mariadb:`). Returns a
/// message for the `url` option on anything else.
pub fn parse_mysql_url(url: &str) -> std::result::Result<MySqlUrl, String> {
    let u = url.trim();
    let rest = if let Some(r) = strip_prefix_ci(u, "jdbc:mysql://") {
        r
    } else if let Some(r) = strip_prefix_ci(u, "jdbc:mariadb://") {
        r
    } else {
        let scheme = u.strip_prefix("jdbc:").and_then(|r| r.split(':').next()).filter(|s| !s.is_empty());
        return Err(match scheme {
            Some(s) => format!(
                "the JDBC URL scheme 'jdbc:{s}:' is not supported; rsql's jdbc connector speaks the MySQL protocol only: \
                 use 'jdbc:mysql://host:port/database' for MySQL, MariaDB (and StarRocks / Doris FEs)"
            ),
            None => "is not a JDBC URL; write it as 'jdbc:mysql://host:port/database'".to_string(),
        });
    };
    let (hostpart, after) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if hostpart.contains('@') {
        return Err("credentials in the URL are not supported; use the 'username' and 'password' options".into());
    }
    if hostpart.contains(',') {
        return Err("several hosts in one URL (failover / load balancing) are not supported; give one host".into());
    }
    let (host, port) = if let Some(r) = hostpart.strip_prefix('[') {
        // [ipv6]:port
        let end = r.find(']').ok_or("an IPv6 host needs a closing ']'")?;
        let host = &r[..end];
        let port = r[end + 1..].strip_prefix(':');
        (host.to_string(), port)
    } else {
        match hostpart.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostpart.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("has no host; write it as 'jdbc:mysql://host:port/database'".into());
    }
    let port = match port {
        None | Some("") => 3306,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("'{p}' is not a TCP port (1-65535)"))?,
    };
    let (path, query) = match after.split_once('?') {
        Some((p, q)) => (p, q),
        None => (after, ""),
    };
    let database = path.trim_start_matches('/').trim();
    let database = (!database.is_empty()).then(|| percent_decode(database));
    let mut params = BTreeMap::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        params.insert(percent_decode(k), percent_decode(v));
    }
    Ok(MySqlUrl { host, port, database, params })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Decodes `%XX` escapes of a URL part; a `%` not followed by two hex digits stays as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The lookup cache of a jdbc dimension table (Flink's `lookup.cache.*` options).
#[derive(Clone, Debug, PartialEq)]
pub struct LookupOptions {
    /// Rows kept in the cache; 0 = no cache.
    pub cache_max_rows: u64,
    /// How long a cached row stays valid.
    pub cache_ttl: Duration,
    /// Whether a key without rows is cached too.
    pub cache_missing_key: bool,
    pub max_retries: u32,
}

/// The parsed options of one jdbc table.
#[derive(Clone, Debug)]
pub struct JdbcConfig {
    /// The Flink table, for messages.
    pub flink_table: String,
    pub url: MySqlUrl,
    /// The MySQL database and table written.
    pub database: String,
    pub table: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Physical columns of the Flink table, in declaration order.
    pub columns: Vec<(String, LogicalType)>,
    /// Indices into `columns` of the primary key; empty for append-only tables.
    pub key: Vec<usize>,
    /// `sink.buffer-flush.max-rows`: buffered changes that trigger a write; 0 = only at flushes.
    pub buffer_max_rows: usize,
    /// `sink.buffer-flush.interval`: the oldest buffered change is written after this long; None = only at flushes.
    pub buffer_interval: Option<Duration>,
    /// `sink.max-retries`: retries of a failed write (transient errors only).
    pub max_retries: u32,
    /// `connection.max-retry-timeout`: how long a connection attempt may take.
    pub connect_timeout: Duration,
    pub lookup: LookupOptions,
}

impl JdbcConfig {
    pub fn from_table(table: &TableDef) -> Result<JdbcConfig> {
        let o = Opts::new(table);
        let url = parse_mysql_url(o.required("url")?).map_err(|m| o.error("url", m))?;
        let table_name = o.required("table-name")?.trim().to_string();
        let (database, target) = match table_name.split_once('.') {
            Some((db, t)) if !db.is_empty() && !t.is_empty() => (unquote(db), unquote(t)),
            _ => match &url.database {
                Some(db) => (db.clone(), unquote(&table_name)),
                None => {
                    return Err(o.error(
                        "table-name",
                        format!(
                            "'{table_name}' names no database and the 'url' has none; write the URL as 'jdbc:mysql://host:port/database' \
                             or the table as 'database.table'"
                        ),
                    ))
                }
            },
        };
        if target.is_empty() {
            return Err(o.error("table-name", "is empty"));
        }
        let non_negative = |key: &str, default: i64| -> Result<i64> {
            let v = o.int(key, default)?;
            if v < 0 {
                return Err(o.error(key, format!("{v} must not be negative")));
            }
            Ok(v)
        };
        let interval = o.duration("sink.buffer-flush.interval", Duration::from_secs(1))?;
        let columns: Vec<(String, LogicalType)> = table.physical_columns().map(|c| (c.name.clone(), c.ty.clone())).collect();
        let key = table.primary_key_indices().unwrap_or_default();
        let legacy_rows = o.opt_int("lookup.cache.max-rows")?;
        let partial = o.get("lookup.cache").map(|s| s.eq_ignore_ascii_case("partial")).unwrap_or(false);
        let cache_max_rows = if partial {
            o.opt_int("lookup.partial-cache.max-rows")?.or(legacy_rows).unwrap_or(0)
        } else {
            legacy_rows.unwrap_or(0)
        };
        if cache_max_rows < 0 {
            return Err(o.error("lookup.cache.max-rows", format!("{cache_max_rows} must not be negative")));
        }
        let ttl_key = if o.get("lookup.partial-cache.expire-after-write").is_some() {
            "lookup.partial-cache.expire-after-write"
        } else {
            "lookup.cache.ttl"
        };
        let missing_key = if o.get("lookup.partial-cache.cache-missing-key").is_some() {
            "lookup.partial-cache.cache-missing-key"
        } else {
            "lookup.cache.caching-missing-key"
        };
        Ok(JdbcConfig {
            flink_table: table.path.name.clone(),
            url,
            database,
            table: target,
            username: o.get("username").map(str::to_string),
            password: o.get("password").map(str::to_string),
            columns,
            key,
            buffer_max_rows: non_negative("sink.buffer-flush.max-rows", 100)? as usize,
            buffer_interval: (!interval.is_zero()).then_some(interval),
            max_retries: non_negative("sink.max-retries", 3)?.min(1000) as u32,
            connect_timeout: o.duration("connection.max-retry-timeout", Duration::from_secs(60))?.max(Duration::from_millis(100)),
            lookup: LookupOptions {
                cache_max_rows: cache_max_rows as u64,
                cache_ttl: o.duration(ttl_key, Duration::from_secs(0))?,
                cache_missing_key: o.bool(missing_key, true)?,
                max_retries: non_negative("lookup.max-retries", 3)?.min(1000) as u32,
            },
        })
    }

    /// `table 'flink_name' (jdbc db.table on host:port)`, for messages.
    pub fn context(&self) -> String {
        format!("table '{}' (jdbc {}.{} on {}:{})", self.flink_table, self.database, self.table, self.url.host, self.url.port)
    }

    /// Connection options for mysql_async.
    pub fn conn_opts(&self) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.url.host.clone())
            .tcp_port(self.url.port)
            .user(self.username.clone())
            .pass(self.password.clone())
            .db_name(Some(self.database.clone()))
            .prefer_socket(false)
            .tcp_nodelay(true)
            .stmt_cache_size(32)
            // DATETIME values are wall clocks; TIMESTAMP columns convert through the session's
            // zone, which is UTC (as TIMESTAMP_LTZ values are written and read).
            .init(vec!["SET time_zone = '+00:00'"])
    }

    pub fn is_upsert(&self) -> bool {
        !self.key.is_empty()
    }
}

/// `` `db` `` or `"db"` -> `db`.
fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['`', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// The factory registered as `'connector' = 'jdbc'`.
pub struct JdbcFactory;

const LOOKUP_CACHE: &[&str] = &["NONE", "PARTIAL"];

impl ConnectorFactory for JdbcFactory {
    fn name(&self) -> &'static str {
        "jdbc"
    }

    fn options(&self, _table: &TableDef) -> OptionSchema {
        use OptionKind::*;
        OptionSchema::new(vec![
            OptionSpec::required("url", String),
            OptionSpec::required("table-name", String),
            OptionSpec::optional("driver", String),
            OptionSpec::optional("username", String),
            OptionSpec::optional("password", String),
            OptionSpec::optional("connection.max-retry-timeout", Duration),
            OptionSpec::optional("sink.buffer-flush.max-rows", Int),
            OptionSpec::optional("sink.buffer-flush.interval", Duration),
            OptionSpec::optional("sink.max-retries", Int),
            OptionSpec::optional("sink.parallelism", Int),
            OptionSpec::optional("lookup.cache", Enum(LOOKUP_CACHE)),
            OptionSpec::optional("lookup.cache.max-rows", Int),
            OptionSpec::optional("lookup.cache.ttl", Duration),
            OptionSpec::optional("lookup.cache.caching-missing-key", Bool),
            OptionSpec::optional("lookup.partial-cache.max-rows", Int),
            OptionSpec::optional("lookup.partial-cache.expire-after-write", Duration),
            OptionSpec::optional("lookup.partial-cache.expire-after-access", Duration),
            OptionSpec::optional("lookup.partial-cache.cache-missing-key", Bool),
            OptionSpec::optional("lookup.max-retries", Int),
            OptionSpec::optional("scan.partition.column", String),
            OptionSpec::optional("scan.partition.num", Int),
            OptionSpec::optional("scan.partition.lower-bound", Int),
            OptionSpec::optional("scan.partition.upper-bound", Int),
            OptionSpec::optional("scan.fetch-size", Int),
            OptionSpec::optional("scan.auto-commit", Bool),
        ])
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        let cfg = JdbcConfig::from_table(table)?;
        for c in &table.columns {
            if c.metadata_key().is_some() {
                return Err(RsqlError::Options {
                    table: table.path.name.clone(),
                    message: format!("column '{}' reads metadata, which the jdbc connector does not provide", c.name),
                    location: Some(c.location),
                });
            }
        }
        for (name, ty) in &cfg.columns {
            if values::writable_type(&ty.ty).is_err() {
                let col = table.column(name);
                return Err(RsqlError::Options {
                    table: table.path.name.clone(),
                    message: format!(
                        "column '{name}' has type {ty}, which the jdbc connector cannot write to MySQL; \
                         declare it as STRING and write JSON text, or leave it out"
                    ),
                    location: col.map(|c| c.location).or(Some(table.location)),
                });
            }
        }
        if let Some(d) = table.option("driver") {
            let d = d.trim();
            if !d.is_empty() && !d.to_ascii_lowercase().contains("mysql") && !d.to_ascii_lowercase().contains("mariadb") {
                return Err(Opts::new(table).error(
                    "driver",
                    format!("'{d}' is not a MySQL or MariaDB driver; rsql speaks the MySQL protocol itself, so leave 'driver' out"),
                ));
            }
        }
        Ok(())
    }

    fn supports_source(&self) -> bool {
        false
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        Err(not_a_scan_source(table))
    }

    fn sink_accepts_updates(&self, table: &TableDef) -> bool {
        table.primary_key.as_ref().is_some_and(|k| !k.is_empty())
    }

    fn create_source(&self, table: &TableDef, _columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        Err(not_a_scan_source(table))
    }

    fn supports_lookup(&self) -> bool {
        true
    }

    fn create_lookup(&self, table: &TableDef, keys: &[String]) -> Result<Box<dyn LookupFunction>> {
        Ok(Box::new(lookup::JdbcLookup::new(JdbcConfig::from_table(table)?, keys)?))
    }

    fn create_sink(&self, table: &TableDef, input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        let cfg = JdbcConfig::from_table(table)?;
        if !cfg.is_upsert() && !input_mode.is_insert_only() {
            return Err(RsqlError::unsupported(format!(
                "table '{}': the jdbc sink needs a PRIMARY KEY to apply updates and deletes; declare PRIMARY KEY (...) NOT ENFORCED \
                 with the MySQL table's key columns",
                table.path.name
            )));
        }
        Ok(Box::new(JdbcSink::new(cfg)))
    }
}

fn not_a_scan_source(table: &TableDef) -> RsqlError {
    RsqlError::unsupported(format!(
        "table '{}': the jdbc connector writes tables and serves lookup joins (JOIN ... FOR SYSTEM_TIME AS OF); \
         reading a MySQL table as a scan source is not supported yet (capture it with the 'mysql-cdc' connector instead)",
        table.path.name
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue};
    use rsql_common::types::{FlinkType, MAX_LENGTH};
    use rsql_common::Location;

    pub(crate) fn table(name: &str, opts: &[(&str, &str)], pk: bool) -> TableDef {
        TableDef {
            path: ObjectPath::new("default_catalog", "default_database", name),
            columns: vec![
                ColumnDef::physical("order_id", LogicalType::not_null(FlinkType::Int)),
                ColumnDef::physical("order_region", LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
            ],
            primary_key: pk.then(|| vec!["order_id".to_string()]),
            watermark: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Location::new(3, 4) }))
                .collect(),
            comment: None,
            temporary: false,
            location: Location::new(1, 1),
        }
    }

    const BASE: &[(&str, &str)] =
        &[("connector", "jdbc"), ("url", "jdbc:mysql://127.0.0.1:13306/serving?useSSL=false"), ("table-name", "orders")];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn urls() {
        let u = parse_mysql_url("jdbc:mysql://db.example:3307/shop?useSSL=false&serverTimezone=UTC").unwrap();
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port, 3307);
        assert_eq!(u.database.as_deref(), Some("shop"));
        assert_eq!(u.params.get("serverTimezone").map(String::as_str), Some("UTC"));
        let u = parse_mysql_url("jdbc:mariadb://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.database), ("localhost", 3306, None));
        let u = parse_mysql_url("jdbc:mysql://[::1]:13306/d").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 13306));
        let e = parse_mysql_url("jdbc:postgresql://h:5432/d").unwrap_err();
        assert!(e.contains("'jdbc:postgresql:' is not supported"), "{e}");
        assert!(parse_mysql_url("mysql://h/d").unwrap_err().contains("not a JDBC URL"));
        assert!(parse_mysql_url("jdbc:mysql://h:99999/d").is_err());
        assert!(parse_mysql_url("jdbc:mysql://a:1,b:2/d").unwrap_err().contains("several hosts"));
        assert!(parse_mysql_url("jdbc:mysql://u:p@h/d").unwrap_err().contains("credentials"));
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
    }

    #[test]
    fn options_and_validation() {
        let f = JdbcFactory;
        let t = table("sink", BASE, true);
        f.options(&t).validate(&t).unwrap();
        f.validate(&t).unwrap();
        assert!(f.sink_accepts_updates(&t));
        assert!(!f.sink_accepts_updates(&table("sink", BASE, false)));
        assert!(!f.supports_source());
        let cfg = JdbcConfig::from_table(&t).unwrap();
        assert_eq!((cfg.database.as_str(), cfg.table.as_str()), ("serving", "orders"));
        assert_eq!(cfg.buffer_max_rows, 100);
        assert_eq!(cfg.buffer_interval, Some(Duration::from_secs(1)));
        assert_eq!(cfg.max_retries, 3);
        assert_eq!(cfg.key, vec![0]);

        let t = table("sink", &with(&[("sink.buffer-flush.interval", "0"), ("sink.buffer-flush.max-rows", "0")]), true);
        let cfg = JdbcConfig::from_table(&t).unwrap();
        assert_eq!((cfg.buffer_max_rows, cfg.buffer_interval), (0, None));

        let bad = table("sink", &[("connector", "jdbc"), ("url", "jdbc:oracle:thin:@h:1521:x"), ("table-name", "t")], true);
        let e = f.validate(&bad).unwrap_err().to_string();
        assert!(e.contains("option 'url'") && e.contains("jdbc:oracle:"), "{e}");

        let no_db = table("sink", &[("connector", "jdbc"), ("url", "jdbc:mysql://h:1"), ("table-name", "t")], true);
        assert!(f.validate(&no_db).unwrap_err().to_string().contains("names no database"));
        let qualified = table("sink", &[("connector", "jdbc"), ("url", "jdbc:mysql://h:1"), ("table-name", "shop.t")], true);
        let cfg = JdbcConfig::from_table(&qualified).unwrap();
        assert_eq!((cfg.database.as_str(), cfg.table.as_str()), ("shop", "t"));

        let e = f.options(&table("s", &with(&[("sink.max-retrys", "1")]), true)).validate(&table("s", &with(&[("sink.max-retrys", "1")]), true));
        assert!(e.unwrap_err().to_string().contains("did you mean 'sink.max-retries'"));
        let neg = table("sink", &with(&[("sink.max-retries", "-1")]), true);
        assert!(f.validate(&neg).unwrap_err().to_string().contains("sink.max-retries"));
        let drv = table("sink", &with(&[("driver", "org.postgresql.Driver")]), true);
        assert!(f.validate(&drv).unwrap_err().to_string().contains("'driver'"));
        f.validate(&table("sink", &with(&[("driver", "com.mysql.cj.jdbc.Driver")]), true)).unwrap();

        // An updating query into a table without a primary key is refused.
        let append = table("sink", BASE, false);
        assert!(f.create_sink(&append, &ChangelogMode::All).is_err());
    }

    #[test]
    fn lookup_options() {
        let t = table("dim", &with(&[("lookup.cache.max-rows", "1000"), ("lookup.cache.ttl", "10s"), ("lookup.max-retries", "1")]), true);
        let cfg = JdbcConfig::from_table(&t).unwrap();
        assert_eq!(
            cfg.lookup,
            LookupOptions { cache_max_rows: 1000, cache_ttl: Duration::from_secs(10), cache_missing_key: true, max_retries: 1 }
        );
        let t = table(
            "dim",
            &with(&[
                ("lookup.cache", "PARTIAL"),
                ("lookup.partial-cache.max-rows", "5"),
                ("lookup.partial-cache.expire-after-write", "1 min"),
                ("lookup.partial-cache.cache-missing-key", "false"),
            ]),
            true,
        );
        let cfg = JdbcConfig::from_table(&t).unwrap();
        assert_eq!((cfg.lookup.cache_max_rows, cfg.lookup.cache_ttl, cfg.lookup.cache_missing_key), (5, Duration::from_secs(60), false));
    }
}
