//! Stream Load over HTTP/1.1: `PUT /api/{db}/{table}/_stream_load` with basic auth, the batch's
//! label and the load headers, following the FE's `307 Temporary Redirect` to a BE by hand (an
//! HTTP client drops `Authorization` on a redirect to another host), and turning StarRocks' JSON
//! answer into done / retry / error.
//!
//! The FE answers a load from its head alone (`Expect: 100-continue`); since the HTTP client
//! sends a body without waiting for `100 Continue`, each try first asks the FE with an empty
//! request without label where the load goes, then sends the labelled body to that BE. The data
//! thus never travels to the FE, as with curl's `--location-trusted` or Flink's Apache client.
//!
//! Answers: `Success` and `Publish Timeout` (committed, visible shortly) are done;
//! `Label Already Exists` is done when the existing job is `FINISHED` or `VISIBLE` (an earlier try
//! of this batch got through) and retried otherwise; `Fail` with an `ErrorURL` (rows StarRocks
//! refused) stops the job with the table, the label, the message and the first lines of the error
//! log; other failures (unreachable hosts, HTTP errors, `Fail` without rows to blame) are retried
//! with the same label, with backoff, on the next `load-url` host, up to `sink.max-retries` times.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use rsql_common::{Result, RsqlError};

use super::StarRocksConfig;

/// What StarRocks answered for one load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadResponse {
    pub status: String,
    pub message: String,
    pub existing_job_status: Option<String>,
    pub error_url: Option<String>,
    pub loaded_rows: u64,
    pub filtered_rows: u64,
    pub txn_id: Option<i64>,
}

impl LoadResponse {
    /// Parses the JSON body of a Stream Load answer.
    pub fn parse(body: &[u8]) -> std::result::Result<LoadResponse, String> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e}): {}", snippet(body)))?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(|x| x.as_u64().or_else(|| x.as_str().and_then(|s| s.parse().ok()))).unwrap_or(0);
        let status = s("Status").ok_or_else(|| {
            format!(
                "the answer has no Status (usually wrong credentials, a wrong column_separator / row_delimiter, or too many columns): {}",
                snippet(body)
            )
        })?;
        Ok(LoadResponse {
            status,
            message: s("Message").unwrap_or_default(),
            existing_job_status: s("ExistingJobStatus").filter(|x| !x.is_empty()),
            error_url: s("ErrorURL").filter(|x| !x.is_empty()),
            loaded_rows: n("NumberLoadedRows"),
            filtered_rows: n("NumberFilteredRows"),
            txn_id: v.get("TxnId").and_then(|x| x.as_i64()),
        })
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if body.len() > 300 {
        format!("{s}...")
    } else {
        s
    }
}

/// How one attempt ended.
enum Attempt {
    Done(Box<LoadResponse>),
    Retry(String),
    Fatal(RsqlError),
}

/// Sends loads to the hosts of `load-url`, moving to the next host when one fails.
pub struct StreamLoadClient {
    cfg: Arc<StarRocksConfig>,
    http: reqwest::Client,
    /// Load headers besides `label` and `Authorization`.
    headers: HeaderMap,
    next_host: usize,
    /// `load-url` hosts that take loads themselves (BEs): no redirect to ask for.
    direct: HashSet<String>,
    /// Open transactions: the `scheme://host:port` each began on.
    txn_hosts: HashMap<String, String>,
}

/// Percent-encodes a path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl StreamLoadClient {
    /// `columns_header` is the value of the `columns` header unless `sink.properties.columns` says
    /// otherwise.
    pub fn new(cfg: Arc<StarRocksConfig>, columns_header: &str, json: bool) -> Result<StreamLoadClient> {
        let ctx = cfg.context();
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(t) = cfg.socket_timeout {
            b = b.timeout(t);
        }
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| RsqlError::connector(ctx.clone(), format!("cannot read 'rsql.tls.ca-file' '{path}': {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RsqlError::connector(ctx.clone(), format!("'rsql.tls.ca-file' '{path}' is not a PEM file of certificates: {e}")))?;
            if certs.is_empty() {
                return Err(RsqlError::connector(ctx.clone(), format!("'rsql.tls.ca-file' '{path}' holds no PEM certificate")));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| RsqlError::connector(ctx.clone(), format!("cannot create the HTTP client: {e}")))?;
        let mut headers = HeaderMap::new();
        let mut put = |k: &str, v: &str| -> Result<()> {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| RsqlError::connector(ctx.clone(), format!("'sink.properties.{k}' is not a valid HTTP header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| RsqlError::connector(ctx.clone(), format!("the value of 'sink.properties.{k}' cannot be sent as an HTTP header")))?;
            headers.insert(name, value);
            Ok(())
        };
        put("expect", "100-continue")?;
        for (k, v) in &cfg.properties {
            put(k, v)?;
        }
        if !cfg.properties.contains_key("columns") {
            put("columns", columns_header)?;
        }
        if json {
            // The body is one JSON array of rows.
            put("strip_outer_array", "true")?;
            if !cfg.properties.contains_key("ignore_json_size") {
                put("ignore_json_size", "true")?;
            }
        }
        Ok(StreamLoadClient { cfg, http, headers, next_host: 0, direct: HashSet::new(), txn_hosts: HashMap::new() })
    }

    /// The headers every load carries besides `label` and `Authorization` (for tests).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn ctx(&self) -> String {
        self.cfg.context()
    }

    /// Loads `body` under `label`, retrying with the same label until StarRocks has it or the
    /// retries are used up.
    pub async fn load(&mut self, label: &str, body: Bytes, rows: usize) -> Result<LoadResponse> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let host = self.cfg.load_urls[self.next_host % self.cfg.load_urls.len()].clone();
            match self.attempt(&host, label, &body).await {
                Attempt::Done(r) => {
                    tracing::debug!(
                        table = %self.cfg.flink_table, label, rows, status = %r.status, ms = started.elapsed().as_millis() as u64,
                        "stream load done"
                    );
                    if r.filtered_rows > 0 {
                        tracing::warn!(
                            table = %self.cfg.flink_table, label,
                            "StarRocks filtered {} row(s) of the load (allowed by max_filter_ratio); see {}",
                            r.filtered_rows,
                            r.error_url.as_deref().unwrap_or("its error log")
                        );
                    }
                    return Ok(*r);
                }
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry(why) => {
                    self.next_host += 1;
                    if attempt >= self.cfg.max_retries {
                        return Err(RsqlError::connector(
                            self.ctx(),
                            format!(
                                "stream load of {rows} row(s) with label '{label}' failed after {attempt} retries: {why}; \
                                 raise 'sink.max-retries' or 'sink.retry.interval-ms' to wait longer"
                            ),
                        ));
                    }
                    attempt += 1;
                    let backoff = self.cfg.retry_interval.saturating_mul(1 << (attempt - 1).min(4)).min(Duration::from_secs(120));
                    tracing::warn!(
                        table = %self.cfg.flink_table, label,
                        "stream load failed: {why}; retry {attempt} of {} with the same label in {:?}",
                        self.cfg.max_retries,
                        backoff
                    );
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Where the load goes: the BE an FE redirects to (asked with a request without body and
    /// label, so the FE never receives the data and no label is spent), or the host itself when it
    /// answers without redirecting (a BE given as `load-url`; remembered, so it is asked once).
    async fn locate(&mut self, host: &str, first: &str) -> std::result::Result<String, Attempt> {
        if self.direct.contains(host) {
            return Ok(first.to_string());
        }
        let req = self
            .http
            .put(first)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_LENGTH, "0")
            .basic_auth(&self.cfg.username, Some(&self.cfg.password))
            .body(Bytes::new());
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(Attempt::Retry(format!("PUT {first}: {}", describe_reqwest(&e)))),
        };
        let status = resp.status();
        if status.is_redirection() {
            // A BE, or the leader FE when `first` is a follower: the loaded request follows any
            // further redirect itself.
            return self.redirect_target(first, &resp);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.refused(status, first));
        }
        if status != StatusCode::OK {
            return Err(Attempt::Retry(format!("PUT {first}: HTTP {status}: {}", snippet(&bytes))));
        }
        self.direct.insert(host.to_string());
        Ok(first.to_string())
    }

    fn redirect_target(&self, url: &str, resp: &reqwest::Response) -> std::result::Result<String, Attempt> {
        let status = resp.status();
        let Some(loc) = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string) else {
            return Err(Attempt::Retry(format!("PUT {url}: {status} without a Location header")));
        };
        let next = match reqwest::Url::parse(url).and_then(|base| base.join(&loc)) {
            Ok(u) => u.to_string(),
            Err(e) => return Err(Attempt::Retry(format!("PUT {url}: redirect to '{loc}' is not a URL: {e}"))),
        };
        Ok(next)
    }

    fn refused(&self, status: StatusCode, url: &str) -> Attempt {
        Attempt::Fatal(RsqlError::connector(
            self.ctx(),
            format!(
                "StarRocks refused user '{}' ({status}) at {url}; check 'username' and 'password' and that the user has INSERT on {}.{}",
                self.cfg.username, self.cfg.database, self.cfg.table
            ),
        ))
    }

    /// One try: find the BE, PUT the body there under the label (following further redirects).
    async fn attempt(&mut self, host: &str, label: &str, body: &Bytes) -> Attempt {
        let first = format!("{host}/api/{}/{}/_stream_load", segment(&self.cfg.database), segment(&self.cfg.table));
        let mut url = match self.locate(host, &first).await {
            Ok(u) => u,
            Err(a) => return a,
        };
        for _hop in 0..4 {
            let req = self
                .http
                .put(&url)
                .headers(self.headers.clone())
                .header("label", label)
                .basic_auth(&self.cfg.username, Some(&self.cfg.password))
                .body(body.clone());
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Attempt::Retry(format!("PUT {url}: {}", describe_reqwest(&e))),
            };
            let status = resp.status();
            if status.is_redirection() {
                url = match self.redirect_target(&url, &resp) {
                    Ok(u) => u,
                    Err(a) => return a,
                };
                continue;
            }
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => return Attempt::Retry(format!("PUT {url}: reading the answer: {}", describe_reqwest(&e))),
            };
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return self.refused(status, &url);
            }
            if status != StatusCode::OK {
                return Attempt::Retry(format!("PUT {url}: HTTP {status}: {}", snippet(&bytes)));
            }
            let r = match LoadResponse::parse(&bytes) {
                Ok(r) => r,
                Err(m) => return Attempt::Retry(format!("PUT {url}: {m}")),
            };
            return self.judge(label, r).await;
        }
        Attempt::Retry(format!("more than 3 redirects starting at {host}"))
    }

    /// Done, retry or error, from StarRocks' answer.
    async fn judge(&self, label: &str, r: LoadResponse) -> Attempt {
        match r.status.as_str() {
            "Success" | "OK" => Attempt::Done(Box::new(r)),
            "Publish Timeout" => {
                tracing::info!(table = %self.cfg.flink_table, label, "StarRocks committed the load but publishing timed out; the rows become visible shortly");
                Attempt::Done(Box::new(r))
            }
            "Label Already Exists" => match r.existing_job_status.as_deref() {
                Some("FINISHED") | Some("VISIBLE") => {
                    tracing::info!(table = %self.cfg.flink_table, label, "the label was loaded by an earlier try; not loading it again");
                    Attempt::Done(Box::new(r))
                }
                other => Attempt::Retry(format!(
                    "label '{label}' is already used by a load that is {} (an earlier try still running); waiting for it",
                    other.unwrap_or("in an unknown state")
                )),
            },
            "Fail" => {
                if let Some(url) = &r.error_url {
                    let log = self.error_log(url).await;
                    Attempt::Fatal(RsqlError::connector(
                        self.ctx(),
                        format!(
                            "StarRocks refused the load with label '{label}': {} (ErrorURL: {url}){}",
                            r.message,
                            if log.is_empty() { String::new() } else { format!("; error log: {log}") }
                        ),
                    ))
                } else if is_permanent(&r.message) {
                    Attempt::Fatal(RsqlError::connector(
                        self.ctx(),
                        format!("StarRocks refused the load with label '{label}': {}", r.message),
                    ))
                } else {
                    Attempt::Retry(format!("StarRocks answered Fail for label '{label}': {}", r.message))
                }
            }
            other => Attempt::Retry(format!("StarRocks answered status '{other}' for label '{label}': {}", r.message)),
        }
    }

    /// The first lines of a load's error log (what StarRocks says about the refused rows).
    async fn error_log(&self, url: &str) -> String {
        let fetch = async {
            let resp = self.http.get(url).send().await.ok()?;
            let bytes = resp.bytes().await.ok()?;
            Some(String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(5), fetch).await {
            Ok(Some(text)) => text.lines().filter(|l| !l.trim().is_empty()).take(5).collect::<Vec<_>>().join(" | "),
            _ => String::new(),
        }
    }
}

/// One call of the Stream Load transaction interface (`POST /api/transaction/{op}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Begin,
    Prepare,
    Commit,
    Rollback,
}

impl TxnOp {
    pub fn path(self) -> &'static str {
        match self {
            TxnOp::Begin => "begin",
            TxnOp::Prepare => "prepare",
            TxnOp::Commit => "commit",
            TxnOp::Rollback => "rollback",
        }
    }
}

/// The state StarRocks reports for a label (`GET /api/{db}/get_load_state`).
pub fn label_state_is_committed(state: &str) -> bool {
    matches!(state.to_ascii_uppercase().as_str(), "COMMITTED" | "VISIBLE")
}

impl StreamLoadClient {
    /// Headers of every transaction call: the label, db and table, credentials.
    fn txn_request(&self, method: reqwest::Method, url: &str, label: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header("label", label)
            .header("db", &self.cfg.database)
            .header("table", &self.cfg.table)
            .header(reqwest::header::EXPECT, "100-continue")
            .basic_auth(&self.cfg.username, Some(&self.cfg.password))
    }

    /// One transaction call, following redirects by hand (credentials kept) to the BE that runs
    /// the transaction, retried with backoff on unreachable hosts and HTTP errors. Returns
    /// StarRocks' answer, whatever its status; the caller judges it.
    pub async fn txn(&mut self, op: TxnOp, label: &str) -> Result<LoadResponse> {
        let mut attempt: u32 = 0;
        loop {
            let host = self.txn_host(label);
            match self.txn_attempt(op, &host, label).await {
                Ok(r) => return Ok(r),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Done(r)) => return Ok(*r),
                Err(Attempt::Retry(why)) => {
                    self.txn_hosts.remove(label);
                    self.next_host += 1;
                    if attempt >= self.cfg.max_retries {
                        return Err(RsqlError::connector(
                            self.ctx(),
                            format!(
                                "transaction {} of label '{label}' failed after {attempt} retries: {why}; \
                                 raise 'sink.max-retries' or 'sink.retry.interval-ms' to wait longer",
                                op.path()
                            ),
                        ));
                    }
                    attempt += 1;
                    let backoff = self.cfg.retry_interval.saturating_mul(1 << (attempt - 1).min(4)).min(Duration::from_secs(120));
                    tracing::warn!(table = %self.cfg.flink_table, label, "transaction {} failed: {why}; retry {attempt} in {:?}", op.path(), backoff);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// The host a label's calls go to: the BE its transaction began on, else the next `load-url`.
    fn txn_host(&self, label: &str) -> String {
        match self.txn_hosts.get(label) {
            Some(h) => h.clone(),
            None => self.cfg.load_urls[self.next_host % self.cfg.load_urls.len()].clone(),
        }
    }

    async fn txn_attempt(&mut self, op: TxnOp, host: &str, label: &str) -> std::result::Result<LoadResponse, Attempt> {
        let mut url = format!("{host}/api/transaction/{}", op.path());
        for _hop in 0..4 {
            let mut req = self.txn_request(reqwest::Method::POST, &url, label).header(reqwest::header::CONTENT_LENGTH, "0");
            match op {
                TxnOp::Begin => {
                    req = req.header("timeout", self.cfg.properties.get("timeout").map(String::as_str).unwrap_or("600"));
                }
                TxnOp::Prepare => {
                    if let Some(t) = self.cfg.properties.get("prepared_timeout") {
                        req = req.header("prepared_timeout", t.as_str());
                    }
                }
                _ => {}
            }
            let resp = req.body(Bytes::new()).send().await.map_err(|e| Attempt::Retry(format!("POST {url}: {}", describe_reqwest(&e))))?;
            let status = resp.status();
            if status.is_redirection() {
                url = self.redirect_target(&url, &resp)?;
                continue;
            }
            let bytes = resp.bytes().await.map_err(|e| Attempt::Retry(format!("POST {url}: reading the answer: {}", describe_reqwest(&e))))?;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(self.refused(status, &url));
            }
            if status != StatusCode::OK {
                return Err(Attempt::Retry(format!("POST {url}: HTTP {status}: {}", snippet(&bytes))));
            }
            let r = LoadResponse::parse(&bytes).map_err(|m| Attempt::Retry(format!("POST {url}: {m}")))?;
            if op == TxnOp::Begin {
                // Later calls of this transaction go where it began.
                if let Ok(u) = reqwest::Url::parse(&url) {
                    let base = format!("{}://{}", u.scheme(), u.host_str().unwrap_or("127.0.0.1"));
                    let base = match u.port() {
                        Some(p) => format!("{base}:{p}"),
                        None => base,
                    };
                    self.txn_hosts.insert(label.to_string(), base);
                }
            }
            return Ok(r);
        }
        Err(Attempt::Retry(format!("more than 3 redirects starting at {host}")))
    }

    /// Loads `body` into the open transaction `label` (`PUT /api/transaction/load`). Not retried:
    /// StarRocks rolls a transaction back when one of its loads fails, and a load whose answer
    /// was lost cannot be told apart from one that never arrived.
    pub async fn txn_load(&mut self, label: &str, body: Bytes, rows: usize) -> Result<LoadResponse> {
        let host = self.txn_host(label);
        let mut url = format!("{host}/api/transaction/load");
        for _hop in 0..4 {
            let req = self.txn_request(reqwest::Method::PUT, &url, label).headers(self.headers.clone()).body(body.clone());
            let resp = req.send().await.map_err(|e| {
                RsqlError::connector(self.ctx(), format!("loading {rows} row(s) into transaction '{label}': PUT {url}: {}", describe_reqwest(&e)))
            })?;
            let status = resp.status();
            if status.is_redirection() {
                url = match self.redirect_target(&url, &resp) {
                    Ok(u) => u,
                    Err(Attempt::Fatal(e)) => return Err(e),
                    Err(_) => return Err(RsqlError::connector(self.ctx(), format!("PUT {url}: {status} without a usable Location header"))),
                };
                continue;
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(match self.refused(status, &url) {
                    Attempt::Fatal(e) => e,
                    _ => RsqlError::connector(self.ctx(), format!("refused ({status})")),
                });
            }
            if status != StatusCode::OK {
                return Err(RsqlError::connector(self.ctx(), format!("loading into transaction '{label}': PUT {url}: HTTP {status}: {}", snippet(&bytes))));
            }
            let r = LoadResponse::parse(&bytes).map_err(|m| RsqlError::connector(self.ctx(), format!("PUT {url}: {m}")))?;
            if r.status != "OK" && r.status != "Success" {
                let log = match &r.error_url {
                    Some(u) => format!(" (ErrorURL: {u}) {}", self.error_log(u).await),
                    None => String::new(),
                };
                return Err(RsqlError::connector(
                    self.ctx(),
                    format!("StarRocks refused {rows} row(s) for transaction '{label}': {} {}{log}", r.status, r.message),
                ));
            }
            return Ok(r);
        }
        Err(RsqlError::connector(self.ctx(), format!("more than 3 redirects loading into transaction '{label}'")))
    }

    /// What StarRocks knows of a label: `PREPARE`, `PREPARED`, `COMMITTED`, `VISIBLE`, `ABORTED`
    /// or `UNKNOWN`.
    pub async fn label_state(&mut self, label: &str) -> Result<String> {
        let host = self.cfg.load_urls[self.next_host % self.cfg.load_urls.len()].clone();
        let mut url = format!("{host}/api/{}/get_load_state?label={}", segment(&self.cfg.database), segment(label));
        for _hop in 0..4 {
            let resp = self
                .http
                .get(&url)
                .basic_auth(&self.cfg.username, Some(&self.cfg.password))
                .send()
                .await
                .map_err(|e| RsqlError::connector(self.ctx(), format!("GET {url}: {}", describe_reqwest(&e))))?;
            if resp.status().is_redirection() {
                url = match self.redirect_target(&url, &resp) {
                    Ok(u) => u,
                    Err(Attempt::Fatal(e)) => return Err(e),
                    Err(_) => return Err(RsqlError::connector(self.ctx(), format!("GET {url}: a redirect without a usable Location"))),
                };
                continue;
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| RsqlError::connector(self.ctx(), format!("GET {url}: the answer is not JSON ({e}): {}", snippet(&bytes))))?;
            let state = v.get("state").or_else(|| v.get("State")).or_else(|| v.get("data")).and_then(|x| x.as_str());
            return Ok(state.unwrap_or("UNKNOWN").to_string());
        }
        Err(RsqlError::connector(self.ctx(), format!("more than 3 redirects asking for the state of label '{label}'")))
    }
}

/// Failures that a retry cannot fix.
fn is_permanent(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["unknown database", "unknown table", "does not exist", "not exist", "access denied", "no privilege", "unknown column", "too many filtered rows"]
        .iter()
        .any(|p| m.contains(p))
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    if e.is_connect() && (s.contains("certificate") || s.contains("Certificate")) {
        s.push_str(" (the server's TLS certificate is not trusted: give its CA in 'rsql.tls.ca-file' or SSL_CERT_FILE)");
    } else if e.is_connect() {
        s.push_str(" (is the FE's http port in 'load-url' reachable?)");
    } else if e.is_timeout() {
        s.push_str(" (timed out; see 'sink.connect.timeout-ms' / 'sink.socket.timeout-ms')");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let r = LoadResponse::parse(br#"{"TxnId":7,"Label":"l","Status":"Success","Message":"OK","NumberLoadedRows":3,"NumberFilteredRows":0}"#).unwrap();
        assert_eq!((r.status.as_str(), r.loaded_rows, r.txn_id), ("Success", 3, Some(7)));
        let r = LoadResponse::parse(br#"{"Status":"Label Already Exists","ExistingJobStatus":"FINISHED","Message":"x"}"#).unwrap();
        assert_eq!(r.existing_job_status.as_deref(), Some("FINISHED"));
        assert!(LoadResponse::parse(b"<html>").unwrap_err().contains("not JSON"));
        assert!(LoadResponse::parse(b"{}").unwrap_err().contains("no Status"));
        assert!(is_permanent("Unknown table 'x'"));
        assert!(!is_permanent("timeout by txn manager"));
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
