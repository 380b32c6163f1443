//! TLS for Shoal's connections: the three files (CA, certificate, key), reading them
//! again when they change, and the connector a tonic channel dials through.
//!
//! Every Shoal connection with TLS on is mutual: the dialer checks the server's
//! certificate against the CA (and the address it dialed, as a DNS name or an IP
//! SAN), and presents its own certificate, signed by the same CA, which the server
//! requires. What a certificate may do (a store's, a client's) is the server's
//! business (`shoal_server::security`).
//!
//! ## Rotation
//!
//! [`Reloading`] holds what was built from the files (a rustls config) and, when
//! asked for it at least [`RELOAD_CHECK_INTERVAL`] after its last look, looks at the
//! files' size, modification time and inode again. When any changed it reads all
//! three and builds anew; a read or build that fails (a half-written file, a key that
//! does not match the certificate) keeps the previous config, logs why once, and is
//! tried again when the files change again. The look happens on a blocking thread,
//! never on the runtime's. Connections already open keep the certificate they were opened with;
//! new ones use the new files.
//!
//! The connector ([`TlsConnector`]) uses rustls with the ring provider (no OpenSSL),
//! and speaks HTTP/2 by ALPN.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::net::TcpStream;

/// Shortest time between two looks at the files for a change. A look happens when
/// a connection is made (and, on a node, every this long: `Reloading::watch`), so
/// a new connection uses rotated files at most this long after they were replaced.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Longest TLS handshake, on either side, before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a node's or a client's TLS files are: all three or none (then TLS is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// PEM of the certificate authority (one or more certificates) that signs every
    /// certificate of the cluster: servers' and clients'.
    pub ca_path: PathBuf,
    /// PEM of this side's certificate (chain), signed by the CA.
    pub cert_path: PathBuf,
    /// PEM of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

impl TlsPaths {
    /// The paths when all three are given, `None` when none is, and an error naming
    /// the missing ones otherwise (half a TLS setup must not silently mean none).
    pub fn from_parts(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<TlsPaths>, String> {
        let empty = |p: &Option<PathBuf>| p.as_ref().is_none_or(|p| p.as_os_str().is_empty());
        let missing: Vec<&str> = [("ca-path", &ca), ("cert-path", &cert), ("key-path", &key)]
            .into_iter()
            .filter(|(_, p)| empty(p))
            .map(|(name, _)| name)
            .collect();
        match missing.len() {
            3 => Ok(None),
            0 => Ok(Some(TlsPaths {
                ca_path: ca.unwrap_or_default(),
                cert_path: cert.unwrap_or_default(),
                key_path: key.unwrap_or_default(),
            })),
            _ => Err(format!(
                "TLS needs ca-path, cert-path and key-path together; missing: {}",
                missing.join(", ")
            )),
        }
    }

    fn all(&self) -> [&Path; 3] {
        [&self.ca_path, &self.cert_path, &self.key_path]
    }
}

/// The TLS flags of Shoal's tools (`shoal kv`, `admin`, `bench`, `chaos`): the
/// same three files as a node's settings, each also read from the environment.
#[cfg(feature = "clap")]
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Mutual TLS: the PEM file of the CA that signs the cluster's certificates
    /// (with --cert-path and --key-path; all three or none) [env: SHOAL_CA_PATH]
    #[arg(
        long,
        global = true,
        env = "SHOAL_CA_PATH",
        value_name = "FILE",
        hide_env = true
    )]
    pub ca_path: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the CA [env: SHOAL_CERT_PATH]
    #[arg(
        long,
        global = true,
        env = "SHOAL_CERT_PATH",
        value_name = "FILE",
        hide_env = true
    )]
    pub cert_path: Option<PathBuf>,
    /// The certificate's private key (PEM) [env: SHOAL_KEY_PATH]
    #[arg(
        long,
        global = true,
        env = "SHOAL_KEY_PATH",
        value_name = "FILE",
        hide_env = true
    )]
    pub key_path: Option<PathBuf>,
}

#[cfg(feature = "clap")]
impl TlsArgs {
    /// The paths, `None` for plaintext; an error when only some are given.
    pub fn paths(&self) -> Result<Option<TlsPaths>, String> {
        TlsPaths::from_parts(
            self.ca_path.clone(),
            self.cert_path.clone(),
            self.key_path.clone(),
        )
    }
}

/// What the three files held when last read.
pub struct Material {
    /// The CA's certificates.
    pub ca: Vec<CertificateDer<'static>>,
    /// This side's certificate chain, its own certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Material {
    /// Reads and parses the three files; the error names the file and what is wrong.
    pub fn load(paths: &TlsPaths) -> Result<Material, String> {
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let pem = read(path)?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: holds no PEM certificate", path.display()));
            }
            Ok(certs)
        };
        let ca = certs(&paths.ca_path)?;
        let chain = certs(&paths.cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&paths.key_path)?)
            .map_err(|e| format!("{}: no PEM private key: {e}", paths.key_path.display()))?;
        Ok(Material { ca, chain, key })
    }

    /// The CA's certificates as trust roots.
    pub fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for cert in &self.ca {
            roots
                .add(cert.clone())
                .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        }
        Ok(roots)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The crypto provider of every Shoal TLS config: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for `m`: trusts the CA, presents the chain, speaks h2.
pub fn client_config(m: &Material) -> Result<rustls::ClientConfig, String> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(m.roots()?)
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What identifies one version of a file: its size, modification time and inode
/// (a rename over it changes the inode even within one mtime tick).
type Stamp = Option<(u64, SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// Called with the error of a reload that failed.
type OnFailure = Box<dyn Fn(&str) + Send + Sync>;

/// How a config is built from the files; its error keeps the previous one.
type Build<T> = Arc<dyn Fn(&Material) -> Result<T, String> + Send + Sync>;

/// A check of the certificate at the other end of a new connection (DER), after the
/// handshake verified it: a node dialing store 3 wants store 3's certificate.
pub type PeerCheck = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

struct State<T> {
    current: Arc<T>,
    stamps: [Stamp; 3],
    /// The files' stamps when they last failed to build (reported once).
    failed: Option<[Stamp; 3]>,
    checked: Instant,
    /// A look is running on a blocking thread.
    looking: bool,
}

/// A config built from the TLS files, built again when they change (module docs).
pub struct Reloading<T> {
    paths: TlsPaths,
    build: Build<T>,
    state: Mutex<State<T>>,
    /// Called with the error of each failed reload (a node counts them).
    on_failure: Option<OnFailure>,
    /// Called after each successful reload.
    on_reload: Option<Box<dyn Fn() + Send + Sync>>,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads the files and builds the first config; an error here is the caller's to
    /// report (a node refuses to start, a client to connect).
    pub fn new(
        paths: TlsPaths,
        build: impl Fn(&Material) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let stamps = paths.all().map(stamp);
        let current = Arc::new(build(&Material::load(&paths)?)?);
        Ok(Reloading {
            paths,
            build: Arc::new(build),
            state: Mutex::new(State {
                current,
                stamps,
                failed: None,
                checked: Instant::now(),
                looking: false,
            }),
            on_failure: None,
            on_reload: None,
        })
    }

    /// Calls `f` with the error of each reload that failed.
    pub fn on_failure(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Box::new(f));
        self
    }

    /// Calls `f` after each successful reload.
    pub fn on_reload(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_reload = Some(Box::new(f));
        self
    }

    /// The files this config is built from.
    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// The config as last built, without looking at the files.
    pub fn current(&self) -> Arc<T> {
        self.state.lock().current.clone()
    }

    /// The config, after looking at the files (on a blocking thread) when the last
    /// look is [`RELOAD_CHECK_INTERVAL`] old. While one caller looks, the others get
    /// the current config.
    pub async fn fresh(self: &Arc<Self>) -> Arc<T> {
        {
            let mut s = self.state.lock();
            if s.looking || s.checked.elapsed() < RELOAD_CHECK_INTERVAL {
                return s.current.clone();
            }
            s.looking = true;
        }
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.look()).await {
            Ok(config) => config,
            Err(_) => {
                let mut s = self.state.lock();
                s.looking = false;
                s.current.clone()
            }
        }
    }

    /// Looks at the files every [`RELOAD_CHECK_INTERVAL`] on `runtime` while this
    /// config is in use, so that a rotation that cannot be used is logged and
    /// counted when it happens rather than at the next new connection.
    pub fn watch(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let me = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                me.fresh().await;
            }
        });
    }

    /// Looks at the files now and rebuilds when they changed (blocking).
    pub fn look(&self) -> Arc<T> {
        let stamps = self.paths.all().map(stamp);
        let (changed, known_bad) = {
            let s = self.state.lock();
            (stamps != s.stamps, s.failed == Some(stamps))
        };
        let mut failed = None;
        let rebuilt = if changed && !known_bad {
            match Material::load(&self.paths).and_then(|m| (self.build)(&m)) {
                Ok(config) => Some(Arc::new(config)),
                Err(e) => {
                    tracing::warn!(
                        cert = %self.paths.cert_path.display(),
                        "TLS files changed but cannot be used (keeping the previous ones until they change again): {e}"
                    );
                    if let Some(f) = &self.on_failure {
                        f(&e);
                    }
                    failed = Some(stamps);
                    None
                }
            }
        } else {
            None
        };
        let mut s = self.state.lock();
        s.looking = false;
        s.checked = Instant::now();
        if failed.is_some() {
            s.failed = failed;
        }
        if let Some(config) = rebuilt {
            tracing::info!(cert = %self.paths.cert_path.display(), "TLS certificate files reloaded");
            s.current = config;
            s.stamps = stamps;
            s.failed = None;
            if let Some(f) = &self.on_reload {
                f();
            }
        }
        s.current.clone()
    }
}

/// Dials TCP, then TLS, with the client config of the moment: the connector of every
/// tonic channel of a TLS-configured client or node.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<Reloading<rustls::ClientConfig>>,
    /// What the server's certificate must also be, besides signed by the CA and
    /// valid for the host (a node wants the store it dials).
    peer_check: Option<PeerCheck>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("paths", self.config.paths())
            .finish()
    }
}

/// Two connectors are the same when they share their reloading config and their
/// peer check (the same one, or none): what a `ClientConfig` compares.
impl PartialEq for TlsConnector {
    fn eq(&self, other: &Self) -> bool {
        let same_check = match (&self.peer_check, &other.peer_check) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        Arc::ptr_eq(&self.config, &other.config) && same_check
    }
}

impl Eq for TlsConnector {}

impl TlsConnector {
    /// Reads the files now (the error says which is wrong).
    pub fn new(paths: &TlsPaths) -> Result<TlsConnector, String> {
        Ok(TlsConnector::from_reloading(Arc::new(Reloading::new(
            paths.clone(),
            client_config,
        )?)))
    }

    /// A connector on an existing reloading config (a node shares one among its
    /// links).
    pub fn from_reloading(config: Arc<Reloading<rustls::ClientConfig>>) -> TlsConnector {
        TlsConnector {
            config,
            peer_check: None,
        }
    }

    /// Looks at the files every [`RELOAD_CHECK_INTERVAL`] (see [`Reloading::watch`]).
    pub fn watch(&self, runtime: &tokio::runtime::Handle) {
        self.config.watch(runtime);
    }

    /// This connector, refusing a server whose certificate `check` refuses.
    pub fn with_peer_check(&self, check: PeerCheck) -> TlsConnector {
        TlsConnector {
            config: self.config.clone(),
            peer_check: Some(check),
        }
    }

    /// Connects to `host:port`, checking the server's certificate names `host`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = self.config.fresh().await;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name or IP address: {e}"),
            )
        })?;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(name, tcp)).await {
            Ok(Ok(stream)) => {
                if let Some(check) = &self.peer_check {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first());
                    let verdict = match cert {
                        Some(cert) => check(cert),
                        None => Err("it presented no certificate".into()),
                    };
                    if let Err(why) = verdict {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!("tls handshake with {host}:{port} failed: {why}"),
                        ));
                    }
                }
                Ok(stream)
            }
            Ok(Err(e)) => Err(std::io::Error::new(
                e.kind(),
                format!("tls handshake with {host}:{port} failed: {e}"),
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("tls handshake with {host}:{port} timed out"),
            )),
        }
    }

    /// A tonic channel to `address` (HOST:PORT, or a URI) through this connector,
    /// connected on first use. `endpoint` carries the caller's other settings.
    pub fn lazy_channel(&self, endpoint: tonic::transport::Endpoint) -> tonic::transport::Channel {
        endpoint.connect_with_connector_lazy(self.clone())
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: no host"))
            })?;
            let port = uri.port_u16().unwrap_or(443);
            Ok(TokioIo::new(me.connect(host, port).await?))
        })
    }
}

/// The `http://` URI tonic is given for `address` (HOST:PORT or a URI): with TLS
/// the connector does the encryption, so the scheme tonic sees stays `http`.
pub fn channel_uri(address: &str) -> String {
    match address.split_once("://") {
        Some((_, rest)) => format!("http://{rest}"),
        None => format!("http://{address}"),
    }
}
