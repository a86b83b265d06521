//! A switchover of a broker group: one of its slaves becomes the master with the next epoch
//! (proto-spec.md section 10.2), what `smq group promote` runs.
//!
//! With the master live: it stops taking writes, the slave catches up to its final end, the
//! slave is promoted, the NameServer routes writes to it, and the old master follows it as its
//! slave. With the master gone: the slave is promoted only when it holds what the master last
//! reported as acknowledged (its heartbeats), unless forced; then the report says how many
//! bytes may be lost.

use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::error::Error;
use crate::nameserver_api::{BrokerInfo, ClusterView, GroupEpoch};
use crate::nameserver_client::{NameServerClient, NameServerError};
use crate::protocol::role_change::{
    HandOver, HandOverAction, HandOverResponse, Promote, PromoteResponse, RoleRequest, RoleResponse,
};
use crate::protocol::{ErrorResponse, Role};
use crate::{Admin, ClientConfig};

/// What to promote, and how patiently.
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// The broker group.
    pub group: String,
    /// The slave to promote (its address or name); `None`: the live slave with the longest log.
    pub slave: Option<String>,
    /// Promote even when the slave lacks what the master acknowledged, or the master is live
    /// but cannot be reached.
    pub force: bool,
    /// How long the slave may take to catch up with a live master, and the NameServer to show
    /// the new master.
    pub timeout: Duration,
}

/// What a promotion did, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteReport {
    pub group: String,
    /// The master before, and whether it was live (it then handed over).
    pub old_master: Option<String>,
    pub old_master_live: bool,
    pub new_master: String,
    pub master_epoch: u32,
    /// The new master's log end when it took over (where its epoch begins).
    pub log_end: u64,
    /// Forced over a gone master: bytes the old master acknowledged, or wrote, that the new
    /// master does not hold (as of the old master's last heartbeat).
    pub acknowledged_bytes_lost: u64,
    pub unreplicated_bytes_lost: u64,
    /// Each step and how long it took.
    pub steps: Vec<(String, Duration)>,
    /// Whether the old master was seen following the new one before the timeout.
    pub old_master_follows: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("{0}")]
    NameServer(#[from] NameServerError),
    #[error("{0}")]
    Broker(#[from] Error),
    #[error("broker {broker} refused: {}", .response.message)]
    Refused {
        broker: String,
        response: ErrorResponse,
    },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, PromoteError>;

impl Admin {
    /// Makes a slave of `options.group` its master with the next epoch (see the module's
    /// documentation); `config` gives the client identity, credential and timeouts used to
    /// reach the brokers.
    ///
    /// ```no_run
    /// # async fn example(nameserver: smq_client::nameserver_client::NameServerClient) -> Result<(), smq_client::promote::PromoteError> {
    /// use std::time::Duration;
    /// use smq_client::promote::PromoteOptions;
    /// use smq_client::{Admin, ClientConfig};
    ///
    /// let options = PromoteOptions {
    ///     group: "g1".into(),
    ///     slave: None,
    ///     force: false,
    ///     timeout: Duration::from_secs(30),
    /// };
    /// let config = ClientConfig::with_nameserver(nameserver.clone());
    /// let report = Admin::promote(&nameserver, &config, &options).await?;
    /// println!("{} is the master of g1 in epoch {}", report.new_master, report.master_epoch);
    /// # Ok(()) }
    /// ```
    pub async fn promote(
        nameserver: &NameServerClient,
        config: &ClientConfig,
        options: &PromoteOptions,
    ) -> Result<PromoteReport> {
        let mut run = Run {
            step_started: Instant::now(),
            steps: Vec::new(),
        };
        let cluster = nameserver.cluster().await?;
        let group = Group::find(&cluster, &options.group)?;
        let slave = group.choose_slave(options.slave.as_deref())?;
        run.step(format!(
            "found group {} (epoch {}): master {}, slave {} (log end {})",
            options.group,
            group.epoch(),
            group.master_description(),
            slave.addr,
            slave.log_end_position
        ));
        let broker_options = config.connection_options();
        let connect = |addr: &str| Connection::connect(broker_options.to(addr));
        let master = match group.live_master() {
            Some(master) => match connect(&master.addr).await {
                Ok(connection) => Some((master.addr.clone(), connection)),
                Err(error) if options.force => {
                    run.step(format!(
                        "the master {} is live but cannot be reached ({error}): forced on",
                        master.addr
                    ));
                    None
                }
                Err(error) => {
                    return Err(PromoteError::Invalid(format!(
                        "the master {} is live in the NameServer but cannot be reached ({error}): \
                         wait until it expires from the routes, or pass --force",
                        master.addr
                    )))
                }
            },
            None => None,
        };
        let slave_connection = connect(&slave.addr).await?;
        let (min_log_end, min_epoch) = match &master {
            Some((addr, connection)) => {
                let handed = hand_over(
                    connection,
                    &slave.addr,
                    options.timeout,
                    HandOverAction::Stop,
                )
                .await?;
                run.step(format!(
                    "the master {addr} stopped taking writes; the slave holds its whole log ({} bytes)",
                    handed.log_end
                ));
                (handed.log_end, handed.master_epoch.max(group.epoch()) + 1)
            }
            None => (
                group
                    .known
                    .and_then(|known| known.acknowledged_position)
                    .unwrap_or(0),
                group.epoch() + 1,
            ),
        };
        let promoted = promote(
            &slave_connection,
            Promote {
                min_log_end,
                min_epoch,
                force: options.force,
            },
            options.timeout,
        )
        .await;
        let promoted = match promoted {
            Ok(promoted) => promoted,
            Err(error) => {
                if let Some((_, connection)) = &master {
                    // Give the group its writer back.
                    let _ = hand_over(
                        connection,
                        &slave.addr,
                        options.timeout,
                        HandOverAction::Resume,
                    )
                    .await;
                }
                return Err(error);
            }
        };
        run.step(format!(
            "{} is the master in epoch {} from log position {}",
            slave.addr, promoted.master_epoch, promoted.log_end
        ));
        let (acknowledged_bytes_lost, unreplicated_bytes_lost) = match (&master, group.known) {
            (None, Some(known)) => (
                known
                    .acknowledged_position
                    .map_or(0, |acked| acked.saturating_sub(promoted.log_end)),
                known
                    .master_log_end
                    .map_or(0, |end| end.saturating_sub(promoted.log_end)),
            ),
            _ => (0, 0),
        };
        let deadline = Instant::now() + options.timeout;
        wait_for(nameserver, deadline, |cluster| {
            cluster.groups.iter().any(|known| {
                known.group == options.group
                    && known.epoch >= promoted.master_epoch
                    && known.master_live
                    && known.master_addr.as_deref() == Some(slave.addr.as_str())
            })
        })
        .await?;
        run.step("the NameServer routes the group's writes to the new master".into());
        let mut old_master_follows = false;
        if let Some((addr, connection)) = &master {
            hand_over(
                connection,
                &slave.addr,
                options.timeout,
                HandOverAction::Follow,
            )
            .await?;
            old_master_follows = wait_for(nameserver, deadline, |cluster| {
                cluster.brokers.iter().any(|broker| {
                    broker.group == options.group
                        && broker.addr == *addr
                        && broker.role == Role::Slave
                        && broker.master_addr.as_deref() == Some(slave.addr.as_str())
                })
            })
            .await
            .is_ok();
            run.step(if old_master_follows {
                format!("the old master {addr} follows the new master as its slave")
            } else {
                format!("the old master {addr} was told to follow the new master but does not show as its slave yet")
            });
        }
        Ok(PromoteReport {
            group: options.group.clone(),
            old_master: group.master_addr(),
            old_master_live: master.is_some(),
            new_master: slave.addr.clone(),
            master_epoch: promoted.master_epoch,
            log_end: promoted.log_end,
            acknowledged_bytes_lost,
            unreplicated_bytes_lost,
            steps: run.steps,
            old_master_follows,
        })
    }
}

/// The steps done so far, each with how long it took.
struct Run {
    step_started: Instant,
    steps: Vec<(String, Duration)>,
}

impl Run {
    fn step(&mut self, what: String) {
        let now = Instant::now();
        self.steps.push((what, now - self.step_started));
        self.step_started = now;
    }
}

/// A broker group as the NameServer sees it.
struct Group<'a> {
    brokers: Vec<&'a BrokerInfo>,
    known: Option<&'a GroupEpoch>,
}

impl<'a> Group<'a> {
    fn find(cluster: &'a ClusterView, name: &str) -> Result<Group<'a>> {
        let brokers: Vec<&BrokerInfo> =
            cluster.brokers.iter().filter(|b| b.group == name).collect();
        let known = cluster.groups.iter().find(|known| known.group == name);
        if brokers.is_empty() && known.is_none() {
            return Err(PromoteError::Invalid(format!(
                "the NameServer knows no broker group {name}: `smq cluster` lists them"
            )));
        }
        Ok(Group { brokers, known })
    }

    fn epoch(&self) -> u32 {
        self.known.map_or(0, |known| known.epoch)
    }

    fn live_master(&self) -> Option<&'a BrokerInfo> {
        self.brokers
            .iter()
            .copied()
            .find(|broker| broker.role == Role::Master)
    }

    fn master_addr(&self) -> Option<String> {
        self.live_master()
            .map(|master| master.addr.clone())
            .or_else(|| self.known.and_then(|known| known.master_addr.clone()))
    }

    fn master_description(&self) -> String {
        match (self.live_master(), self.known) {
            (Some(master), _) => format!("{} (live)", master.addr),
            (None, Some(known)) => format!(
                "{} (gone; last reported log end {}, acknowledged {})",
                known.master_addr.as_deref().unwrap_or("unknown"),
                known
                    .master_log_end
                    .map_or_else(|| "unknown".into(), |end| end.to_string()),
                known
                    .acknowledged_position
                    .map_or_else(|| "unknown".into(), |acked| acked.to_string())
            ),
            (None, None) => "none known".into(),
        }
    }

    /// The named live slave, or the live slave with the longest log (in sync first).
    fn choose_slave(&self, wanted: Option<&str>) -> Result<&'a BrokerInfo> {
        let mut slaves = self
            .brokers
            .iter()
            .copied()
            .filter(|broker| broker.role == Role::Slave);
        let chosen = match wanted {
            Some(wanted) => slaves.find(|slave| slave.addr == wanted || slave.name == wanted),
            None => {
                slaves.max_by_key(|slave| (slave.in_sync == Some(true), slave.log_end_position))
            }
        };
        chosen.ok_or_else(|| {
            PromoteError::Invalid(match wanted {
                Some(wanted) => {
                    format!("{wanted} is not a live slave of the group (`smq cluster` lists them)")
                }
                None => "the group has no live slave to promote".into(),
            })
        })
    }
}

async fn call(
    connection: &Connection,
    request: RoleRequest,
    timeout: Duration,
) -> Result<RoleResponse> {
    let api_key = request.api_key();
    let body = connection
        .call_raw(
            &format!("{api_key} (role change) request"),
            timeout,
            |id, out| request.encode(id, out),
        )
        .await?;
    let response = RoleResponse::decode(api_key, body).map_err(|error| {
        Error::decode(
            "role change response".to_owned(),
            connection.broker(),
            error,
        )
    })?;
    match response {
        RoleResponse::Error(response) => Err(PromoteError::Refused {
            broker: connection.broker().to_owned(),
            response,
        }),
        response => Ok(response),
    }
}

async fn hand_over(
    connection: &Connection,
    slave_addr: &str,
    timeout: Duration,
    action: HandOverAction,
) -> Result<HandOverResponse> {
    let request = RoleRequest::HandOver(HandOver {
        slave_addr: slave_addr.to_owned(),
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        action,
    });
    // The broker answers within the request's own timeout; a little on top for the way back.
    match call(connection, request, timeout + Duration::from_secs(5)).await? {
        RoleResponse::HandOver(answer) => Ok(answer),
        other => Err(PromoteError::Invalid(format!(
            "an unexpected answer to HandOver: {other:?}"
        ))),
    }
}

async fn promote(
    connection: &Connection,
    request: Promote,
    timeout: Duration,
) -> Result<PromoteResponse> {
    match call(connection, RoleRequest::Promote(request), timeout).await? {
        RoleResponse::Promote(answer) => Ok(answer),
        other => Err(PromoteError::Invalid(format!(
            "an unexpected answer to Promote: {other:?}"
        ))),
    }
}

/// Asks the NameServer's cluster view until `done` holds, or fails at `deadline`.
async fn wait_for(
    nameserver: &NameServerClient,
    deadline: Instant,
    done: impl Fn(&ClusterView) -> bool,
) -> Result<()> {
    loop {
        if let Ok(cluster) = nameserver.cluster().await {
            if done(&cluster) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(PromoteError::Invalid(
                "the NameServer did not show the change before the timeout".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
