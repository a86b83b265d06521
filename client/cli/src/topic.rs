//! `smq topic`: create, list, describe and delete topics, on one broker or, through the
//! NameServer, on every master of the cluster.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use smq_client::nameserver_client::{NameServerClient, NameServerError};
use smq_client::protocol::response::TopicMetadata;
use smq_client::protocol::{ErrorCode, Role};
use smq_client::{Admin, ClientConfig};

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
        (Some(client), command) => topic_on_masters(&config, client, command).await,
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
                    stored_in(&topic)
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
                            "messages": queue.high_watermark - queue.log_start_offset,
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
                    queue.high_watermark - queue.log_start_offset
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

/// `smq topic create` and `delete` with a NameServer: on each master the cluster view lists (for
/// create, those of `--groups` if given), through the broker protocol. Create then waits until the
/// routes show the topic in every group it was created in (one heartbeat: brokers heartbeat at
/// once after a topic change).
pub(crate) async fn topic_on_masters(
    config: &ClientConfig,
    client: &NameServerClient,
    command: TopicCommand,
) -> anyhow::Result<()> {
    let (name, groups) = match &command {
        TopicCommand::Create { name, groups, .. } => (name.clone(), groups.clone()),
        TopicCommand::Delete { name } => (name.clone(), Vec::new()),
        TopicCommand::List | TopicCommand::Describe { .. } => unreachable!("read the NameServer"),
    };
    let masters = masters(client, &groups, Duration::from_millis(config.route_wait_ms)).await?;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for master in &masters {
        let result = match (&command, Admin::connect(direct(config, &master.addr)).await) {
            (TopicCommand::Create { queues, .. }, Ok(admin)) => {
                admin.create_topic(&name, *queues).await
            }
            (_, Ok(admin)) => admin.delete_topic(&name).await,
            (_, Err(error)) => Err(error),
        };
        match result {
            Ok(()) => done.push(master.group.clone()),
            // Delete everywhere means: wherever it is.
            Err(error)
                if matches!(command, TopicCommand::Delete { .. })
                    && error.code() == Some(ErrorCode::UnknownTopic) => {}
            Err(error) => failed.push(format!("group {} ({}): {error}", master.group, master.addr)),
        }
    }
    match &command {
        TopicCommand::Create { queues, .. } if !done.is_empty() => {
            eprintln!(
                "created topic {name} with {queues} queues in group(s) {}",
                done.join(",")
            );
            wait_until_routed(client, &name, &done).await;
        }
        TopicCommand::Delete { .. } if !done.is_empty() => {
            eprintln!("deleted topic {name} in group(s) {}", done.join(","));
        }
        TopicCommand::Delete { .. } if failed.is_empty() => {
            bail!("no broker group has topic `{name}`")
        }
        _ => {}
    }
    if !failed.is_empty() {
        bail!("failed in {} group(s): {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// `config` pointed at the one broker at `addr`, without the NameServer.
pub(crate) fn direct(config: &ClientConfig, addr: &str) -> ClientConfig {
    let mut direct = config.clone();
    direct.nameserver = None;
    direct.broker = addr.to_owned();
    direct
}

/// The live masters of the cluster, or of `groups` (each of which must have one). While the
/// NameServer is warming up, brokers that have not re-registered are missing from its view, so
/// this waits (up to `wait`) until it is warm, unless every group of `groups` is there already:
/// a topic is never created or deleted on only the groups that re-registered so far.
async fn masters(
    client: &NameServerClient,
    groups: &[String],
    wait: Duration,
) -> anyhow::Result<Vec<smq_client::nameserver_api::BrokerInfo>> {
    let complete_view = || async {
        let view = client.cluster().await?;
        let has_master = |group: &String| {
            view.brokers
                .iter()
                .any(|b| b.role == Role::Master && &b.group == group)
        };
        let named_all_there = !groups.is_empty() && groups.iter().all(has_master);
        if view.warming_up_ms > 0 && !named_all_there {
            return Err(NameServerError::WarmingUp {
                remaining_ms: view.warming_up_ms,
                reason: "brokers that have not re-registered with it yet are missing from its \
                         cluster view, and acting on the groups it knows now could miss some"
                    .to_owned(),
            });
        }
        Ok(view)
    };
    let masters: Vec<_> = client
        .retrying("every broker group", wait, complete_view)
        .await?
        .brokers
        .into_iter()
        .filter(|broker| broker.role == Role::Master)
        .filter(|broker| groups.is_empty() || groups.contains(&broker.group))
        .collect();
    if let Some(missing) = groups
        .iter()
        .find(|group| !masters.iter().any(|m| &m.group == *group))
    {
        bail!("broker group `{missing}` has no live master the NameServer knows of (see `smq cluster`)");
    }
    if masters.is_empty() {
        bail!(
            "the NameServer knows no live master: start brokers with --nameserver or --srv \
             pointing at it (see `smq cluster`)"
        );
    }
    Ok(masters)
}

/// Waits up to 10 s until the topic's route lists every group in `groups`; warns otherwise.
async fn wait_until_routed(client: &NameServerClient, topic: &str, groups: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(route) = client.route(topic).await {
            if groups
                .iter()
                .all(|group| route.groups.iter().any(|g| &g.group == group))
            {
                eprintln!(
                    "routes show topic {topic} in {} group(s)",
                    route.groups.len()
                );
                return;
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "warning: the NameServer does not route topic {topic} to every group yet; \
                 check `smq topic describe {topic}`"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// Messages one broker stores of a topic, over its queues.
pub(crate) fn stored_in(topic: &TopicMetadata) -> u64 {
    topic
        .queues
        .iter()
        .map(|queue| queue.high_watermark - queue.log_start_offset)
        .sum()
}
