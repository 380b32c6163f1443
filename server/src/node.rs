//! Starting and stopping a node: open the data dir, bootstrap on first boot, start
//! the raftstore, serve Kv, Admin and Raft on one gRPC listener until `shutdown`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use shoal_engine::rocks::Engines;
use shoal_proto::adminpb::admin_server::AdminServer;
use shoal_proto::kvrpcpb::kv_server::KvServer;
use shoal_proto::metapb::Store;
use shoal_proto::raft_serverpb::raft_server::RaftServer;
use shoal_raftstore::bootstrap::bootstrap;
use shoal_raftstore::{RaftStore, TickMode};
use tokio::net::TcpListener;

use crate::admin_service::AdminService;
use crate::config::NodeConfig;
use crate::kv_service::KvService;
use crate::message_limit::TooLargeLayer;
use crate::raft_service::RaftService;
use crate::transport::{GrpcTransport, TransportLimits};

/// How long shutdown waits for open connections (other nodes' Raft streams, clients)
/// before closing them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a node on `listener` until `shutdown` completes. Errors say what to fix.
pub async fn run(
    cfg: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    cfg.validate()?;
    let engines = Engines::open(&cfg.data_dir).map_err(|e| e.to_string())?;
    let membership = bootstrap_store(&cfg, &engines)?;
    let store = start_store(&cfg, engines, &membership)?;
    let status = crate::status::spawn(&cfg.status_addr, store.clone()).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let me = membership
        .iter()
        .find(|s| s.id == cfg.store_id)
        .cloned()
        .unwrap_or(Store {
            id: cfg.store_id,
            address: local.to_string(),
        });
    tracing::info!(store = cfg.store_id, addr = %local, "serving Kv, Admin and Raft");
    let served = serve(&cfg, &store, me, membership, listener, shutdown).await;
    status.abort();
    let _ = status.await;
    stop_store(store).await?;
    served.map_err(|e| format!("gRPC server failed: {e}"))
}

/// Bootstraps the store on first boot (the initial cluster, split into the initial
/// regions); returns the cluster's stores.
fn bootstrap_store(cfg: &NodeConfig, engines: &Engines) -> Result<Vec<Store>, String> {
    let initial: Vec<Store> = cfg
        .initial_stores()?
        .into_iter()
        .map(|(id, address)| Store { id, address })
        .collect();
    let (membership, fresh) = bootstrap(engines, cfg.store_id, &initial, cfg.initial_regions)
        .map_err(|e| e.to_string())?;
    if fresh {
        tracing::info!(
            store = cfg.store_id,
            regions = cfg.initial_regions,
            "bootstrapped a new store"
        );
    } else {
        tracing::info!(
            store = cfg.store_id,
            "restarting from {}",
            cfg.data_dir.display()
        );
    }
    Ok(membership)
}

/// Starts the raftstore on `engines`, with a gRPC transport to the other stores of
/// `membership` that reports unreachable stores back to it.
fn start_store(
    cfg: &NodeConfig,
    engines: Engines,
    membership: &[Store],
) -> Result<Arc<RaftStore>, String> {
    let addresses: HashMap<u64, String> = membership
        .iter()
        .filter(|s| s.id != cfg.store_id)
        .map(|s| (s.id, s.address.clone()))
        .collect();
    let transport = GrpcTransport::new(
        addresses,
        tokio::runtime::Handle::current(),
        TransportLimits {
            snap_max_concurrent: cfg.snap_max_concurrent,
            snap_max_bytes_per_sec: cfg.snap_max_bytes_per_sec,
            ..TransportLimits::new(cfg.max_message_size())
        },
    );
    let store = RaftStore::start(
        cfg.store_id,
        cfg.raftstore(),
        engines,
        transport.clone(),
        TickMode::Timer,
    )
    .map_err(|e| e.to_string())?;
    let store = Arc::new(store);
    let weak = Arc::downgrade(&store);
    transport.on_unreachable(Arc::new(move |store_id| {
        if let Some(s) = weak.upgrade() {
            s.report_unreachable(store_id);
        }
    }));
    Ok(store)
}

/// Serves Kv, Admin and Raft on `listener` until `shutdown` completes and the open
/// connections close, or [`SHUTDOWN_GRACE`] after that.
async fn serve(
    cfg: &NodeConfig,
    store: &Arc<RaftStore>,
    me: Store,
    membership: Vec<Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // Graceful shutdown waits for open streams; peers keep their Raft streams open
    // until they stop themselves, so the wait is bounded by SHUTDOWN_GRACE.
    let signalled = Arc::new(tokio::sync::Notify::new());
    let notify = signalled.clone();
    let shutdown = async move {
        shutdown.await;
        notify.notify_one();
    };
    // Every server decodes and encodes at most `limit` bytes per message (see the
    // config's module docs); a larger request is refused naming the limits.
    let limit = cfg.max_message_size();
    // HTTP/2 pings close a connection whose peer vanished without closing it (the
    // Raft streams' senders ping too: `transport/link.rs`).
    let serve = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .layer(TooLargeLayer::new(
            cfg.max_value_size,
            cfg.raft_entry_max_size,
            limit,
        ))
        .add_service(
            KvServer::new(KvService::new(
                store.clone(),
                cfg.max_value_size,
                cfg.max_batch_keys,
                cfg.raft_entry_max_size,
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        )
        .add_service(
            AdminServer::new(AdminService::new(store.clone(), me, membership))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            RaftServer::new(RaftService::new(store.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, small answers and raft messages wait on Nagle's
            // algorithm (~40 ms against a delayed ACK).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        );
    tokio::select! {
        r = serve => r,
        _ = async { signalled.notified().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them");
            Ok(())
        }
    }
}

/// Stops the store's threads once the services are gone (pending requests get
/// errors); if something still holds the store, it is only dropped.
async fn stop_store(store: Arc<RaftStore>) -> Result<(), String> {
    match Arc::try_unwrap(store) {
        Ok(store) => tokio::task::spawn_blocking(move || store.stop())
            .await
            .map_err(|e| e.to_string())?,
        Err(store) => drop(store),
    }
    Ok(())
}
