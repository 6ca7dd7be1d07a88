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

use crate::background::ErrorSlot;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::Sink;
use tokio::sync::Mutex;

use super::client::StreamLoadClient;
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

    /// Loads the buffer (if any) under the next label.
    async fn flush_buffer(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
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
        };
        Ok(StarRocksSink { cfg, shared: Arc::new(Mutex::new(loader)), flusher: None, background_error: ErrorSlot::default() })
    }

    /// (loads done, rows loaded) so far.
    pub async fn loaded(&self) -> (u64, u64) {
        let l = self.shared.lock().await;
        (l.loads, l.loaded_rows)
    }

    fn start_flusher(&mut self) {
        if self.flusher.is_some() {
            return;
        }
        let interval = self.cfg.flush_interval;
        let shared = self.shared.clone();
        let slot = self.background_error.clone();
        let tick = (interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.flusher = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let mut l = shared.lock().await;
                if l.since.is_some_and(|s| s.elapsed() >= interval) {
                    if let Err(e) = l.flush_buffer().await {
                        tracing::error!("{e}");
                        slot.put(e);
                        return;
                    }
                }
            }
        }));
    }

    fn check_background(&self) -> Result<()> {
        self.background_error.check()
    }
}

#[async_trait]
impl Sink for StarRocksSink {
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
    use crate::starrocks::endpoint::{Fault, StreamLoadEndpoint, TableSpec};
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
