//! Certificates for a test cluster: a CA, store certificates (URI SAN
//! `shoal://store/<id>`, the hosts they serve at, for both TLS server and client
//! use) and client certificates (a common name, client use only). `shoal cert`
//! writes them to a directory, `shoal playground --tls` makes its own, and the
//! tests make expired and foreign ones. ECDSA P-256 keys (rcgen's default).
//!
//! A production cluster may use any CA instead: what Shoal reads from a
//! certificate is in [`super::identity`].

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::identity::STORE_URI_PREFIX;

/// A certificate authority that can sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

/// A signed certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Debug, Clone)]
pub enum Role {
    /// Store `id`, serving at `hosts` (DNS names or IP addresses).
    Store { id: u64, hosts: Vec<String> },
    /// A client named `cn`.
    Client { cn: String },
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks differ) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days.into()),
        }
    }
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("cannot make {what}: {e}")
}

impl Ca {
    /// A new self-signed CA named `cn`.
    pub fn new(cn: &str, validity: Validity) -> Result<Ca, String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().map_err(err("a CA key"))?;
        let cert = params.self_signed(&key).map_err(err("the CA"))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The CA in `cert_pem` with its key `key_pem` (to sign more certificates).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, String> {
        let key = KeyPair::from_pem(key_pem).map_err(err("the CA key from PEM"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(err("the CA from its PEM"))?;
        let key_pem = key_pem.to_string();
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem,
        })
    }

    /// Signs a new certificate (with a new key) for `role`.
    pub fn issue(&self, role: &Role, validity: Validity) -> Result<Issued, String> {
        let mut params = CertificateParams::default();
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match role {
            Role::Store { id, hosts } => {
                params.distinguished_name = name(&format!("shoal-store-{id}"));
                let uri = format!("{STORE_URI_PREFIX}{id}");
                params.subject_alt_names.push(SanType::URI(
                    uri.try_into().map_err(|e| format!("bad store URI: {e}"))?,
                ));
                for host in hosts {
                    params.subject_alt_names.push(host_san(host)?);
                }
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
            Role::Client { cn } => {
                params.distinguished_name = name(cn);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        let key = KeyPair::generate().map_err(err("a key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(err("the certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn host_san(host: &str) -> Result<SanType, String> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(
            host.to_string()
                .try_into()
                .map_err(|e| format!("{host:?} is not a DNS name: {e}"))?,
        )),
    }
}

/// Writes `pem` to `path` as a rotation should: to a file beside it, then renamed
/// over it, so that a node reading it never sees half a file. `private` files are
/// readable by their owner only.
pub fn write_pem(path: &Path, pem: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    let aside = PathBuf::from(aside);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    options
        .open(&aside)
        .and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&aside, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The files of one issued certificate in a directory: `NAME.pem`, `NAME.key`.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `issued` as `dir/NAME.pem` and `dir/NAME.key`.
pub fn write_issued(dir: &Path, name: &str, issued: &Issued) -> Result<CertFiles, String> {
    let files = CertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    write_pem(&files.cert, &issued.cert_pem, false)?;
    write_pem(&files.key, &issued.key_pem, true)?;
    Ok(files)
}

/// The CA of `dir` (`ca.pem`, `ca.key`), made (valid `days`) when absent.
pub fn ca_in(dir: &Path, days: u32) -> Result<(Ca, bool), String> {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        return Ok((Ca::from_pem(&read(&cert)?, &read(&key)?)?, false));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca = Ca::new("shoal-ca", Validity::days(days))?;
    write_pem(&cert, &ca.cert_pem, false)?;
    write_pem(&key, &ca.key_pem, true)?;
    Ok((ca, true))
}

/// `shoal cert`: certificates for a test cluster, written to a directory.
#[derive(clap::Args, Debug)]
pub struct CertArgs {
    /// Where the files go (created). A CA already there (ca.pem, ca.key) signs the
    /// new certificates; otherwise a new CA is made.
    #[arg(long, default_value = "shoal-certs")]
    pub dir: PathBuf,
    /// Store certificates for stores 1..=N: store-ID.pem and store-ID.key.
    #[arg(long, default_value_t = 0)]
    pub stores: u64,
    /// A store certificate for this store id (repeatable), besides --stores.
    #[arg(long = "store", value_name = "ID")]
    pub store: Vec<u64>,
    /// The host names and IP addresses the stores serve at, comma-separated; every
    /// store certificate names them all (a client checks the address it dials
    /// against them).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    pub hosts: Vec<String>,
    /// A client certificate with this common name (repeatable): client-CN.pem and
    /// client-CN.key. A node's cert-allowed-cn lists the names it takes.
    #[arg(long = "client", value_name = "CN")]
    pub clients: Vec<String>,
    /// Days the new certificates are valid (a new CA: ten times as long);
    /// 1..=3650.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

impl CertArgs {
    /// The store ids asked for, sorted, once each; refused when out of range.
    fn store_ids(&self) -> Result<Vec<u64>, String> {
        let mut ids: Vec<u64> = (1..=self.stores)
            .chain(self.store.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if let Some(bad) = ids
            .iter()
            .find(|id| **id == 0 || **id >= crate::config::MAX_STORE_ID_EXCLUSIVE)
        {
            return Err(format!("store id {bad} is out of range (1..2^24)"));
        }
        Ok(ids)
    }
}

/// Runs `shoal cert`; prints what it wrote and how to use it.
pub fn run(args: &CertArgs) -> Result<i32, String> {
    if !(1..=3650).contains(&args.days) {
        return Err(format!("--days must be 1..=3650, got {}", args.days));
    }
    let stores = args.store_ids()?;
    if let Some(bad) = args.clients.iter().find(|cn| {
        cn.is_empty()
            || !cn
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }) {
        return Err(format!(
            "client name {bad:?}: use letters, digits, '-', '_' and '.' (it names files)"
        ));
    }
    let (ca, made) = ca_in(&args.dir, args.days * 10)?;
    let dir = &args.dir;
    println!(
        "{} CA: {}",
        if made {
            "made a new"
        } else {
            "signing with the"
        },
        dir.join("ca.pem").display()
    );
    let validity = Validity::days(args.days);
    for id in &stores {
        let role = Role::Store {
            id: *id,
            hosts: args.hosts.clone(),
        };
        let files = write_issued(dir, &format!("store-{id}"), &ca.issue(&role, validity)?)?;
        println!(
            "store {id}: {} ({}), key {}",
            files.cert.display(),
            args.hosts.join(", "),
            files.key.display()
        );
    }
    for cn in &args.clients {
        let role = Role::Client { cn: cn.clone() };
        let files = write_issued(dir, &format!("client-{cn}"), &ca.issue(&role, validity)?)?;
        println!(
            "client {cn}: {}, key {}",
            files.cert.display(),
            files.key.display()
        );
    }
    let d = dir.display();
    if let Some(id) = stores.first() {
        println!("A node: shoal node --store-id {id} --ca-path {d}/ca.pem --cert-path {d}/store-{id}.pem --key-path {d}/store-{id}.key ...");
    }
    if let Some(cn) = args.clients.first() {
        println!("A client: shoal kv get KEY --ca-path {d}/ca.pem --cert-path {d}/client-{cn}.pem --key-path {d}/client-{cn}.key");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::identity::Identity;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = Ca::new("test-ca", Validity::days(1)).unwrap();
        let store = Role::Store {
            id: 4,
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        let s = ca.issue(&store, Validity::days(1)).unwrap();
        assert_eq!(Identity::of(&der(&s.cert_pem)), Identity::Store(4));
        let c = ca
            .issue(&Role::Client { cn: "app".into() }, Validity::days(1))
            .unwrap();
        assert_eq!(
            Identity::of(&der(&c.cert_pem)),
            Identity::Client(Some("app".into()))
        );
        // A CA read back from its PEM signs certificates the same CA verifies.
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let c2 = again
            .issue(&Role::Client { cn: "b".into() }, Validity::days(1))
            .unwrap();
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(CertificateDer::from(der(&ca.cert_pem))).unwrap();
            std::sync::Arc::new(r)
        };
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots,
            shoal_client::tls::provider(),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for pem in [&c.cert_pem, &c2.cert_pem, &s.cert_pem] {
            verifier
                .verify_client_cert(&CertificateDer::from(der(pem)), &[], now)
                .unwrap();
        }
    }
}
