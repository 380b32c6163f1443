//! The cluster directory, as nodes use it: the stores of the cluster (id,
//! address, state) and the next store id, kept as records in the system key
//! range (`shoal_proto::system`), read linearizably and changed only by
//! compare-and-swap. Two nodes joining at once get different ids; an id is never
//! handed out twice; an id already registered at another address is refused.
//!
//! Every call goes through a [`Client`] with `system` access (the directory's
//! records are ordinary keys of the last region, replicated like any data). With
//! TLS on, a node honours `system` only for a store certificate: a client
//! certificate gets `PermissionDenied`. Tools read and change the directory
//! through a node's Admin service instead (`Client::stores`,
//! `Client::set_store_state`, `Client::remove_store`).

use shoal_proto::metapb::{Store, StoreState};
use shoal_proto::system::{next_store_id_key, store_key, store_prefix, store_prefix_end};
use shoal_proto::Message as _;

use crate::{Client, ClientConfig, Error, Result};

/// Store ids must be below this (a store's region and peer ids are
/// `store_id << 40 | n`).
pub const MAX_STORE_ID: u64 = 1 << 24;

/// A client of the cluster directory.
#[derive(Clone)]
pub struct Directory {
    client: Client,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!(
        "the cluster directory's {what} does not decode: {e}"
    ))
}

impl Directory {
    /// A directory client over the cluster reachable at `endpoints`.
    pub async fn connect(endpoints: Vec<String>, config: ClientConfig) -> Result<Directory> {
        let config = ClientConfig {
            system: true,
            ..config
        };
        Ok(Directory {
            client: Client::connect(endpoints, config).await?,
        })
    }

    /// The underlying client (with system access).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every store the directory lists, by id.
    pub async fn stores(&self) -> Result<Vec<Store>> {
        let pairs = self
            .client
            .scan(store_prefix(), store_prefix_end(), usize::MAX)
            .await?;
        pairs
            .iter()
            .map(|(_, v)| Store::decode(v.as_slice()).map_err(|e| corrupt("store record", e)))
            .collect()
    }

    /// Store `id`'s record, if it has one.
    pub async fn store(&self, id: u64) -> Result<Option<Store>> {
        self.client
            .get(store_key(id))
            .await?
            .map(|v| Store::decode(v.as_slice()).map_err(|e| corrupt("store record", e)))
            .transpose()
    }

    /// Registers a store serving at `address`, up: with `id` 0 a new id is handed
    /// out; a given id is confirmed when the directory has it at `address` (a node
    /// joining again after a crash) or does not have it yet. Refused: an id the
    /// directory has at another address, a removed store's id, an address an up
    /// store already has.
    pub async fn register(&self, id: u64, address: &str) -> Result<Store> {
        if id >= MAX_STORE_ID {
            return Err(Error::InvalidArgument(format!(
                "store id {id} is too large: store ids must be below {MAX_STORE_ID} (2^24)"
            )));
        }
        let stores = self.stores().await?;
        if let Some(s) = stores
            .iter()
            .find(|s| s.address == address && s.id != id && s.state != StoreState::Removed as i32)
        {
            return Err(Error::InvalidArgument(format!(
                "store {} is already registered at {address}; give this node another address \
                 (or remove store {} first). If that is this node's own join, interrupted \
                 before it wrote its data directory, join again with --store-id {}",
                s.id, s.id, s.id
            )));
        }
        let id = match id {
            0 => self.alloc_id().await?,
            id => {
                self.reserve_id(id).await?;
                id
            }
        };
        let record = Store {
            id,
            address: address.to_string(),
            state: StoreState::Up as i32,
        };
        let cas = self
            .client
            .compare_and_swap(store_key(id), None, record.encode_to_vec())
            .await?;
        if cas.succeeded {
            return Ok(record);
        }
        let found = cas
            .previous
            .map(|v| Store::decode(v.as_slice()).map_err(|e| corrupt("store record", e)))
            .transpose()?
            .unwrap_or_default();
        if found.state == StoreState::Removed as i32 {
            return Err(Error::InvalidArgument(format!(
                "store {id} was removed from the cluster; store ids are never reused: join \
                 without --store-id to get a new one"
            )));
        }
        if found.address != address {
            return Err(Error::InvalidArgument(format!(
                "store id {id} is already used by the store at {}; pick another id, or join \
                 without --store-id to get a new one",
                found.address
            )));
        }
        Ok(found)
    }

    /// Changes store `id`'s record with `change` (compare-and-swap, retried while
    /// another writer changes it first). Returns the new record.
    pub async fn update(&self, id: u64, change: impl Fn(&mut Store)) -> Result<Store> {
        self.modify(id, |current| {
            let mut next = current.clone();
            change(&mut next);
            Ok(next)
        })
        .await
    }

    /// Sets store `id`'s state (compare-and-swap, retried while another writer
    /// changes the record first). Refused: a store the directory does not have,
    /// and any change to a removed store (removal is final: its id is never
    /// reused). Returns the new record.
    pub async fn set_state(&self, id: u64, state: StoreState) -> Result<Store> {
        self.modify(id, |current| {
            if current.state == StoreState::Removed as i32 && state != StoreState::Removed {
                return Err(Error::InvalidArgument(format!(
                    "store {id} was removed from the cluster; a removed store stays removed \
                     (its id is never reused)"
                )));
            }
            Ok(Store {
                state: state as i32,
                ..current.clone()
            })
        })
        .await
    }

    /// Replaces store `id`'s record with what `next` makes of it (or its
    /// refusal), by compare-and-swap, asking `next` again when another writer
    /// changed the record first. A store the directory does not have is refused.
    async fn modify(&self, id: u64, next: impl Fn(&Store) -> Result<Store>) -> Result<Store> {
        loop {
            let Some(current) = self.store(id).await? else {
                return Err(Error::InvalidArgument(format!(
                    "the cluster has no store {id}"
                )));
            };
            let record = next(&current)?;
            if record == current {
                return Ok(current);
            }
            let cas = self
                .client
                .compare_and_swap(
                    store_key(id),
                    Some(current.encode_to_vec()),
                    record.encode_to_vec(),
                )
                .await?;
            if cas.succeeded {
                return Ok(record);
            }
        }
    }

    /// A new store id: the directory's next id, raised by one (compare-and-swap).
    async fn alloc_id(&self) -> Result<u64> {
        loop {
            let (current, next) = self.next_id().await?;
            if next >= MAX_STORE_ID {
                return Err(Error::InvalidArgument("no store id left below 2^24".into()));
            }
            let cas = self
                .client
                .compare_and_swap(
                    next_store_id_key(),
                    current,
                    (next + 1).to_be_bytes().to_vec(),
                )
                .await?;
            if cas.succeeded {
                return Ok(next);
            }
        }
    }

    /// Raises the next id past `id`, so that it is never handed out.
    async fn reserve_id(&self, id: u64) -> Result<()> {
        loop {
            let (current, next) = self.next_id().await?;
            if next > id {
                return Ok(());
            }
            let cas = self
                .client
                .compare_and_swap(
                    next_store_id_key(),
                    current,
                    (id + 1).to_be_bytes().to_vec(),
                )
                .await?;
            if cas.succeeded {
                return Ok(());
            }
        }
    }

    /// The next-id record as stored (for the swap) and its value (1 when absent).
    async fn next_id(&self) -> Result<(Option<Vec<u8>>, u64)> {
        let current = self.client.get(next_store_id_key()).await?;
        let next = match &current {
            None => 1,
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| corrupt("next store id", "not 8 bytes"))?,
            ),
        };
        Ok((current, next))
    }
}

/// The directory's initial records for a cluster bootstrapped with the stores
/// `ids`: one record per store (up, no address yet: each store registers its own
/// once it runs) and the next id past the largest. They are part of the initial
/// regions' data, so every initial store must write the same bytes: they depend
/// on the ids alone, never on how a store was told the others' addresses.
pub fn initial_records(ids: &[u64]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = ids
        .iter()
        .map(|&id| {
            let record = Store {
                id,
                address: String::new(),
                state: StoreState::Up as i32,
            };
            (store_key(id), record.encode_to_vec())
        })
        .collect();
    let next = ids.iter().copied().max().unwrap_or(0) + 1;
    out.push((next_store_id_key(), next.to_be_bytes().to_vec()));
    out
}
