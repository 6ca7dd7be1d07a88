//! Checkpoints: what a job saves so that it can resume after a crash, and where it keeps it.
//!
//! A checkpoint holds, for every node of the job graph, the bytes that node handed in when the
//! checkpoint's barrier passed it: a source's position, an operator's state, and for a sink what
//! its `snapshot` returned (nothing for a sink that only flushes; the transactions to commit for
//! one that commits in two phases). Each node is saved with its kind and its EXPLAIN text, so that a plan
//! that changed since the checkpoint is refused by name instead of restored into the wrong
//! operator.
//!
//! On disk a checkpoint is one file `chk-<id>` in the job's directory:
//! `RSQLCKP1`, a little-endian u32 header length, the JSON header, the node blobs one after
//! another, and a CRC-32 of everything before it. It is written to a temporary name, synced and
//! renamed, so a torn write never becomes a checkpoint; a file whose length or CRC does not add
//! up is skipped when looking for the latest one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rsql_common::{Result, RsqlError};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"RSQLCKP1";

/// The saved part of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// The node's index in the job graph.
    pub node: usize,
    /// `source`, `operator` or `sink`.
    pub role: String,
    /// The node's EXPLAIN text when the checkpoint was taken.
    pub describe: String,
    pub bytes: Vec<u8>,
}

/// One complete checkpoint of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub job: String,
    pub id: u64,
    /// Milliseconds since the epoch when it completed.
    pub created_ms: i64,
    pub nodes: Vec<NodeState>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    job: String,
    id: u64,
    created_ms: i64,
    nodes: Vec<HeaderNode>,
}

#[derive(Serialize, Deserialize)]
struct HeaderNode {
    node: usize,
    role: String,
    describe: String,
    len: u64,
}

impl Checkpoint {
    /// The state saved for graph node `node`.
    pub fn node(&self, node: usize) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.node == node)
    }

    /// Total bytes of saved state.
    pub fn state_bytes(&self) -> usize {
        self.nodes.iter().map(|n| n.bytes.len()).sum()
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let header = Header {
            job: self.job.clone(),
            id: self.id,
            created_ms: self.created_ms,
            nodes: self
                .nodes
                .iter()
                .map(|n| HeaderNode { node: n.node, role: n.role.clone(), describe: n.describe.clone(), len: n.bytes.len() as u64 })
                .collect(),
        };
        let h = serde_json::to_vec(&header).map_err(|e| RsqlError::execution(format!("encoding a checkpoint header: {e}")))?;
        let mut out = Vec::with_capacity(16 + h.len() + self.state_bytes());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        for n in &self.nodes {
            out.extend_from_slice(&n.bytes);
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes `encode`'s output; `what` names the file in errors.
    pub fn decode(buf: &[u8], what: &str) -> Result<Checkpoint> {
        let bad = |why: &str| RsqlError::execution(format!("checkpoint {what} is damaged ({why}); it is not used"));
        if buf.len() < MAGIC.len() + 8 || &buf[..MAGIC.len()] != MAGIC {
            return Err(bad("not a checkpoint file"));
        }
        let (body, tail) = buf.split_at(buf.len() - 4);
        let crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32(body) != crc {
            return Err(bad("checksum mismatch: the write was torn or the file was changed"));
        }
        let hl = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
        let rest = &body[12..];
        if hl > rest.len() {
            return Err(bad("header longer than the file"));
        }
        let header: Header = serde_json::from_slice(&rest[..hl]).map_err(|e| bad(&format!("header: {e}")))?;
        let mut blobs = &rest[hl..];
        let mut nodes = Vec::with_capacity(header.nodes.len());
        for n in header.nodes {
            let len = n.len as usize;
            if len > blobs.len() {
                return Err(bad("state shorter than its header says"));
            }
            let (b, r) = blobs.split_at(len);
            blobs = r;
            nodes.push(NodeState { node: n.node, role: n.role, describe: n.describe, bytes: b.to_vec() });
        }
        if !blobs.is_empty() {
            return Err(bad("bytes after the last state"));
        }
        Ok(Checkpoint { job: header.job, id: header.id, created_ms: header.created_ms, nodes })
    }
}

/// Where checkpoints are kept. The local directory is the embedded default; other stores
/// (object storage) implement the same calls.
pub trait CheckpointStore: Send + Sync {
    /// Stores a complete checkpoint atomically and drops the oldest beyond the retained count.
    fn save(&self, cp: &Checkpoint) -> Result<String>;
    /// The newest checkpoint that reads back whole, if any.
    fn latest(&self) -> Result<Option<(String, Checkpoint)>>;
    /// Where checkpoints go, for messages.
    fn describe(&self) -> String;
    /// The highest checkpoint id stored (0 when none), so that new ids sort after old ones.
    fn latest_id(&self) -> u64;
    /// Records that the job ran to its end (a bounded job whose sinks committed and finished):
    /// a later start of the same job is a new run, as a resubmitted Flink job is, not a resume.
    fn mark_finished(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the newest checkpoint is that of a job that ran to its end.
    fn finished(&self) -> bool {
        false
    }
}

/// The marker [`LocalDirStore::mark_finished`] leaves beside the final checkpoint.
pub const FINISHED_MARKER: &str = "FINISHED";

/// Checkpoints as files `chk-<id>` in one directory per job.
pub struct LocalDirStore {
    dir: PathBuf,
    retained: usize,
}

impl LocalDirStore {
    pub fn new(dir: impl Into<PathBuf>, retained: usize) -> Self {
        LocalDirStore { dir: dir.into(), retained: retained.max(1) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checkpoint files in the directory, newest first.
    fn files(&self) -> Result<Vec<(u64, PathBuf)>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir, "listing", e)),
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_prefix("chk-").and_then(|s| s.parse::<u64>().ok()) {
                out.push((id, ent.path()));
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out)
    }
}

fn io_err(path: &Path, doing: &str, e: std::io::Error) -> RsqlError {
    RsqlError::execution(format!(
        "{doing} checkpoint directory {}: {e}; check that it exists and is writable, or set 'execution.checkpointing.dir'",
        path.display()
    ))
}

impl CheckpointStore for LocalDirStore {
    fn save(&self, cp: &Checkpoint) -> Result<String> {
        fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, "creating", e))?;
        let bytes = cp.encode()?;
        let final_path = self.dir.join(format!("chk-{:020}", cp.id));
        let tmp = self.dir.join(format!(".chk-{:020}.tmp", cp.id));
        {
            let mut f = fs::File::create(&tmp).map_err(|e| io_err(&self.dir, "writing to", e))?;
            f.write_all(&bytes).map_err(|e| io_err(&self.dir, "writing to", e))?;
            f.sync_all().map_err(|e| io_err(&self.dir, "syncing", e))?;
        }
        fs::rename(&tmp, &final_path).map_err(|e| io_err(&self.dir, "renaming in", e))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        for (_, old) in self.files()?.into_iter().skip(self.retained) {
            let _ = fs::remove_file(old);
        }
        Ok(final_path.display().to_string())
    }

    fn latest(&self) -> Result<Option<(String, Checkpoint)>> {
        for (_, path) in self.files()? {
            let what = path.display().to_string();
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("skipping checkpoint {what}: {e}");
                    continue;
                }
            };
            match Checkpoint::decode(&bytes, &what) {
                Ok(cp) => return Ok(Some((what, cp))),
                Err(e) => {
                    tracing::warn!("{e}");
                    // Set it aside so that retention counts only good checkpoints.
                    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                        let _ = fs::rename(&path, self.dir.join(format!("damaged-{name}")));
                    }
                }
            }
        }
        Ok(None)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn latest_id(&self) -> u64 {
        self.files().ok().and_then(|f| f.first().map(|(id, _)| *id)).unwrap_or(0)
    }

    fn mark_finished(&self) -> Result<()> {
        // The marker names the final checkpoint, so that it cannot be taken for a later one's.
        fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, "creating", e))?;
        fs::write(self.dir.join(FINISHED_MARKER), self.latest_id().to_string()).map_err(|e| io_err(&self.dir, "writing to", e))
    }

    fn finished(&self) -> bool {
        fs::read_to_string(self.dir.join(FINISHED_MARKER))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|id| id == self.latest_id())
    }
}

/// Reads one checkpoint file, or the newest checkpoint of a directory (`execution.savepoint.path`).
pub fn load_path(path: &Path) -> Result<(String, Checkpoint)> {
    if path.is_dir() {
        return LocalDirStore::new(path, usize::MAX).latest()?.ok_or_else(|| {
            RsqlError::execution(format!("'execution.savepoint.path': {} holds no complete checkpoint", path.display()))
        });
    }
    let what = path.display().to_string();
    let bytes = fs::read(path).map_err(|e| {
        RsqlError::execution(format!("'execution.savepoint.path': cannot read {what}: {e}; give a checkpoint file or its directory"))
    })?;
    Ok((what.clone(), Checkpoint::decode(&bytes, &what)?))
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: u64) -> Checkpoint {
        Checkpoint {
            job: "j".into(),
            id,
            created_ms: 7,
            nodes: vec![
                NodeState { node: 0, role: "source".into(), describe: "TableSourceScan(t)".into(), bytes: b"pos".to_vec() },
                NodeState { node: 2, role: "operator".into(), describe: "GroupAggregate".into(), bytes: vec![0; 100] },
            ],
        }
    }

    #[test]
    fn crc_matches_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_damage_is_detected() {
        let cp = sample(3);
        let bytes = cp.encode().unwrap();
        assert_eq!(Checkpoint::decode(&bytes, "x").unwrap(), cp);
        for cut in [0, 5, 20, bytes.len() - 1] {
            assert!(Checkpoint::decode(&bytes[..cut], "x").is_err());
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert!(Checkpoint::decode(&flipped, "x").unwrap_err().to_string().contains("checksum"));
    }

    #[test]
    fn store_keeps_newest_and_skips_torn_files() {
        let dir = std::env::temp_dir().join(format!("rsql-ckpt-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = LocalDirStore::new(&dir, 2);
        assert!(store.latest().unwrap().is_none());
        for id in 1..=4 {
            store.save(&sample(id)).unwrap();
        }
        assert_eq!(store.files().unwrap().len(), 2);
        assert_eq!(store.latest().unwrap().unwrap().1.id, 4);
        // A torn newest file is passed over for the previous one.
        let torn = sample(5).encode().unwrap();
        fs::write(dir.join(format!("chk-{:020}", 5)), &torn[..torn.len() / 2]).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().1.id, 4);
        assert!(dir.join(format!("damaged-chk-{:020}", 5)).exists());
        // A temporary file from an interrupted write is not a checkpoint.
        fs::write(dir.join(".chk-00000000000000000006.tmp"), b"junk").unwrap();
        assert_eq!(store.latest().unwrap().unwrap().1.id, 4);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_finished_mark_holds_only_for_the_checkpoint_it_names() {
        let dir = std::env::temp_dir().join(format!("rsql-ckpt-finished-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = LocalDirStore::new(&dir, 2);
        store.save(&sample(1)).unwrap();
        assert!(!store.finished());
        store.mark_finished().unwrap();
        assert!(store.finished());
        // A later checkpoint (a resumed run that went on) is not finished.
        store.save(&sample(2)).unwrap();
        assert!(!store.finished());
        let _ = fs::remove_dir_all(&dir);
    }
}
