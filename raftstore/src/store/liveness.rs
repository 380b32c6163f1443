//! Store liveness: one heartbeat from store to store stands for every dormant
//! region the two share, so that a dormant region's followers, which run no
//! election timer, still notice when their leader's store goes away.
//!
//! - **Who heartbeats whom.** A store whose leader asks followers on store `S` to
//!   go dormant adds `S` to its targets; every `raft_heartbeat_ticks` ticks it
//!   sends each target one `STORE_HEARTBEAT` (a `RaftMessage` with region 0 on the
//!   ordinary transport stream) carrying its **incarnation**, its start time.
//!   Targets are kept for the store's life: one small message per pair.
//! - **Who listens.** A follower that goes dormant is *watched* under its
//!   leader's store. A watched store heard from more than `raft_election_ticks`
//!   ticks ago (or heard from under a new incarnation: it restarted, and leads
//!   nothing it led) is **down** for the followers watching it: they are woken
//!   with [`WakeReason::LeaderStoreDown`], which also lets their election timer
//!   run out at once (raft-rs's leader lease would otherwise make them refuse
//!   each other's votes for a further election timeout).
//! - **The bound.** A dormant region whose leader's store dies has a new leader
//!   after at most: the liveness timeout (`raft_election_ticks`), plus one
//!   liveness check (`raft_heartbeat_ticks`), plus the randomized remainder of
//!   the election timeout (below `raft_election_ticks`), plus one election (two
//!   round trips): under 3 election timeouts. A follower whose leader's store
//!   keeps heartbeating stays dormant; one that cannot hear it (a partition, a
//!   paused process) wakes and campaigns, as it would with ticks.
//!
//! Watching starts the clock afresh: a follower goes dormant on a request its
//! leader's store has just sent, which is as good as a heartbeat.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use shoal_proto::metapb::Peer as PeerMeta;
use shoal_proto::raft_serverpb::{ExtraMessage, ExtraMessageType, RaftMessage};

/// Why a dormant peer wakes (what it must do besides ticking again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeReason {
    /// A request, a message, an admin command: just resume.
    Activity,
    /// Its leader's store is down (store liveness): the election timer runs out.
    LeaderStoreDown,
    /// The store started: the peer was loaded dormant, knowing no leader; one
    /// replica per region (the same on every store's reckoning) campaigns at once.
    Start,
}

/// One store's liveness table: what it heard from the others, whom it must
/// heartbeat, and which of its dormant peers depend on which store.
pub(crate) struct StoreLiveness {
    store_id: u64,
    incarnation: u64,
    /// A store not heard from for this long is down.
    timeout: Duration,
    /// Peers woken from `to_wake` per liveness round.
    wakes_per_round: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Dormant peers to wake, a bounded number per liveness round
    /// (`dormant-wake-rate`): the store's start and a silent store's regions.
    to_wake: std::collections::VecDeque<(u64, WakeReason)>,
    /// Stores to heartbeat.
    targets: HashSet<u64>,
    /// Per watched store: when it was last heard from (or watching began), under
    /// which incarnation (0: not heard yet), and the dormant regions waiting on it.
    watched: HashMap<u64, Watched>,
    /// The last incarnation heard from each store.
    incarnations: HashMap<u64, u64>,
    /// Stores found silent (or restarted) and not heard from since: a peer of
    /// theirs waking for any reason knows its leader is gone.
    down: HashSet<u64>,
}

impl Inner {
    /// Store `store` is down: its regions go to the wake queue in region order,
    /// the same order on every store, so that the replicas of one region wake at
    /// about the same time wherever they are.
    fn queue_down(&mut self, store: u64, regions: HashSet<u64>) {
        self.down.insert(store);
        let mut regions: Vec<u64> = regions.into_iter().collect();
        regions.sort_unstable();
        let why = WakeReason::LeaderStoreDown;
        self.to_wake.extend(regions.into_iter().map(|r| (r, why)));
    }
}

struct Watched {
    heard: Instant,
    regions: HashSet<u64>,
}

impl StoreLiveness {
    /// The table of `store_id`, which declares a store down after `timeout`.
    pub(crate) fn new(store_id: u64, timeout: Duration, wakes_per_round: usize) -> Self {
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        StoreLiveness {
            store_id,
            incarnation,
            timeout,
            wakes_per_round: wakes_per_round.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A leader here put (or is putting) a follower on `store_id` to sleep.
    pub(crate) fn add_target(&self, store_id: u64) {
        if store_id != self.store_id {
            self.inner.lock().targets.insert(store_id);
        }
    }

    /// Region `region_id`'s peer here went dormant, led from `store_id`.
    pub(crate) fn watch(&self, store_id: u64, region_id: u64) {
        let mut inner = self.inner.lock();
        let w = inner.watched.entry(store_id).or_insert_with(|| Watched {
            heard: Instant::now(),
            regions: HashSet::new(),
        });
        w.heard = Instant::now();
        w.regions.insert(region_id);
    }

    /// Region `region_id`'s peer here woke (or went): it no longer waits on
    /// `store_id`.
    pub(crate) fn unwatch(&self, store_id: u64, region_id: u64) {
        let mut inner = self.inner.lock();
        if let Some(w) = inner.watched.get_mut(&store_id) {
            w.regions.remove(&region_id);
            if w.regions.is_empty() {
                inner.watched.remove(&store_id);
            }
        }
    }

    /// Queues `region_id` to be woken (paced: at most `wakes_per_round` a round).
    pub(crate) fn queue_wake(&self, region_id: u64, why: WakeReason) {
        self.inner.lock().to_wake.push_back((region_id, why));
    }

    /// A heartbeat from `store_id`. Returns how many regions it queued to wake:
    /// those waiting on it when it comes back under a new incarnation (it
    /// restarted).
    pub(crate) fn heard(&self, store_id: u64, incarnation: u64) -> usize {
        let mut inner = self.inner.lock();
        let before = inner.incarnations.insert(store_id, incarnation);
        let restarted = before.is_some_and(|b| b != incarnation);
        match inner.watched.get_mut(&store_id) {
            Some(_) if restarted => {
                let Some(w) = inner.watched.remove(&store_id) else {
                    return 0;
                };
                let n = w.regions.len();
                inner.queue_down(store_id, w.regions);
                n
            }
            Some(w) => {
                w.heard = Instant::now();
                inner.down.remove(&store_id);
                0
            }
            None => {
                inner.down.remove(&store_id);
                0
            }
        }
    }

    /// Whether `store_id` was found silent (or restarted) and not heard from since.
    pub(crate) fn is_down(&self, store_id: u64) -> bool {
        self.inner.lock().down.contains(&store_id)
    }

    /// The heartbeats to send now (one per target store), and this round's
    /// regions to wake: those whose leader's store is down (watching them stops),
    /// after those queued before, at most `wakes_per_round`.
    pub(crate) fn check(&self, now: Instant) -> (Vec<RaftMessage>, Vec<(u64, WakeReason)>) {
        let mut inner = self.inner.lock();
        let beats = inner
            .targets
            .iter()
            .map(|&to| heartbeat(self.store_id, to, self.incarnation))
            .collect();
        let down: Vec<u64> = inner
            .watched
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.heard) > self.timeout)
            .map(|(&s, _)| s)
            .collect();
        for s in down {
            if let Some(w) = inner.watched.remove(&s) {
                tracing::info!(
                    store = self.store_id,
                    down = s,
                    regions = w.regions.len(),
                    "store liveness: a store went silent; waking the dormant regions it leads"
                );
                inner.queue_down(s, w.regions);
            }
        }
        let n = inner.to_wake.len().min(self.wakes_per_round);
        let wake = inner.to_wake.drain(..n).collect();
        (beats, wake)
    }

    /// Peers queued to wake and not woken yet.
    pub(crate) fn queued_wakes(&self) -> usize {
        self.inner.lock().to_wake.len()
    }

    /// How many dormant peers wait on another store (a gauge).
    pub(crate) fn watched_regions(&self) -> usize {
        self.inner
            .lock()
            .watched
            .values()
            .map(|w| w.regions.len())
            .sum()
    }
}

/// The heartbeat from `from` to `to`.
fn heartbeat(from: u64, to: u64, incarnation: u64) -> RaftMessage {
    let peer = |store_id| {
        Some(PeerMeta {
            store_id,
            ..Default::default()
        })
    };
    RaftMessage {
        region_id: 0,
        from_peer: peer(from),
        to_peer: peer(to),
        extra: Some(ExtraMessage {
            r#type: ExtraMessageType::StoreHeartbeat as i32,
            incarnation,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The store heartbeat `msg` carries, if it is one: the sender and its
/// incarnation.
pub(crate) fn as_heartbeat(msg: &RaftMessage) -> Option<(u64, u64)> {
    let extra = msg.extra.as_ref()?;
    (msg.region_id == 0 && extra.r#type == ExtraMessageType::StoreHeartbeat as i32).then(|| {
        let from = msg.from_peer.as_ref().map_or(0, |p| p.store_id);
        (from, extra.incarnation)
    })
}

/// The store's liveness round, every `raft_heartbeat_ticks`: heartbeats to the
/// targets, and the dormant peers whose leader's store went silent are woken.
pub(crate) fn on_tick(ctx: &crate::store::context::StoreContext) {
    let (beats, wake) = ctx.liveness.check(Instant::now());
    let m = &ctx.metrics;
    for beat in beats {
        let to = beat.to_peer.as_ref().map_or(0, |p| p.store_id);
        ctx.transport.send(to, vec![beat]);
        m.store_heartbeats_sent.inc();
    }
    for (region_id, why) in wake {
        if why == WakeReason::LeaderStoreDown {
            m.liveness_wakes.inc();
        }
        let _ = ctx.router.send(region_id, crate::msg::PeerMsg::Wake(why));
    }
    m.liveness_watched
        .set(ctx.liveness.watched_regions() as i64);
    m.wake_queue.set(ctx.liveness.queued_wakes() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    fn regions(wake: Vec<(u64, WakeReason)>) -> Vec<u64> {
        let mut r: Vec<u64> = wake.into_iter().map(|(r, _)| r).collect();
        r.sort_unstable();
        r
    }

    #[test]
    fn a_silent_store_wakes_only_the_regions_that_wait_on_it() {
        let l = StoreLiveness::new(1, T, 100);
        l.watch(2, 10);
        l.watch(2, 11);
        l.watch(3, 12);
        // Store 3 keeps talking; store 2 went silent.
        std::thread::sleep(T * 2);
        l.heard(3, 7);
        let (_, wake) = l.check(Instant::now());
        assert!(wake.iter().all(|(_, w)| *w == WakeReason::LeaderStoreDown));
        assert_eq!(regions(wake), vec![10, 11]);
        assert_eq!(l.watched_regions(), 1);
        // Woken once: not again.
        assert!(l.check(Instant::now()).1.is_empty());
    }

    #[test]
    fn a_new_incarnation_wakes_the_regions_at_once() {
        let l = StoreLiveness::new(1, T, 100);
        assert_eq!(l.heard(2, 5), 0);
        l.watch(2, 10);
        assert_eq!(l.heard(2, 5), 0);
        assert_eq!(l.heard(2, 6), 1);
        assert_eq!(l.watched_regions(), 0);
        assert_eq!(regions(l.check(Instant::now()).1), vec![10]);
    }

    #[test]
    fn wakes_are_paced_per_round_in_order() {
        let l = StoreLiveness::new(1, T, 3);
        for r in 1..=7 {
            l.queue_wake(r, WakeReason::Start);
        }
        assert_eq!(regions(l.check(Instant::now()).1), vec![1, 2, 3]);
        assert_eq!(regions(l.check(Instant::now()).1), vec![4, 5, 6]);
        assert_eq!(l.queued_wakes(), 1);
        assert_eq!(regions(l.check(Instant::now()).1), vec![7]);
        assert!(l.check(Instant::now()).1.is_empty());
    }

    #[test]
    fn unwatched_regions_are_not_woken_and_targets_get_heartbeats() {
        let l = StoreLiveness::new(1, T, 100);
        l.watch(2, 10);
        l.unwatch(2, 10);
        l.add_target(3);
        l.add_target(1); // itself: never
        let (beats, wake) = l.check(Instant::now() + T * 3);
        assert!(wake.is_empty());
        assert_eq!(beats.len(), 1);
        assert_eq!(as_heartbeat(&beats[0]).map(|(from, _)| from), Some(1));
        assert_eq!(beats[0].to_peer.unwrap().store_id, 3);
    }
}
