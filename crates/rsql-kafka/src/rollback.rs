//! Undoing, on resume, what a failed run of an upsert-kafka sink wrote after its last checkpoint.
//!
//! At-least-once replay is idempotent per key only when the replay writes every key the failed
//! run wrote. It need not: a mysql-cdc snapshot chunk read again after a restart no longer holds
//! rows deleted in between, so their upserts from the failed run would stay in the topic for
//! good. At each checkpoint the sink therefore saves where every partition of its topic ended
//! ([`SinkOffsets`]); when the job resumes from that checkpoint, [`rollback`] reads what came
//! after those offsets, finds each such key's value as of the checkpoint (its last message
//! before the saved offset, or none) and writes it again, tombstones for keys that did not exist.
//! The topic's latest value per key is then the checkpoint's, and the replay goes on from there,
//! as if the failed run had written nothing. This assumes the job is the topic's only writer,
//! which upsert-kafka needs for its results to mean anything anyway.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rsql_common::{Result, RsqlError};
use serde_json::{json, Value};

/// Where each partition of the sink's topic ended when a checkpoint was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkOffsets {
    pub topic: String,
    /// (partition, offset of the next message) after the checkpoint's flush.
    pub ends: Vec<(i32, i64)>,
}

impl SinkOffsets {
    /// `{"topic": "t", "ends": [[partition, offset], ...]}`
    pub fn encode(&self) -> Vec<u8> {
        json!({ "topic": self.topic, "ends": self.ends }).to_string().into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<SinkOffsets> {
        let bad = |why: &str| RsqlError::execution(format!("the checkpoint's kafka sink offsets are damaged: {why}"));
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        let topic = v.get("topic").and_then(Value::as_str).ok_or_else(|| bad("no topic"))?.to_string();
        let ends = v
            .get("ends")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no offsets"))?
            .iter()
            .map(|e| match e.as_array().map(|a| a.as_slice()) {
                Some([p, o]) => match (p.as_i64(), o.as_i64()) {
                    (Some(p), Some(o)) => i32::try_from(p).map(|p| (p, o)).map_err(|_| bad("partition out of range")),
                    _ => Err(bad("offsets are not numbers")),
                },
                _ => Err(bad("an offset is not a [partition, offset] pair")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SinkOffsets { topic, ends })
    }
}

/// A key's value as of the checkpoint: `None` is a tombstone.
pub type Restore = (Vec<u8>, Option<Vec<u8>>);

const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A partition read that makes no progress for this long fails.
const STALL: Duration = Duration::from_secs(60);

/// For one partition: the keys written at or after `end`, each with its last value before `end`.
/// Blocking; run it on a blocking thread.
pub fn partition_restores(config: &ClientConfig, ctx: &str, topic: &str, partition: i32, end: i64) -> Result<Vec<Restore>> {
    let err = |what: &str, e: KafkaError| {
        RsqlError::connector(ctx, format!("undoing writes after the checkpoint on partition {partition}: {what}: {e}"))
    };
    let mut config = config.clone();
    config.set("enable.auto.commit", "false");
    config.set("enable.auto.offset.store", "false");
    config.set("enable.partition.eof", "true");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    config.set("group.id", format!("rsql-rollback-{topic}-{partition}-{nanos:x}"));
    let consumer: BaseConsumer = config.create().map_err(|e| err("cannot create a consumer", e))?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, FETCH_TIMEOUT).map_err(|e| err("cannot read the offsets", e))?;
    if high < end {
        tracing::warn!(
            topic,
            partition,
            "the partition ends at offset {high}, before offset {end} where it ended at the checkpoint: \
             the broker lost acknowledged messages, and the topic may miss changes"
        );
        return Ok(Vec::new());
    }
    if high == end {
        return Ok(Vec::new());
    }
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    read_range(&consumer, topic, partition, end, high, |key, _| {
        if let Some(k) = key {
            keys.insert(k.to_vec());
        }
    })
    .map_err(|e| RsqlError::connector(ctx, format!("undoing writes after the checkpoint on partition {partition}: {e}")))?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut before: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    if end > low {
        read_range(&consumer, topic, partition, low, end, |key, value| {
            if let Some(k) = key.filter(|k| keys.contains(*k)) {
                before.insert(k.to_vec(), value.map(|v| v.to_vec()));
            }
        })
        .map_err(|e| RsqlError::connector(ctx, format!("undoing writes after the checkpoint on partition {partition}: {e}")))?;
    }
    let mut out: Vec<Restore> = keys
        .into_iter()
        .map(|k| {
            let v = before.remove(&k).flatten();
            (k, v)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Calls `f(key, value)` for every message of `partition` with an offset in `[from, to)`.
fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    mut f: impl FnMut(Option<&[u8]>, Option<&[u8]>),
) -> std::result::Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| format!("cannot assign the partition: {e}"))?;
    let mut last_progress = Instant::now();
    let mut next = from;
    while next < to {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                if m.offset() >= to {
                    break;
                }
                next = m.offset() + 1;
                f(m.key(), m.payload());
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // Offsets can have gaps (transaction markers, compaction): the end is the end.
                break;
            }
            Some(Err(e)) => {
                if last_progress.elapsed() > STALL {
                    return Err(format!("cannot read offsets {next}..{to}: {e}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None => {
                if last_progress.elapsed() > STALL {
                    return Err(format!("no message came for offsets {next}..{to} in {} s", STALL.as_secs()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_as_json() {
        let o = SinkOffsets { topic: "t".into(), ends: vec![(0, 12), (1, 0)] };
        assert_eq!(SinkOffsets::decode(&o.encode()).unwrap(), o);
    }

    #[test]
    fn damaged_offsets_are_an_error() {
        for bad in [&b"{"[..], br#"{"topic":"t"}"#, br#"{"topic":"t","ends":[[0]]}"#, br#"{"topic":"t","ends":[["a",1]]}"#] {
            let e = SinkOffsets::decode(bad).unwrap_err().to_string();
            assert!(e.contains("damaged"), "{e}");
        }
    }
}
