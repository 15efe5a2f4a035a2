//! Metadata: brokers (this one node), topics and their partitions, all led by
//! this node. Unknown topics are created when both the client
//! (`allow_auto_topic_creation`) and the broker (`auto_create_topics`) allow
//! it, as Kafka's `auto.create.topics.enable` does.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{Broker, RequestContext, error_code, str_bytes};
use crate::log::{LogError, LogStore, Topic};

/// A stable topic id derived from the name and creation time: eddy stores no
/// UUIDs, and at the versions it serves clients address topics by name, but
/// newer clients like a non-zero id to tell a recreated topic apart.
pub fn topic_id(t: &Topic) -> Uuid {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.name().bytes() {
        a = (a ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let b = (t.created_ms() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ a.rotate_left(17);
    Uuid::from_u64_pair(a, b | 1)
}

fn topic_entry(broker: &Broker, t: &Topic, version: i16) -> MetadataResponseTopic {
    let node = BrokerId(broker.config().node_id);
    let partitions = (0..t.partition_count())
        .map(|p| {
            let mut e = MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(node)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node]);
            if version >= 7 {
                e.leader_epoch = 0;
            }
            e
        })
        .collect();
    let mut e = MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name()))))
        .with_partitions(partitions);
    if version >= 1 {
        e.is_internal = t.name().starts_with("__");
    }
    if version >= 10 {
        e.topic_id = topic_id(t);
    }
    e
}

fn error_entry(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(name))))
        .with_error_code(code)
}

pub fn handle(broker: &Broker, req: MetadataRequest, ctx: &RequestContext) -> MetadataResponse {
    let v = ctx.api_version;
    let log = broker.log();
    let cfg = broker.config();
    let mut b = MetadataResponseBroker::default()
        .with_node_id(BrokerId(cfg.node_id))
        .with_host(str_bytes(&cfg.advertised_host))
        .with_port(cfg.advertised_port);
    if v >= 1 {
        b.rack = None;
    }
    let mut resp = MetadataResponse::default().with_brokers(vec![b]);
    if v >= 2 {
        resp.cluster_id = Some(str_bytes(&cfg.cluster_id));
    }
    if v >= 1 {
        resp.controller_id = BrokerId(cfg.node_id);
    }
    // v0: an empty list means all topics; v1+: null means all.
    let wanted: Option<Vec<String>> = match req.topics {
        None => None,
        Some(ts) if v == 0 && ts.is_empty() => None,
        Some(ts) => Some(
            ts.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let allow_create = cfg.auto_create_topics && (v < 4 || req.allow_auto_topic_creation);
    resp.topics = match wanted {
        None => log
            .topic_names()
            .iter()
            .filter_map(|n| log.topic(n).ok())
            .map(|t| topic_entry(broker, &t, v))
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| match log.topic(name) {
                Ok(t) => topic_entry(broker, &t, v),
                Err(LogError::UnknownTopic(_))
                    if allow_create && !super::is_internal(name) && broker.may_administer(ctx) =>
                {
                    match log.create_topic(name, cfg.default_partitions, Default::default()) {
                        Ok(_) | Err(LogError::TopicExists(_)) => match log.topic(name) {
                            Ok(t) => topic_entry(broker, &t, v),
                            Err(e) => error_entry(name, error_code(&e)),
                        },
                        Err(e) => error_entry(name, error_code(&e)),
                    }
                }
                Err(LogError::UnknownTopic(_)) => {
                    error_entry(name, ResponseError::UnknownTopicOrPartition.code())
                }
                Err(e) => error_entry(name, error_code(&e)),
            })
            .collect(),
    };
    resp
}

/// DescribeCluster (versions 0–1, what newer AdminClients call for
/// `describe_cluster`): eddy is a one-broker cluster, its own controller.
pub fn describe_cluster(
    broker: &Broker,
    req: kafka_protocol::messages::DescribeClusterRequest,
) -> kafka_protocol::messages::DescribeClusterResponse {
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    let cfg = broker.config();
    let me = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(cfg.node_id))
        .with_host(str_bytes(&cfg.advertised_host))
        .with_port(cfg.advertised_port);
    kafka_protocol::messages::DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(str_bytes(&cfg.cluster_id))
        .with_controller_id(BrokerId(cfg.node_id))
        .with_brokers(vec![me])
        // "Not requested" (Kafka's INT32_MIN) unless asked; eddy does not
        // list ACL operations.
        .with_cluster_authorized_operations(i32::MIN)
}
