//! Operating a running client: a Prometheus text endpoint (off by default; `SET
//! 'metrics.reporter.prom.port' = '9249'` turns it on, bound to 127.0.0.1 unless
//! 'metrics.reporter.prom.host' says otherwise) and a periodic status line in the logs.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsql_runtime::executor::JobMetrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The jobs whose metrics are published.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: Arc<Mutex<Vec<(String, Arc<JobMetrics>)>>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")
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
        let _ = writeln!(out, "# HELP rsql_jobs Jobs started by this client.\n# TYPE rsql_jobs gauge\nrsql_jobs {}", jobs.len());
        out
    }

    /// One line per job: rows in at its sources, rows out at its sinks.
    pub fn status_line(&self) -> Vec<String> {
        let jobs = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        jobs.iter()
            .map(|(job, m)| {
                let (mut src, mut snk) = (0u64, 0u64);
                for (node, nm) in &m.nodes {
                    if node.starts_with("TableSourceScan") {
                        src += nm.rows_in.load(Ordering::Relaxed);
                    } else if node.starts_with("Sink") {
                        snk += nm.rows_in.load(Ordering::Relaxed);
                    }
                }
                let state: u64 = m.nodes.iter().map(|(_, nm)| nm.state_bytes.load(Ordering::Relaxed)).sum();
                let mut line = format!("job {job}: {src} rows read by its sources, {snk} rows written by its sinks");
                if state > 0 {
                    line.push_str(&format!(", {state} bytes of state"));
                }
                if let Ok(c) = m.checkpoints.lock() {
                    if c.completed > 0 {
                        line.push_str(&format!(", checkpoint {} ({} bytes, {} ms)", c.last_id, c.last_bytes, c.last_duration.as_millis()));
                    }
                }
                line
            })
            .collect()
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

/// Logs the status line every `every` (visible with RUST_LOG=info).
pub async fn log_status(registry: Registry, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        for line in registry.status_line() {
            tracing::info!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_runtime::executor::NodeMetrics;

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
}
