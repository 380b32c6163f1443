//! An in-process cluster for raftstore tests: N stores with real RocksDB engines in
//! temp dirs, joined by a simulated transport whose filters can drop, partition or
//! isolate messages. Tests read as narratives over it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message as RaftPbMessage, MessageType};
use shoal_engine::keys::data_key;
use shoal_engine::rocks::Engines;
use shoal_engine::{Cf, KvRead};
use shoal_proto::errorpb::region_error::Kind;
use shoal_proto::metapb::{Region, Store};
use shoal_proto::raft_cmdpb::{request, PutOp, RaftCmdRequest, RaftRequestHeader, Request};
use shoal_proto::raft_serverpb::RaftMessage;
use shoal_proto::RegionExt;
use shoal_raftstore::bootstrap::{bootstrap, initial_regions};
use shoal_raftstore::{
    CmdError, Config, OutgoingSnapshot, RaftStore, ReadKind, ReadOutput, TickMode, Transport,
};

mod regions;

/// Decides which messages a network delivers.
pub trait Filter: Send + Sync {
    /// Keeps only the messages that get through.
    fn filter(&self, msgs: &mut Vec<RaftMessage>);
}

/// Drops every message to or from one store.
pub struct Isolate(pub u64);

impl Filter for Isolate {
    fn filter(&self, msgs: &mut Vec<RaftMessage>) {
        let touches = |m: &RaftMessage| {
            m.from_peer.as_ref().map(|p| p.store_id) == Some(self.0)
                || m.to_peer.as_ref().map(|p| p.store_id) == Some(self.0)
        };
        msgs.retain(|m| !touches(m));
    }
}

/// Cuts the network in two: messages between the groups are dropped.
pub struct Partition(pub Vec<u64>, pub Vec<u64>);

impl Filter for Partition {
    fn filter(&self, msgs: &mut Vec<RaftMessage>) {
        let store = |p: &Option<shoal_proto::metapb::Peer>| p.as_ref().map_or(0, |p| p.store_id);
        let across = |a: u64, b: u64| {
            (self.0.contains(&a) && self.1.contains(&b))
                || (self.1.contains(&a) && self.0.contains(&b))
        };
        msgs.retain(|m| !across(store(&m.from_peer), store(&m.to_peer)));
    }
}

/// Drops every message of one region.
pub struct DropRegion(pub u64);

impl Filter for DropRegion {
    fn filter(&self, msgs: &mut Vec<RaftMessage>) {
        msgs.retain(|m| m.region_id != self.0);
    }
}

/// Drops raft messages of one type (e.g. appends) sent to one store.
pub struct DropType {
    pub to_store: u64,
    pub msg_type: MessageType,
}

impl Filter for DropType {
    fn filter(&self, msgs: &mut Vec<RaftMessage>) {
        msgs.retain(|m| {
            let to = m.to_peer.as_ref().map_or(0, |p| p.store_id);
            let ty = RaftPbMessage::parse_from_bytes(&m.message).map(|pb| pb.get_msg_type());
            !(to == self.to_store && ty.is_ok_and(|t| t == self.msg_type))
        });
    }
}

/// Drops raft messages of one type sent by one store (e.g. its vote requests).
pub struct DropFrom {
    pub from_store: u64,
    pub msg_type: MessageType,
}

impl Filter for DropFrom {
    fn filter(&self, msgs: &mut Vec<RaftMessage>) {
        msgs.retain(|m| {
            let from = m.from_peer.as_ref().map_or(0, |p| p.store_id);
            let ty = RaftPbMessage::parse_from_bytes(&m.message).map(|pb| pb.get_msg_type());
            !(from == self.from_store && ty.is_ok_and(|t| t == self.msg_type))
        });
    }
}

type Stores = Arc<RwLock<HashMap<u64, Arc<RaftStore>>>>;

/// The simulated network.
#[derive(Clone, Default)]
pub struct SimNetwork {
    stores: Stores,
    filters: Arc<RwLock<Vec<Box<dyn Filter>>>>,
    /// When set, every batch is delivered this much later (from another thread).
    delay: Arc<RwLock<Option<Duration>>>,
    /// Snapshots handed to the network (and not filtered out).
    pub snapshots_sent: Arc<AtomicU64>,
    /// When set, every snapshot is delivered this much later: a slow transfer.
    pub snapshot_delay: Arc<RwLock<Option<Duration>>>,
    /// When set, rewrites every snapshot (its message and its files' bytes)
    /// before delivery: a buggy or lying sender.
    pub snapshot_tamper: Arc<RwLock<Option<Tamper>>>,
    /// The outcome of every snapshot delivery, in order.
    pub snapshot_outcomes: Arc<Mutex<Vec<Result<(), String>>>>,
}

/// Rewrites a snapshot in flight: its message and the bytes of its files.
pub type Tamper = Arc<dyn Fn(&mut RaftMessage, &mut Vec<Vec<u8>>) + Send + Sync>;

struct SimTransport {
    net: SimNetwork,
}

impl Transport for SimTransport {
    fn send(&self, store_id: u64, mut msgs: Vec<RaftMessage>) -> usize {
        for f in self.net.filters.read().unwrap().iter() {
            f.filter(&mut msgs);
        }
        let bytes = msgs.iter().map(shoal_proto::Message::encoded_len).sum();
        let deliver = {
            let stores = self.net.stores.clone();
            move || {
                let target = stores.read().unwrap().get(&store_id).cloned();
                if let Some(store) = target {
                    for m in msgs {
                        store.on_raft_message(m);
                    }
                }
            }
        };
        match *self.net.delay.read().unwrap() {
            Some(d) => {
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    deliver();
                });
            }
            None => deliver(),
        }
        bytes
    }

    /// Delivers a snapshot the way the server does (files through the receiving
    /// store's `SnapReceiver`), on a thread of its own, unless a filter drops it.
    fn send_snapshot(&self, store_id: u64, snap: OutgoingSnapshot) {
        let mut kept = vec![snap.msg.clone()];
        for f in self.net.filters.read().unwrap().iter() {
            f.filter(&mut kept);
        }
        if kept.is_empty() {
            return snap.done.finish(false);
        }
        self.net.snapshots_sent.fetch_add(1, Ordering::SeqCst);
        let stores = self.net.stores.clone();
        let delay = *self.net.snapshot_delay.read().unwrap();
        let tamper = self.net.snapshot_tamper.read().unwrap().clone();
        let outcomes = self.net.snapshot_outcomes.clone();
        std::thread::spawn(move || {
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            let target = stores.read().unwrap().get(&store_id).cloned();
            let delivered = target
                .ok_or_else(|| "store down".to_string())
                .and_then(|store| {
                    let mut msg = snap.msg.clone();
                    let mut files = Vec::new();
                    for (path, _) in &snap.files.files {
                        files.push(std::fs::read(path).map_err(|e| e.to_string())?);
                    }
                    if let Some(t) = tamper {
                        t(&mut msg, &mut files);
                    }
                    let mut recv = store.receive_snapshot(msg)?;
                    for data in &files {
                        for chunk in data.chunks(64 << 10) {
                            recv.write(chunk)?;
                        }
                    }
                    store.snapshot_received(recv)
                });
            snap.done.finish(delivered.is_ok());
            outcomes.lock().unwrap().push(delivered);
        });
    }
}

/// N stores sharing one simulated network.
pub struct Cluster {
    pub net: SimNetwork,
    pub dirs: HashMap<u64, tempfile::TempDir>,
    pub engines: HashMap<u64, Engines>,
    pub regions: Vec<Region>,
    pub tick_mode: TickMode,
    pub rt: tokio::runtime::Runtime,
    pub acked: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    pub cfg: Config,
}

/// The `i`th key of the tests' key space (`k00000`, `k00001`, ...).
pub fn key(i: u32) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

/// Log GC every 5 ticks, once 20 entries can go.
pub fn gc_config() -> Config {
    let cfg = test_config();
    Config {
        raft_log_gc_tick_interval: cfg.raft_tick_interval * 5,
        raft_log_gc_threshold: 20,
        ..cfg
    }
}

/// Fast timers so elections take a fraction of a second.
pub fn test_config() -> Config {
    Config {
        raft_tick_interval: Duration::from_millis(20),
        pollers: 1,
        ..Config::default()
    }
}

impl Cluster {
    /// Bootstraps and starts `n` stores with `k` initial regions.
    pub fn start(n: u64, k: usize, tick_mode: TickMode) -> Cluster {
        Cluster::start_with(n, k, tick_mode, test_config())
    }

    /// Like [`Cluster::start`] with the given store config.
    pub fn start_with(n: u64, k: usize, tick_mode: TickMode, cfg: Config) -> Cluster {
        // With RUST_LOG set, the stores' logs go to the test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let ids: Vec<u64> = (1..=n).collect();
        let members: Vec<Store> = ids
            .iter()
            .map(|&id| Store {
                id,
                address: format!("sim-{id}"),
                ..Default::default()
            })
            .collect();
        let mut c = Cluster {
            net: SimNetwork::default(),
            dirs: HashMap::new(),
            engines: HashMap::new(),
            regions: initial_regions(&ids, k),
            tick_mode,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
            acked: Mutex::new(HashMap::new()),
            cfg,
        };
        for &id in &ids {
            let dir = tempfile::tempdir().unwrap();
            let engines = Engines::open(dir.path()).unwrap();
            bootstrap(&engines, id, &members, k).unwrap();
            c.dirs.insert(id, dir);
            drop(engines);
            c.start_store(id);
        }
        c
    }

    /// Starts a new, empty store `id` (joined: no region).
    pub fn add_store(&mut self, id: u64) {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        shoal_raftstore::bootstrap::join(&engines, id, &[]).unwrap();
        drop(engines);
        self.dirs.insert(id, dir);
        self.start_store(id);
    }

    /// (Re)starts a store on its data dir.
    pub fn start_store(&mut self, id: u64) {
        let engines = Engines::open(self.dirs[&id].path()).unwrap();
        self.engines.insert(id, engines.clone());
        let transport = Arc::new(SimTransport {
            net: self.net.clone(),
        });
        let cfg = Config {
            snap_dir: Some(self.dirs[&id].path().join("snap")),
            ..self.cfg.clone()
        };
        let store = RaftStore::start(id, cfg, engines, transport, self.tick_mode).unwrap();
        self.net.stores.write().unwrap().insert(id, Arc::new(store));
    }

    /// Stops a store (its data stays).
    pub fn stop_store(&mut self, id: u64) {
        let store = self.net.stores.write().unwrap().remove(&id);
        self.engines.remove(&id);
        if let Some(store) = store {
            // Other threads may briefly hold a handle (a transport send in flight).
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut store = store;
            loop {
                match Arc::try_unwrap(store) {
                    Ok(s) => {
                        s.stop();
                        break;
                    }
                    Err(s) if Instant::now() < deadline => {
                        store = s;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => panic!("store {id} is still referenced"),
                }
            }
        }
    }

    pub fn store(&self, id: u64) -> Arc<RaftStore> {
        self.net.stores.read().unwrap()[&id].clone()
    }

    pub fn store_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.net.stores.read().unwrap().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn add_filter(&self, f: impl Filter + 'static) {
        self.net.filters.write().unwrap().push(Box::new(f));
    }

    pub fn clear_filters(&self) {
        self.net.filters.write().unwrap().clear();
        *self.net.delay.write().unwrap() = None;
    }

    /// Delays every message by `d` (until `clear_filters`).
    pub fn delay_all(&self, d: Duration) {
        *self.net.delay.write().unwrap() = Some(d);
    }

    /// Ticks every store once (manual tick mode).
    pub fn tick_all(&self) {
        for id in self.store_ids() {
            self.store(id).tick();
        }
    }

    /// The store whose peer leads `region_id`, if one does.
    pub fn leader_of(&self, region_id: u64) -> Option<u64> {
        for id in self.store_ids() {
            // A store without the region (it missed a split) knows no leader.
            let Ok(info) = self.rt.block_on(self.store(id).region_info(region_id)) else {
                continue;
            };
            if let Some(l) = info.leader {
                if l.store_id == id {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Waits (ticking when manual) until `region_id` has a leader.
    pub fn wait_leader(&self, region_id: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader_of(region_id) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "region {region_id} elected no leader in {timeout:?}"
            );
            if self.tick_mode == TickMode::Manual {
                self.tick_all();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The region that holds `key`: the newest (highest version) any running store
    /// knows, else the initial layout.
    pub fn region_for(&self, key: &[u8]) -> Region {
        let mut best: Option<Region> = None;
        for id in self.store_ids() {
            for info in self.rt.block_on(self.store(id).regions()) {
                let Some(r) = info.region else { continue };
                if !r.contains_key(key) {
                    continue;
                }
                let version = |r: &Region| {
                    let e = r.region_epoch.unwrap_or_default();
                    (e.version, e.conf_ver)
                };
                if best.as_ref().is_none_or(|b| version(&r) > version(b)) {
                    best = Some(r);
                }
            }
        }
        best.unwrap_or_else(|| {
            self.regions
                .iter()
                .find(|r| r.contains_key(key))
                .cloned()
                .expect("the regions cover the key space")
        })
    }

    pub fn header(&self, region: &Region) -> RaftRequestHeader {
        RaftRequestHeader {
            region_id: region.id,
            peer: None,
            region_epoch: region.region_epoch,
        }
    }

    /// Writes through whichever store leads, retrying until `timeout`. Records the
    /// write as acknowledged only when the store says it was applied.
    pub fn put(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            // Fresh each round: a split may have moved the key to another region.
            let region = self.region_for(key);
            for id in self.store_ids() {
                let cmd = RaftCmdRequest {
                    header: Some(self.header(&region)),
                    requests: vec![Request {
                        cmd: Some(request::Cmd::Put(PutOp {
                            key: key.to_vec(),
                            value: value.to_vec(),
                        })),
                    }],
                    admin: None,
                };
                let store = self.store(id);
                let r = self.rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), store.write(cmd)).await
                });
                match r {
                    Ok(Ok(_)) => {
                        self.acked
                            .lock()
                            .unwrap()
                            .insert(key.to_vec(), value.to_vec());
                        return Ok(());
                    }
                    Ok(Err(CmdError::Region(e))) if matches!(e.kind, Some(Kind::NotLeader(_))) => {
                        last = e.message
                    }
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "timed out".into(),
                }
            }
            if self.tick_mode == TickMode::Manual {
                self.tick_all();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("put {key:?} failed until the deadline: {last}"))
    }

    /// A linearizable get through the leader, retrying (and ticking when manual)
    /// until `timeout`.
    pub fn get(&self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let mut errors = std::collections::BTreeMap::new();
        while Instant::now() < deadline {
            let region = self.region_for(key);
            for id in self.store_ids() {
                let store = self.store(id);
                let r = self.rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        store.read(self.header(&region), ReadKind::Get(key.to_vec())),
                    )
                    .await
                });
                match r {
                    Ok(Ok(ReadOutput::Value(v))) => return Ok(v),
                    Ok(Ok(other)) => return Err(format!("unexpected read output {other:?}")),
                    Ok(Err(e)) => last = format!("store {id}: {e}"),
                    Err(_) => last = format!("store {id}: timed out"),
                }
                errors.insert(id, last.clone());
            }
            if self.tick_mode == TickMode::Manual {
                self.tick_all();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "get {key:?} failed until the deadline: {last}; last per store: {errors:?}"
        ))
    }

    /// The value of `key` in store `id`'s kv engine, as applied there.
    pub fn local_value(&self, id: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.engines[&id]
            .kv
            .get(Cf::Default, &data_key(key))
            .unwrap()
    }

    /// Waits until store `id` has applied `key = value`.
    pub fn wait_local(&self, id: u64, key: &[u8], value: &[u8], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.local_value(id, key).as_deref() != Some(value) {
            assert!(
                Instant::now() < deadline,
                "store {id} did not apply {key:?} in {timeout:?}"
            );
            if self.tick_mode == TickMode::Manual {
                self.tick_all();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every acknowledged write is readable through the leader.
    /// The first index of `region`'s log on store `id` (0: no entries).
    pub fn first_index(&self, id: u64, region: u64) -> u64 {
        use shoal_engine::LogEngine;
        self.engines[&id]
            .log
            .first_index(region)
            .unwrap()
            .unwrap_or(0)
    }

    /// Ticks every store until `cond` holds (20 s at most).
    pub fn tick_until(&self, what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.tick_all();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn check_acked(&self) {
        let acked = self.acked.lock().unwrap().clone();
        for (k, v) in acked {
            assert_eq!(
                self.get(&k, Duration::from_secs(10)).unwrap(),
                Some(v.clone()),
                "acknowledged write of {k:?} lost"
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.store_ids() {
            self.stop_store(id);
        }
    }
}

/// Runs `f` on the cluster's runtime, ticking every store until it is done (30 s
/// at most).
pub fn ticking<R: Send + 'static>(
    c: &Cluster,
    f: impl std::future::Future<Output = R> + Send + 'static,
) -> R {
    let h = c.rt.spawn(f);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h.is_finished() {
        assert!(Instant::now() < deadline, "still running after 30 s");
        c.tick_all();
        std::thread::sleep(Duration::from_millis(5));
    }
    c.rt.block_on(h).unwrap()
}

/// Changes `region`'s membership through its leader (ticking meanwhile).
pub fn change(
    c: &Cluster,
    region: u64,
    changes: &[(shoal_proto::metapb::ChangeKind, u64)],
) -> Result<Region, CmdError> {
    let leader = c.wait_leader(region, Duration::from_secs(30));
    let store = c.store(leader);
    let changes = changes.to_vec();
    ticking(
        c,
        async move { store.change_peer(region, None, changes).await },
    )
}
