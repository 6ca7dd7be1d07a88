//! Where a mysql-cdc source stands in the server's binary log: file, offset and the GTID set
//! seen so far, with a plain text form (`file:pos` or `file:pos:gtids`) for checkpoints; and the
//! two GTID notations: MariaDB's last sequence number per domain (`0-1-42`) and MySQL's
//! executed sets of UUID:interval lists (`3e11fa47-...:1-42:50`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use rsql_common::{Result, RsqlError};

/// A position between two transactions of the binary log. An empty `file` means the position
/// is known by its GTID set only (a start from a GTID set) and is read by GTID.
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
        let file = parts.next().unwrap_or_default();
        let pos = parts.next().and_then(|p| p.trim().parse::<u64>().ok()).ok_or_else(bad)?;
        let gtid_set = parts.next().unwrap_or("").to_string();
        // No file: a position known by its GTID set only (read by GTID).
        if file.is_empty() && gtid_set.is_empty() {
            return Err(bad());
        }
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

/// MySQL's executed GTID set: per source UUID (optionally with a MySQL 8.4 tag) the transaction
/// numbers executed, as sorted, disjoint, non-adjacent closed intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MySqlGtidSet {
    /// Key: lower-case UUID in its 8-4-4-4-12 form, or `uuid:tag`.
    sids: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    /// Parses MySQL's text form: `uuid:1-5:7,uuid2:1-3` (and `uuid:tag:1-5` for tagged GTIDs);
    /// spaces and newlines after commas are allowed, as `@@gtid_executed` prints them.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut set = MySqlGtidSet::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let mut parts = item.split(':');
            let uuid = parts.next().unwrap_or_default().trim();
            if parse_uuid(uuid).is_none() {
                return Err(format!("'{uuid}' in '{item}' is not a server UUID"));
            }
            let mut key = uuid.to_ascii_lowercase();
            let mut any = false;
            for p in parts {
                let p = p.trim();
                let range = match p.split_once('-') {
                    Some((a, b)) => a.parse::<u64>().ok().zip(b.parse::<u64>().ok()),
                    None => p.parse::<u64>().ok().map(|a| (a, a)),
                };
                match range {
                    Some((a, b)) if a >= 1 && a <= b => {
                        set.add_range(&key, a, b);
                        any = true;
                    }
                    Some(_) => return Err(format!("'{p}' in '{item}' is not an interval of transaction numbers (1 or more)")),
                    None if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                        key = format!("{}:{}", uuid.to_ascii_lowercase(), p.to_ascii_lowercase());
                    }
                    None => return Err(format!("'{p}' in '{item}' is neither an interval nor a tag")),
                }
            }
            if !any {
                return Err(format!("'{item}' has no transaction numbers; write it as uuid:1-42"));
            }
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.sids.is_empty()
    }

    /// Adds one transaction (`uuid` or `uuid:tag`, number).
    pub fn add(&mut self, sid: &str, gno: u64) {
        self.add_range(sid, gno, gno);
    }

    /// Adds the transactions `first..=last` of `sid`, merging overlapping and adjacent intervals.
    pub fn add_range(&mut self, sid: &str, first: u64, last: u64) {
        if first == 0 || first > last {
            return;
        }
        let iv = self.sids.entry(sid.to_ascii_lowercase()).or_default();
        let at = iv.partition_point(|&(_, b)| b.saturating_add(1) < first);
        let mut lo = first;
        let mut hi = last;
        let mut end = at;
        while end < iv.len() && iv[end].0 <= hi.saturating_add(1) {
            lo = lo.min(iv[end].0);
            hi = hi.max(iv[end].1);
            end += 1;
        }
        iv.splice(at..end, [(lo, hi)]);
    }

    /// Adds every transaction of `other`.
    pub fn union(&mut self, other: &MySqlGtidSet) {
        for (sid, iv) in &other.sids {
            for &(a, b) in iv {
                self.add_range(sid, a, b);
            }
        }
    }

    pub fn contains(&self, sid: &str, gno: u64) -> bool {
        self.sids.get(&sid.to_ascii_lowercase()).is_some_and(|iv| {
            let i = iv.partition_point(|&(_, b)| b < gno);
            i < iv.len() && iv[i].0 <= gno
        })
    }

    /// The set as COM_BINLOG_DUMP_GTID wants it: per UUID its 16 bytes, optional tag and
    /// half-open intervals `[first, last + 1)`.
    pub fn sids(&self) -> Vec<(([u8; 16], Option<String>), Vec<(u64, u64)>)> {
        self.sids
            .iter()
            .filter_map(|(k, iv)| {
                let (uuid, tag) = match k.split_once(':') {
                    Some((u, t)) => (u, Some(t.to_string())),
                    None => (k.as_str(), None),
                };
                Some(((parse_uuid(uuid)?, tag), iv.iter().map(|&(a, b)| (a, b + 1)).collect()))
            })
            .collect()
    }

    /// The payload of COM_BINLOG_DUMP_GTID's `data` field for this set (MySQL's documented
    /// layout: n_sids u64, then per sid 16 UUID bytes, n_intervals u64 and start/end u64 pairs;
    /// tagged sids are not representable in this format and are skipped).
    pub fn encode_sid_block(&self) -> Vec<u8> {
        let sids: Vec<_> = self.sids().into_iter().filter(|((_, tag), _)| tag.is_none()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&(sids.len() as u64).to_le_bytes());
        for ((uuid, _), iv) in sids {
            out.extend_from_slice(&uuid);
            out.extend_from_slice(&(iv.len() as u64).to_le_bytes());
            for (a, b) in iv {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
        }
        out
    }
}

/// `3e11fa47-71ca-11e1-9e33-c80aa9429562` -> 16 bytes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    if hex.len() != 32 || groups != [8, 4, 4, 4, 12] {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let t = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(t, 16).ok()?;
    }
    Some(out)
}

/// 16 bytes -> `3e11fa47-71ca-11e1-9e33-c80aa9429562`.
pub fn format_uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (sid, iv) in &self.sids {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(sid)?;
            for &(a, b) in iv {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

/// The GTIDs a reader has seen, in whichever notation its server uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidTracker {
    pub maria: MariaGtidState,
    pub mysql: MySqlGtidSet,
}

impl GtidTracker {
    /// Reads a set in either notation (MySQL's has a ':' after the UUID, MariaDB's does not).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(GtidTracker::default());
        }
        if s.contains(':') {
            Ok(GtidTracker { mysql: MySqlGtidSet::parse(s)?, ..Default::default() })
        } else {
            let maria = MariaGtidState::parse(s)
                .ok_or_else(|| format!("'{s}' is neither a MariaDB GTID position (domain-server-seq,...) nor a MySQL GTID set (uuid:1-42,...)"))?;
            Ok(GtidTracker { maria, ..Default::default() })
        }
    }
}

impl fmt::Display for GtidTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.mysql.is_empty() {
            write!(f, "{}", self.mysql)
        } else {
            write!(f, "{}", self.maria)
        }
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
        assert!(BinlogPosition::parse(":4").is_err());
        let by_gtid = BinlogPosition::parse(":4:0-1-42").unwrap();
        assert_eq!((by_gtid.file.as_str(), by_gtid.gtid_set.as_str()), ("", "0-1-42"));
        assert_eq!(by_gtid.to_string(), ":4:0-1-42");
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

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    #[test]
    fn mysql_gtid_set_arithmetic() {
        let mut s = MySqlGtidSet::parse(&format!("{A}:1-5:7, \n{B}:3")).unwrap();
        assert_eq!(s.to_string(), format!("{B}:3,{A}:1-5:7"));
        s.add(A, 6);
        assert_eq!(s.to_string(), format!("{B}:3,{A}:1-7"));
        s.add(A, 10);
        s.add(A, 9);
        s.add(B, 1);
        assert_eq!(s.to_string(), format!("{B}:1:3,{A}:1-7:9-10"));
        s.add(B, 2);
        s.add_range(A, 5, 20);
        assert_eq!(s.to_string(), format!("{B}:1-3,{A}:1-20"));
        s.add(A, 3);
        assert_eq!(s.to_string(), format!("{B}:1-3,{A}:1-20"));
        assert!(s.contains(A, 1) && s.contains(A, 20) && !s.contains(A, 21) && !s.contains(B, 4));
        assert!(s.contains(&A.to_ascii_uppercase(), 2));

        let mut u = MySqlGtidSet::parse(&format!("{A}:30-31")).unwrap();
        u.union(&s);
        assert_eq!(u.to_string(), format!("{B}:1-3,{A}:1-20:30-31"));
        let tagged = MySqlGtidSet::parse(&format!("{A}:1-2:blue:5")).unwrap();
        assert_eq!(tagged.to_string(), format!("{A}:1-2,{A}:blue:5"));

        for bad in [format!("{A}"), format!("{A}:0-3"), format!("{A}:5-3"), "nouuid:1".into(), format!("{A}:x-y")] {
            assert!(MySqlGtidSet::parse(&bad).is_err(), "{bad}");
        }
        assert!(MySqlGtidSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn mysql_gtid_set_wire_encoding() {
        let s = MySqlGtidSet::parse(&format!("{A}:1-5:7")).unwrap();
        let b = s.encode_sid_block();
        let mut want = 1u64.to_le_bytes().to_vec();
        want.extend_from_slice(&[
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62,
        ]);
        want.extend_from_slice(&2u64.to_le_bytes());
        for v in [1u64, 6, 7, 8] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(b, want);
        assert_eq!(format_uuid(&parse_uuid(A).unwrap()), A);
        assert!(parse_uuid("3e11fa47-71ca-11e1-9e33-c80aa942956").is_none());
    }

    #[test]
    fn positions_carry_either_gtid_notation() {
        let p = BinlogPosition::parse(&format!("binlog.000002:155:{A}:1-5:7,{B}:1")).unwrap();
        let g = GtidTracker::parse(&p.gtid_set).unwrap();
        assert_eq!(g.to_string(), format!("{B}:1,{A}:1-5:7"));
        assert_eq!(GtidTracker::parse("0-1-42,1-2-7").unwrap().to_string(), "0-1-42,1-2-7");
        assert!(GtidTracker::parse("x-y").is_err());
        assert_eq!(GtidTracker::parse("").unwrap(), GtidTracker::default());
    }
}
