//! The running mysql-cdc source: server checks, the chunked lock-free snapshot reconciled with
//! the binlog, and the binlog stream with reconnection.
//!
//! Snapshot (Flink CDC's incremental snapshot, run by one reader): tables are read one after
//! the other, each in chunks of its primary key (`WHERE pk > last ORDER BY pk LIMIT n` for a
//! single integer key; one chunk otherwise). For each chunk the reader records the binlog end
//! (low watermark), reads the chunk, records the end again (high watermark), then reads the
//! binlog up to the high watermark: changes to keys of the chunk are merged into the chunk's
//! rows, changes to keys already emitted are emitted, changes to keys not read yet are dropped
//! (their chunk's SELECT will see them). The chunk is then emitted as +I. When the last chunk
//! is done, the same binlog stream simply goes on: no gap and no duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RotateEvent, RowsEventData, TableMapEvent};
use mysql_async::binlog::EventType;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, OptsBuilder, Row};
use rsql_common::builder::{Datum, RowsBuilder};
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::{ProducedColumn, Source, SourceContext};
use tracing::{debug, info, warn};

use super::decode::{from_binlog, from_text, to_declared};
use super::mariadb_events as maria;
use super::position::{BinlogPosition, MariaGtidState};
use super::schema::{self, quote_ident, row_str, TableSchema};
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
    /// Keys up to here (inclusive) of that table are done; None when the table has not begun.
    pub done_upto: Option<i128>,
}

impl Resume {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let snap = self.snapshot.as_ref().map(|s| {
            serde_json::json!({ "table": s.table, "done_upto": s.done_upto.map(|d| d.to_string()) })
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
                done_upto: match s.get("done_upto") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(d) => Some(d.as_str().and_then(|d| d.parse::<i128>().ok()).ok_or("bad snapshot key")?),
                },
            }),
        };
        Ok(Resume { binlog, snapshot })
    }
}

impl MySqlCdcSource {
    pub fn new(cfg: CdcConfig, columns: Vec<ProducedColumn>) -> Self {
        MySqlCdcSource { cfg: Arc::new(cfg), columns, position: Arc::new(Mutex::new(None)), resume: None }
    }

    /// A handle that keeps showing the current position while the source runs.
    pub fn position_handle(&self) -> PositionHandle {
        self.position.clone()
    }
}

#[async_trait]
impl Source for MySqlCdcSource {
    async fn run(&mut self, mut ctx: SourceContext) -> Result<()> {
        let mut job = Job::start(self.cfg.clone(), &self.columns, self.position.clone(), self.resume.take(), &ctx).await?;
        job.run(&mut ctx).await
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
    Ok(BinlogPosition::new(file, pos))
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
}

impl Captured {
    fn new(schema: TableSchema, produced: &[ProducedColumn], order: usize, table_name: &str) -> Result<Captured> {
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
        Ok(Captured { schema, map, needed, order })
    }

    /// The key of a natural row, comparable between snapshot and binlog rows.
    fn key(&self, row: &[Datum]) -> String {
        let parts: Vec<String> = self.schema.primary_key.iter().map(|i| format!("{:?}", row.get(*i))).collect();
        parts.join("\u{1}")
    }

    fn int_key(&self, row: &[Datum]) -> Option<i128> {
        match row.get(*self.schema.primary_key.first()?)? {
            Datum::Int(i) => Some(*i as i128),
            Datum::UInt(u) => Some(*u as i128),
            _ => None,
        }
    }
}

/// One decoded row change.
pub(crate) struct Change {
    pub table: Arc<Captured>,
    pub kind: RowKind,
    /// Natural values, one per MySQL column (NULL for columns not needed).
    pub row: Vec<Datum>,
    pub ts_ms: i64,
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
        })
    }

    fn push(&mut self, table: &Captured, kind: RowKind, row: &[Datum], ts_ms: i64) -> Result<()> {
        let mut values = Vec::with_capacity(self.columns.len());
        for (pc, m) in self.columns.iter().zip(&table.map) {
            let v = match (pc, m) {
                (ProducedColumn::Physical { ty, .. }, Some(i)) => to_declared(
                    &table.schema.columns[*i],
                    row.get(*i).cloned().unwrap_or(Datum::Null),
                    ty,
                    self.tz_offset_us,
                ),
                (ProducedColumn::Metadata { key, .. }, _) => match key.as_str() {
                    "database_name" => Datum::Str(table.schema.database.clone()),
                    "table_name" => Datum::Str(table.schema.table.clone()),
                    "op_ts" => Datum::Timestamp(ts_ms * 1000),
                    "row_kind" => Datum::Str(kind.short_string().to_string()),
                    _ => Datum::Null,
                },
                _ => Datum::Null,
            };
            values.push(v);
        }
        self.builder.append_row(values).map_err(|e| {
            RsqlError::data(
                format!("mysql-cdc table {}", table.schema.qualified()),
                format!("{e}; declare a wider or nullable column"),
            )
        })?;
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

/// What one binlog event amounted to.
pub(crate) enum Step {
    /// A transaction committed with these row changes (possibly none for captured tables).
    Commit(Vec<Change>),
    /// Any other event.
    Progress,
    /// The deadline passed without an event.
    Idle,
}

struct BinlogReader {
    cfg: Arc<CdcConfig>,
    server_id: u32,
    stream: Option<BinlogStream>,
    /// After the last event read.
    pos: BinlogPosition,
    /// After the last complete transaction; reconnection resumes here.
    committed: BinlogPosition,
    gtids: MariaGtidState,
    /// MariaDB GTID position to start from (used until the first connection succeeds).
    start_gtid: Option<String>,
    in_tx: bool,
    pending: Vec<Change>,
    tables: HashMap<(String, String), Arc<Captured>>,
    table_ids: HashMap<u64, Option<Arc<Captured>>>,
    produced: Vec<ProducedColumn>,
    last_event: Instant,
    /// Transactions committed before this time (ms) are skipped.
    skip_before_ms: Option<i64>,
    /// Whether the server checksums binlog events.
    checksum: bool,
    /// Whether this connection has seen its format description event.
    seen_fde: bool,
}

impl BinlogReader {
    fn idle_limit(&self) -> Duration {
        (self.cfg.heartbeat_interval * 3).max(Duration::from_secs(5))
    }

    async fn open_stream(&self) -> std::result::Result<BinlogStream, (bool, RsqlError)> {
        let cfg = &*self.cfg;
        let mut conn = connect(cfg).await.map_err(|e| (false, e))?;
        let mut setup = vec![
            "SET @master_binlog_checksum = @@global.binlog_checksum".to_string(),
            "SET @mariadb_slave_capability = 4".to_string(),
            format!("SET @master_heartbeat_period = {}", cfg.heartbeat_interval.as_nanos().max(1_000_000)),
        ];
        if let Some(g) = &self.start_gtid {
            setup.push(format!("SET @slave_connect_state = {}", schema::quote_str(g)));
            setup.push("SET @slave_gtid_strict_mode = 0".into());
        }
        for s in &setup {
            conn.query_drop(s)
                .await
                .map_err(|e| (is_fatal(&e), explain(cfg, "preparing the binlog connection", &e)))?;
        }
        let file = self.committed.file.clone();
        let req = BinlogStreamRequest::new(self.server_id).with_filename(file.as_bytes()).with_pos(self.committed.pos);
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
                    info!(position = %self.committed, server_id = self.server_id, "mysql-cdc: reading the binlog");
                    self.stream = Some(s);
                    self.pos = self.committed.clone();
                    self.pending.clear();
                    self.in_tx = false;
                    self.table_ids.clear();
                    self.seen_fde = false;
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
    /// `deadline` passes first.
    async fn next(&mut self, deadline: Option<Instant>) -> Result<Step> {
        loop {
            if self.stream.is_none() {
                self.reconnect().await?;
            }
            let idle_at = self.last_event + self.idle_limit();
            let wake = deadline.map_or(idle_at, |d| d.min(idle_at));
            let Some(stream) = self.stream.as_mut() else { continue };
            let got = tokio::time::timeout_at(wake.into(), stream.next()).await;
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
                    warn!(position = %self.committed, "mysql-cdc: the server closed the binlog connection; reconnecting");
                    self.stream = None;
                }
                Ok(Some(Err(e))) => {
                    if is_fatal(&e) {
                        return Err(explain(&self.cfg, "reading the binlog", &e));
                    }
                    warn!(error = %e, position = %self.committed, "mysql-cdc: binlog connection lost; reconnecting");
                    self.stream = None;
                }
                Ok(Some(Ok(ev))) => {
                    self.last_event = Instant::now();
                    self.start_gtid = None;
                    return self.handle(ev).await;
                }
            }
        }
    }

    async fn handle(&mut self, ev: mysql_async::binlog::events::Event) -> Result<Step> {
        let header = ev.header();
        let ty = header.event_type_raw();
        let ts_ms = header.timestamp() as i64 * 1000;
        let log_pos = header.log_pos() as u64;
        tracing::trace!(event_type = ty, log_pos, size = header.event_size(), position = %self.pos, "mysql-cdc: binlog event");
        let at = format!("mysql-cdc binlog at {}", self.pos);
        let ctx = || at.clone();
        let data_err = |e: std::io::Error| RsqlError::data(at.clone(), e);

        if ty == EventType::ROTATE_EVENT as u8 {
            let r: RotateEvent<'_> = ev.read_event().map_err(data_err)?;
            let mut name = r.name_raw();
            // The rotate event a new connection starts with comes before the format description,
            // so its checksum is still attached to the name.
            if !self.seen_fde && self.checksum && name.len() > 4 {
                name = &name[..name.len() - 4];
            }
            self.pos = BinlogPosition::new(String::from_utf8_lossy(name).into_owned(), r.position());
            if !self.in_tx {
                self.mark_committed();
            }
            return Ok(Step::Progress);
        }
        if ty == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            self.seen_fde = true;
            return Ok(Step::Progress);
        }
        if ty == EventType::HEARTBEAT_EVENT as u8 {
            return Ok(Step::Progress);
        }
        if log_pos > self.pos.pos {
            self.pos.pos = log_pos;
        }

        let mut step = Step::Progress;
        // In timestamp mode, table maps and rows written before the start time are not looked at
        // (the tables may have had other definitions then).
        let before_start = self.skip_before_ms.is_some_and(|min| ts_ms + 999 < min);
        match ty {
            t if before_start && (t == EventType::TABLE_MAP_EVENT as u8 || matches!(t, 23..=25 | 30..=32)) => {}
            maria::GTID_EVENT => {
                let g = maria::parse_gtid(ev.data(), header.server_id())?;
                self.gtids.update(g.domain, g.server, g.seq);
                self.pending.clear();
                self.in_tx = !g.is_standalone();
            }
            maria::GTID_LIST_EVENT => {
                for (d, s, q) in maria::parse_gtid_list(ev.data())? {
                    self.gtids.update(d, s, q);
                }
            }
            maria::BINLOG_CHECKPOINT_EVENT => {
                debug!(file = %maria::parse_binlog_checkpoint(ev.data())?, "mysql-cdc: binlog checkpoint");
            }
            maria::ANNOTATE_ROWS_EVENT => {
                tracing::trace!(statement = %maria::parse_annotate_rows(ev.data()), "mysql-cdc: rows annotation");
            }
            maria::QUERY_COMPRESSED_EVENT | maria::FIRST_ROWS_COMPRESSED_EVENT..=maria::LAST_ROWS_COMPRESSED_EVENT => {
                return Err(RsqlError::connector(
                    ctx(),
                    "the server writes compressed binlog events, which this reader cannot decode; run SET GLOBAL log_bin_compress = OFF",
                ));
            }
            t if t == EventType::XID_EVENT as u8 => {
                step = self.commit(ts_ms);
            }
            t if t == EventType::QUERY_EVENT as u8 => {
                let q = match ev.read_data().map_err(data_err)? {
                    Some(EventData::QueryEvent(q)) => q,
                    _ => return Ok(Step::Progress),
                };
                let sql = q.query();
                let trimmed = sql.trim();
                if trimmed.eq_ignore_ascii_case("BEGIN") {
                    self.pending.clear();
                    self.in_tx = true;
                } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                    step = self.commit(ts_ms);
                } else {
                    self.on_ddl(&q.schema(), trimmed).await?;
                    if !self.in_tx {
                        self.mark_committed();
                    }
                }
            }
            t if t == EventType::TABLE_MAP_EVENT as u8 => {
                let tme: TableMapEvent<'_> = ev.read_event().map_err(data_err)?;
                let key = (tme.database_name().into_owned(), tme.table_name().into_owned());
                let captured = self.tables.get(&key).cloned();
                if let Some(c) = &captured {
                    if tme.columns_count() as usize != c.schema.columns.len() {
                        return Err(RsqlError::connector(
                            ctx(),
                            format!(
                                "table {} has {} columns in the binlog but {} in information_schema: its definition changed while it was being captured; restart the job with a new snapshot",
                                c.schema.qualified(),
                                tme.columns_count(),
                                c.schema.columns.len()
                            ),
                        ));
                    }
                }
                self.table_ids.insert(tme.table_id(), captured);
            }
            23..=25 | 30..=32 => {
                self.decode_rows(&ev, ts_ms)?;
                if !self.in_tx {
                    // Row events outside BEGIN/GTID (old servers): commit at the statement end flag.
                    step = self.commit(ts_ms);
                }
            }
            t if t == EventType::PARTIAL_UPDATE_ROWS_EVENT as u8 => {
                return Err(RsqlError::connector(
                    ctx(),
                    "the server logs partial JSON updates; set binlog_row_value_options = '' so rows are logged whole",
                ));
            }
            _ => {
                if !self.in_tx {
                    self.mark_committed();
                }
            }
        }
        Ok(step)
    }

    fn mark_committed(&mut self) {
        self.committed = self.pos.clone();
        self.committed.gtid_set = self.gtids.to_string();
    }

    fn commit(&mut self, ts_ms: i64) -> Step {
        self.in_tx = false;
        self.mark_committed();
        let changes = std::mem::take(&mut self.pending);
        if self.skip_before_ms.is_some_and(|min| ts_ms < min) {
            return Step::Commit(Vec::new());
        }
        Step::Commit(changes)
    }

    fn decode_rows(&mut self, ev: &mysql_async::binlog::events::Event, ts_ms: i64) -> Result<()> {
        let at = self.pos.clone();
        let data_err = |e: std::io::Error| RsqlError::data(format!("mysql-cdc binlog at {at}"), e);
        let Some(EventData::RowsEvent(re)) = ev.read_data().map_err(data_err)? else { return Ok(()) };
        let Some(Some(table)) = self.table_ids.get(&re.table_id()).cloned() else { return Ok(()) };
        let Some(stream) = self.stream.as_ref() else { return Ok(()) };
        let Some(tme) = stream.get_tme(re.table_id()) else {
            return Err(RsqlError::data(format!("mysql-cdc binlog at {at}"), "a rows event without its table map"));
        };
        let (before_kind, after_kind) = match &re {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => (None, Some(RowKind::Insert)),
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => (Some(RowKind::Delete), None),
            _ => (Some(RowKind::UpdateBefore), Some(RowKind::UpdateAfter)),
        };
        // mysql_common panics on some values (a negative TIME(1)/TIME(2) with a fraction);
        // decode inside catch_unwind so such a row is an error, not a crash.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| re.rows(tme).collect::<Vec<_>>())).map_err(|_| {
            RsqlError::data(
                format!("mysql-cdc binlog at {at}"),
                format!(
                    "the binlog row decoder failed on a row of {} (a negative TIME(1) or TIME(2) value with a fraction is a known case); change such columns to TIME(3) or wider",
                    table.schema.qualified()
                ),
            )
        })?;
        for r in decoded {
            let (before, after) = r.map_err(data_err)?;
            for (img, kind) in [(before, before_kind), (after, after_kind)] {
                let (Some(mut img), Some(kind)) = (img, kind) else { continue };
                let mut row = Vec::with_capacity(table.schema.columns.len());
                for (i, col) in table.schema.columns.iter().enumerate() {
                    if !table.needed[i] {
                        row.push(Datum::Null);
                        continue;
                    }
                    let v = img.take(i).ok_or_else(|| {
                        RsqlError::data(
                            format!("mysql-cdc binlog at {at}"),
                            format!(
                                "column {} of {} is missing from the row image; set binlog_row_image = FULL",
                                col.name,
                                table.schema.qualified()
                            ),
                        )
                    })?;
                    row.push(from_binlog(col, v)?);
                }
                self.pending.push(Change { table: table.clone(), kind, row, ts_ms });
            }
        }
        Ok(())
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
            let Some(old) = self.tables.get(&key).cloned() else { continue };
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
            self.tables.insert(key, Arc::new(c));
            self.table_ids.clear();
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
    /// How far the snapshot is, as reported with positions; None when it is done or not run.
    progress: Option<SnapshotProgress>,
    /// Whether a snapshot still has to run (or go on).
    snapshot_pending: bool,
}

/// Where the snapshot stands, to sort binlog changes into emitted / merged / dropped.
struct SnapState {
    table: usize,
    /// Keys up to here (inclusive) of `table` are emitted.
    done_upto: Option<i128>,
    /// The chunk being merged: keys in (done_upto, upper], or all keys after done_upto when
    /// `upper` is None; None when no chunk is open.
    chunk: Option<Option<i128>>,
    /// Whether `table` is read in one chunk (its key is not one integer column).
    whole: bool,
}

#[derive(PartialEq)]
enum Zone {
    Emitted,
    Chunk,
    Later,
}

impl SnapState {
    fn zone(&self, c: &Change) -> Zone {
        let order = c.table.order;
        if order < self.table {
            return Zone::Emitted;
        }
        if order > self.table {
            return Zone::Later;
        }
        if self.whole {
            return if self.chunk.is_some() { Zone::Chunk } else { Zone::Later };
        }
        let Some(k) = c.table.int_key(&c.row) else { return Zone::Later };
        if self.done_upto.is_some_and(|d| k <= d) {
            return Zone::Emitted;
        }
        match self.chunk {
            Some(None) => Zone::Chunk,
            Some(Some(u)) if k <= u => Zone::Chunk,
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

        // Start position.
        let (start, start_gtid, skip_before_ms) = match &resume {
            Some(r) => (r.binlog.clone(), None, None),
            None => match &cfg.startup {
            StartupMode::Initial | StartupMode::Snapshot | StartupMode::LatestOffset => {
                let mut p = master_status(&mut conn, &cfg).await?;
                if is_mariadb {
                    let g = query_rows(&mut conn, &cfg, "reading the GTID position", "SELECT @@gtid_binlog_pos").await?;
                    p.gtid_set = g.first().and_then(|r| row_str(r, 0)).unwrap_or_default();
                }
                (p, None, None)
            }
            StartupMode::EarliestOffset | StartupMode::Timestamp(_) => {
                let logs = query_rows(&mut conn, &cfg, "listing binlog files (SHOW BINARY LOGS)", "SHOW BINARY LOGS").await?;
                let first = logs.first().and_then(|r| row_str(r, 0)).ok_or_else(|| RsqlError::connector(name.clone(), "the server has no binlog files"))?;
                let skip = match cfg.startup {
                    StartupMode::Timestamp(ms) => Some(ms),
                    _ => None,
                };
                (BinlogPosition::new(first, 4), None, skip)
            }
            StartupMode::SpecificOffset { file, pos, gtid_set } => match (file, gtid_set) {
                (Some(f), _) => (BinlogPosition::new(f.clone(), *pos), None, None),
                (None, Some(g)) if is_mariadb => (BinlogPosition::new("", 4), Some(g.clone()), None),
                (None, _) => {
                    return Err(RsqlError::connector(
                        name,
                        "starting from 'scan.startup.specific-offset.gtid-set' is supported on MariaDB only; give 'scan.startup.specific-offset.file' and '.pos'",
                    ))
                }
            },
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
        let gtids = MariaGtidState::parse(&start.gtid_set).unwrap_or_default();
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
        let reader = BinlogReader {
            cfg: cfg.clone(),
            server_id,
            stream: None,
            pos: start.clone(),
            committed: start,
            gtids,
            start_gtid,
            in_tx: false,
            pending: Vec::new(),
            tables: tables.iter().map(|t| ((t.schema.database.clone(), t.schema.table.clone()), t.clone())).collect(),
            table_ids: HashMap::new(),
            produced: produced.to_vec(),
            last_event: Instant::now(),
            skip_before_ms,
            checksum,
            seen_fde: false,
        };
        let emitter = Emitter::new(produced, tz_offset_us, ctx)?;
        let snapshot_pending = progress.is_some();
        Ok(Job { cfg, reader, emitter, tables, position, snapshot_conn, progress, snapshot_pending })
    }

    /// The position that reproduces exactly what follows what was handed downstream.
    fn resume_point(&self) -> Resume {
        Resume { binlog: self.reader.committed.clone(), snapshot: self.progress.clone() }
    }

    fn publish_position(&self) {
        if let Ok(mut p) = self.position.lock() {
            *p = Some(self.reader.committed.clone());
        }
    }

    /// Hands on the buffered rows and reports the position after them; call only at a point
    /// from which a restart reproduces what follows (transaction and chunk boundaries).
    async fn flush(&mut self, ctx: &SourceContext) -> Result<()> {
        self.emitter.flush(ctx).await?;
        self.publish_position();
        ctx.position(self.resume_point().encode()).await
    }

    async fn run(&mut self, ctx: &mut SourceContext) -> Result<()> {
        if self.snapshot_pending {
            if !self.snapshot(ctx).await? {
                return self.flush(ctx).await;
            }
            if let Some(c) = self.snapshot_conn.take() {
                let _ = c.disconnect().await;
            }
            if self.cfg.startup == StartupMode::Snapshot {
                self.flush(ctx).await?;
                if let Some(s) = self.reader.stream.take() {
                    let _ = s.close().await;
                }
                return Ok(());
            }
        }
        self.publish_position();
        loop {
            let deadline = self.emitter.deadline();
            let step = tokio::select! {
                biased;
                _ = ctx.stopped() => {
                    return self.flush(ctx).await;
                }
                s = self.reader.next(deadline) => s?,
            };
            match step {
                Step::Commit(changes) => {
                    for (c, kind) in pair_kinds(&changes, |_| true) {
                        self.emitter.push(&c.table, kind, &c.row, c.ts_ms)?;
                    }
                    if self.emitter.len() >= self.emitter.batch_size {
                        self.flush(ctx).await?;
                    }
                }
                Step::Idle => self.flush(ctx).await?,
                Step::Progress => {
                    if self.emitter.len() == 0 {
                        self.publish_position();
                    }
                }
            }
        }
    }

    /// Reads every table; false when the job was asked to stop.
    async fn snapshot(&mut self, ctx: &mut SourceContext) -> Result<bool> {
        let tables = self.tables.clone();
        let total_est: u64 = tables.iter().map(|t| t.schema.estimated_rows).sum();
        let started = Instant::now();
        let mut total_rows = 0u64;
        let mut last_log = Instant::now();
        let first = self.progress.clone();
        for t in &tables {
            let whole = !t.schema.has_integer_key();
            let mut state = SnapState { table: t.order, done_upto: None, chunk: None, whole };
            if let Some(p) = &first {
                let at = tables.iter().position(|x| x.schema.qualified() == p.table).unwrap_or(0);
                if t.order < at {
                    continue;
                }
                if t.order == at && !whole {
                    state.done_upto = p.done_upto;
                }
            }
            self.progress = Some(SnapshotProgress { table: t.schema.qualified(), done_upto: state.done_upto });
            let cols: Vec<String> = t.schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let from = format!("{}.{}", quote_ident(&t.schema.database), quote_ident(&t.schema.table));
            loop {
                let Some(conn) = self.snapshot_conn.as_mut() else { return Ok(true) };
                let low = master_status(conn, &self.cfg).await?;
                if !self.drain_to(&low, &state, None, ctx).await? {
                    return Ok(false);
                }
                let sql = if whole {
                    format!("SELECT {} FROM {from}", cols.join(", "))
                } else {
                    let key = quote_ident(&t.schema.columns[t.schema.primary_key[0]].name);
                    let cond = state.done_upto.map(|d| format!(" WHERE {key} > {d}")).unwrap_or_default();
                    format!("SELECT {} FROM {from}{cond} ORDER BY {key} LIMIT {}", cols.join(", "), self.cfg.chunk_size)
                };
                let Some(conn) = self.snapshot_conn.as_mut() else { return Ok(true) };
                let rows = read_chunk(conn, &self.cfg, t, &sql).await?;
                let upper = if whole || rows.len() < self.cfg.chunk_size {
                    None
                } else {
                    rows.last().and_then(|(_, r)| t.int_key(r))
                };
                let high = master_status(conn, &self.cfg).await?;
                state.chunk = Some(upper);
                debug!(table = %t.schema.qualified(), rows = rows.len(), ?upper, %low, %high, "mysql-cdc: snapshot chunk read");
                let mut merged: HashMap<String, Option<Vec<Datum>>> = HashMap::new();
                if !self.drain_to(&high, &state, Some(&mut merged), ctx).await? {
                    return Ok(false);
                }
                let n = rows.len();
                for (key, row) in rows {
                    if !merged.contains_key(&key) {
                        self.emitter.push(t, RowKind::Insert, &row, 0)?;
                        if self.emitter.len() >= self.emitter.batch_size {
                            // Mid-chunk: no position, a restart re-reads the whole chunk.
                            self.emitter.flush(ctx).await?;
                        }
                    }
                }
                for row in merged.into_values().flatten() {
                    self.emitter.push(t, RowKind::Insert, &row, 0)?;
                }
                self.progress = match upper {
                    Some(u) => Some(SnapshotProgress { table: t.schema.qualified(), done_upto: Some(u) }),
                    None => tables
                        .get(t.order + 1)
                        .map(|next| SnapshotProgress { table: next.schema.qualified(), done_upto: None }),
                };
                self.flush(ctx).await?;
                total_rows += n as u64;
                if last_log.elapsed() >= Duration::from_secs(5) {
                    last_log = Instant::now();
                    let rate = total_rows as f64 / started.elapsed().as_secs_f64().max(0.001);
                    info!(table = %t.schema.qualified(), rows = total_rows, estimated_total = total_est, rows_per_sec = rate as u64, "mysql-cdc: snapshot progress");
                }
                state.chunk = None;
                match upper {
                    Some(u) => state.done_upto = Some(u),
                    None => break,
                }
            }
            let rate = total_rows as f64 / started.elapsed().as_secs_f64().max(0.001);
            info!(table = %t.schema.qualified(), rows = total_rows, estimated_total = total_est, rows_per_sec = rate as u64, "mysql-cdc: snapshot of table done");
        }
        info!(rows = total_rows, seconds = started.elapsed().as_secs_f64(), position = %self.reader.committed, "mysql-cdc: snapshot done; reading the binlog");
        Ok(true)
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
        while !self.reader.pos.reached(target) || self.reader.in_tx {
            let step = tokio::select! {
                biased;
                _ = ctx.stopped() => return Ok(false),
                s = self.reader.next(None) => s?,
            };
            let Step::Commit(changes) = step else { continue };
            for (c, kind) in pair_kinds(&changes, |c| state.zone(c) == Zone::Emitted) {
                self.emitter.push(&c.table, kind, &c.row, c.ts_ms)?;
            }
            if let Some(m) = merged.as_deref_mut() {
                for c in changes.iter().filter(|c| state.zone(c) == Zone::Chunk) {
                    let key = c.table.key(&c.row);
                    match c.kind {
                        RowKind::Insert | RowKind::UpdateAfter => m.insert(key, Some(c.row.clone())),
                        RowKind::Delete | RowKind::UpdateBefore => m.insert(key, None),
                    };
                }
            }
            if self.emitter.len() >= self.emitter.batch_size {
                self.flush(ctx).await?;
            }
        }
        Ok(true)
    }
}

/// The changes that pass `keep`, with update halves whose other half was dropped turned into a
/// plain delete or insert.
fn pair_kinds(changes: &[Change], keep: impl Fn(&Change) -> bool) -> Vec<(&Change, RowKind)> {
    let mut out = Vec::with_capacity(changes.len());
    let mut i = 0;
    while i < changes.len() {
        let c = &changes[i];
        if c.kind == RowKind::UpdateBefore && i + 1 < changes.len() && changes[i + 1].kind == RowKind::UpdateAfter {
            let a = &changes[i + 1];
            match (keep(c), keep(a)) {
                (true, true) => {
                    out.push((c, RowKind::UpdateBefore));
                    out.push((a, RowKind::UpdateAfter));
                }
                (true, false) => out.push((c, RowKind::Delete)),
                (false, true) => out.push((a, RowKind::Insert)),
                (false, false) => {}
            }
            i += 2;
            continue;
        }
        if keep(c) {
            out.push((c, c.kind));
        }
        i += 1;
    }
    out
}

/// Runs one chunk query; returns (key, natural row) pairs in key order.
async fn read_chunk(conn: &mut Conn, cfg: &CdcConfig, t: &Captured, sql: &str) -> Result<Vec<(String, Vec<Datum>)>> {
    let doing = format!("reading a snapshot chunk of {}", t.schema.qualified());
    let mut result = conn.query_iter(sql).await.map_err(|e| explain(cfg, &doing, &e))?;
    let mut out = Vec::new();
    while let Some(row) = result.next().await.map_err(|e| explain(cfg, &doing, &e))? {
        let mut nat = Vec::with_capacity(t.schema.columns.len());
        for (i, col) in t.schema.columns.iter().enumerate() {
            if !t.needed[i] {
                nat.push(Datum::Null);
                continue;
            }
            let v = row.as_ref(i).ok_or_else(|| {
                RsqlError::data(doing.clone(), "the server returned fewer columns than the table has")
            })?;
            nat.push(from_text(col, v)?);
        }
        out.push((t.key(&nat), nat));
    }
    Ok(out)
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
        let schema = TableSchema {
            database: "d".into(),
            table: "t".into(),
            columns: vec![super::super::schema::tests::col("int", "int(11)")],
            primary_key: vec![0],
            estimated_rows: 0,
        };
        let table = Arc::new(Captured { schema, map: vec![Some(0)], needed: vec![true], order: 0 });
        let ch = |kind, k| Change { table: table.clone(), kind, row: vec![Datum::Int(k)], ts_ms: 0 };
        let changes = vec![
            ch(RowKind::UpdateBefore, 1),
            ch(RowKind::UpdateAfter, 100),
            ch(RowKind::Insert, 2),
            ch(RowKind::Delete, 200),
        ];
        let state = SnapState { table: 0, done_upto: Some(10), chunk: None, whole: false };
        let kept: Vec<(i64, RowKind)> = pair_kinds(&changes, |c| state.zone(c) == Zone::Emitted)
            .into_iter()
            .map(|(c, k)| (if let Datum::Int(i) = c.row[0] { i } else { -1 }, k))
            .collect();
        assert_eq!(kept, vec![(1, RowKind::Delete), (2, RowKind::Insert)]);
        let chunk = SnapState { table: 0, done_upto: Some(10), chunk: Some(Some(150)), whole: false };
        assert!(chunk.zone(&changes[1]) == Zone::Chunk);
        assert!(chunk.zone(&changes[3]) == Zone::Later);
        assert!(chunk.zone(&changes[0]) == Zone::Emitted);
    }
}
