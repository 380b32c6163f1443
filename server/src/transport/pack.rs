//! Packing what piled up toward a store into `RaftMessageBatch`es that fit the
//! gRPC message limit (see the transport's module docs, "Frame size").

use shoal_proto::raft_serverpb::{RaftMessage, RaftMessageBatch};
use shoal_proto::Message;

/// Bytes a message adds to its batch besides its own encoding: the field tag and
/// the length prefix (at most 5 bytes of varint).
const PER_MESSAGE_FRAMING: usize = 6;

/// Splits `msgs` into batches whose encoding is at most `max_batch_bytes`, in
/// order, each paired with the bytes it counts in the queue. A message too large
/// for any batch is dropped (logged), its bytes returned as the third value.
pub(super) fn pack(
    msgs: Vec<RaftMessage>,
    max_batch_bytes: usize,
) -> (Vec<(RaftMessageBatch, usize)>, Vec<RaftMessage>, usize) {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    let mut dropped_bytes = 0;
    let mut batch = Vec::new();
    let (mut framed, mut counted) = (0usize, 0usize);
    for m in msgs {
        let size = m.encoded_len();
        if size + PER_MESSAGE_FRAMING > max_batch_bytes {
            dropped_bytes += size;
            dropped.push(m);
            continue;
        }
        if framed + size + PER_MESSAGE_FRAMING > max_batch_bytes {
            out.push((
                RaftMessageBatch {
                    msgs: std::mem::take(&mut batch),
                },
                counted,
            ));
            (framed, counted) = (0, 0);
        }
        framed += size + PER_MESSAGE_FRAMING;
        counted += size;
        batch.push(m);
    }
    if !batch.is_empty() {
        out.push((RaftMessageBatch { msgs: batch }, counted));
    }
    (out, dropped, dropped_bytes)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A message of `region_id` carrying `payload` bytes (the transport's tests).
    pub(crate) fn msg(region_id: u64, payload: usize) -> RaftMessage {
        RaftMessage {
            region_id,
            message: vec![7; payload],
            ..Default::default()
        }
    }

    #[test]
    fn pack_keeps_every_batch_under_the_limit_and_the_order() {
        let msgs: Vec<RaftMessage> = (1..=50).map(|i| msg(i, 1000 * (i as usize % 7))).collect();
        let total: usize = msgs.iter().map(RaftMessage::encoded_len).sum();
        let (batches, dropped, dropped_bytes) = pack(msgs, 10_000);
        assert!(dropped.is_empty() && dropped_bytes == 0);
        assert!(batches.len() > 1);
        let mut regions = Vec::new();
        let mut counted = 0;
        for (b, bytes) in &batches {
            assert!(b.encoded_len() <= 10_000, "{}", b.encoded_len());
            counted += bytes;
            regions.extend(b.msgs.iter().map(|m| m.region_id));
        }
        assert_eq!(counted, total);
        assert_eq!(regions, (1..=50).collect::<Vec<_>>());
        // A message that fits no batch is dropped, the others still go.
        let (batches, dropped, _) = pack(vec![msg(1, 10), msg(2, 20_000), msg(3, 10)], 10_000);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].region_id, 2);
        let sent: Vec<u64> = batches
            .iter()
            .flat_map(|(b, _)| b.msgs.iter().map(|m| m.region_id))
            .collect();
        assert_eq!(sent, [1, 3]);
    }
}
