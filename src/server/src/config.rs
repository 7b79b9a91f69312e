//! Node configuration: Kafka's broker config names with embedded defaults, overridable by a
//! TOML file (dots become underscores: `num_partitions = 3`), `WEIR_*` environment variables
//! (`WEIR_NUM_PARTITIONS=3`) and flags (`--num-partitions 3`), in increasing precedence.
//! Every value is validated against its type and range before the node starts.
//!
//! A cluster is described with Kafka's KRaft keys: `process.roles`, `controller.quorum.voters`,
//! `controller.listener.names` and named `listeners` (`PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093`).
//! [`NodeConfig::from_settings`] checks them together, so an inconsistent combination stops the
//! start with a message that names the key and the fix. With none of them set the node is the
//! zero-config single node: a broker and the only voter of an in-process controller quorum.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use metadata::config::{validate_value, ConfigType, Validator, BROKER_CONFIGS, TOPIC_CONFIGS};
use protocol::ids::NodeId;

/// Most voters `controller.quorum.voters` may list. A Raft quorum of more than nine voters
/// only slows commits down (every entry waits for a majority) without surviving more
/// failures than operators plan for; Kafka deployments use three or five.
pub const CONTROLLER_VOTERS_MAX: u32 = 9;
const _: () = assert!(CONTROLLER_VOTERS_MAX >= 1);

/// The listener name a bare `host:port` listener gets, as in Kafka.
pub const LISTENER_NAME_DEFAULT: &str = "PLAINTEXT";

/// Where a config value came from, highest precedence last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file.
    File,
    /// A `WEIR_*` environment variable.
    Environment,
    /// A command-line flag.
    Flag,
}

/// A config problem, reported before the node starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: Box<toml::de::Error>,
    },
    /// A key nobody knows.
    #[error("unknown config `{key}` (from {origin:?}); `weir server --help` lists every config")]
    Unknown {
        /// The key as written.
        key: String,
        /// Where it came from.
        origin: Origin,
    },
    /// A value that fails its check.
    #[error("{origin:?}: {source}")]
    Invalid {
        /// Where it came from.
        origin: Origin,
        /// What is wrong.
        source: metadata::config::ConfigError,
    },
    /// A flag without a value.
    #[error("flag {flag} needs a value")]
    MissingValue {
        /// The flag.
        flag: String,
    },
    /// A `listeners` or `advertised.listeners` entry that is not `NAME://host:port` or `host:port`.
    #[error("{key}: `{value}` is not NAME://host:port or host:port (for example PLAINTEXT://127.0.0.1:9092)")]
    Listener {
        /// `listeners` or `advertised.listeners`.
        key: &'static str,
        /// The entry as written.
        value: String,
    },
    /// Two entries of one listener list share a name.
    #[error("{key} names listener {name} twice: give each listener its own name (PLAINTEXT://...,CONTROLLER://...)")]
    DuplicateListener {
        /// `listeners` or `advertised.listeners`.
        key: &'static str,
        /// The repeated name.
        name: String,
    },
    /// Two listeners would bind one port (Kafka requires a port per listener).
    #[error("listeners {first} and {second} both use port {port}: give each listener its own port")]
    ListenerPortClash {
        /// The earlier listener's name.
        first: String,
        /// The later listener's name.
        second: String,
        /// The shared port.
        port: u16,
    },
    /// Every listener is a controller listener, so Kafka clients have nowhere to connect.
    #[error(
        "listeners has no Kafka listener (each one is named in controller.listener.names = \"{controller_listener_names}\"): \
         add one such as PLAINTEXT://127.0.0.1:9092"
    )]
    NoKafkaListener {
        /// `controller.listener.names` as written.
        controller_listener_names: String,
    },
    /// Heartbeats no more often than sessions expire.
    #[error(
        "broker.heartbeat.interval.ms ({heartbeat_interval_ms}) must be below broker.session.timeout.ms ({session_timeout_ms}), \
         or every broker is fenced between two heartbeats"
    )]
    HeartbeatNotBelowSession {
        /// The interval.
        heartbeat_interval_ms: u64,
        /// The timeout.
        session_timeout_ms: u64,
    },
    /// A `process.roles` entry that is neither `broker` nor `controller`.
    #[error("process.roles: unknown role `{role}`: the roles are broker and controller (for example process.roles = \"broker,controller\")")]
    UnknownRole {
        /// The entry as written.
        role: String,
    },
    /// A role listed twice in `process.roles`.
    #[error(
        "process.roles lists {role} twice: list each role once (for example process.roles = \"broker,controller\")"
    )]
    DuplicateRole {
        /// The repeated role.
        role: String,
    },
    /// `process.roles` with no role.
    #[error("process.roles is empty: set it to broker, controller, or broker,controller")]
    EmptyRoles,
    /// A `controller.quorum.voters` entry that is not `id@host:port`.
    #[error("controller.quorum.voters: `{entry}` is not id@host:port (for example 1@127.0.0.1:9093)")]
    MalformedVoter {
        /// The entry as written.
        entry: String,
    },
    /// One node id listed twice in `controller.quorum.voters`.
    #[error("controller.quorum.voters lists node {node_id} twice: each voter needs its own node.id")]
    DuplicateVoter {
        /// The repeated id.
        node_id: NodeId,
    },
    /// More voters than [`CONTROLLER_VOTERS_MAX`].
    #[error("controller.quorum.voters lists {count} voters, more than the maximum of {max}: use 3 or 5")]
    TooManyVoters {
        /// How many were listed.
        count: u32,
        /// [`CONTROLLER_VOTERS_MAX`].
        max: u32,
    },
    /// A controller whose `node.id` is not a voter: it could never vote or lead.
    #[error(
        "node.id {node_id} has the controller role but is not in controller.quorum.voters ({voters}): \
         add {node_id}@host:port to the voters, or set process.roles = \"broker\""
    )]
    ControllerNotVoter {
        /// This node's id.
        node_id: NodeId,
        /// `controller.quorum.voters` as written.
        voters: String,
    },
    /// A voter without the controller role: the quorum would count a node that never votes.
    #[error(
        "node.id {node_id} is in controller.quorum.voters but process.roles has no controller role: \
         set process.roles = \"broker,controller\", or remove {node_id} from the voters"
    )]
    VoterWithoutControllerRole {
        /// This node's id.
        node_id: NodeId,
    },
    /// A controller of a multi-node quorum with no listener for the other voters to reach.
    #[error(
        "node.id {node_id} is a controller of a {count}-voter quorum but no listener is named in \
         controller.listener.names (\"{controller_listener_names}\"): add one to listeners, \
         such as CONTROLLER://0.0.0.0:9093"
    )]
    NoControllerListener {
        /// This node's id.
        node_id: NodeId,
        /// How many voters the quorum has.
        count: u32,
        /// `controller.listener.names` as written.
        controller_listener_names: String,
    },
    /// A broker-only node without voters: there is no quorum for it to join.
    #[error(
        "process.roles = \"broker\" needs a controller quorum, but controller.quorum.voters is empty: \
         list the controllers as id@host:port,... or add the controller role"
    )]
    BrokerWithoutQuorum,
    /// A broker-only node binding a controller listener, which nothing would serve.
    #[error(
        "process.roles = \"broker\" but listeners has the controller listener {name}: \
         remove it from listeners, or add the controller role"
    )]
    ControllerListenerWithoutRole {
        /// The controller listener's name.
        name: String,
    },
}

/// Type and validator of any accepted config, broker-only or topic-default synonym.
fn definition(name: &str) -> Option<(ConfigType, Validator)> {
    if let Some(definition) = BROKER_CONFIGS.iter().find(|definition| definition.name == name) {
        return Some((definition.config_type, definition.validator));
    }
    TOPIC_CONFIGS
        .iter()
        .find(|definition| definition.broker_synonym == Some(name))
        .map(|definition| (definition.config_type, definition.validator))
}

/// Every accepted config name with its default and documentation, for `--help`.
pub fn describe_all() -> Vec<(String, String, String)> {
    let mut all: Vec<(String, String, String)> = BROKER_CONFIGS
        .iter()
        .map(|definition| {
            (definition.name.to_owned(), definition.default.to_owned(), definition.documentation.to_owned())
        })
        .collect();
    for definition in TOPIC_CONFIGS {
        if let Some(synonym) = definition.broker_synonym {
            if !all.iter().any(|(name, _, _)| name == synonym) {
                all.push((
                    synonym.to_owned(),
                    definition.default.to_owned(),
                    format!("Default of topic config {}: {}", definition.name, definition.documentation),
                ));
            }
        }
    }
    all.sort();
    all
}

/// The explicitly set configs, by Kafka name, after layering file, environment and flags.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

fn toml_value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Array(items) => items.iter().map(toml_value_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl Settings {
    fn set(&mut self, key: &str, value: String, origin: Origin) -> Result<(), ConfigError> {
        let name = key.replace(['_', '-'], ".");
        let (config_type, validator) =
            definition(&name).ok_or_else(|| ConfigError::Unknown { key: key.to_owned(), origin })?;
        validate_value(&name, config_type, validator, &value)
            .map_err(|source| ConfigError::Invalid { origin, source })?;
        let _ = self.values.insert(name, value);
        Ok(())
    }

    /// Layers a TOML file.
    ///
    /// # Errors
    /// Read, parse, unknown key or invalid value.
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let table: toml::Table =
            text.parse().map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        for (key, value) in table {
            self.set(&key, toml_value_text(&value), Origin::File)?;
        }
        Ok(())
    }

    /// Layers `WEIR_*` variables (`WEIR_LOG_RETENTION_MS`), skipping `WEIR_LOG` and
    /// `WEIR_CONFIG`, which configure the process rather than the node.
    ///
    /// # Errors
    /// Unknown key or invalid value.
    pub fn load_environment(&mut self, variables: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (key, value) in variables {
            let Some(name) = key.strip_prefix("WEIR_") else { continue };
            if matches!(name, "LOG" | "CONFIG" | "PLANTED_BUG" | "BOOTSTRAP_SERVER") {
                continue;
            }
            self.set(&name.to_ascii_lowercase(), value, Origin::Environment)?;
        }
        Ok(())
    }

    /// Layers flags: `--num-partitions 3` or `--num-partitions=3`.
    ///
    /// # Errors
    /// Unknown flag, missing value or invalid value.
    pub fn load_flags(&mut self, flags: &[String]) -> Result<(), ConfigError> {
        let mut iter = flags.iter();
        while let Some(flag) = iter.next() {
            let Some(body) = flag.strip_prefix("--") else {
                return Err(ConfigError::Unknown { key: flag.clone(), origin: Origin::Flag });
            };
            let (key, value) = match body.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None => {
                    let value = iter.next().ok_or_else(|| ConfigError::MissingValue { flag: flag.clone() })?;
                    (body.to_owned(), value.clone())
                }
            };
            self.set(&key, value, Origin::Flag)?;
        }
        Ok(())
    }

    /// The value in force: set, or the default.
    pub fn get(&self, name: &str) -> String {
        if let Some(value) = self.values.get(name) {
            return value.clone();
        }
        BROKER_CONFIGS
            .iter()
            .find(|definition| definition.name == name)
            .map(|definition| definition.default.to_owned())
            .or_else(|| {
                TOPIC_CONFIGS
                    .iter()
                    .find(|definition| definition.broker_synonym == Some(name))
                    .map(|definition| definition.default.to_owned())
            })
            .unwrap_or_default()
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> T {
        self.get(name).trim().parse().unwrap_or_else(|_| panic!("{name} was validated as a number"))
    }

    /// The explicitly set values.
    pub fn explicit(&self) -> &BTreeMap<String, String> {
        &self.values
    }
}

/// One entry of `listeners` or `advertised.listeners`: an address under a listener name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Kafka's listener name, upper-cased as Kafka normalises it (`PLAINTEXT`, `CONTROLLER`);
    /// [`LISTENER_NAME_DEFAULT`] for a bare `host:port`. Names tell the Kafka listener from the
    /// controller listener, so they are unique within a list.
    pub name: String,
    /// Host or IP address, without IPv6 brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Parses one listener, `NAME://host:port` or `host:port`, for the config `key`.
fn parse_listener_entry(key: &'static str, entry: &str) -> Result<Listener, ConfigError> {
    let invalid = || ConfigError::Listener { key, value: entry.to_owned() };
    let trimmed = entry.trim();
    let (name, address) = trimmed.split_once("://").unwrap_or((LISTENER_NAME_DEFAULT, trimmed));
    // Kafka's listener-name grammar: a letter, then letters, digits and underscores.
    let name_valid = name.starts_with(|first: char| first.is_ascii_alphabetic())
        && name.chars().all(|character| character.is_ascii_alphanumeric() || character == '_');
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !name_valid || host.is_empty() {
        return Err(invalid());
    }
    Ok(Listener { name: name.to_ascii_uppercase(), host: host.to_owned(), port })
}

/// Parses a listener list, `NAME://host:port,NAME://host:port` (a bare `host:port` is named
/// [`LISTENER_NAME_DEFAULT`]), for the config `key`.
///
/// # Errors
/// `Listener` for an empty list or a malformed entry, `DuplicateListener` for a repeated name.
pub fn parse_listeners(key: &'static str, value: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut listeners: Vec<Listener> = Vec::new();
    for entry in value.split(',') {
        let listener = parse_listener_entry(key, entry)?;
        if listeners.iter().any(|earlier| earlier.name == listener.name) {
            return Err(ConfigError::DuplicateListener { key, name: listener.name });
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Splits one listener, `host:port` or `NAME://host:port`, into host and port.
///
/// # Errors
/// `Listener` if it is neither.
pub fn parse_listener(value: &str) -> Result<(String, u16), ConfigError> {
    parse_listener_entry("listeners", value).map(|listener| (listener.host, listener.port))
}

/// `controller.listener.names`, upper-cased like listener names, blanks dropped.
fn parse_listener_names(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_ascii_uppercase).collect()
}

/// What a node does (`process.roles`): serve Kafka clients, vote in the controller quorum, or
/// both.
///
/// Invariant: at least one is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves the Kafka API: produce, fetch, metadata, groups.
    pub broker: bool,
    /// Votes in the controller quorum and may lead it.
    pub controller: bool,
}

impl Roles {
    /// Parses `process.roles`: a comma list of `broker` and `controller`, each at most once.
    ///
    /// # Errors
    /// `UnknownRole`, `DuplicateRole`, `EmptyRoles`.
    pub fn parse(value: &str) -> Result<Roles, ConfigError> {
        let mut roles = Roles { broker: false, controller: false };
        for role in value.split(',').map(str::trim).filter(|role| !role.is_empty()) {
            let slot = if role.eq_ignore_ascii_case("broker") {
                &mut roles.broker
            } else if role.eq_ignore_ascii_case("controller") {
                &mut roles.controller
            } else {
                return Err(ConfigError::UnknownRole { role: role.to_owned() });
            };
            if *slot {
                return Err(ConfigError::DuplicateRole { role: role.to_ascii_lowercase() });
            }
            *slot = true;
        }
        if !roles.broker && !roles.controller {
            return Err(ConfigError::EmptyRoles);
        }
        Ok(roles)
    }
}

/// One member of the controller quorum, from `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// The voter's `node.id`.
    pub node_id: NodeId,
    /// Host of its controller listener, without IPv6 brackets.
    pub host: String,
    /// Port of its controller listener.
    pub port: u16,
}

impl Voter {
    /// `host:port`, with brackets around an IPv6 host, ready to connect to.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `controller.quorum.voters`: `id@host:port,...`, or empty.
///
/// # Errors
/// `MalformedVoter`, `DuplicateVoter`, `TooManyVoters`.
pub fn parse_voters(value: &str) -> Result<Vec<Voter>, ConfigError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut voters: Vec<Voter> = Vec::new();
    for entry in value.split(',') {
        let malformed = || ConfigError::MalformedVoter { entry: entry.trim().to_owned() };
        let (node_id, address) = entry.trim().split_once('@').ok_or_else(malformed)?;
        let node_id = node_id.parse::<i32>().ok().filter(|node_id| *node_id >= 0).ok_or_else(malformed)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(malformed)?;
        let port = port.parse::<u16>().ok().filter(|port| *port != 0).ok_or_else(malformed)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(malformed());
        }
        let node_id = NodeId(node_id);
        if voters.iter().any(|voter| voter.node_id == node_id) {
            return Err(ConfigError::DuplicateVoter { node_id });
        }
        voters.push(Voter { node_id, host: host.to_owned(), port });
    }
    let count = u32::try_from(voters.len()).unwrap_or(u32::MAX);
    if count > CONTROLLER_VOTERS_MAX {
        return Err(ConfigError::TooManyVoters { count, max: CONTROLLER_VOTERS_MAX });
    }
    Ok(voters)
}

/// The validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// What the broker runs with.
    pub broker: broker::BrokerConfig,
    /// Address to bind the Kafka listener to: the first listener whose name is not in
    /// `controller.listener.names`.
    pub listen_host: String,
    /// Port to bind.
    pub listen_port: u16,
    /// Runtime worker threads (0 = one per core).
    pub worker_threads: usize,
    /// `process.roles`.
    ///
    /// Default: broker and controller.
    pub roles: Roles,
    /// Host and port to bind the controller listener to: the first listener named in
    /// `controller.listener.names`. Present exactly when the node is a controller and
    /// `listeners` has such a listener, which a controller of a non-empty `voters` must have
    /// (other voters reach it there). `None` for the zero-config single node, whose quorum
    /// runs in-process.
    ///
    /// Default: `None`.
    pub controller_listen: Option<(String, u16)>,
    /// `controller.quorum.voters`, in the order written. Empty means a single-node quorum made
    /// of this node alone, in-process, with no controller listener. When not empty and the node
    /// is a controller, its `node.id` is among them; when it is broker-only, it is not.
    ///
    /// Default: empty. Range: at most [`CONTROLLER_VOTERS_MAX`] voters, distinct ids.
    pub voters: Vec<Voter>,
    /// `broker.session.timeout.ms`: the active controller fences a broker that has not
    /// heartbeat for this long.
    ///
    /// Default: 9000. Range: above `broker.heartbeat.interval.ms`.
    pub session_timeout_ms: u64,
    /// `auto.leader.rebalance.enable` with `leader.imbalance.check.interval.seconds` (as ms)
    /// and `leader.imbalance.per.broker.percentage`: how the active controller moves
    /// leaderships back to preferred replicas; `None` when disabled.
    ///
    /// Default: every 300 s, above 10%.
    pub leader_rebalance: Option<(u64, u32)>,
}

impl NodeConfig {
    /// Derives the typed config and checks the cluster keys against each other.
    ///
    /// # Errors
    /// A bad listener, role or voter, or an inconsistent combination of them; each error
    /// names the key and the fix.
    pub fn from_settings(settings: &Settings) -> Result<NodeConfig, ConfigError> {
        let node_id = NodeId(settings.number("node.id"));
        let roles = Roles::parse(&settings.get("process.roles"))?;
        let voters_text = settings.get("controller.quorum.voters");
        let voters = parse_voters(&voters_text)?;
        let controller_names_text = settings.get("controller.listener.names");
        let controller_names = parse_listener_names(&controller_names_text);
        let is_controller_listener = |listener: &Listener| controller_names.contains(&listener.name);

        let listeners = parse_listeners("listeners", &settings.get("listeners"))?;
        for (index, listener) in listeners.iter().enumerate() {
            // Port 0 asks the OS for any free port, so it cannot clash.
            let clash = listeners[..index].iter().find(|earlier| earlier.port == listener.port && listener.port != 0);
            if let Some(earlier) = clash {
                return Err(ConfigError::ListenerPortClash {
                    first: earlier.name.clone(),
                    second: listener.name.clone(),
                    port: listener.port,
                });
            }
        }
        // A controller-only node serves no clients, so it needs no Kafka listener.
        let kafka = listeners.iter().find(|listener| !is_controller_listener(listener));
        if kafka.is_none() && roles.broker {
            return Err(ConfigError::NoKafkaListener { controller_listener_names: controller_names_text.clone() });
        }
        let controller = listeners.iter().find(|listener| is_controller_listener(listener));
        validate_quorum(node_id, roles, &voters, &voters_text, controller, &controller_names_text)?;
        let controller_listen =
            controller.filter(|_| roles.controller).map(|listener| (listener.host.clone(), listener.port));

        let (listen_host, listen_port) = kafka.map_or((String::new(), 0), |kafka| (kafka.host.clone(), kafka.port));
        let advertised = settings.get("advertised.listeners");
        let advertised = if advertised.trim().is_empty() {
            Vec::new()
        } else {
            parse_listeners("advertised.listeners", &advertised)?
        };
        // Controller listeners are never advertised to clients. Prefer the entry named like
        // the Kafka listener, as Kafka pairs them by name.
        let client_facing: Vec<&Listener> =
            advertised.iter().filter(|listener| !is_controller_listener(listener)).collect();
        let chosen = client_facing
            .iter()
            .find(|listener| kafka.is_some_and(|kafka| listener.name == kafka.name))
            .or(client_facing.first());
        let (advertised_host, advertised_port) = match chosen {
            Some(listener) => (listener.host.clone(), listener.port),
            None if listen_host == "0.0.0.0" || listen_host == "::" => ("127.0.0.1".to_owned(), listen_port),
            None => (listen_host.clone(), listen_port),
        };
        let broker = broker::BrokerConfig {
            node_id,
            data_dir: PathBuf::from(settings.get("log.dirs")),
            advertised_host,
            advertised_port,
            socket_request_max_bytes: settings.number("socket.request.max.bytes"),
            auto_create_topics_enable: settings.get("auto.create.topics.enable").eq_ignore_ascii_case("true"),
            num_partitions: settings.number("num.partitions"),
            default_replication_factor: settings.number("default.replication.factor"),
            log_disk_reserve_bytes: settings.number("log.disk.reserve.bytes"),
            log_retention_check_interval_ms: settings.number("log.retention.check.interval.ms"),
            log_cleaner_backoff_ms: settings.number("log.cleaner.backoff.ms"),
            replica_lag_time_max_ms: settings.number("replica.lag.time.max.ms"),
            producer_id_expiration_ms: settings.number("producer.id.expiration.ms"),
            offsets_topic_num_partitions: settings.number("offsets.topic.num.partitions"),
            offsets_topic_replication_factor: i16::try_from(settings.number::<i32>("offsets.topic.replication.factor"))
                .unwrap_or(i16::MAX),
            groups: coordinator::CoordinatorConfig {
                group_min_session_timeout_ms: settings.number("group.min.session.timeout.ms"),
                group_max_session_timeout_ms: settings.number("group.max.session.timeout.ms"),
                group_initial_rebalance_delay_ms: settings.number("group.initial.rebalance.delay.ms"),
                group_max_size: settings.number("group.max.size"),
            },
            static_configs: settings.explicit().clone(),
            cluster: (!voters.is_empty()).then(|| broker::ClusterConfig {
                voters: voters.iter().map(|voter| (voter.node_id.0 as u64, voter.address())).collect(),
                heartbeat_interval_ms: settings.number("broker.heartbeat.interval.ms"),
                image_observer: None,
                replica_observer: None,
            }),
        };
        let session_timeout_ms: u64 = settings.number("broker.session.timeout.ms");
        if broker.cluster.as_ref().is_some_and(|cluster| cluster.heartbeat_interval_ms >= session_timeout_ms) {
            return Err(ConfigError::HeartbeatNotBelowSession {
                heartbeat_interval_ms: broker.cluster.as_ref().map_or(0, |cluster| cluster.heartbeat_interval_ms),
                session_timeout_ms,
            });
        }
        let leader_rebalance = settings.get("auto.leader.rebalance.enable").eq_ignore_ascii_case("true").then(|| {
            let interval_s: u64 = settings.number("leader.imbalance.check.interval.seconds");
            (interval_s.saturating_mul(1_000), settings.number("leader.imbalance.per.broker.percentage"))
        });
        Ok(NodeConfig {
            leader_rebalance,
            session_timeout_ms,
            broker,
            listen_host,
            listen_port,
            worker_threads: settings.number("num.io.threads"),
            roles,
            controller_listen,
            voters,
        })
    }
}

/// Checks that roles, voters and the controller listener describe a quorum this node can
/// take part in (Kafka's KRaft rules).
fn validate_quorum(
    node_id: NodeId,
    roles: Roles,
    voters: &[Voter],
    voters_text: &str,
    controller: Option<&Listener>,
    controller_names_text: &str,
) -> Result<(), ConfigError> {
    let is_voter = voters.iter().any(|voter| voter.node_id == node_id);
    if roles.controller {
        if voters.is_empty() {
            // The zero-config single node: its quorum is itself, in-process.
            return Ok(());
        }
        if !is_voter {
            return Err(ConfigError::ControllerNotVoter { node_id, voters: voters_text.trim().to_owned() });
        }
        if controller.is_none() {
            return Err(ConfigError::NoControllerListener {
                node_id,
                count: u32::try_from(voters.len()).unwrap_or(u32::MAX),
                controller_listener_names: controller_names_text.to_owned(),
            });
        }
        return Ok(());
    }
    if voters.is_empty() {
        return Err(ConfigError::BrokerWithoutQuorum);
    }
    if is_voter {
        return Err(ConfigError::VoterWithoutControllerRole { node_id });
    }
    if let Some(listener) = controller {
        return Err(ConfigError::ControllerListenerWithoutRole { name: listener.name.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_environment_and_flags_layer_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "num_partitions = 3\nlog_retention_ms = 1000\nlisteners = \"127.0.0.1:19092\"\n")
            .expect("write");
        let mut settings = Settings::default();
        settings.load_file(&path).expect("file");
        settings
            .load_environment(
                [("WEIR_NUM_PARTITIONS".to_owned(), "4".to_owned()), ("HOME".to_owned(), "/".to_owned())].into_iter(),
            )
            .expect("env");
        settings.load_flags(&["--log-retention-ms".to_owned(), "2000".to_owned()]).expect("flags");
        let config = NodeConfig::from_settings(&settings).expect("valid");
        assert_eq!(config.broker.num_partitions, 4);
        assert_eq!(config.listen_port, 19092);
        assert_eq!(config.broker.static_configs["log.retention.ms"], "2000");
        assert_eq!((config.broker.advertised_host.as_str(), config.broker.advertised_port), ("127.0.0.1", 19092));
    }

    #[test]
    fn bad_configs_get_clear_errors() {
        let mut settings = Settings::default();
        let error = settings.load_flags(&["--num-partition".to_owned(), "3".to_owned()]).expect_err("unknown");
        assert!(error.to_string().contains("num-partition"), "{error}");
        let error = settings.load_flags(&["--num-partitions=0".to_owned()]).expect_err("range");
        assert!(error.to_string().contains("at least 1"), "{error}");
        assert!(settings.load_flags(&["--auto-create-topics-enable".to_owned()]).is_err());
        let error = settings
            .load_environment([("WEIR_LOG_SEGMENT_BYTES".to_owned(), "ten".to_owned())].into_iter())
            .expect_err("type");
        assert!(error.to_string().contains("log.segment.bytes"), "{error}");
        assert!(parse_listener("nohost").is_err());
        assert!(parse_listener("PLAINTEXT://h:1").is_ok());
        assert_eq!(parse_listener("[::1]:9092").expect("IPv6"), ("::1".to_owned(), 9092));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "num_partitions = [").expect("write");
        assert!(matches!(Settings::default().load_file(&path), Err(ConfigError::Parse { .. })));
    }

    /// A node config from Kafka-named settings, as flags.
    fn node_config(settings: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        let flags: Vec<String> = settings
            .iter()
            .flat_map(|(key, value)| [format!("--{}", key.replace('.', "-")), (*value).to_owned()])
            .collect();
        let mut layered = Settings::default();
        layered.load_flags(&flags).expect("each value passes its own type check");
        NodeConfig::from_settings(&layered)
    }

    const VOTERS_3: &str = "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097";

    /// The settings of voter `id` of the three-voter example.
    fn voter_settings(id: &'static str, kafka_port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("node.id", id.to_owned()),
            ("process.roles", "broker,controller".to_owned()),
            ("controller.quorum.voters", VOTERS_3.to_owned()),
            ("listeners", format!("PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{}", kafka_port + 1)),
        ]
    }

    fn expect_error(settings: &[(&str, &str)], mentions: &[&str]) -> ConfigError {
        let error = node_config(settings).expect_err("the config is refused");
        let message = error.to_string();
        for text in mentions {
            assert!(message.contains(text), "`{message}` should mention `{text}`");
        }
        error
    }

    #[test]
    fn single_node_default_is_its_own_in_process_quorum() {
        let config = node_config(&[]).expect("the zero-config node is valid");
        assert_eq!(config.roles, Roles { broker: true, controller: true });
        assert!(config.voters.is_empty());
        assert_eq!(config.controller_listen, None);
        assert_eq!((config.listen_host.as_str(), config.listen_port), ("127.0.0.1", 9092));
        assert_eq!((config.broker.advertised_host.as_str(), config.broker.advertised_port), ("127.0.0.1", 9092));
        // A bare host:port still works, and 0.0.0.0 is advertised as loopback.
        let config = node_config(&[("listeners", "0.0.0.0:19092")]).expect("valid");
        assert_eq!((config.broker.advertised_host.as_str(), config.broker.advertised_port), ("127.0.0.1", 19092));
    }

    #[test]
    fn three_voter_cluster_configs_are_valid() {
        for (id, kafka_port) in [("1", 9092), ("2", 9094), ("3", 9096)] {
            let settings = voter_settings(id, kafka_port);
            let settings: Vec<(&str, &str)> = settings.iter().map(|(key, value)| (*key, value.as_str())).collect();
            let config = node_config(&settings).expect("a voter of the example is valid");
            assert_eq!(config.roles, Roles { broker: true, controller: true });
            assert_eq!(config.listen_port, kafka_port);
            assert_eq!(config.controller_listen, Some(("127.0.0.1".to_owned(), kafka_port + 1)));
            assert_eq!(config.broker.advertised_port, kafka_port, "the controller listener is not advertised");
            let ids: Vec<i32> = config.voters.iter().map(|voter| voter.node_id.0).collect();
            assert_eq!(ids, [1, 2, 3]);
            assert_eq!(config.voters[1].address(), "127.0.0.1:9095");
        }
        // A fourth node that is only a broker joins the same quorum.
        let config = node_config(&[
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", VOTERS_3),
            ("listeners", "PLAINTEXT://0.0.0.0:9098"),
            ("advertised.listeners", "CONTROLLER://ignored:1,PLAINTEXT://broker4.example:9098"),
        ])
        .expect("a broker-only node is valid");
        assert_eq!(config.roles, Roles { broker: true, controller: false });
        assert_eq!(config.controller_listen, None);
        assert_eq!((config.broker.advertised_host.as_str(), config.broker.advertised_port), ("broker4.example", 9098));
        // A controller-only voter needs only its controller listener.
        let config = node_config(&[
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("controller.quorum.voters", VOTERS_3),
            ("listeners", "CONTROLLER://127.0.0.1:9093"),
        ])
        .expect("a controller-only node is valid");
        assert_eq!(config.roles, Roles { broker: false, controller: true });
        assert_eq!(config.controller_listen, Some(("127.0.0.1".to_owned(), 9093)));
    }

    #[test]
    fn kafka_listener_is_the_first_one_not_named_a_controller_listener() {
        let config = node_config(&[
            ("controller.quorum.voters", "1@localhost:9093"),
            ("controller.listener.names", "ctl"),
            ("listeners", "ctl://0.0.0.0:9093,EXTERNAL://0.0.0.0:9092,INTERNAL://0.0.0.0:9094"),
            ("advertised.listeners", "INTERNAL://internal:9094,EXTERNAL://external:9092"),
        ])
        .expect("valid");
        assert_eq!((config.listen_host.as_str(), config.listen_port), ("0.0.0.0", 9092));
        assert_eq!(config.controller_listen, Some(("0.0.0.0".to_owned(), 9093)));
        assert_eq!(config.broker.advertised_host, "external", "advertised is paired with the listener by name");
    }

    #[test]
    fn cluster_example_toml_files_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        for id in 1..=3u16 {
            let path = dir.path().join(format!("node-{id}.toml"));
            let kafka_port = 9090 + 2 * id;
            std::fs::write(
                &path,
                format!(
                    "node_id = {id}\nprocess_roles = \"broker,controller\"\n\
                     controller_quorum_voters = [\"1@127.0.0.1:9093\", \"2@127.0.0.1:9095\", \"3@127.0.0.1:9097\"]\n\
                     controller_listener_names = \"CONTROLLER\"\n\
                     listeners = \"PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{}\"\n\
                     log_dirs = \"/var/lib/weir-{id}\"\n",
                    kafka_port + 1
                ),
            )
            .expect("write");
            let mut settings = Settings::default();
            settings.load_file(&path).expect("the file loads");
            let config = NodeConfig::from_settings(&settings).expect("the file is a valid voter");
            assert_eq!(config.voters.len(), 3);
            assert_eq!(config.broker.node_id, NodeId(i32::from(id)));
        }
    }

    #[test]
    fn bad_roles_are_refused() {
        let error = expect_error(&[("process.roles", "broker,contoller")], &["process.roles", "contoller", "broker"]);
        assert!(matches!(error, ConfigError::UnknownRole { .. }), "{error:?}");
        let error = expect_error(&[("process.roles", " , ")], &["process.roles", "empty"]);
        assert!(matches!(error, ConfigError::EmptyRoles), "{error:?}");
        let error = expect_error(&[("process.roles", "broker,broker")], &["process.roles", "twice"]);
        assert!(matches!(error, ConfigError::DuplicateRole { .. }), "{error:?}");
    }

    #[test]
    fn bad_voters_are_refused() {
        for malformed in ["1", "1@host", "x@host:9093", "-1@host:9093", "1@:9093", "1@host:0", "1@host:9093,"] {
            let error =
                expect_error(&[("controller.quorum.voters", malformed)], &["controller.quorum.voters", "id@host:port"]);
            assert!(matches!(error, ConfigError::MalformedVoter { .. }), "{malformed}: {error:?}");
        }
        let error =
            expect_error(&[("controller.quorum.voters", "1@a:9093,1@b:9093")], &["controller.quorum.voters", "twice"]);
        assert!(matches!(error, ConfigError::DuplicateVoter { node_id: NodeId(1) }), "{error:?}");
        let ten: Vec<String> = (1..=10).map(|id| format!("{id}@host{id}:9093")).collect();
        let error = expect_error(&[("controller.quorum.voters", &ten.join(","))], &["controller.quorum.voters", "9"]);
        assert!(matches!(error, ConfigError::TooManyVoters { count: 10, max: CONTROLLER_VOTERS_MAX }), "{error:?}");
    }

    #[test]
    fn inconsistent_quorums_are_refused() {
        let listeners = "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093";
        let error = expect_error(
            &[("node.id", "4"), ("controller.quorum.voters", VOTERS_3), ("listeners", listeners)],
            &["node.id 4", "controller.quorum.voters", "process.roles"],
        );
        assert!(matches!(error, ConfigError::ControllerNotVoter { node_id: NodeId(4), .. }), "{error:?}");
        let error = expect_error(
            &[("controller.quorum.voters", VOTERS_3), ("listeners", "PLAINTEXT://127.0.0.1:9092")],
            &["controller.listener.names", "CONTROLLER://"],
        );
        assert!(matches!(error, ConfigError::NoControllerListener { count: 3, .. }), "{error:?}");
        let error = expect_error(&[("process.roles", "broker")], &["controller.quorum.voters", "process.roles"]);
        assert!(matches!(error, ConfigError::BrokerWithoutQuorum), "{error:?}");
        let error = expect_error(
            &[("process.roles", "broker"), ("controller.quorum.voters", VOTERS_3)],
            &["node.id 1", "process.roles"],
        );
        assert!(matches!(error, ConfigError::VoterWithoutControllerRole { .. }), "{error:?}");
        let error = expect_error(
            &[
                ("node.id", "4"),
                ("process.roles", "broker"),
                ("controller.quorum.voters", VOTERS_3),
                ("listeners", listeners),
            ],
            &["CONTROLLER", "listeners"],
        );
        assert!(matches!(error, ConfigError::ControllerListenerWithoutRole { .. }), "{error:?}");
    }

    #[test]
    fn bad_listener_lists_are_refused() {
        let error = expect_error(
            &[
                ("controller.quorum.voters", "1@127.0.0.1:9092"),
                ("listeners", "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9092"),
            ],
            &["PLAINTEXT", "CONTROLLER", "9092"],
        );
        assert!(matches!(error, ConfigError::ListenerPortClash { port: 9092, .. }), "{error:?}");
        let error =
            expect_error(&[("listeners", "PLAINTEXT://a:9092,plaintext://b:9094")], &["listeners", "PLAINTEXT"]);
        assert!(matches!(error, ConfigError::DuplicateListener { key: "listeners", .. }), "{error:?}");
        let error = expect_error(&[("advertised.listeners", "a:1,b:2")], &["advertised.listeners", "PLAINTEXT"]);
        assert!(matches!(error, ConfigError::DuplicateListener { key: "advertised.listeners", .. }), "{error:?}");
        let error =
            expect_error(&[("listeners", "CONTROLLER://0.0.0.0:9093")], &["controller.listener.names", "PLAINTEXT://"]);
        assert!(matches!(error, ConfigError::NoKafkaListener { .. }), "{error:?}");
        for malformed in ["", "PLAINTEXT://", "1BAD://h:1", "PLAINTEXT://h:port", "PLAINTEXT://h:1,"] {
            let error = expect_error(&[("listeners", malformed)], &["listeners", "NAME://host:port"]);
            assert!(matches!(error, ConfigError::Listener { .. }), "{malformed:?}: {error:?}");
        }
    }
}
