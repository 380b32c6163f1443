//! Starting and stopping a node: open the data dir, bootstrap (or join a running
//! cluster) on first boot, start the raftstore, keep the cluster directory's view
//! current, serve Kv, Admin and Raft on one gRPC listener until `shutdown`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use shoal_client::directory::initial_records;
use shoal_engine::rocks::Engines;
use shoal_proto::adminpb::admin_server::AdminServer;
use shoal_proto::kvrpcpb::kv_server::KvServer;
use shoal_proto::metapb::{Store, StoreState};
use shoal_proto::raft_serverpb::raft_server::RaftServer;
use shoal_raftstore::bootstrap::{bootstrap_with_data, join, load_ident};
use shoal_raftstore::{RaftStore, TickMode};
use tokio::net::TcpListener;

use crate::admin_service::AdminService;
use crate::config::NodeConfig;
use crate::directory::{self, ClusterView};
use crate::kv_service::KvService;
use crate::message_limit::TooLargeLayer;
use crate::raft_service::{RaftService, ReceiveDeadlines};
use crate::request_metrics::RequestMetrics;
use crate::security::policy::PolicyLayer;
use crate::security::{acceptor, Security, SecurityMetrics};
use crate::status::Readiness;
use crate::transport::{GrpcTransport, TransportLimits};
use shoal_client::tls::TlsConnector;

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
    let security = Security::load(cfg.tls_paths()?, cfg.allowed_cn())?;
    let cfg = match &security {
        Some(sec) if cfg.store_id != 0 && cfg.store_id != sec.store_id => {
            return Err(format!(
                "store-id is {} but the certificate {} is store {}'s",
                cfg.store_id,
                sec.paths.cert_path.display(),
                sec.store_id
            ))
        }
        Some(sec) => {
            sec.watch(&tokio::runtime::Handle::current());
            NodeConfig {
                store_id: sec.store_id,
                ..cfg
            }
        }
        None => {
            tracing::warn!(
                addr = %cfg.addr,
                "TLS is off: this node accepts unauthenticated connections (anyone who reaches it can read, write and speak Raft); set ca-path, cert-path and key-path (README: Security)"
            );
            cfg
        }
    };
    // Up first, so that `/health` answers while the node joins or loads regions
    // (`/ready` says `starting` until it serves).
    let status = crate::status::spawn(&cfg.status_addr).await?;
    let engines = Engines::open(&cfg.data_dir).map_err(|e| e.to_string())?;
    let (store_id, membership) = identify(&cfg, &engines, security.as_ref()).await?;
    let cfg = NodeConfig { store_id, ..cfg };
    let me = Store {
        id: store_id,
        address: cfg.addr.clone(),
        state: StoreState::Up as i32,
    };
    let view = ClusterView::new(
        &me,
        membership,
        cfg.peer_address_overrides()?,
        directory::client_config(cfg.max_message_size(), security.as_ref()),
    );
    let dialer = security.as_ref().map(|s| s.connector.clone());
    let (store, transport) = start_store(&cfg, engines.clone(), view.addresses(), dialer)?;
    status.state.set_store(store.clone(), engines.clone())?;
    transport
        .metrics
        .register(store.metrics().registry())
        .map_err(|e| format!("cannot register the transport metrics: {e}"))?;
    let requests = RequestMetrics::new(store.metrics().registry())
        .map_err(|e| format!("cannot register the request metrics: {e}"))?;
    let security_metrics = match &security {
        Some(sec) => sec.metrics.clone(),
        None => SecurityMetrics::new(),
    };
    security_metrics
        .register(store.metrics().registry())
        .map_err(|e| format!("cannot register the security metrics: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    transport.set_origin(store_id, cfg.addr.clone());
    view.attach(transport);
    let refresher = directory::spawn_refresher(view.clone(), engines, me.clone());
    tracing::info!(
        store = store_id,
        addr = %local,
        tls = security.is_some(),
        "serving Kv, Admin and Raft"
    );
    let state = status.state.clone();
    let shutdown = async move {
        shutdown.await;
        state.set_readiness(Readiness::Draining);
    };
    status.state.set_readiness(Readiness::Ready);
    let served = serve(
        &cfg,
        &store,
        me,
        view,
        listener,
        shutdown,
        requests,
        security.as_ref(),
        security_metrics,
    )
    .await;
    refresher.abort();
    let _ = refresher.await;
    status.stop().await;
    stop_store(store).await?;
    served.map_err(|e| format!("gRPC server failed: {e}"))
}

/// Who this store is and the cluster's stores as it knows them: from its data
/// directory on a restart; else by joining a running cluster (`join`); else by
/// bootstrapping a new one (`initial-cluster`: its regions, and the cluster
/// directory's first records in them).
async fn identify(
    cfg: &NodeConfig,
    engines: &Engines,
    security: Option<&Security>,
) -> Result<(u64, Vec<Store>), String> {
    if let Some((ident, membership)) = load_ident(engines).map_err(|e| e.to_string())? {
        if cfg.store_id != 0 && cfg.store_id != ident.store_id {
            return Err(format!(
                "this data directory belongs to store {}, not store {}",
                ident.store_id, cfg.store_id
            ));
        }
        tracing::info!(
            store = ident.store_id,
            "restarting from {}",
            cfg.data_dir.display()
        );
        return Ok((ident.store_id, membership));
    }
    let seeds = cfg.join_seeds();
    if !seeds.is_empty() {
        let client = directory::client_config(cfg.max_message_size(), security);
        let (id, stores) = directory::join(&seeds, cfg.store_id, &cfg.addr, client).await?;
        join(engines, id, &stores).map_err(|e| e.to_string())?;
        tracing::info!(store = id, seeds = ?seeds, "joined the cluster; no region yet");
        return Ok((id, stores));
    }
    let initial: Vec<Store> = cfg
        .initial_stores()?
        .into_iter()
        .map(|(id, address)| Store {
            id,
            address,
            state: StoreState::Up as i32,
        })
        .collect();
    let store_id = cfg.store_id.max(1);
    let ids: Vec<u64> = initial.iter().map(|s| s.id).collect();
    let records = initial_records(&ids);
    let (membership, _) =
        bootstrap_with_data(engines, store_id, &initial, cfg.initial_regions, &records)
            .map_err(|e| e.to_string())?;
    tracing::info!(
        store = store_id,
        regions = cfg.initial_regions,
        "bootstrapped a new store"
    );
    Ok((store_id, membership))
}

/// Starts the raftstore on `engines`, with a gRPC transport to the other stores at
/// `addresses` that reports unreachable stores back to it.
fn start_store(
    cfg: &NodeConfig,
    engines: Engines,
    addresses: HashMap<u64, String>,
    dialer: Option<TlsConnector>,
) -> Result<(Arc<RaftStore>, Arc<GrpcTransport>), String> {
    let transport = GrpcTransport::new(
        addresses,
        tokio::runtime::Handle::current(),
        TransportLimits {
            snap_max_concurrent: cfg.snap_max_concurrent,
            snap_max_bytes_per_sec: cfg.snap_max_bytes_per_sec,
            ..TransportLimits::new(cfg.max_message_size())
        },
        dialer,
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
    let unreachable = transport.metrics.unreachable.clone();
    transport.on_unreachable(Arc::new(move |store_id| {
        unreachable
            .with_label_values(&[&store_id.to_string()])
            .inc();
        if let Some(s) = weak.upgrade() {
            s.report_unreachable(store_id);
        }
    }));
    Ok((store, transport))
}

/// Serves Kv, Admin and Raft on `listener` until `shutdown` completes and the open
/// connections close, or [`SHUTDOWN_GRACE`] after that; with TLS (`security`) only
/// over TLS, to the certificates its policy takes.
#[allow(clippy::too_many_arguments)]
async fn serve(
    cfg: &NodeConfig,
    store: &Arc<RaftStore>,
    me: Store,
    view: Arc<ClusterView>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    requests: RequestMetrics,
    security: Option<&Security>,
    security_metrics: SecurityMetrics,
) -> Result<(), tonic::transport::Error> {
    // Graceful shutdown waits for open streams; peers keep their Raft streams open
    // until they stop themselves, so the wait is bounded by SHUTDOWN_GRACE.
    let signalled = Arc::new(tokio::sync::Notify::new());
    let notify = signalled.clone();
    // Batched Kv streams stop reading when shutdown begins, answer what they read
    // and end (`kv_batch.rs`): their clients send the rest elsewhere.
    let (drain, draining) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = drain.send(true);
        notify.notify_one();
    };
    // Every server decodes and encodes at most `limit` bytes per message (see the
    // config's module docs); a larger request is refused naming the limits.
    let limit = cfg.max_message_size();
    // HTTP/2 pings close a connection whose peer vanished without closing it (the
    // Raft streams' senders ping too: `transport/link.rs`).
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .layer(TooLargeLayer::new(
            cfg.max_value_size,
            cfg.raft_entry_max_size,
            limit,
        ))
        .layer(match security {
            Some(sec) => sec.policy_layer(),
            None => PolicyLayer::off(),
        })
        .add_service(
            KvServer::new(KvService::new(
                store.clone(),
                cfg.max_value_size,
                cfg.max_batch_keys,
                cfg.raft_entry_max_size,
                draining,
                Arc::new(requests),
                security.is_some(),
                security_metrics.refused.clone(),
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        )
        .add_service(
            AdminServer::new(AdminService::new(store.clone(), me, view.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            RaftServer::new(RaftService::new(
                store.clone(),
                view,
                security.is_some(),
                security_metrics.forged_messages,
                ReceiveDeadlines::new(cfg.snap_max_bytes_per_sec, cfg.snap_max_concurrent),
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        );
    let tls = security.map(|s| (s.server.clone(), s.metrics.clone()));
    let serve = async move {
        match tls {
            Some((config, metrics)) => {
                router
                    .serve_with_incoming_shutdown(
                        acceptor::incoming(listener, config, metrics),
                        shutdown,
                    )
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(
                        // Without TCP_NODELAY, small answers and raft messages wait on
                        // Nagle's algorithm (~40 ms against a delayed ACK).
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        shutdown,
                    )
                    .await
            }
        }
    };
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
