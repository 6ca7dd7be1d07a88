//! Asks a broker which requests it supports (the Kafka protocol's ApiVersions request, version 0,
//! over a plain TCP connection), so that a sink can refuse at job start what the broker cannot do:
//! `'sink.delivery-guarantee' = 'exactly-once'` needs the transaction requests.
//!
//! librdkafka learns the same list but checks it only when a request is about to be sent (for
//! EndTxn: at the first commit, after messages were already produced).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Request keys of the Kafka protocol that transactions need.
pub const INIT_PRODUCER_ID: i16 = 22;
pub const ADD_PARTITIONS_TO_TXN: i16 = 24;
pub const END_TXN: i16 = 26;

/// The transaction requests and their protocol names, for messages.
pub const TRANSACTION_APIS: &[(i16, &str)] =
    &[(INIT_PRODUCER_ID, "InitProducerId"), (ADD_PARTITIONS_TO_TXN, "AddPartitionsToTxn"), (END_TXN, "EndTxn")];

const API_VERSIONS: i16 = 18;
/// A broker's answer is a few hundred bytes; anything far larger is not an ApiVersions answer.
const MAX_RESPONSE: usize = 1 << 20;

/// The requests a broker supports: (key, lowest version, highest version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiVersions(pub Vec<(i16, i16, i16)>);

impl ApiVersions {
    pub fn supports(&self, key: i16) -> bool {
        self.0.iter().any(|(k, _, _)| *k == key)
    }

    /// Names of the transaction requests the broker does not support.
    pub fn missing_transaction_apis(&self) -> Vec<&'static str> {
        TRANSACTION_APIS.iter().filter(|(k, _)| !self.supports(*k)).map(|(_, n)| *n).collect()
    }
}

/// The bytes of an ApiVersions v0 request with `correlation_id`.
pub fn request(correlation_id: i32, client_id: &str) -> Vec<u8> {
    let id = &client_id.as_bytes()[..client_id.len().min(i16::MAX as usize)];
    let mut body = Vec::with_capacity(10 + id.len());
    body.extend_from_slice(&API_VERSIONS.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(id.len() as i16).to_be_bytes());
    body.extend_from_slice(id);
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Parses an ApiVersions v0 response body (after the length prefix).
pub fn parse_response(body: &[u8], correlation_id: i32) -> Result<ApiVersions, String> {
    let mut r = Reader { b: body, i: 0 };
    let got = r.i32()?;
    if got != correlation_id {
        return Err(format!("answer to request {got}, expected {correlation_id}"));
    }
    let error = r.i16()?;
    let n = r.i32()?;
    if error != 0 && n <= 0 {
        return Err(format!("the broker answered ApiVersions with error code {error}"));
    }
    if n < 0 || n as usize > body.len() / 6 {
        return Err(format!("bad entry count {n}"));
    }
    let mut apis = Vec::with_capacity(n as usize);
    for _ in 0..n {
        apis.push((r.i16()?, r.i16()?, r.i16()?));
    }
    Ok(ApiVersions(apis))
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.b.get(self.i..self.i + N).ok_or_else(|| "the answer ends early".to_string())?;
        self.i += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn i16(&mut self) -> Result<i16, String> {
        self.take::<2>().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.take::<4>().map(i32::from_be_bytes)
    }
}

/// Asks the first reachable broker of `bootstrap` (`host:port[,host:port...]`, an optional
/// `PLAINTEXT://` in front) for its ApiVersions, waiting at most `timeout` per step (connect,
/// send, answer); `Err` names why no broker answered. Blocking: it runs once when a job starts.
pub fn api_versions(bootstrap: &str, timeout: Duration) -> Result<(String, ApiVersions), String> {
    let mut why = Vec::new();
    for server in bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr = server.rsplit_once("://").map(|(_, a)| a).unwrap_or(server).to_string();
        match ask(&addr, timeout) {
            Ok(v) => return Ok((addr, v)),
            Err(e) => why.push(format!("{addr}: {e}")),
        }
    }
    Err(if why.is_empty() { "no bootstrap server given".into() } else { why.join("; ") })
}

fn ask(addr: &str, timeout: Duration) -> Result<ApiVersions, String> {
    let sock = addr.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or_else(|| "no address".to_string())?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let correlation_id = 0x7273_716c; // any value; the answer must echo it
    s.write_all(&request(correlation_id, "rsql-probe")).map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > MAX_RESPONSE {
        return Err(format!("answer of {len} bytes is not an ApiVersions answer"));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    parse_response(&body, correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = request(7, "ab");
        assert_eq!(r, vec![0, 0, 0, 12, 0, 18, 0, 0, 0, 0, 0, 7, 0, 2, b'a', b'b']);
    }

    #[test]
    fn parses_answers_and_rejects_garbage() {
        let mut body = vec![0, 0, 0, 7, 0, 0, 0, 0, 0, 2];
        body.extend_from_slice(&[0, 22, 0, 0, 0, 4, 0, 26, 0, 0, 0, 3]);
        let v = parse_response(&body, 7).unwrap();
        assert_eq!(v.0, vec![(22, 0, 4), (26, 0, 3)]);
        assert_eq!(v.missing_transaction_apis(), vec!["AddPartitionsToTxn"]);
        assert!(parse_response(&body, 8).is_err());
        assert!(parse_response(&body[..body.len() - 1], 7).is_err());
        assert!(parse_response(&[0, 0, 0, 7, 0, 0, 0x7f, 0xff, 0xff, 0xff], 7).is_err());
        assert!(parse_response(&[], 7).is_err());
    }
}
