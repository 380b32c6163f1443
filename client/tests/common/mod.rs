//! An in-process mock cluster for the client tests: N mock stores, each a tonic server
//! on 127.0.0.1:0 serving Kv and Admin over one shared in-memory state (one map, one
//! region layout, one leader per region). Tests script region errors and statuses,
//! move leaders, split regions behind the client's back, stop stores, and read the
//! log of requests each store received.

#![allow(dead_code)]

mod services;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use services::MockNode;
use shoal_client::{Client, ClientConfig};
use shoal_proto::adminpb::admin_server::AdminServer;
use shoal_proto::errorpb::{self, region_error::Kind, RegionError};
use shoal_proto::kvrpcpb::kv_server::KvServer;
use shoal_proto::metapb::{ChangeKind, Peer, PeerRole, Region, RegionEpoch, Store};
use shoal_proto::RegionExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::Code;

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    Region(RegionError),
    Status(Code, String),
}

/// Answers `answer` to the next `times` requests matching `store_id` / `op`.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub store_id: Option<u64>,
    pub op: Option<&'static str>,
    pub times: usize,
    pub answer: Answer,
}

/// One request a store received, and how it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub store_id: u64,
    pub op: &'static str,
    pub region_id: u64,
    pub key: Vec<u8>,
    /// "ok", a region error kind ("NotLeader", ...) or "status".
    pub outcome: &'static str,
}

#[derive(Default)]
pub struct State {
    pub regions: BTreeMap<u64, Region>,
    pub leaders: HashMap<u64, Peer>,
    /// What ListRegions reports as leader, when it should differ from the truth.
    pub reported_leaders: HashMap<u64, Option<Peer>>,
    pub stores: Vec<Store>,
    pub data: BTreeMap<Vec<u8>, Vec<u8>>,
    pub script: Vec<Scripted>,
    pub log: Vec<Logged>,
    pub list_calls: usize,
    pub next_id: u64,
    /// The applied index each store's Checksum reports (1 when unset).
    pub applied_index: HashMap<u64, u64>,
    /// Stores answer `BatchCommands` with `Unimplemented` (an older node).
    pub no_batch_stream: bool,
    /// GetRegion requests served (any store).
    pub get_region_calls: usize,
    /// Every ChangePeer request applied, in order, as `(kind, store)` lists.
    pub changes: Vec<Vec<(ChangeKind, u64)>>,
}

pub fn peer_of(region_id: u64, store_id: u64) -> Peer {
    Peer {
        id: region_id * 100 + store_id,
        store_id,
        role: PeerRole::Voter as i32,
    }
}

impl State {
    /// Splits `region_id` at `key`: the left part keeps the id, the right part gets a new
    /// one; both versions grow; the right part's leader is on the parent leader's store.
    pub fn split(&mut self, region_id: u64, key: &[u8]) -> Vec<Region> {
        let parent = self.regions[&region_id].clone();
        assert!(parent.contains_key(key) && key != parent.start_key.as_slice());
        let new_id = self.next_id;
        self.next_id += 1;
        let epoch = parent.region_epoch.unwrap();
        let epoch = RegionEpoch {
            conf_ver: epoch.conf_ver,
            version: epoch.version + 1,
        };
        let mut left = parent.clone();
        left.end_key = key.to_vec();
        left.region_epoch = Some(epoch);
        let right = Region {
            id: new_id,
            start_key: key.to_vec(),
            end_key: parent.end_key.clone(),
            region_epoch: Some(epoch),
            peers: parent
                .peers
                .iter()
                .map(|p| peer_of(new_id, p.store_id))
                .collect(),
        };
        let leader_store = self.leaders[&region_id].store_id;
        self.leaders.insert(new_id, peer_of(new_id, leader_store));
        self.regions.insert(region_id, left.clone());
        self.regions.insert(new_id, right.clone());
        vec![left, right]
    }

    /// Merges `source` into its neighbour `target`.
    pub fn merge(&mut self, source: u64, target: u64) -> Region {
        let s = self.regions.remove(&source).unwrap();
        let mut t = self.regions[&target].clone();
        let version = s
            .region_epoch
            .unwrap()
            .version
            .max(t.region_epoch.unwrap().version)
            + 1;
        if !s.start_key.is_empty() && t.end_key == s.start_key {
            t.end_key = s.end_key;
        } else {
            assert!(
                !t.start_key.is_empty() && s.end_key == t.start_key,
                "regions are not adjacent"
            );
            t.start_key = s.start_key;
        }
        t.region_epoch.as_mut().unwrap().version = version;
        self.regions.insert(target, t.clone());
        self.leaders.remove(&source);
        t
    }

    /// Changes `region_id`'s membership by the real store's rules, in short: no
    /// change while the region is joint; one change applies at once; several
    /// enter a joint configuration, left at once (the real store answers once
    /// its leader has left it). A new replica's peer is `peer_of(region, store)`.
    pub fn change_peer(
        &mut self,
        region_id: u64,
        changes: &[(ChangeKind, u64)],
    ) -> Result<Region, String> {
        let mut r = self.regions[&region_id].clone();
        if r.is_joint() {
            return Err(
                "the region is in a joint configuration (a change is in progress); \
                        it must be left first"
                    .into(),
            );
        }
        let joint = changes.len() > 1;
        let (promoted, demoted) = match joint {
            true => (PeerRole::IncomingVoter, PeerRole::DemotingVoter),
            false => (PeerRole::Voter, PeerRole::Learner),
        };
        for &(kind, store) in changes {
            let at = r.peers.iter().position(|p| p.store_id == store);
            let role = at.map(|i| PeerRole::try_from(r.peers[i].role).unwrap());
            match (kind, at, role) {
                (ChangeKind::AddVoter, Some(i), Some(PeerRole::Learner)) => {
                    r.peers[i].role = promoted as i32
                }
                (ChangeKind::AddLearner, Some(i), Some(PeerRole::Voter)) => {
                    r.peers[i].role = demoted as i32
                }
                (ChangeKind::AddVoter | ChangeKind::AddLearner, None, _) => {
                    let role = match kind {
                        ChangeKind::AddVoter => promoted,
                        _ => PeerRole::Learner,
                    };
                    r.peers.push(Peer {
                        role: role as i32,
                        ..peer_of(region_id, store)
                    });
                }
                (ChangeKind::Remove, Some(i), Some(role)) => {
                    if joint && role == PeerRole::Voter {
                        return Err(format!("store {store}'s voter must be demoted first"));
                    }
                    r.peers.remove(i);
                }
                _ => return Err(format!("{kind:?} on store {store} ({role:?}) is refused")),
            }
        }
        let epoch = r.region_epoch.as_mut().unwrap();
        epoch.conf_ver += 1;
        if joint {
            Self::leave_joint(&mut r);
        }
        self.regions.insert(region_id, r.clone());
        self.changes.push(changes.to_vec());
        Ok(r)
    }

    /// What leaving `r`'s joint configuration makes of it.
    pub fn leave_joint(r: &mut Region) {
        for p in &mut r.peers {
            p.role = match PeerRole::try_from(p.role).unwrap() {
                PeerRole::IncomingVoter => PeerRole::Voter,
                PeerRole::DemotingVoter => PeerRole::Learner,
                other => other,
            } as i32;
        }
        r.region_epoch.as_mut().unwrap().conf_ver += 1;
    }

    fn scripted(&mut self, store_id: u64, op: &'static str) -> Option<Answer> {
        let entry = self.script.iter_mut().find(|s| {
            s.times > 0
                && s.store_id.is_none_or(|id| id == store_id)
                && s.op.is_none_or(|o| o == op)
        })?;
        entry.times -= 1;
        Some(entry.answer.clone())
    }

    /// The checks a real store makes before serving a routed request.
    fn check(
        &mut self,
        store_id: u64,
        op: &'static str,
        region_id: u64,
        epoch: Option<RegionEpoch>,
        keys: &[&[u8]],
    ) -> Result<Region, Answer> {
        if let Some(answer) = self.scripted(store_id, op) {
            return Err(answer);
        }
        let Some(region) = self.regions.get(&region_id).cloned() else {
            return Err(region_error(Kind::RegionNotFound(
                errorpb::RegionNotFound { region_id },
            )));
        };
        let leader = self.leaders[&region_id];
        if leader.store_id != store_id {
            return Err(region_error(Kind::NotLeader(errorpb::NotLeader {
                region_id,
                leader: Some(leader),
            })));
        }
        if epoch != region.region_epoch {
            return Err(region_error(Kind::EpochNotMatch(errorpb::EpochNotMatch {
                current_regions: self.regions.values().cloned().collect(),
            })));
        }
        if let Some(key) = keys.iter().find(|k| !region.contains_key(k)) {
            return Err(region_error(Kind::KeyNotInRegion(
                errorpb::KeyNotInRegion {
                    key: key.to_vec(),
                    region_id,
                    start_key: region.start_key.clone(),
                    end_key: region.end_key.clone(),
                },
            )));
        }
        Ok(region)
    }
}

pub fn region_error(kind: Kind) -> Answer {
    Answer::Region(RegionError {
        message: "scripted by the mock".to_string(),
        kind: Some(kind),
    })
}

pub fn kind_name(answer: &Answer) -> &'static str {
    match answer {
        Answer::Status(..) => "status",
        Answer::Region(e) => match e.kind {
            Some(Kind::NotLeader(_)) => "NotLeader",
            Some(Kind::EpochNotMatch(_)) => "EpochNotMatch",
            Some(Kind::RegionNotFound(_)) => "RegionNotFound",
            Some(Kind::KeyNotInRegion(_)) => "KeyNotInRegion",
            Some(Kind::ServerIsBusy(_)) => "ServerIsBusy",
            Some(Kind::EntryTooLarge(_)) => "EntryTooLarge",
            Some(Kind::StoreNotMatch(_)) => "StoreNotMatch",
            Some(Kind::StaleCommand(_)) => "StaleCommand",
            Some(Kind::Undetermined(_)) => "Undetermined",
            None => "unknown",
        },
    }
}

struct Running {
    shutdown: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

/// N mock stores sharing one state.
pub struct MockCluster {
    pub state: Arc<Mutex<State>>,
    addresses: Vec<String>,
    running: HashMap<u64, Running>,
}

impl MockCluster {
    /// Starts `stores` stores (ids 1..=stores). Regions are cut at `split_keys`
    /// (ids 1, 2, ...); every region has a voter on every store; region i's leader is on
    /// store `leader_stores[i]`.
    pub async fn start(stores: u64, split_keys: &[&str], leader_stores: &[u64]) -> MockCluster {
        assert_eq!(split_keys.len() + 1, leader_stores.len());
        let mut listeners = Vec::new();
        let mut state = State::default();
        for id in 1..=stores {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            state.stores.push(Store {
                id,
                address,
                ..Default::default()
            });
            listeners.push(listener);
        }
        let mut bounds: Vec<Vec<u8>> = vec![Vec::new()];
        bounds.extend(split_keys.iter().map(|k| k.as_bytes().to_vec()));
        bounds.push(Vec::new());
        for (i, leader_store) in leader_stores.iter().enumerate() {
            let id = i as u64 + 1;
            state.regions.insert(
                id,
                Region {
                    id,
                    start_key: bounds[i].clone(),
                    end_key: bounds[i + 1].clone(),
                    region_epoch: Some(RegionEpoch {
                        conf_ver: 1,
                        version: 1,
                    }),
                    peers: (1..=stores).map(|s| peer_of(id, s)).collect(),
                },
            );
            state.leaders.insert(id, peer_of(id, *leader_store));
        }
        state.next_id = leader_stores.len() as u64 + 1;
        let addresses = state.stores.iter().map(|s| s.address.clone()).collect();
        let state = Arc::new(Mutex::new(state));
        let mut running = HashMap::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            running.insert(id, serve(id, listener, state.clone()));
        }
        MockCluster {
            state,
            addresses,
            running,
        }
    }

    /// Every store's address.
    pub fn endpoints(&self) -> Vec<String> {
        self.addresses.clone()
    }

    pub fn address(&self, store_id: u64) -> String {
        self.addresses[store_id as usize - 1].clone()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Stops store `store_id`'s server; connections to it are refused afterwards.
    pub async fn stop(&mut self, store_id: u64) {
        let running = self.running.remove(&store_id).expect("store is running");
        let _ = running.shutdown.send(());
        let mut handle = running.handle;
        if tokio::time::timeout(Duration::from_secs(5), &mut handle)
            .await
            .is_err()
        {
            handle.abort();
        }
    }

    /// Moves region `region_id`'s leadership to `store_id`.
    pub fn set_leader(&self, region_id: u64, store_id: u64) {
        self.state()
            .leaders
            .insert(region_id, peer_of(region_id, store_id));
    }

    /// Makes ListRegions report `store_id` (or no leader) for `region_id`.
    pub fn report_leader(&self, region_id: u64, store_id: Option<u64>) {
        self.state()
            .reported_leaders
            .insert(region_id, store_id.map(|s| peer_of(region_id, s)));
    }

    pub fn script(
        &self,
        store_id: Option<u64>,
        op: Option<&'static str>,
        times: usize,
        answer: Answer,
    ) {
        self.state().script.push(Scripted {
            store_id,
            op,
            times,
            answer,
        });
    }

    /// The requests received so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    /// Requests for `op` received so far.
    pub fn requests(&self, op: &str) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.op == op).collect()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    /// A client for this cluster with short test timeouts.
    pub async fn client(&self) -> Client {
        Client::connect(self.endpoints(), test_config())
            .await
            .unwrap()
    }
}

fn serve(store_id: u64, listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) -> Running {
    let address = listener.local_addr().unwrap().to_string();
    let node = MockNode {
        store_id,
        address,
        state,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(KvServer::new(node.clone()))
            .add_service(AdminServer::new(node))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        shutdown: tx,
        handle,
    }
}

/// Short timeouts so that every test is bounded by a few seconds.
pub fn test_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(3),
        rpc_timeout: Duration::from_secs(1),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        connect_timeout: Duration::from_millis(500),
        store_down_cooldown: Duration::from_secs(1),
        scan_batch_size: 256,
        ..ClientConfig::default()
    }
}

/// The ServerIsBusy answer.
pub fn busy() -> Answer {
    region_error(Kind::ServerIsBusy(errorpb::ServerIsBusy {
        reason: "mock is busy".to_string(),
        backoff_ms: 0,
    }))
}
