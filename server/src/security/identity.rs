//! Who is on the other end of a TLS connection, read from its certificate once, at
//! the handshake.
//!
//! A **store certificate** carries the URI SAN `shoal://store/<id>`
//! ([`STORE_URI_PREFIX`]): only such a certificate may speak Raft, and only as the
//! store it names. Any other certificate signed by the CA is a **client** one,
//! known by its subject's common name, which `cert-allowed-cn` may restrict.

use std::net::SocketAddr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The URI SAN prefix that makes a certificate a store's: `shoal://store/7` is
/// store 7's.
pub const STORE_URI_PREFIX: &str = "shoal://store/";

/// What a peer's certificate says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A store of the cluster: its id.
    Store(u64),
    /// Anyone else with a certificate from the CA: its subject's common name, if
    /// it has one.
    Client(Option<String>),
}

impl Identity {
    /// Reads the identity of a DER certificate (one the handshake already verified).
    pub fn of(cert: &[u8]) -> Identity {
        let Ok((_, cert)) = X509Certificate::from_der(cert) else {
            return Identity::Client(None);
        };
        let store = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) => store_of_uri(uri),
                    _ => None,
                })
            });
        match store {
            Some(id) => Identity::Store(id),
            None => Identity::Client(common_name(&cert)),
        }
    }

    /// How it is named in logs and refusals.
    pub fn describe(&self) -> String {
        match self {
            Identity::Store(id) => format!("store {id}"),
            Identity::Client(Some(cn)) => format!("client certificate CN={cn:?}"),
            Identity::Client(None) => "client certificate without a common name".into(),
        }
    }
}

/// The store id of a `shoal://store/<id>` URI (ids from 1).
pub fn store_of_uri(uri: &str) -> Option<u64> {
    uri.strip_prefix(STORE_URI_PREFIX)?
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
}

fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// What the node knows of a connection: its address and, with TLS on, its
/// certificate's identity. Tonic puts it in every request's extensions
/// (`acceptor::TlsConn`'s connect info).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The remote address.
    pub remote: Option<SocketAddr>,
    /// `None` on a plaintext connection (TLS off).
    pub identity: Option<Identity>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_uris() {
        assert_eq!(store_of_uri("shoal://store/7"), Some(7));
        assert_eq!(store_of_uri("shoal://store/0"), None);
        assert_eq!(store_of_uri("shoal://store/x"), None);
        assert_eq!(store_of_uri("shoal://stores/7"), None);
        assert_eq!(store_of_uri("https://store/7"), None);
    }
}
