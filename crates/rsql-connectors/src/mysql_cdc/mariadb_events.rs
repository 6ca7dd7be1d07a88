//! MariaDB's own binlog events, which mysql_async hands over unparsed: GTID (0xa2),
//! GTID_LIST (0xa3), BINLOG_CHECKPOINT (0xa1) and ANNOTATE_ROWS (0xa0). Each parser takes the
//! event body after the 19-byte common header, with the checksum already removed.

use rsql_common::{Result, RsqlError};

pub const ANNOTATE_ROWS_EVENT: u8 = 0xa0;
pub const BINLOG_CHECKPOINT_EVENT: u8 = 0xa1;
pub const GTID_EVENT: u8 = 0xa2;
pub const GTID_LIST_EVENT: u8 = 0xa3;
pub const START_ENCRYPTION_EVENT: u8 = 0xa4;
pub const QUERY_COMPRESSED_EVENT: u8 = 0xa5;
/// WRITE/UPDATE/DELETE_ROWS_COMPRESSED_EVENT v1 and v2 (0xa6..=0xab).
pub const FIRST_ROWS_COMPRESSED_EVENT: u8 = 0xa6;
pub const LAST_ROWS_COMPRESSED_EVENT: u8 = 0xab;

/// The transaction has no terminating XID/COMMIT event (DDL and other standalone statements).
pub const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;

/// A MariaDB GTID event: starts an event group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MariaGtid {
    pub domain: u32,
    /// From the common header.
    pub server: u32,
    pub seq: u64,
    pub flags: u8,
    pub commit_id: Option<u64>,
}

impl MariaGtid {
    pub fn is_standalone(&self) -> bool {
        self.flags & FL_STANDALONE != 0
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(RsqlError::data(
                "binlog",
                format!("truncated MariaDB {} event: needed {} more bytes, {} left", self.what, n, self.buf.len()),
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Parses a GTID event body; `server` comes from the event header.
pub fn parse_gtid(body: &[u8], server: u32) -> Result<MariaGtid> {
    let mut r = Reader { buf: body, what: "GTID" };
    let seq = r.u64()?;
    let domain = r.u32()?;
    let flags = r.u8()?;
    let commit_id = if flags & FL_GROUP_COMMIT_ID != 0 { Some(r.u64()?) } else { None };
    Ok(MariaGtid { domain, server, seq, flags, commit_id })
}

/// Parses a GTID_LIST event body: the binlog state at the start of a file, as
/// (domain, server, seq) triples.
pub fn parse_gtid_list(body: &[u8]) -> Result<Vec<(u32, u32, u64)>> {
    let mut r = Reader { buf: body, what: "GTID_LIST" };
    let count = r.u32()? & 0x0fff_ffff;
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let d = r.u32()?;
        let s = r.u32()?;
        let q = r.u64()?;
        out.push((d, s, q));
    }
    Ok(out)
}

/// Parses a BINLOG_CHECKPOINT event body: the name of the oldest binlog file still needed for
/// crash recovery.
pub fn parse_binlog_checkpoint(body: &[u8]) -> Result<String> {
    let mut r = Reader { buf: body, what: "BINLOG_CHECKPOINT" };
    let n = r.u32()? as usize;
    Ok(String::from_utf8_lossy(r.take(n)?).into_owned())
}

/// The statement text of an ANNOTATE_ROWS event (the SQL that produced the following rows).
pub fn parse_annotate_rows(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtid_body(seq: u64, domain: u32, flags: u8, commit: Option<u64>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&domain.to_le_bytes());
        b.push(flags);
        if let Some(c) = commit {
            b.extend_from_slice(&c.to_le_bytes());
        }
        // MariaDB pads the event to a fixed size.
        b.extend_from_slice(&[0u8; 6]);
        b
    }

    #[test]
    fn gtid_event() {
        let g = parse_gtid(&gtid_body(42, 3, 0x0c, None), 7).unwrap();
        assert_eq!(g, MariaGtid { domain: 3, server: 7, seq: 42, flags: 0x0c, commit_id: None });
        assert!(!g.is_standalone());
        let g = parse_gtid(&gtid_body(9, 0, FL_STANDALONE | FL_GROUP_COMMIT_ID, Some(77)), 1).unwrap();
        assert!(g.is_standalone());
        assert_eq!(g.commit_id, Some(77));
        assert!(parse_gtid(&[1, 2, 3], 1).is_err());
        // Group commit flag set but the id missing.
        assert!(parse_gtid(&gtid_body(1, 0, FL_GROUP_COMMIT_ID, None)[..13], 1).is_err());
    }

    #[test]
    fn gtid_list_event() {
        let mut b = Vec::new();
        b.extend_from_slice(&(2u32 | 0x1000_0000).to_le_bytes());
        for (d, s, q) in [(0u32, 1u32, 100u64), (5, 2, 7)] {
            b.extend_from_slice(&d.to_le_bytes());
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&q.to_le_bytes());
        }
        assert_eq!(parse_gtid_list(&b).unwrap(), vec![(0, 1, 100), (5, 2, 7)]);
        assert_eq!(parse_gtid_list(&0u32.to_le_bytes()).unwrap(), vec![]);
        assert!(parse_gtid_list(&b[..20]).is_err());
    }

    #[test]
    fn checkpoint_and_annotate() {
        let mut b = 13u32.to_le_bytes().to_vec();
        b.extend_from_slice(b"binlog.000007");
        assert_eq!(parse_binlog_checkpoint(&b).unwrap(), "binlog.000007");
        assert!(parse_binlog_checkpoint(&b[..10]).is_err());
        assert_eq!(parse_annotate_rows("INSERT INTO t VALUES ('ü')".as_bytes()), "INSERT INTO t VALUES ('ü')");
    }
}
