//! `weir cluster status`: the nodes, their roles, the active controller and fenced brokers,
//! asked of the controllers themselves (every voter, so an unreachable one shows as such).

use std::collections::{BTreeMap, BTreeSet};

use controller::rpc::{self, ClusterStatus, ControlRequest, ControlResponse};

/// Longest one controller may take to answer.
const STATUS_TIMEOUT_MS: u64 = 3_000;

/// One node's line.
#[derive(Debug, serde::Serialize)]
struct NodeLine {
    id: i64,
    roles: Vec<&'static str>,
    controller: Option<String>,
    controller_state: Option<String>,
    kafka: Option<String>,
    broker_epoch: Option<i64>,
    fenced: Option<bool>,
}

/// What the command prints with `--json`.
#[derive(Debug, serde::Serialize)]
struct Report {
    active_controller: Option<u64>,
    term: Option<u64>,
    nodes: Vec<NodeLine>,
    fenced_brokers: Vec<i64>,
}

async fn ask(address: &str) -> Result<ClusterStatus, String> {
    match rpc::call(address, &ControlRequest::Status, STATUS_TIMEOUT_MS).await {
        Ok((ControlResponse::Status(status), _)) => Ok(status),
        Ok((other, _)) => Err(format!("unexpected answer {other:?}")),
        Err(error) => Err(error.to_string()),
    }
}

/// Prints the cluster's status, starting from the controllers at `controllers`.
///
/// # Errors
/// If no controller answers.
pub async fn status(controllers: &[String], json: bool) -> anyhow::Result<()> {
    let mut answers: BTreeMap<String, Result<ClusterStatus, String>> = BTreeMap::new();
    for address in controllers {
        let _ = answers.insert(address.clone(), ask(address).await);
    }
    let voters: BTreeMap<u64, String> = answers
        .values()
        .filter_map(|answer| answer.as_ref().ok())
        .flat_map(|status| status.voters.iter().cloned())
        .collect();
    if voters.is_empty() {
        let problems: Vec<String> = answers
            .iter()
            .map(|(address, answer)| format!("{address}: {}", answer.as_ref().err().map_or("", |e| e)))
            .collect();
        anyhow::bail!(
            "no controller answered ({}). A single node (no controller.quorum.voters) has no controller \
             listener; point --controller at a voter's controller listener",
            problems.join("; ")
        );
    }
    for address in voters.values() {
        if !answers.contains_key(address) {
            let _ = answers.insert(address.clone(), ask(address).await);
        }
    }
    let by_voter: BTreeMap<u64, &Result<ClusterStatus, String>> =
        voters.iter().map(|(id, address)| (*id, &answers[address])).collect();
    let reachable: Vec<&ClusterStatus> = by_voter.values().filter_map(|answer| answer.as_ref().ok()).collect();
    let leader = reachable.iter().find(|status| status.role == "leader").copied();
    // The leader's view of the brokers, else the most up-to-date one.
    let view = leader.or_else(|| reachable.iter().max_by_key(|status| status.applied_index).copied());
    let brokers = view.map(|status| status.brokers.clone()).unwrap_or_default();
    let ids: BTreeSet<i64> =
        voters.keys().map(|id| *id as i64).chain(brokers.iter().map(|broker| i64::from(broker.broker_id.0))).collect();
    let nodes: Vec<NodeLine> = ids
        .into_iter()
        .map(|id| {
            let voter = u64::try_from(id).ok().and_then(|id| voters.get(&id).map(|address| (id, address)));
            let broker = brokers.iter().find(|broker| i64::from(broker.broker_id.0) == id);
            let mut roles = Vec::new();
            if broker.is_some() {
                roles.push("broker");
            }
            if voter.is_some() {
                roles.push("controller");
            }
            NodeLine {
                id,
                roles,
                controller: voter.map(|(_, address)| address.clone()),
                controller_state: voter.map(|(id, _)| match by_voter[&id] {
                    Ok(status) => status.role.clone(),
                    Err(_) => "unreachable".to_owned(),
                }),
                kafka: broker.map(|broker| format!("{}:{}", broker.host, broker.port)),
                broker_epoch: broker.map(|broker| broker.broker_epoch),
                fenced: broker.map(|broker| broker.fenced),
            }
        })
        .collect();
    let report = Report {
        active_controller: leader.map(|status| status.node_id),
        term: leader.map(|status| status.term),
        fenced_brokers: nodes.iter().filter(|node| node.fenced == Some(true)).map(|node| node.id).collect(),
        nodes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match (report.active_controller, report.term) {
        (Some(leader), Some(term)) => {
            println!("controller quorum: {} voters, active controller {leader} (term {term})", voters.len())
        }
        _ => println!("controller quorum: {} voters, no active controller reachable", voters.len()),
    }
    println!("{:<6}{:<20}{:<24}{:<13}{:<24}BROKER", "NODE", "ROLES", "CONTROLLER", "QUORUM", "KAFKA");
    for node in &report.nodes {
        let broker = match (node.fenced, node.broker_epoch) {
            (Some(true), Some(epoch)) => format!("fenced (epoch {epoch})"),
            (Some(false), Some(epoch)) => format!("unfenced (epoch {epoch})"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<6}{:<20}{:<24}{:<13}{:<24}{broker}",
            node.id,
            node.roles.join(","),
            node.controller.as_deref().unwrap_or("-"),
            node.controller_state.as_deref().unwrap_or("-"),
            node.kafka.as_deref().unwrap_or("-"),
        );
    }
    if report.fenced_brokers.is_empty() {
        println!("fenced brokers: none");
    } else {
        let fenced: Vec<String> = report.fenced_brokers.iter().map(i64::to_string).collect();
        println!("fenced brokers: {}", fenced.join(","));
    }
    Ok(())
}
