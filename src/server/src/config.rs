//! Node configuration: Kafka's broker config names with embedded defaults, overridable by a
//! TOML file (dots become underscores: `num_partitions = 3`), `WEIR_*` environment variables
//! (`WEIR_NUM_PARTITIONS=3`) and flags (`--num-partitions 3`), in increasing precedence.
//! Every value is validated against its type and range before the node starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use metadata::config::{validate_value, ConfigType, Validator, BROKER_CONFIGS, TOPIC_CONFIGS};
use protocol::ids::NodeId;

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
    /// A listener that is not host:port.
    #[error("listener `{value}` is not host:port or PLAINTEXT://host:port")]
    Listener {
        /// The value.
        value: String,
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

/// Splits `host:port` or `PLAINTEXT://host:port`.
///
/// # Errors
/// `Listener` if it is neither.
pub fn parse_listener(value: &str) -> Result<(String, u16), ConfigError> {
    let address = value.trim().strip_prefix("PLAINTEXT://").unwrap_or(value.trim());
    let (host, port) = address.rsplit_once(':').ok_or_else(|| ConfigError::Listener { value: value.to_owned() })?;
    let port = port.parse().map_err(|_| ConfigError::Listener { value: value.to_owned() })?;
    if host.is_empty() || address.contains(',') {
        return Err(ConfigError::Listener { value: value.to_owned() });
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}

/// The validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// What the broker runs with.
    pub broker: broker::BrokerConfig,
    /// Address to bind the Kafka listener to.
    pub listen_host: String,
    /// Port to bind.
    pub listen_port: u16,
    /// Runtime worker threads (0 = one per core).
    pub worker_threads: usize,
}

impl NodeConfig {
    /// Derives the typed config.
    ///
    /// # Errors
    /// A bad listener.
    pub fn from_settings(settings: &Settings) -> Result<NodeConfig, ConfigError> {
        let (listen_host, listen_port) = parse_listener(&settings.get("listeners"))?;
        let advertised = settings.get("advertised.listeners");
        let (advertised_host, advertised_port) = if advertised.trim().is_empty() {
            let host = if listen_host == "0.0.0.0" || listen_host == "::" {
                "127.0.0.1".to_owned()
            } else {
                listen_host.clone()
            };
            (host, listen_port)
        } else {
            parse_listener(&advertised)?
        };
        let broker = broker::BrokerConfig {
            node_id: NodeId(settings.number("node.id")),
            data_dir: PathBuf::from(settings.get("log.dirs")),
            advertised_host,
            advertised_port,
            socket_request_max_bytes: settings.number("socket.request.max.bytes"),
            auto_create_topics_enable: settings.get("auto.create.topics.enable").eq_ignore_ascii_case("true"),
            num_partitions: settings.number("num.partitions"),
            default_replication_factor: settings.number("default.replication.factor"),
            log_disk_reserve_bytes: settings.number("log.disk.reserve.bytes"),
            log_retention_check_interval_ms: settings.number("log.retention.check.interval.ms"),
            static_configs: settings.explicit().clone(),
        };
        Ok(NodeConfig { broker, listen_host, listen_port, worker_threads: settings.number("num.io.threads") })
    }
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
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "num_partitions = [").expect("write");
        assert!(matches!(Settings::default().load_file(&path), Err(ConfigError::Parse { .. })));
    }
}
