//! Membership changes (`ChangePeer`), through raft-rs `ConfChangeV2`, one concern
//! per file:
//!
//! - `rules.rs`: the one pure function, [`rules::changed_region`], that says what a list
//!   of changes makes of a region or why not; the leader checks proposals with it
//!   and every replica applies with it. Several changes enter a joint
//!   configuration; a voter is demoted, then removed as a learner.
//! - `propose.rs`: the leader's checks of a proposal, and leaving a joint
//!   configuration (whichever peer leads once it is applied).
//! - `apply.rs`: applying a change (the region's new peers, `conf_ver + 1`, a
//!   removed replica's tombstone, in one synced batch) and what the peer does once
//!   it is applied (raft-rs takes the change; a removed peer is destroyed).
//! - `removed.rs`: removed peers that missed their removal: the leader tells them
//!   (tombstone messages), members answer their messages with one, and a removed
//!   peer that hears of it has the apply worker tombstone it and drop its data.
//! - `stale.rs`: a peer that hears from no leader for a long while asks the
//!   region's peers whether it still belongs (a removed learner cut off for
//!   long, an uninitialized peer whose snapshot never came).

mod apply;
mod propose;
mod removed;
mod rules;
mod stale;

pub(crate) use apply::apply_change_peer;
pub(crate) use removed::destroy_removed;
pub(crate) use rules::{change_peer_of, conf_change_of};
pub(crate) use stale::{answer_for_absent_region, is_stale_check, StaleCheck};
