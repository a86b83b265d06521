//! `smq cluster`: every live broker as the NameServer sees it.

use std::time::Duration;

use anyhow::bail;

use smq_client::nameserver_client::NameServerClient;

/// `smq cluster`'s flags.
#[derive(clap::Args, Debug)]
pub(crate) struct ClusterArgs {
    /// Print the NameServer's cluster view as one JSON object (as GET /v1/cluster) instead of
    /// a table.
    #[arg(long)]
    json: bool,
}

/// `smq cluster`: needs a NameServer.
pub(crate) async fn run(
    nameserver: Option<&NameServerClient>,
    wait: Duration,
    args: ClusterArgs,
) -> anyhow::Result<()> {
    match nameserver {
        Some(client) => cluster(client, wait, args.json).await,
        None => bail!(
            "`smq cluster` asks the NameServer: set --nameserver URL or --srv NAME \
             (or SMQ_NAMESERVER / SMQ_SRV)"
        ),
    }
}

/// `smq cluster`: one line per live broker.
async fn cluster(client: &NameServerClient, wait: Duration, json: bool) -> anyhow::Result<()> {
    let view = client
        .retrying("the cluster view", wait, || client.cluster())
        .await?;
    if json {
        println!("{}", serde_json::to_string(&view)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<16} {:<7} {:<22} {:>15} {:>26}",
        "CLUSTER", "GROUP", "ROLE", "ADDRESS", "LAST HEARTBEAT", "REPLICATION LAG"
    );
    for broker in &view.brokers {
        let role = broker.role.as_str();
        let lag = match (broker.replication_lag_bytes, broker.in_sync) {
            (Some(bytes), Some(in_sync)) => {
                let seconds = broker
                    .replication_lag_ms
                    .map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
                let state = if in_sync { "in sync" } else { "behind" };
                format!("{bytes} B {seconds} {state}")
            }
            (Some(bytes), None) => format!("{bytes} B"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<16} {:<16} {:<7} {:<22} {:>15} {:>26}",
            broker.cluster,
            broker.group,
            role,
            broker.addr,
            format!("{:.1}s ago", broker.last_heartbeat_ms_ago as f64 / 1000.0),
            lag
        );
    }
    if view.brokers.is_empty() {
        eprintln!("no live broker: start one with --nameserver or --srv pointing here");
    }
    if view.warming_up_ms > 0 {
        eprintln!(
            "the NameServer is warming up for another {} ms: brokers that have not \
             (re-)registered with it yet are missing",
            view.warming_up_ms
        );
    }
    Ok(())
}
