//! Master–slave replication over the broker's own TCP protocol (api keys 100 to 102,
//! proto-spec.md section 10): a slave pulls its master's log bytes and appends them verbatim at
//! the same positions ([`slave`]); the master admits only its group's slaves holding the
//! replication secret, serves them, and tracks what each acknowledged ([`master`]). Storage
//! knows nothing of replication: a slave appends through the store's append path, and the
//! master's "acknowledged by a slave" is one more bound of the store's visible position.

pub mod epochs;
pub mod holders_file;
pub mod lease;
pub mod master;
pub mod role_change;
pub mod slave;

use std::fmt::Write;

use crate::state::Broker;
use smq_protocol::Role;

/// Appends the replication metrics to the Prometheus text of /metrics: on a slave, its lag
/// behind its master; on a master, each connected slave's lag and in-sync state.
pub fn render_metrics(broker: &Broker, out: &mut String) {
    match broker.role_now().role {
        Role::Slave => {
            let lag = broker.slave_status.lag();
            let seconds = lag.ms.map_or(f64::NAN, |ms| ms as f64 / 1000.0);
            let gauges = [
                (
                    "smq_replication_connected",
                    "1 while this slave is connected to its master.",
                    f64::from(u8::from(lag.connected)),
                ),
                (
                    "smq_replication_lag_bytes",
                    "Bytes of the master's log this slave does not hold yet, as of its last fetch.",
                    lag.bytes as f64,
                ),
                (
                    "smq_replication_lag_seconds",
                    "Time since this slave last held everything its master had (NaN: never yet).",
                    seconds,
                ),
            ];
            crate::metrics::write_gauges(out, &gauges);
        }
        Role::Master => {
            let end = broker.store.end_position();
            let slaves = broker.replicas.slaves();
            let _ = writeln!(
                out,
                "# HELP smq_slave_lag_bytes Bytes of this master's log a connected slave has not acknowledged.\n# TYPE smq_slave_lag_bytes gauge"
            );
            for slave in &slaves {
                let lag = end.saturating_sub(slave.acked_position);
                let _ = writeln!(out, "smq_slave_lag_bytes{{slave=\"{}\"}} {lag}", slave.addr);
            }
            let _ = writeln!(
                out,
                "# HELP smq_slave_in_sync 1 while a connected slave is in sync (caught up within replica_lag_time_max_ms).\n# TYPE smq_slave_in_sync gauge"
            );
            for slave in &slaves {
                let in_sync = u8::from(slave.in_sync);
                let _ = writeln!(
                    out,
                    "smq_slave_in_sync{{slave=\"{}\"}} {in_sync}",
                    slave.addr
                );
            }
        }
    }
}
