//! Store liveness: one heartbeat from store to store stands for every dormant
//! region the two share, so that a dormant region's followers, which run no
//! election timer, still notice when their leader's store goes away.
//!
//! - **Who heartbeats whom.** A store whose leader asks followers on store `S` to
//!   go dormant adds `S` to its targets; every `raft_heartbeat_ticks` ticks it
//!   sends each target one `STORE_HEARTBEAT` (a `RaftMessage` with region 0 on the
//!   ordinary transport stream) carrying its **incarnation**, its start time.
//!   A target is kept while some region here that leads (or led) asked a
//!   follower on it to sleep: each region's latest request names its stores,
//!   and a region that stops leading or goes away names none. So a store that
//!   holds no follower of this store's leaders any more (moved away, removed
//!   from the cluster) stops getting heartbeats once those regions asked again.
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
//!
//! **No dormant follower is left unwatched while its leader's store leads it.**
//! A store found silent leaves `watched` and its followers are queued to wake,
//! paced. If it is heard again (same incarnation) before the queue drains, its
//! leaders are alive: the wakes still queued are taken back and handed to their
//! peers at once, and a peer still asleep under that store and incarnation
//! finds the store up and watches it again (waking them would depose healthy
//! leaders, and dropping them would leave followers that nothing wakes should
//! the store die later; a peer that woke or went meanwhile ignores it, so no
//! stale entry is left). A wake already on its way does the same. A store heard
//! under a **new** incarnation restarted: every follower watched under an older
//! one is woken (queued as `restarted`, which holds whatever is heard of the
//! store later).

use std::collections::{HashMap, HashSet, VecDeque};
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

/// A queued wake: the region and why; for `LeaderStoreDown`, the leader's store
/// and the incarnation the peer was watched under (a peer woken meanwhile and
/// asleep again under another leader, or a new incarnation, ignores it), and
/// whether that store restarted (its leaders are gone for sure) or only went
/// silent (a peer woken after it was heard again stays asleep, watched again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wake {
    pub(crate) region: u64,
    pub(crate) reason: WakeReason,
    pub(crate) store: u64,
    pub(crate) incarnation: u64,
    pub(crate) restarted: bool,
    /// Whether the peer campaigns first should `store` die (kept to watch it
    /// again).
    pub(crate) successor: bool,
}

impl Wake {
    /// A start-up wake of `region`.
    fn start(region: u64) -> Wake {
        Wake {
            region,
            reason: WakeReason::Start,
            store: 0,
            incarnation: 0,
            restarted: false,
            successor: false,
        }
    }
}

/// One store's liveness table: what it heard from the others, whom it must
/// heartbeat, and which of its dormant peers depend on which store.
pub(crate) struct StoreLiveness {
    store_id: u64,
    incarnation: u64,
    /// A store not heard from for this long is down.
    timeout: Duration,
    /// Peers woken from the queues per liveness round.
    wakes_per_round: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Dormant peers to wake, a bounded number per liveness round
    /// (`dormant-wake-rate`): a silent store's successors first, then its other
    /// followers, then the store's own start-up.
    successors: VecDeque<Wake>,
    others: VecDeque<Wake>,
    starting: VecDeque<Wake>,
    /// Stores to heartbeat, with how many regions here name them.
    targets: HashMap<u64, usize>,
    /// Per region whose leader here asked its followers to sleep: their stores.
    target_regions: HashMap<u64, Box<[u32]>>,
    /// Per watched store: when it was last heard from (or watching began), and
    /// the dormant regions waiting on it.
    watched: HashMap<u64, Watched>,
    /// Stores found silent (or restarted) and not heard from since: a peer of
    /// theirs waking for any reason knows its leader is gone.
    down: HashSet<u64>,
    /// When the last liveness round ran (a round long after the one before: this
    /// store itself stalled, and heard nothing meanwhile through no fault of the
    /// others).
    last_check: Option<Instant>,
}

/// A dormant follower watched under its leader's store.
#[derive(Clone, Copy)]
struct WatchedPeer {
    /// The leader's store's incarnation when the follower went dormant.
    incarnation: u64,
    /// Whether this follower campaigns first should that store die.
    successor: bool,
}

struct Watched {
    heard: Instant,
    regions: HashMap<u64, WatchedPeer>,
}

impl Inner {
    /// Regions of `store` to wake because it is down (or restarted): successors
    /// first, each group in region order (the same order on every store, so the
    /// replicas of one region wake at about the same time wherever they are).
    /// `restarted`: the store came back under a new incarnation (else it went
    /// silent, and is down until heard again).
    fn queue_down(
        &mut self,
        store: u64,
        regions: impl IntoIterator<Item = (u64, WatchedPeer)>,
        restarted: bool,
    ) {
        if !restarted {
            self.down.insert(store);
        }
        let mut regions: Vec<(u64, WatchedPeer)> = regions.into_iter().collect();
        regions.sort_unstable_by_key(|(r, _)| *r);
        for (region, w) in regions {
            let wake = Wake {
                region,
                reason: WakeReason::LeaderStoreDown,
                store,
                incarnation: w.incarnation,
                restarted,
                successor: w.successor,
            };
            match w.successor {
                true => self.successors.push_back(wake),
                false => self.others.push_back(wake),
            }
        }
    }

    /// `store`, found silent, is heard again as `incarnation`: the wakes still
    /// queued for its silence are taken back and returned, to be handed to their
    /// peers at once (each watches the store again if it still sleeps under it:
    /// its leader is alive); those watched under another incarnation stay queued,
    /// as a restart's (their leaders are gone).
    fn take_back_queued(&mut self, store: u64, incarnation: u64) -> Vec<Wake> {
        let mut back = Vec::new();
        for queue in [&mut self.successors, &mut self.others] {
            queue.retain_mut(|w| {
                if w.reason != WakeReason::LeaderStoreDown || w.store != store || w.restarted {
                    return true;
                }
                if w.incarnation != incarnation {
                    w.restarted = true;
                    return true;
                }
                back.push(*w);
                false
            });
        }
        back
    }

    fn queued(&self) -> usize {
        self.successors.len() + self.others.len() + self.starting.len()
    }

    /// One region names `stores` no more.
    fn release_targets(&mut self, stores: &[u32]) {
        for &s in stores {
            let s = s as u64;
            if let Some(n) = self.targets.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    self.targets.remove(&s);
                }
            }
        }
        if self.targets.capacity() > 2 * self.targets.len() + 8 {
            self.targets.shrink_to_fit();
        }
    }
}

impl StoreLiveness {
    /// The table of `store_id`, which declares a store down after `timeout` and
    /// wakes at most `wakes_per_round` queued peers a round.
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

    /// This store's incarnation (its start time), sent with its heartbeats and
    /// its leaders' dormancy requests.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Region `region_id`'s leader here asks its followers on `stores` to sleep:
    /// those stores are heartbeaten (until it names others, or none).
    pub(crate) fn set_targets(&self, region_id: u64, stores: &[u64]) {
        let stores: Box<[u32]> = stores
            .iter()
            .filter(|&&s| s != self.store_id)
            .map(|&s| s as u32)
            .collect();
        let mut inner = self.inner.lock();
        if inner.target_regions.get(&region_id) == Some(&stores) {
            return;
        }
        for &s in stores.iter() {
            *inner.targets.entry(s as u64).or_default() += 1;
        }
        if let Some(old) = inner.target_regions.insert(region_id, stores) {
            inner.release_targets(&old);
        }
    }

    /// Region `region_id` here no longer leads (or is gone): it names no store.
    pub(crate) fn clear_targets(&self, region_id: u64) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.target_regions.remove(&region_id) {
            inner.release_targets(&old);
        }
    }

    /// The stores heartbeaten now.
    #[cfg(test)]
    fn targets(&self) -> Vec<u64> {
        let mut t: Vec<u64> = self.inner.lock().targets.keys().copied().collect();
        t.sort_unstable();
        t
    }

    /// Region `region_id`'s peer here went dormant, led from `store_id` (running
    /// as `incarnation`); `successor`: it campaigns first should that store die.
    /// A store newly watched starts its clock now (the dormancy request it just
    /// sent is as good as a heartbeat); one already watched keeps its clock.
    pub(crate) fn watch(&self, store_id: u64, region_id: u64, incarnation: u64, successor: bool) {
        let mut inner = self.inner.lock();
        let w = inner.watched.entry(store_id).or_insert_with(|| Watched {
            heard: Instant::now(),
            regions: HashMap::new(),
        });
        let peer = WatchedPeer {
            incarnation,
            successor,
        };
        w.regions.insert(region_id, peer);
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

    /// Queues `region_id`'s start-up wake (paced, after any failover's).
    pub(crate) fn queue_start(&self, region_id: u64) {
        let mut inner = self.inner.lock();
        inner.starting.push_back(Wake::start(region_id));
    }

    /// A heartbeat from `store_id`, running as `incarnation`. Returns how many
    /// regions it queued to wake (those that went dormant under an earlier
    /// incarnation of it: it restarted since, and leads nothing it led), and, for
    /// a store found silent and heard again, the wakes still queued for its
    /// silence, taken back: the caller hands each to its peer now, and the peer
    /// watches the store again (see the module docs).
    pub(crate) fn heard(&self, store_id: u64, incarnation: u64) -> (usize, Vec<Wake>) {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let mut back = Vec::new();
        if inner.down.remove(&store_id) {
            back = inner.take_back_queued(store_id, incarnation);
            if !back.is_empty() {
                tracing::info!(
                    store = self.store_id,
                    heard = store_id,
                    regions = back.len(),
                    "store liveness: a silent store is heard again; its dormant regions not woken yet watch it again"
                );
            }
        }
        let Some(w) = inner.watched.get_mut(&store_id) else {
            return (0, back);
        };
        w.heard = now;
        let gone: Vec<(u64, WatchedPeer)> = w
            .regions
            .iter()
            .filter(|(_, p)| p.incarnation != incarnation)
            .map(|(&r, &p)| (r, p))
            .collect();
        if gone.is_empty() {
            return (0, back);
        }
        for (r, _) in &gone {
            w.regions.remove(r);
        }
        if w.regions.is_empty() {
            inner.watched.remove(&store_id);
        }
        let n = gone.len();
        // It is up: only these regions' leaders are gone.
        inner.queue_down(store_id, gone, true);
        (n, back)
    }

    /// Whether `store_id` was found silent and not heard from since.
    pub(crate) fn is_down(&self, store_id: u64) -> bool {
        self.inner.lock().down.contains(&store_id)
    }

    /// The heartbeats to send now (one per target store), and this round's peers
    /// to wake: those whose leader's store is down (watching them stops), then
    /// the start-up's, at most `wakes_per_round`. A round that comes long after
    /// the one before (this store stalled: a pause, a slow machine) declares
    /// nothing down: what others sent meanwhile may not have been read yet.
    pub(crate) fn check(&self, now: Instant) -> (Vec<RaftMessage>, Vec<Wake>) {
        let mut inner = self.inner.lock();
        let beats = inner
            .targets
            .keys()
            .map(|&to| heartbeat(self.store_id, to, self.incarnation))
            .collect();
        let stalled = inner
            .last_check
            .is_some_and(|l| now.saturating_duration_since(l) > self.timeout / 2);
        inner.last_check = Some(now);
        if stalled {
            for w in inner.watched.values_mut() {
                w.heard = w.heard.max(now);
            }
        }
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
                inner.queue_down(s, w.regions, false);
            }
        }
        let mut wake = Vec::new();
        while wake.len() < self.wakes_per_round {
            let next = inner
                .successors
                .pop_front()
                .or_else(|| inner.others.pop_front())
                .or_else(|| inner.starting.pop_front());
            match next {
                Some(w) => wake.push(w),
                None => break,
            }
        }
        (beats, wake)
    }

    /// Peers queued to wake and not woken yet.
    pub(crate) fn queued_wakes(&self) -> usize {
        self.inner.lock().queued()
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
    for w in wake {
        if w.reason == WakeReason::LeaderStoreDown {
            m.liveness_wakes.inc();
        }
        let _ = ctx.router.send(w.region, crate::msg::PeerMsg::Wake(w));
    }
    m.liveness_watched
        .set(ctx.liveness.watched_regions() as i64);
    m.wake_queue.set(ctx.liveness.queued_wakes() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    fn regions(wake: Vec<Wake>) -> Vec<u64> {
        wake.into_iter().map(|w| w.region).collect()
    }

    /// Liveness rounds every T/10 from `t` on (simulated time, `t` moved along)
    /// until one wakes something: what it wakes.
    fn first_wakes(l: &StoreLiveness, t: &mut Instant) -> Vec<Wake> {
        for _ in 0..100 {
            *t += T / 10;
            let (_, w) = l.check(*t);
            if !w.is_empty() {
                return w;
            }
        }
        panic!("nothing woke in 100 rounds");
    }

    #[test]
    fn a_silent_store_wakes_only_the_regions_that_wait_on_it_successors_first() {
        let l = StoreLiveness::new(1, T, 100);
        l.watch(2, 11, 5, false);
        l.watch(2, 10, 5, false);
        l.watch(2, 12, 5, true);
        l.watch(3, 13, 7, false);
        // Rounds every 10 ms; store 3 keeps talking, store 2 went silent.
        let mut wake = Vec::new();
        let end = Instant::now() + T + T / 2;
        while Instant::now() < end {
            l.heard(3, 7);
            wake.extend(l.check(Instant::now()).1);
            std::thread::sleep(T / 10);
        }
        assert!(wake.iter().all(|w| w.reason == WakeReason::LeaderStoreDown
            && w.store == 2
            && w.incarnation == 5
            && !w.restarted));
        assert_eq!(regions(wake), vec![12, 10, 11]);
        assert!(l.is_down(2) && !l.is_down(3));
        assert_eq!(l.watched_regions(), 1);
        // Woken once: not again. Heard again: up.
        assert!(l.check(Instant::now()).1.is_empty());
        l.heard(2, 5);
        assert!(!l.is_down(2));
    }

    /// Found silent, store 2 is heard again before its followers' wakes drained:
    /// those not woken yet are watched under it again at once, so that when it
    /// really dies later they are woken like the others.
    #[test]
    fn a_store_heard_again_gets_its_unwoken_followers_back() {
        let l = StoreLiveness::new(1, T, 1);
        for r in 10..15 {
            l.watch(2, r, 5, r == 10);
        }
        // Rounds every T/10 of (simulated) time; silent past the timeout: one
        // wake a round.
        let mut t = Instant::now();
        let first = first_wakes(&l, &mut t);
        assert_eq!(regions(first), vec![10]);
        assert_eq!((l.watched_regions(), l.queued_wakes()), (0, 4));
        // Heard again: the four still queued are taken back, for their peers
        // (which watch the store again, as `Peer::before_msg` does), not woken.
        let (queued, back) = l.heard(2, 5);
        assert_eq!((queued, regions(back.clone())), (0, vec![11, 12, 13, 14]));
        assert_eq!(l.queued_wakes(), 0);
        assert!(!l.is_down(2));
        for w in back {
            l.watch(w.store, w.region, w.incarnation, w.successor);
        }
        assert_eq!(l.watched_regions(), 4);
        // Then it dies for good: every one of them is woken.
        let mut woken = Vec::new();
        for _ in 0..30 {
            t += T / 10;
            woken.extend(regions(l.check(t).1));
        }
        assert_eq!(woken, vec![11, 12, 13, 14]);
    }

    /// Found silent, store 2 comes back restarted: the wakes still queued are a
    /// restart's now (its leaders are gone), and stay.
    #[test]
    fn a_silent_store_back_restarted_leaves_its_followers_queued_as_restarted() {
        let l = StoreLiveness::new(1, T, 1);
        l.watch(2, 10, 5, false);
        l.watch(2, 11, 5, false);
        let mut t = Instant::now();
        let first = first_wakes(&l, &mut t);
        assert_eq!(regions(first), vec![10]);
        assert_eq!(l.heard(2, 6), (0, vec![]));
        assert!(!l.is_down(2));
        let (_, next) = l.check(t + T / 10);
        assert_eq!(next.len(), 1);
        assert!(next[0].restarted && next[0].region == 11 && next[0].incarnation == 5);
    }

    #[test]
    fn a_stalled_round_declares_nothing_down() {
        let l = StoreLiveness::new(1, T, 100);
        l.watch(2, 10, 5, false);
        l.check(Instant::now());
        // This store stalled past the timeout: its round comes late.
        std::thread::sleep(T * 2);
        assert!(l.check(Instant::now()).1.is_empty());
        assert_eq!(l.watched_regions(), 1);
    }

    #[test]
    fn a_new_incarnation_wakes_only_the_regions_watched_under_the_old_one() {
        let l = StoreLiveness::new(1, T, 100);
        l.watch(2, 10, 5, false);
        assert_eq!(l.heard(2, 5).0, 0);
        // Store 2 restarted (incarnation 6); one of its new leaders already put
        // region 11 to sleep before its first heartbeat came.
        l.watch(2, 11, 6, false);
        assert_eq!(l.heard(2, 6).0, 1);
        let wake = l.check(Instant::now()).1;
        assert!(wake[0].restarted);
        assert_eq!(regions(wake), vec![10]);
        assert_eq!(l.watched_regions(), 1);
        assert!(!l.is_down(2));
    }

    #[test]
    fn wakes_are_paced_per_round_failovers_before_start_up() {
        let l = StoreLiveness::new(1, T, 3);
        for r in 1..=5 {
            l.queue_start(r);
        }
        l.watch(2, 9, 5, false);
        assert_eq!(l.heard(2, 6).0, 1);
        assert_eq!(regions(l.check(Instant::now()).1), vec![9, 1, 2]);
        assert_eq!(l.queued_wakes(), 3);
        assert_eq!(regions(l.check(Instant::now()).1), vec![3, 4, 5]);
        assert!(l.check(Instant::now()).1.is_empty());
    }

    #[test]
    fn unwatched_regions_are_not_woken_and_targets_get_heartbeats() {
        let l = StoreLiveness::new(1, T, 100);
        l.watch(2, 10, 5, false);
        l.unwatch(2, 10);
        // Itself is never a target.
        l.set_targets(7, &[1, 3]);
        let (beats, wake) = l.check(Instant::now() + T * 3);
        assert!(wake.is_empty());
        assert_eq!(beats.len(), 1);
        assert_eq!(as_heartbeat(&beats[0]).map(|(from, _)| from), Some(1));
        assert_eq!(beats[0].to_peer.unwrap().store_id, 3);
    }

    /// A store no region here names any more (its replicas moved away, it was
    /// removed) gets no more heartbeats.
    #[test]
    fn targets_last_while_a_region_names_them() {
        let l = StoreLiveness::new(1, T, 100);
        l.set_targets(7, &[2, 3]);
        l.set_targets(8, &[3, 4]);
        assert_eq!(l.targets(), vec![2, 3, 4]);
        // Region 7's replica on store 2 moved to store 5.
        l.set_targets(7, &[3, 5]);
        assert_eq!(l.targets(), vec![3, 4, 5]);
        l.clear_targets(8);
        assert_eq!(l.targets(), vec![3, 5]);
        l.clear_targets(7);
        l.clear_targets(7);
        assert!(l.targets().is_empty());
        assert!(l.check(Instant::now()).0.is_empty());
    }
}
