//! A digest of one replica's data in a region (the Admin `Checksum` RPC), to check
//! that replicas agree. Digesting reads all of the region: it runs on the read
//! pool (`worker/region.rs` holds the digest), never on the poller.

use shoal_proto::adminpb::ChecksumResponse;
use tokio::sync::oneshot;

use crate::error::{server_busy, CmdError};
use crate::fsm::PollCtx;
use crate::raft::peer::Peer;
use crate::worker::region;

impl Peer {
    /// Hands the digest of this replica to the read pool.
    pub(crate) fn checksum(
        &self,
        reply: oneshot::Sender<Result<ChecksumResponse, CmdError>>,
        ctx: &PollCtx,
    ) {
        let kv = ctx.store.kv.clone();
        let region_id = self.region_id;
        ctx.store.read_pool.spawn(Box::new(move |run| {
            let out = match run {
                true => region::checksum(&kv, region_id),
                false => Err(server_busy(region_id, "the read pool is full")),
            };
            let _ = reply.send(out);
        }));
    }
}
