//! Glue to the batch system: the peer and store FSMs and the router type.

use shoal_router::{Fsm, Router};

use crate::msg::{PeerMsg, StoreMsg};
use crate::peer::Peer;

/// A peer as the batch system sees it.
pub struct PeerFsm {
    /// The peer.
    pub peer: Peer,
}

impl Fsm for PeerFsm {
    type Message = PeerMsg;
}

/// The store's control FSM: handles what no peer can (messages for unknown regions).
pub struct StoreFsm {
    /// This store's id.
    pub store_id: u64,
}

impl Fsm for StoreFsm {
    type Message = StoreMsg;
}

/// The router of one store: region id -> peer mailbox, plus the store FSM.
pub type StoreRouter = Router<PeerFsm, StoreFsm>;
