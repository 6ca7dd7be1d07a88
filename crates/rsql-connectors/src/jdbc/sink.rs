//! The jdbc sink: buffers changes, keeps only the last change per primary key (as Flink's JDBC
//! upsert sink does), and writes a buffer in one transaction of multi-row
//! `DELETE ... WHERE key IN (...)` and `INSERT ... ON DUPLICATE KEY UPDATE` statements; tables
//! without a primary key get plain multi-row `INSERT`s.
//!
//! When: the buffer is written once it holds `sink.buffer-flush.max-rows` changes, once its oldest
//! change is `sink.buffer-flush.interval` old (a background task checks, so an idle stream is
//! written too), and at every `flush` (checkpoints and the end of the job). Writes are serialized,
//! so the changes of one key reach MySQL in order.
//!
//! Guarantee: after `flush` returns, every change written before it is committed in MySQL
//! (at-least-once; upserts and deletes are idempotent, so a replay converges to the same table;
//! plain inserts of an append-only table may repeat after a failure at commit time).
//!
//! Failures: lost connections, deadlocks and lock wait timeouts roll the transaction back,
//! reconnect and retry the whole buffer with backoff, up to `sink.max-retries` times. A row that
//! MySQL refuses (too long, out of range, NULL into NOT NULL, ...) stops the job with the table,
//! the column and the row.

use crate::background::{spawn_interval_flusher, ErrorSlot, IntervalBuffer};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, TxOpts, Value};
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::Sink;
use tokio::sync::Mutex;

use super::schema::{check_target, TargetTable};
use super::values::{encode_key_part, param_at, show_row};
use super::JdbcConfig;
use crate::mysql_cdc::schema::quote_ident;

/// Server errors worth a retry: the statement may succeed on another try.
const ER_CON_COUNT_ERROR: u16 = 1040;
const ER_SERVER_SHUTDOWN: u16 = 1053;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290;
const ER_QUERY_INTERRUPTED: u16 = 1317;
const ER_CONNECTION_KILLED: u16 = 1927;
const ER_ACCESS_DENIED: u16 = 1045;
const ER_DBACCESS_DENIED: u16 = 1044;
const ER_TABLEACCESS_DENIED: u16 = 1142;
const ER_DUP_ENTRY: u16 = 1062;

fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => matches!(
            s.code,
            ER_CON_COUNT_ERROR
                | ER_SERVER_SHUTDOWN
                | ER_LOCK_WAIT_TIMEOUT
                | ER_LOCK_DEADLOCK
                | ER_OPTION_PREVENTS_STATEMENT
                | ER_QUERY_INTERRUPTED
                | ER_CONNECTION_KILLED
        ),
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(d) => matches!(
            d,
            mysql_async::DriverError::ConnectionClosed
                | mysql_async::DriverError::PacketOutOfOrder
                | mysql_async::DriverError::UnexpectedPacket { .. }
        ),
        mysql_async::Error::Other(_) | mysql_async::Error::Url(_) => false,
    }
}

/// One buffered change.
#[derive(Clone, Debug)]
struct Change {
    kind: RowKind,
    values: Vec<Value>,
}

impl Change {
    fn is_delete(&self) -> bool {
        matches!(self.kind, RowKind::Delete | RowKind::UpdateBefore)
    }
}

/// Buffered changes: in upsert mode one per key (the last one), in arrival order of the keys.
#[derive(Default)]
struct Buffer {
    index: HashMap<Vec<u8>, usize>,
    changes: Vec<Change>,
    since: Option<Instant>,
}

impl Buffer {
    fn len(&self) -> usize {
        self.changes.len()
    }
    fn clear(&mut self) {
        self.index.clear();
        self.changes.clear();
        self.since = None;
    }
}

/// Why a write attempt failed.
enum Failure {
    /// Worth another try on a new connection.
    Transient(String),
    /// Retrying cannot help.
    Fatal(RsqlError),
}

/// Which statement of a write failed, to find the row.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Group {
    Upserts,
    Deletes,
}

/// The connection, the buffer and the statements; shared with the interval flusher.
struct Writer {
    cfg: Arc<JdbcConfig>,
    conn: Option<Conn>,
    target: Option<TargetTable>,
    buffer: Buffer,
    /// Target column names in the declared order.
    names: Vec<String>,
    /// Declared names, for messages.
    declared: Vec<String>,
    rows_per_statement: usize,
    written: u64,
}

impl Writer {
    fn new(cfg: Arc<JdbcConfig>) -> Writer {
        let declared: Vec<String> = cfg.columns.iter().map(|(n, _)| n.clone()).collect();
        let n = cfg.columns.len().max(1);
        Writer {
            names: declared.clone(),
            declared,
            rows_per_statement: (60_000 / n).clamp(1, 1000),
            cfg,
            conn: None,
            target: None,
            buffer: Buffer::default(),
            written: 0,
        }
    }

    fn ctx(&self) -> String {
        self.cfg.context()
    }

    /// Connects (within `connection.max-retry-timeout`) and, the first time, checks the table.
    async fn ensure_ready(&mut self) -> std::result::Result<(), Failure> {
        if self.conn.is_some() {
            return Ok(());
        }
        let ctx = self.ctx();
        let mut conn = match tokio::time::timeout(self.cfg.connect_timeout, Conn::new(self.cfg.conn_opts())).await {
            Ok(Ok(c)) => c,
            Ok(Err(mysql_async::Error::Server(s))) if matches!(s.code, ER_ACCESS_DENIED | ER_DBACCESS_DENIED) => {
                return Err(Failure::Fatal(RsqlError::connector(
                    ctx,
                    format!("the server refused user '{}': {}; check 'username', 'password' and the user's grants", self.cfg.username.as_deref().unwrap_or(""), s.message),
                )))
            }
            Ok(Err(e)) if is_transient(&e) => {
                return Err(Failure::Transient(format!("cannot connect: {e}; check 'url' and that the server listens there")))
            }
            Ok(Err(e)) => return Err(Failure::Fatal(RsqlError::connector(ctx, format!("cannot connect: {e}")))),
            Err(_) => {
                return Err(Failure::Transient(format!(
                    "no connection within 'connection.max-retry-timeout' ({:?}); check 'url' and the network",
                    self.cfg.connect_timeout
                )))
            }
        };
        if self.target.is_none() {
            let t = check_target(&mut conn, &self.cfg).await.map_err(Failure::Fatal)?;
            self.names = t.columns.iter().map(|c| c.name.clone()).collect();
            self.target = Some(t);
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Adds one row of a batch to the buffer.
    fn push(&mut self, batch: &ChangeBatch, row: usize) -> Result<()> {
        let kind = batch.kinds[row];
        let mut values = Vec::with_capacity(batch.data.num_columns());
        for col in batch.data.columns() {
            values.push(param_at(col.as_ref(), row)?);
        }
        let change = Change { kind, values };
        self.buffer.since.get_or_insert_with(Instant::now);
        if self.cfg.is_upsert() {
            let mut key = Vec::with_capacity(16);
            for &k in &self.cfg.key {
                encode_key_part(&change.values[k], &mut key);
            }
            match self.buffer.index.get(&key) {
                Some(&i) => self.buffer.changes[i] = change,
                None => {
                    self.buffer.index.insert(key, self.buffer.changes.len());
                    self.buffer.changes.push(change);
                }
            }
        } else {
            if kind != RowKind::Insert {
                return Err(RsqlError::execution(format!(
                    "{}: got a {kind} row, but a table without a PRIMARY KEY takes only inserts",
                    self.ctx()
                )));
            }
            self.buffer.changes.push(change);
        }
        Ok(())
    }

    fn table_sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.cfg.database), quote_ident(&self.cfg.table))
    }

    /// `INSERT INTO t (..) VALUES (..), ... [ON DUPLICATE KEY UPDATE ..]` for `rows` rows.
    fn insert_sql(&self, rows: usize) -> String {
        let cols: Vec<String> = self.names.iter().map(|n| quote_ident(n)).collect();
        let one = format!("({})", vec!["?"; cols.len()].join(", "));
        let mut s = format!("INSERT INTO {} ({}) VALUES {}", self.table_sql(), cols.join(", "), vec![one; rows].join(", "));
        if self.cfg.is_upsert() {
            let mut updates: Vec<String> = (0..cols.len())
                .filter(|i| !self.cfg.key.contains(i))
                .map(|i| format!("{c} = VALUES({c})", c = cols[i]))
                .collect();
            if updates.is_empty() {
                let c = &cols[self.cfg.key[0]];
                updates.push(format!("{c} = VALUES({c})"));
            }
            s.push_str(" ON DUPLICATE KEY UPDATE ");
            s.push_str(&updates.join(", "));
        }
        s
    }

    /// `DELETE FROM t WHERE k IN (?, ..)` / `WHERE (k1, k2) IN ((?, ?), ..)` for `rows` keys.
    fn delete_sql(&self, rows: usize) -> String {
        let keys: Vec<String> = self.cfg.key.iter().map(|&i| quote_ident(&self.names[i])).collect();
        if keys.len() == 1 {
            format!("DELETE FROM {} WHERE {} IN ({})", self.table_sql(), keys[0], vec!["?"; rows].join(", "))
        } else {
            let one = format!("({})", vec!["?"; keys.len()].join(", "));
            format!("DELETE FROM {} WHERE ({}) IN ({})", self.table_sql(), keys.join(", "), vec![one; rows].join(", "))
        }
    }

    fn params(&self, group: Group, rows: &[&Change]) -> Params {
        let mut p = Vec::with_capacity(rows.len() * self.names.len());
        for c in rows {
            match group {
                Group::Upserts => p.extend(c.values.iter().cloned()),
                Group::Deletes => p.extend(self.cfg.key.iter().map(|&k| c.values[k].clone())),
            }
        }
        Params::Positional(p)
    }

    fn sql(&self, group: Group, rows: usize) -> String {
        match group {
            Group::Upserts => self.insert_sql(rows),
            Group::Deletes => self.delete_sql(rows),
        }
    }

    /// Writes every buffered change, retrying transient failures; the buffer is emptied only
    /// once the transaction committed.
    async fn flush_buffer(&mut self) -> Result<()> {
        if self.buffer.len() == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let r = match self.ensure_ready().await {
                Ok(()) => self.write_once().await,
                Err(f) => Err(f),
            };
            match r {
                Ok(()) => {
                    let n = self.buffer.len();
                    self.written += n as u64;
                    self.buffer.clear();
                    tracing::debug!(table = %self.cfg.flink_table, rows = n, ms = started.elapsed().as_millis() as u64, "jdbc sink wrote a buffer");
                    return Ok(());
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(msg)) => {
                    self.conn = None;
                    if attempt >= self.cfg.max_retries {
                        return Err(RsqlError::connector(
                            self.ctx(),
                            format!(
                                "writing {} buffered change(s) failed after {} retries: {msg}; raise 'sink.max-retries' to wait longer",
                                self.buffer.len(),
                                attempt
                            ),
                        ));
                    }
                    let backoff = Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(10));
                    attempt += 1;
                    tracing::warn!(table = %self.cfg.flink_table, "jdbc sink: {msg}; retry {attempt} of {} in {:?}", self.cfg.max_retries, backoff);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// The statements of one write: groups of buffer indices, deletes first (so a value of a
    /// unique column freed by a deleted key can go to an upserted one), arrival order kept.
    fn plan(&self) -> Vec<(Group, Vec<usize>)> {
        let (dels, ups): (Vec<usize>, Vec<usize>) = (0..self.buffer.len()).partition(|&i| self.buffer.changes[i].is_delete());
        dels.chunks(self.rows_per_statement)
            .map(|c| (Group::Deletes, c.to_vec()))
            .chain(ups.chunks(self.rows_per_statement).map(|c| (Group::Upserts, c.to_vec())))
            .collect()
    }

    fn statement(&self, group: Group, idx: &[usize]) -> (String, Params) {
        let rows: Vec<&Change> = idx.iter().map(|&i| &self.buffer.changes[i]).collect();
        (self.sql(group, rows.len()), self.params(group, &rows))
    }

    /// One transaction with every buffered change.
    async fn write_once(&mut self) -> std::result::Result<(), Failure> {
        let plan = self.plan();
        let statements: Vec<(String, Params)> = plan.iter().map(|(g, idx)| self.statement(*g, idx)).collect();
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Transient("not connected".into()));
        };
        let mut tx = conn.start_transaction(TxOpts::default()).await.map_err(|e| classify(&e, "starting a transaction"))?;
        let mut failed: Option<(usize, mysql_async::Error)> = None;
        for (i, (sql, params)) in statements.into_iter().enumerate() {
            if let Err(e) = tx.exec_drop(sql, params).await {
                failed = Some((i, e));
                break;
            }
        }
        match failed {
            None => tx.commit().await.map_err(|e| classify(&e, "committing")),
            Some((_, e)) if is_transient(&e) => {
                drop(tx);
                Err(Failure::Transient(format!("writing: {e}")))
            }
            Some((i, e)) => {
                let _ = tx.rollback().await;
                Err(Failure::Fatal(self.explain_failure(&plan, i, e).await))
            }
        }
    }

    /// Finds the row a refused statement choked on and says what to fix.
    async fn explain_failure(&mut self, plan: &[(Group, Vec<usize>)], failed: usize, e: mysql_async::Error) -> RsqlError {
        let (group, idx) = (plan[failed].0, &plan[failed].1);
        let rows: Vec<Change> = idx.iter().map(|&i| self.buffer.changes[i].clone()).collect();
        let (mut culprit, mut message) = (None, server_message(&e));
        if let Some(n) = row_number(&message) {
            culprit = rows.get(n.saturating_sub(1)).cloned();
        }
        if culprit.is_none() {
            if let Some((c, m)) = self.replay(&plan[..failed], group, idx).await {
                culprit = Some(c);
                message = m;
            }
        }
        let what = match group {
            Group::Upserts if self.cfg.is_upsert() => "upserting",
            Group::Upserts => "inserting",
            Group::Deletes => "deleting",
        };
        let row = match &culprit {
            Some(c) => show_row(c.kind, &self.declared, &c.values),
            None => format!("one of {} rows, the first {}", rows.len(), rows.first().map(|c| show_row(c.kind, &self.declared, &c.values)).unwrap_or_default()),
        };
        let mut hint = String::new();
        if let Some(col) = column_in_message(&message) {
            if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(&col)) {
                let mysql_type = self.target.as_ref().map(|t| t.columns[i].column_type.clone()).unwrap_or_default();
                hint = format!(
                    "; column '{}' is {} in the Flink table and {} in MySQL",
                    self.declared[i], self.cfg.columns[i].1, mysql_type
                );
            }
        }
        if matches!(&e, mysql_async::Error::Server(s) if s.code == ER_DUP_ENTRY) && !self.cfg.is_upsert() {
            hint.push_str("; the MySQL table has a unique key: declare it as PRIMARY KEY (...) NOT ENFORCED to upsert");
        }
        if matches!(&e, mysql_async::Error::Server(s) if s.code == ER_TABLEACCESS_DENIED) {
            hint.push_str(&format!(
                "; grant it with GRANT INSERT, UPDATE, DELETE ON {}.* TO '{}'",
                self.cfg.database,
                self.cfg.username.as_deref().unwrap_or("")
            ));
        }
        RsqlError::connector(self.ctx(), format!("{what} row {row} failed: {message}{hint}"))
    }

    /// Runs the statements before the failing one again, then the failing rows one at a time,
    /// in a transaction that is rolled back; returns the first row that fails and its error.
    async fn replay(&mut self, before: &[(Group, Vec<usize>)], group: Group, idx: &[usize]) -> Option<(Change, String)> {
        let prior: Vec<(String, Params)> = before.iter().map(|(g, i)| self.statement(*g, i)).collect();
        let singles: Vec<(String, Params)> = idx.iter().map(|&i| self.statement(group, &[i])).collect();
        let rows: Vec<Change> = idx.iter().map(|&i| self.buffer.changes[i].clone()).collect();
        let conn = self.conn.as_mut()?;
        let mut tx = conn.start_transaction(TxOpts::default()).await.ok()?;
        for (sql, p) in prior {
            if tx.exec_drop(sql, p).await.is_err() {
                let _ = tx.rollback().await;
                return None;
            }
        }
        let mut found = None;
        for (i, (sql, p)) in singles.into_iter().enumerate() {
            if let Err(e) = tx.exec_drop(sql, p).await {
                found = Some((rows[i].clone(), server_message(&e)));
                break;
            }
        }
        let _ = tx.rollback().await;
        found
    }
}

fn classify(e: &mysql_async::Error, doing: &str) -> Failure {
    if is_transient(e) {
        Failure::Transient(format!("{doing}: {e}"))
    } else {
        Failure::Fatal(RsqlError::connector("jdbc", format!("{doing}: {e}")))
    }
}

fn server_message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (MySQL error {})", s.message, s.code),
        other => other.to_string(),
    }
}

/// `... at row 3` -> 3.
fn row_number(message: &str) -> Option<usize> {
    let i = message.rfind("at row ")?;
    message[i + 7..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// `... column 'name' ...` / `Column 'name' cannot be null` -> name.
fn column_in_message(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let i = lower.find("column '")?;
    let rest = &message[i + 8..];
    let end = rest.find('\'')?;
    Some(rest[..end].to_string())
}

/// The jdbc sink.
pub struct JdbcSink {
    cfg: Arc<JdbcConfig>,
    shared: Arc<Mutex<Writer>>,
    flusher: Option<tokio::task::JoinHandle<()>>,
    /// A failure of the start-up check or of the interval flusher, reported by the next call.
    background_error: ErrorSlot,
}

impl JdbcSink {
    /// Creates the sink; inside a tokio runtime it connects and checks the table right away (the
    /// first write waits for that, and reports its failure).
    pub fn new(cfg: JdbcConfig) -> JdbcSink {
        let cfg = Arc::new(cfg);
        let shared = Arc::new(Mutex::new(Writer::new(cfg.clone())));
        let background_error = ErrorSlot::default();
        if let (Ok(handle), Ok(mut guard)) = (tokio::runtime::Handle::try_current(), shared.clone().try_lock_owned()) {
            let slot = background_error.clone();
            handle.spawn(async move {
                match guard.ensure_ready().await {
                    Ok(()) => {}
                    Err(Failure::Fatal(e)) => {
                        tracing::error!("{e}");
                        slot.put(e);
                    }
                    // The first write retries with backoff.
                    Err(Failure::Transient(m)) => tracing::warn!(table = %guard.cfg.flink_table, "jdbc sink: {m}"),
                }
            });
        }
        JdbcSink { cfg, shared, flusher: None, background_error }
    }

    /// Changes written to MySQL so far.
    pub async fn written(&self) -> u64 {
        self.shared.lock().await.written
    }

    fn start_flusher(&mut self) {
        let Some(interval) = self.cfg.buffer_interval else { return };
        if self.flusher.is_some() {
            return;
        }
        self.flusher = Some(spawn_interval_flusher(self.shared.clone(), interval, self.background_error.clone()));
    }

    fn check_background(&self) -> Result<()> {
        self.background_error.check()
    }
}

#[async_trait]
impl IntervalBuffer for Writer {
    fn oldest(&self) -> Option<Instant> {
        self.buffer.since
    }
    async fn flush_interval(&mut self) -> Result<()> {
        self.flush_buffer().await
    }
}

#[async_trait]
impl Sink for JdbcSink {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        self.check_background()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.start_flusher();
        let mut w = self.shared.lock().await;
        self.check_background()?;
        for row in 0..batch.num_rows() {
            w.push(&batch, row)?;
        }
        if self.cfg.buffer_max_rows > 0 && w.buffer.len() >= self.cfg.buffer_max_rows {
            w.flush_buffer().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.check_background()?;
        let mut w = self.shared.lock().await;
        self.check_background()?;
        w.flush_buffer().await
    }

    async fn close(&mut self) -> Result<()> {
        let r = self.flush().await;
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
        let conn = self.shared.lock().await.conn.take();
        if let Some(c) = conn {
            let _ = c.disconnect().await;
        }
        r
    }
}

impl Drop for JdbcSink {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(row_number("Data too long for column 'name' at row 17"), Some(17));
        assert_eq!(row_number("Duplicate entry '1' for key 'PRIMARY'"), None);
        assert_eq!(column_in_message("Column 'name' cannot be null").as_deref(), Some("name"));
        assert_eq!(column_in_message("Out of range value for column 'age' at row 1").as_deref(), Some("age"));
    }
}
