//! The jdbc table as the dimension side of a lookup join: rows are read by key from MySQL when
//! input rows arrive, with Flink's `lookup.cache.*` cache and `lookup.max-retries`.
//!
//! One query per input batch asks for every key the cache does not hold:
//! `SELECT q.i, t.cols FROM (SELECT 0 AS i, ? AS k0 UNION ALL SELECT 1, ? ...) q JOIN t ON
//! t.key = q.k0`, so MySQL itself decides which row matches which key (its collations and type
//! conversions apply, as they would for Flink's `WHERE key = ?`). The connection lives on a thread
//! of its own (the join operator calls in synchronously); it is opened at the first lookup, which
//! also checks that the table has the declared columns with readable types.
//!
//! Cache: with `lookup.cache.max-rows` (or `lookup.partial-cache.max-rows`) > 0, the rows found
//! for a key (and, with `lookup.cache.caching-missing-key`, the absence of rows) are kept for
//! `lookup.cache.ttl` after they were read; when the cache is full the oldest key goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Value};
use rsql_common::arrow::array::Array;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::{Datum, RowsBuilder};
use rsql_common::{Result, RsqlError};
use rsql_runtime::LookupFunction;

use super::values::{encode_key_part, param_at};
use super::JdbcConfig;
use crate::mysql_cdc::decode::{from_text, to_declared};
use crate::mysql_cdc::schema::{quote_ident, read_columns, MySqlColumn};

/// Keys asked per query.
const KEYS_PER_QUERY: usize = 500;

/// Rows found for one key, as declared values.
type Found = Vec<Vec<Datum>>;

/// Rows read from MySQL: (index of the key asked, the row's declared values).
type Rows = Vec<(u32, Vec<Datum>)>;

struct Request {
    keys: Vec<Vec<Value>>,
    reply: mpsc::SyncSender<Result<Rows>>,
}

/// The connection side, on its own thread.
struct Reader {
    cfg: Arc<JdbcConfig>,
    key_names: Vec<String>,
    conn: Option<Conn>,
    /// MySQL columns of the declared columns, read at the first lookup.
    columns: Option<Vec<MySqlColumn>>,
    /// The last failure was the table check (not worth a retry).
    table_error: bool,
}

impl Reader {
    fn ctx(&self) -> String {
        format!("{} lookup", self.cfg.context())
    }

    async fn connect(&mut self) -> Result<()> {
        if self.conn.is_some() {
            return Ok(());
        }
        let ctx = self.ctx();
        let mut conn = match tokio::time::timeout(self.cfg.connect_timeout, Conn::new(self.cfg.conn_opts())).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(RsqlError::connector(ctx, format!("cannot connect: {e}; check 'url', 'username' and 'password'"))),
            Err(_) => return Err(RsqlError::connector(ctx, "no connection within 'connection.max-retry-timeout'")),
        };
        if self.columns.is_none() {
            // Anything wrong with the table is for the user to fix: no retry.
            self.table_error = true;
            let cols = read_columns(&mut conn, &self.cfg.database, &self.cfg.table, &ctx).await?;
            if cols.is_empty() {
                return Err(RsqlError::connector(
                    ctx,
                    format!("the table {}.{} does not exist or the user cannot see it; check 'url' and 'table-name'", self.cfg.database, self.cfg.table),
                ));
            }
            let mut matched = Vec::new();
            for (name, ty) in &self.cfg.columns {
                let Some(c) = cols.iter().find(|c| c.name.eq_ignore_ascii_case(name)) else {
                    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
                    return Err(RsqlError::connector(
                        ctx,
                        format!("column '{name}' is declared but {}.{} has no such column (it has: {})", self.cfg.database, self.cfg.table, names.join(", ")),
                    ));
                };
                c.check_declared(ty).map_err(|why| RsqlError::connector(ctx.clone(), format!("column '{name}': {why}")))?;
                matched.push(c.clone());
            }
            self.columns = Some(matched);
            self.table_error = false;
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// `SELECT q.i, t.c1, .. FROM (SELECT 0 AS i, ? AS k0 .. UNION ALL SELECT 1, ? ..) q JOIN t ON ..`.
    fn sql(&self, keys: usize) -> String {
        let cols = self.columns.as_deref().unwrap_or_default();
        let select: Vec<String> = cols.iter().map(|c| format!("t.{}", quote_ident(&c.name))).collect();
        let key_cols: Vec<&MySqlColumn> =
            self.key_names.iter().filter_map(|k| cols.iter().find(|c| c.name.eq_ignore_ascii_case(k))).collect();
        let mut rows = Vec::with_capacity(keys);
        for i in 0..keys {
            let ks: Vec<String> = (0..key_cols.len()).map(|k| if i == 0 { format!("? AS k{k}") } else { "?".to_string() }).collect();
            rows.push(if i == 0 { format!("SELECT 0 AS i, {}", ks.join(", ")) } else { format!("SELECT {i}, {}", ks.join(", ")) });
        }
        let on: Vec<String> = key_cols.iter().enumerate().map(|(k, c)| format!("t.{} = q.k{k}", quote_ident(&c.name))).collect();
        format!(
            "SELECT q.i, {} FROM ({}) AS q JOIN {}.{} AS t ON {}",
            select.join(", "),
            rows.join(" UNION ALL "),
            quote_ident(&self.cfg.database),
            quote_ident(&self.cfg.table),
            on.join(" AND ")
        )
    }

    async fn query(&mut self, keys: &[Vec<Value>]) -> Result<Rows> {
        self.connect().await?;
        let mut out = Vec::new();
        for (chunk_no, chunk) in keys.chunks(KEYS_PER_QUERY).enumerate() {
            let sql = self.sql(chunk.len());
            let params = Params::Positional(chunk.iter().flatten().cloned().collect());
            let ctx = self.ctx();
            let Some(conn) = self.conn.as_mut() else { return Err(RsqlError::connector(ctx, "not connected")) };
            let rows: Vec<Row> = conn.exec(sql, params).await.map_err(|e| RsqlError::connector(ctx.clone(), format!("looking up keys: {e}")))?;
            let cols = self.columns.as_deref().unwrap_or_default();
            for r in rows {
                let Some(i) = r.as_ref(0).and_then(|v| match v {
                    Value::Int(i) => Some(*i as u64),
                    Value::UInt(i) => Some(*i),
                    Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                    _ => None,
                }) else {
                    continue;
                };
                let mut values = Vec::with_capacity(cols.len());
                for (c, col) in cols.iter().enumerate() {
                    let v = r.as_ref(c + 1).cloned().unwrap_or(Value::NULL);
                    let natural = from_text(col, v).map_err(|e| RsqlError::connector(ctx.clone(), e))?;
                    values.push(to_declared(col, natural, &self.cfg.columns[c].1, 0));
                }
                out.push(((chunk_no * KEYS_PER_QUERY) as u32 + i as u32, values));
            }
        }
        Ok(out)
    }

    /// Answers requests until the lookup function is dropped.
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let msg = format!("cannot start the lookup thread's runtime: {e}");
                while let Ok(req) = rx.recv() {
                    let _ = req.reply.send(Err(RsqlError::execution(msg.clone())));
                }
                return;
            }
        };
        while let Ok(req) = rx.recv() {
            let r = rt.block_on(async {
                let mut attempt = 0;
                loop {
                    match self.query(&req.keys).await {
                        Ok(rows) => return Ok(rows),
                        Err(e) if attempt < self.cfg.lookup.max_retries && !self.table_error => {
                            attempt += 1;
                            self.conn = None;
                            let backoff = Duration::from_millis(200 * attempt as u64).min(Duration::from_secs(5));
                            tracing::warn!(table = %self.cfg.flink_table, "{e}; retry {attempt} of {} in {:?}", self.cfg.lookup.max_retries, backoff);
                            tokio::time::sleep(backoff).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            });
            let _ = req.reply.send(r);
        }
        if let Some(c) = self.conn.take() {
            let _ = rt.block_on(c.disconnect());
        }
    }
}

/// The cache of rows per key (exact key values).
struct Cache {
    max: usize,
    ttl: Option<Duration>,
    missing: bool,
    map: HashMap<Vec<u8>, (Instant, Arc<Found>)>,
    order: VecDeque<(Vec<u8>, Instant)>,
}

impl Cache {
    fn get(&mut self, key: &[u8]) -> Option<Arc<Found>> {
        let (at, rows) = self.map.get(key)?;
        if self.ttl.is_some_and(|t| at.elapsed() > t) {
            self.map.remove(key);
            return None;
        }
        Some(rows.clone())
    }

    fn put(&mut self, key: Vec<u8>, rows: Found) {
        if self.max == 0 || (rows.is_empty() && !self.missing) {
            return;
        }
        while self.map.len() >= self.max {
            let Some((k, at)) = self.order.pop_front() else { break };
            if self.map.get(&k).is_some_and(|(t, _)| *t == at) {
                self.map.remove(&k);
            }
        }
        let now = Instant::now();
        self.order.push_back((key.clone(), now));
        self.map.insert(key, (now, Arc::new(rows)));
    }
}

/// The lookup function of a jdbc table.
pub struct JdbcLookup {
    cfg: Arc<JdbcConfig>,
    tx: mpsc::Sender<Request>,
    cache: Cache,
}

impl JdbcLookup {
    /// `keys` are physical columns of the table.
    pub fn new(cfg: JdbcConfig, keys: &[String]) -> Result<JdbcLookup> {
        for k in keys {
            if !cfg.columns.iter().any(|(n, _)| n == k) {
                return Err(RsqlError::execution(format!("table '{}' has no column '{k}' to look up", cfg.flink_table)));
            }
        }
        if keys.is_empty() {
            return Err(RsqlError::unsupported(format!("a lookup join with table '{}' needs an equality on one of its columns", cfg.flink_table)));
        }
        let cfg = Arc::new(cfg);
        let (tx, rx) = mpsc::channel();
        let reader = Reader { cfg: cfg.clone(), key_names: keys.to_vec(), conn: None, columns: None, table_error: false };
        std::thread::Builder::new()
            .name(format!("lookup-{}", cfg.flink_table))
            .spawn(move || reader.run(rx))
            .map_err(|e| RsqlError::execution(format!("cannot start the lookup thread of table '{}': {e}", cfg.flink_table)))?;
        let lk = &cfg.lookup;
        let cache = Cache {
            max: lk.cache_max_rows.min(usize::MAX as u64) as usize,
            ttl: (!lk.cache_ttl.is_zero()).then_some(lk.cache_ttl),
            missing: lk.cache_missing_key,
            map: HashMap::new(),
            order: VecDeque::new(),
        };
        Ok(JdbcLookup { cfg, tx, cache })
    }
}

impl LookupFunction for JdbcLookup {
    fn lookup(&mut self, keys: &RecordBatch) -> Result<(RecordBatch, Vec<u32>)> {
        let n = keys.num_rows();
        // Each input row's key: its exact bytes (None = holds a NULL), and its parameters.
        let mut row_keys: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
        let mut found: HashMap<Vec<u8>, Arc<Found>> = HashMap::new();
        let mut ask: Vec<Vec<Value>> = Vec::new();
        let mut ask_keys: Vec<Vec<u8>> = Vec::new();
        for i in 0..n {
            if keys.columns().iter().any(|c| c.is_null(i)) {
                row_keys.push(None);
                continue;
            }
            let params: Vec<Value> = keys.columns().iter().map(|c| param_at(c.as_ref(), i)).collect::<Result<_>>()?;
            let mut k = Vec::new();
            for p in &params {
                encode_key_part(p, &mut k);
            }
            if !found.contains_key(&k) {
                match self.cache.get(&k) {
                    Some(rows) => {
                        found.insert(k.clone(), rows);
                    }
                    None => {
                        found.insert(k.clone(), Arc::new(Vec::new()));
                        ask.push(params);
                        ask_keys.push(k.clone());
                    }
                }
            }
            row_keys.push(Some(k));
        }
        if !ask.is_empty() {
            let (reply, rx) = mpsc::sync_channel(1);
            self.tx
                .send(Request { keys: ask, reply })
                .map_err(|_| RsqlError::execution(format!("the lookup thread of table '{}' is gone", self.cfg.flink_table)))?;
            let rows = rx
                .recv()
                .map_err(|_| RsqlError::execution(format!("the lookup thread of table '{}' is gone", self.cfg.flink_table)))??;
            let mut per_key: Vec<Found> = vec![Vec::new(); ask_keys.len()];
            for (i, values) in rows {
                if let Some(slot) = per_key.get_mut(i as usize) {
                    slot.push(values);
                }
            }
            for (k, rows) in ask_keys.into_iter().zip(per_key) {
                self.cache.put(k.clone(), rows.clone());
                found.insert(k, Arc::new(rows));
            }
        }
        let mut builder = RowsBuilder::new(&self.cfg.columns, n)?;
        let mut of = Vec::new();
        for (i, k) in row_keys.iter().enumerate() {
            let Some(k) = k else { continue };
            if let Some(rows) = found.get(k) {
                for r in rows.iter() {
                    builder.append_row(r.clone()).map_err(|e| RsqlError::connector(format!("{} lookup", self.cfg.context()), e))?;
                    of.push(i as u32);
                }
            }
        }
        Ok((builder.finish()?, of))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_expires_and_evicts() {
        let mut c = Cache { max: 2, ttl: Some(Duration::from_millis(50)), missing: false, map: HashMap::new(), order: VecDeque::new() };
        c.put(b"a".to_vec(), vec![vec![Datum::Int(1)]]);
        c.put(b"none".to_vec(), Vec::new());
        assert!(c.get(b"none").is_none(), "missing keys are not cached without caching-missing-key");
        c.put(b"b".to_vec(), vec![vec![Datum::Int(2)]]);
        c.put(b"c".to_vec(), vec![vec![Datum::Int(3)]]);
        assert!(c.get(b"a").is_none(), "the oldest key went first");
        assert!(c.get(b"c").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get(b"c").is_none(), "expired");
    }
}
