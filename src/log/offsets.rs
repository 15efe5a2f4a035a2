//! Consumer-group committed offsets, stored as Kafka stores them: records in
//! the compacted internal topic `__consumer_offsets`, key
//! `(version 1, group, topic, partition)`, value
//! `(version 3, offset, leader epoch, metadata, commit timestamp)`, a null
//! value deleting the entry. The map in memory is rebuilt from the topic at
//! open; a commit is durable (fsynced, like Kafka's acks=all commit) before it
//! is visible.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, NewRecord};
use super::error::{LogError, Result};
use super::partition::Partition;
use super::{Durability, now_ms};

pub const TOPIC: &str = "__consumer_offsets";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

type Key = (String, String, i32);

#[derive(Debug)]
pub struct OffsetStore {
    partition: Arc<Partition>,
    map: RwLock<BTreeMap<Key, CommittedOffset>>,
    /// Serialises commits so the map changes in log order.
    commit_lock: Mutex<()>,
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(10 + group.len() + topic.len());
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

fn encode_value(c: &CommittedOffset) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + c.metadata.len());
    b.put_i16(3);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp);
    b.freeze()
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|a| i16::from_be_bytes([a[0], a[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|a| i32::from_be_bytes([a[0], a[1], a[2], a[3]]))
    }
    fn i64(&mut self) -> Option<i64> {
        let a = self.take(8)?;
        let mut x = [0u8; 8];
        x.copy_from_slice(a);
        Some(i64::from_be_bytes(x))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.i16()?;
        if n < 0 {
            return Some(String::new());
        }
        Some(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
}

fn decode_key(k: &[u8]) -> Option<Key> {
    let mut c = Cursor(k);
    let version = c.i16()?;
    // Versions 0 and 1 are offset commits; 2 is group metadata (not ours).
    if version > 1 {
        return None;
    }
    Some((c.string()?, c.string()?, c.i32()?))
}

fn decode_value(v: &[u8]) -> Option<CommittedOffset> {
    let mut c = Cursor(v);
    let version = c.i16()?;
    let offset = c.i64()?;
    let leader_epoch = if version >= 3 { c.i32()? } else { -1 };
    let metadata = c.string()?;
    let commit_timestamp = c.i64()?;
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

impl OffsetStore {
    /// Rebuild the map by reading the whole (compacted) topic.
    pub fn load(partition: Arc<Partition>) -> Result<OffsetStore> {
        let mut map = BTreeMap::new();
        for records in partition.records(partition.log_start(), partition.log_end(), 1 << 20) {
            for r in records? {
                let Some(key) = r.key.as_deref().and_then(decode_key) else {
                    continue;
                };
                match r.value.as_deref() {
                    None => {
                        map.remove(&key);
                    }
                    Some(v) => {
                        if let Some(c) = decode_value(v) {
                            map.insert(key, c);
                        }
                    }
                }
            }
        }
        Ok(OffsetStore {
            partition,
            map: RwLock::new(map),
            commit_lock: Mutex::new(()),
        })
    }

    /// Commit offsets for a group: appended and fsynced, then visible.
    pub fn commit(&self, group: &str, offsets: &[(String, i32, CommittedOffset)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let records: Vec<NewRecord> = offsets
            .iter()
            .map(|(t, p, c)| NewRecord {
                key: Some(encode_key(group, t, *p)),
                value: Some(encode_value(c)),
                timestamp: now,
                headers: vec![],
            })
            .collect();
        let _g = self.commit_lock.lock().map_err(|_| LogError::Closed)?;
        self.partition
            .append(batch::encode(&records)?, Durability::Fsync)?;
        let mut map = self.map.write().map_err(|_| LogError::Closed)?;
        for (t, p, c) in offsets {
            map.insert((group.to_string(), t.clone(), *p), c.clone());
        }
        Ok(())
    }

    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.map
            .read()
            .ok()?
            .get(&(group.to_string(), topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of a group: (topic, partition, offset).
    pub fn group(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        let Ok(map) = self.map.read() else {
            return vec![];
        };
        map.range((group.to_string(), String::new(), i32::MIN)..)
            .take_while(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let Ok(map) = self.map.read() else {
            return vec![];
        };
        map.keys()
            .map(|(g, _, _)| g.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Remove a group's offsets (tombstones, so compaction forgets them).
    pub fn delete_group(&self, group: &str) -> Result<usize> {
        let entries = self.group(group);
        if entries.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let records: Vec<NewRecord> = entries
            .iter()
            .map(|(t, p, _)| NewRecord {
                key: Some(encode_key(group, t, *p)),
                value: None,
                timestamp: now,
                headers: vec![],
            })
            .collect();
        let _g = self.commit_lock.lock().map_err(|_| LogError::Closed)?;
        self.partition
            .append(batch::encode(&records)?, Durability::Fsync)?;
        let mut map = self.map.write().map_err(|_| LogError::Closed)?;
        for (t, p, _) in &entries {
            map.remove(&(group.to_string(), t.clone(), *p));
        }
        Ok(entries.len())
    }

    /// Forget offsets of a deleted topic (tombstones for every group).
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        let doomed: Vec<Key> = match self.map.read() {
            Ok(m) => m.keys().filter(|(_, t, _)| t == topic).cloned().collect(),
            Err(_) => return Err(LogError::Closed),
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let records: Vec<NewRecord> = doomed
            .iter()
            .map(|(g, t, p)| NewRecord {
                key: Some(encode_key(g, t, *p)),
                value: None,
                timestamp: now,
                headers: vec![],
            })
            .collect();
        let _g = self.commit_lock.lock().map_err(|_| LogError::Closed)?;
        self.partition
            .append(batch::encode(&records)?, Durability::Fsync)?;
        let mut map = self.map.write().map_err(|_| LogError::Closed)?;
        for k in doomed {
            map.remove(&k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_formats_round_trip() {
        let k = encode_key("g", "orders", 3);
        assert_eq!(decode_key(&k), Some(("g".into(), "orders".into(), 3)));
        let c = CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
        assert_eq!(decode_key(&[0, 2, 0]), None);
        assert_eq!(decode_value(&[0, 3, 1]), None);
    }
}
