//! Where a mysql-cdc source stands in the server's binary log: file, offset and the GTID set
//! seen so far, with a plain text form (`file:pos` or `file:pos:gtids`) for checkpoints.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use rsql_common::{Result, RsqlError};

/// A position between two transactions of the binary log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinlogPosition {
    /// Binary log file name, e.g. `binlog.000003`.
    pub file: String,
    /// Byte offset of the next event to read in `file`.
    pub pos: u64,
    /// GTIDs executed up to here, in the server's notation (MariaDB `0-1-42,1-2-7`, MySQL
    /// `uuid:1-42`); empty when unknown.
    pub gtid_set: String,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        BinlogPosition { file: file.into(), pos, gtid_set: String::new() }
    }

    /// Parses the text form written by `Display`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            RsqlError::data(
                "binlog position",
                format!(
                    "'{s}' is not a position; expected 'file:pos' or 'file:pos:gtid-set', e.g. 'binlog.000003:1234'"
                ),
            )
        };
        let mut parts = s.splitn(3, ':');
        let file = parts.next().filter(|f| !f.is_empty()).ok_or_else(bad)?;
        let pos = parts.next().and_then(|p| p.trim().parse::<u64>().ok()).ok_or_else(bad)?;
        let gtid_set = parts.next().unwrap_or("").to_string();
        Ok(BinlogPosition { file: file.to_string(), pos, gtid_set })
    }

    /// Orders two positions by file sequence number, then offset (GTIDs are ignored).
    pub fn cmp_offset(&self, other: &BinlogPosition) -> Ordering {
        file_seq(&self.file).cmp(&file_seq(&other.file)).then(self.file.cmp(&other.file)).then(self.pos.cmp(&other.pos))
    }

    /// True when `self` is at or after `other`.
    pub fn reached(&self, other: &BinlogPosition) -> bool {
        self.cmp_offset(other) != Ordering::Less
    }
}

/// The numeric suffix of a binlog file name (`binlog.000012` -> 12), so that `.1000000` sorts
/// after `.999999`.
fn file_seq(file: &str) -> u64 {
    file.rsplit('.').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if !self.gtid_set.is_empty() {
            write!(f, ":{}", self.gtid_set)?;
        }
        Ok(())
    }
}

/// MariaDB's GTID state: the last sequence number per replication domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MariaGtidState {
    domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaGtidState {
    /// Parses `domain-server-seq` items separated by commas.
    pub fn parse(s: &str) -> Option<Self> {
        let mut st = MariaGtidState::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let mut it = item.split('-');
            let d = it.next()?.parse().ok()?;
            let srv = it.next()?.parse().ok()?;
            let seq = it.next()?.parse().ok()?;
            if it.next().is_some() {
                return None;
            }
            st.domains.insert(d, (srv, seq));
        }
        Some(st)
    }

    pub fn update(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }
}

impl fmt::Display for MariaGtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.domains.iter().map(|(d, (s, q))| format!("{d}-{s}-{q}")).collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let p = BinlogPosition { file: "binlog.000003".into(), pos: 1234, gtid_set: "0-1-42,1-2-7".into() };
        assert_eq!(BinlogPosition::parse(&p.to_string()).unwrap(), p);
        let q = BinlogPosition::new("mysql-bin.000001", 4);
        assert_eq!(q.to_string(), "mysql-bin.000001:4");
        assert_eq!(BinlogPosition::parse("mysql-bin.000001:4").unwrap(), q);
        let mysql = BinlogPosition::parse("b.000001:9:3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5").unwrap();
        assert_eq!(mysql.gtid_set, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5");
        assert!(BinlogPosition::parse("nofile").is_err());
        assert!(BinlogPosition::parse("f:x").is_err());
    }

    #[test]
    fn ordering_follows_file_sequence() {
        let a = BinlogPosition::new("binlog.999999", 900);
        let b = BinlogPosition::new("binlog.1000000", 4);
        assert!(b.reached(&a));
        assert!(!a.reached(&b));
        assert!(a.reached(&a.clone()));
    }

    #[test]
    fn gtid_state() {
        let mut s = MariaGtidState::parse("0-1-5, 2-3-9").unwrap();
        s.update(0, 1, 6);
        s.update(1, 1, 1);
        assert_eq!(s.to_string(), "0-1-6,1-1-1,2-3-9");
        assert!(MariaGtidState::parse("0-1").is_none());
        assert_eq!(MariaGtidState::parse("").unwrap().to_string(), "");
    }
}
