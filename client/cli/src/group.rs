//! `smq group list` and `smq group describe NAME`: consumer groups as the NameServer sees them
//! (members, who owns which queue, committed offsets and lag), as tables or, with `--json`, as
//! the NameServer's answer. `smq group promote GROUP`: a broker group's switchover.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use smq_client::nameserver_client::NameServerClient;
use smq_client::promote::{PromoteOptions, PromoteReport};
use smq_client::{Admin, ClientConfig};

#[derive(Subcommand, Debug)]
pub(crate) enum GroupCommand {
    /// Every consumer group with the topic it reads, its live members and its lag (messages not
    /// consumed, and the age of the oldest one).
    List {
        /// Print one JSON object (as GET /v1/groups) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A consumer group's members and, per queue of each topic it reads: owner, owner epoch,
    /// committed offset, end and lag.
    Describe {
        /// The consumer group.
        name: String,
        /// Print one JSON object (as GET /v1/groups/NAME) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Makes a slave of a broker group its master with the next epoch (a switchover). With the
    /// master live: it stops taking writes, the slave catches up, is promoted, and the old master
    /// follows it. With the master gone: refused when the slave lacks what the master last
    /// reported as acknowledged, unless --force.
    Promote {
        /// The broker group (its --group).
        group: String,
        /// The slave to promote, by address or name; default: the live slave with the longest
        /// log. (Not `--broker`: that global flag names the broker other commands talk to.)
        #[arg(long)]
        slave: Option<String>,
        /// Promote even when the slave lacks acknowledged bytes (they are lost: the output says
        /// how many), or when the master is live but cannot be reached.
        #[arg(long)]
        force: bool,
        /// How long the slave may take to catch up, and the NameServer to show the change.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
}

/// `smq group ...`: needs a NameServer.
pub(crate) async fn run(
    config: ClientConfig,
    nameserver: Option<&NameServerClient>,
    wait: Duration,
    command: GroupCommand,
) -> anyhow::Result<()> {
    let Some(client) = nameserver else {
        bail!(
            "`smq group` asks the NameServer: set --nameserver URL or --srv NAME \
             (or SMQ_NAMESERVER / SMQ_SRV)"
        );
    };
    match command {
        GroupCommand::List { json } => list(client, wait, json).await,
        GroupCommand::Describe { name, json } => describe(client, &name, wait, json).await,
        GroupCommand::Promote {
            group,
            slave,
            force,
            timeout_ms,
        } => {
            let options = PromoteOptions {
                group,
                slave,
                force,
                timeout: Duration::from_millis(timeout_ms),
            };
            let report = Admin::promote(client, &config, &options).await?;
            print_promotion(&report);
            Ok(())
        }
    }
}

fn print_promotion(report: &PromoteReport) {
    let mut total = Duration::ZERO;
    for (step, took) in &report.steps {
        total += *took;
        println!("{:>8.1} ms  {step}", took.as_secs_f64() * 1000.0);
    }
    println!(
        "promoted {} to master of group {} (epoch {}, from log position {}) in {:.1} ms",
        report.new_master,
        report.group,
        report.master_epoch,
        report.log_end,
        total.as_secs_f64() * 1000.0
    );
    if report.acknowledged_bytes_lost > 0 || report.unreplicated_bytes_lost > 0 {
        println!(
            "forced: {} acknowledged bytes and {} bytes written by the old master {} (as of its \
             last heartbeat) are not on the new master and may be lost",
            report.acknowledged_bytes_lost,
            report.unreplicated_bytes_lost,
            report.old_master.as_deref().unwrap_or("(unknown)")
        );
    }
    if report.old_master_live && !report.old_master_follows {
        eprintln!(
            "the old master {} does not show as the new master's slave yet: check `smq cluster`",
            report.old_master.as_deref().unwrap_or("(unknown)")
        );
    }
}

async fn list(client: &NameServerClient, wait: Duration, json: bool) -> anyhow::Result<()> {
    let list = client
        .retrying("the consumer groups", wait, || client.consumer_groups())
        .await?;
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<24} {:>7} {:>6} {:>12} {:>11}",
        "CONSUMER GROUP", "TOPIC", "MEMBERS", "QUEUES", "LAG (MSGS)", "LAG (SECS)"
    );
    for group in &list.groups {
        println!(
            "{:<24} {:<24} {:>7} {:>6} {:>12} {:>11.1}",
            group.consumer_group,
            group.topic,
            group.members,
            group.queues,
            group.lag_messages,
            group.lag_seconds
        );
    }
    if list.groups.is_empty() {
        eprintln!("no consumer group: none has a live member or an offset on a live broker");
    }
    Ok(())
}

async fn describe(
    client: &NameServerClient,
    name: &str,
    wait: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let view = client
        .retrying(&format!("consumer group `{name}`"), wait, || {
            client.consumer_group(name)
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string(&view)?);
        return Ok(());
    }
    for topic in &view.topics {
        println!(
            "consumer group {} reading topic {}: {} member(s)",
            view.consumer_group,
            topic.topic,
            topic.members.len()
        );
        for member in &topic.members {
            let queues: Vec<String> = member
                .queues
                .iter()
                .map(|q| format!("{}/{}", q.broker_group, q.queue_id))
                .collect();
            println!(
                "  member {} (session {} ms, expires in {} ms): {}",
                member.member_id,
                member.session_timeout_ms,
                member.expires_in_ms,
                if queues.is_empty() {
                    "no queue".to_owned()
                } else {
                    queues.join(" ")
                }
            );
        }
        println!(
            "  {:<16} {:>5} {:<32} {:>6} {:>12} {:>12} {:>10} {:>9}",
            "BROKER GROUP", "QUEUE", "OWNER", "EPOCH", "COMMITTED", "END", "LAG MSGS", "LAG SECS"
        );
        let dash = || "-".to_owned();
        for queue in &topic.queues {
            println!(
                "  {:<16} {:>5} {:<32} {:>6} {:>12} {:>12} {:>10} {:>9}",
                queue.broker_group,
                queue.queue_id,
                queue.owner.as_deref().unwrap_or("-"),
                queue.owner_epoch,
                queue.committed_offset.map_or_else(dash, |o| o.to_string()),
                queue.end_offset.map_or_else(dash, |o| o.to_string()),
                queue.lag_messages.map_or_else(dash, |o| o.to_string()),
                queue.lag_seconds.map_or_else(dash, |s| format!("{s:.1}")),
            );
        }
    }
    if view.warming_up_ms > 0 {
        eprintln!(
            "the NameServer is warming up for another {} ms: members and brokers that have not \
             (re-)registered with it yet are missing",
            view.warming_up_ms
        );
    }
    Ok(())
}
