//! Topic and broker config definitions: Kafka's names, types, defaults and validation.
//!
//! A topic config's effective value comes from, in order: the topic's own override
//! (`DYNAMIC_TOPIC_CONFIG`), the broker's static setting of its synonym (`log.retention.ms`
//! for `retention.ms`, `STATIC_BROKER_CONFIG`), or the default (`DEFAULT_CONFIG`). These are
//! the sources DescribeConfigs reports.

use std::collections::BTreeMap;

/// Kafka's config value types (DescribeConfigs v3+ `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// true/false.
    Boolean,
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    Long,
    /// Floating point.
    Double,
    /// Free text.
    String,
    /// Comma-separated list.
    List,
}

impl ConfigType {
    /// The wire value of DescribeConfigs' `config_type`.
    pub fn wire(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
        }
    }
}

/// Where an effective config value came from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// The topic's own override.
    DynamicTopic,
    /// Set in the broker's configuration file or flags.
    StaticBroker,
    /// The built-in default.
    Default,
}

impl ConfigSource {
    /// The wire value of DescribeConfigs' `config_source`.
    pub fn wire(self) -> i8 {
        match self {
            ConfigSource::DynamicTopic => 1,
            ConfigSource::StaticBroker => 4,
            ConfigSource::Default => 5,
        }
    }
}

/// A check on a config value beyond its type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Validator {
    /// Any value of the type.
    Any,
    /// Integer at least this.
    AtLeast(i64),
    /// Double within [min, max].
    Between(f64, f64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A non-empty comma-separated list of these strings.
    ListOf(&'static [&'static str]),
}

/// One topic config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// The broker config that supplies the default, if any.
    pub broker_synonym: Option<&'static str>,
    /// Value type.
    pub config_type: ConfigType,
    /// Built-in default, as Kafka prints it.
    pub default: &'static str,
    /// Value check.
    pub validator: Validator,
    /// One-line description.
    pub documentation: &'static str,
}

const fn topic(
    name: &'static str,
    broker_synonym: Option<&'static str>,
    config_type: ConfigType,
    default: &'static str,
    validator: Validator,
    documentation: &'static str,
) -> TopicConfigDef {
    TopicConfigDef { name, broker_synonym, config_type, default, validator, documentation }
}

/// `i64::MAX` as Kafka prints it, the "never" of flush and timestamp-skew settings.
pub const LONG_MAX: &str = "9223372036854775807";
/// Smallest `segment.bytes` weir accepts. Kafka 4 requires 1 MiB; weir allows smaller so tests
/// and the simulator can roll segments constantly.
pub const SEGMENT_BYTES_MIN: i64 = 1024;

/// Every topic config weir accepts.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    topic(
        "cleanup.policy",
        Some("log.cleanup.policy"),
        ConfigType::List,
        "delete",
        Validator::ListOf(&["delete", "compact"]),
        "Retention policy: delete old segments, or compact by key.",
    ),
    topic(
        "compression.type",
        Some("compression.type"),
        ConfigType::String,
        "producer",
        Validator::OneOf(&["producer"]),
        "weir keeps batches as the producer compressed them.",
    ),
    topic(
        "delete.retention.ms",
        Some("log.cleaner.delete.retention.ms"),
        ConfigType::Long,
        "86400000",
        Validator::AtLeast(0),
        "How long tombstones are kept in compacted topics.",
    ),
    topic(
        "file.delete.delay.ms",
        Some("log.segment.delete.delay.ms"),
        ConfigType::Long,
        "60000",
        Validator::AtLeast(0),
        "Delay before a deleted segment file is removed.",
    ),
    topic(
        "flush.messages",
        Some("log.flush.interval.messages"),
        ConfigType::Long,
        LONG_MAX,
        Validator::AtLeast(1),
        "With write.caching=true: fsync after this many messages.",
    ),
    topic(
        "flush.ms",
        Some("log.flush.interval.ms"),
        ConfigType::Long,
        LONG_MAX,
        Validator::AtLeast(0),
        "With write.caching=true: fsync at least this often.",
    ),
    topic(
        "index.interval.bytes",
        Some("log.index.interval.bytes"),
        ConfigType::Int,
        "4096",
        Validator::AtLeast(0),
        "Bytes between offset index entries.",
    ),
    topic(
        "max.message.bytes",
        Some("message.max.bytes"),
        ConfigType::Int,
        "1048588",
        Validator::AtLeast(0),
        "Largest record batch the topic accepts.",
    ),
    topic(
        "message.timestamp.type",
        Some("log.message.timestamp.type"),
        ConfigType::String,
        "CreateTime",
        Validator::OneOf(&["CreateTime", "LogAppendTime"]),
        "Whether record timestamps are the producer's or the broker's append time.",
    ),
    topic(
        "message.timestamp.before.max.ms",
        Some("log.message.timestamp.before.max.ms"),
        ConfigType::Long,
        LONG_MAX,
        Validator::AtLeast(0),
        "Largest allowed age of a CreateTime timestamp.",
    ),
    topic(
        "message.timestamp.after.max.ms",
        Some("log.message.timestamp.after.max.ms"),
        ConfigType::Long,
        "3600000",
        Validator::AtLeast(0),
        "Largest allowed future skew of a CreateTime timestamp.",
    ),
    topic(
        "min.cleanable.dirty.ratio",
        Some("log.cleaner.min.cleanable.ratio"),
        ConfigType::Double,
        "0.5",
        Validator::Between(0.0, 1.0),
        "Dirty ratio at which compaction runs.",
    ),
    topic(
        "min.compaction.lag.ms",
        Some("log.cleaner.min.compaction.lag.ms"),
        ConfigType::Long,
        "0",
        Validator::AtLeast(0),
        "Minimum age before a record may be compacted.",
    ),
    topic(
        "min.insync.replicas",
        Some("min.insync.replicas"),
        ConfigType::Int,
        "1",
        Validator::AtLeast(1),
        "Replicas that must acknowledge an acks=all write.",
    ),
    topic(
        "retention.bytes",
        Some("log.retention.bytes"),
        ConfigType::Long,
        "-1",
        Validator::AtLeast(-1),
        "Largest partition size before old segments are deleted; -1 for no limit.",
    ),
    topic(
        "retention.ms",
        Some("log.retention.ms"),
        ConfigType::Long,
        "604800000",
        Validator::AtLeast(-1),
        "Age after which old segments are deleted; -1 for no limit.",
    ),
    topic(
        "segment.bytes",
        Some("log.segment.bytes"),
        ConfigType::Int,
        "1073741824",
        Validator::AtLeast(SEGMENT_BYTES_MIN),
        "Segment file size at which a new segment is rolled.",
    ),
    topic(
        "segment.ms",
        Some("log.roll.ms"),
        ConfigType::Long,
        "604800000",
        Validator::AtLeast(1),
        "Age at which a new segment is rolled.",
    ),
    topic(
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
        ConfigType::Boolean,
        "false",
        Validator::Any,
        "Allow a replica outside the ISR to become leader.",
    ),
    topic(
        "write.caching",
        Some("write.caching"),
        ConfigType::Boolean,
        "false",
        Validator::Any,
        "Acknowledge acks=all before fsync; flush by flush.ms / flush.messages.",
    ),
];

/// One broker config weir accepts.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// Type.
    pub config_type: ConfigType,
    /// Default when nothing sets it.
    pub default: &'static str,
    /// Range or choice check.
    pub validator: Validator,
    /// One-line description.
    pub documentation: &'static str,
}

const fn broker(
    name: &'static str,
    config_type: ConfigType,
    default: &'static str,
    validator: Validator,
    documentation: &'static str,
) -> BrokerConfigDef {
    BrokerConfigDef { name, config_type, default, validator, documentation }
}

/// Broker-only configs (topic defaults come from the topic configs' broker synonyms).
pub const BROKER_CONFIGS: &[BrokerConfigDef] = &[
    broker("node.id", ConfigType::Int, "1", Validator::AtLeast(0), "This node's id."),
    broker("log.dirs", ConfigType::String, "./weir-data", Validator::Any, "Data directory (one directory)."),
    broker(
        "listeners",
        ConfigType::String,
        "PLAINTEXT://127.0.0.1:9092",
        Validator::Any,
        "Listeners, NAME://host:port,... (or one host:port); the first one not named in \
         controller.listener.names serves Kafka.",
    ),
    broker(
        "advertised.listeners",
        ConfigType::String,
        "",
        Validator::Any,
        "Addresses given to clients, NAME://host:port,...; defaults to the Kafka listener. Controller \
         listeners are never advertised.",
    ),
    // The three cluster keys are checked together when the node starts (weir-server's
    // `NodeConfig::from_settings`), which can name the fix for an inconsistent combination.
    broker(
        "process.roles",
        ConfigType::List,
        "broker,controller",
        Validator::Any,
        "Roles of this node: broker, controller, or both.",
    ),
    broker(
        "controller.quorum.voters",
        ConfigType::List,
        "",
        Validator::Any,
        "Controller quorum, id@host:port,...; empty means a single-node quorum of this node, in-process.",
    ),
    broker(
        "controller.listener.names",
        ConfigType::String,
        "CONTROLLER",
        Validator::Any,
        "Names of the listeners that serve the controller quorum, comma-separated.",
    ),
    broker(
        "broker.session.timeout.ms",
        ConfigType::Int,
        "9000",
        Validator::AtLeast(1),
        "A broker that has not heartbeat to the active controller for this long is fenced.",
    ),
    broker(
        "broker.heartbeat.interval.ms",
        ConfigType::Int,
        "2000",
        Validator::AtLeast(1),
        "How often a broker heartbeats to the active controller.",
    ),
    broker(
        "num.partitions",
        ConfigType::Int,
        "1",
        Validator::AtLeast(1),
        "Partitions of auto-created topics and of CreateTopics without a count.",
    ),
    broker(
        "default.replication.factor",
        ConfigType::Int,
        "1",
        Validator::AtLeast(1),
        "Replication factor of auto-created topics.",
    ),
    broker(
        "auto.create.topics.enable",
        ConfigType::Boolean,
        "true",
        Validator::Any,
        "Create topics on first produce or metadata request.",
    ),
    broker(
        "socket.request.max.bytes",
        ConfigType::Int,
        "104857600",
        Validator::AtLeast(1024),
        "Largest request frame; larger ones close the connection.",
    ),
    broker(
        "log.disk.reserve.bytes",
        ConfigType::Long,
        "268435456",
        Validator::AtLeast(0),
        "Free space kept on the data disk: produce fails with KAFKA_STORAGE_ERROR before it is used.",
    ),
    broker(
        "log.retention.check.interval.ms",
        ConfigType::Long,
        "300000",
        Validator::AtLeast(1),
        "How often retention runs.",
    ),
    broker(
        "log.cleaner.backoff.ms",
        ConfigType::Long,
        "15000",
        Validator::AtLeast(1),
        "How often the log cleaner looks for compacted partitions due for a pass.",
    ),
    broker(
        "auto.leader.rebalance.enable",
        ConfigType::Boolean,
        "true",
        Validator::Any,
        "The active controller moves leaderships back to preferred replicas when brokers lead too few of the partitions they prefer.",
    ),
    broker(
        "leader.imbalance.check.interval.seconds",
        ConfigType::Long,
        "300",
        Validator::AtLeast(1),
        "How often the active controller checks the leader balance.",
    ),
    broker(
        "leader.imbalance.per.broker.percentage",
        ConfigType::Int,
        "10",
        Validator::AtLeast(0),
        "The share of its preferred partitions a broker may not lead before leaderships move back to it.",
    ),
    broker(
        "replica.lag.time.max.ms",
        ConfigType::Long,
        "30000",
        Validator::AtLeast(1),
        "An ISR follower that has not caught up with the leader's log end for this long is removed from the ISR.",
    ),
    broker(
        "producer.id.expiration.ms",
        ConfigType::Long,
        "86400000",
        Validator::AtLeast(1),
        "An idempotent producer with no batch newer than this is forgotten by each partition; it may then start at any sequence.",
    ),
    broker(
        "offsets.topic.num.partitions",
        ConfigType::Int,
        "50",
        Validator::AtLeast(1),
        "Partitions of __consumer_offsets, the topic that holds consumer groups and their committed offsets, when it is created.",
    ),
    broker(
        "offsets.topic.replication.factor",
        ConfigType::Int,
        "3",
        Validator::AtLeast(1),
        "Replication factor of __consumer_offsets (fewer when fewer brokers are registered when it is created).",
    ),
    broker(
        "group.initial.rebalance.delay.ms",
        ConfigType::Int,
        "3000",
        Validator::AtLeast(0),
        "How long the first rebalance of an empty consumer group waits for more members to join.",
    ),
    broker(
        "group.min.session.timeout.ms",
        ConfigType::Int,
        "6000",
        Validator::AtLeast(1),
        "The smallest session timeout a consumer group member may ask for.",
    ),
    broker(
        "group.max.session.timeout.ms",
        ConfigType::Int,
        "1800000",
        Validator::AtLeast(1),
        "The largest session timeout a consumer group member may ask for.",
    ),
    broker(
        "group.max.size",
        ConfigType::Int,
        "2147483647",
        Validator::AtLeast(1),
        "Members a consumer group may have.",
    ),
    broker(
        "num.io.threads",
        ConfigType::Int,
        "0",
        Validator::AtLeast(0),
        "Runtime worker threads; 0 means one per core.",
    ),
];

/// A config that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a config weir knows.
    #[error("unknown config {name}")]
    Unknown {
        /// The name.
        name: String,
    },
    /// The value does not parse or fails its check.
    #[error("invalid value {value:?} for config {name}: {reason}")]
    InvalidValue {
        /// The config.
        name: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// Finds a topic config's definition.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|definition| definition.name == name)
}

/// Checks a value against a definition's type and validator.
///
/// # Errors
/// `InvalidValue` with the reason.
pub fn validate_value(
    name: &str,
    config_type: ConfigType,
    validator: Validator,
    value: &str,
) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidValue { name: name.to_owned(), value: value.to_owned(), reason };
    match config_type {
        ConfigType::Boolean => {
            if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") {
                return Err(invalid("expected true or false".into()));
            }
        }
        ConfigType::Int | ConfigType::Long => {
            let parsed: i64 = if config_type == ConfigType::Int {
                value.trim().parse::<i32>().map(i64::from).map_err(|error| invalid(error.to_string()))?
            } else {
                value.trim().parse::<i64>().map_err(|error| invalid(error.to_string()))?
            };
            if let Validator::AtLeast(minimum) = validator {
                if parsed < minimum {
                    return Err(invalid(format!("must be at least {minimum}")));
                }
            }
        }
        ConfigType::Double => {
            let parsed: f64 = value.trim().parse().map_err(|_| invalid("expected a number".into()))?;
            if let Validator::Between(low, high) = validator {
                if !(low..=high).contains(&parsed) {
                    return Err(invalid(format!("must be between {low} and {high}")));
                }
            }
        }
        ConfigType::String => {
            if let Validator::OneOf(allowed) = validator {
                if !allowed.contains(&value) {
                    return Err(invalid(format!("must be one of {}", allowed.join(", "))));
                }
            }
        }
        ConfigType::List => {
            if let Validator::ListOf(allowed) = validator {
                let items: Vec<&str> = value.split(',').map(str::trim).collect();
                if items.iter().any(|item| !allowed.contains(item)) || value.trim().is_empty() {
                    return Err(invalid(format!("must be a list of {}", allowed.join(", "))));
                }
            }
        }
    }
    Ok(())
}

/// Validates a topic config by name.
///
/// # Errors
/// `Unknown` or `InvalidValue`.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let definition = topic_config(name).ok_or_else(|| ConfigError::Unknown { name: name.to_owned() })?;
    validate_value(name, definition.config_type, definition.validator, value)
}

/// One effective topic config value with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveConfig {
    /// The definition.
    pub name: &'static str,
    /// The value in force.
    pub value: String,
    /// Where it came from.
    pub source: ConfigSource,
}

/// Resolves every topic config: topic override, then the broker's static synonym, then the
/// default. `broker_static` holds the broker configs set explicitly (file, flags, env).
pub fn effective_topic_configs(
    overrides: Option<&BTreeMap<String, String>>,
    broker_static: &BTreeMap<String, String>,
) -> Vec<EffectiveConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|definition| {
            if let Some(value) = overrides.and_then(|overrides| overrides.get(definition.name)) {
                return EffectiveConfig {
                    name: definition.name,
                    value: value.clone(),
                    source: ConfigSource::DynamicTopic,
                };
            }
            if let Some(value) = definition.broker_synonym.and_then(|synonym| broker_static.get(synonym)) {
                return EffectiveConfig {
                    name: definition.name,
                    value: value.clone(),
                    source: ConfigSource::StaticBroker,
                };
            }
            EffectiveConfig {
                name: definition.name,
                value: definition.default.to_owned(),
                source: ConfigSource::Default,
            }
        })
        .collect()
}

/// Typed view of the topic configs the log and broker act on.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    /// `segment.bytes`.
    pub segment_bytes: u64,
    /// `segment.ms`.
    pub segment_ms: i64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: u64,
    /// `retention.ms`.
    pub retention_ms: i64,
    /// `retention.bytes`.
    pub retention_bytes: i64,
    /// `max.message.bytes`.
    pub max_message_bytes: usize,
    /// `message.timestamp.type` is `LogAppendTime`.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    pub message_timestamp_after_max_ms: i64,
    /// `write.caching`.
    pub write_caching: bool,
    /// `flush.ms`.
    pub flush_ms: i64,
    /// `flush.messages`.
    pub flush_messages: i64,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// `cleanup.policy` holds `delete`.
    pub delete: bool,
    /// `cleanup.policy` holds `compact`.
    pub compact: bool,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
}

impl TopicSettings {
    /// Builds the typed settings from effective values (which are validated, so parsing cannot
    /// fail; a value that somehow does falls back to the default).
    pub fn from_effective(effective: &[EffectiveConfig]) -> TopicSettings {
        let get = |name: &str| -> &str {
            effective.iter().find(|config| config.name == name).map_or_else(
                || topic_config(name).map_or("", |definition| definition.default),
                |config| config.value.as_str(),
            )
        };
        let long = |name: &str| -> i64 {
            get(name).trim().parse().unwrap_or_else(|_| {
                topic_config(name).and_then(|definition| definition.default.parse().ok()).unwrap_or(0)
            })
        };
        TopicSettings {
            segment_bytes: long("segment.bytes").max(SEGMENT_BYTES_MIN) as u64,
            segment_ms: long("segment.ms"),
            index_interval_bytes: long("index.interval.bytes").max(0) as u64,
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            max_message_bytes: long("max.message.bytes").max(0) as usize,
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            message_timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            message_timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
            write_caching: get("write.caching").eq_ignore_ascii_case("true"),
            flush_ms: long("flush.ms"),
            flush_messages: long("flush.messages"),
            min_insync_replicas: i32::try_from(long("min.insync.replicas")).unwrap_or(1),
            delete: get("cleanup.policy").split(',').any(|policy| policy.trim() == "delete"),
            compact: get("cleanup.policy").split(',').any(|policy| policy.trim() == "compact"),
            delete_retention_ms: long("delete.retention.ms"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio").trim().parse().unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_validation() {
        for definition in TOPIC_CONFIGS {
            validate_value(definition.name, definition.config_type, definition.validator, definition.default)
                .unwrap_or_else(|error| panic!("{}: {error}", definition.name));
        }
        for definition in BROKER_CONFIGS {
            validate_value(definition.name, definition.config_type, definition.validator, definition.default)
                .unwrap_or_else(|error| panic!("{}: {error}", definition.name));
        }
    }

    #[test]
    fn bad_values_and_names_are_refused_with_reasons() {
        assert!(matches!(validate_topic_config("retention.msx", "1"), Err(ConfigError::Unknown { .. })));
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("segment.bytes", "3000000000").is_err(), "Int overflow");
        assert!(validate_topic_config("cleanup.policy", "delete,compact").is_ok());
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
        assert!(validate_topic_config("write.caching", "yes").is_err());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn sources_resolve_topic_then_broker_then_default() {
        let overrides = BTreeMap::from([("retention.ms".to_owned(), "5".to_owned())]);
        let broker = BTreeMap::from([
            ("log.retention.ms".to_owned(), "6".to_owned()),
            ("log.segment.bytes".to_owned(), "2048".to_owned()),
        ]);
        let effective = effective_topic_configs(Some(&overrides), &broker);
        let find = |name| effective.iter().find(|config| config.name == name).expect("present").clone();
        assert_eq!((find("retention.ms").value, find("retention.ms").source), ("5".into(), ConfigSource::DynamicTopic));
        assert_eq!(find("segment.bytes").source, ConfigSource::StaticBroker);
        assert_eq!(find("segment.ms").source, ConfigSource::Default);
        let settings = TopicSettings::from_effective(&effective);
        assert_eq!((settings.retention_ms, settings.segment_bytes), (5, 2048));
        assert!(!settings.write_caching);
    }
}
