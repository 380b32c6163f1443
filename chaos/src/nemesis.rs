//! The nemeses: faults injected while the workload runs, on a schedule drawn from
//! the run's seed (the same seed gives the same sequence of faults and pauses).
//!
//! - **kill**: `kill -9` a random node, or the leader of a random region, then
//!   restart it after a pause;
//! - **pause**: SIGSTOP a node (the leader of a random region, or any node) for a
//!   few election timeouts, then SIGCONT;
//! - **partition**: through the link proxies: isolate one node, split the nodes into
//!   a majority and a minority, a bridge (two halves sharing one node, with five or
//!   more nodes), cut one direction of one link, or slow every link of a node;
//! - **admin**: a split at a random key, a merge of two adjacent regions, a leader
//!   transfer to a random voter, or a membership change of a random region: a
//!   replica moved to a store without one (learner, catch-up, joint change,
//!   removal), a replica removed (down to three), or one added;
//! - **disk**: restart a node with one failpoint armed (the `FAILPOINTS` variable of
//!   a `shoal` built with the `failpoints` feature): a log-engine or kv write or
//!   fsync that fails (the node must stop, never go on without the write: checked),
//!   a full disk (the node must stay up: checked; writes refused and reads served
//!   are checked by `server/tests/disk_full.rs`), or a crash at a named point of
//!   apply, the log writer, split or merge; after the fault the node is restarted
//!   without it.
//!
//! One fault at a time: apply, hold, heal, rest. Every action is logged with its
//! time since the start of the run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shoal_client::Client;

use crate::cluster::Cluster;
use crate::proxy::LinkState;

/// The nemesis kinds, as `--nemesis` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Kill -9 and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Network faults through the proxies.
    Partition,
    /// Splits and merges.
    Admin,
    /// Failpoints: failed writes and fsyncs, crashes at named points.
    Disk,
}

impl Kind {
    /// Every kind (none needs root; `disk` needs a `shoal` built with the
    /// `failpoints` feature).
    pub const ALL: [Kind; 5] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Partition,
        Kind::Admin,
        Kind::Disk,
    ];

    /// Parses a `--nemesis` list (`kill,pause,partition,admin,disk`; `none` for none).
    pub fn parse_list(s: &str) -> Result<Vec<Kind>, String> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let k = match name {
                "kill" => Kind::Kill,
                "pause" => Kind::Pause,
                "partition" => Kind::Partition,
                "admin" => Kind::Admin,
                "disk" => Kind::Disk,
                "none" => continue,
                other => {
                    return Err(format!(
                        "unknown nemesis {other:?}: expected kill, pause, partition, admin, disk"
                    ))
                }
            };
            if !out.contains(&k) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// The name `--nemesis` uses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Admin => "admin",
            Kind::Disk => "disk",
        }
    }
}

/// The nemesis's settings and state.
pub struct Nemesis {
    /// The kinds it draws from.
    pub kinds: Vec<Kind>,
    /// The cluster it harms.
    pub cluster: Arc<Mutex<Cluster>>,
    /// For leader lookups and admin commands.
    pub admin: Client,
    /// Its schedule.
    pub rng: StdRng,
    /// One election timeout of the nodes.
    pub election: Duration,
    /// The run's clock.
    pub start: Instant,
    /// What it did, one line per action.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Faults by kind, for the summary.
#[derive(Clone, Debug, Default)]
pub struct FaultCounts {
    /// `(kind, count)` in kind order.
    pub by_kind: std::collections::BTreeMap<&'static str, u64>,
}

impl Nemesis {
    /// A nemesis seeded with `seed`.
    pub fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x5eed)
    }

    fn note(&self, what: String) {
        let t = self.start.elapsed().as_secs_f64();
        tracing::info!("nemesis: {what}");
        self.log
            .lock()
            .expect("nemesis log")
            .push(format!("{t:9.3}s {what}"));
    }

    /// Injects faults until `until`, then returns what it did (everything healed).
    pub async fn run(mut self, until: Instant) -> FaultCounts {
        let mut counts = FaultCounts::default();
        if self.kinds.is_empty() {
            return counts;
        }
        while Instant::now() < until {
            let rest = self.rng.gen_range(500..2000);
            tokio::time::sleep(Duration::from_millis(rest)).await;
            if Instant::now() >= until {
                break;
            }
            let kind = *self.kinds.choose(&mut self.rng).expect("non-empty");
            match kind {
                Kind::Kill => self.kill().await,
                Kind::Pause => self.pause().await,
                Kind::Partition => self.partition().await,
                Kind::Admin => match self.rng.gen_range(0..10) {
                    0..=2 => self.admin(false).await,
                    3..=4 => self.admin(true).await,
                    5..=6 => self.transfer_leader().await,
                    _ => self.membership().await,
                },
                Kind::Disk => self.disk().await,
            }
            *counts.by_kind.entry(kind.name()).or_default() += 1;
        }
        counts
    }

    /// A random node, or (half the time) the leader of a random region.
    async fn victim(&mut self) -> u64 {
        let ids = self.cluster.lock().expect("cluster").ids();
        let any = *ids.choose(&mut self.rng).expect("nodes");
        if self.rng.gen_bool(0.5) {
            return any;
        }
        let pick = self.rng.gen_range(0..usize::MAX);
        let leader = tokio::time::timeout(Duration::from_secs(2), self.admin.list_regions())
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|(regions, _)| {
                let leaders: Vec<u64> = regions
                    .iter()
                    .filter_map(|r| r.leader.as_ref().map(|l| l.store_id))
                    .collect();
                leaders.get(pick % leaders.len().max(1)).copied()
            });
        leader.filter(|id| ids.contains(id)).unwrap_or(any)
    }

    fn hold(&mut self, elections: std::ops::Range<u32>) -> Duration {
        self.election * self.rng.gen_range(elections)
    }

    async fn kill(&mut self) {
        let id = self.victim().await;
        self.cluster.lock().expect("cluster").kill(id);
        self.note(format!("kill -9 node {id}"));
        let down = self.hold(1..6);
        tokio::time::sleep(down).await;
        let restarted = self.cluster.lock().expect("cluster").start_node(id);
        match restarted {
            Ok(()) => self.note(format!("restart node {id}")),
            Err(e) => self.note(format!("restart node {id} failed: {e}")),
        }
    }

    async fn pause(&mut self) {
        let id = self.victim().await;
        self.cluster.lock().expect("cluster").pause(id);
        self.note(format!("pause (SIGSTOP) node {id}"));
        let held = self.hold(2..6);
        tokio::time::sleep(held).await;
        self.cluster.lock().expect("cluster").resume(id);
        self.note(format!("resume (SIGCONT) node {id}"));
    }

    async fn partition(&mut self) {
        let mut ids = self.cluster.lock().expect("cluster").ids();
        ids.shuffle(&mut self.rng);
        let n = ids.len();
        let choice = self.rng.gen_range(0..if n >= 5 { 5 } else { 4 });
        let (what, cut): (String, Vec<(u64, u64)>) = match choice {
            0 => {
                let x = ids[0];
                (format!("isolate node {x}"), links_between(&[x], &ids[1..]))
            }
            1 => {
                let (minority, _) = ids.split_at((n - 1) / 2);
                let minority = if minority.is_empty() {
                    &ids[..1]
                } else {
                    minority
                };
                let majority = &ids[minority.len()..];
                (
                    format!("split {minority:?} | {majority:?}"),
                    links_between(minority, majority),
                )
            }
            2 => {
                let (from, to) = (ids[0], ids[1]);
                (format!("cut one way {from} -> {to}"), vec![(from, to)])
            }
            3 => {
                let x = ids[0];
                let ms = self.rng.gen_range(20..200);
                let slow = Duration::from_millis(ms);
                let cluster = self.cluster.lock().expect("cluster");
                for &y in &ids[1..] {
                    cluster.set_link(x, y, LinkState::Delay(slow));
                    cluster.set_link(y, x, LinkState::Delay(slow));
                }
                drop(cluster);
                (
                    format!("delay every link of node {x} by {ms} ms"),
                    Vec::new(),
                )
            }
            _ => {
                // Two halves sharing ids[0]: {ids[0], a..} and {ids[0], b..}.
                let half = (n - 1) / 2;
                let (a, b) = ids[1..].split_at(half);
                (
                    format!("bridge {a:?} - {} - {b:?}", ids[0]),
                    links_between(a, b),
                )
            }
        };
        {
            let cluster = self.cluster.lock().expect("cluster");
            for &(from, to) in &cut {
                cluster.set_link(from, to, LinkState::Cut);
            }
        }
        self.note(format!("partition: {what}"));
        let held = self.hold(2..8);
        tokio::time::sleep(held).await;
        let cluster = self.cluster.lock().expect("cluster");
        for &x in &ids {
            for &y in &ids {
                if x != y {
                    cluster.set_link(x, y, LinkState::Up);
                }
            }
        }
        drop(cluster);
        self.note("partition healed".into());
    }

    /// A merge of two adjacent regions (when `merge` and there are two), else a
    /// split at a random key.
    async fn admin(&mut self, merge: bool) {
        let list = tokio::time::timeout(Duration::from_secs(3), self.admin.list_regions()).await;
        let Ok(Ok((mut regions, _))) = list else {
            return self.note("admin: no region list (cluster busy)".into());
        };
        regions.sort_by(|a, b| {
            let key = |i: &shoal_client::RegionInfo| i.region.clone().unwrap_or_default().start_key;
            key(a).cmp(&key(b))
        });
        let merge = merge && regions.len() > 1;
        let call = if merge {
            let i = self.rng.gen_range(0..regions.len() - 1);
            let (a, b) = (&regions[i], &regions[i + 1]);
            let (s, t) = (region_id(a), region_id(b));
            self.note(format!("admin: merge region {s} into {t}"));
            let r = tokio::time::timeout(ADMIN_TIMEOUT, self.admin.merge(s, t)).await;
            flatten(r.map(|r| r.map(|r| format!("region {} now", r.id))))
        } else {
            let mut key = self.rng.gen::<[u8; 2]>().to_vec();
            key.push(b'm');
            self.note(format!("admin: split at {}", crate::history::to_hex(&key)));
            let r = tokio::time::timeout(ADMIN_TIMEOUT, self.admin.split(vec![key])).await;
            flatten(r.map(|r| r.map(|r| format!("{} regions", r.len()))))
        };
        match call {
            Ok(what) => self.note(format!("admin: done ({what})")),
            Err(e) => self.note(format!("admin: refused or failed: {e}")),
        }
    }
}

impl Nemesis {
    /// Every region of the cluster (each as its newest replica knows it) and the
    /// stores, or `None` (noted) when the cluster is too busy to say.
    async fn placement(&mut self) -> Option<(Vec<shoal_client::RegionInfo>, Vec<u64>)> {
        let list = tokio::time::timeout(Duration::from_secs(3), self.admin.list_regions()).await;
        let Ok(Ok((_, stores))) = list else {
            self.note("admin: no region list (cluster busy)".into());
            return None;
        };
        let ids: Vec<u64> = stores.iter().map(|s| s.id).collect();
        let (regions, _) =
            tokio::time::timeout(Duration::from_secs(10), self.admin.cluster_regions(&stores))
                .await
                .unwrap_or_default();
        match regions.is_empty() {
            true => {
                self.note("admin: no region list (cluster busy)".into());
                None
            }
            false => Some((regions, ids)),
        }
    }

    /// Hands a random region's leadership to a random other voter.
    async fn transfer_leader(&mut self) {
        let Some((regions, _)) = self.placement().await else {
            return;
        };
        let info = regions.choose(&mut self.rng).expect("non-empty").clone();
        let region = info.region.unwrap_or_default();
        let leader = info.leader.map_or(0, |l| l.store_id);
        let voters: Vec<u64> = region
            .peers
            .iter()
            .filter(|p| p.role == shoal_proto::metapb::PeerRole::Voter as i32)
            .map(|p| p.store_id)
            .filter(|&s| s != leader)
            .collect();
        let Some(&to) = voters.choose(&mut self.rng) else {
            return self.note(format!("admin: region {} has no other voter", region.id));
        };
        self.note(format!(
            "admin: transfer region {}'s leadership to store {to}",
            region.id
        ));
        let r =
            tokio::time::timeout(ADMIN_TIMEOUT, self.admin.transfer_leader(region.id, to)).await;
        match flatten(r.map(|r| r.map(|l| format!("store {} leads", l.store_id)))) {
            Ok(what) => self.note(format!("admin: done ({what})")),
            Err(e) => self.note(format!("admin: refused or failed: {e}")),
        }
    }

    /// A membership change of a random region: a replica moved to a store that
    /// has none, or (while it has more than three) one removed, or (while a store
    /// has none) one added.
    async fn membership(&mut self) {
        use shoal_proto::metapb::ChangeKind;
        let Some((regions, stores)) = self.placement().await else {
            return;
        };
        let info = regions.choose(&mut self.rng).expect("non-empty").clone();
        let region = info.region.unwrap_or_default();
        let id = region.id;
        let leader = info.leader.map_or(0, |l| l.store_id);
        let holding: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
        let free: Vec<u64> = stores
            .iter()
            .copied()
            .filter(|s| !holding.contains(s))
            .collect();
        let others: Vec<u64> = holding.iter().copied().filter(|&s| s != leader).collect();
        let roll = self.rng.gen_range(0..10);
        let call = if !free.is_empty() && (roll < 6 || holding.len() <= 3) {
            let to = *free.choose(&mut self.rng).expect("non-empty");
            let from = *others.choose(&mut self.rng).unwrap_or(&leader);
            self.note(format!(
                "admin: move region {id}'s replica from store {from} to store {to}"
            ));
            let r = tokio::time::timeout(
                ADMIN_TIMEOUT,
                self.admin.move_replica(id, from, to, &|_| {}),
            )
            .await;
            flatten(r.map(|r| r.map(|r| format!("{} replicas", r.peers.len()))))
        } else if holding.len() > 3 && (roll < 8 || free.is_empty()) {
            let Some(&gone) = others.choose(&mut self.rng) else {
                return;
            };
            self.note(format!(
                "admin: remove region {id}'s replica on store {gone}"
            ));
            let r = tokio::time::timeout(
                ADMIN_TIMEOUT,
                self.admin.change_peer(id, &[(ChangeKind::Remove, gone)]),
            )
            .await;
            flatten(r.map(|r| r.map(|r| format!("{} replicas", r.peers.len()))))
        } else if let Some(&to) = free.choose(&mut self.rng) {
            self.note(format!("admin: add a replica of region {id} on store {to}"));
            let r = tokio::time::timeout(
                ADMIN_TIMEOUT,
                self.admin.change_peer(id, &[(ChangeKind::AddVoter, to)]),
            )
            .await;
            flatten(r.map(|r| r.map(|r| format!("{} replicas", r.peers.len()))))
        } else {
            return self.note(format!("admin: region {id} has a replica on every store"));
        };
        match call {
            Ok(what) => self.note(format!("admin: done ({what})")),
            Err(e) => self.note(format!("admin: refused or failed: {e}")),
        }
    }
}

/// Longest an admin command may take (a merge waits up to 30 s for its commit).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(40);

fn flatten(
    r: Result<shoal_client::Result<String>, tokio::time::error::Elapsed>,
) -> Result<String, String> {
    match r {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The failpoints the disk nemesis arms, with the action each takes: `return` (the
/// write or fsync fails) or `panic` (a crash there), and whether it is reached only
/// through a split or merge (the nemesis then asks for one).
pub const FAILPOINTS: [(&str, &str, bool); 13] = [
    ("log_engine_write", "return", false),
    // A full disk: the node must stay up (refusing writes, serving reads) until
    // the nemesis restarts it without the fault ("space returns").
    ("log_engine_write", "return(nospace)", false),
    ("kv_engine_write", "return(nospace)", false),
    ("kv_engine_write", "return", false),
    ("kv_engine_sync", "return", true),
    ("log_writer_after_write", "panic", false),
    ("apply_before_kv_write", "panic", false),
    ("apply_after_kv_write", "panic", false),
    ("apply_admin_before_kv_write", "panic", true),
    ("apply_split", "panic", true),
    ("merge_before_commit", "panic", true),
    ("merge_commit_before_catch_up", "panic", true),
    ("merge_destroy_source", "panic", true),
];

impl Nemesis {
    /// Restarts a node with one failpoint armed to fire after a random number of
    /// passes, waits, then restarts it without.
    async fn disk(&mut self) {
        let id = self.victim().await;
        let (point, action, admin) = FAILPOINTS[self.rng.gen_range(0..FAILPOINTS.len())];
        // A point reached through a split or merge fires at its first pass (the
        // nemesis makes one); the others after a random number of passes.
        let after = if admin { 0 } else { self.rng.gen_range(0..40) };
        let spec = format!("{point}={after}*off->{action}");
        let (armed, log_from) = {
            let mut cluster = self.cluster.lock().expect("cluster");
            cluster.kill(id);
            let from = cluster.log_len(id);
            (cluster.start_node_with(id, Some(&spec)), from)
        };
        if let Err(e) = armed {
            return self.note(format!("disk: cannot restart node {id}: {e}"));
        }
        self.note(format!("disk: node {id} restarted with failpoint {spec}"));
        if admin {
            // Once the node has caught up, the split or merge that reaches the point.
            tokio::time::sleep(self.election).await;
            self.admin(point.starts_with("merge")).await;
        }
        let held = self.hold(2..6);
        tokio::time::sleep(held).await;
        let log = self
            .cluster
            .lock()
            .expect("cluster")
            .log_since(id, log_from);
        if action == "return" && log.contains(&format!("failpoint {point}")) {
            // A write or fsync failed: the node must stop (it may still be printing
            // its panic), never go on without the write. Waited for here, before the
            // lock is taken and without blocking the runtime: the proxies of every
            // link run on it, and a blocked worker froze them.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.cluster.lock().expect("cluster").is_alive(id)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut cluster = self.cluster.lock().expect("cluster");
        if log.contains("built without the failpoints feature") {
            cluster.record_exit(
                id,
                "the disk nemesis needs a shoal built with --features shoal-server/failpoints",
            );
            cluster.kill(id);
            let _ = cluster.start_node(id);
            drop(cluster);
            return self.note(format!(
                "disk: node {id} cannot arm failpoints (not built with them)"
            ));
        }
        if action == "return" && log.contains(&format!("failpoint {point}")) {
            // A write or fsync failed: the node must stop (it may still be printing
            // its panic), never go on without the write.
            if cluster.is_alive(id) {
                cluster.record_exit(
                    id,
                    &format!("kept running after failpoint {point} failed a write"),
                );
            }
        }
        if action.contains("nospace") {
            // A full disk must not stop the node.
            let alive = cluster.is_alive(id);
            if !alive {
                cluster.record_exit(
                    id,
                    "exited on a full disk (it must refuse writes and stay up)",
                );
            }
            cluster.kill(id);
            let restarted = cluster.start_node(id);
            drop(cluster);
            let full = log.contains("the disk is full");
            return self.note(format!(
                "disk: node {id} {} a full disk{}; restarted with space ({})",
                if alive {
                    "stayed up through"
                } else {
                    "EXITED on"
                },
                if full { "" } else { " (not reached)" },
                if restarted.is_ok() { "ok" } else { "failed" },
            ));
        }
        // Stopped, or still printing its panic's backtrace: the point fired.
        let fired = !cluster.is_alive(id) || log.contains(&format!("failpoint {point}"));
        cluster.kill(id);
        let restarted = cluster.start_node(id);
        drop(cluster);
        let what = match fired {
            true => "stopped at the failpoint",
            false => "still running (the failpoint did not fire)",
        };
        match restarted {
            Ok(()) => self.note(format!("disk: node {id} {what}; restarted without it")),
            Err(e) => self.note(format!("disk: node {id} {what}; restart failed: {e}")),
        }
    }
}

fn region_id(info: &shoal_client::RegionInfo) -> u64 {
    info.region.as_ref().map_or(0, |r| r.id)
}

/// Every directed link between the two groups, both ways.
fn links_between(a: &[u64], b: &[u64]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &x in a {
        for &y in b {
            out.push((x, y));
            out.push((y, x));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(
            Kind::parse_list("kill, pause,kill").unwrap(),
            vec![Kind::Kill, Kind::Pause]
        );
        assert!(Kind::parse_list("none").unwrap().is_empty());
        assert!(Kind::parse_list("fire")
            .unwrap_err()
            .contains("unknown nemesis"));
        assert_eq!(Kind::parse_list("disk").unwrap(), vec![Kind::Disk]);
        assert_eq!(links_between(&[1], &[2, 3]).len(), 4);
    }
}
