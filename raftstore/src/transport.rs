//! How a store's Raft messages leave it. The server implements [`Transport`] with one
//! long-lived gRPC stream per remote store; the test harness with an in-process
//! network that can drop, delay and partition.

use shoal_proto::raft_serverpb::RaftMessage;

use crate::metrics::StoreMetrics;
use crate::operation::snapshot::OutgoingSnapshot;

/// Sends batches of Raft messages to other stores.
pub trait Transport: Send + Sync + 'static {
    /// Sends every message of `msgs` (all addressed to peers on `store_id`) as one batch.
    /// Must not block on the network: queue and return. Delivery is best effort;
    /// Raft retransmits what is lost. Returns the encoded bytes of the messages it
    /// took (what it dropped at once does not count).
    fn send(&self, store_id: u64, msgs: Vec<RaftMessage>) -> usize;

    /// Streams a snapshot to `store_id` (the message, then its files' bytes), and
    /// reports how it ended through `snap.done`. Must not block: start and return.
    fn send_snapshot(&self, store_id: u64, snap: OutgoingSnapshot);
}

/// Groups messages by destination store and sends one batch per store.
/// Returns the number of batches sent and the bytes the transport took.
pub fn send_grouped(transport: &dyn Transport, msgs: Vec<RaftMessage>) -> (usize, usize) {
    if msgs.is_empty() {
        return (0, 0);
    }
    let mut by_store: Vec<(u64, Vec<RaftMessage>)> = Vec::new();
    for m in msgs {
        let to = m.to_peer.as_ref().map_or(0, |p| p.store_id);
        match by_store.iter_mut().find(|(s, _)| *s == to) {
            Some((_, v)) => v.push(m),
            None => by_store.push((to, vec![m])),
        }
    }
    let batches = by_store.len();
    let bytes = by_store
        .into_iter()
        .map(|(store, batch)| transport.send(store, batch))
        .sum();
    (batches, bytes)
}

/// [`send_grouped`], counting messages and batches in `metrics`.
pub fn send_counted(transport: &dyn Transport, metrics: &StoreMetrics, msgs: Vec<RaftMessage>) {
    // The transport measures the bytes anyway (for its queue bound): counted from
    // its answer, not encoded again here on the poll round.
    let (batches, bytes) = send_grouped(transport, msgs);
    StoreMetrics::add(&metrics.raft_message_bytes_sent, bytes as u64);
    StoreMetrics::add(&metrics.transport_batches_sent, batches as u64);
}
