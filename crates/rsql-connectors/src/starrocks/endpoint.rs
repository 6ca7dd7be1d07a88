//! A stand-in for StarRocks' Stream Load endpoint, for tests (compiled for this crate's tests and
//! with the `stream-load-endpoint` feature): an "FE" port that answers every load with
//! `307 Temporary Redirect` to a "BE" port, and a BE that checks each request against the HTTP
//! contract StarRocks documents, applies the rows to in-memory tables (`__op` 0 upsert, 1 delete
//! on tables with a key), and answers with StarRocks' JSON.
//!
//! What it checks, per request (a breach is recorded in [`StreamLoadEndpoint::violations`] and
//! answered with `Fail`): at the FE, basic auth and `Expect: 100-continue`, and no body (the FE
//! answers from the head; the data goes to the BE); at the BE,
//! `PUT /api/{db}/{table}/_stream_load` of a known table; basic auth with
//! the configured user (otherwise `401`, counted but not a breach, so tests can check how the
//! sink reports it); `Expect: 100-continue`; a `label` of `[-_A-Za-z0-9]`, at most 128
//! characters, whose body never changes between tries; a `Content-Length` (or chunked body); a
//! `columns` header naming the table's columns in order, plus `__op` for tables with a key; JSON
//! bodies with `strip_outer_array: true` as one array of objects with exactly those fields, or CSV
//! bodies whose every row ends with the row delimiter and holds one field per column (`\N` for
//! NULL, `column_separator` / `row_delimiter` headers with `\xNN` escapes).
//!
//! Answers follow StarRocks: `Success`, `Label Already Exists` with `ExistingJobStatus` =
//! `FINISHED` for a label loaded before, and injected faults ([`Fault`]) for the failure paths.
//!
//! The Stream Load transaction interface is modelled too: the FE redirects
//! `/api/transaction/{begin,load,prepare,commit,rollback}` to the BE, which keeps one state per
//! label as StarRocks documents it. `begin` (POST; `label`, `db`, `table`, optional `timeout` in
//! seconds, default 600) opens a transaction unless the label is held by one that is not rolled
//! back (`LABEL_ALREADY_EXISTS` with its state; labels of rolled-back transactions can be used
//! again); `load` (PUT, the body checked as for a Stream Load) adds rows to an open transaction
//! and fails one that is prepared or unknown; `prepare` freezes it (optional `prepared_timeout`);
//! `commit` applies its rows to the table (a second commit answers `OK`, "already committed");
//! `rollback` drops it. An open transaction older than its `timeout`, or a prepared one older than
//! its `prepared_timeout`, is rolled back by the endpoint as by StarRocks' transaction manager,
//! and a failed `load` rolls its transaction back. The FE answers
//! `GET /api/{db}/get_load_state?label=` with the label's state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

/// The test CA (PEM) that signed the endpoint's TLS certificate (for 127.0.0.1 and localhost).
pub fn test_ca_pem_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/starrocks/testdata/ca.pem")
}

fn tls_acceptor() -> io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls::{self, pki_types};
    let cert = pki_types::CertificateDer::from(include_bytes!("testdata/server.crt.der").to_vec());
    let key = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(include_bytes!("testdata/server.key.der").to_vec()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(io::Error::other)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

use super::parse_delimiter;
use crate::jdbc::percent_decode;
use crate::formats::text::base64_encode;

/// A table the endpoint accepts loads for.
#[derive(Clone, Debug)]
pub struct TableSpec {
    pub database: String,
    pub table: String,
    pub columns: Vec<String>,
    /// Key columns (a primary key table, loads carry `__op`); empty for a duplicate key table.
    pub key: Vec<String>,
}

impl TableSpec {
    pub fn new(database: &str, table: &str, columns: &[&str], key: &[&str]) -> TableSpec {
        TableSpec {
            database: database.into(),
            table: table.into(),
            columns: columns.iter().map(|s| s.to_string()).collect(),
            key: key.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A failure the BE plays for the next load request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `Status: Fail` with this message and no ErrorURL; nothing is loaded.
    Fail(String),
    /// `Status: Fail` with an ErrorURL whose log holds this text; nothing is loaded.
    FailWithErrorUrl(String),
    /// The rows are loaded, and the answer is `Publish Timeout`.
    PublishTimeout,
    /// `Label Already Exists` with `ExistingJobStatus: RUNNING`; nothing is loaded.
    LabelRunning,
    /// HTTP 500.
    Http500,
    /// The rows are loaded and committed, then the connection closes without an answer.
    CommitThenDrop,
    /// The connection closes right after the request head.
    Drop,
}

/// One load the BE answered.
#[derive(Clone, Debug)]
pub struct LoadRecord {
    pub label: String,
    pub table: String,
    pub rows: usize,
    /// The `Status` answered (or `HTTP 500`, `dropped`).
    pub status: String,
    pub json: bool,
}

type Cell = Option<String>;

#[derive(Default)]
struct TableData {
    spec: Option<TableSpec>,
    /// Primary key tables: key cells -> row.
    keyed: BTreeMap<Vec<Cell>, Vec<Cell>>,
    /// Duplicate key tables: rows in load order.
    appended: Vec<Vec<Cell>>,
}

/// Where a transaction of the transaction interface is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// Begun, taking loads.
    Prepare,
    Prepared,
    Committed,
    Aborted,
}

impl TxnState {
    /// The name StarRocks reports (`get_load_state`, `ExistingJobStatus`).
    fn name(self) -> &'static str {
        match self {
            TxnState::Prepare => "PREPARE",
            TxnState::Prepared => "PREPARED",
            TxnState::Committed => "VISIBLE",
            TxnState::Aborted => "ABORTED",
        }
    }
}

struct Txn {
    db: String,
    table: String,
    state: TxnState,
    rows: Vec<(u8, Vec<Cell>)>,
    since: std::time::Instant,
    timeout: std::time::Duration,
    prepared_timeout: Option<std::time::Duration>,
    id: i64,
}

/// One call of the transaction interface the BE answered.
#[derive(Clone, Debug)]
pub struct TxnRecord {
    pub op: String,
    pub label: String,
    /// `Status` answered, then the message (or `dropped`, `HTTP 500`).
    pub status: String,
}

#[derive(Default)]
struct State {
    auth: String,
    tables: HashMap<(String, String), TableData>,
    /// Labels whose rows were loaded.
    committed: HashMap<String, u64>,
    /// The body hash each label was first sent with.
    bodies: HashMap<String, u64>,
    faults: VecDeque<Fault>,
    loads: Vec<LoadRecord>,
    violations: Vec<String>,
    unauthorized: u64,
    fe_requests: u64,
    be_requests: u64,
    txn: i64,
    error_logs: HashMap<String, String>,
    txns: HashMap<String, Txn>,
    /// Faults for the next transaction calls of an operation (`begin`, `load`, ...).
    txn_faults: VecDeque<(String, Fault)>,
    txn_calls: Vec<TxnRecord>,
    /// `http` or `https`.
    scheme: &'static str,
    /// TLS handshakes that failed (a client that does not trust the certificate).
    tls_failures: Vec<String>,
}

/// The running endpoint; stops when dropped.
pub struct StreamLoadEndpoint {
    fe: SocketAddr,
    be: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    match s.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl StreamLoadEndpoint {
    /// Starts an FE and a BE on free ports of 127.0.0.1, accepting `user` / `password`.
    pub fn start(user: &str, password: &str, tables: Vec<TableSpec>) -> io::Result<StreamLoadEndpoint> {
        Self::start_with(user, password, tables, false)
    }

    /// The same over TLS (https), with a certificate signed by [`test_ca_pem_path`].
    pub fn start_tls(user: &str, password: &str, tables: Vec<TableSpec>) -> io::Result<StreamLoadEndpoint> {
        Self::start_with(user, password, tables, true)
    }

    fn start_with(user: &str, password: &str, tables: Vec<TableSpec>, tls: bool) -> io::Result<StreamLoadEndpoint> {
        let acceptor = if tls { Some(tls_acceptor()?) } else { None };
        let fe = std::net::TcpListener::bind("127.0.0.1:0")?;
        let be = std::net::TcpListener::bind("127.0.0.1:0")?;
        fe.set_nonblocking(true)?;
        be.set_nonblocking(true)?;
        let (fe_addr, be_addr) = (fe.local_addr()?, be.local_addr()?);
        let mut auth = b"Basic ".to_vec();
        base64_encode(format!("{user}:{password}").as_bytes(), &mut auth);
        let mut st = State { auth: String::from_utf8_lossy(&auth).into_owned(), scheme: if tls { "https" } else { "http" }, ..State::default() };
        for t in tables {
            st.tables.insert((t.database.clone(), t.table.clone()), TableData { spec: Some(t), ..TableData::default() });
        }
        let state = Arc::new(Mutex::new(st));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s2 = state.clone();
        let thread = std::thread::Builder::new().name("stream-load-endpoint".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    lock(&s2).violations.push(format!("the endpoint could not start its runtime: {e}"));
                    return;
                }
            };
            rt.block_on(async move {
                let (Ok(fe), Ok(be)) = (TcpListener::from_std(fe), TcpListener::from_std(be)) else {
                    lock(&s2).violations.push("the endpoint could not listen".into());
                    return;
                };
                let fe_task = tokio::spawn(serve(fe, Role::Fe, be_addr, s2.clone(), acceptor.clone()));
                let be_task = tokio::spawn(serve(be, Role::Be, be_addr, s2.clone(), acceptor));
                let _ = rx.await;
                fe_task.abort();
                be_task.abort();
            });
        })?;
        Ok(StreamLoadEndpoint { fe: fe_addr, be: be_addr, state, stop: Some(tx), thread: Some(thread) })
    }

    /// `127.0.0.1:port` of the FE, for `load-url` (`https://127.0.0.1:port` over TLS).
    pub fn load_url(&self) -> String {
        if lock(&self.state).scheme == "https" {
            format!("https://{}", self.fe)
        } else {
            self.fe.to_string()
        }
    }

    /// `127.0.0.1:port` of the BE (loads may also go there directly).
    pub fn be_url(&self) -> String {
        self.be.to_string()
    }

    /// Queues faults for the next load requests, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).faults.extend(faults);
    }

    /// Faults not played yet.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state).faults.len()
    }

    /// The rows of a table now, sorted; NULL is None, numbers as JSON writes them.
    pub fn rows(&self, database: &str, table: &str) -> Vec<Vec<Option<String>>> {
        let st = lock(&self.state);
        let Some(t) = st.tables.get(&(database.to_string(), table.to_string())) else { return Vec::new() };
        let mut rows: Vec<Vec<Cell>> = t.keyed.values().cloned().chain(t.appended.iter().cloned()).collect();
        rows.sort();
        rows
    }

    /// Breaches of the Stream Load contract seen so far.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// Loads answered so far.
    pub fn loads(&self) -> Vec<LoadRecord> {
        lock(&self.state).loads.clone()
    }

    /// Requests refused for bad credentials.
    pub fn unauthorized(&self) -> u64 {
        lock(&self.state).unauthorized
    }

    /// Makes the next transaction call `op` (`begin`, `load`, `prepare`, `commit`, `rollback`)
    /// play `fault`: `Http500` (nothing done), `Drop` (connection closed, nothing done) or
    /// `CommitThenDrop` (done, then the connection closed without an answer).
    pub fn push_txn_fault(&self, op: &str, fault: Fault) {
        lock(&self.state).txn_faults.push_back((op.to_string(), fault));
    }

    /// TLS handshakes that failed so far.
    pub fn tls_failures(&self) -> Vec<String> {
        lock(&self.state).tls_failures.clone()
    }

    /// Transaction calls answered so far.
    pub fn txn_calls(&self) -> Vec<TxnRecord> {
        lock(&self.state).txn_calls.clone()
    }

    /// The state of a transaction label, after applying timeouts.
    pub fn txn_state(&self, label: &str) -> Option<TxnState> {
        let mut st = lock(&self.state);
        expire(&mut st);
        st.txns.get(label).map(|t| t.state)
    }

    /// Labels of transactions in `state`, sorted.
    pub fn txn_labels(&self, state: TxnState) -> Vec<String> {
        let mut st = lock(&self.state);
        expire(&mut st);
        let mut v: Vec<String> = st.txns.iter().filter(|(_, t)| t.state == state).map(|(l, _)| l.clone()).collect();
        v.sort();
        v
    }

    /// (requests to the FE, requests to the BE).
    pub fn requests(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.fe_requests, st.be_requests)
    }
}

impl Drop for StreamLoadEndpoint {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Fe,
    Be,
}

async fn serve(listener: TcpListener, role: Role, be: SocketAddr, state: Arc<Mutex<State>>, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream: Stream = match tls {
                Some(a) => match a.accept(stream).await {
                    Ok(s) => Box::new(s),
                    Err(e) => {
                        lock(&state).tls_failures.push(e.to_string());
                        return;
                    }
                },
                None => Box::new(stream),
            };
            let _ = connection(stream, role, be, state).await;
        });
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body_len: Option<usize>,
    chunked: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until `buf` holds a request head; None at a clean end of the connection.
async fn read_head(stream: &mut Stream, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(io::Error::other("request head too large"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut r = Request { method, path: path.to_string(), query: query.to_string(), headers, body_len: None, chunked: false };
    r.body_len = r.header("content-length").and_then(|v| v.parse().ok());
    r.chunked = r.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    Ok(Some(r))
}

async fn fill(stream: &mut Stream, buf: &mut Vec<u8>, need: usize) -> io::Result<()> {
    while buf.len() < need {
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// Reads the request body (Content-Length or chunked).
async fn read_body(stream: &mut Stream, buf: &mut Vec<u8>, r: &Request) -> io::Result<Vec<u8>> {
    if let Some(n) = r.body_len {
        fill(stream, buf, n).await?;
        return Ok(buf.drain(..n).collect());
    }
    if r.chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = find(buf, b"\r\n") {
                    break p;
                }
                let need = buf.len() + 1;
                fill(stream, buf, need).await?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            buf.drain(..line_end + 2);
            fill(stream, buf, size + 2).await?;
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
    Ok(Vec::new())
}

async fn respond(stream: &mut Stream, status: &str, extra: &[(&str, String)], body: &[u8]) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

fn load_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/")?;
    let mut parts = rest.split('/');
    let (db, table, tail) = (parts.next()?, parts.next()?, parts.next()?);
    (tail == "_stream_load" && parts.next().is_none()).then(|| (percent_decode(db), percent_decode(table)))
}


fn hash(b: &[u8]) -> u64 {
    // FNV-1a: enough to tell two bodies apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= *x as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn answer(label: &str, status: &str, message: &str, rows: usize, bytes: usize, txn: i64, extra: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    m.insert("TxnId".into(), txn.into());
    m.insert("Label".into(), label.into());
    m.insert("Status".into(), status.into());
    m.insert("Message".into(), message.into());
    m.insert("NumberTotalRows".into(), rows.into());
    m.insert("NumberLoadedRows".into(), (if status == "Success" || status == "Publish Timeout" { rows } else { 0 }).into());
    m.insert("NumberFilteredRows".into(), 0.into());
    m.insert("NumberUnselectedRows".into(), 0.into());
    m.insert("LoadBytes".into(), bytes.into());
    m.insert("LoadTimeMs".into(), 1.into());
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    serde_json::Value::Object(m).to_string().into_bytes()
}

async fn connection(mut stream: Stream, role: Role, be: SocketAddr, state: Arc<Mutex<State>>) -> io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_head(&mut stream, &mut buf).await? {
        match role {
            Role::Fe => {
                lock(&state).fe_requests += 1;
                if req.header("authorization").is_some_and(|v| v == lock(&state).auth) {
                    if let Some(db) = load_state_path(&req.path) {
                        let label = req.query.strip_prefix("label=").map(percent_decode).unwrap_or_default();
                        let name = {
                            let mut st = lock(&state);
                            expire(&mut st);
                            match st.txns.get(&label) {
                                Some(t) if t.db == db => t.state.name(),
                                _ if st.committed.contains_key(&label) => "VISIBLE",
                                _ => "UNKNOWN",
                            }
                        };
                        let body = serde_json::json!({"Status": "OK", "Message": "", "state": name}).to_string();
                        respond(&mut stream, "200 OK", &[("Content-Type", "application/json".into())], body.as_bytes()).await?;
                        continue;
                    }
                    if req.path.starts_with("/api/transaction/") {
                        if req.body_len.unwrap_or(0) > 0 || req.chunked {
                            lock(&state).violations.push(format!("FE got {} with a body; the data belongs to the BE it redirects to", req.path));
                        }
                        let location = format!("{}://{be}{}", lock(&state).scheme, req.path);
                        respond(&mut stream, "307 Temporary Redirect", &[("Location", location)], b"").await?;
                        if req.body_len.is_some() || req.chunked {
                            match tokio::time::timeout(std::time::Duration::from_millis(500), read_body(&mut stream, &mut buf, &req)).await {
                                Ok(Ok(_)) => {}
                                _ => return Ok(()),
                            }
                        }
                        continue;
                    }
                }
                if req.method != "PUT" || load_path(&req.path).is_none() {
                    lock(&state).violations.push(format!("FE got {} {} (not a Stream Load)", req.method, req.path));
                    respond(&mut stream, "404 Not Found", &[], b"not found").await?;
                    return Ok(());
                }
                if req.header("authorization").is_none_or(|v| v != lock(&state).auth) {
                    lock(&state).unauthorized += 1;
                    respond(&mut stream, "401 Unauthorized", &[("WWW-Authenticate", "Basic realm=\"\"".into())], b"Access denied").await?;
                    return Ok(());
                }
                if !req.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
                    lock(&state).violations.push("FE got a load without 'Expect: 100-continue'".into());
                }
                let sent = req.body_len.unwrap_or(0);
                if sent > 0 || req.chunked {
                    lock(&state).violations.push(format!(
                        "FE got a load with a body ({sent} bytes); the FE answers from the head, the data belongs to the BE it redirects to"
                    ));
                }
                // The FE answers from the head alone, as StarRocks does for `Expect: 100-continue`.
                let location = format!("{}://{be}{}{}", lock(&state).scheme, req.path, if req.query.is_empty() { String::new() } else { format!("?{}", req.query) });
                respond(&mut stream, "307 Temporary Redirect", &[("Location", location)], b"").await?;
                // A client that did not wait for `100 Continue` sends the body anyway: read it.
                if req.body_len.is_some() || req.chunked {
                    match tokio::time::timeout(std::time::Duration::from_millis(500), read_body(&mut stream, &mut buf, &req)).await {
                        Ok(Ok(_)) => {}
                        _ => return Ok(()),
                    }
                }
            }
            Role::Be => {
                lock(&state).be_requests += 1;
                if req.method == "GET" && req.path == "/api/_load_error_log" {
                    let file = req.query.strip_prefix("file=").unwrap_or("").to_string();
                    let log = lock(&state).error_logs.get(&file).cloned();
                    match log {
                        Some(l) => respond(&mut stream, "200 OK", &[], l.as_bytes()).await?,
                        None => respond(&mut stream, "404 Not Found", &[], b"no such log").await?,
                    }
                    continue;
                }
                if let Some(op) = req.path.strip_prefix("/api/transaction/") {
                    let op = op.to_string();
                    if !be_txn(&mut stream, &mut buf, &req, &op, &state).await? {
                        return Ok(());
                    }
                    continue;
                }
                if !be_load(&mut stream, &mut buf, &req, be, &state).await? {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Handles one load on the BE; false when the connection must close.
async fn be_load(stream: &mut Stream, buf: &mut Vec<u8>, req: &Request, be: SocketAddr, state: &Arc<Mutex<State>>) -> io::Result<bool> {
    // A request without label and body sent straight to a BE (a client finding out whether the
    // host redirects): StarRocks runs an empty load, which fails.
    if req.header("label").is_none() && req.body_len.unwrap_or(0) == 0 && !req.chunked && req.method == "PUT" && load_path(&req.path).is_some() {
        if req.header("authorization").is_some_and(|v| v == lock(state).auth) {
            let a = answer("", "Fail", "all partitions have no load data", 0, 0, -1, &[]);
            respond(stream, "200 OK", &[("Content-Type", "application/json".into())], &a).await?;
        } else {
            lock(state).unauthorized += 1;
            respond(stream, "401 Unauthorized", &[], b"Access denied").await?;
        }
        return Ok(true);
    }
    let mut breaches = Vec::new();
    if req.method != "PUT" {
        breaches.push(format!("method {} (Stream Load is a PUT)", req.method));
    }
    let target = load_path(&req.path);
    if target.is_none() {
        breaches.push(format!("path {} is not /api/{{db}}/{{table}}/_stream_load", req.path));
    }
    let label = req.header("label").unwrap_or("").to_string();
    if label.is_empty() || label.len() > 128 || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        breaches.push(format!("label '{label}' is missing or not [-_A-Za-z0-9]{{1,128}}"));
    }
    if !req.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        breaches.push("no 'Expect: 100-continue' header".into());
    }
    if req.body_len.is_none() && !req.chunked {
        breaches.push("neither Content-Length nor chunked encoding".into());
    }
    let fault = lock(state).faults.pop_front();
    if fault == Some(Fault::Drop) {
        lock(state).loads.push(LoadRecord { label, table: String::new(), rows: 0, status: "dropped".into(), json: false });
        return Ok(false);
    }
    let authorized = req.header("authorization").is_some_and(|v| v == lock(state).auth);
    if req.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) && authorized {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let body = read_body(stream, buf, req).await?;
    if !authorized {
        lock(state).unauthorized += 1;
        respond(stream, "401 Unauthorized", &[("WWW-Authenticate", "Basic realm=\"\"".into())], b"{\"status\":\"FAILED\",\"msg\":\"Access denied\"}").await?;
        return Ok(true);
    }
    if fault == Some(Fault::Http500) {
        lock(state).loads.push(LoadRecord { label, table: String::new(), rows: 0, status: "HTTP 500".into(), json: false });
        respond(stream, "500 Internal Server Error", &[], b"internal error").await?;
        return Ok(true);
    }
    let (db, table) = target.unwrap_or_default();
    let spec = lock(state).tables.get(&(db.clone(), table.clone())).and_then(|t| t.spec.clone());
    let parsed = match &spec {
        Some(spec) => parse_rows(req, &body, spec).map_err(|e| breaches.push(e)).ok(),
        None => {
            breaches.push(format!("unknown table {db}.{table}"));
            None
        }
    };
    let json = req.header("format").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let (answer_body, close) = decide(state, be, &db, &table, &label, &body, parsed, breaches, fault, json);
    match answer_body {
        Some(a) => respond(stream, "200 OK", &[("Content-Type", "application/json".into())], &a).await?,
        None => return Ok(false),
    }
    Ok(!close)
}

fn load_state_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/")?;
    let (db, tail) = rest.split_once('/')?;
    (tail == "get_load_state").then(|| percent_decode(db))
}

/// Rolls back transactions whose time is up, as StarRocks' transaction manager does.
fn expire(st: &mut State) {
    for t in st.txns.values_mut() {
        let over = match t.state {
            TxnState::Prepare => t.since.elapsed() > t.timeout,
            TxnState::Prepared => t.prepared_timeout.is_some_and(|p| t.since.elapsed() > p),
            _ => false,
        };
        if over {
            t.state = TxnState::Aborted;
            t.rows.clear();
        }
    }
}

fn txn_answer(label: &str, txn: i64, status: &str, message: &str, extra: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    m.insert("TxnId".into(), txn.into());
    m.insert("Label".into(), label.into());
    m.insert("Status".into(), status.into());
    m.insert("Message".into(), message.into());
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    serde_json::Value::Object(m).to_string().into_bytes()
}

/// One call of the transaction interface on the BE; false when the connection must close.
async fn be_txn(stream: &mut Stream, buf: &mut Vec<u8>, req: &Request, op: &str, state: &Arc<Mutex<State>>) -> io::Result<bool> {
    let authorized = req.header("authorization").is_some_and(|v| v == lock(state).auth);
    let expects = req.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects && authorized && op == "load" {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let body = read_body(stream, buf, req).await?;
    if !authorized {
        lock(state).unauthorized += 1;
        respond(stream, "401 Unauthorized", &[("WWW-Authenticate", "Basic realm=\"\"".into())], b"Access denied").await?;
        return Ok(true);
    }
    let label = req.header("label").unwrap_or("").to_string();
    let fault = {
        let mut st = lock(state);
        match st.txn_faults.iter().position(|(o, _)| o == op) {
            Some(i) => st.txn_faults.remove(i).map(|(_, f)| f),
            None => None,
        }
    };
    let record = |status: String| {
        lock(state).txn_calls.push(TxnRecord { op: op.to_string(), label: label.clone(), status });
    };
    match fault {
        Some(Fault::Drop) => {
            record("dropped".into());
            return Ok(false);
        }
        Some(Fault::Http500) => {
            record("HTTP 500".into());
            respond(stream, "500 Internal Server Error", &[], b"internal error").await?;
            return Ok(true);
        }
        _ => {}
    }
    let (answer, status) = txn_call(state, req, op, &label, &body);
    let dropped = fault == Some(Fault::CommitThenDrop);
    record(if dropped { format!("{status}, dropped") } else { status });
    if dropped {
        return Ok(false);
    }
    respond(stream, "200 OK", &[("Content-Type", "application/json".into())], &answer).await?;
    Ok(true)
}

/// Checks a transaction call and applies it; (answer, `Status: Message` for the record).
fn txn_call(state: &Arc<Mutex<State>>, req: &Request, op: &str, label: &str, body: &[u8]) -> (Vec<u8>, String) {
    let mut st = lock(state);
    expire(&mut st);
    let mut breaches = Vec::new();
    let want_method = if op == "load" { "PUT" } else { "POST" };
    if !["begin", "load", "prepare", "commit", "rollback"].contains(&op) {
        breaches.push(format!("/api/transaction/{op} is not an operation of the transaction interface"));
    } else if req.method != want_method {
        breaches.push(format!("{} /api/transaction/{op} (it is a {want_method})", req.method));
    }
    if label.is_empty() || label.len() > 128 || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        breaches.push(format!("label '{label}' is missing or not [-_A-Za-z0-9]{{1,128}}"));
    }
    let db = req.header("db").unwrap_or("").to_string();
    let table = req.header("table").unwrap_or("").to_string();
    if db.is_empty() {
        breaches.push("no 'db' header".into());
    }
    if (op == "begin" || op == "load") && table.is_empty() {
        breaches.push(format!("no 'table' header on {op}"));
    }
    if op != "load" && !body.is_empty() {
        breaches.push(format!("{op} carries a body of {} bytes", body.len()));
    }
    if !breaches.is_empty() {
        for b in &breaches {
            st.violations.push(format!("transaction {op} '{label}': {b}"));
        }
        let m = breaches.join("; ");
        return (txn_answer(label, -1, "FAILED", &m, &[]), format!("FAILED: {m}"));
    }
    let fail = |id: i64, m: &str| (txn_answer(label, id, "FAILED", m, &[]), format!("FAILED: {m}"));
    let ok = |id: i64, m: &str| (txn_answer(label, id, "OK", m, &[]), format!("OK: {m}"));
    let exists = st.txns.get(label).filter(|t| t.state != TxnState::Aborted).map(|t| (t.state, t.id, t.db.clone()));
    if let Some((_, _, tdb)) = &exists {
        if *tdb != db {
            return fail(-1, "Transcation Not Exist");
        }
    }
    match op {
        "begin" => {
            if let Some((s, _, _)) = exists {
                let job = if s == TxnState::Prepare { "RUNNING" } else { s.name() };
                let m = format!("Label [{label}] has already been used.");
                return (
                    txn_answer(label, -1, "LABEL_ALREADY_EXISTS", &m, &[("ExistingJobStatus", job.into())]),
                    format!("LABEL_ALREADY_EXISTS: {job}"),
                );
            }
            if st.committed.contains_key(label) {
                let m = format!("Label [{label}] has already been used.");
                return (txn_answer(label, -1, "LABEL_ALREADY_EXISTS", &m, &[("ExistingJobStatus", "FINISHED".into())]), "LABEL_ALREADY_EXISTS: FINISHED".into());
            }
            if !st.tables.get(&(db.clone(), table.clone())).is_some_and(|t| t.spec.is_some()) {
                return fail(-1, &format!("unknown table {db}.{table}"));
            }
            let timeout = match req.header("timeout").map(|t| t.parse::<u64>()) {
                None => 600,
                Some(Ok(t)) if t > 0 => t,
                Some(_) => {
                    st.violations.push(format!("transaction begin '{label}': 'timeout' is not a number of seconds"));
                    return fail(-1, "invalid timeout");
                }
            };
            st.txn += 1;
            let id = st.txn;
            st.txns.insert(
                label.to_string(),
                Txn {
                    db,
                    table,
                    state: TxnState::Prepare,
                    rows: Vec::new(),
                    since: std::time::Instant::now(),
                    timeout: std::time::Duration::from_secs(timeout),
                    prepared_timeout: None,
                    id,
                },
            );
            ok(id, "")
        }
        "load" => {
            let Some((s, id, _)) = exists else { return fail(-1, "TXN_NOT_EXISTS") };
            if s != TxnState::Prepare {
                return fail(id, "Transcation State Invalid");
            }
            let spec = st.tables.get(&(db.clone(), table.clone())).and_then(|t| t.spec.clone());
            let parsed = match &spec {
                Some(spec) => parse_rows(req, body, spec),
                None => Err(format!("unknown table {db}.{table}")),
            };
            match parsed {
                Ok(rows) => {
                    let n = rows.len();
                    if let Some(t) = st.txns.get_mut(label) {
                        t.rows.extend(rows);
                    }
                    let extra = [("NumberTotalRows", n.into()), ("NumberLoadedRows", n.into()), ("NumberFilteredRows", 0.into())];
                    (txn_answer(label, id, "OK", "", &extra), format!("OK: {n} rows"))
                }
                Err(e) => {
                    st.violations.push(format!("transaction load '{label}' into {db}.{table}: {e}"));
                    if let Some(t) = st.txns.get_mut(label) {
                        t.state = TxnState::Aborted;
                        t.rows.clear();
                    }
                    fail(id, &e)
                }
            }
        }
        "prepare" => match exists {
            None => fail(-1, "Transcation Not Exist"),
            Some((TxnState::Committed, id, _)) => fail(id, "Transcation State Invalid"),
            Some((_, id, _)) => {
                let pt = req.header("prepared_timeout").and_then(|t| t.parse::<u64>().ok()).map(std::time::Duration::from_secs);
                if let Some(t) = st.txns.get_mut(label) {
                    if t.state == TxnState::Prepare {
                        t.state = TxnState::Prepared;
                        t.since = std::time::Instant::now();
                        t.prepared_timeout = pt;
                    }
                }
                ok(id, "")
            }
        },
        "commit" => match exists {
            None => fail(-1, "Transcation Not Exist"),
            Some((TxnState::Committed, id, _)) => ok(id, "Transaction already commited"),
            Some((_, id, _)) => {
                let (rows, key) = match st.txns.get_mut(label) {
                    Some(t) => {
                        t.state = TxnState::Committed;
                        (std::mem::take(&mut t.rows), (t.db.clone(), t.table.clone()))
                    }
                    None => return fail(id, "Transcation Not Exist"),
                };
                if let Some(t) = st.tables.get_mut(&key) {
                    apply(t, rows);
                }
                ok(id, "")
            }
        },
        "rollback" => match exists {
            None => fail(-1, "Transcation Not Exist"),
            Some((TxnState::Committed, id, _)) => fail(id, "Transcation State Invalid"),
            Some((_, id, _)) => {
                if let Some(t) = st.txns.get_mut(label) {
                    t.state = TxnState::Aborted;
                    t.rows.clear();
                }
                ok(id, "")
            }
        },
        _ => fail(-1, "unknown operation"),
    }
}

/// Applies a checked load and builds StarRocks' answer; None = close without answering.
#[allow(clippy::too_many_arguments)]
fn decide(
    state: &Arc<Mutex<State>>,
    be: SocketAddr,
    db: &str,
    table: &str,
    label: &str,
    body: &[u8],
    parsed: Option<Vec<(u8, Vec<Cell>)>>,
    breaches: Vec<String>,
    fault: Option<Fault>,
    json: bool,
) -> (Option<Vec<u8>>, bool) {
    let body_hash = hash(body);
    let mut st = lock(state);
    st.txn += 1;
    let txn = st.txn;
    let mut breaches = breaches;
    if !label.is_empty() {
        match st.bodies.get(label) {
            Some(h) if *h != body_hash => breaches.push(format!("label '{label}' was sent again with a different body")),
            Some(_) => {}
            None => {
                st.bodies.insert(label.to_string(), body_hash);
            }
        }
    }
    let rows = parsed.as_ref().map(|r| r.len()).unwrap_or(0);
    let mut record = LoadRecord { label: label.to_string(), table: table.to_string(), rows, status: String::new(), json };
    if !breaches.is_empty() {
        for b in &breaches {
            st.violations.push(format!("load '{label}' into {db}.{table}: {b}"));
        }
        record.status = "Fail".into();
        st.loads.push(record);
        return (Some(answer(label, "Fail", &breaches.join("; "), rows, body.len(), txn, &[])), false);
    }
    if st.committed.contains_key(label) {
        record.status = "Label Already Exists".into();
        st.loads.push(record);
        let a = answer(label, "Label Already Exists", &format!("Label [{label}] has already been used."), 0, 0, -1, &[("ExistingJobStatus", "FINISHED".into())]);
        return (Some(a), false);
    }
    let (status, message, extra): (&str, String, Vec<(&str, serde_json::Value)>) = match &fault {
        Some(Fault::Fail(m)) => ("Fail", m.clone(), vec![]),
        Some(Fault::FailWithErrorUrl(m)) => {
            let file = format!("error_log_{txn}");
            st.error_logs.insert(file.clone(), m.clone());
            ("Fail", "too many filtered rows".into(), vec![("ErrorURL", format!("{}://{be}/api/_load_error_log?file={file}", st.scheme).into())])
        }
        Some(Fault::LabelRunning) => ("Label Already Exists", format!("Label [{label}] has already been used."), vec![("ExistingJobStatus", "RUNNING".into())]),
        Some(Fault::PublishTimeout) => ("Publish Timeout", "transaction commit successfully, BUT data will be visible later".into(), vec![]),
        _ => ("Success", "OK".into(), vec![]),
    };
    if matches!(status, "Success" | "Publish Timeout") {
        if let (Some(rows), Some(t)) = (parsed, st.tables.get_mut(&(db.to_string(), table.to_string()))) {
            apply(t, rows);
        }
        st.committed.insert(label.to_string(), body_hash);
    }
    let dropped = fault == Some(Fault::CommitThenDrop);
    record.status = if dropped { "committed, dropped".into() } else { status.into() };
    st.loads.push(record);
    if dropped {
        return (None, true);
    }
    (Some(answer(label, status, &message, rows, body.len(), txn, &extra)), false)
}

/// Rows of the body as (op, cells in table column order).
fn parse_rows(req: &Request, body: &[u8], spec: &TableSpec) -> Result<Vec<(u8, Vec<Cell>)>, String> {
    let mut expected: Vec<String> = spec.columns.clone();
    if !spec.key.is_empty() {
        expected.push("__op".into());
    }
    let columns: Vec<String> = match req.header("columns") {
        Some(c) => c.split(',').map(|s| s.trim().trim_matches('`').to_string()).collect(),
        None => return Err("no 'columns' header".into()),
    };
    if columns != expected {
        return Err(format!("'columns' header names {columns:?}, the table needs {expected:?}"));
    }
    let json = req.header("format").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let mut out = Vec::new();
    if json {
        if req.header("strip_outer_array") != Some("true") {
            return Err("a JSON load of an array needs 'strip_outer_array: true'".into());
        }
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let arr = v.as_array().ok_or("the body is not a JSON array")?;
        for (i, o) in arr.iter().enumerate() {
            let o = o.as_object().ok_or_else(|| format!("row {i} is not a JSON object"))?;
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let mut want: Vec<&String> = columns.iter().collect();
            want.sort();
            if keys != want {
                return Err(format!("row {i} has fields {keys:?}, the columns header names {want:?}"));
            }
            let cell = |name: &str| -> Cell {
                match o.get(name) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                }
            };
            let cells: Vec<Cell> = spec.columns.iter().map(|c| cell(c)).collect();
            let op = if spec.key.is_empty() { 0 } else { op_of(cell("__op").as_deref(), i)? };
            out.push((op, cells));
        }
    } else {
        let sep = parse_delimiter(req.header("column_separator").unwrap_or("\\t"))?;
        let delim = parse_delimiter(req.header("row_delimiter").unwrap_or("\\n"))?;
        if body.is_empty() {
            return Ok(out);
        }
        if !body.ends_with(&delim) {
            return Err("the CSV body does not end with the row delimiter".into());
        }
        let text = &body[..body.len() - delim.len()];
        for (i, row) in split(text, &delim).into_iter().enumerate() {
            let fields = split(row, &sep);
            if fields.len() != columns.len() {
                return Err(format!("CSV row {i} has {} fields, the columns header names {}", fields.len(), columns.len()));
            }
            let cells: Vec<Cell> = fields
                .iter()
                .map(|f| if *f == b"\\N" { None } else { Some(String::from_utf8_lossy(f).into_owned()) })
                .collect();
            let op = if spec.key.is_empty() { 0 } else { op_of(cells[spec.columns.len()].as_deref(), i)? };
            out.push((op, cells[..spec.columns.len()].to_vec()));
        }
    }
    Ok(out)
}

fn op_of(v: Option<&str>, row: usize) -> Result<u8, String> {
    match v {
        Some("0") => Ok(0),
        Some("1") => Ok(1),
        other => Err(format!("row {row} has __op {other:?}; it must be 0 (upsert) or 1 (delete)")),
    }
}

fn split<'a>(b: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= b.len() {
        if &b[i..i + sep.len()] == sep {
            out.push(&b[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&b[start..]);
    out
}

fn apply(t: &mut TableData, rows: Vec<(u8, Vec<Cell>)>) {
    let Some(spec) = t.spec.clone() else { return };
    let key_idx: Vec<usize> = spec.key.iter().filter_map(|k| spec.columns.iter().position(|c| c == k)).collect();
    for (op, cells) in rows {
        if key_idx.is_empty() {
            t.appended.push(cells);
            continue;
        }
        let key: Vec<Cell> = key_idx.iter().map(|&i| cells[i].clone()).collect();
        if op == 0 {
            t.keyed.insert(key, cells);
        } else {
            t.keyed.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_paths() {
        assert_eq!(split(b"a\tb\t", b"\t"), vec![&b"a"[..], b"b", b""]);
        assert_eq!(split(b"a||b", b"||"), vec![&b"a"[..], b"b"]);
        assert_eq!(load_path("/api/d/t/_stream_load"), Some(("d".into(), "t".into())));
        assert_eq!(load_path("/api/d/t"), None);
        assert_eq!(op_of(Some("1"), 0), Ok(1));
        assert!(op_of(Some("2"), 0).is_err());
    }
}
