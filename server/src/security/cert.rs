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
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
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
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(err("the CA from its PEM"))?;
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

/// Writes `pem` to `path`; `private` files are readable by their owner only.
pub fn write_pem(path: &Path, pem: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::identity::Identity;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
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
        let c = ca.issue(&Role::Client { cn: "app".into() }, Validity::days(1)).unwrap();
        assert_eq!(
            Identity::of(&der(&c.cert_pem)),
            Identity::Client(Some("app".into()))
        );
        // A CA read back from its PEM signs certificates the same CA verifies.
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let c2 = again.issue(&Role::Client { cn: "b".into() }, Validity::days(1)).unwrap();
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
