//! The engine's log: eddy's own, and the external clusters its Kafka
//! connections name, as one [`LogStore`].
//!
//! A topic on an external cluster is named `connection/topic` — a `/` no
//! Kafka topic name may hold (`[a-zA-Z0-9._-]`), so the two never meet —
//! and every call on such a name goes to that connection's [`RemoteLog`];
//! every other name is a topic of eddy's own log. Consumer groups are
//! always eddy's own. A connection is made when the catalog names it
//! (`Routed::connect`); a name a connection never registered is taken as
//! the brokers themselves (a source's inline `BROKER '…'`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::BytesMut;

use super::remote::RemoteLog;
use super::{
    AppendInfo, CommittedOffset, Damage, Durability, LogError, LogStore, ReadResult, Result,
    TopicInfo,
};

/// Where a topic of an external cluster is named: `connection/topic`.
pub fn remote_topic(connection: &str, topic: &str) -> String {
    format!("{connection}/{topic}")
}

/// `(connection, topic)` of a name made by [`remote_topic`].
pub fn split_remote(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('/')
}

/// What a connection was made with: brokers, librdkafka properties.
type Spec = (String, BTreeMap<String, String>);

pub struct Routed {
    local: Arc<dyn LogStore>,
    remotes: RwLock<HashMap<String, Arc<RemoteLog>>>,
    /// What each connection was made with, so an unchanged one is kept.
    made: RwLock<HashMap<String, Spec>>,
}

impl Routed {
    pub fn new(local: Arc<dyn LogStore>) -> Routed {
        Routed {
            local,
            remotes: RwLock::new(HashMap::new()),
            made: RwLock::new(HashMap::new()),
        }
    }

    /// Route `connection/…` to the cluster at `brokers`.
    pub fn connect(
        &self,
        connection: &str,
        brokers: &str,
        properties: BTreeMap<String, String>,
    ) -> Result<()> {
        let spec = (brokers.to_string(), properties.clone());
        if self
            .made
            .read()
            .map_err(|_| LogError::Closed)?
            .get(connection)
            == Some(&spec)
        {
            return Ok(());
        }
        let remote = Arc::new(RemoteLog::new(brokers, properties)?);
        self.remotes
            .write()
            .map_err(|_| LogError::Closed)?
            .insert(connection.to_string(), remote);
        self.made
            .write()
            .map_err(|_| LogError::Closed)?
            .insert(connection.to_string(), spec);
        Ok(())
    }

    /// Forget a dropped connection.
    pub fn disconnect(&self, connection: &str) {
        if let Ok(mut r) = self.remotes.write() {
            r.remove(connection);
        }
        if let Ok(mut m) = self.made.write() {
            m.remove(connection);
        }
    }

    /// The store holding `name`, and the name it has there.
    fn route<'a>(&self, name: &'a str) -> Result<(Arc<dyn LogStore>, &'a str)> {
        let Some((connection, topic)) = split_remote(name) else {
            return Ok((Arc::clone(&self.local), name));
        };
        if let Some(r) = self
            .remotes
            .read()
            .map_err(|_| LogError::Closed)?
            .get(connection)
        {
            return Ok((Arc::clone(r) as Arc<dyn LogStore>, topic));
        }
        // An inline broker list (`FROM KAFKA BROKER 'host:port'`).
        self.connect(connection, connection, BTreeMap::new())?;
        self.route(name)
    }
}

impl LogStore for Routed {
    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        let (store, topic) = self.route(name)?;
        let mut info = store.create_topic(topic, partitions, config)?;
        info.name = name.to_string();
        Ok(info)
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let (store, topic) = self.route(name)?;
        store.delete_topic(topic)
    }

    /// eddy's own topics.
    fn topics(&self) -> Vec<TopicInfo> {
        self.local.topics()
    }

    fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        let (store, topic) = self.route(name)?;
        let mut info = store.topic_info(topic)?;
        info.name = name.to_string();
        Ok(info)
    }

    fn alter_topic_config(
        &self,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let (store, topic) = self.route(name)?;
        store.alter_topic_config(topic, changes)
    }

    fn create_partitions(&self, name: &str, count: i32) -> Result<()> {
        let (store, topic) = self.route(name)?;
        store.create_partitions(topic, count)
    }

    fn append(
        &self,
        name: &str,
        partition: i32,
        batches: BytesMut,
        durability: Durability,
    ) -> Result<AppendInfo> {
        let (store, topic) = self.route(name)?;
        store.append(topic, partition, batches, durability)
    }

    fn read(
        &self,
        name: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let (store, topic) = self.route(name)?;
        store.read(topic, partition, offset, max_bytes)
    }

    fn offsets(&self, name: &str, partition: i32) -> Result<(i64, i64)> {
        let (store, topic) = self.route(name)?;
        store.offsets(topic, partition)
    }

    fn exact_offsets(&self, name: &str, partition: i32) -> Result<(i64, i64)> {
        let (store, topic) = self.route(name)?;
        store.exact_offsets(topic, partition)
    }

    fn offset_for_timestamp(
        &self,
        name: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let (store, topic) = self.route(name)?;
        store.offset_for_timestamp(topic, partition, timestamp)
    }

    fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, CommittedOffset)],
    ) -> Result<()> {
        self.local.commit_offsets(group, offsets)
    }

    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        self.local.committed_offset(group, topic, partition)
    }

    fn group_offsets(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.local.group_offsets(group)
    }

    fn groups(&self) -> Vec<String> {
        self.local.groups()
    }

    fn sync_to(&self, name: &str, partition: i32, offset: i64) -> Result<()> {
        let (store, topic) = self.route(name)?;
        store.sync_to(topic, partition, offset)
    }

    fn is_closed(&self) -> bool {
        self.local.is_closed()
    }

    fn damage(&self) -> Vec<Damage> {
        self.local.damage()
    }

    fn disk_usage(&self, name: &str, partition: i32) -> Option<(u64, usize)> {
        let (store, topic) = self.route(name).ok()?;
        store.disk_usage(topic, partition)
    }
}
