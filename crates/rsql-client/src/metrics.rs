//! Operating a running client: a Prometheus text endpoint (off by default; `SET
//! 'metrics.reporter.prom.port' = '9249'` turns it on, bound to 127.0.0.1 unless
//! 'metrics.reporter.prom.host' says otherwise), a periodic status line in the logs (and on the
//! terminal while a source reads a snapshot), and the table SHOW JOBS prints. All three show the
//! same figures: rows in and out, state size, checkpoints, and each source's phase and lag.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsql_runtime::executor::JobMetrics;
use rsql_runtime::{Lag, PhaseView, StatusView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The jobs whose metrics are published.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: Arc<Mutex<Vec<(String, Arc<JobMetrics>)>>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")
}

fn is_source(node: &str) -> bool {
    node.starts_with("TableSourceScan")
}

fn is_sink(node: &str) -> bool {
    node.starts_with("Sink")
}

/// The table a source node reads: the last name in `TableSourceScan(table=[[cat, db, name]], ...)`.
pub fn source_table(node: &str) -> &str {
    node.split_once("[[")
        .and_then(|(_, rest)| rest.split_once("]]"))
        .and_then(|(path, _)| path.rsplit(", ").next())
        .unwrap_or(node)
}

/// The statuses of a job's sources that report one: (node id, node, status).
fn source_statuses(m: &JobMetrics) -> Vec<(usize, &str, StatusView)> {
    m.nodes
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| is_source(name))
        .filter_map(|(i, (name, nm))| nm.source_status().map(|v| (i, name.as_str(), v)))
        .collect()
}

fn load(v: &std::sync::atomic::AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

fn state_bytes(m: &JobMetrics) -> u64 {
    m.nodes.iter().map(|(_, nm)| load(&nm.state_bytes)).sum()
}

/// The header and rows of SHOW JOBS: one row per source and sink of each job, with rows in and
/// out, the job's state size and last checkpoint (on its first row), and each source's phase
/// (snapshot progress, binlog, ...) and lag.
pub fn jobs_table(jobs: &[(String, Arc<JobMetrics>)]) -> (Vec<String>, Vec<Vec<String>>) {
    let header = ["job", "name", "node", "rows in", "rows out", "state bytes", "last checkpoint", "phase", "lag"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rows = Vec::new();
    for (i, (name, m)) in jobs.iter().enumerate() {
        let state = state_bytes(m);
        let cp = m.checkpoints.lock().map(|c| c.clone()).unwrap_or_default();
        let cp_text = if cp.completed > 0 {
            format!("{} ({} bytes, {} ms)", cp.last_id, cp.last_bytes, cp.last_duration.as_millis())
        } else {
            "-".to_string()
        };
        let mut first = true;
        for (node, nm) in &m.nodes {
            if !(is_source(node) || is_sink(node)) {
                continue;
            }
            let status = if is_source(node) { nm.source_status() } else { None };
            let (phase, lag) = match &status {
                Some(v) => (v.phase.text(), v.lag.map(|l| lag_value(&l)).unwrap_or_else(|| "-".into())),
                None => (String::new(), String::new()),
            };
            rows.push(vec![
                format!("{}", i + 1),
                name.clone(),
                node.clone(),
                load(&nm.rows_in).to_string(),
                load(&nm.rows_out).to_string(),
                if first { state.to_string() } else { String::new() },
                if first { cp_text.clone() } else { String::new() },
                phase,
                lag,
            ]);
            first = false;
        }
    }
    (header, rows)
}

/// `12 messages`, `0.0 s`.
fn lag_value(l: &Lag) -> String {
    match l {
        Lag::Messages(n) => format!("{n} messages"),
        Lag::Seconds(s) => format!("{s:.1} s"),
    }
}

impl Registry {
    pub fn add(&self, name: &str, m: Arc<JobMetrics>) {
        if let Ok(mut j) = self.jobs.lock() {
            j.push((name.to_string(), m));
        }
    }

    /// Prometheus text exposition of every node's row counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP rsql_rows_in_total Rows received by a node of a job.\n# TYPE rsql_rows_in_total counter\n");
        let jobs = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        for (job, m) in &jobs {
            for (i, (node, nm)) in m.nodes.iter().enumerate() {
                let _ = writeln!(out, "rsql_rows_in_total{{job=\"{}\",node_id=\"{i}\",node=\"{}\"}} {}", escape(job), escape(node), nm.rows_in.load(Ordering::Relaxed));
            }
        }
        out.push_str("# HELP rsql_rows_out_total Rows sent by a node of a job.\n# TYPE rsql_rows_out_total counter\n");
        for (job, m) in &jobs {
            for (i, (node, nm)) in m.nodes.iter().enumerate() {
                let _ = writeln!(out, "rsql_rows_out_total{{job=\"{}\",node_id=\"{i}\",node=\"{}\"}} {}", escape(job), escape(node), nm.rows_out.load(Ordering::Relaxed));
            }
        }
        out.push_str("# HELP rsql_state_bytes Approximate bytes of state held by a node of a job.\n# TYPE rsql_state_bytes gauge\n");
        for (job, m) in &jobs {
            for (i, (node, nm)) in m.nodes.iter().enumerate() {
                let v = nm.state_bytes.load(Ordering::Relaxed);
                if v > 0 {
                    let _ = writeln!(out, "rsql_state_bytes{{job=\"{}\",node_id=\"{i}\",node=\"{}\"}} {v}", escape(job), escape(node));
                }
            }
        }
        out.push_str("# HELP rsql_checkpoints_total Checkpoints of a job by outcome.\n# TYPE rsql_checkpoints_total counter\n");
        for (job, m) in &jobs {
            let c = m.checkpoints.lock().map(|c| c.clone()).unwrap_or_default();
            let _ = writeln!(out, "rsql_checkpoints_total{{job=\"{}\",outcome=\"completed\"}} {}", escape(job), c.completed);
            let _ = writeln!(out, "rsql_checkpoints_total{{job=\"{}\",outcome=\"failed\"}} {}", escape(job), c.failed);
            if c.completed > 0 {
                let _ = writeln!(out, "rsql_last_checkpoint_bytes{{job=\"{}\"}} {}", escape(job), c.last_bytes);
                let _ = writeln!(out, "rsql_last_checkpoint_duration_seconds{{job=\"{}\"}} {:.3}", escape(job), c.last_duration.as_secs_f64());
            }
        }
        render_sources(&mut out, &jobs);
        let _ = writeln!(out, "# HELP rsql_jobs Jobs started by this client.\n# TYPE rsql_jobs gauge\nrsql_jobs {}", jobs.len());
        out
    }

    /// One line per job: rows in at its sources, rows out at its sinks, state, the last
    /// checkpoint, then each source's phase and lag (`orders: binlog, lag 0.0 s`).
    pub fn status_line(&self) -> Vec<String> {
        let jobs = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        jobs.iter().map(|(job, m)| job_line(job, m)).collect()
    }

    /// The status lines of the jobs with a source reading a snapshot.
    fn snapshot_lines(&self) -> Vec<String> {
        let jobs = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        jobs.iter()
            .filter(|(_, m)| source_statuses(m).iter().any(|(_, _, v)| matches!(v.phase, PhaseView::Snapshot { .. })))
            .map(|(job, m)| job_line(job, m))
            .collect()
    }

    /// Sources whose snapshot is over and not yet announced (`seen` remembers them):
    /// `orders: snapshot done, 5000 rows in 1.2 s; binlog`.
    fn snapshots_done(&self, seen: &mut std::collections::HashSet<(String, usize)>) -> Vec<String> {
        let jobs = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for (job, m) in &jobs {
            for (id, node, v) in source_statuses(m) {
                if let Some((rows, took)) = v.snapshot_done {
                    if seen.insert((job.clone(), id)) {
                        out.push(format!(
                            "{}: snapshot done, {rows} rows in {:.1} s; {}",
                            source_table(node),
                            took.as_secs_f64(),
                            v.text()
                        ));
                    }
                }
            }
        }
        out
    }
}

/// The status line of one job.
fn job_line(job: &str, m: &JobMetrics) -> String {
    let (mut src, mut snk) = (0u64, 0u64);
    for (node, nm) in &m.nodes {
        if is_source(node) {
            src += load(&nm.rows_in);
        } else if is_sink(node) {
            snk += load(&nm.rows_in);
        }
    }
    let state = state_bytes(m);
    let mut line = format!("job {job}: {src} rows read by its sources, {snk} rows written by its sinks");
    if state > 0 {
        line.push_str(&format!(", {state} bytes of state"));
    }
    if let Ok(c) = m.checkpoints.lock() {
        if c.completed > 0 {
            line.push_str(&format!(", checkpoint {} ({} bytes, {} ms)", c.last_id, c.last_bytes, c.last_duration.as_millis()));
        }
    }
    for (_, node, v) in source_statuses(m) {
        line.push_str(&format!("; {}: {}", source_table(node), v.text()));
    }
    line
}

/// Prometheus series of the sources' own status: lag, snapshot progress, phase.
fn render_sources(out: &mut String, jobs: &[(String, Arc<JobMetrics>)]) {
    let mut lag_msgs = String::new();
    let mut lag_secs = String::new();
    let (mut snap_rows, mut snap_est, mut snap_rate) = (String::new(), String::new(), String::new());
    let mut phases = String::new();
    for (job, m) in jobs {
        for (i, node, v) in source_statuses(m) {
            let labels = format!(
                "job=\"{}\",node_id=\"{i}\",node=\"{}\",table=\"{}\"",
                escape(job),
                escape(node),
                escape(source_table(node))
            );
            match v.lag {
                Some(Lag::Messages(n)) => {
                    let _ = writeln!(lag_msgs, "rsql_source_lag_messages{{{labels}}} {n}");
                }
                Some(Lag::Seconds(s)) => {
                    let _ = writeln!(lag_secs, "rsql_source_lag_seconds{{{labels}}} {s:.3}");
                }
                None => {}
            }
            let phase = match &v.phase {
                PhaseView::Running => "running",
                PhaseView::Finished => "finished",
                PhaseView::Streaming(s) => s,
                PhaseView::Snapshot { rows, estimated, rows_per_sec } => {
                    let _ = writeln!(snap_rows, "rsql_source_snapshot_rows{{{labels}}} {rows}");
                    let _ = writeln!(snap_est, "rsql_source_snapshot_estimated_rows{{{labels}}} {estimated}");
                    let _ = writeln!(snap_rate, "rsql_source_snapshot_rows_per_second{{{labels}}} {rows_per_sec:.1}");
                    "snapshot"
                }
            };
            let _ = writeln!(phases, "rsql_source_phase{{{labels},phase=\"{}\"}} 1", escape(phase));
        }
    }
    let families = [
        ("rsql_source_lag_messages", "Messages a kafka source has not read yet: high watermark - position, summed over partitions.", lag_msgs),
        ("rsql_source_lag_seconds", "Seconds a mysql-cdc source is behind the server: now - time of the last binlog event read, 0 when caught up.", lag_secs),
        ("rsql_source_snapshot_rows", "Rows a source has read of its snapshot.", snap_rows),
        ("rsql_source_snapshot_estimated_rows", "Rows the snapshot is estimated to read (information_schema's TABLE_ROWS).", snap_est),
        ("rsql_source_snapshot_rows_per_second", "Rows per second of the snapshot since it began.", snap_rate),
        ("rsql_source_phase", "What a source is doing (snapshot, binlog, running, finished), as a label.", phases),
    ];
    for (name, help, samples) in families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{samples}");
    }
}

/// Serves `GET /metrics` (any path) until the process ends.
pub async fn serve(registry: Registry, host: String, port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    tracing::info!("metrics on http://{host}:{port}/metrics");
    loop {
        let (mut sock, _) = listener.accept().await?;
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
            let body = registry.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Logs the status line every `every` (visible with RUST_LOG=info). With `terminal`, while a
/// source reads a snapshot the line also goes to stderr every `every / 2`, and the end of each
/// snapshot is announced there once (within a second).
pub async fn log_status(registry: Registry, every: Duration, terminal: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let per_line = (every.as_secs() / 2).max(1);
    let mut seen = std::collections::HashSet::new();
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        if terminal {
            if n % per_line == 0 {
                for line in registry.snapshot_lines() {
                    eprintln!("[INFO] {line}");
                }
            }
            for line in registry.snapshots_done(&mut seen) {
                eprintln!("[INFO] {line}");
            }
        }
        if n % (2 * per_line) == 0 {
            for line in registry.status_line() {
                tracing::info!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_runtime::executor::NodeMetrics;
    use rsql_runtime::SourceStatus;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let m = Arc::new(JobMetrics {
            nodes: vec![("TableSourceScan(table=[[a, b, \"c\"]])".into(), NodeMetrics::default()), ("Sink(table=[x])".into(), NodeMetrics::default())],
            checkpoints: Default::default(),
        });
        m.nodes[0].1.rows_in.store(7, Ordering::Relaxed);
        m.nodes[1].1.rows_in.store(5, Ordering::Relaxed);
        r.add("demo", m);
        let text = r.render();
        assert!(text.contains("rsql_rows_in_total{job=\"demo\",node_id=\"0\",node=\"TableSourceScan(table=[[a, b, \\\"c\\\"]])\"} 7"), "{text}");
        assert!(text.contains("rsql_jobs 1"));
        assert_eq!(r.status_line(), vec!["job demo: 7 rows read by its sources, 5 rows written by its sinks".to_string()]);
    }

    fn job_with_sources() -> (Arc<JobMetrics>, Arc<SourceStatus>, Arc<SourceStatus>) {
        let m = Arc::new(JobMetrics {
            nodes: vec![
                ("TableSourceScan(table=[[default_catalog, default_database, orders]], fields=[id])".into(), NodeMetrics::default()),
                ("TableSourceScan(table=[[default_catalog, default_database, topic_src]], fields=[id])".into(), NodeMetrics::default()),
                ("GroupAggregate(groupBy=[id])".into(), NodeMetrics::default()),
                ("Sink(table=[default_catalog.default_database.out], fields=[id])".into(), NodeMetrics::default()),
            ],
            checkpoints: Default::default(),
        });
        let cdc = Arc::new(SourceStatus::default());
        let kafka = Arc::new(SourceStatus::default());
        *m.nodes[0].1.source.lock().unwrap() = Some(cdc.clone());
        *m.nodes[1].1.source.lock().unwrap() = Some(kafka.clone());
        m.nodes[0].1.rows_in.store(1200, Ordering::Relaxed);
        m.nodes[0].1.rows_out.store(1200, Ordering::Relaxed);
        m.nodes[1].1.rows_in.store(30, Ordering::Relaxed);
        m.nodes[2].1.state_bytes.store(4096, Ordering::Relaxed);
        m.nodes[3].1.rows_in.store(900, Ordering::Relaxed);
        (m, cdc, kafka)
    }

    #[test]
    fn sources_show_snapshot_progress_then_lag() {
        let (m, cdc, kafka) = job_with_sources();
        let r = Registry::default();
        r.add("demo", m.clone());
        cdc.snapshot_started(4800);
        cdc.snapshot_rows(1200);
        kafka.set_lag_messages(17);

        let line = &r.status_line()[0];
        assert!(line.starts_with("job demo: 1230 rows read by its sources, 900 rows written by its sinks, 4096 bytes of state; orders: snapshot 1200 of ~4800 rows (25%), "), "{line}");
        assert!(line.ends_with(" rows/s; topic_src: running, lag 17 messages"), "{line}");
        assert_eq!(r.snapshot_lines().len(), 1, "a snapshot runs: the line goes to the terminal");
        let mut seen = std::collections::HashSet::new();
        assert!(r.snapshots_done(&mut seen).is_empty());

        let text = r.render();
        let labels = "job=\"demo\",node_id=\"0\",node=\"TableSourceScan(table=[[default_catalog, default_database, orders]], fields=[id])\",table=\"orders\"";
        assert!(text.contains(&format!("rsql_source_snapshot_rows{{{labels}}} 1200\n")), "{text}");
        assert!(text.contains(&format!("rsql_source_snapshot_estimated_rows{{{labels}}} 4800\n")), "{text}");
        assert!(text.contains(&format!("rsql_source_phase{{{labels},phase=\"snapshot\"}} 1\n")), "{text}");
        assert!(text.contains("rsql_source_lag_messages{job=\"demo\",node_id=\"1\",node=\"TableSourceScan(table=[[default_catalog, default_database, topic_src]], fields=[id])\",table=\"topic_src\"} 17\n"), "{text}");
        assert!(text.contains("# TYPE rsql_source_lag_seconds gauge"), "{text}");

        cdc.set_phase(rsql_runtime::Phase::Streaming("binlog"));
        cdc.caught_up();
        assert!(r.snapshot_lines().is_empty(), "no snapshot: nothing for the terminal");
        let done = r.snapshots_done(&mut seen);
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(done[0].starts_with("orders: snapshot done, 1200 rows in ") && done[0].ends_with(" s; binlog, lag 0.0 s"), "{done:?}");
        assert!(r.snapshots_done(&mut seen).is_empty(), "announced once");
        assert!(r.status_line()[0].contains("; orders: binlog, lag 0.0 s; topic_src"), "{:?}", r.status_line());
        assert!(r.render().contains(&format!("rsql_source_lag_seconds{{{labels}}} 0.000\n")));
    }

    #[test]
    fn show_jobs_lists_rows_state_and_source_status() {
        let (m, cdc, _kafka) = job_with_sources();
        cdc.set_phase(rsql_runtime::Phase::Streaming("binlog"));
        cdc.event_read(rsql_runtime::source_status::now_ms() - 3_000);
        let (header, rows) = jobs_table(&[("demo".to_string(), m)]);
        assert_eq!(header, ["job", "name", "node", "rows in", "rows out", "state bytes", "last checkpoint", "phase", "lag"]);
        assert_eq!(rows.len(), 3, "two sources and a sink: {rows:?}");
        assert_eq!(&rows[0][..3], &["1", "demo", "TableSourceScan(table=[[default_catalog, default_database, orders]], fields=[id])"]);
        assert_eq!(&rows[0][3..8], &["1200", "1200", "4096", "-", "binlog"]);
        assert!(rows[0][8].ends_with(" s") && rows[0][8].starts_with('3'), "{:?}", rows[0]);
        assert_eq!(&rows[1][3..9], &["30", "0", "", "", "running", "-"]);
        assert_eq!(&rows[2][3..9], &["900", "0", "", "", "", ""]);
    }
}
