//! A node's view of the cluster directory (`shoal_client::directory`: the stores,
//! their addresses and states, as records in the system key range).
//!
//! - [`ClusterView`]: the stores as this node last read them (what `ListRegions`
//!   tells clients, what the Raft transport dials, what `ChangePeer` checks a new
//!   replica's store against), and when this node last heard from each store.
//! - [`join`]: a node with an empty data directory registers with a running
//!   cluster (`shoal node --join`) and gets its store id.
//! - [`spawn_refresher`]: every [`REFRESH`], the node reads the directory again:
//!   changed addresses reach the transport, the cache is saved (a restart finds
//!   the others from it), and a node restarted on a new address registers it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use shoal_client::directory::Directory;
use shoal_client::ClientConfig;
use shoal_engine::rocks::Engines;
use shoal_proto::adminpb::StoreContact;
use shoal_proto::metapb::{Store, StoreState};

use crate::transport::GrpcTransport;

/// How often a node reads the directory again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// This node's copy of the cluster directory; see the module docs.
pub struct ClusterView {
    me: u64,
    stores: RwLock<Vec<Store>>,
    /// Addresses this node dials instead of the directory's (`peer-addresses`).
    overrides: HashMap<u64, String>,
    contacts: RwLock<HashMap<u64, Instant>>,
}

impl ClusterView {
    /// The view of store `me`, starting from `stores` (as saved, or as joined);
    /// `overrides` are dialled instead of the directory's addresses.
    pub fn new(me: u64, stores: Vec<Store>, overrides: HashMap<u64, String>) -> Arc<ClusterView> {
        Arc::new(ClusterView {
            me,
            stores: RwLock::new(stores),
            overrides,
            contacts: RwLock::new(HashMap::new()),
        })
    }

    /// Every store of the cluster, as last read.
    pub fn stores(&self) -> Vec<Store> {
        self.stores.read().expect("view lock").clone()
    }

    /// Store `id`, as last read.
    pub fn store(&self, id: u64) -> Option<Store> {
        self.stores().into_iter().find(|s| s.id == id)
    }

    /// Records a Raft message batch from `store_id`.
    pub fn heard_from(&self, store_id: u64) {
        if store_id == 0 || store_id == self.me {
            return;
        }
        let now = Instant::now();
        let fresh = self
            .contacts
            .read()
            .expect("view lock")
            .get(&store_id)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_millis(100));
        if !fresh {
            self.contacts
                .write()
                .expect("view lock")
                .insert(store_id, now);
        }
    }

    /// When this node last heard from each store it heard from.
    pub fn contacts(&self) -> Vec<StoreContact> {
        let mut out: Vec<StoreContact> = self
            .contacts
            .read()
            .expect("view lock")
            .iter()
            .map(|(id, t)| StoreContact {
                store_id: *id,
                millis_ago: t.elapsed().as_millis() as u64,
            })
            .collect();
        out.sort_by_key(|c| c.store_id);
        out
    }

    /// The other stores' addresses (what the transport dials): the directory's,
    /// unless overridden.
    pub fn addresses(&self) -> HashMap<u64, String> {
        let mut out: HashMap<u64, String> = self
            .stores()
            .into_iter()
            .filter(|s| s.id != self.me && !s.address.is_empty())
            .map(|s| (s.id, s.address))
            .collect();
        for (id, addr) in &self.overrides {
            out.insert(*id, addr.clone());
        }
        out
    }

    /// Takes the directory's stores (a store that has not registered its address
    /// yet keeps the one this node knew); whether anything changed.
    fn update(&self, mut stores: Vec<Store>) -> bool {
        let mut current = self.stores.write().expect("view lock");
        for s in stores.iter_mut().filter(|s| s.address.is_empty()) {
            if let Some(known) = current.iter().find(|c| c.id == s.id) {
                s.address = known.address.clone();
            }
        }
        if *current == stores {
            return false;
        }
        *current = stores;
        true
    }
}

/// A short-deadline client config for directory calls made by a node.
fn client_config(max_message_size: usize) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(2),
        max_message_size,
        ..ClientConfig::default()
    }
}

/// Registers this node (store `store_id`, 0 for a new id, serving at `address`)
/// with the cluster reachable at `seeds`; returns its store id and the cluster's
/// stores.
pub async fn join(
    seeds: &[String],
    store_id: u64,
    address: &str,
    max_message_size: usize,
) -> Result<(u64, Vec<Store>), String> {
    let dir = Directory::connect(seeds.to_vec(), client_config(max_message_size))
        .await
        .map_err(|e| format!("cannot reach the cluster at {seeds:?} to join it: {e}"))?;
    let me = dir
        .register(store_id, address)
        .await
        .map_err(|e| format!("cannot join the cluster: {e}"))?;
    let stores = dir
        .stores()
        .await
        .map_err(|e| format!("joined as store {}, but cannot read the stores: {e}", me.id))?;
    Ok((me.id, stores))
}

/// Keeps `view` current (see the module docs) until the runtime stops.
pub fn spawn_refresher(
    view: Arc<ClusterView>,
    transport: Arc<GrpcTransport>,
    engines: Engines,
    me: Store,
    max_message_size: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut dir: Option<Directory> = None;
        loop {
            tokio::time::sleep(REFRESH).await;
            if dir.is_none() {
                let mut endpoints: Vec<String> = view
                    .stores()
                    .into_iter()
                    .filter(|s| s.state != StoreState::Removed as i32)
                    .map(|s| s.address)
                    .collect();
                endpoints.push(me.address.clone());
                endpoints.dedup();
                match Directory::connect(endpoints, client_config(max_message_size)).await {
                    Ok(d) => dir = Some(d),
                    Err(e) => {
                        tracing::debug!("cannot reach the cluster directory: {e}");
                        continue;
                    }
                }
            }
            let Some(d) = dir.as_ref() else { continue };
            let stores = match d.stores().await {
                Ok(s) if !s.is_empty() => s,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!("cannot read the cluster directory: {e}");
                    continue;
                }
            };
            // A store registers its own address: at first (bootstrap writes none)
            // and after a restart on a new one.
            if let Some(mine) = stores.iter().find(|s| s.id == me.id) {
                if mine.address != me.address && mine.state != StoreState::Removed as i32 {
                    tracing::info!(
                        store = me.id,
                        old = %mine.address,
                        new = %me.address,
                        "registering this store's new address"
                    );
                    let addr = me.address.clone();
                    if let Err(e) = d.update(me.id, |s| s.address = addr.clone()).await {
                        tracing::warn!("cannot register this store's new address: {e}");
                    }
                    continue;
                }
            }
            if view.update(stores.clone()) {
                transport.set_addresses(view.addresses());
                let engines = engines.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    shoal_raftstore::bootstrap::save_membership(&engines, &stores)
                })
                .await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!("cannot save the cluster's stores: {e}");
                }
            }
        }
    })
}
