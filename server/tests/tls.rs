//! Mutual TLS between node processes: a TLS cluster serves clients with a
//! certificate its CA signed and a common name it allows, and refuses everyone
//! else (plaintext, no certificate, another CA's, expired, a name not allowed);
//! the Raft service takes only store certificates, and drops messages that claim
//! another store than the certificate's; bad TLS settings stop a node at start;
//! certificates rotate on disk without a restart and without a failed write.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, metric, shoal, start_cluster_with, status_addr, NodeProc};
use shoal_client::tls::TlsConnector;
use shoal_client::{Client, ClientConfig, TlsPaths};
use shoal_proto::metapb::Peer as PeerMeta;
use shoal_proto::raft_serverpb::raft_client::RaftClient;
use shoal_proto::raft_serverpb::{RaftMessage, RaftMessageBatch, SnapshotChunk};
use shoal_server::security::cert::{write_issued, Ca, CertFiles, Role, Validity};
use time::OffsetDateTime;

const T: Duration = Duration::from_secs(60);

/// A CA and the certificates it signed, in one directory.
struct Pki {
    dir: PathBuf,
    ca: Ca,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = Ca::new("test-ca", Validity::days(2)).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    fn issue(&self, name: &str, role: Role, validity: Validity) -> CertFiles {
        write_issued(&self.dir, name, &self.ca.issue(&role, validity).unwrap()).unwrap()
    }

    fn store(&self, id: u64, validity: Validity) -> CertFiles {
        let role = Role::Store {
            id,
            hosts: vec!["127.0.0.1".into()],
        };
        self.issue(&format!("store-{id}"), role, validity)
    }

    fn client(&self, name: &str, cn: &str, validity: Validity) -> TlsPaths {
        let files = self.issue(name, Role::Client { cn: cn.into() }, validity);
        self.paths(&files)
    }

    fn paths(&self, files: &CertFiles) -> TlsPaths {
        TlsPaths {
            ca_path: self.dir.join("ca.pem"),
            cert_path: files.cert.clone(),
            key_path: files.key.clone(),
        }
    }

    /// A store node's TLS flags.
    fn node_flags(&self, id: u64) -> Vec<String> {
        let d = &self.dir;
        [
            "--ca-path".to_string(),
            d.join("ca.pem").display().to_string(),
            "--cert-path".into(),
            d.join(format!("store-{id}.pem")).display().to_string(),
            "--key-path".into(),
            d.join(format!("store-{id}.key")).display().to_string(),
        ]
        .into()
    }
}

/// `n` TLS nodes of a new cluster (stores 1..=n, their certificates in `pki`),
/// each also given `extra` flags.
fn start_tls_cluster(
    dir: &Path,
    pki: &Pki,
    n: u64,
    regions: usize,
    extra: &[&str],
) -> (Vec<NodeProc>, Vec<String>) {
    start_cluster_with(dir, n, regions, |id| {
        let mut flags = pki.node_flags(id);
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    })
}

fn config(tls: Option<&TlsPaths>) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(3),
        rpc_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        tls: tls.cloned(),
        ..ClientConfig::default()
    }
}

/// A client with `tls`, once the cluster answers and a write goes through.
async fn connect_ready(addrs: &[String], tls: &TlsPaths) -> Client {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(c) = Client::connect(addrs.to_vec(), config(Some(tls))).await {
            if c.put("ready", "1").await.is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "the TLS cluster never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Why a client with `tls` (or plaintext) cannot use the node at `addr`; `None`
/// if it can.
async fn refusal(addr: &str, tls: Option<&TlsPaths>) -> Option<String> {
    match Client::connect(vec![addr.to_string()], config(tls)).await {
        Ok(c) => c.get("k").await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// Whether the node at `addr` speaks HTTP/2 to a TLS client with `config`: its
/// first bytes after the client's preface are a SETTINGS frame. A refused client
/// certificate (or none) ends the connection instead.
async fn speaks_h2(addr: &str, config: rustls::ClientConfig) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return false;
    };
    // The client preface and an empty SETTINGS frame.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    if tls.write_all(&hello).await.is_err() {
        return false;
    }
    let mut head = [0u8; 9];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut head)).await;
    matches!(read, Ok(Ok(_))) && head[3] == 4
}

/// A rustls client config trusting `pki`'s CA, presenting `client` (or nothing).
fn raw_config(pki: &Pki, client: Option<&TlsPaths>) -> rustls::ClientConfig {
    let m = shoal_client::tls::Material::load(client.unwrap_or(&TlsPaths {
        ca_path: pki.dir.join("ca.pem"),
        cert_path: pki.dir.join("ca.pem"),
        key_path: pki.dir.join("store-1.key"),
    }))
    .unwrap();
    match client {
        Some(_) => shoal_client::tls::client_config(&m).unwrap(),
        None => {
            let mut c = rustls::ClientConfig::builder_with_provider(shoal_client::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(m.roots().unwrap())
                .with_no_client_auth();
            c.alpn_protocols = vec![b"h2".to_vec()];
            c
        }
    }
}

/// A Raft client to `addr` presenting `tls`.
async fn raft_client(addr: &str, tls: &TlsPaths) -> RaftClient<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = endpoint
        .connect_with_connector(TlsConnector::new(tls).unwrap())
        .await
        .unwrap();
    RaftClient::new(channel)
}

/// A message to region 1's peer on store 2 claiming to come from store `from`.
fn message_from(from: u64) -> RaftMessage {
    RaftMessage {
        region_id: 1,
        from_peer: Some(PeerMeta {
            store_id: from,
            id: from,
            ..Default::default()
        }),
        to_peer: Some(PeerMeta {
            store_id: 2,
            id: 2,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sends `msgs` as one batch on a Raft stream (named as `origin` when given).
async fn send_raft(
    client: &mut RaftClient<tonic::transport::Channel>,
    msgs: Vec<RaftMessage>,
    origin: Option<u64>,
) -> Result<(), tonic::Status> {
    let batch = RaftMessageBatch { msgs };
    let mut req = tonic::Request::new(futures::stream::iter(vec![batch]));
    if let Some(o) = origin {
        req.metadata_mut()
            .insert("shoal-origin-store", o.to_string().parse().unwrap());
    }
    client.send(req).await.map(|_| ())
}

#[test]
fn a_tls_cluster_serves_certified_clients_and_refuses_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    for id in 1..=3 {
        pki.store(id, Validity::days(1));
    }
    let app = pki.client("client-app", "app", Validity::days(1));
    let intruder = pki.client("client-intruder", "intruder", Validity::days(1));
    let now = OffsetDateTime::now_utc();
    let expired = pki.client(
        "client-expired",
        "app",
        Validity {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::days(1),
        },
    );
    // A certificate named "app" from another CA, with this cluster's CA trusted.
    let other = Pki::new(&dir.path().join("other"));
    let foreign = TlsPaths {
        ca_path: pki.dir.join("ca.pem"),
        ..other.client("client-app", "app", Validity::days(1))
    };
    let (nodes, addrs) = start_tls_cluster(dir.path(), &pki, 3, 2, &["--cert-allowed-cn", "app"]);
    let status1 = status_addr(&nodes[0]);
    let status2 = status_addr(&nodes[1]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Served: the right CA and an allowed name.
        let client = connect_ready(&addrs, &app).await;
        client.put("k", "v").await.unwrap();
        assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        // ... and so is the command line with the same three files.
        let p = |p: &Path| p.display().to_string();
        let flags = [
            "--endpoints".to_string(),
            addrs[0].clone(),
            "--ca-path".into(),
            p(&app.ca_path),
            "--cert-path".into(),
            p(&app.cert_path),
            "--key-path".into(),
            p(&app.key_path),
        ];
        let args = |cmd: &[&str]| -> Vec<String> {
            cmd.iter()
                .map(|s| s.to_string())
                .chain(flags.iter().cloned())
                .collect()
        };
        let run = |a: Vec<String>| shoal(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let out = run(args(&["kv", "get", "k"]));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
        let out = run(args(&["admin", "status"]));
        assert!(out.status.success(), "{out:?}");
        let out = shoal(&["kv", "get", "k", "--endpoints", &addrs[0]]);
        assert!(
            !out.status.success(),
            "the CLI in plaintext was served: {out:?}"
        );

        // Refused, each at node 1.
        let node1 = &addrs[0];
        // Each refusal says why (and a TLS refusal is not retried until the
        // client's deadline).
        for (client, why) in [
            (None, "the node may require TLS"),
            (Some(&foreign), "received fatal alert"),
            (Some(&expired), "CertificateExpired"),
        ] {
            let started = Instant::now();
            let refused = refusal(node1, client).await.expect("served");
            assert!(refused.contains(why), "{client:?}: {refused}");
            if client.is_some() {
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(2),
                    "{client:?}: retried for {took:?}"
                );
            }
        }
        let not_allowed = refusal(node1, Some(&intruder))
            .await
            .expect("CN intruder was served");
        assert!(not_allowed.contains("cert-allowed-cn"), "{not_allowed}");
        assert!(
            !speaks_h2(node1, raw_config(&pki, None)).await,
            "a client without a certificate was served"
        );
        // The same raw check succeeds with a certificate (so it can fail).
        assert!(speaks_h2(node1, raw_config(&pki, Some(&app))).await);
        let handshakes = metric(&status1, "shoal_tls_handshake_failures_total", &[]).await;
        assert!(
            handshakes >= 4.0,
            "handshake failures counted: {handshakes}"
        );
        let cn = metric(
            &status1,
            "shoal_tls_refused_requests_total",
            &["reason=\"cn_not_allowed\""],
        )
        .await;
        assert!(cn >= 1.0, "CN refusals counted: {cn}");

        // The Raft service: a client certificate is refused...
        let mut as_app = raft_client(&addrs[1], &app).await;
        let refused = send_raft(&mut as_app, vec![message_from(1)], None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("store certificates only"),
            "{refused:?}"
        );
        // ... and store 3's certificate speaks only for store 3: a message claiming
        // store 1 is dropped and counted, store 3's own is not, and a stream naming
        // store 1 as its origin is refused.
        let store3 = pki.paths(&CertFiles {
            cert: pki.dir.join("store-3.pem"),
            key: pki.dir.join("store-3.key"),
        });
        let mut as_store3 = raft_client(&addrs[1], &store3).await;
        let forged = "shoal_raft_messages_store_mismatch_total";
        assert_eq!(metric(&status2, forged, &[]).await, 0.0);
        send_raft(&mut as_store3, vec![message_from(1), message_from(3)], None)
            .await
            .unwrap();
        assert_eq!(metric(&status2, forged, &[]).await, 1.0);
        let origin = send_raft(&mut as_store3, vec![message_from(3)], Some(1))
            .await
            .unwrap_err();
        assert_eq!(origin.code(), tonic::Code::PermissionDenied, "{origin:?}");
        assert_eq!(metric(&status2, forged, &[]).await, 1.0);
        // A snapshot claiming store 1 is refused before any of it is written.
        let chunk = SnapshotChunk {
            message: Some(message_from(1)),
            data: Vec::new(),
        };
        let snap = as_store3
            .snapshot(futures::stream::iter(vec![chunk]))
            .await
            .unwrap_err();
        assert_eq!(snap.code(), tonic::Code::PermissionDenied, "{snap:?}");
        assert_eq!(metric(&status2, forged, &[]).await, 2.0);
        // The cluster still serves.
        client.put("k2", "v2").await.unwrap();
    });
}

#[test]
fn a_node_with_a_bad_tls_setup_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    pki.store(1, Validity::days(1));
    let app = pki.client("client-app", "app", Validity::days(1));
    let node = |extra: &[&str]| {
        let mut args = vec![
            "node".to_string(),
            "--addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--status-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        // A node that does start is killed after 20 s and fails the test (rather
        // than hang it).
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a node started with {extra:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "started with {extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let ca = pki.dir.join("ca.pem").display().to_string();
    let err = node(&["--ca-path", &ca]);
    assert!(err.contains("missing: cert-path, key-path"), "{err}");
    let cert = app.cert_path.display().to_string();
    let key = app.key_path.display().to_string();
    let err = node(&["--ca-path", &ca, "--cert-path", &cert, "--key-path", &key]);
    assert!(err.contains("is not a store certificate"), "{err}");
    let flags = pki.node_flags(1);
    let mut with_id = vec!["--store-id", "2"];
    with_id.extend(flags.iter().map(String::as_str));
    let err = node(&with_id);
    assert!(err.contains("store-id is 2 but the certificate"), "{err}");
    let err = node(&["--cert-allowed-cn", "app"]);
    assert!(err.contains("TLS is off"), "{err}");
    let missing = pki.dir.join("nope.pem").display().to_string();
    let mut bad_path = flags.clone();
    bad_path[1] = missing.clone();
    let err = node(&bad_path.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains(&missing), "{err}");
}

/// Replaces `files` with a new certificate and key for `role` the way a rotation
/// tool would: each written aside and renamed over the old one. Returns the new
/// certificate's PEM.
fn rotate(pki: &Pki, files: &CertFiles, role: Role) -> String {
    let issued = pki.ca.issue(&role, Validity::days(1)).unwrap();
    let aside = pki.dir.join("rotating");
    std::fs::create_dir_all(&aside).unwrap();
    let new = write_issued(&aside, "new", &issued).unwrap();
    std::fs::rename(&new.cert, &files.cert).unwrap();
    std::fs::rename(&new.key, &files.key).unwrap();
    issued.cert_pem
}

#[test]
fn certificates_rotate_on_disk_without_a_restart_or_a_failed_write() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // The stores' first certificates expire soon: once they have, a connection
    // opened with one of them fails, so whatever connects after that proves the
    // new files are in use.
    let now = OffsetDateTime::now_utc();
    let short = Validity {
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::seconds(25),
    };
    let expires = Instant::now() + Duration::from_secs(25);
    let stores: Vec<CertFiles> = (1..=3).map(|id| pki.store(id, short)).collect();
    let app = pki.client("client-app", "app", Validity::days(1));
    let (mut nodes, addrs) = start_tls_cluster(dir.path(), &pki, 3, 2, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect_ready(&addrs, &app).await;
        assert!(
            Instant::now() + Duration::from_secs(8) < expires,
            "the cluster took too long to start for this test's clock"
        );
        // A writer that must never fail, through the rotation and the expiry.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let writer = {
            let client = client.clone();
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), Vec::new());
                for i in 0..100_000 {
                    if *stop_rx.borrow() {
                        break;
                    }
                    let key = format!("w{i:06}");
                    match client.put(&key, &key).await {
                        Ok(()) => acked.push(key),
                        Err(e) => failed.push(format!("{key}: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, failed)
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut new_pems = Vec::new();
        for (i, files) in stores.iter().enumerate() {
            let role = Role::Store {
                id: i as u64 + 1,
                hosts: vec!["127.0.0.1".into()],
            };
            new_pems.push(rotate(&pki, files, role));
        }
        // Past the old certificates' expiry (and a reload check after it).
        let wait = expires.saturating_duration_since(Instant::now()) + Duration::from_secs(3);
        tokio::time::sleep(wait).await;

        // New connections to each node: the server presents the new certificate
        // (the old one would fail verification now).
        for (addr, pem) in addrs.iter().zip(&new_pems) {
            let presented = presented_certificate(addr, &app).await;
            let want = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
                .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
                .unwrap();
            assert_eq!(presented, want, "{addr} presents its old certificate");
            let c = Client::connect(vec![addr.clone()], config(Some(&app))).await;
            assert!(c.is_ok(), "a new client cannot reach {addr}: {:?}", c.err());
        }
        // New connections from the nodes: a store that joins now is reached by
        // the others (a replica moved to it catches up over new Raft and snapshot
        // connections, each side checking the other's certificate).
        pki.store(4, Validity::days(1));
        let addr4 = format!("127.0.0.1:{}", free_port());
        let mut args4 = vec![
            "--join".to_string(),
            addrs[0].clone(),
            "--addr".into(),
            addr4.clone(),
            "--status-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--data-dir".into(),
            dir.path().join("store4").display().to_string(),
        ];
        args4.extend(pki.node_flags(4));
        let _node4 = NodeProc::start(args4, dir.path().join("store4.log"));
        let (regions, _) = client.list_regions().await.unwrap();
        let region = regions[0].region.as_ref().unwrap().id;
        let deadline = Instant::now() + T;
        loop {
            match client.move_replica(region, 1, 4, &|_| {}).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "moving a replica to store 4: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let info = client.replica(&addr4, region).await.unwrap();
        assert!(
            info.region.is_some(),
            "store 4 holds no replica of {region}"
        );

        stop_tx.send(true).unwrap();
        let (acked, failed) = writer.await.unwrap();
        assert!(
            failed.is_empty(),
            "writes failed during the rotation: {failed:?}"
        );
        assert!(
            acked.len() > 100,
            "the writer made progress: {}",
            acked.len()
        );
        for key in acked.iter().step_by(97) {
            assert_eq!(
                client.get(key).await.unwrap().as_deref(),
                Some(key.as_bytes())
            );
        }
        for node in nodes.iter_mut() {
            let child = node.child.as_mut().unwrap();
            assert!(child.try_wait().unwrap().is_none(), "a node exited");
            let reloads = metric(
                &status_addr(node),
                "shoal_tls_reloads_total",
                &["result=\"ok\""],
            )
            .await;
            assert!(reloads >= 1.0, "{:?} reloaded {reloads} times", node.args);
        }
    });
}

/// The certificate (DER) the node at `addr` presents to a new connection.
async fn presented_certificate(addr: &str, client: &TlsPaths) -> Vec<u8> {
    let config =
        shoal_client::tls::client_config(&shoal_client::tls::Material::load(client).unwrap())
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// With TLS on, the system key range (the cluster directory) is for store
/// certificates only: a client certificate asking for it with `system` is refused
/// on every path (batched stream and unary calls, reads and writes), a store
/// certificate is served, and the tools still read and change the directory with
/// a client certificate, through the Admin service.
#[test]
fn the_system_range_is_for_store_certificates_only() {
    use shoal_proto::system::{store_key, store_prefix, store_prefix_end};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    for id in 1..=3 {
        pki.store(id, Validity::days(1));
    }
    let app = pki.client("client-app", "app", Validity::days(1));
    let store1 = pki.paths(&CertFiles {
        cert: pki.dir.join("store-1.pem"),
        key: pki.dir.join("store-1.key"),
    });
    let (nodes, addrs) = start_tls_cluster(dir.path(), &pki, 3, 1, &[]);
    let status1 = status_addr(&nodes[0]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        connect_ready(&addrs, &app).await;
        let system = |tls: &TlsPaths, batch_stream: bool| ClientConfig {
            system: true,
            batch_stream,
            ..config(Some(tls))
        };
        for batch_stream in [true, false] {
            let c = Client::connect(addrs.clone(), system(&app, batch_stream))
                .await
                .unwrap();
            let scanned = c.scan(store_prefix(), store_prefix_end(), 100).await;
            let put = c.put(store_key(1), b"forged").await;
            let deleted = c.delete(store_key(2)).await;
            for (what, refused) in [
                ("scan", scanned.map(|_| ()).err()),
                ("put", put.err()),
                ("delete", deleted.err()),
            ] {
                let refused = refused.unwrap_or_else(|| {
                    panic!("{what} of the system range with a client certificate was served (batch_stream {batch_stream})")
                });
                let text = refused.to_string();
                assert!(
                    text.contains("PermissionDenied") && text.contains("store certificates only"),
                    "{what} (batch_stream {batch_stream}): {text}"
                );
            }
        }
        assert!(
            metric(&status1, "shoal_tls_refused_requests_total", &["system_range"]).await >= 1.0
                || metric(&status_addr(&nodes[1]), "shoal_tls_refused_requests_total", &["system_range"]).await >= 1.0
                || metric(&status_addr(&nodes[2]), "shoal_tls_refused_requests_total", &["system_range"]).await >= 1.0,
            "no refusal counted"
        );
        // A store certificate is served: the directory's three records.
        let as_store = Client::connect(addrs.clone(), system(&store1, true))
            .await
            .unwrap();
        let records = as_store
            .scan(store_prefix(), store_prefix_end(), 100)
            .await
            .unwrap();
        assert_eq!(records.len(), 3, "{records:?}");
        // The records were not changed by the refused writes.
        let app_client = connect_ready(&addrs, &app).await;
        let stores = app_client.stores().await.unwrap();
        assert_eq!(
            stores.iter().map(|s| (s.id, s.address.clone())).collect::<Vec<_>>(),
            (1..=3).map(|id| (id, addrs[id as usize - 1].clone())).collect::<Vec<_>>()
        );
        // The tools, with the client certificate: stores are listed, and a state
        // change goes through the Admin service (refused for an unknown store).
        let p = |p: &Path| p.display().to_string();
        let out = shoal(&[
            "admin",
            "stores",
            "--endpoints",
            &addrs[0],
            "--ca-path",
            &p(&app.ca_path),
            "--cert-path",
            &p(&app.cert_path),
            "--key-path",
            &p(&app.key_path),
        ]);
        assert!(out.status.success(), "{out:?}");
        let listed = String::from_utf8_lossy(&out.stdout);
        for a in &addrs {
            assert!(listed.contains(a.as_str()), "{listed}");
        }
        let unknown = app_client
            .set_store_state(9, shoal_proto::metapb::StoreState::Offline)
            .await
            .unwrap_err();
        assert!(unknown.to_string().contains("no store 9"), "{unknown}");
        // Removal is final: not for a store that is up and holds replicas.
        let up = app_client
            .set_store_state(3, shoal_proto::metapb::StoreState::Removed)
            .await
            .unwrap_err();
        assert!(up.to_string().contains("store 3 is up"), "{up}");
    });
    drop(nodes);
}
