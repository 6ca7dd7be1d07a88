//! The starrocks sink: encodes rows into a buffer and loads the buffer with one Stream Load under
//! one label.
//!
//! When: once the buffer holds `sink.buffer-flush.max-rows` rows or `sink.buffer-flush.max-bytes`
//! bytes, once its oldest row is `sink.buffer-flush.interval-ms` old (a background task checks),
//! and at every `flush` (checkpoints and the end of the job). Loads are serialized, so the
//! changes of one key reach StarRocks in order; within a load StarRocks applies rows in order.
//!
//! Labels: `{sink.label-prefix}-{run id}-{n}` (the prefix defaults to `rsql_{table}`; the run id
//! is random per sink instance, so a restarted job never collides with an earlier run's labels,
//! and `n` counts the loads). A retry of a buffer reuses its label, which StarRocks loads at most
//! once: after `flush` returns, every row written before it is in StarRocks (at-least-once across
//! restarts, exactly once per label).
//!
//! Rows: on a table with a primary key, +I and +U load with `__op` = 0 (upsert), -D with
//! `__op` = 1 (delete), and -U is dropped (`sink.ignore.update-before` = true, the default) or
//! loaded as a delete. A table without a primary key takes only inserts.
//!
//! `sink.semantic` = `exactly-once` uses the Stream Load transaction interface instead, as
//! flink-connector-starrocks does: the rows between two checkpoints go into one transaction
//! (`begin` on the first full buffer, one `load` per buffer), which is prepared when the
//! checkpoint's barrier reaches the sink and committed once the checkpoint is complete. Its label
//! is `{prefix}-{run id}-{n}`, where `n` is one more than the newest barrier the sink has seen and
//! the run id is random on a fresh start and restored from the checkpoint otherwise, so labels
//! are the same across a restart. The checkpoint saves the labels prepared and not yet committed;
//! on restore they are committed (a commit of a committed label is answered OK) and the
//! transactions begun after the restored checkpoint (labels `n+1` ..
//! `n+sink.exactly-once.check-num-lingering-txn`) are rolled back, which frees their labels for
//! the replay. At the end of a bounded input the job takes a final checkpoint: the last
//! transaction is prepared at it and committed once it is stored, like every other, so a crash at
//! any moment of the end neither loses nor loads rows twice; when the job stops, the open
//! transaction is rolled back (its rows are replayed on resume).

use crate::background::{spawn_interval_flusher, ErrorSlot, IntervalBuffer};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::Sink;
use tokio::sync::Mutex;

use super::client::{label_state_is_committed, StreamLoadClient, TxnOp};
use super::encode::BodyEncoder;
use super::StarRocksConfig;

/// The buffer and the client; shared with the interval flusher.
struct Loader {
    cfg: Arc<StarRocksConfig>,
    client: StreamLoadClient,
    encoder: BodyEncoder,
    body: Vec<u8>,
    rows: usize,
    since: Option<Instant>,
    label_base: String,
    next_label: u64,
    loaded_rows: u64,
    loads: u64,
    /// Exactly-once bookkeeping; None for at-least-once.
    txns: Option<Txns>,
}

/// The transactions of an exactly-once sink.
struct Txns {
    /// `sink.label-prefix` (or the default).
    prefix: String,
    /// Random on a fresh start, restored from the checkpoint otherwise.
    run: String,
    /// The newest checkpoint barrier seen (or the checkpoint restored).
    last_checkpoint: u64,
    /// The transaction taking the rows since the last barrier.
    open: Option<String>,
    /// (checkpoint at whose barrier it was prepared, label), oldest first.
    prepared: Vec<(u64, String)>,
}

impl Txns {
    fn label(&self, n: u64) -> String {
        format!("{}-{}-{n}", self.prefix, self.run)
    }

    fn state(&self) -> Vec<u8> {
        serde_json::json!({
            "run": self.run,
            "checkpoint": self.last_checkpoint,
            "prepared": self.prepared.iter().map(|(c, l)| serde_json::json!([c, l])).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    /// (run, checkpoint, prepared) from `state`.
    fn parse(bytes: &[u8]) -> std::result::Result<(String, u64, Vec<(u64, String)>), String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("the saved sink state is not JSON: {e}"))?;
        let run = v.get("run").and_then(|x| x.as_str()).ok_or("the saved sink state has no run id")?.to_string();
        let cp = v.get("checkpoint").and_then(|x| x.as_u64()).ok_or("the saved sink state has no checkpoint id")?;
        let mut prepared = Vec::new();
        for p in v.get("prepared").and_then(|x| x.as_array()).ok_or("the saved sink state has no prepared list")? {
            match (p.get(0).and_then(|x| x.as_u64()), p.get(1).and_then(|x| x.as_str())) {
                (Some(c), Some(l)) => prepared.push((c, l.to_string())),
                _ => return Err(format!("a prepared transaction of the saved sink state is malformed: {p}")),
            }
        }
        Ok((run, cp, prepared))
    }
}

impl Loader {
    fn push(&mut self, batch: &ChangeBatch) -> Result<()> {
        for (row, kind) in batch.kinds.iter().enumerate() {
            let op = match kind {
                RowKind::Insert | RowKind::UpdateAfter => 0,
                RowKind::Delete => 1,
                RowKind::UpdateBefore if self.cfg.ignore_update_before => continue,
                RowKind::UpdateBefore => 1,
            };
            if !self.cfg.upsert && op != 0 {
                return Err(RsqlError::execution(format!(
                    "{}: got a {kind} row, but a table without a PRIMARY KEY takes only inserts",
                    self.cfg.context()
                )));
            }
            let first = self.rows == 0;
            let mark = self.body.len();
            if let Err(e) = self.encoder.encode_row(&batch.data, row, op, &mut self.body, first) {
                self.body.truncate(mark);
                return Err(RsqlError::connector(self.cfg.context(), e));
            }
            self.rows += 1;
            self.since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn full(&self) -> bool {
        self.rows >= self.cfg.max_rows || self.body.len() >= self.cfg.max_bytes
    }

    /// Loads the buffer (if any) under the next label, or into the open transaction.
    async fn flush_buffer(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        if self.txns.is_some() {
            return self.load_into_txn().await;
        }
        let mut body = std::mem::take(&mut self.body);
        self.encoder.finish(&mut body);
        let label = format!("{}-{}", self.label_base, self.next_label);
        let rows = self.rows;
        let r = self.client.load(&label, Bytes::from(body), rows).await;
        // The label is spent whatever happened: a later buffer must never reuse it.
        self.next_label += 1;
        self.rows = 0;
        self.since = None;
        r?;
        self.loads += 1;
        self.loaded_rows += rows as u64;
        Ok(())
    }
}

impl Loader {
    fn txns(&mut self) -> Result<&mut Txns> {
        let ctx = self.cfg.context();
        self.txns.as_mut().ok_or_else(|| RsqlError::connector(ctx, "not an exactly-once sink"))
    }

    /// Loads the buffer into the open transaction, beginning one first if needed.
    async fn load_into_txn(&mut self) -> Result<()> {
        let label = match self.txns()?.open.clone() {
            Some(l) => l,
            None => {
                let t = self.txns()?;
                let label = t.label(t.last_checkpoint + 1);
                self.begin(&label).await?;
                self.txns()?.open = Some(label.clone());
                label
            }
        };
        let mut body = std::mem::take(&mut self.body);
        self.encoder.finish(&mut body);
        let rows = self.rows;
        self.rows = 0;
        self.since = None;
        self.client.txn_load(&label, Bytes::from(body), rows).await?;
        self.loads += 1;
        self.loaded_rows += rows as u64;
        Ok(())
    }

    async fn begin(&mut self, label: &str) -> Result<()> {
        for round in 0..2 {
            let r = self.client.txn(TxnOp::Begin, label).await?;
            match r.status.as_str() {
                "OK" | "Success" => return Ok(()),
                "LABEL_ALREADY_EXISTS" | "Label Already Exists" => {
                    let state = self.client.label_state(label).await.unwrap_or_else(|_| "UNKNOWN".into());
                    if label_state_is_committed(&state) {
                        return Err(RsqlError::connector(
                            self.cfg.context(),
                            format!(
                                "transaction label '{label}' was already committed by an earlier run; start the job from its latest \
                                 checkpoint, or give a new 'sink.label-prefix'"
                            ),
                        ));
                    }
                    if round == 0 {
                        // A transaction of this run that a crash left open: it was never
                        // committed, so its rows are replayed; free the label.
                        tracing::info!(table = %self.cfg.flink_table, label, state = %state, "rolling back a lingering transaction to reuse its label");
                        self.rollback(label).await;
                        continue;
                    }
                    return Err(RsqlError::connector(
                        self.cfg.context(),
                        format!("cannot begin transaction '{label}': the label is in use ({state}) and could not be rolled back: {}", r.message),
                    ));
                }
                other => {
                    return Err(RsqlError::connector(
                        self.cfg.context(),
                        format!(
                            "StarRocks refused to begin transaction '{label}': {other} {} (the Stream Load transaction interface needs StarRocks 2.4 or later)",
                            r.message
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    async fn prepare(&mut self, label: &str) -> Result<()> {
        let r = self.client.txn(TxnOp::Prepare, label).await?;
        if r.status == "OK" || r.status == "Success" {
            return Ok(());
        }
        let state = self.client.label_state(label).await.unwrap_or_else(|_| "UNKNOWN".into());
        if state.eq_ignore_ascii_case("PREPARED") {
            return Ok(());
        }
        Err(RsqlError::connector(
            self.cfg.context(),
            format!(
                "StarRocks could not prepare transaction '{label}': {} {} (label state {state}); a transaction open longer than \
                 'sink.properties.timeout' (default 600 s) is rolled back by StarRocks: keep the checkpoint interval below it",
                r.status, r.message
            ),
        ))
    }

    async fn commit(&mut self, label: &str) -> Result<()> {
        let r = self.client.txn(TxnOp::Commit, label).await?;
        if r.status == "OK" || r.status == "Success" {
            tracing::debug!(table = %self.cfg.flink_table, label, message = %r.message, "transaction committed");
            return Ok(());
        }
        let state = self.client.label_state(label).await.unwrap_or_else(|_| "UNKNOWN".into());
        if label_state_is_committed(&state) {
            return Ok(());
        }
        Err(RsqlError::connector(
            self.cfg.context(),
            format!(
                "StarRocks could not commit prepared transaction '{label}': {} {} (label state {state}); a prepared transaction is \
                 rolled back after 'sink.properties.prepared_timeout' (StarRocks' prepared_transaction_default_timeout_second): \
                 its rows are lost for StarRocks, so restart from an earlier checkpoint or reload the table",
                r.status, r.message
            ),
        ))
    }

    /// Rolls a transaction back; a label StarRocks does not know is fine.
    async fn rollback(&mut self, label: &str) -> bool {
        match self.client.txn(TxnOp::Rollback, label).await {
            Ok(r) if r.status == "OK" || r.status == "Success" => true,
            Ok(r) => {
                tracing::debug!(table = %self.cfg.flink_table, label, status = %r.status, message = %r.message, "nothing to roll back");
                false
            }
            Err(e) => {
                tracing::warn!(table = %self.cfg.flink_table, label, "rolling back: {e}");
                false
            }
        }
    }

    /// At a barrier: the buffer into the transaction, the transaction prepared.
    async fn prepare_for(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        self.flush_buffer().await?;
        if let Some(label) = self.txns()?.open.take() {
            self.prepare(&label).await?;
            self.txns()?.prepared.push((checkpoint, label));
        }
        let t = self.txns()?;
        t.last_checkpoint = t.last_checkpoint.max(checkpoint);
        Ok(t.state())
    }

    /// Commits the transactions prepared at or before `checkpoint`.
    async fn commit_through(&mut self, checkpoint: u64) -> Result<()> {
        loop {
            let next = self.txns()?.prepared.first().filter(|(c, _)| *c <= checkpoint).cloned();
            let Some((_, label)) = next else { return Ok(()) };
            self.commit(&label).await?;
            self.txns()?.prepared.remove(0);
        }
    }

    /// On restore: commits what the checkpoint prepared, rolls back what came after it.
    async fn recover(&mut self, state: &[u8]) -> Result<()> {
        let (run, checkpoint, prepared) = Txns::parse(state).map_err(|m| RsqlError::connector(self.cfg.context(), m))?;
        let lingering = self.cfg.lingering_txns;
        {
            let t = self.txns()?;
            t.run = run;
            t.last_checkpoint = checkpoint;
            t.prepared = prepared;
        }
        self.commit_through(u64::MAX).await?;
        for n in checkpoint + 1..=checkpoint + lingering {
            let label = self.txns()?.label(n);
            if self.rollback(&label).await {
                tracing::info!(table = %self.cfg.flink_table, label, "rolled back a transaction begun after checkpoint {checkpoint}");
            }
        }
        Ok(())
    }
}

/// The starrocks sink.
pub struct StarRocksSink {
    cfg: Arc<StarRocksConfig>,
    shared: Arc<Mutex<Loader>>,
    flusher: Option<tokio::task::JoinHandle<()>>,
    background_error: ErrorSlot,
}

/// `rsql_{table}` with characters a label cannot hold replaced.
fn default_prefix(table: &str) -> String {
    let t: String = table.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).take(48).collect();
    format!("rsql_{t}")
}

impl StarRocksSink {
    pub fn new(cfg: StarRocksConfig) -> Result<StarRocksSink> {
        let cfg = Arc::new(cfg);
        let encoder = BodyEncoder::new(&cfg);
        let client = StreamLoadClient::new(cfg.clone(), &encoder.columns_header(), encoder.is_json())?;
        let run: u128 = rand::rng().random();
        let prefix = cfg.label_prefix.clone().unwrap_or_else(|| default_prefix(&cfg.flink_table));
        let loader = Loader {
            cfg: cfg.clone(),
            client,
            encoder,
            body: Vec::new(),
            rows: 0,
            since: None,
            label_base: format!("{prefix}-{run:032x}"),
            next_label: 0,
            loaded_rows: 0,
            loads: 0,
            txns: cfg.exactly_once.then(|| Txns {
                prefix: prefix.clone(),
                run: format!("{:016x}", run as u64),
                last_checkpoint: 0,
                open: None,
                prepared: Vec::new(),
            }),
        };
        Ok(StarRocksSink { cfg, shared: Arc::new(Mutex::new(loader)), flusher: None, background_error: ErrorSlot::default() })
    }

    /// (loads done, rows loaded) so far.
    pub async fn loaded(&self) -> (u64, u64) {
        let l = self.shared.lock().await;
        (l.loads, l.loaded_rows)
    }

    fn start_flusher(&mut self) {
        // Exactly-once rows become visible at checkpoints, not at intervals.
        if self.flusher.is_some() || self.cfg.exactly_once {
            return;
        }
        self.flusher = Some(spawn_interval_flusher(self.shared.clone(), self.cfg.flush_interval, self.background_error.clone()));
    }

    fn check_background(&self) -> Result<()> {
        self.background_error.check()
    }
}

#[async_trait]
impl IntervalBuffer for Loader {
    fn oldest(&self) -> Option<Instant> {
        self.since
    }
    async fn flush_interval(&mut self) -> Result<()> {
        self.flush_buffer().await
    }
}

#[async_trait]
impl Sink for StarRocksSink {
    async fn open(&mut self, checkpointing: bool, restored: Option<&[u8]>) -> Result<()> {
        if !self.cfg.exactly_once {
            return Ok(());
        }
        if !checkpointing {
            return Err(RsqlError::connector(
                self.cfg.context(),
                "'sink.semantic' = 'exactly-once' commits a StarRocks transaction at every checkpoint, but this job takes no \
                 checkpoints: SET 'execution.checkpointing.interval' (every source must be able to resume from a position), \
                 or use 'sink.semantic' = 'at-least-once'",
            ));
        }
        let mut l = self.shared.lock().await;
        match restored.filter(|b| !b.is_empty()) {
            Some(state) => l.recover(state).await,
            None => Ok(()),
        }
    }

    async fn snapshot(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        self.check_background()?;
        let mut l = self.shared.lock().await;
        if !self.cfg.exactly_once {
            l.flush_buffer().await?;
            return Ok(Vec::new());
        }
        l.prepare_for(checkpoint).await
    }

    async fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        if !self.cfg.exactly_once {
            return Ok(());
        }
        self.shared.lock().await.commit_through(checkpoint).await
    }

    /// Exactly-once: called after the final checkpoint was stored and committed, so nothing is
    /// left open; a transaction still open (rows written after the final snapshot) is committed
    /// here as the last step of a bounded input.
    async fn finish(&mut self) -> Result<()> {
        if !self.cfg.exactly_once {
            return self.flush().await;
        }
        self.check_background()?;
        let mut l = self.shared.lock().await;
        let next = l.txns()?.last_checkpoint + 1;
        l.prepare_for(next).await?;
        l.commit_through(u64::MAX).await
    }

    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        self.check_background()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.start_flusher();
        let mut l = self.shared.lock().await;
        self.check_background()?;
        l.push(&batch)?;
        if l.full() {
            l.flush_buffer().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.check_background()?;
        let mut l = self.shared.lock().await;
        self.check_background()?;
        l.flush_buffer().await
    }

    async fn close(&mut self) -> Result<()> {
        let r = self.flush().await;
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
        if self.cfg.exactly_once {
            // Rows after the last checkpoint are replayed on resume: their transaction goes.
            let mut l = self.shared.lock().await;
            if let Some(label) = l.txns.as_mut().and_then(|t| t.open.take()) {
                l.rollback(&label).await;
            }
        }
        r
    }
}

impl Drop for StarRocksSink {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use crate::starrocks::client::LoadResponse;
    use crate::starrocks::endpoint::{Fault, StreamLoadEndpoint, TableSpec, TxnState};
    use crate::starrocks::tests::table;
    use rsql_common::arrow::array::{ArrayRef, Float32Array, Int32Array, StringArray};
    use rsql_common::arrow::datatypes::{DataType, Field, Schema};
    use rsql_common::arrow::record_batch::RecordBatch;

    #[test]
    fn prefixes() {
        assert_eq!(default_prefix("dws agg.by"), "rsql_dws_agg_by");
    }

    fn endpoint(pk: bool) -> StreamLoadEndpoint {
        let key: &[&str] = if pk { &["order_id"] } else { &[] };
        StreamLoadEndpoint::start("loader", "s3cret", vec![TableSpec::new("flink_cdc", "orders", &["order_id", "order_revenue", "order_region"], key)])
            .expect("start the endpoint")
    }

    fn sink(ep: &StreamLoadEndpoint, pk: bool, extra: &[(&str, &str)]) -> StarRocksSink {
        let url = ep.load_url();
        let mut opts: Vec<(&str, &str)> = vec![
            ("connector", "starrocks"),
            ("jdbc-url", "jdbc:mysql://127.0.0.1:9030"),
            ("load-url", url.as_str()),
            ("database-name", "flink_cdc"),
            ("table-name", "orders"),
            ("username", "loader"),
            ("password", "s3cret"),
            ("sink.retry.interval-ms", "10"),
        ];
        opts.extend_from_slice(extra);
        StarRocksSink::new(StarRocksConfig::from_table(&table(&opts, pk)).expect("config")).expect("sink")
    }

    fn batch(rows: &[(RowKind, i32, Option<f32>, Option<&str>)]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int32, false),
            Field::new("order_revenue", DataType::Float32, true),
            Field::new("order_region", DataType::Utf8, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Float32Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
        ];
        ChangeBatch::new(RecordBatch::try_new(schema, cols).unwrap(), rows.iter().map(|r| r.0).collect())
    }

    fn cells(v: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
        v.iter().map(|r| r.iter().map(|c| c.map(str::to_string)).collect()).collect()
    }

    #[tokio::test]
    async fn upserts_and_deletes_in_json_through_the_redirect() {
        let ep = endpoint(true);
        let mut s = sink(&ep, true, &[("sink.properties.format", "json"), ("sink.label-prefix", "seed")]);
        use RowKind::*;
        s.write(batch(&[(Insert, 1, Some(10.0), Some("beijing")), (Insert, 2, Some(5.5), None), (Insert, 3, Some(1.0), Some("x"))]))
            .await
            .unwrap();
        s.write(batch(&[(UpdateBefore, 1, Some(10.0), Some("beijing")), (UpdateAfter, 1, Some(11.0), Some("shanghai")), (Delete, 3, Some(1.0), Some("x"))]))
            .await
            .unwrap();
        s.flush().await.unwrap();
        assert_eq!(ep.rows("flink_cdc", "orders"), cells(&[&[Some("1"), Some("11.0"), Some("shanghai")], &[Some("2"), Some("5.5"), None]]));
        // A second buffer gets the next label.
        s.write(batch(&[(Delete, 2, None, None)])).await.unwrap();
        s.close().await.unwrap();
        assert_eq!(ep.rows("flink_cdc", "orders").len(), 1);
        assert_eq!(ep.violations(), Vec::<String>::new());
        let loads = ep.loads();
        assert_eq!(loads.len(), 2);
        assert!(loads.iter().all(|l| l.status == "Success" && l.json), "{loads:?}");
        assert!(loads[0].label.starts_with("seed-") && loads[0].label.ends_with("-0"), "{}", loads[0].label);
        assert_eq!(loads[1].label, format!("{}1", loads[0].label.trim_end_matches('0')));
        let (fe, be) = ep.requests();
        assert_eq!((fe, be), (2, 2), "every load goes to the FE and is redirected to the BE");
        assert_eq!(s.loaded().await, (2, 6));
    }

    #[tokio::test]
    async fn csv_with_custom_separator_into_a_table_without_key() {
        let ep = endpoint(false);
        let mut s = sink(&ep, false, &[("sink.properties.column_separator", "\\x01"), ("sink.properties.row_delimiter", "\\x02")]);
        s.write(batch(&[(RowKind::Insert, 1, Some(1.0), Some("a\tb")), (RowKind::Insert, 1, Some(2.0), Some("c"))])).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(ep.rows("flink_cdc", "orders"), cells(&[&[Some("1"), Some("1.0"), Some("a\tb")], &[Some("1"), Some("2.0"), Some("c")]]));
        assert_eq!(ep.violations(), Vec::<String>::new());
        // Updates need a key.
        let e = s.write(batch(&[(RowKind::Delete, 1, None, None)])).await.unwrap_err().to_string();
        assert!(e.contains("without a PRIMARY KEY"), "{e}");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_with_the_same_label() {
        let ep = endpoint(true);
        ep.push_faults([
            Fault::Fail("timeout by txn manager".into()),
            Fault::Http500,
            Fault::Drop,
            Fault::LabelRunning,
            Fault::CommitThenDrop,
        ]);
        let mut s = sink(&ep, true, &[("sink.max-retries", "10")]);
        s.write(batch(&[(RowKind::Insert, 7, Some(3.0), Some("hangzhou"))])).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(ep.rows("flink_cdc", "orders"), cells(&[&[Some("7"), Some("3.0"), Some("hangzhou")]]));
        let loads = ep.loads();
        let statuses: Vec<&str> = loads.iter().map(|l| l.status.as_str()).collect();
        assert_eq!(statuses, vec!["Fail", "HTTP 500", "dropped", "Label Already Exists", "committed, dropped", "Label Already Exists"]);
        assert!(loads.iter().all(|l| l.label == loads[0].label), "one label for every try: {loads:?}");
        assert_eq!(ep.violations(), Vec::<String>::new());
        // Publish Timeout counts as loaded.
        ep.push_faults([Fault::PublishTimeout]);
        s.write(batch(&[(RowKind::Insert, 8, None, None)])).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(ep.rows("flink_cdc", "orders").len(), 2);
        assert_eq!(ep.pending_faults(), 0);
    }

    #[tokio::test]
    async fn refused_rows_stop_the_job_with_the_error_log() {
        let ep = endpoint(true);
        ep.push_faults([Fault::FailWithErrorUrl("Error: Value count does not match column count. Row: 9\\tx".into())]);
        let mut s = sink(&ep, true, &[("sink.label-prefix", "dwd")]);
        s.write(batch(&[(RowKind::Insert, 9, None, Some("x"))])).await.unwrap();
        let e = s.flush().await.unwrap_err().to_string();
        assert!(e.contains("table 'sr_orders' (starrocks flink_cdc.orders)"), "{e}");
        assert!(e.contains("label 'dwd-") && e.contains("too many filtered rows") && e.contains("ErrorURL: http://"), "{e}");
        assert!(e.contains("Value count does not match column count"), "{e}");
    }

    #[tokio::test]
    async fn retries_run_out() {
        let ep = endpoint(true);
        ep.push_faults(vec![Fault::Http500; 3]);
        let mut s = sink(&ep, true, &[("sink.max-retries", "2")]);
        s.write(batch(&[(RowKind::Insert, 1, None, None)])).await.unwrap();
        let e = s.flush().await.unwrap_err().to_string();
        assert!(e.contains("failed after 2 retries") && e.contains("HTTP 500"), "{e}");
    }

    #[tokio::test]
    async fn bad_credentials_and_unreachable_hosts() {
        let ep = endpoint(true);
        let mut s = sink(&ep, true, &[("password", "wrong")]);
        s.write(batch(&[(RowKind::Insert, 1, None, None)])).await.unwrap();
        let e = s.flush().await.unwrap_err().to_string();
        assert!(e.contains("refused user 'loader'") && e.contains("'password'"), "{e}");
        assert_eq!(ep.unauthorized(), 1);

        // A BE as load-url: asked once whether it redirects, then loaded directly.
        let be = ep.be_url();
        let mut s = sink(&ep, true, &[("load-url", be.as_str())]);
        let (_, be_before) = ep.requests();
        s.write(batch(&[(RowKind::Insert, 3, None, None)])).await.unwrap();
        s.flush().await.unwrap();
        s.write(batch(&[(RowKind::Insert, 4, None, None)])).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(ep.requests().1 - be_before, 3, "one question and two loads");
        assert_eq!(ep.rows("flink_cdc", "orders").len(), 2);

        // The first host does not listen: the load moves on to the next one.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let urls = format!("{free};{}", ep.load_url());
        let mut s = sink(&ep, true, &[("load-url", urls.as_str())]);
        s.write(batch(&[(RowKind::Insert, 2, None, None)])).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(ep.rows("flink_cdc", "orders").len(), 3);
        assert_eq!(ep.violations(), Vec::<String>::new());
    }

    fn eo_sink(ep: &StreamLoadEndpoint, pk: bool, extra: &[(&str, &str)]) -> StarRocksSink {
        let mut opts = vec![("sink.semantic", "exactly-once"), ("sink.label-prefix", "eo")];
        opts.extend_from_slice(extra);
        sink(ep, pk, &opts)
    }

    fn inserts(ids: std::ops::Range<i32>) -> ChangeBatch {
        let rows: Vec<(RowKind, i32, Option<f32>, Option<&str>)> = ids.map(|i| (RowKind::Insert, i, Some(i as f32), Some("r"))).collect();
        batch(&rows)
    }

    fn ids(ep: &StreamLoadEndpoint) -> Vec<i32> {
        let mut v: Vec<i32> = ep.rows("flink_cdc", "orders").iter().filter_map(|r| r[0].as_deref().and_then(|x| x.parse().ok())).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn exactly_once_needs_checkpointing() {
        let ep = endpoint(false);
        let mut s = eo_sink(&ep, false, &[]);
        let e = s.open(false, None).await.unwrap_err().to_string();
        assert!(e.contains("exactly-once") && e.contains("execution.checkpointing.interval"), "{e}");
        let mut s = sink(&ep, false, &[]);
        s.open(false, None).await.unwrap();
    }

    /// Killed after checkpoint 2 completed but before the sink heard of it (prepared, not
    /// committed), with rows of the next interval loaded into an open transaction: the restart
    /// commits checkpoint 2's transaction, rolls back the open one and the replay loads its rows
    /// once. A table without a key keeps every loaded row, so a duplicate would show.
    #[tokio::test]
    async fn killed_between_prepare_and_commit_then_restored() {
        let ep = endpoint(false);
        let mut s = eo_sink(&ep, false, &[]);
        s.open(true, None).await.unwrap();
        s.write(inserts(0..3)).await.unwrap();
        s.flush().await.unwrap();
        assert!(ids(&ep).is_empty(), "nothing is visible before the checkpoint completes");
        let _st1 = s.snapshot(1).await.unwrap();
        assert!(ids(&ep).is_empty(), "prepared is not visible");
        s.notify_checkpoint_complete(1).await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1, 2]);
        s.write(inserts(3..5)).await.unwrap();
        let st2 = s.snapshot(2).await.unwrap();
        s.write(inserts(5..7)).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(ep.txn_labels(TxnState::Prepared).len(), 1);
        assert_eq!(ep.txn_labels(TxnState::Prepare).len(), 1);
        drop(s); // killed: no notification, no close

        let mut s = eo_sink(&ep, false, &[]);
        s.open(true, Some(&st2)).await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1, 2, 3, 4], "the restored checkpoint's transaction is committed");
        assert!(ep.txn_labels(TxnState::Prepare).is_empty(), "the lingering transaction is rolled back");
        // The sources replay what followed checkpoint 2.
        s.write(inserts(5..7)).await.unwrap();
        s.snapshot(3).await.unwrap();
        s.notify_checkpoint_complete(3).await.unwrap();
        assert_eq!(ids(&ep), (0..7).collect::<Vec<_>>());
        let committed = ep.txn_labels(TxnState::Committed);
        assert_eq!(committed.len(), 3, "{committed:?}");
        assert!(committed.iter().all(|l| l.starts_with("eo-")), "{committed:?}");
        assert_eq!(ep.violations(), Vec::<String>::new());
    }

    /// Killed before checkpoint 2 completed: the restart from checkpoint 1 commits its (already
    /// committed) transaction again, which StarRocks answers OK, and rolls back checkpoint 2's
    /// prepared transaction, whose label the replay then uses again.
    #[tokio::test]
    async fn killed_before_the_checkpoint_completed() {
        let ep = endpoint(false);
        let mut s = eo_sink(&ep, false, &[]);
        s.open(true, None).await.unwrap();
        s.write(inserts(0..2)).await.unwrap();
        let st1 = s.snapshot(1).await.unwrap();
        s.notify_checkpoint_complete(1).await.unwrap();
        s.write(inserts(2..4)).await.unwrap();
        s.snapshot(2).await.unwrap();
        let stale = ep.txn_labels(TxnState::Prepared);
        assert_eq!(stale.len(), 1);
        drop(s);

        let mut s = eo_sink(&ep, false, &[]);
        s.open(true, Some(&st1)).await.unwrap();
        assert_eq!(ep.txn_state(&stale[0]), Some(TxnState::Aborted));
        assert_eq!(ids(&ep), vec![0, 1]);
        s.write(inserts(2..4)).await.unwrap();
        s.snapshot(2).await.unwrap();
        assert_eq!(ep.txn_state(&stale[0]), Some(TxnState::Prepared), "the label is used again after its rollback");
        s.notify_checkpoint_complete(2).await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1, 2, 3]);
        // Stopping rolls back the rows after the last checkpoint; `finish` (after the final
        // checkpoint of a bounded input) commits whatever is still open.
        s.write(inserts(4..5)).await.unwrap();
        s.flush().await.unwrap();
        s.close().await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1, 2, 3]);
        assert!(ep.txn_labels(TxnState::Prepare).is_empty());
        let mut s = eo_sink(&ep, false, &[]);
        s.open(true, None).await.unwrap();
        s.write(inserts(4..6)).await.unwrap();
        s.finish().await.unwrap();
        s.close().await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(ep.violations(), Vec::<String>::new());
    }

    /// Where a bounded job dies during its end: after the final checkpoint's prepare (the
    /// checkpoint is not stored), after it is stored (before the commit), or after the commit
    /// (before the job exits).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum KillAt {
        Prepared,
        Stored,
        Committed,
    }

    /// The exactly-once sink of a job that dies at `kill_at` of checkpoint `final_id`: the call
    /// that would come next never returns, `reached` is told, and the test drops the job.
    struct Dying {
        inner: StarRocksSink,
        kill_at: KillAt,
        final_id: u64,
        reached: Arc<tokio::sync::Notify>,
    }

    impl Dying {
        async fn die(&self) -> ! {
            self.reached.notify_one();
            std::future::pending().await
        }
    }

    #[async_trait]
    impl Sink for Dying {
        async fn open(&mut self, checkpointing: bool, restored: Option<&[u8]>) -> Result<()> {
            self.inner.open(checkpointing, restored).await
        }
        async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
            self.inner.write(batch).await
        }
        async fn flush(&mut self) -> Result<()> {
            self.inner.flush().await
        }
        async fn snapshot(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
            let state = self.inner.snapshot(checkpoint).await?;
            if self.kill_at == KillAt::Prepared && checkpoint >= self.final_id {
                self.die().await;
            }
            Ok(state)
        }
        async fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
            if self.kill_at == KillAt::Stored && checkpoint >= self.final_id {
                self.die().await;
            }
            self.inner.notify_checkpoint_complete(checkpoint).await
        }
        async fn finish(&mut self) -> Result<()> {
            if self.kill_at == KillAt::Committed {
                self.die().await;
            }
            self.inner.finish().await
        }
        async fn close(&mut self) -> Result<()> {
            self.inner.close().await
        }
    }

    /// A sink factory handing out `sink` once.
    fn once(sink: Box<dyn Sink>) -> rsql_runtime::graph::SinkFactoryFn {
        let slot = std::sync::Mutex::new(Some(sink));
        Arc::new(move || {
            slot.lock().ok().and_then(|mut s| s.take()).ok_or_else(|| RsqlError::execution("the test sink was created twice"))
        })
    }

    fn job_options(store: &Arc<rsql_runtime::testing::MemoryStore>) -> rsql_runtime::JobOptions {
        use rsql_runtime::checkpoint::CheckpointStore;
        let store: Arc<dyn CheckpointStore> = store.clone();
        let restore = store.latest().unwrap();
        rsql_runtime::JobOptions {
            checkpoint: Some(rsql_runtime::CheckpointOptions {
                job: "eo".into(),
                // Only checkpoint 1 (asked for) and the final one.
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(30),
                tolerable_failures: 0,
                store,
                restore,
            }),
            ..rsql_runtime::JobOptions::default()
        }
    }

    /// A bounded job (four batches of three rows) into an exactly-once sink, killed during its
    /// final checkpoint at each of the three points, then restarted from the newest stored
    /// checkpoint: every row is loaded exactly once (the table has no key, so a row loaded
    /// twice would show), and the rows of the last transaction are visible only once the final
    /// checkpoint is stored and committed.
    #[tokio::test]
    async fn a_bounded_job_killed_during_its_final_checkpoint_loads_every_row_once() {
        use rsql_runtime::testing::{BatchFeed, MemoryStore};
        let feed = || BatchFeed::new(vec![inserts(0..3), inserts(3..6), inserts(6..9), inserts(9..12)]);
        for kill_at in [KillAt::Prepared, KillAt::Stored, KillAt::Committed] {
            let ep = endpoint(false);
            let store = Arc::new(MemoryStore::default());
            let reached = Arc::new(tokio::sync::Notify::new());
            let dying = Dying { inner: eo_sink(&ep, false, &[]), kill_at, final_id: 2, reached: reached.clone() };
            let (held, release) = feed().hold_after(2);
            let running = rsql_runtime::start_job(&held.into_sink(once(Box::new(dying))).unwrap(), &job_options(&store)).unwrap();
            // Checkpoint 1 while the source holds after two batches; its transaction commits.
            let handle = running.checkpoint_handle().unwrap();
            assert_eq!(handle.checkpoint().await.unwrap().id, 1);
            let deadline = Instant::now() + Duration::from_secs(10);
            while ids(&ep) != (0..6).collect::<Vec<_>>() {
                assert!(Instant::now() < deadline, "{kill_at:?}: checkpoint 1 was not committed: {:?}", ids(&ep));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            release.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(10), reached.notified()).await.expect("the final checkpoint was not reached");
            drop(running); // killed
            tokio::time::sleep(Duration::from_millis(20)).await;
            match kill_at {
                KillAt::Prepared => {
                    assert_eq!(store.ids(), [1], "the final checkpoint was not stored");
                    assert_eq!(ids(&ep), (0..6).collect::<Vec<_>>());
                    assert_eq!(ep.txn_labels(TxnState::Prepared).len(), 1);
                }
                KillAt::Stored => {
                    assert_eq!(store.ids(), [1, 2]);
                    assert_eq!(ids(&ep), (0..6).collect::<Vec<_>>(), "stored but not committed: the last rows are not visible");
                    assert_eq!(ep.txn_labels(TxnState::Prepared).len(), 1);
                }
                KillAt::Committed => {
                    assert_eq!(store.ids(), [1, 2]);
                    assert_eq!(ids(&ep), (0..12).collect::<Vec<_>>());
                    assert!(ep.txn_labels(TxnState::Prepared).is_empty());
                }
            }

            // Restarted from the newest stored checkpoint, with a fresh sink and source.
            let restarted = rsql_runtime::start_job(&feed().into_sink(once(Box::new(eo_sink(&ep, false, &[])))).unwrap(), &job_options(&store));
            restarted.unwrap().wait().await.unwrap();
            assert_eq!(ids(&ep), (0..12).collect::<Vec<_>>(), "{kill_at:?}: every row exactly once");
            assert!(ep.txn_labels(TxnState::Prepared).is_empty() && ep.txn_labels(TxnState::Prepare).is_empty(), "{kill_at:?}");
            assert_eq!(ep.txn_labels(TxnState::Committed).len(), 2, "{kill_at:?}: one transaction per checkpoint with rows");
            let last = *store.ids().last().unwrap();
            assert!(last > 2, "{kill_at:?}: the restarted job took its own final checkpoint ({:?})", store.ids());
            assert_eq!(ep.violations(), Vec::<String>::new());
            assert!(ep.loads().is_empty(), "exactly-once loads only through transactions");
        }
    }

    #[tokio::test]
    async fn lost_answers_and_timeouts() {
        let ep = endpoint(true);
        // The answers to begin and commit are lost after StarRocks acted on them.
        ep.push_txn_fault("begin", Fault::CommitThenDrop);
        ep.push_txn_fault("commit", Fault::CommitThenDrop);
        ep.push_txn_fault("prepare", Fault::Http500);
        let mut s = eo_sink(&ep, true, &[("sink.max-retries", "3")]);
        s.open(true, None).await.unwrap();
        s.write(inserts(0..2)).await.unwrap();
        s.snapshot(1).await.unwrap();
        s.notify_checkpoint_complete(1).await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1]);
        let calls: Vec<String> = ep.txn_calls().iter().map(|c| format!("{} {}", c.op, c.status)).collect();
        assert_eq!(
            calls,
            vec![
                "begin OK: , dropped",
                "begin LABEL_ALREADY_EXISTS: RUNNING",
                "rollback OK: ",
                "begin OK: ",
                "load OK: 2 rows",
                "prepare HTTP 500",
                "prepare OK: ",
                "commit OK: , dropped",
                "commit OK: Transaction already commited",
            ],
        );
        assert_eq!(ep.violations(), Vec::<String>::new());

        // A transaction open longer than its timeout is rolled back by StarRocks.
        let mut s = eo_sink(&ep, true, &[("sink.properties.timeout", "1"), ("sink.label-prefix", "slow")]);
        s.open(true, None).await.unwrap();
        s.write(inserts(5..6)).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let e = s.snapshot(1).await.unwrap_err().to_string();
        assert!(e.contains("could not prepare transaction 'slow-") && e.contains("ABORTED") && e.contains("checkpoint interval"), "{e}");
        assert_eq!(ids(&ep), vec![0, 1]);

        // A label committed by an earlier run is not begun again.
        let committed = ep.txn_labels(TxnState::Committed);
        let run = committed[0].trim_start_matches("eo-").split('-').next().unwrap().to_string();
        let mut s = eo_sink(&ep, true, &[]);
        let state = format!(r#"{{"run":"{run}","checkpoint":0,"prepared":[]}}"#);
        s.open(true, Some(state.as_bytes())).await.unwrap();
        s.write(inserts(7..8)).await.unwrap();
        let e = s.snapshot(1).await.unwrap_err().to_string();
        assert!(e.contains("already committed by an earlier run") && e.contains("sink.label-prefix"), "{e}");
        // A broken state is a clear error.
        let mut s = eo_sink(&ep, true, &[]);
        let e = s.open(true, Some(b"{}")).await.unwrap_err().to_string();
        assert!(e.contains("no run id"), "{e}");
    }

    #[tokio::test]
    async fn the_transaction_interface_states() {
        use crate::starrocks::client::TxnOp::*;
        let ep = endpoint(true);
        let s = sink(&ep, true, &[]);
        let mut l = s.shared.lock().await;
        let c = &mut l.client;
        let st = |r: LoadResponse| format!("{} {}", r.status, r.message);
        assert_eq!(st(c.txn(Begin, "t1").await.unwrap()), "OK ");
        assert_eq!(st(c.txn(Begin, "t1").await.unwrap()), "LABEL_ALREADY_EXISTS Label [t1] has already been used.");
        assert_eq!(c.label_state("t1").await.unwrap(), "PREPARE");
        assert_eq!(st(c.txn(Commit, "nope").await.unwrap()), "FAILED Transcation Not Exist");
        assert_eq!(st(c.txn(Prepare, "t1").await.unwrap()), "OK ");
        let e = c.txn_load("t1", Bytes::from_static(b"1\t\\N\t\\N\t0\n"), 1).await.unwrap_err().to_string();
        assert!(e.contains("Transcation State Invalid"), "{e}");
        assert_eq!(st(c.txn(Commit, "t1").await.unwrap()), "OK ");
        assert_eq!(st(c.txn(Rollback, "t1").await.unwrap()), "FAILED Transcation State Invalid");
        assert_eq!(c.label_state("t1").await.unwrap(), "VISIBLE");
        assert_eq!(st(c.txn(Begin, "t2").await.unwrap()), "OK ");
        assert_eq!(st(c.txn(Rollback, "t2").await.unwrap()), "OK ");
        assert_eq!(st(c.txn(Begin, "t2").await.unwrap()), "OK ", "a rolled back label can be used again");
        assert_eq!(c.label_state("unknown").await.unwrap(), "UNKNOWN");
        drop(l);
        assert_eq!(ep.violations(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn https_load_urls_with_a_trusted_ca() {
        let spec = vec![TableSpec::new("flink_cdc", "orders", &["order_id", "order_revenue", "order_region"], &["order_id"])];
        let ep = StreamLoadEndpoint::start_tls("loader", "s3cret", spec).expect("start the TLS endpoint");
        assert!(ep.load_url().starts_with("https://127.0.0.1:"));
        let ca = crate::starrocks::endpoint::test_ca_pem_path().display().to_string();
        let mut s = sink(&ep, true, &[("rsql.tls.ca-file", ca.as_str())]);
        s.write(inserts(0..2)).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1]);
        // Transactions over https too.
        let mut s = eo_sink(&ep, true, &[("rsql.tls.ca-file", ca.as_str())]);
        s.open(true, None).await.unwrap();
        s.write(inserts(2..3)).await.unwrap();
        s.snapshot(1).await.unwrap();
        s.notify_checkpoint_complete(1).await.unwrap();
        assert_eq!(ids(&ep), vec![0, 1, 2]);
        assert_eq!(ep.violations(), Vec::<String>::new());
        assert!(ep.tls_failures().is_empty(), "{:?}", ep.tls_failures());

        // Without the CA the certificate is not trusted.
        let mut s = sink(&ep, true, &[("sink.max-retries", "0")]);
        s.write(inserts(3..4)).await.unwrap();
        let e = s.flush().await.unwrap_err().to_string();
        assert!(e.contains("rsql.tls.ca-file"), "{e}");
        // The endpoint notes the refused handshake once its side of it has ended.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ep.tls_failures().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!ep.tls_failures().is_empty());
        // A CA file that is not there, or not PEM.
        let e = StarRocksSink::new(
            StarRocksConfig::from_table(&table(&[("connector", "starrocks"), ("jdbc-url", "jdbc:mysql://h:9030"), ("load-url", "https://h:8443"),
                ("database-name", "d"), ("table-name", "t"), ("username", "u"), ("password", ""), ("rsql.tls.ca-file", "/nonexistent/ca.pem")], true))
            .unwrap(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("cannot read 'rsql.tls.ca-file' '/nonexistent/ca.pem'"), "{e}");
    }

    #[tokio::test]
    async fn the_interval_flushes_an_idle_buffer() {
        let ep = endpoint(true);
        let mut s = sink(&ep, true, &[("sink.buffer-flush.interval-ms", "1000")]);
        s.write(batch(&[(RowKind::Insert, 1, None, None)])).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ep.rows("flink_cdc", "orders").is_empty() {
            assert!(Instant::now() < deadline, "the interval flush did not happen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.close().await.unwrap();
        assert_eq!(ep.loads().len(), 1);
    }
}
