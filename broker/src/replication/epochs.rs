//! Reconciling a slave's log with its master's by their epoch histories (Kafka's KIP-101/279,
//! RocketMQ's RIP-44): at ReplicaHello the master finds the last position both logs share and
//! decides whether the slave may drop what it holds past it. Pure: the histories and log ends
//! are the arguments.
//!
//! Two logs hold the same bytes wherever their histories name the same epoch (an epoch is one
//! master's run, writing one log), so they agree up to the first history boundary where the
//! epochs they name differ, or up to the shorter end. What the slave holds past that point it
//! drops only when no acknowledged write can be there (proto-spec.md section 10.1).

use smq_protocol::replication::EpochEntry;

use crate::storage::epoch_at;

/// One side's log: its epoch history and its end.
#[derive(Debug, Clone, Copy)]
pub struct Log<'a> {
    pub epochs: &'a [EpochEntry],
    pub end: u64,
}

impl Log<'_> {
    fn last_epoch(&self) -> u32 {
        self.epochs.last().map_or(0, |entry| entry.epoch)
    }
}

/// What the master makes of a slave's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The slave's log, cut at `truncate_to` (its end when nothing is cut), is a prefix of the
    /// master's: it copies from there.
    Follow { truncate_to: u64 },
    /// The slave holds `[position, slave_end)` of epoch `epoch` that this master does not have
    /// and has written nothing over (the master lost that tail: a power loss, a lost disk).
    /// Acknowledged writes may be among those bytes: the slave keeps them, and this master
    /// takes no writes until an operator promotes the slave.
    MasterBehind {
        position: u64,
        slave_end: u64,
        epoch: u32,
    },
    /// The slave holds bytes of epoch `slave_epoch` (from `position`), newer than what this
    /// master has there (`master_epoch`): another master superseded this one.
    MasterStale {
        position: u64,
        slave_epoch: u32,
        master_epoch: u32,
    },
}

/// Decides where `slave` must be cut to follow `master`.
pub fn reconcile(master: Log<'_>, slave: Log<'_>) -> Verdict {
    if slave.last_epoch() > master.last_epoch() {
        return Verdict::MasterStale {
            position: slave.epochs.last().map_or(0, |entry| entry.start),
            slave_epoch: slave.last_epoch(),
            master_epoch: master.last_epoch(),
        };
    }
    let limit = master.end.min(slave.end);
    let common = master
        .epochs
        .iter()
        .chain(slave.epochs)
        .map(|entry| entry.start)
        .filter(|&start| start < limit)
        .filter(|&start| epoch_at(master.epochs, start) != epoch_at(slave.epochs, start))
        .min()
        .unwrap_or(limit);
    if slave.end <= common {
        return Verdict::Follow {
            truncate_to: slave.end,
        };
    }
    let slave_epoch = epoch_at(slave.epochs, common);
    let master_epoch = epoch_at(master.epochs, common);
    if slave_epoch > master_epoch {
        return Verdict::MasterStale {
            position: common,
            slave_epoch,
            master_epoch,
        };
    }
    let behind = Verdict::MasterBehind {
        position: common,
        slave_end: slave.end,
        epoch: slave_epoch,
    };
    if slave_epoch == master_epoch {
        // Both name the same epoch there and the slave has more of it: the master lost it.
        return behind;
    }
    // The master's newer epoch begins at `common` (where the histories first differ).
    let cut_by_promotion = master
        .epochs
        .iter()
        .any(|entry| entry.start == common && entry.promoted);
    if cut_by_promotion || common < master.end {
        // A promotion cut the older epoch here: what the slave holds past it was never
        // acknowledged through the promoted master (it was in sync, or the operator forced
        // it and was told how much). Or the master restarted, lost that tail and has taken
        // writes since: under asynchronous replication those bytes were never covered.
        Verdict::Follow {
            truncate_to: common,
        }
    } else {
        behind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(epoch: u32, start: u64) -> EpochEntry {
        EpochEntry {
            epoch,
            start,
            promoted: false,
        }
    }

    fn promotion(epoch: u32, start: u64) -> EpochEntry {
        EpochEntry {
            promoted: true,
            ..restart(epoch, start)
        }
    }

    fn verdict(
        master: &[EpochEntry],
        master_end: u64,
        slave: &[EpochEntry],
        slave_end: u64,
    ) -> Verdict {
        reconcile(
            Log {
                epochs: master,
                end: master_end,
            },
            Log {
                epochs: slave,
                end: slave_end,
            },
        )
    }

    #[test]
    fn a_slave_behind_or_level_with_its_master_copies_from_its_end() {
        let master = [restart(1, 0), restart(2, 100)];
        assert_eq!(
            verdict(&master, 150, &[restart(1, 0)], 80),
            Verdict::Follow { truncate_to: 80 }
        );
        assert_eq!(
            verdict(&master, 150, &[restart(1, 0)], 100),
            Verdict::Follow { truncate_to: 100 }
        );
        assert_eq!(
            verdict(&master, 150, &master, 120),
            Verdict::Follow { truncate_to: 120 }
        );
        assert_eq!(
            verdict(&master, 150, &[], 0),
            Verdict::Follow { truncate_to: 0 }
        );
    }

    #[test]
    fn a_restarted_master_that_lost_its_tail_keeps_the_slaves_copy_of_it() {
        // The master restarted at 100 (epoch 2) but its slave holds epoch 1 up to 180.
        let master = [restart(1, 0), restart(2, 100)];
        assert_eq!(
            verdict(&master, 100, &[restart(1, 0)], 180),
            Verdict::MasterBehind {
                position: 100,
                slave_end: 180,
                epoch: 1
            }
        );
        // A master that lost its whole data directory starts over at epoch 1.
        assert_eq!(
            verdict(&[restart(1, 0)], 0, &[restart(1, 0)], 180),
            Verdict::MasterBehind {
                position: 0,
                slave_end: 180,
                epoch: 1
            }
        );
        assert_eq!(
            verdict(&[restart(1, 0)], 0, &[restart(1, 0), restart(2, 90)], 180),
            Verdict::MasterStale {
                position: 90,
                slave_epoch: 2,
                master_epoch: 1
            }
        );
    }

    #[test]
    fn an_old_master_rejoining_after_a_promotion_drops_its_unreplicated_tail() {
        // The slave was promoted at 100 (epoch 2); the old master had written up to 130.
        let new_master = [restart(1, 0), promotion(2, 100)];
        let old_master = [restart(1, 0)];
        assert_eq!(
            verdict(&new_master, 100, &old_master, 130),
            Verdict::Follow { truncate_to: 100 }
        );
        assert_eq!(
            verdict(&new_master, 400, &old_master, 130),
            Verdict::Follow { truncate_to: 100 }
        );
        // It had restarted itself meanwhile (epoch 2 of its own): the newer epoch 3 wins.
        let new_master = [restart(1, 0), promotion(3, 100)];
        assert_eq!(
            verdict(&new_master, 400, &[restart(1, 0), restart(2, 130)], 160),
            Verdict::Follow { truncate_to: 100 }
        );
    }

    #[test]
    fn a_master_that_missed_a_promotion_is_stale() {
        // This master went on in epoch 1 past 100 where the slave's epoch 2 (a promotion) began.
        let master = [restart(1, 0), restart(3, 200)];
        let slave = [restart(1, 0), promotion(2, 100)];
        assert_eq!(
            verdict(&master, 250, &slave, 150),
            Verdict::MasterStale {
                position: 100,
                slave_epoch: 2,
                master_epoch: 1
            }
        );
    }

    #[test]
    fn a_restarted_master_that_took_writes_over_a_lost_tail_cuts_the_slave() {
        let master = [restart(1, 0), restart(2, 100)];
        assert_eq!(
            verdict(&master, 120, &[restart(1, 0)], 180),
            Verdict::Follow { truncate_to: 100 }
        );
    }
}
