//! One region's replica on this store: the [`Peer`](peer::Peer) (its state and the
//! dispatch of its messages), [`PeerStorage`](storage::PeerStorage) (raft-rs's
//! `Storage` over the shared log engine, with its bounded [`entry_cache`]), the
//! apply-side state of a region
//! ([`apply`]), raft-rs's logging, and the [`wire`] check every message from
//! another store passes before anything parses it. What the peer *does* with each message lives
//! in `operation/`, one operation per file.

pub(crate) mod apply;
pub(crate) mod entry_cache;
pub(crate) mod logger;
pub(crate) mod peer;
pub(crate) mod storage;
pub(crate) mod wire;

/// Encodes a raft-rs (rust-protobuf) message.
pub(crate) fn encode_pb<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("protobuf encoding into memory cannot fail")
}
