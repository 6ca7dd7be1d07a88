//! The running mysql-cdc source: server checks, the chunked lock-free snapshot reconciled with
//! the binlog, and the binlog stream with reconnection.
//!
//! Snapshot (Flink CDC's incremental snapshot, run by one reader): tables are read one after
//! the other, each in chunks of its primary key (`WHERE key > last ORDER BY key LIMIT n`, for
//! any key; `chunks` orders keys as the server does). For each chunk the reader records the
//! binlog end (low watermark), reads the chunk, records the end again (high watermark), then
//! reads the binlog up to the high watermark: changes to keys of the chunk are merged into the
//! chunk's rows, changes to keys already emitted are emitted, changes to keys not read yet are
//! dropped (their chunk's SELECT will see them). The chunk is then emitted as +I. When the last
//! chunk is done, the same binlog stream simply goes on: no gap and no duplicate. Chunks are
//! read ahead (with their watermarks) on a second connection by a task of their own, over the
//! binary protocol and converted as they arrive (`snapshot_rows`, straight into Arrow columns),
//! while the previous chunk is reconciled and emitted.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, GnoInterval, OptsBuilder, Row, Sid};
use rsql_common::builder::{Datum, RowsBuilder};
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::{Phase, ProducedColumn, Source, SourceContext, SourceStatus};
use tracing::{debug, info, warn};

use super::chunks::{self, SortKey};
use super::decode::to_declared_of;
use super::events::{BinlogDecoder, Step};
use super::position::{BinlogPosition, GtidTracker, MySqlGtidSet};
use super::schema::{self, quote_ident, row_str, Family, TableSchema};
use super::snapshot_rows::{ChunkDecoder, ChunkRows};
use super::{CdcConfig, StartupMode};

/// Shared view of the source's position: the binlog position after the last transaction whose
/// rows have been handed downstream (None before the first one is known).
pub type PositionHandle = Arc<Mutex<Option<BinlogPosition>>>;

/// The mysql-cdc source of one table.
pub struct MySqlCdcSource {
    cfg: Arc<CdcConfig>,
    columns: Vec<ProducedColumn>,
    position: PositionHandle,
    resume: Option<Resume>,
    status: Arc<SourceStatus>,
}

/// Where a restarted source picks up: the binlog position after the last transaction handed
/// downstream and, while the snapshot was still running, how far it had got.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Resume {
    pub binlog: BinlogPosition,
    /// None once the snapshot is complete (or when there is none).
    pub snapshot: Option<SnapshotProgress>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SnapshotProgress {
    /// `db.table` of the table being read; tables before it (in capture order) are done.
    pub table: String,
    /// Keys up to here (inclusive, natural values of the key columns) of that table are done;
    /// None when the table has not begun.
    pub done_upto: Option<Vec<Datum>>,
}

/// A saved key value: `{"i": -5}`, `{"u": "18446744073709551615"}`, `{"s": "text"}`,
/// `{"b": "00ff"}`, `{"dec": ["1234", 2]}`, `{"date": 19000}`, `{"ts": micros}`, `{"time": micros}`,
/// `{"f": 1.5}` or null.
fn key_to_json(d: &Datum) -> serde_json::Value {
    use serde_json::json;
    match d {
        Datum::Null => serde_json::Value::Null,
        Datum::Bool(b) => json!({ "i": *b as i64 }),
        Datum::Int(i) => json!({ "i": i }),
        Datum::UInt(u) => json!({ "u": u.to_string() }),
        Datum::Float(f) => json!({ "f": f }),
        Datum::Decimal(v, s) => json!({ "dec": [v.to_string(), s] }),
        Datum::Str(s) => json!({ "s": s }),
        Datum::Bytes(b) => json!({ "b": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        Datum::Date(d) => json!({ "date": d }),
        Datum::Time(t) => json!({ "time": t }),
        Datum::Timestamp(t) => json!({ "ts": t }),
        // MySQL key columns are never ARRAY, MAP or ROW.
        Datum::Nested(_) => serde_json::Value::Null,
    }
}

fn key_from_json(v: &serde_json::Value) -> Option<Datum> {
    if v.is_null() {
        return Some(Datum::Null);
    }
    let (k, x) = v.as_object()?.iter().next()?;
    Some(match k.as_str() {
        "i" => Datum::Int(x.as_i64()?),
        "u" => Datum::UInt(x.as_str()?.parse().ok()?),
        "f" => Datum::Float(x.as_f64()?),
        "dec" => Datum::Decimal(x.get(0)?.as_str()?.parse().ok()?, x.get(1)?.as_i64()? as i8),
        "s" => Datum::Str(x.as_str()?.to_string()),
        "b" => {
            let h = x.as_str()?;
            let mut out = Vec::with_capacity(h.len() / 2);
            for i in (0..h.len()).step_by(2) {
                out.push(u8::from_str_radix(h.get(i..i + 2)?, 16).ok()?);
            }
            Datum::Bytes(out)
        }
        "date" => Datum::Date(x.as_i64()? as i32),
        "time" => Datum::Time(x.as_i64()?),
        "ts" => Datum::Timestamp(x.as_i64()?),
        _ => return None,
    })
}

impl Resume {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // A single integer key keeps the first format (`done_upto` as a decimal string); other
        // keys are saved as `done_key`, a list of typed values.
        let snap = self.snapshot.as_ref().map(|s| match s.done_upto.as_deref() {
            None => serde_json::json!({ "table": s.table, "done_upto": null }),
            Some([Datum::Int(i)]) => serde_json::json!({ "table": s.table, "done_upto": i.to_string() }),
            Some([Datum::UInt(u)]) => serde_json::json!({ "table": s.table, "done_upto": u.to_string() }),
            Some(key) => serde_json::json!({
                "table": s.table,
                "done_key": key.iter().map(key_to_json).collect::<Vec<_>>(),
            }),
        });
        serde_json::json!({ "binlog": self.binlog.to_string(), "snapshot": snap }).to_string().into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Resume, String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let binlog = v.get("binlog").and_then(|b| b.as_str()).ok_or("no binlog position")?;
        let binlog = BinlogPosition::parse(binlog).map_err(|e| e.to_string())?;
        let snapshot = match v.get("snapshot") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(SnapshotProgress {
                table: s.get("table").and_then(|t| t.as_str()).ok_or("no snapshot table")?.to_string(),
                done_upto: match (s.get("done_upto"), s.get("done_key")) {
                    (_, Some(serde_json::Value::Array(parts))) => Some(
                        parts.iter().map(key_from_json).collect::<Option<Vec<_>>>().ok_or("bad snapshot key")?,
                    ),
                    (None | Some(serde_json::Value::Null), _) => None,
                    (Some(d), _) => {
                        let t = d.as_str().ok_or("bad snapshot key")?;
                        let v = match t.parse::<i64>() {
                            Ok(i) => Datum::Int(i),
                            Err(_) => Datum::UInt(t.parse::<u64>().map_err(|_| "bad snapshot key")?),
                        };
                        Some(vec![v])
                    }
                },
            }),
        };
        Ok(Resume { binlog, snapshot })
    }
}

impl MySqlCdcSource {
    pub fn new(cfg: CdcConfig, columns: Vec<ProducedColumn>) -> Self {
        MySqlCdcSource {
            cfg: Arc::new(cfg),
            columns,
            position: Arc::new(Mutex::new(None)),
            resume: None,
            status: Arc::new(SourceStatus::default()),
        }
    }

    /// A handle that keeps showing the current position while the source runs.
    pub fn position_handle(&self) -> PositionHandle {
        self.position.clone()
    }
}

#[async_trait]
impl Source for MySqlCdcSource {
    async fn run(&mut self, mut ctx: SourceContext) -> Result<()> {
        let mut job = Job::start(
            self.cfg.clone(),
            &self.columns,
            self.position.clone(),
            self.resume.take(),
            self.status.clone(),
            &ctx,
        )
        .await?;
        job.run(&mut ctx).await
    }

    /// Snapshot progress (rows read of information_schema's estimate, rows/s), then the binlog
    /// phase with the lag behind the server in seconds.
    fn status(&self) -> Option<Arc<SourceStatus>> {
        Some(self.status.clone())
    }

    fn checkpointable(&self) -> bool {
        true
    }

    /// Resumes after the last transaction handed downstream; a snapshot that was running goes
    /// on with the chunk after the last complete one.
    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let r = Resume::decode(position).map_err(|e| {
            RsqlError::connector(ctx_name(&self.cfg), format!("the saved position is damaged ({e}); start without the saved state"))
        })?;
        self.resume = Some(r);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and server checks

fn ctx_name(cfg: &CdcConfig) -> String {
    format!("mysql-cdc table '{}' ({}:{})", cfg.table_name, cfg.hostname, cfg.port)
}

fn conn_opts(cfg: &CdcConfig) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(cfg.hostname.clone())
        .tcp_port(cfg.port)
        .user(Some(cfg.username.clone()))
        .pass(Some(cfg.password.clone()))
        .prefer_socket(false)
        .tcp_nodelay(true)
        .stmt_cache_size(0)
}

/// Server error codes the connector explains.
const ER_DBACCESS_DENIED: u16 = 1044;
const ER_ACCESS_DENIED: u16 = 1045;
const ER_TABLEACCESS_DENIED: u16 = 1142;
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
const ER_MASTER_FATAL_READING_BINLOG: u16 = 1236;

/// Turns a driver error into one message that says what to fix.
pub(crate) fn explain(cfg: &CdcConfig, doing: &str, e: &mysql_async::Error) -> RsqlError {
    let what = ctx_name(cfg);
    let msg = match e {
        mysql_async::Error::Server(s) => match s.code {
            ER_ACCESS_DENIED => format!(
                "the server refused user '{}' ({}); check 'username' and 'password'",
                cfg.username, s.message
            ),
            ER_DBACCESS_DENIED | ER_TABLEACCESS_DENIED => format!(
                "{doing}: {}; grant it with GRANT SELECT ON <db>.* TO '{}'",
                s.message, cfg.username
            ),
            ER_SPECIFIC_ACCESS_DENIED => format!(
                "{doing}: {}; the user needs GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{}'",
                s.message, cfg.username
            ),
            ER_MASTER_FATAL_READING_BINLOG => {
                let hint = if s.message.contains("purged") || s.message.contains("first log file") || s.message.contains("Could not find") {
                    "the requested binlog position is no longer on the server (purged); start again with 'scan.startup.mode' = 'initial' or 'latest-offset'"
                } else if s.message.to_ascii_lowercase().contains("server_id") || s.message.contains("same server") {
                    "another replica uses the same server id; set 'server-id' to a value no other replica or CDC job uses"
                } else {
                    "check the binlog position and the server's error log"
                };
                format!("{doing}: {} ({hint})", s.message)
            }
            _ => format!("{doing}: server error {}: {}", s.code, s.message),
        },
        mysql_async::Error::Io(io) => format!(
            "{doing}: cannot reach the server ({io}); check 'hostname' and 'port' and that MySQL listens there"
        ),
        other => format!("{doing}: {other}"),
    };
    RsqlError::connector(what, msg)
}

fn is_fatal(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if matches!(s.code, ER_ACCESS_DENIED | ER_SPECIFIC_ACCESS_DENIED | ER_MASTER_FATAL_READING_BINLOG | ER_DBACCESS_DENIED))
}

async fn connect(cfg: &CdcConfig) -> Result<Conn> {
    match tokio::time::timeout(cfg.connect_timeout, Conn::new(conn_opts(cfg))).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(explain(cfg, "connecting", &e)),
        Err(_) => Err(RsqlError::connector(
            ctx_name(cfg),
            format!(
                "no answer within connect.timeout ({:?}); check 'hostname' and 'port', the network, or raise 'connect.timeout'",
                cfg.connect_timeout
            ),
        )),
    }
}

/// Checks the binary log settings a row-based CDC reader needs.
pub(crate) fn check_binlog_settings(log_bin: &str, format: &str, row_image: &str) -> std::result::Result<(), String> {
    if !matches!(log_bin.to_ascii_uppercase().as_str(), "1" | "ON") {
        return Err("the binary log is off; start the server with --log-bin (and --binlog-format=ROW --binlog-row-image=FULL --server-id=1)".into());
    }
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(format!(
            "binlog_format is {format}, but CDC needs ROW; run SET GLOBAL binlog_format = 'ROW' (and set it in the server's configuration)"
        ));
    }
    if !row_image.eq_ignore_ascii_case("FULL") {
        return Err(format!(
            "binlog_row_image is {row_image}, but CDC needs FULL; run SET GLOBAL binlog_row_image = 'FULL' (and set it in the server's configuration)"
        ));
    }
    Ok(())
}

/// Checks SHOW GRANTS output for the replication privileges.
pub(crate) fn check_grants(grants: &[String], user: &str) -> std::result::Result<(), String> {
    let global: Vec<String> =
        grants.iter().filter(|g| g.contains(" ON *.* ")).map(|g| g.to_ascii_uppercase()).collect();
    let has = |p: &str| global.iter().any(|g| g.contains("ALL PRIVILEGES") || g.contains(p));
    let mut missing = Vec::new();
    if !has("REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    if !(has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER")) {
        missing.push("REPLICATION CLIENT");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "user '{user}' lacks {} on *.*; run GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'",
            missing.join(" and ")
        ))
    }
}

/// Parses a fixed offset time zone: `UTC`, `Z`, `+08:00`, `-0530`, `UTC+8`, `GMT-03:00`.
pub(crate) fn parse_fixed_zone(s: &str) -> Option<i64> {
    let t = s.trim();
    let up = t.to_ascii_uppercase();
    if matches!(up.as_str(), "UTC" | "Z" | "GMT" | "UCT" | "ETC/UTC" | "ETC/GMT") {
        return Some(0);
    }
    let rest = up.strip_prefix("UTC").or_else(|| up.strip_prefix("GMT")).unwrap_or(&up);
    let (sign, rest) = match rest.chars().next()? {
        '+' => (1, &rest[1..]),
        '-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?),
        None if rest.len() == 4 => (rest[..2].parse().ok()?, rest[2..].parse().ok()?),
        None => (rest.parse().ok()?, 0),
    };
    if h > 14 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60) * 1_000_000)
}

async fn query_rows(conn: &mut Conn, cfg: &CdcConfig, doing: &str, sql: &str) -> Result<Vec<Row>> {
    conn.query(sql).await.map_err(|e| explain(cfg, doing, &e))
}

async fn master_status(conn: &mut Conn, cfg: &CdcConfig) -> Result<BinlogPosition> {
    let rows = match conn.query::<Row, _>("SHOW MASTER STATUS").await {
        Ok(r) => r,
        // MySQL 8.4 renamed the statement.
        Err(mysql_async::Error::Server(s)) if s.code == 1064 => {
            query_rows(conn, cfg, "reading the binlog position", "SHOW BINARY LOG STATUS").await?
        }
        Err(e) => return Err(explain(cfg, "reading the binlog position (SHOW MASTER STATUS)", &e)),
    };
    let row = rows.first().ok_or_else(|| {
        RsqlError::connector(
            ctx_name(cfg),
            "SHOW MASTER STATUS returned nothing: the binary log is off; start the server with --log-bin",
        )
    })?;
    let file = row_str(row, 0).unwrap_or_default();
    let pos = row_str(row, 1).and_then(|p| p.parse().ok()).unwrap_or(4);
    let mut p = BinlogPosition::new(file, pos);
    // MySQL adds Executed_Gtid_Set (empty when gtid_mode is off); MariaDB has four columns.
    if let Some(g) = row_str(row, 4) {
        p.gtid_set = g.split_whitespace().collect();
    }
    Ok(p)
}

/// The binlog end with the GTIDs executed up to it. MariaDB gives them in a second query, so
/// the end is read again until it did not move in between.
async fn current_position(conn: &mut Conn, cfg: &CdcConfig, is_mariadb: bool) -> Result<BinlogPosition> {
    let mut p = master_status(conn, cfg).await?;
    if !is_mariadb {
        return Ok(p);
    }
    for _ in 0..20 {
        let g = query_rows(conn, cfg, "reading the GTID position", "SELECT @@gtid_binlog_pos").await?;
        let gtids = g.first().and_then(|r| row_str(r, 0)).unwrap_or_default();
        let again = master_status(conn, cfg).await?;
        if again == p {
            p.gtid_set = gtids;
            return Ok(p);
        }
        p = again;
    }
    // Under a constant stream of commits: the file position alone (GTIDs follow from the binlog).
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Captured tables and emission

/// A captured table with the mapping from produced columns to its MySQL columns.
pub(crate) struct Captured {
    pub schema: TableSchema,
    /// Per produced column: the MySQL column index of a physical column.
    pub map: Vec<Option<usize>>,
    /// MySQL columns that must be decoded (mapped or key columns).
    pub needed: Vec<bool>,
    /// Snapshot order of the table.
    pub order: usize,
    /// The family of each MySQL column (`MySqlColumn::family`), worked out once.
    pub families: Vec<Family>,
}

impl Captured {
    pub(crate) fn new(schema: TableSchema, produced: &[ProducedColumn], order: usize, table_name: &str) -> Result<Captured> {
        let mut map = Vec::with_capacity(produced.len());
        let mut needed = vec![false; schema.columns.len()];
        for k in &schema.primary_key {
            needed[*k] = true;
        }
        for pc in produced {
            match pc {
                ProducedColumn::Physical { name, ty } => {
                    let idx = schema.column_index(name).ok_or_else(|| {
                        RsqlError::connector(
                            format!("mysql-cdc table '{table_name}'"),
                            format!(
                                "column '{name}' does not exist in MySQL table {} (its columns: {}); fix the column name in CREATE TABLE",
                                schema.qualified(),
                                schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })?;
                    schema.columns[idx].check_declared(ty).map_err(|why| {
                        RsqlError::connector(
                            format!("mysql-cdc table '{table_name}'"),
                            format!("column '{name}' is declared {ty} but {}.{name} is {}: {why}; declare a type that can hold it", schema.qualified(), schema.columns[idx].column_type),
                        )
                    })?;
                    needed[idx] = true;
                    map.push(Some(idx));
                }
                ProducedColumn::Metadata { .. } => map.push(None),
            }
        }
        Ok(Captured::from_parts(schema, map, needed, order))
    }

    pub(crate) fn from_parts(schema: TableSchema, map: Vec<Option<usize>>, needed: Vec<bool>, order: usize) -> Captured {
        let families = schema.columns.iter().map(|c| c.family()).collect();
        Captured { schema, map, needed, order, families }
    }

    /// The key of a natural row, comparable between snapshot and binlog rows.
    fn key(&self, row: &[Datum]) -> String {
        key_text(self.schema.primary_key.iter().map(|i| row.get(*i)))
    }
}

/// The comparable text of a key from its natural values in key column order (`Captured::key`
/// of a row, or the key values kept with a snapshot chunk).
fn key_text<'a>(parts: impl Iterator<Item = Option<&'a Datum>>) -> String {
    let parts: Vec<String> = parts.map(|d| format!("{d:?}")).collect();
    parts.join("\u{1}")
}

/// One decoded row change.
pub(crate) struct Change {
    pub table: Arc<Captured>,
    pub kind: RowKind,
    /// Natural values, one per MySQL column (NULL for columns not needed).
    pub row: Vec<Datum>,
    pub ts_ms: i64,
}

/// The values of the produced columns for one natural row: physical columns converted to their
/// declared types, metadata columns filled in.
#[cfg(test)]
pub(crate) fn produced_row(
    columns: &[ProducedColumn],
    table: &Captured,
    kind: RowKind,
    row: Vec<Datum>,
    ts_ms: i64,
    tz_offset_us: i64,
) -> Vec<Datum> {
    let mut values = Vec::with_capacity(columns.len());
    produced_values(columns, table, kind, row, ts_ms, tz_offset_us, &mut values);
    values
}

/// `produced_row` into `out` (cleared first). The natural values are moved, not copied; a
/// MySQL column mapped to two produced columns is copied for the second.
fn produced_values(
    columns: &[ProducedColumn],
    table: &Captured,
    kind: RowKind,
    mut row: Vec<Datum>,
    ts_ms: i64,
    tz_offset_us: i64,
    out: &mut Vec<Datum>,
) {
    out.clear();
    for (n, (pc, m)) in columns.iter().zip(&table.map).enumerate() {
        let v = match (pc, m) {
            (ProducedColumn::Physical { ty, .. }, Some(i)) => {
                let mapped_again = table.map[n + 1..].contains(&Some(*i));
                let natural = match row.get_mut(*i) {
                    Some(v) if mapped_again => v.clone(),
                    Some(v) => std::mem::replace(v, Datum::Null),
                    None => Datum::Null,
                };
                to_declared_of(&table.schema.columns[*i], table.families[*i], natural, ty, tz_offset_us)
            }
            (ProducedColumn::Metadata { key, .. }, _) => metadata_value(key, table, kind, ts_ms),
            _ => Datum::Null,
        };
        out.push(v);
    }
}

/// The value of the metadata column `key` for a change of `table`.
pub(crate) fn metadata_value(key: &str, table: &Captured, kind: RowKind, ts_ms: i64) -> Datum {
    match key {
        "database_name" => Datum::Str(table.schema.database.clone()),
        "table_name" => Datum::Str(table.schema.table.clone()),
        "op_ts" => Datum::Timestamp(ts_ms * 1000),
        "row_kind" => Datum::Str(kind.short_string().to_string()),
        _ => Datum::Null,
    }
}

/// A value of `table` that the produced column cannot hold.
pub(crate) fn row_error(table: &Captured, e: RsqlError) -> RsqlError {
    RsqlError::data(format!("mysql-cdc table {}", table.schema.qualified()), format!("{e}; declare a wider or nullable column"))
}

/// Builds output batches from natural rows.
struct Emitter {
    columns: Vec<ProducedColumn>,
    builder: RowsBuilder,
    kinds: Vec<RowKind>,
    tz_offset_us: i64,
    since: Option<Instant>,
    max_delay: Duration,
    batch_size: usize,
    /// The produced values of the row being appended (reused from row to row).
    scratch: Vec<Datum>,
}

impl Emitter {
    fn new(columns: &[ProducedColumn], tz_offset_us: i64, ctx: &SourceContext) -> Result<Emitter> {
        let cols: Vec<(String, rsql_common::LogicalType)> =
            columns.iter().map(|c| (c.name().to_string(), c.ty().clone())).collect();
        Ok(Emitter {
            columns: columns.to_vec(),
            builder: RowsBuilder::new(&cols, ctx.batch_size.max(1))?,
            kinds: Vec::new(),
            tz_offset_us,
            since: None,
            max_delay: ctx.max_batch_delay,
            batch_size: ctx.batch_size.max(1),
            scratch: Vec::with_capacity(columns.len()),
        })
    }

    fn push(&mut self, table: &Captured, kind: RowKind, row: Vec<Datum>, ts_ms: i64) -> Result<()> {
        produced_values(&self.columns, table, kind, row, ts_ms, self.tz_offset_us, &mut self.scratch);
        self.builder.append_row_drain(&mut self.scratch).map_err(|e| row_error(table, e))?;
        self.kinds.push(kind);
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn len(&self) -> usize {
        self.kinds.len()
    }

    fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.max_delay)
    }

    async fn flush(&mut self, ctx: &SourceContext) -> Result<()> {
        if self.kinds.is_empty() {
            return Ok(());
        }
        let data = self.builder.finish()?;
        let kinds = std::mem::take(&mut self.kinds);
        self.since = None;
        ctx.emit(ChangeBatch::new(data, kinds)).await
    }
}

// ---------------------------------------------------------------------------------------------
// The binlog reader

struct BinlogReader {
    cfg: Arc<CdcConfig>,
    server_id: u32,
    stream: Option<BinlogStream>,
    /// Position, GTIDs and open transaction of the stream.
    dec: BinlogDecoder,
    /// Whether a position without a file (a GTID set only) is asked for with MariaDB's
    /// `@slave_connect_state` or with MySQL's COM_BINLOG_DUMP_GTID.
    is_mariadb: bool,
    produced: Vec<ProducedColumn>,
    last_event: Instant,
    status: Arc<SourceStatus>,
    /// Whether the lag behind the server is reported (in the binlog phase; during the snapshot
    /// the binlog is read only between chunks).
    report_lag: bool,
}

/// Event types whose header time is not the time of a change: the file header events the
/// server sends again on every connection (ROTATE, FORMAT_DESCRIPTION, PREVIOUS_GTIDS,
/// MariaDB's GTID_LIST and START_ENCRYPTION), BINLOG_CHECKPOINT and heartbeats.
const TIMELESS_EVENTS: &[u8] = &[4, 15, 27, 35, 41, 161, 163, 164];

impl BinlogReader {
    /// How long a silent connection is trusted: three heartbeat periods (heartbeats disabled
    /// with 'heartbeat.interval' = '0': ten minutes).
    fn idle_limit(&self) -> Duration {
        if self.cfg.heartbeat_interval.is_zero() {
            return Duration::from_secs(600);
        }
        (self.cfg.heartbeat_interval * 3).max(Duration::from_secs(5))
    }

    async fn open_stream(&self) -> std::result::Result<BinlogStream, (bool, RsqlError)> {
        let cfg = &*self.cfg;
        let mut conn = connect(cfg).await.map_err(|e| (false, e))?;
        let mut setup = vec![
            "SET @master_binlog_checksum = @@global.binlog_checksum".to_string(),
            "SET @mariadb_slave_capability = 4".to_string(),
        ];
        // The server sends a heartbeat after this many idle nanoseconds (both MySQL and MariaDB
        // read the variable); the reader reports its position on each.
        if !cfg.heartbeat_interval.is_zero() {
            setup.push(format!("SET @master_heartbeat_period = {}", cfg.heartbeat_interval.as_nanos().max(1_000_000)));
        }
        let mut mysql_gtids = None;
        let start = &self.dec.committed;
        if start.file.is_empty() {
            let g = &start.gtid_set;
            if self.is_mariadb {
                setup.push(format!("SET @slave_connect_state = {}", schema::quote_str(g)));
                setup.push("SET @slave_gtid_strict_mode = 0".into());
            } else {
                let set = MySqlGtidSet::parse(g).map_err(|e| {
                    (true, RsqlError::connector(ctx_name(cfg), format!("'scan.startup.specific-offset.gtid-set': {e}")))
                })?;
                mysql_gtids = Some(set);
            }
        }
        for s in &setup {
            conn.query_drop(s)
                .await
                .map_err(|e| (is_fatal(&e), explain(cfg, "preparing the binlog connection", &e)))?;
        }
        let file = self.dec.committed.file.clone();
        let mut req =
            BinlogStreamRequest::new(self.server_id).with_filename(file.as_bytes()).with_pos(self.dec.committed.pos);
        if let Some(set) = &mysql_gtids {
            let sids: Vec<Sid<'static>> = set
                .sids()
                .into_iter()
                .filter(|((_, tag), _)| tag.is_none())
                .map(|((uuid, _), iv)| {
                    Sid::new(uuid).with_intervals(iv.into_iter().map(|(a, b)| GnoInterval::new(a, b)).collect())
                })
                .collect();
            req = req.with_gtid().with_gtid_set(sids);
        }
        conn.get_binlog_stream(req).await.map_err(|e| (is_fatal(&e), explain(cfg, "requesting the binlog", &e)))
    }

    async fn reconnect(&mut self) -> Result<()> {
        let max = self.cfg.connect_max_retries;
        let mut last_err = None;
        for attempt in 0..=max {
            if attempt > 0 {
                let backoff = Duration::from_millis((250u64 << attempt.min(6)).min(10_000));
                tokio::time::sleep(backoff).await;
            }
            match self.open_stream().await {
                Ok(s) => {
                    info!(position = %self.dec.committed, server_id = self.server_id, "mysql-cdc: reading the binlog");
                    self.stream = Some(s);
                    self.dec.reset_connection();
                    self.last_event = Instant::now();
                    return Ok(());
                }
                Err((true, e)) => return Err(e),
                Err((false, e)) => {
                    warn!(attempt, error = %e, "mysql-cdc: binlog connection failed");
                    last_err = Some(e);
                }
            }
        }
        Err(match last_err {
            Some(e) => RsqlError::connector(
                ctx_name(&self.cfg),
                format!("gave up reconnecting to the binlog after {} attempts (connect.max-retries): {e}", max + 1),
            ),
            None => RsqlError::connector(ctx_name(&self.cfg), "could not open the binlog"),
        })
    }

    /// Reads the next event, reconnecting when the connection drops; returns `Idle` when
    /// `deadline` passes first, or at once when `drained` is set and no event is waiting (the
    /// caller has rows to hand on and the reader is at the server's end).
    async fn next(&mut self, deadline: Option<Instant>, drained: bool) -> Result<Step> {
        loop {
            if self.stream.is_none() {
                self.reconnect().await?;
            }
            let idle_at = self.last_event + self.idle_limit();
            let wake = deadline.map_or(idle_at, |d| d.min(idle_at));
            let Some(stream) = self.stream.as_mut() else { continue };
            let got = match stream.next().now_or_never() {
                Some(ready) => Ok(ready),
                None => {
                    // Nothing more has arrived: the reader is at the server's end.
                    if self.report_lag {
                        self.status.caught_up();
                    }
                    if drained {
                        return Ok(Step::Idle);
                    }
                    tokio::time::timeout_at(wake.into(), stream.next()).await
                }
            };
            match got {
                Err(_) => {
                    if Instant::now() >= idle_at {
                        warn!(after = ?self.idle_limit(), "mysql-cdc: no binlog event or heartbeat; reconnecting");
                        self.stream = None;
                        continue;
                    }
                    return Ok(Step::Idle);
                }
                Ok(None) => {
                    warn!(position = %self.dec.committed, "mysql-cdc: the server closed the binlog connection; reconnecting");
                    self.stream = None;
                }
                Ok(Some(Err(e))) => {
                    if is_fatal(&e) {
                        return Err(explain(&self.cfg, "reading the binlog", &e));
                    }
                    warn!(error = %e, position = %self.dec.committed, "mysql-cdc: binlog connection lost; reconnecting");
                    self.stream = None;
                }
                Ok(Some(Ok(ev))) => {
                    self.last_event = Instant::now();
                    return self.handle(ev).await;
                }
            }
        }
    }

    async fn handle(&mut self, ev: mysql_async::binlog::events::Event) -> Result<Step> {
        let step = match self.stream.as_ref() {
            Some(stream) => self.dec.apply(&ev, stream)?,
            None => return Ok(Step::Progress),
        };
        if self.report_lag {
            let h = ev.header();
            if matches!(step, Step::Heartbeat) {
                self.status.caught_up();
            } else if h.timestamp() > 0 && !TIMELESS_EVENTS.contains(&h.event_type_raw()) {
                self.status.event_read(i64::from(h.timestamp()) * 1000);
            }
        }
        match step {
            Step::Statement { database, sql } => {
                self.on_ddl(&database, &sql).await?;
                Ok(Step::Progress)
            }
            other => Ok(other),
        }
    }

    /// Reacts to a statement in the binlog: a change of a captured table's definition reloads it
    /// and checks the declared columns again.
    async fn on_ddl(&mut self, default_db: &str, sql: &str) -> Result<()> {
        let lower = sql.to_ascii_lowercase();
        let is_ddl =
            ["alter table", "rename table", "drop table", "truncate", "create table"].iter().any(|k| lower.contains(k));
        if !is_ddl {
            return Ok(());
        }
        // Names as written: `db`.`t`, db.t, or t in the statement's default database.
        let plain = lower.replace('`', "");
        let words: Vec<&str> =
            plain.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '$')).collect();
        let touched: Vec<(String, String)> = self
            .dec
            .tables
            .keys()
            .filter(|(db, t)| {
                let (db, t) = (db.to_ascii_lowercase(), t.to_ascii_lowercase());
                let qualified = format!("{db}.{t}");
                words.iter().any(|w| *w == qualified || (*w == t && default_db.eq_ignore_ascii_case(&db)))
            })
            .cloned()
            .collect();
        for key in touched {
            let Some(old) = self.dec.tables.get(&key).cloned() else { continue };
            info!(table = %old.schema.qualified(), statement = %sql, "mysql-cdc: captured table changed; reloading its columns");
            let mut conn = connect(&self.cfg).await?;
            let reloaded = schema::load_table(&mut conn, &key.0, &key.1).await;
            let _ = conn.disconnect().await;
            let fresh = match reloaded {
                Ok(s) => s,
                Err(e) => {
                    return Err(RsqlError::connector(
                        ctx_name(&self.cfg),
                        format!("table {} changed by '{sql}' and can no longer be read: {e}", old.schema.qualified()),
                    ))
                }
            };
            let c = Captured::new(fresh, &self.produced, old.order, &self.cfg.table_name).map_err(|e| {
                RsqlError::connector(
                    ctx_name(&self.cfg),
                    format!("table {} changed by '{sql}': {e}", old.schema.qualified()),
                )
            })?;
            self.dec.tables.insert(key, Arc::new(c));
            self.dec.table_ids.clear();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The job: start-up checks, snapshot, streaming

struct Job {
    cfg: Arc<CdcConfig>,
    reader: BinlogReader,
    emitter: Emitter,
    tables: Vec<Arc<Captured>>,
    position: PositionHandle,
    snapshot_conn: Option<Conn>,
    /// The connection snapshot chunks are read on (between tables).
    chunk_conn: Option<Conn>,
    /// How far the snapshot is, as reported with positions; None when it is done or not run.
    progress: Option<SnapshotProgress>,
    /// Whether a snapshot still has to run (or go on).
    snapshot_pending: bool,
    /// The binlog position last reported to the job, and when.
    reported: Option<BinlogPosition>,
    reported_at: Instant,
}

/// How often at most an idle source reports its moving binlog position between heartbeats.
const IDLE_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where the snapshot stands, to sort binlog changes into emitted / merged / dropped.
struct SnapState {
    table: usize,
    /// Keys up to here (inclusive) of `table` are emitted.
    done_upto: Option<SortKey>,
    /// The chunk being merged: keys in (done_upto, upper], or all keys after done_upto when
    /// `upper` is None; None when no chunk is open.
    chunk: Option<Option<SortKey>>,
}

#[derive(PartialEq)]
enum Zone {
    Emitted,
    Chunk,
    Later,
}

impl SnapState {
    /// The zone of a change; `key` is its sort key when it belongs to the table being read.
    fn zone(&self, c: &Change, key: Option<&SortKey>) -> Zone {
        let order = c.table.order;
        if order < self.table {
            return Zone::Emitted;
        }
        if order > self.table {
            return Zone::Later;
        }
        let Some(k) = key else { return Zone::Later };
        if self.done_upto.as_ref().is_some_and(|d| chunks::compare(k, d) != Ordering::Greater) {
            return Zone::Emitted;
        }
        match &self.chunk {
            Some(None) => Zone::Chunk,
            Some(Some(u)) if chunks::compare(k, u) != Ordering::Greater => Zone::Chunk,
            _ => Zone::Later,
        }
    }
}

impl Job {
    async fn start(
        cfg: Arc<CdcConfig>,
        produced: &[ProducedColumn],
        position: PositionHandle,
        resume: Option<Resume>,
        status: Arc<SourceStatus>,
        ctx: &SourceContext,
    ) -> Result<Job> {
        let mut conn = connect(&cfg).await?;
        let name = ctx_name(&cfg);
        let vars = query_rows(
            &mut conn,
            &cfg,
            "reading server settings",
            "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, VERSION(), @@global.binlog_checksum",
        )
        .await?;
        let v = vars.first().ok_or_else(|| RsqlError::connector(name.clone(), "the server returned no settings"))?;
        let version = row_str(v, 3).unwrap_or_default();
        let checksum = !row_str(v, 4).unwrap_or_default().eq_ignore_ascii_case("NONE");
        let is_mariadb = version.to_ascii_lowercase().contains("mariadb");
        check_binlog_settings(
            &row_str(v, 0).unwrap_or_default(),
            &row_str(v, 1).unwrap_or_default(),
            &row_str(v, 2).unwrap_or_default(),
        )
        .map_err(|m| RsqlError::connector(name.clone(), m))?;
        let grants: Vec<String> = query_rows(&mut conn, &cfg, "reading the user's grants", "SHOW GRANTS")
            .await?
            .iter()
            .filter_map(|r| row_str(r, 0))
            .collect();
        check_grants(&grants, &cfg.username).map_err(|m| RsqlError::connector(name.clone(), m))?;

        // Time zone of TIMESTAMP conversions.
        let tz_offset_us = match &cfg.server_time_zone {
            Some(z) => match parse_fixed_zone(z) {
                Some(o) => o,
                None => {
                    let sql = format!(
                        "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), CONVERT_TZ(UTC_TIMESTAMP(), '+00:00', {}))",
                        schema::quote_str(z)
                    );
                    let r = query_rows(&mut conn, &cfg, "resolving 'server-time-zone'", &sql).await?;
                    match r.first().and_then(|r| row_str(r, 0)).and_then(|s| s.parse::<i64>().ok()) {
                        Some(secs) => secs * 1_000_000,
                        None => {
                            return Err(RsqlError::connector(
                                name,
                                format!("'server-time-zone' = '{z}' is not a zone the server knows; use an offset such as '+08:00' or load the server's time zone tables (mariadb-tzinfo-to-sql)"),
                            ))
                        }
                    }
                }
            },
            None => {
                let r = query_rows(
                    &mut conn,
                    &cfg,
                    "reading the server time zone",
                    "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())",
                )
                .await?;
                r.first().and_then(|r| row_str(r, 0)).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) * 1_000_000
            }
        };

        // Tables.
        let found = schema::find_tables(&mut conn, &cfg.database_name, &cfg.table_name_pattern).await?;
        if found.is_empty() {
            return Err(RsqlError::connector(
                name,
                format!(
                    "no table matches database-name '{}' and table-name '{}' (or the user cannot see it); check both patterns and the user's SELECT grant",
                    cfg.database_name, cfg.table_name_pattern
                ),
            ));
        }
        let snapshot_mode = matches!(cfg.startup, StartupMode::Initial | StartupMode::Snapshot);
        let needs_key = match &resume {
            Some(r) => r.snapshot.is_some(),
            None => snapshot_mode,
        };
        let mut tables = Vec::new();
        for (i, (db, t)) in found.iter().enumerate() {
            let schema = schema::load_table(&mut conn, db, t).await?;
            if needs_key && schema.primary_key.is_empty() {
                return Err(RsqlError::connector(
                    name,
                    format!("MySQL table {db}.{t} has no primary key, which the incremental snapshot needs; add one, or use 'scan.startup.mode' = 'latest-offset'"),
                ));
            }
            let probe = format!("SELECT 1 FROM {}.{} LIMIT 0", quote_ident(db), quote_ident(t));
            query_rows(&mut conn, &cfg, &format!("reading {db}.{t}"), &probe).await?;
            tables.push(Arc::new(Captured::new(schema, produced, i, &cfg.table_name)?));
        }

        // Server id.
        let server_id = match cfg.server_id {
            Some(id) => id,
            None => {
                use rand::Rng;
                rand::rng().random_range(5400..=6400)
            }
        };
        if let Ok(hosts) = conn.query::<Row, _>("SHOW SLAVE HOSTS").await {
            if hosts.iter().any(|r| row_str(r, 0).and_then(|s| s.parse::<u32>().ok()) == Some(server_id)) {
                return Err(RsqlError::connector(
                    name,
                    format!("server-id {server_id} is already used by another replica or CDC reader of this server; set 'server-id' to an unused value"),
                ));
            }
        }

        // Start position. A position without a file (a GTID set only) is read by GTID.
        let (start, skip_before_ms) = match &resume {
            Some(r) => (r.binlog.clone(), None),
            None => match &cfg.startup {
                StartupMode::Initial | StartupMode::Snapshot | StartupMode::LatestOffset => {
                    (current_position(&mut conn, &cfg, is_mariadb).await?, None)
                }
                StartupMode::EarliestOffset | StartupMode::Timestamp(_) => {
                    let logs =
                        query_rows(&mut conn, &cfg, "listing binlog files (SHOW BINARY LOGS)", "SHOW BINARY LOGS").await?;
                    let first = logs
                        .first()
                        .and_then(|r| row_str(r, 0))
                        .ok_or_else(|| RsqlError::connector(name.clone(), "the server has no binlog files"))?;
                    let skip = match cfg.startup {
                        StartupMode::Timestamp(ms) => Some(ms),
                        _ => None,
                    };
                    (BinlogPosition::new(first, 4), skip)
                }
                StartupMode::SpecificOffset { file, pos, gtid_set } => {
                    let gtids = match gtid_set {
                        Some(g) => {
                            let parsed = GtidTracker::parse(g).map_err(|e| {
                                RsqlError::connector(name.clone(), format!("'scan.startup.specific-offset.gtid-set': {e}"))
                            })?;
                            let mysql_notation = !parsed.mysql.is_empty();
                            if mysql_notation == is_mariadb {
                                return Err(RsqlError::connector(
                                    name,
                                    format!(
                                        "'scan.startup.specific-offset.gtid-set' = '{g}' is in {} notation but the server is {}; use {}",
                                        if mysql_notation { "MySQL's" } else { "MariaDB's" },
                                        if is_mariadb { "MariaDB" } else { "MySQL" },
                                        if is_mariadb { "domain-server-sequence items such as '0-1-42'" } else { "uuid:interval items such as '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42'" }
                                    ),
                                ));
                            }
                            parsed.to_string()
                        }
                        None => String::new(),
                    };
                    match file {
                        Some(f) => (BinlogPosition { file: f.clone(), pos: *pos, gtid_set: gtids }, None),
                        None => (BinlogPosition { file: String::new(), pos: 4, gtid_set: gtids }, None),
                    }
                }
            },
        };
        let progress = match resume.as_ref().and_then(|r| r.snapshot.clone()) {
            Some(p) => {
                if !tables.iter().any(|t| t.schema.qualified() == p.table) {
                    return Err(RsqlError::connector(
                        name,
                        format!("the checkpoint's snapshot was reading table {}, which is no longer captured; start without the saved state", p.table),
                    ));
                }
                Some(p)
            }
            None if resume.is_none() && snapshot_mode => tables.first().map(|t| SnapshotProgress { table: t.schema.qualified(), done_upto: None }),
            None => None,
        };
        let snapshot_conn = if needs_key {
            conn.query_drop("SET SESSION time_zone = '+00:00'")
                .await
                .map_err(|e| explain(&cfg, "preparing the snapshot", &e))?;
            Some(conn)
        } else {
            let _ = conn.disconnect().await;
            None
        };
        if !cfg.incremental_snapshot {
            info!("mysql-cdc: 'scan.incremental.snapshot.enabled' = 'false' is read with the lock-free snapshot too");
        }
        let by_name = tables.iter().map(|t| ((t.schema.database.clone(), t.schema.table.clone()), t.clone())).collect();
        let mut dec = BinlogDecoder::new(start, by_name, checksum);
        dec.skip_before_ms = skip_before_ms;
        let reader = BinlogReader {
            cfg: cfg.clone(),
            server_id,
            stream: None,
            dec,
            is_mariadb,
            produced: produced.to_vec(),
            last_event: Instant::now(),
            status,
            report_lag: false,
        };
        let emitter = Emitter::new(produced, tz_offset_us, ctx)?;
        let snapshot_pending = progress.is_some();
        Ok(Job {
            cfg,
            reader,
            emitter,
            tables,
            position,
            snapshot_conn,
            chunk_conn: None,
            progress,
            snapshot_pending,
            reported: None,
            reported_at: Instant::now(),
        })
    }

    /// The position that reproduces exactly what follows what was handed downstream.
    fn resume_point(&self) -> Resume {
        Resume { binlog: self.reader.dec.committed.clone(), snapshot: self.progress.clone() }
    }

    fn publish_position(&self) {
        if let Ok(mut p) = self.position.lock() {
            *p = Some(self.reader.dec.committed.clone());
        }
    }

    /// Hands on the buffered rows and reports the position after them; call only at a point
    /// from which a restart reproduces what follows (transaction and chunk boundaries).
    async fn flush(&mut self, ctx: &SourceContext) -> Result<()> {
        self.emitter.flush(ctx).await?;
        self.publish_position();
        self.reported = Some(self.reader.dec.committed.clone());
        self.reported_at = Instant::now();
        ctx.position(self.resume_point().encode()).await
    }

    async fn run(&mut self, ctx: &mut SourceContext) -> Result<()> {
        if self.snapshot_pending {
            if !self.snapshot(ctx).await? {
                return self.flush(ctx).await;
            }
            for c in [self.snapshot_conn.take(), self.chunk_conn.take()].into_iter().flatten() {
                let _ = c.disconnect().await;
            }
            if self.cfg.startup == StartupMode::Snapshot {
                self.flush(ctx).await?;
                if let Some(s) = self.reader.stream.take() {
                    let _ = s.close().await;
                }
                self.reader.status.set_phase(Phase::Finished);
                return Ok(());
            }
        }
        self.reader.status.set_phase(Phase::Streaming("binlog"));
        self.reader.report_lag = true;
        self.publish_position();
        loop {
            let deadline = self.emitter.deadline().or_else(|| self.idle_report_deadline());
            // Rows are handed on as soon as the binlog has nothing more waiting, so a quiet
            // stream is not held for the batch delay; a busy one still fills its batches.
            let drained = self.emitter.len() > 0;
            let step = tokio::select! {
                biased;
                _ = ctx.stopped() => {
                    return self.flush(ctx).await;
                }
                s = self.reader.next(deadline, drained) => s?,
            };
            match step {
                Step::Commit(changes) => {
                    let kinds = pair_kinds(&changes, |_, _| true);
                    for (c, kind) in changes.into_iter().zip(kinds) {
                        if let Some(kind) = kind {
                            self.emitter.push(&c.table, kind, c.row, c.ts_ms)?;
                        }
                    }
                    if self.emitter.len() >= self.emitter.batch_size {
                        self.flush(ctx).await?;
                    }
                }
                Step::Idle => self.flush(ctx).await?,
                Step::Heartbeat => self.report_idle_position(ctx, true).await?,
                Step::Progress | Step::Statement { .. } => self.report_idle_position(ctx, false).await?,
            }
        }
    }

    /// True when nothing is buffered, no transaction is open and the committed position moved
    /// since the last report: the binlog went on with changes this source does not capture.
    fn idle_position_moved(&self) -> bool {
        self.emitter.len() == 0
            && !self.reader.dec.in_tx
            && self.reported.as_ref().is_none_or(|r| *r != self.reader.dec.committed)
    }

    /// When reading binlog events that produce no rows for this source (other tables, other
    /// databases), the position still advances: it is reported on each heartbeat and at most
    /// once per `IDLE_REPORT_EVERY`, at a transaction boundary with nothing pending, so a
    /// restart does not re-read the binlog from this source's last change.
    async fn report_idle_position(&mut self, ctx: &SourceContext, heartbeat: bool) -> Result<()> {
        if self.emitter.len() == 0 {
            self.publish_position();
        }
        if self.idle_position_moved() && (heartbeat || self.reported_at.elapsed() >= IDLE_REPORT_EVERY) {
            self.flush(ctx).await?;
        }
        Ok(())
    }

    /// When to wake up to report a moved idle position even if no further event comes.
    fn idle_report_deadline(&self) -> Option<Instant> {
        self.idle_position_moved().then(|| self.reported_at + IDLE_REPORT_EVERY)
    }

    /// Reads every table; false when the job was asked to stop.
    async fn snapshot(&mut self, ctx: &mut SourceContext) -> Result<bool> {
        let tables = self.tables.clone();
        let total_est: u64 = tables.iter().map(|t| t.schema.estimated_rows).sum();
        self.reader.status.snapshot_started(total_est);
        let started = Instant::now();
        let mut total_rows = 0u64;
        let mut last_log = Instant::now();
        let first = self.progress.clone();
        for t in &tables {
            let mut state = SnapState { table: t.order, done_upto: None, chunk: None };
            let mut done_key: Option<Vec<Datum>> = None;
            if let Some(p) = &first {
                let at = tables.iter().position(|x| x.schema.qualified() == p.table).unwrap_or(0);
                if t.order < at {
                    continue;
                }
                if t.order == at {
                    if let Some(k) = &p.done_upto {
                        let mut row = vec![Datum::Null; t.schema.columns.len()];
                        for (i, v) in t.schema.primary_key.iter().zip(k) {
                            row[*i] = v.clone();
                        }
                        state.done_upto = self.sort_keys(t, &[row.as_slice()]).await?.pop();
                        done_key = Some(k.clone());
                    }
                }
            }
            self.progress = Some(SnapshotProgress { table: t.schema.qualified(), done_upto: done_key.clone() });
            let table_started = Instant::now();
            let mut table_rows = 0u64;
            // Chunks are read ahead on a connection of their own while the previous chunk is
            // reconciled and emitted here.
            let reader_conn = match self.chunk_conn.take() {
                Some(c) => c,
                None => {
                    let mut c = connect(&self.cfg).await?;
                    c.query_drop("SET SESSION time_zone = '+00:00'")
                        .await
                        .map_err(|e| explain(&self.cfg, "preparing the snapshot", &e))?;
                    c
                }
            };
            let (tx, mut chunks_rx) = tokio::sync::mpsc::channel(1);
            let decoder = Arc::new(ChunkDecoder::new(
                t.clone(),
                &self.emitter.columns,
                self.emitter.builder.schema(),
                self.emitter.tz_offset_us,
            ));
            let reader = tokio::spawn(read_chunks(reader_conn, self.cfg.clone(), decoder, done_key.clone(), tx));
            loop {
                let next = tokio::select! {
                    biased;
                    _ = ctx.stopped() => return Ok(false),
                    c = chunks_rx.recv() => c,
                };
                let Some(next) = next else {
                    return Err(RsqlError::connector(ctx_name(&self.cfg), format!("the snapshot reader of {} stopped", t.schema.qualified())));
                };
                let ReadAhead { low, rows, upper, high } = next?;
                if !self.drain_to(&low, &state, None, ctx).await? {
                    return Ok(false);
                }
                state.chunk = Some(upper.as_ref().map(|(s, _)| s.clone()));
                debug!(table = %t.schema.qualified(), rows = rows.len(), upper = ?upper.as_ref().map(|u| &u.1), %low, %high, "mysql-cdc: snapshot chunk read");
                let mut merged: HashMap<String, Option<Vec<Datum>>> = HashMap::new();
                if !self.drain_to(&high, &state, Some(&mut merged), ctx).await? {
                    return Ok(false);
                }
                let n = rows.len();
                // Changes emitted while reading the binlog up to the chunk's watermarks go
                // first; then the chunk's rows (mid-chunk batches carry no position: a restart
                // re-reads the whole chunk), keys compared only when the binlog touched it.
                self.emitter.flush(ctx).await?;
                let in_merged = |k: &[Datum]| merged.contains_key(&key_text(k.iter().map(Some)));
                let drop: Option<&dyn Fn(&[Datum]) -> bool> = if merged.is_empty() { None } else { Some(&in_merged) };
                for batch in rows.into_batches(self.emitter.batch_size, drop)? {
                    ctx.emit(batch).await?;
                }
                for row in merged.into_values().flatten() {
                    self.emitter.push(t, RowKind::Insert, row, 0)?;
                }
                self.progress = match &upper {
                    Some((_, k)) => Some(SnapshotProgress { table: t.schema.qualified(), done_upto: Some(k.clone()) }),
                    None => tables
                        .get(t.order + 1)
                        .map(|next| SnapshotProgress { table: next.schema.qualified(), done_upto: None }),
                };
                self.flush(ctx).await?;
                total_rows += n as u64;
                table_rows += n as u64;
                self.reader.status.snapshot_rows(total_rows);
                if last_log.elapsed() >= Duration::from_secs(5) {
                    last_log = Instant::now();
                    log_progress(t, table_rows, table_started, total_rows, total_est, started);
                }
                state.chunk = None;
                match upper {
                    Some((sort, _)) => state.done_upto = Some(sort),
                    None => break,
                }
            }
            self.chunk_conn = reader.await.ok();
            log_progress(t, table_rows, table_started, total_rows, total_est, started);
            info!(table = %t.schema.qualified(), rows = table_rows, seconds = table_started.elapsed().as_secs_f64(), "mysql-cdc: snapshot of table done");
        }
        info!(rows = total_rows, seconds = started.elapsed().as_secs_f64(), position = %self.reader.dec.committed, "mysql-cdc: snapshot done; reading the binlog");
        Ok(true)
    }

    /// Sort keys of natural rows of `t`; the server gives the weights of collated text keys
    /// (one query for all rows).
    async fn sort_keys(&mut self, t: &Captured, rows: &[&[Datum]]) -> Result<Vec<SortKey>> {
        let collated: Vec<usize> =
            t.schema.primary_key.iter().copied().filter(|i| chunks::is_collated(&t.schema.columns[*i])).collect();
        let mut exprs = Vec::new();
        for row in rows {
            for i in &collated {
                let v = row.get(*i).unwrap_or(&Datum::Null);
                if !matches!(v, Datum::Null) {
                    exprs.push(format!("WEIGHT_STRING({})", chunks::literal(&t.schema.columns[*i], v)));
                }
            }
        }
        let mut weights: Vec<Vec<u8>> = Vec::with_capacity(exprs.len());
        for part in exprs.chunks(500) {
            let Some(conn) = self.snapshot_conn.as_mut() else {
                return Err(RsqlError::connector(ctx_name(&self.cfg), "the snapshot connection is gone"));
            };
            let doing = format!("ordering keys of {}", t.schema.qualified());
            let row: Option<Row> =
                conn.query_first(format!("SELECT {}", part.join(", "))).await.map_err(|e| explain(&self.cfg, &doing, &e))?;
            let row = row.ok_or_else(|| RsqlError::connector(ctx_name(&self.cfg), format!("{doing}: no answer")))?;
            for j in 0..part.len() {
                weights.push(match row.as_ref(j) {
                    Some(mysql_async::Value::Bytes(b)) => b.clone(),
                    _ => Vec::new(),
                });
            }
        }
        let mut w = weights.into_iter();
        Ok(rows
            .iter()
            .map(|row| {
                let mine: Vec<Vec<u8>> = collated
                    .iter()
                    .filter(|i| !matches!(row.get(**i).unwrap_or(&Datum::Null), Datum::Null))
                    .map(|_| w.next().unwrap_or_default())
                    .collect();
                chunks::sort_key(&t.schema, row, &mine)
            })
            .collect())
    }

    /// Sort keys of the changes to the table being read (None for other tables).
    async fn change_keys(&mut self, changes: &[Change], table: usize) -> Result<Vec<Option<SortKey>>> {
        let mine: Vec<usize> = (0..changes.len()).filter(|i| changes[*i].table.order == table).collect();
        let mut out = vec![None; changes.len()];
        let Some(first) = mine.first() else { return Ok(out) };
        let t = changes[*first].table.clone();
        let rows: Vec<&[Datum]> = mine.iter().map(|i| changes[*i].row.as_slice()).collect();
        let keys = self.sort_keys(&t, &rows).await?;
        for (i, k) in mine.into_iter().zip(keys) {
            out[i] = Some(k);
        }
        Ok(out)
    }

    /// Reads the binlog up to `target`, emitting changes of rows already emitted, merging
    /// changes of the open chunk into `merged` and dropping the others. False when stopped.
    async fn drain_to(
        &mut self,
        target: &BinlogPosition,
        state: &SnapState,
        mut merged: Option<&mut HashMap<String, Option<Vec<Datum>>>>,
        ctx: &mut SourceContext,
    ) -> Result<bool> {
        while !self.reader.dec.pos.reached(target) || self.reader.dec.in_tx {
            let step = tokio::select! {
                biased;
                _ = ctx.stopped() => return Ok(false),
                s = self.reader.next(None, false) => s?,
            };
            let Step::Commit(changes) = step else { continue };
            let keys = self.change_keys(&changes, state.table).await?;
            let zones: Vec<Zone> = changes.iter().zip(&keys).map(|(c, k)| state.zone(c, k.as_ref())).collect();
            let kinds = pair_kinds(&changes, |i, _| zones[i] == Zone::Emitted);
            for ((c, kind), zone) in changes.into_iter().zip(kinds).zip(&zones) {
                if let Some(kind) = kind {
                    self.emitter.push(&c.table, kind, c.row, c.ts_ms)?;
                } else if *zone == Zone::Chunk {
                    if let Some(m) = merged.as_deref_mut() {
                        let key = c.table.key(&c.row);
                        match c.kind {
                            RowKind::Insert | RowKind::UpdateAfter => m.insert(key, Some(c.row)),
                            RowKind::Delete | RowKind::UpdateBefore => m.insert(key, None),
                        };
                    }
                }
            }
            if self.emitter.len() >= self.emitter.batch_size {
                self.flush(ctx).await?;
            }
        }
        Ok(true)
    }
}

/// The row kind of each change that passes `keep` (None for the others), with update halves
/// whose other half was dropped turned into a plain delete or insert.
fn pair_kinds(changes: &[Change], keep: impl Fn(usize, &Change) -> bool) -> Vec<Option<RowKind>> {
    let mut out = vec![None; changes.len()];
    let mut i = 0;
    while i < changes.len() {
        let c = &changes[i];
        if c.kind == RowKind::UpdateBefore && i + 1 < changes.len() && changes[i + 1].kind == RowKind::UpdateAfter {
            let a = &changes[i + 1];
            match (keep(i, c), keep(i + 1, a)) {
                (true, true) => {
                    out[i] = Some(RowKind::UpdateBefore);
                    out[i + 1] = Some(RowKind::UpdateAfter);
                }
                (true, false) => out[i] = Some(RowKind::Delete),
                (false, true) => out[i + 1] = Some(RowKind::Insert),
                (false, false) => {}
            }
            i += 2;
            continue;
        }
        if keep(i, c) {
            out[i] = Some(c.kind);
        }
        i += 1;
    }
    out
}

/// Runs one chunk query (the table's columns, then the weights of its collated key columns),
/// converting its rows as they arrive (`snapshot_rows`), and gives them with the key of the
/// last row when the chunk is full. The query goes through the binary protocol: integers,
/// floats and temporal values arrive as numbers instead of text to parse.
async fn read_chunk(
    conn: &mut Conn,
    cfg: &CdcConfig,
    dec: &ChunkDecoder,
    sql: &str,
    params: Vec<mysql_async::Value>,
) -> Result<(ChunkRows, Option<(SortKey, Vec<Datum>)>)> {
    let doing = format!("reading a snapshot chunk of {}", dec.table().schema.qualified());
    let mut result = conn.exec_iter(sql, params).await.map_err(|e| explain(cfg, &doing, &e))?;
    let mut chunk = dec.chunk(cfg.chunk_size.min(65_536))?;
    // One row is held back: the last one's key (with its collation weights) bounds the next
    // chunk.
    let mut held: Option<Row> = None;
    let mut n = 0usize;
    while let Some(row) = result.next().await.map_err(|e| explain(cfg, &doing, &e))? {
        n += 1;
        if let Some(prev) = held.replace(row) {
            chunk.push(prev.unwrap_raw(), &doing)?;
        }
    }
    let mut upper = None;
    if let Some(last) = held {
        if n >= cfg.chunk_size {
            upper = Some(dec.row_key(&last, &doing)?);
        }
        chunk.push(last.unwrap_raw(), &doing)?;
    }
    Ok((chunk.finish()?, upper))
}

/// A chunk read ahead: the binlog end before its query (`low`) and after it (`high`), its rows,
/// and, unless it was the table's last, its last key (server order and natural values).
struct ReadAhead {
    low: BinlogPosition,
    rows: ChunkRows,
    upper: Option<(SortKey, Vec<Datum>)>,
    high: BinlogPosition,
}

/// Reads the chunks of one table after `done_key` in key order, each between two binlog end
/// positions (the end after a chunk is the start of the next), until the table's last chunk or
/// until the receiver is gone; gives the connection back.
async fn read_chunks(
    mut conn: Conn,
    cfg: Arc<CdcConfig>,
    dec: Arc<ChunkDecoder>,
    mut done_key: Option<Vec<Datum>>,
    tx: tokio::sync::mpsc::Sender<Result<ReadAhead>>,
) -> Conn {
    let t = dec.table().clone();
    let mut cols: Vec<String> = t.schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
    cols.extend(chunks::weight_columns(&t.schema));
    let from = format!("{}.{}", quote_ident(&t.schema.database), quote_ident(&t.schema.table));
    let mut low = None;
    loop {
        let read = async {
            let low = match low.take() {
                Some(p) => p,
                None => master_status(&mut conn, &cfg).await?,
            };
            // Integer keys go as parameters, so every chunk after the first runs the same
            // prepared statement.
            let (cond, params) = match done_key.as_ref() {
                None => (String::new(), Vec::new()),
                Some(k) => match chunks::after_condition_params(&t.schema, k) {
                    Some((c, p)) => (format!(" WHERE {c}"), p),
                    None => (format!(" WHERE {}", chunks::after_condition(&t.schema, k)), Vec::new()),
                },
            };
            let sql = format!(
                "SELECT {} FROM {from}{cond} ORDER BY {} LIMIT {}",
                cols.join(", "),
                chunks::order_by(&t.schema),
                cfg.chunk_size
            );
            let (rows, upper) = read_chunk(&mut conn, &cfg, &dec, &sql, params).await?;
            let high = master_status(&mut conn, &cfg).await?;
            Ok(ReadAhead { low, rows, upper, high })
        }
        .await;
        let next = match &read {
            Ok(c) => c.upper.as_ref().map(|(_, k)| (k.clone(), c.high.clone())),
            Err(_) => None,
        };
        if tx.send(read).await.is_err() {
            return conn;
        }
        match next {
            Some((k, high)) => {
                done_key = Some(k);
                low = Some(high);
            }
            None => return conn,
        }
    }
}

/// One progress line per table: rows read of information_schema's estimate, and rates.
fn log_progress(t: &Captured, table_rows: u64, table_started: Instant, total_rows: u64, total_est: u64, started: Instant) {
    let rate = table_rows as f64 / table_started.elapsed().as_secs_f64().max(0.001);
    let est = t.schema.estimated_rows;
    let pct = if est > 0 { (table_rows as f64 * 100.0 / est as f64).min(100.0) } else { 0.0 };
    let total_rate = total_rows as f64 / started.elapsed().as_secs_f64().max(0.001);
    info!(
        table = %t.schema.qualified(),
        rows = table_rows,
        estimated = est,
        percent = %format!("{pct:.1}"),
        rows_per_sec = rate as u64,
        total_rows,
        total_estimated = total_est,
        total_rows_per_sec = total_rate as u64,
        "mysql-cdc: snapshot progress"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_settings() {
        assert!(check_binlog_settings("1", "ROW", "FULL").is_ok());
        assert!(check_binlog_settings("ON", "row", "full").is_ok());
        assert!(check_binlog_settings("0", "ROW", "FULL").unwrap_err().contains("--log-bin"));
        let e = check_binlog_settings("1", "MIXED", "FULL").unwrap_err();
        assert!(e.contains("binlog_format is MIXED") && e.contains("SET GLOBAL binlog_format"), "{e}");
        assert!(check_binlog_settings("1", "ROW", "MINIMAL").unwrap_err().contains("binlog_row_image"));
    }

    #[test]
    fn grants() {
        let ok =
            vec!["GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `rsql`@`%`"
                .to_string()];
        assert!(check_grants(&ok, "rsql").is_ok());
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION".to_string()];
        assert!(check_grants(&all, "root").is_ok());
        let none =
            vec!["GRANT USAGE ON *.* TO `u`@`%`".to_string(), "GRANT ALL PRIVILEGES ON `db`.* TO `u`@`%`".to_string()];
        let e = check_grants(&none, "u").unwrap_err();
        assert!(e.contains("REPLICATION SLAVE and REPLICATION CLIENT"), "{e}");
    }

    #[test]
    fn fixed_zones() {
        let h = 3_600_000_000i64;
        assert_eq!(parse_fixed_zone("UTC"), Some(0));
        assert_eq!(parse_fixed_zone("+08:00"), Some(8 * h));
        assert_eq!(parse_fixed_zone("-0530"), Some(-(5 * h + h / 2)));
        assert_eq!(parse_fixed_zone("UTC+8"), Some(8 * h));
        assert_eq!(parse_fixed_zone("Asia/Shanghai"), None);
        assert_eq!(parse_fixed_zone("+99:00"), None);
    }

    #[test]
    fn update_pairs_split_at_the_snapshot_boundary() {
        let schema = super::super::schema::tests::int_key_table();
        let table = Arc::new(Captured::from_parts(schema, vec![Some(0)], vec![true], 0));
        let ch = |kind, k| Change { table: table.clone(), kind, row: vec![Datum::Int(k)], ts_ms: 0 };
        let changes = vec![
            ch(RowKind::UpdateBefore, 1),
            ch(RowKind::UpdateAfter, 100),
            ch(RowKind::Insert, 2),
            ch(RowKind::Delete, 200),
        ];
        let key = |k: i64| vec![chunks::key_part(&Datum::Int(k), None)];
        let keys: Vec<SortKey> = changes.iter().map(|c| chunks::sort_key(&c.table.schema, &c.row, &[])).collect();
        let state = SnapState { table: 0, done_upto: Some(key(10)), chunk: None };
        let kept: Vec<(i64, RowKind)> = pair_kinds(&changes, |i, c| state.zone(c, Some(&keys[i])) == Zone::Emitted)
            .into_iter()
            .zip(&changes)
            .filter_map(|(k, c)| k.map(|k| (if let Datum::Int(i) = c.row[0] { i } else { -1 }, k)))
            .collect();
        assert_eq!(kept, vec![(1, RowKind::Delete), (2, RowKind::Insert)]);
        let chunk = SnapState { table: 0, done_upto: Some(key(10)), chunk: Some(Some(key(150))) };
        assert!(chunk.zone(&changes[1], Some(&keys[1])) == Zone::Chunk);
        assert!(chunk.zone(&changes[3], Some(&keys[3])) == Zone::Later);
        assert!(chunk.zone(&changes[0], Some(&keys[0])) == Zone::Emitted);
    }

    #[test]
    fn saved_snapshot_keys_read_back() {
        let old = br#"{"binlog":"binlog.000001:400","snapshot":{"table":"d.t","done_upto":"1200"}}"#;
        let r = Resume::decode(old).unwrap();
        assert_eq!(r.snapshot.as_ref().unwrap().done_upto, Some(vec![Datum::Int(1200)]));
        assert_eq!(Resume::decode(&r.encode()).unwrap(), r);
        let composite = Resume {
            binlog: BinlogPosition::new("binlog.000002", 4),
            snapshot: Some(SnapshotProgress {
                table: "d.t".into(),
                done_upto: Some(vec![
                    Datum::Str("b\u{e9}".into()),
                    Datum::Int(-3),
                    Datum::UInt(u64::MAX),
                    Datum::Bytes(vec![0, 255]),
                    Datum::Decimal(-1234, 2),
                    Datum::Date(19000),
                    Datum::Timestamp(1_700_000_000_000_000),
                    Datum::Null,
                ]),
            }),
        };
        assert_eq!(Resume::decode(&composite.encode()).unwrap(), composite);
        let none = Resume { binlog: BinlogPosition::new("b.1", 4), snapshot: Some(SnapshotProgress { table: "d.t".into(), done_upto: None }) };
        assert_eq!(Resume::decode(&none.encode()).unwrap(), none);
    }
}
