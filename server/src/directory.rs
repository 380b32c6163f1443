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

use crate::security::Security;
use crate::transport::GrpcTransport;

/// How often a node reads the directory again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// This node's copy of the cluster directory; see the module docs.
pub struct ClusterView {
    me: u64,
    /// The stores as the directory (or the saved copy) last said.
    stores: RwLock<Vec<Store>>,
    /// Addresses stores announced on their Raft streams that the directory does
    /// not list yet (`learn_address`); dropped once it lists one, or lists a
    /// different address than before for that store.
    learned: RwLock<HashMap<u64, String>>,
    /// Addresses this node dials instead of the directory's (`peer-addresses`).
    overrides: HashMap<u64, String>,
    /// A directory client for reads that cannot wait for the next refresh,
    /// connected on first use.
    client: tokio::sync::Mutex<Option<Directory>>,
    /// This node's own address (one endpoint of that client).
    address: String,
    /// The transport whose addresses this view keeps (`ClusterView::attach`).
    transport: std::sync::OnceLock<Arc<GrpcTransport>>,
    /// Held while the transport's addresses are computed and set, so that an
    /// older computation never replaces a newer one.
    pushing: std::sync::Mutex<()>,
    /// How the view's directory client connects (deadlines, limits, TLS).
    client_config: ClientConfig,
    contacts: RwLock<HashMap<u64, Instant>>,
}

impl ClusterView {
    /// The view of store `me`, starting from `stores` (as saved, or as joined);
    /// `overrides` are dialled instead of the directory's addresses.
    pub fn new(
        me: &Store,
        stores: Vec<Store>,
        overrides: HashMap<u64, String>,
        client_config: ClientConfig,
    ) -> Arc<ClusterView> {
        Arc::new(ClusterView {
            me: me.id,
            stores: RwLock::new(stores),
            learned: RwLock::new(HashMap::new()),
            overrides,
            client: tokio::sync::Mutex::new(None),
            address: me.address.clone(),
            transport: std::sync::OnceLock::new(),
            pushing: std::sync::Mutex::new(()),
            client_config,
            contacts: RwLock::new(HashMap::new()),
        })
    }

    /// Every store of the cluster, as last read (with the addresses stores
    /// announced since).
    pub fn stores(&self) -> Vec<Store> {
        let mut stores = self.stores.read().expect("view lock").clone();
        let learned = self.learned.read().expect("view lock");
        for s in &mut stores {
            if let Some(a) = learned.get(&s.id) {
                s.address = a.clone();
            }
        }
        for (id, a) in learned.iter() {
            if !stores.iter().any(|s| s.id == *id) {
                stores.push(Store {
                    id: *id,
                    address: a.clone(),
                    state: StoreState::Up as i32,
                });
            }
        }
        stores
    }

    /// Store `id`, as last read.
    pub fn store(&self, id: u64) -> Option<Store> {
        self.stores().into_iter().find(|s| s.id == id)
    }

    /// Keeps `transport`'s addresses from now on.
    pub fn attach(&self, transport: Arc<GrpcTransport>) {
        let _ = self.transport.set(transport);
        self.push_addresses();
    }

    fn push_addresses(&self) {
        if let Some(t) = self.transport.get() {
            let _one_at_a_time = self.pushing.lock().expect("view lock");
            t.set_addresses(self.addresses());
        }
    }

    /// A store opened a Raft stream saying it is `id` at `address`: until the
    /// directory says otherwise, it is dialled there (a store restarted on a new
    /// address is answered at once, even while the directory, which may need that
    /// very store for a quorum, cannot be read).
    pub fn learn_address(&self, id: u64, address: &str) {
        if id == self.me || address.is_empty() {
            return;
        }
        let known = self.store(id).map(|s| s.address);
        if known.as_deref() == Some(address) {
            return;
        }
        self.learned
            .write()
            .expect("view lock")
            .insert(id, address.to_string());
        tracing::info!(store = id, %address, "a store says it moved; dialling it there");
        self.push_addresses();
    }

    /// Store `id` as the directory has it now (a linearizable read, for a check
    /// that must not act on a stale copy); the cached copy when the directory
    /// cannot be read.
    pub async fn read_store(&self, id: u64) -> Option<Store> {
        match self.directory().await {
            Some(d) => match d.store(id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("cannot read the cluster directory: {e}");
                    self.store(id)
                }
            },
            None => self.store(id),
        }
    }

    /// Every store the directory lists, read now (linearizably) with this node's
    /// own identity: what the Admin service's `ListStores` answers.
    pub async fn read_stores(&self) -> Result<Vec<Store>, String> {
        let d = self
            .directory()
            .await
            .ok_or("the cluster directory cannot be reached from this node")?;
        d.stores().await.map_err(|e| e.to_string())
    }

    /// Sets store `id`'s state in the directory (`Directory::set_state`, written
    /// with this node's identity); the record after it. `Removed` is final, so
    /// it is taken only for a store already offline that no region has a
    /// replica on, every other up store answering (what `remove-store` leaves).
    pub async fn set_store_state(
        &self,
        id: u64,
        state: StoreState,
    ) -> Result<Store, SetStateError> {
        let d = self.directory().await.ok_or(SetStateError::Unreachable)?;
        if state == StoreState::Removed {
            check_removable(&d, id).await?;
        }
        d.set_state(id, state).await.map_err(SetStateError::Refused)
    }

    /// The directory client, connected on first use (to the other stores and this
    /// node).
    async fn directory(&self) -> Option<Directory> {
        let mut client = self.client.lock().await;
        if client.is_none() {
            let mut endpoints: Vec<String> = self
                .stores()
                .into_iter()
                .filter(|s| s.state != StoreState::Removed as i32 && !s.address.is_empty())
                .map(|s| s.address)
                .collect();
            endpoints.push(self.address.clone());
            endpoints.dedup();
            match Directory::connect(endpoints, self.client_config.clone()).await {
                Ok(d) => *client = Some(d),
                Err(e) => tracing::debug!("cannot reach the cluster directory: {e}"),
            }
        }
        client.clone()
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
        {
            let mut learned = self.learned.write().expect("view lock");
            learned.retain(|id, addr| {
                let Some(listed) = stores.iter().find(|s| s.id == *id) else {
                    return true;
                };
                let before = current.iter().find(|c| c.id == *id).map(|c| &c.address);
                listed.address != *addr && before == Some(&listed.address)
            });
        }
        if *current == stores {
            return false;
        }
        *current = stores;
        true
    }
}

/// Store `id` may be marked removed: it is offline (or removed already), every
/// other up store lists its regions, and none has a replica on it.
async fn check_removable(d: &Directory, id: u64) -> Result<(), SetStateError> {
    let refuse = |m: String| SetStateError::Refused(shoal_client::Error::InvalidArgument(m));
    let failed = |e: shoal_client::Error| SetStateError::Failed(e.to_string());
    let stores = d.stores().await.map_err(failed)?;
    let Some(store) = stores.iter().find(|s| s.id == id) else {
        return Err(refuse(format!("the cluster has no store {id}")));
    };
    if store.state == StoreState::Removed as i32 {
        return Ok(());
    }
    if store.state != StoreState::Offline as i32 {
        return Err(refuse(format!(
            "store {id} is up: mark it offline and move its replicas away first \
             (shoal admin remove-store does both, then marks it removed)"
        )));
    }
    let (regions, answered) = d.client().cluster_regions(&stores).await;
    let silent: Vec<u64> = stores
        .iter()
        .filter(|s| s.state == StoreState::Up as i32 && !answered.contains(&s.id))
        .map(|s| s.id)
        .collect();
    if !silent.is_empty() {
        return Err(refuse(format!(
            "stores {silent:?} did not list their regions: whether a region still has a \
             replica on store {id} cannot be told; try again once they answer"
        )));
    }
    let held: Vec<u64> = regions
        .iter()
        .filter_map(|i| i.region.as_ref())
        .filter(|r| r.peers.iter().any(|p| p.store_id == id))
        .map(|r| r.id)
        .collect();
    if !held.is_empty() {
        return Err(refuse(format!(
            "regions {held:?} still have a replica on store {id}: move them away first \
             (shoal admin remove-store does)"
        )));
    }
    Ok(())
}

/// Why a store's state was not set.
#[derive(Debug, thiserror::Error)]
pub enum SetStateError {
    #[error("the cluster directory cannot be reached from this node")]
    Unreachable,
    #[error("{0}")]
    Refused(shoal_client::Error),
    #[error("reading the cluster failed: {0}")]
    Failed(String),
}

/// A short-deadline client config for directory calls made by a node. With TLS
/// on it dials through the node's own connector: its store certificate, checked
/// on every reload as the node checks it (its own store's, valid, from the CA),
/// so the directory client never presents what the node itself would refuse.
pub fn client_config(max_message_size: usize, security: Option<&Security>) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(2),
        max_message_size,
        tls: security.map(|s| s.paths.clone()),
        tls_connector: security.map(|s| s.connector.clone()),
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
    client_config: ClientConfig,
) -> Result<(u64, Vec<Store>), String> {
    let dir = Directory::connect(seeds.to_vec(), client_config)
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
    engines: Engines,
    me: Store,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            let Some(d) = view.directory().await else {
                continue;
            };
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
                        "registering this store's address in the cluster directory"
                    );
                    let addr = me.address.clone();
                    if let Err(e) = d.update(me.id, |s| s.address = addr.clone()).await {
                        tracing::warn!("cannot register this store's new address: {e}");
                    }
                    continue;
                }
            }
            if view.update(stores.clone()) {
                view.push_addresses();
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
