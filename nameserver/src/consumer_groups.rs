//! Consumer-group coordination: the members of each (consumer group, topic), rebuilt from their
//! heartbeats like broker registrations, and which member owns which queue. Pure: no clock, no
//! IO; the caller passes the time (ms on a monotonic clock), the topic's queues and the owner
//! epochs the brokers store.
//!
//! Rules (proto-spec.md §8.7):
//! - A queue has at most one owner: it is given to a member only while no live member holds it.
//! - Revoke before assign: a queue leaves its owner only when the owner's heartbeat no longer
//!   lists it (it stopped fetching and committed) or its session expired.
//! - Sticky: each member keeps what it holds up to its fair share (queues / members, the
//!   remainder going to the members holding most); only the surplus moves, only free queues
//!   are given out.
//! - Every grant raises the queue's owner epoch above any epoch given out or stored by a broker,
//!   so that brokers refuse commits of the queue's former owners.
//! - While warming up (after a start or a failover) members keep what they report and nothing is
//!   given out: members holding queues may not have reported yet. Except to a consumer group
//!   new to this NameServer (its first member holds nothing and no broker of the topic stores an
//!   offset of it): it is served at once, its owner epochs raised to the wall clock in ms, above
//!   any a previous NameServer can have given out, so that an old member that shows up late
//!   loses its claim and its commits are refused.

use std::collections::{BTreeMap, BTreeSet};

use smq_protocol::nameserver_api::{MemberHeartbeat, MemberHeartbeatReply, OwnedQueue};

/// A queue of a topic: (broker group, queue id).
pub type QueueId = (String, u32);

#[derive(Debug, Clone)]
struct Member {
    session_timeout_ms: u64,
    last_heartbeat_ms: u64,
    /// The queues it reported holding in its last heartbeat, plus those given to it since, with
    /// their owner epochs.
    held: BTreeMap<QueueId, u64>,
}

impl Member {
    fn is_live(&self, now_ms: u64) -> bool {
        now_ms
            < self
                .last_heartbeat_ms
                .saturating_add(self.session_timeout_ms)
    }
}

/// The members of one consumer group reading one topic, and the owner epochs given out.
#[derive(Debug, Default)]
struct GroupTopic {
    members: BTreeMap<String, Member>,
    /// The highest owner epoch known per queue (given out, or reported by a member).
    epochs: BTreeMap<QueueId, u64>,
    /// First heard of during a warm-up with no prior state anywhere this NameServer can see (its
    /// first member held nothing, no broker stored an offset of it): assigned during the warm-up
    /// too, with epochs from the wall clock.
    new_during_warm_up: bool,
}

impl GroupTopic {
    /// The member holding `queue`, other than `except`, with its epoch.
    fn holder(&self, queue: &QueueId, except: &str) -> Option<(&String, u64)> {
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .find_map(|(id, member)| member.held.get(queue).map(|epoch| (id, *epoch)))
    }

    /// Forgets members whose session ended; returns their ids.
    fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| !member.is_live(now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        expired
    }

    /// Each member's fair share of `queue_count` queues: the remainder goes to the members that
    /// hold most of `queues` (then by id), so that no one gives up a queue only to take another.
    fn quotas(&self, queues: &BTreeSet<QueueId>) -> BTreeMap<&String, usize> {
        let count = self.members.len().max(1);
        let (base, extra) = (queues.len() / count, queues.len() % count);
        let mut order: Vec<(&String, usize)> = self
            .members
            .iter()
            .map(|(id, member)| {
                let holding = member.held.keys().filter(|q| queues.contains(*q)).count();
                (id, holding)
            })
            .collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        order
            .into_iter()
            .enumerate()
            .map(|(rank, (id, _))| (id, base + usize::from(rank < extra)))
            .collect()
    }
}

/// Whether the NameServer is warming up when a member heartbeat arrives (proto-spec.md §8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmUp {
    /// Warm: the members and brokers that exist have reported.
    Over,
    /// Warming up at `wall_ms` (ms since the Unix epoch): the floor of the owner epochs given
    /// to a consumer group new to this NameServer.
    Running { wall_ms: u64 },
}

/// Why a member heartbeat did something other than the usual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    Joined,
    Left,
}

/// Every (consumer group, topic) with live members.
#[derive(Debug, Default)]
pub struct ConsumerGroups {
    topics: BTreeMap<(String, String), GroupTopic>,
}

/// A live member as the views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub member_id: String,
    pub session_timeout_ms: u64,
    pub expires_in_ms: u64,
    pub held: Vec<OwnedQueue>,
}

impl ConsumerGroups {
    /// Handles one member heartbeat of `consumer_group`. `queues` are the topic's queues now
    /// (every readable broker group's); `stored_epochs` the owner epochs brokers reported for
    /// this consumer group and topic. Returns the reply and what happened to the member.
    pub fn heartbeat(
        &mut self,
        consumer_group: &str,
        heartbeat: MemberHeartbeat,
        queues: &BTreeSet<QueueId>,
        stored_epochs: &BTreeMap<QueueId, u64>,
        now_ms: u64,
        warm_up: WarmUp,
    ) -> (MemberHeartbeatReply, Option<MemberEvent>) {
        let interval_ms = heartbeat_interval_ms(heartbeat.session_timeout_ms);
        let key = (consumer_group.to_owned(), heartbeat.topic.clone());
        let first_heard = !self.topics.contains_key(&key);
        let group = self.topics.entry(key).or_default();
        // A member leaving may have released queues it held: no sign of a new group.
        if first_heard
            && matches!(warm_up, WarmUp::Running { .. })
            && heartbeat.owned.is_empty()
            && !heartbeat.leave
            && stored_epochs.is_empty()
        {
            group.new_during_warm_up = true;
        }
        let (keep_only_held, epoch_floor) = match warm_up {
            WarmUp::Over => (false, 0),
            WarmUp::Running { wall_ms } => (!group.new_during_warm_up, wall_ms),
        };
        group.expire(now_ms);
        let id = heartbeat.member_id.clone();
        if heartbeat.leave {
            let left = group.members.remove(&id).map(|_| MemberEvent::Left);
            let reply = MemberHeartbeatReply {
                assigned: Vec::new(),
                heartbeat_interval_ms: interval_ms,
                warming_up: keep_only_held,
            };
            return (reply, left);
        }
        let joined = (!group.members.contains_key(&id)).then_some(MemberEvent::Joined);
        let held = claims(group, &id, &heartbeat.owned);
        group.members.insert(
            id.clone(),
            Member {
                session_timeout_ms: heartbeat.session_timeout_ms,
                last_heartbeat_ms: now_ms,
                held,
            },
        );
        let assigned = if keep_only_held {
            group.members[&id].held.clone()
        } else {
            assign(group, &id, queues, stored_epochs, epoch_floor)
        };
        let reply = MemberHeartbeatReply {
            assigned: assigned
                .into_iter()
                .map(|((broker_group, queue_id), owner_epoch)| OwnedQueue {
                    broker_group,
                    queue_id,
                    owner_epoch,
                })
                .collect(),
            heartbeat_interval_ms: interval_ms,
            warming_up: keep_only_held,
        };
        (reply, joined)
    }

    /// Forgets the members whose session ended: (consumer group, topic, member id) of each.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, String, String)> {
        let mut expired = Vec::new();
        for ((consumer_group, topic), group) in &mut self.topics {
            for id in group.expire(now_ms) {
                expired.push((consumer_group.clone(), topic.clone(), id));
            }
        }
        expired
    }

    /// Every (consumer group, topic) the NameServer has seen members of.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.topics.keys().cloned().collect()
    }

    /// The live members of `consumer_group` reading `topic`, by id.
    pub fn members(&self, consumer_group: &str, topic: &str, now_ms: u64) -> Vec<MemberState> {
        let Some(group) = self
            .topics
            .get(&(consumer_group.to_owned(), topic.to_owned()))
        else {
            return Vec::new();
        };
        group
            .members
            .iter()
            .filter(|(_, member)| member.is_live(now_ms))
            .map(|(id, member)| MemberState {
                member_id: id.clone(),
                session_timeout_ms: member.session_timeout_ms,
                expires_in_ms: (member.last_heartbeat_ms + member.session_timeout_ms)
                    .saturating_sub(now_ms),
                held: member
                    .held
                    .iter()
                    .map(|((broker_group, queue_id), epoch)| OwnedQueue {
                        broker_group: broker_group.clone(),
                        queue_id: *queue_id,
                        owner_epoch: *epoch,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The highest owner epoch given out for each queue of `consumer_group` and `topic`.
    pub fn epochs(&self, consumer_group: &str, topic: &str) -> BTreeMap<QueueId, u64> {
        self.topics
            .get(&(consumer_group.to_owned(), topic.to_owned()))
            .map(|group| group.epochs.clone())
            .unwrap_or_default()
    }
}

/// How often a member with this session timeout heartbeats: a fifth of it, at most 1 s, so that
/// a released queue reaches its next owner quickly.
pub fn heartbeat_interval_ms(session_timeout_ms: u64) -> u64 {
    (session_timeout_ms / 5).clamp(50, 1_000)
}

/// What member `id` holds, from what it reports: a queue another live member holds with an
/// equal or higher epoch stays with that member (this claim is stale, e.g. a member that lost it
/// while cut off), and so does a claim below the epoch given out since; otherwise the claim
/// stands (after a NameServer failover this is how the new one learns who owns what) and the
/// other holder, if any, loses the queue.
fn claims(group: &mut GroupTopic, id: &str, owned: &[OwnedQueue]) -> BTreeMap<QueueId, u64> {
    let mut held = BTreeMap::new();
    for claim in owned {
        let queue = (claim.broker_group.clone(), claim.queue_id);
        let known = group.epochs.get(&queue).copied().unwrap_or(0);
        let other = group
            .holder(&queue, id)
            .map(|(holder, epoch)| (holder.clone(), epoch));
        if claim.owner_epoch < known {
            continue;
        }
        if let Some((other, epoch)) = other {
            if epoch >= claim.owner_epoch {
                continue;
            }
            if let Some(member) = group.members.get_mut(&other) {
                member.held.remove(&queue);
            }
        }
        group
            .epochs
            .insert(queue.clone(), known.max(claim.owner_epoch));
        held.insert(queue, claim.owner_epoch);
    }
    held
}

/// The queues member `id` may read after this heartbeat: what it holds up to its share (the
/// rest is revoked, left out of the reply), plus free queues up to its share, each given a new
/// owner epoch, above `epoch_floor` too. A held queue that is not in `queues` (its broker group
/// is gone from the routes) stays with it.
fn assign(
    group: &mut GroupTopic,
    id: &str,
    queues: &BTreeSet<QueueId>,
    stored_epochs: &BTreeMap<QueueId, u64>,
    epoch_floor: u64,
) -> BTreeMap<QueueId, u64> {
    let quota = group.quotas(queues)[&id.to_owned()];
    let held = group.members[id].held.clone();
    let mut keep: BTreeMap<QueueId, u64> = BTreeMap::new();
    let mut counted = 0;
    for (queue, epoch) in &held {
        if !queues.contains(queue) {
            keep.insert(queue.clone(), *epoch);
        } else if counted < quota {
            keep.insert(queue.clone(), *epoch);
            counted += 1;
        }
    }
    let free: Vec<QueueId> = queues
        .iter()
        .filter(|queue| group.holder(queue, "").is_none())
        .take(quota.saturating_sub(counted))
        .cloned()
        .collect();
    for queue in free {
        let given = group.epochs.get(&queue).copied().unwrap_or(0);
        let stored = stored_epochs.get(&queue).copied().unwrap_or(0);
        let epoch = given.max(stored).max(epoch_floor) + 1;
        group.epochs.insert(queue.clone(), epoch);
        group
            .members
            .get_mut(id)
            .expect("the member was just inserted")
            .held
            .insert(queue.clone(), epoch);
        keep.insert(queue, epoch);
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_MS: u64 = 3_000;
    /// The wall clock during the tests' warm-ups.
    const WALL_MS: u64 = 1_764_590_000_000;

    fn queues(groups: &[&str], per_group: u32) -> BTreeSet<QueueId> {
        groups
            .iter()
            .flat_map(|g| (0..per_group).map(move |q| (g.to_string(), q)))
            .collect()
    }

    /// A member that holds exactly what the NameServer gave it last time.
    struct Sim {
        groups: ConsumerGroups,
        queues: BTreeSet<QueueId>,
        stored: BTreeMap<QueueId, u64>,
        holding: BTreeMap<String, Vec<OwnedQueue>>,
    }

    impl Sim {
        fn new(queues: BTreeSet<QueueId>) -> Sim {
            Sim {
                groups: ConsumerGroups::default(),
                queues,
                stored: BTreeMap::new(),
                holding: BTreeMap::new(),
            }
        }

        fn beat(&mut self, id: &str, now_ms: u64, warming_up: bool) -> Vec<OwnedQueue> {
            let warm_up = if warming_up {
                WarmUp::Running { wall_ms: WALL_MS }
            } else {
                WarmUp::Over
            };
            let owned = self.holding.get(id).cloned().unwrap_or_default();
            let heartbeat = MemberHeartbeat {
                member_id: id.into(),
                topic: "t".into(),
                session_timeout_ms: SESSION_MS,
                owned,
                leave: false,
            };
            let (reply, _) =
                self.groups
                    .heartbeat("cg", heartbeat, &self.queues, &self.stored, now_ms, warm_up);
            // The member releases what was revoked and takes what was given.
            self.holding.insert(id.into(), reply.assigned.clone());
            reply.assigned
        }

        fn owners(&self, now_ms: u64) -> BTreeMap<QueueId, Vec<String>> {
            let mut owners: BTreeMap<QueueId, Vec<String>> = BTreeMap::new();
            for member in self.groups.members("cg", "t", now_ms) {
                for queue in member.held {
                    owners
                        .entry((queue.broker_group, queue.queue_id))
                        .or_default()
                        .push(member.member_id.clone());
                }
            }
            owners
        }

        fn assert_one_owner_each(&self, now_ms: u64) {
            for (queue, owners) in self.owners(now_ms) {
                assert_eq!(owners.len(), 1, "{queue:?} has owners {owners:?}");
            }
        }
    }

    #[test]
    fn queues_spread_evenly_and_a_joiner_takes_only_the_surplus() {
        let mut sim = Sim::new(queues(&["g1", "g2"], 4));
        for round in 0..3 {
            for id in ["a", "b"] {
                sim.beat(id, round * 100, false);
                sim.assert_one_owner_each(round * 100);
            }
        }
        let before: BTreeMap<String, Vec<OwnedQueue>> = sim.holding.clone();
        assert_eq!(before["a"].len(), 4);
        assert_eq!(before["b"].len(), 4);
        for round in 3..8 {
            for id in ["a", "b", "c"] {
                sim.beat(id, round * 100, false);
                sim.assert_one_owner_each(round * 100);
            }
        }
        let sizes: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|id| sim.holding[*id].len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|n| (2..=3).contains(n)), "{sizes:?}");
        // a and b only gave queues up; none moved between them.
        for id in ["a", "b"] {
            for queue in &sim.holding[id] {
                let key = (&queue.broker_group, queue.queue_id);
                assert!(
                    before[id]
                        .iter()
                        .any(|q| (&q.broker_group, q.queue_id) == key),
                    "{id} got {queue:?} it did not have"
                );
            }
        }
    }

    #[test]
    fn a_revoked_queue_moves_only_after_its_owner_released_it_and_with_a_higher_epoch() {
        let mut sim = Sim::new(queues(&["g1"], 2));
        let a = sim.beat("a", 0, false);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|q| q.owner_epoch == 1));
        // b joins: a must give one up, but b gets nothing until a's next heartbeat says so.
        assert!(sim.beat("b", 10, false).is_empty());
        sim.holding.insert("a".into(), a.clone()); // a has not seen the revocation yet
        assert!(sim.beat("b", 20, false).is_empty());
        let a = sim.beat("a", 30, false);
        assert_eq!(a.len(), 1, "one queue revoked from a");
        let b = sim.beat("b", 40, false);
        assert!(
            b.is_empty(),
            "a still holds the revoked queue until it reports otherwise"
        );
        sim.beat("a", 50, false); // now a reports only the one it kept
        let b = sim.beat("b", 60, false);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].owner_epoch, 2, "the queue changed owner: epoch 1 -> 2");
        sim.assert_one_owner_each(60);
    }

    #[test]
    fn an_expired_members_queues_go_to_the_others_with_epochs_above_the_brokers() {
        let mut sim = Sim::new(queues(&["g1"], 4));
        for round in 0..3 {
            sim.beat("a", round * 10, false);
            sim.beat("b", round * 10, false);
        }
        assert_eq!(sim.holding["b"].len(), 2);
        for queue in &sim.holding["b"] {
            sim.stored
                .insert((queue.broker_group.clone(), queue.queue_id), 40);
        }
        // b dies; within its session a gets nothing more.
        assert_eq!(sim.beat("a", SESSION_MS, false).len(), 2);
        let a = sim.beat("a", SESSION_MS + 20, false);
        assert_eq!(a.len(), 4);
        assert!(
            a.iter().filter(|q| q.owner_epoch == 41).count() == 2,
            "{a:?}"
        );
    }

    #[test]
    fn a_new_nameserver_adopts_what_members_report_and_moves_nothing() {
        let mut sim = Sim::new(queues(&["g1", "g2"], 3));
        for round in 0..4 {
            for id in ["a", "b", "c"] {
                sim.beat(id, round * 100, false);
            }
        }
        let before = sim.holding.clone();
        sim.groups = ConsumerGroups::default(); // failover: a NameServer that knows nothing
        for id in ["c", "a", "b"] {
            let assigned = sim.beat(id, 1_000, true);
            assert_eq!(assigned, before[id]);
        }
        for round in 0..3 {
            for id in ["b", "c", "a"] {
                sim.beat(id, 2_000 + round * 100, false);
            }
        }
        assert_eq!(sim.holding, before, "nothing moved");
    }

    #[test]
    fn a_consumer_group_new_during_the_warm_up_is_served_at_once_above_any_earlier_epoch() {
        let mut sim = Sim::new(queues(&["g1", "g2"], 2));
        let a = sim.beat("a", 0, true);
        assert_eq!(a.len(), 4, "a new group waits for no warm-up");
        assert!(a.iter().all(|q| q.owner_epoch > WALL_MS), "{a:?}");
        // A second member during the warm-up: the usual sticky handover.
        for round in 1..4 {
            sim.beat("b", round * 10, true);
            sim.beat("a", round * 10 + 5, true);
            sim.assert_one_owner_each(round * 10 + 5);
        }
        assert_eq!(sim.holding["a"].len(), 2);
        assert_eq!(sim.holding["b"].len(), 2);
        // A member a previous NameServer gave a queue shows up late: its claim is below every
        // epoch given here, so it loses it and nothing has two owners.
        let late = OwnedQueue {
            broker_group: "g1".into(),
            queue_id: 0,
            owner_epoch: 7,
        };
        sim.holding.insert("late".into(), vec![late]);
        assert!(sim.beat("late", 50, true).is_empty());
        sim.assert_one_owner_each(50);
    }

    #[test]
    fn during_the_warm_up_a_group_with_prior_state_gets_nothing_new() {
        // Its first member reports a queue: members holding others may not have reported.
        let mut sim = Sim::new(queues(&["g1"], 2));
        let held = OwnedQueue {
            broker_group: "g1".into(),
            queue_id: 0,
            owner_epoch: 3,
        };
        sim.holding.insert("a".into(), vec![held.clone()]);
        assert_eq!(sim.beat("a", 0, true), vec![held.clone()]);
        assert!(sim.beat("b", 10, true).is_empty());
        // Its first heartbeat here is a member leaving (it may have released queues).
        let mut sim = Sim::new(queues(&["g1"], 2));
        let leave = MemberHeartbeat {
            member_id: "gone".into(),
            topic: "t".into(),
            session_timeout_ms: SESSION_MS,
            owned: Vec::new(),
            leave: true,
        };
        let warm_up = WarmUp::Running { wall_ms: WALL_MS };
        sim.groups
            .heartbeat("cg", leave, &sim.queues, &sim.stored, 0, warm_up);
        assert!(sim.beat("a", 10, true).is_empty());
        // A broker of the topic stores an offset of it: it consumed before.
        let mut sim = Sim::new(queues(&["g1"], 2));
        sim.stored.insert(("g1".into(), 1), 2);
        assert!(sim.beat("a", 0, true).is_empty());
        // Once warm, both are served as usual.
        assert_eq!(sim.beat("a", 100, false).len(), 2);
    }

    #[test]
    fn a_stale_claim_below_the_epoch_given_out_is_dropped() {
        let mut sim = Sim::new(queues(&["g1"], 1));
        let a = sim.beat("a", 0, false);
        // a is cut off, its session expires, b takes the queue.
        let b = sim.beat("b", SESSION_MS + 1, false);
        assert_eq!(b.len(), 1);
        assert!(b[0].owner_epoch > a[0].owner_epoch);
        // a comes back still claiming the queue with its old epoch: refused.
        sim.holding.insert("a".into(), a);
        assert!(sim.beat("a", SESSION_MS + 2, false).is_empty());
        sim.assert_one_owner_each(SESSION_MS + 2);
    }
}
