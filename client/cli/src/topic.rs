//! `smq topic`: create, list, describe and delete topics, on one broker or, through the
//! NameServer, on every master of the cluster.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use smq_client::nameserver_client::NameServerClient;
use smq_client::{Admin, ClientConfig, ClusterError};

#[derive(Subcommand, Debug)]
pub(crate) enum TopicCommand {
    /// Create a topic with N queues on the broker (with --nameserver/--srv: on every master,
    /// or on the masters of --groups).
    Create {
        name: String,
        /// Number of queues (in each broker group).
        #[arg(long, env = "SMQ_QUEUES", default_value_t = 8)]
        queues: u32,
        /// Broker groups to create it in, G1,G2 (needs --nameserver or --srv) [default: all].
        #[arg(long, env = "SMQ_GROUPS", value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// List every topic with its queue count and stored messages (with --nameserver/--srv:
    /// every topic in the cluster with its queues and broker groups).
    List,
    /// Show each queue of a topic with its earliest and latest offsets (with
    /// --nameserver/--srv: the topic's route, each broker group with its master and slaves).
    Describe {
        name: String,
        /// Print one JSON object instead of a table: the NameServer's route (as
        /// GET /v1/routes/{topic}), or the broker's queues with their offsets.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic, its queues and its consumer offsets (with --nameserver/--srv: on every
    /// master that has it).
    Delete { name: String },
}

/// `smq topic`: through the NameServer when there is one, else on the one broker.
pub(crate) async fn run(
    config: ClientConfig,
    nameserver: Option<&NameServerClient>,
    wait: Duration,
    command: TopicCommand,
) -> anyhow::Result<()> {
    match (nameserver, command) {
        (Some(client), TopicCommand::List) => topic_list_from_nameserver(client, wait).await,
        (Some(client), TopicCommand::Describe { name, json }) => {
            topic_route_from_nameserver(client, &name, wait, json).await
        }
        (Some(_), command) => topic_on_masters(&config, command).await,
        (None, TopicCommand::Create { groups, .. }) if !groups.is_empty() => bail!(
            "--groups picks broker groups through the NameServer: set --nameserver URL or --srv NAME"
        ),
        (None, command) => topic_on_broker(config, command).await,
    }
}

/// `smq topic` on the one broker of `config`.
async fn topic_on_broker(config: ClientConfig, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(config).await?;
    match command {
        TopicCommand::Create { name, queues, .. } => {
            admin.create_topic(&name, queues).await?;
            eprintln!("created topic {name} with {queues} queues");
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await?;
            println!("{:<40} {:>7} {:>14}", "TOPIC", "QUEUES", "MESSAGES");
            for topic in topics {
                println!(
                    "{:<40} {:>7} {:>14}",
                    topic.name,
                    topic.queues.len(),
                    topic.stored_messages()
                );
            }
        }
        TopicCommand::Describe { name, json } => {
            let info = admin.broker_info().await?;
            let topic = admin.describe_topic(&name).await?;
            if json {
                let queues: Vec<serde_json::Value> = topic
                    .queues
                    .iter()
                    .map(|queue| {
                        serde_json::json!({
                            "queue": queue.queue_id,
                            "earliest": queue.log_start_offset,
                            "latest": queue.high_watermark,
                            "messages": queue.stored_messages(),
                        })
                    })
                    .collect();
                let described = serde_json::json!({
                    "topic": topic.name,
                    "broker": admin_broker(&info),
                    "cluster": info.cluster,
                    "broker_group": info.group,
                    "role": format!("{:?}", info.role).to_lowercase(),
                    "queues": queues,
                });
                println!("{described}");
                return Ok(());
            }
            println!(
                "topic {} on broker {} (cluster {}, group {}, {:?})",
                topic.name,
                admin_broker(&info),
                info.cluster,
                info.group,
                info.role
            );
            println!(
                "{:>6} {:>14} {:>14} {:>14}",
                "QUEUE", "EARLIEST", "LATEST", "MESSAGES"
            );
            for queue in &topic.queues {
                println!(
                    "{:>6} {:>14} {:>14} {:>14}",
                    queue.queue_id,
                    queue.log_start_offset,
                    queue.high_watermark,
                    queue.stored_messages()
                );
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
        }
    }
    Ok(())
}

/// How long `smq topic create` waits for the NameServer to route a new topic before it warns.
const ROUTED_WAIT: Duration = Duration::from_secs(10);

/// `smq topic create` and `delete` with a NameServer: on each master the cluster view lists (for
/// create, those of `--groups` if given), through the broker protocol.
async fn topic_on_masters(config: &ClientConfig, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            queues,
            groups,
        } => create_on_masters(config, &name, queues, &groups).await,
        TopicCommand::Delete { name } => {
            let result = Admin::delete_topic_on_masters(config, &name).await;
            if let Ok(done) | Err(ClusterError::Partial { done, .. }) = &result {
                if !done.is_empty() {
                    eprintln!("deleted topic {name} in group(s) {}", done.join(","));
                }
            }
            result?;
            Ok(())
        }
        TopicCommand::List | TopicCommand::Describe { .. } => unreachable!("read the NameServer"),
    }
}

/// Creates `name` on the masters of `groups` (all if empty), says where, and waits until the
/// routes show it in every group it was created in (one heartbeat: brokers heartbeat at once
/// after a topic change); a route still missing then is a warning, a failed master an error.
pub(crate) async fn create_on_masters(
    config: &ClientConfig,
    name: &str,
    queues: u32,
    groups: &[String],
) -> anyhow::Result<()> {
    let result = Admin::create_topic_on_masters(config, name, queues, groups).await;
    if let Ok(done) | Err(ClusterError::Partial { done, .. }) = &result {
        if !done.is_empty() {
            eprintln!(
                "created topic {name} with {queues} queues in group(s) {}",
                done.join(",")
            );
            match Admin::wait_until_routed(config, name, done, ROUTED_WAIT).await {
                Ok(route) => eprintln!(
                    "routes show topic {name} in {} group(s)",
                    route.groups.len()
                ),
                Err(_) => eprintln!(
                    "warning: the NameServer does not route topic {name} to every group yet; \
                     check `smq topic describe {name}`"
                ),
            }
        }
    }
    result?;
    Ok(())
}

/// `smq topic list` with a NameServer: every topic in the cluster.
async fn topic_list_from_nameserver(
    client: &NameServerClient,
    wait: Duration,
) -> anyhow::Result<()> {
    let list = client
        .retrying("the topic list", wait, || client.topics())
        .await?;
    println!("{:<40} {:>7}  GROUPS", "TOPIC", "QUEUES");
    for topic in &list.topics {
        println!(
            "{:<40} {:>7}  {}",
            topic.name,
            topic.queues,
            topic.groups.join(",")
        );
    }
    Ok(())
}

/// `smq topic describe NAME` with a NameServer: the topic's route.
async fn topic_route_from_nameserver(
    client: &NameServerClient,
    name: &str,
    wait: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let route = client.route_waiting(name, wait).await?;
    if json {
        println!("{}", serde_json::to_string(&route)?);
        return Ok(());
    }
    println!(
        "topic {} in {} broker group(s)",
        route.topic,
        route.groups.len()
    );
    println!(
        "{:<16} {:<16} {:<22} {:>7} {:<5} SLAVES",
        "CLUSTER", "GROUP", "MASTER", "QUEUES", "PERM"
    );
    for group in &route.groups {
        let perm = format!(
            "{}{}",
            if group.readable { "r" } else { "-" },
            if group.writable { "w" } else { "-" }
        );
        let slaves = if group.slaves.is_empty() {
            "-".to_owned()
        } else {
            group.slaves.join(",")
        };
        println!(
            "{:<16} {:<16} {:<22} {:>7} {:<5} {}",
            group.cluster,
            group.group,
            group.master.as_deref().unwrap_or("(none)"),
            group.queues,
            perm,
            slaves
        );
    }
    Ok(())
}

fn admin_broker(info: &smq_client::admin::BrokerInfo) -> String {
    format!("{}/{}", info.cluster, info.group)
}
