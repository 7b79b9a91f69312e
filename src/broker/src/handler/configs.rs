//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Topic configs are dynamic (stored as metadata records). Broker configs are static: set in
//! the config file, flags or environment, described here with their sources, and refused by
//! the alter APIs with a message that says where to set them.

use std::collections::BTreeMap;
use std::sync::Arc;

use metadata::config::{
    effective_topic_configs, topic_config, validate_topic_config, ConfigSource, ConfigType, BROKER_CONFIGS,
    TOPIC_CONFIGS,
};
use metadata::record::ConfigResource;
use protocol::kafka_protocol::messages::alter_configs_request::AlterConfigsRequest;
use protocol::kafka_protocol::messages::alter_configs_response::{AlterConfigsResourceResponse, AlterConfigsResponse};
use protocol::kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use protocol::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult, DescribeConfigsSynonym,
};
use protocol::kafka_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use protocol::kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse as IncrementalResourceResponse, IncrementalAlterConfigsResponse,
};
use protocol::ResponseError;

use super::str_bytes;
use crate::handler::error_code;
use crate::node::Node;

/// Kafka's `ConfigResource.Type` wire values.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
const OPERATION_APPEND: i8 = 2;
const OPERATION_SUBTRACT: i8 = 3;

type Refusal = (ResponseError, String);

/// A described config before filtering.
struct Described {
    name: String,
    value: String,
    source: ConfigSource,
    config_type: ConfigType,
    read_only: bool,
    documentation: &'static str,
    synonyms: Vec<(String, String, ConfigSource)>,
}

fn describe_topic(node: &Node, topic: &str) -> Result<Vec<Described>, Refusal> {
    let image = node.image();
    if image.topic(topic).is_none() {
        return Err((ResponseError::UnknownTopicOrPartition, format!("Topic {topic} does not exist.")));
    }
    let overrides = image.configs(&ConfigResource::Topic(topic.to_owned()));
    Ok(effective_topic_configs(overrides, &node.config.static_configs)
        .into_iter()
        .map(|effective| {
            let definition = topic_config(effective.name).expect("effective configs come from the definitions");
            let mut synonyms = Vec::new();
            if let Some(value) = overrides.and_then(|overrides| overrides.get(effective.name)) {
                synonyms.push((effective.name.to_owned(), value.clone(), ConfigSource::DynamicTopic));
            }
            if let Some(synonym) = definition.broker_synonym {
                if let Some(value) = node.config.static_configs.get(synonym) {
                    synonyms.push((synonym.to_owned(), value.clone(), ConfigSource::StaticBroker));
                }
            }
            synonyms.push((
                definition.broker_synonym.unwrap_or(effective.name).to_owned(),
                definition.default.to_owned(),
                ConfigSource::Default,
            ));
            Described {
                name: effective.name.to_owned(),
                value: effective.value,
                source: effective.source,
                config_type: definition.config_type,
                read_only: false,
                documentation: definition.documentation,
                synonyms,
            }
        })
        .collect())
}

fn describe_broker(node: &Node, name: &str) -> Result<Vec<Described>, Refusal> {
    if !name.is_empty() && name != node.config.node_id.0.to_string() {
        return Err((ResponseError::InvalidRequest, format!("this is broker {}, not {name}", node.config.node_id.0)));
    }
    // Every accepted broker config: the broker-only ones, then the topic defaults' synonyms.
    let mut values: BTreeMap<String, (String, ConfigType, &'static str)> = BROKER_CONFIGS
        .iter()
        .map(|definition| {
            (
                definition.name.to_owned(),
                (definition.default.to_owned(), definition.config_type, definition.documentation),
            )
        })
        .collect();
    for definition in TOPIC_CONFIGS {
        if let Some(synonym) = definition.broker_synonym {
            let _ = values.entry(synonym.to_owned()).or_insert((
                definition.default.to_owned(),
                definition.config_type,
                definition.documentation,
            ));
        }
    }
    let config = &node.config;
    Ok(values
        .into_iter()
        .map(|(key, (default_value, config_type, documentation))| {
            let (value, source) = match config.static_configs.get(&key) {
                Some(value) => (value.clone(), ConfigSource::StaticBroker),
                None => (default_value, ConfigSource::Default),
            };
            Described {
                synonyms: vec![(key.clone(), value.clone(), source)],
                name: key,
                value,
                source,
                config_type,
                read_only: true,
                documentation,
            }
        })
        .collect())
}

/// Handles DescribeConfigs.
pub(crate) fn describe_configs(node: &Arc<Node>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let described = match resource.resource_type {
                RESOURCE_TOPIC => describe_topic(node, &name),
                RESOURCE_BROKER => describe_broker(node, &name),
                other => Err((ResponseError::InvalidRequest, format!("config resource type {other} is not supported"))),
            };
            let described = match described {
                Ok(described) => described,
                Err((error, message)) => {
                    return result.with_error_code(error.code()).with_error_message(Some(str_bytes(message)));
                }
            };
            let keys: Option<Vec<String>> =
                resource.configuration_keys.map(|keys| keys.iter().map(ToString::to_string).collect());
            let configs = described
                .into_iter()
                .filter(|config| keys.as_ref().is_none_or(|keys| keys.contains(&config.name)))
                .map(|config| {
                    let synonyms = if request.include_synonyms {
                        config
                            .synonyms
                            .into_iter()
                            .map(|(name, value, source)| {
                                DescribeConfigsSynonym::default()
                                    .with_name(str_bytes(name))
                                    .with_value(Some(str_bytes(value)))
                                    .with_source(source.wire())
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(config.name))
                        .with_value(Some(str_bytes(config.value)))
                        .with_read_only(config.read_only)
                        .with_config_source(config.source.wire())
                        .with_config_type(config.config_type.wire())
                        .with_synonyms(synonyms)
                        .with_documentation(request.include_documentation.then(|| str_bytes(config.documentation)))
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn broker_alter_refusal() -> Refusal {
    (
        ResponseError::InvalidRequest,
        "broker configs are static in weir: set them in the config file, a flag or a WEIR_* variable and restart"
            .into(),
    )
}

/// Validates and applies topic config changes, or reports why not.
async fn apply_topic_changes(
    node: &Node,
    topic: &str,
    changes: Vec<(String, Option<String>)>,
    replace_all: bool,
    validate_only: bool,
) -> Result<(), Refusal> {
    if node.image().topic(topic).is_none() {
        return Err((ResponseError::UnknownTopicOrPartition, format!("Topic {topic} does not exist.")));
    }
    for (name, value) in &changes {
        match value {
            Some(value) => {
                validate_topic_config(name, value).map_err(|error| (ResponseError::InvalidConfig, error.to_string()))?
            }
            None => {
                if topic_config(name).is_none() {
                    return Err((ResponseError::InvalidConfig, format!("unknown config {name}")));
                }
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    node.set_topic_configs(topic, changes, replace_all).await.map_err(|error| {
        let code = error_code(&error);
        (ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError), error.to_string())
    })
}

/// Handles AlterConfigs: the topic's overrides become exactly the given set.
pub(crate) async fn alter_configs(node: &Arc<Node>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                let changes: Vec<(String, Option<String>)> = resource
                    .configs
                    .iter()
                    .map(|config| (config.name.to_string(), config.value.as_ref().map(ToString::to_string)))
                    .collect();
                if changes.iter().any(|(_, value)| value.is_none()) {
                    Err((ResponseError::InvalidRequest, "Null value not supported for topic configs".into()))
                } else {
                    apply_topic_changes(node, &resource.resource_name, changes, true, request.validate_only).await
                }
            }
            RESOURCE_BROKER => Err(broker_alter_refusal()),
            other => Err((ResponseError::InvalidRequest, format!("config resource type {other} is not supported"))),
        };
        responses.push(match outcome {
            Ok(()) => response,
            Err((error, message)) => {
                response.with_error_code(error.code()).with_error_message(Some(str_bytes(message)))
            }
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Computes the new value of one incremental operation.
fn incremental_value(
    current: &str,
    name: &str,
    operation: i8,
    value: Option<String>,
) -> Result<Option<String>, Refusal> {
    let is_list = topic_config(name).is_some_and(|definition| definition.config_type == ConfigType::List);
    match operation {
        OPERATION_SET => value.map(Some).ok_or((ResponseError::InvalidRequest, format!("SET of {name} needs a value"))),
        OPERATION_DELETE => Ok(None),
        OPERATION_APPEND | OPERATION_SUBTRACT if !is_list => Err((
            ResponseError::InvalidConfig,
            format!("{name} is not a list; APPEND and SUBTRACT apply to lists only"),
        )),
        OPERATION_APPEND | OPERATION_SUBTRACT => {
            let mut items: Vec<String> =
                current.split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect();
            let given: Vec<String> = value
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
                .collect();
            if operation == OPERATION_APPEND {
                for item in given {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
            } else {
                items.retain(|item| !given.contains(item));
            }
            Ok(Some(items.join(",")))
        }
        other => Err((ResponseError::InvalidRequest, format!("unknown config operation {other}"))),
    }
}

/// Handles IncrementalAlterConfigs.
pub(crate) async fn incremental_alter_configs(
    node: &Arc<Node>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let response = IncrementalResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let topic = resource.resource_name.to_string();
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                let image = node.image();
                let overrides = image.configs(&ConfigResource::Topic(topic.clone()));
                let effective = effective_topic_configs(overrides, &node.config.static_configs);
                let mut changes = Vec::with_capacity(resource.configs.len());
                let mut refusal = None;
                for config in resource.configs {
                    let name = config.name.to_string();
                    let current = effective
                        .iter()
                        .find(|effective| effective.name == name)
                        .map_or("", |effective| effective.value.as_str());
                    match incremental_value(
                        current,
                        &name,
                        config.config_operation,
                        config.value.map(|value| value.to_string()),
                    ) {
                        Ok(value) => changes.push((name, value)),
                        Err(reason) => {
                            refusal = Some(reason);
                            break;
                        }
                    }
                }
                match refusal {
                    Some(reason) => Err(reason),
                    None => apply_topic_changes(node, &topic, changes, false, request.validate_only).await,
                }
            }
            RESOURCE_BROKER => Err(broker_alter_refusal()),
            other => Err((ResponseError::InvalidRequest, format!("config resource type {other} is not supported"))),
        };
        responses.push(match outcome {
            Ok(()) => response,
            Err((error, message)) => {
                response.with_error_code(error.code()).with_error_message(Some(str_bytes(message)))
            }
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_operations_append_and_subtract_without_duplicates() {
        assert_eq!(
            incremental_value("delete", "cleanup.policy", OPERATION_APPEND, Some("compact".into())),
            Ok(Some("delete,compact".into()))
        );
        assert_eq!(
            incremental_value("delete,compact", "cleanup.policy", OPERATION_APPEND, Some("compact".into())),
            Ok(Some("delete,compact".into()))
        );
        assert_eq!(
            incremental_value("delete,compact", "cleanup.policy", OPERATION_SUBTRACT, Some("delete".into())),
            Ok(Some("compact".into()))
        );
        assert!(incremental_value("1", "retention.ms", OPERATION_APPEND, Some("2".into())).is_err());
        assert_eq!(incremental_value("1", "retention.ms", OPERATION_DELETE, None), Ok(None));
        assert!(incremental_value("1", "retention.ms", 9, None).is_err());
    }
}
