//! Mutual TLS for the node: who may connect, and as whom.
//!
//! With `ca-path`, `cert-path` and `key-path` set, the node's one gRPC listener
//! (Kv, Admin, Raft) takes TLS connections only, and only from dialers presenting a
//! certificate the CA signed ([`acceptor`]); every connection the node opens (Raft
//! streams, snapshots, its cluster-directory client) presents its own certificate
//! and checks the other side's (`shoal_client::tls`). The files are read again when
//! they change (rotation without a restart).
//!
//! What a certificate may do ([`policy`]):
//! - A **store certificate** has the URI SAN `shoal://store/<id>` ([`identity`]).
//!   Only store certificates may call the Raft service, and a Raft message whose
//!   `from_peer.store_id` is not the certificate's store is dropped and counted
//!   (`raft_service`). A node's own certificate must be a store certificate naming
//!   its `store-id` (with `store-id` 0 it takes the certificate's).
//! - Any other certificate from the CA is a **client** one; Kv and Admin take it
//!   when its common name is in `cert-allowed-cn`, or any when that is empty.
//!   Stores may call Kv and Admin too (a node's directory client does).
//!
//! Without the three paths the node serves plaintext, as before, and says so once
//! at start-up. [`cert`] makes certificates for a test cluster (`shoal cert`,
//! `shoal playground --tls`).

pub mod acceptor;
pub mod cert;
pub mod identity;
pub mod policy;

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rustls::server::WebPkiClientVerifier;
use shoal_client::tls::{provider, Material, Reloading, TlsConnector, TlsPaths};

use identity::Identity;
use policy::{Policy, PolicyLayer};

/// The security counters (registered with the store's metrics).
#[derive(Clone)]
pub struct SecurityMetrics {
    /// TLS handshakes that failed: no certificate, another CA's, an expired one,
    /// plaintext, or a timeout.
    pub handshake_failures: IntCounter,
    /// Requests refused by the policy, by reason.
    pub refused: IntCounterVec,
    /// Raft messages dropped because they claimed a store other than the
    /// certificate's.
    pub forged_messages: IntCounter,
    /// Reloads of the certificate files, by result (`ok`, `failed`).
    pub reloads: IntCounterVec,
}

impl SecurityMetrics {
    pub fn new() -> Self {
        SecurityMetrics {
            handshake_failures: IntCounter::new(
                "shoal_tls_handshake_failures_total",
                "TLS handshakes refused or timed out (no client certificate, another CA's, expired, plaintext).",
            )
            .expect("valid metric"),
            refused: IntCounterVec::new(
                Opts::new(
                    "shoal_tls_refused_requests_total",
                    "gRPC requests refused for their certificate, by reason (not_a_store, cn_not_allowed, no_certificate, system_range).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            forged_messages: IntCounter::new(
                "shoal_raft_messages_store_mismatch_total",
                "Raft messages dropped because their from_peer store is not the sending certificate's store.",
            )
            .expect("valid metric"),
            reloads: IntCounterVec::new(
                Opts::new(
                    "shoal_tls_reloads_total",
                    "Reloads of changed certificate files, by result (ok, failed).",
                ),
                &["result"],
            )
            .expect("valid metric"),
        }
    }

    /// Registers every counter in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.handshake_failures.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.forged_messages.clone()))?;
        registry.register(Box::new(self.reloads.clone()))
    }
}

impl Default for SecurityMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A node's TLS, when on.
pub struct Security {
    /// The files.
    pub paths: TlsPaths,
    /// The store the node's certificate names.
    pub store_id: u64,
    /// The listener's config.
    pub server: Arc<Reloading<rustls::ServerConfig>>,
    /// How the node dials other stores.
    pub connector: TlsConnector,
    /// Client common names allowed on Kv and Admin; empty: any.
    pub allowed_cn: Vec<String>,
    pub metrics: SecurityMetrics,
}

impl Security {
    /// Reads the node's TLS files (`paths` and `allowed_cn` from a validated
    /// config: `cert-allowed-cn` needs TLS on); `None` when TLS is off. The errors
    /// say which file is wrong, or why the certificate cannot be this node's.
    pub fn load(
        paths: Option<TlsPaths>,
        allowed_cn: Vec<String>,
    ) -> Result<Option<Security>, String> {
        let Some(paths) = paths else {
            return Ok(None);
        };
        let material = Material::load(&paths)?;
        let store_id = match Identity::of(&material.chain[0]) {
            Identity::Store(id) => id,
            other => {
                return Err(format!(
                    "{} is not a store certificate ({}): a node's certificate needs the URI SAN {}<store id> (`shoal cert` makes one)",
                    paths.cert_path.display(),
                    other.describe(),
                    identity::STORE_URI_PREFIX
                ))
            }
        };
        check_own(&material, store_id)
            .map_err(|e| format!("{}: {e}", paths.cert_path.display()))?;
        let metrics = SecurityMetrics::new();
        let (ok, failed) = (metrics.reloads.clone(), metrics.reloads.clone());
        // Both configs check a rotated certificate as the start did: a file that
        // would cut the node off (another store's certificate, an expired one,
        // another CA's) is refused, and the previous one stays in use.
        let server = Reloading::new(paths.clone(), move |m: &Material| {
            check_own(m, store_id)?;
            server_config(m)
        })?
        .on_reload(move || ok.with_label_values(&["ok"]).inc())
        .on_failure(move |_| failed.with_label_values(&["failed"]).inc());
        // Only the server config's reloads are counted (one per rotation).
        let client = Reloading::new(paths.clone(), move |m: &Material| {
            check_own(m, store_id)?;
            shoal_client::tls::client_config(m)
        })?;
        Ok(Some(Security {
            paths,
            store_id,
            server: Arc::new(server),
            connector: TlsConnector::from_reloading(Arc::new(client)),
            allowed_cn,
            metrics,
        }))
    }

    /// Looks at the files every few seconds from now on (see `Reloading::watch`).
    pub fn watch(&self, runtime: &tokio::runtime::Handle) {
        self.server.watch(runtime);
        self.connector.watch(runtime);
    }

    /// How the node dials store `store_id`: its certificate must be that store's.
    pub fn dialer_for(connector: &TlsConnector, store_id: u64) -> TlsConnector {
        connector.with_peer_check(expect_store(store_id))
    }

    /// The tower layer that checks each request's certificate.
    pub fn policy_layer(&self) -> PolicyLayer {
        PolicyLayer::new(Policy {
            allowed_cn: self.allowed_cn.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// A check that the certificate at the other end is store `store_id`'s (a store
/// certificate for another id, valid for the same host, is refused).
pub fn expect_store(store_id: u64) -> shoal_client::tls::PeerCheck {
    Arc::new(move |cert: &[u8]| match Identity::of(cert) {
        Identity::Store(id) if id == store_id => Ok(()),
        other => Err(format!(
            "store {store_id}'s address answered with the certificate of {}",
            other.describe()
        )),
    })
}

/// Whether `m`'s certificate can serve as store `store_id`'s: it names that store,
/// and the CA of `m` verifies it now (signature, validity dates, client use).
fn check_own(m: &Material, store_id: u64) -> Result<(), String> {
    match Identity::of(&m.chain[0]) {
        Identity::Store(id) if id == store_id => {}
        other => {
            return Err(format!(
                "the certificate is {}'s, not store {store_id}'s",
                other.describe()
            ))
        }
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(m.roots()?), provider())
        .build()
        .map_err(|e| format!("cannot verify with this CA: {e}"))?;
    verifier
        .verify_client_cert(
            &m.chain[0],
            &m.chain[1..],
            rustls::pki_types::UnixTime::now(),
        )
        .map_err(|e| format!("the CA does not vouch for this certificate now: {e}"))?;
    Ok(())
}

/// The listener's rustls config for `m`: requires a client certificate the CA
/// signed, presents the node's, speaks h2.
fn server_config(m: &Material) -> Result<rustls::ServerConfig, String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(m.roots()?), provider())
        .build()
        .map_err(|e| format!("cannot verify clients with this CA: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::cert::{write_issued, Ca, Role, Validity};
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn store(id: u64) -> Role {
        Role::Store {
            id,
            hosts: vec!["127.0.0.1".into()],
        }
    }

    #[test]
    fn a_rotated_certificate_that_would_cut_the_node_off_is_refused_and_the_old_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("ca", Validity::days(1)).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        let files = write_issued(
            dir.path(),
            "node",
            &ca.issue(&store(1), Validity::days(1)).unwrap(),
        )
        .unwrap();
        let paths = TlsPaths {
            ca_path: dir.path().join("ca.pem"),
            cert_path: files.cert.clone(),
            key_path: files.key.clone(),
        };
        let sec = Security::load(Some(paths), vec![]).unwrap().unwrap();
        assert_eq!(sec.store_id, 1);
        let first = sec.server.current();
        let reloads = |result: &str| sec.metrics.reloads.with_label_values(&[result]).get();
        // Another store's certificate, then an expired one of this store, then
        // one from another CA: each refused once, the first config kept.
        let now = time::OffsetDateTime::now_utc();
        let expired = Validity {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::days(1),
        };
        let other_ca = Ca::new("other", Validity::days(1)).unwrap();
        for (n, issued) in [
            ca.issue(&store(2), Validity::days(1)).unwrap(),
            ca.issue(&store(1), expired).unwrap(),
            other_ca.issue(&store(1), Validity::days(1)).unwrap(),
        ]
        .iter()
        .enumerate()
        {
            write_issued(dir.path(), "node", issued).unwrap();
            assert!(Arc::ptr_eq(&sec.server.look(), &first));
            // Looked at again unchanged: not reported twice.
            assert!(Arc::ptr_eq(&sec.server.look(), &first));
            assert_eq!(reloads("failed"), n as u64 + 1);
        }
        assert_eq!(reloads("ok"), 0);
        // A good one is taken.
        write_issued(
            dir.path(),
            "node",
            &ca.issue(&store(1), Validity::days(1)).unwrap(),
        )
        .unwrap();
        assert!(!Arc::ptr_eq(&sec.server.look(), &first));
        assert_eq!(reloads("ok"), 1);
    }

    #[test]
    fn a_dialer_wants_the_store_it_dials() {
        let ca = Ca::new("ca", Validity::days(1)).unwrap();
        let der = |role: &Role| {
            let pem = ca.issue(role, Validity::days(1)).unwrap().cert_pem;
            CertificateDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .to_vec()
        };
        let check = expect_store(3);
        assert!(check(&der(&store(3))).is_ok());
        let wrong = check(&der(&store(4))).unwrap_err();
        assert!(wrong.contains("store 4"), "{wrong}");
        assert!(check(&der(&Role::Client { cn: "app".into() })).is_err());
    }
}
