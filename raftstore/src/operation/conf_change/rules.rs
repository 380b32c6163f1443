//! The rules of a membership change, as one pure function, [`changed_region`]: the
//! region a list of changes makes, or why it may not. The leader checks a proposal
//! with it (`propose.rs`) and every replica applies with it (`apply.rs`), so
//! raft-rs's own checker never sees a change Shoal would refuse (it would turn the
//! entry into a no-op that answers "done"). Also the raft-rs `ConfChangeV2` a list
//! of changes is ([`conf_change_of`]).
//!
//! One change applies at once; two or more enter a **joint configuration**
//! (raft-rs's explicit transition: `auto_leave` off); none leaves it. A voter is
//! never removed inside a joint change: it is demoted (to `DEMOTING_VOTER`, a
//! learner once the joint configuration is left), then removed as a learner.

use std::collections::HashSet;

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use shoal_proto::metapb::{ChangeKind, PeerChange, PeerRole, Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{admin_request, ChangePeerRequest};
use shoal_proto::RegionExt;

/// The region `changes` make of `region`, with `conf_ver + 1`; no changes leave
/// the joint configuration. The error says why the changes may not be made.
pub(crate) fn changed_region(region: &Region, changes: &[PeerChange]) -> Result<Region, String> {
    let mut out = region.clone();
    let epoch = out.region_epoch.get_or_insert_with(RegionEpoch::default);
    epoch.conf_ver += 1;
    if changes.is_empty() {
        if !region.is_joint() {
            return Err("the region is not in a joint configuration: nothing to leave".into());
        }
        for p in &mut out.peers {
            p.role = match role(p.role) {
                PeerRole::IncomingVoter => PeerRole::Voter,
                PeerRole::DemotingVoter => PeerRole::Learner,
                r => r,
            } as i32;
        }
        return Ok(out);
    }
    if region.is_joint() {
        return Err(
            "the region is in a joint configuration (a change is in progress); \
             it must be left first"
                .into(),
        );
    }
    let joint = changes.len() > 1;
    // What a voter added or promoted, and a voter demoted, become: in a joint
    // configuration, voters of one half only.
    let (promoted, demoted) = match joint {
        true => (PeerRole::IncomingVoter, PeerRole::DemotingVoter),
        false => (PeerRole::Voter, PeerRole::Learner),
    };
    let mut seen_peers = HashSet::new();
    let mut seen_stores = HashSet::new();
    let mut voters_changed = false;
    for c in changes {
        let peer = c.peer.unwrap_or_default();
        if peer.id == 0 || peer.store_id == 0 {
            return Err("a change names peer 0 or store 0".into());
        }
        if !seen_peers.insert(peer.id) || !seen_stores.insert(peer.store_id) {
            return Err(format!(
                "store {} (peer {}) is named twice in one request",
                peer.store_id, peer.id
            ));
        }
        let kind =
            ChangeKind::try_from(c.kind).map_err(|_| format!("unknown change kind {}", c.kind))?;
        let existing = out.peers.iter().position(|p| p.id == peer.id);
        if let Some(i) = existing {
            if out.peers[i].store_id != peer.store_id {
                return Err(format!(
                    "peer {} is on store {}, not store {}",
                    peer.id, out.peers[i].store_id, peer.store_id
                ));
            }
        } else if let Some(other) = out.peers.iter().find(|p| p.store_id == peer.store_id) {
            return Err(format!(
                "store {} already holds a replica of region {} (peer {}): a store holds \
                 at most one",
                peer.store_id, region.id, other.id
            ));
        }
        let already = |what: &str| {
            format!(
                "peer {} on store {} is already a {what}",
                peer.id, peer.store_id
            )
        };
        match (kind, existing) {
            (ChangeKind::AddVoter, None) => {
                voters_changed = true;
                out.peers.push(shoal_proto::metapb::Peer {
                    role: promoted as i32,
                    ..peer
                });
            }
            (ChangeKind::AddVoter, Some(i)) => {
                if role(out.peers[i].role) != PeerRole::Learner {
                    return Err(already("voter"));
                }
                voters_changed = true;
                out.peers[i].role = promoted as i32;
            }
            (ChangeKind::AddLearner, None) => out.peers.push(shoal_proto::metapb::Peer {
                role: PeerRole::Learner as i32,
                ..peer
            }),
            (ChangeKind::AddLearner, Some(i)) => {
                if role(out.peers[i].role) != PeerRole::Voter {
                    return Err(already("learner"));
                }
                voters_changed = true;
                out.peers[i].role = demoted as i32;
            }
            (ChangeKind::Remove, None) => {
                return Err(format!(
                    "peer {} on store {} is not a replica of region {}",
                    peer.id, peer.store_id, region.id
                ))
            }
            (ChangeKind::Remove, Some(i)) => {
                let voter = role(out.peers[i].role) == PeerRole::Voter;
                if voter && joint {
                    return Err(format!(
                        "peer {} on store {} is a voter: in a change of several peers a voter \
                         is demoted (add it as a learner), then removed on its own",
                        peer.id, peer.store_id
                    ));
                }
                voters_changed |= voter;
                out.peers.remove(i);
            }
        }
    }
    if joint && !voters_changed {
        return Err(
            "several changes of learners only: make them one at a time (a joint \
             configuration needs a change of voters)"
                .into(),
        );
    }
    let voters = out
        .peers
        .iter()
        .filter(|p| matches!(role(p.role), PeerRole::Voter | PeerRole::IncomingVoter))
        .count();
    if voters == 0 {
        return Err("the change would leave the region without a voter".into());
    }
    Ok(out)
}

/// A peer's role (an unknown one counts as a voter).
pub(super) fn role(r: i32) -> PeerRole {
    PeerRole::try_from(r).unwrap_or(PeerRole::Voter)
}

/// The raft-rs change for `changes`: one change is simple, several enter a joint
/// configuration left explicitly, none leaves it.
pub(crate) fn conf_change_of(changes: &[PeerChange]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    if changes.len() > 1 {
        cc.set_transition(ConfChangeTransition::Explicit);
    }
    for c in changes {
        let mut single = ConfChangeSingle {
            node_id: c.peer.unwrap_or_default().id,
            ..Default::default()
        };
        single.set_change_type(match ChangeKind::try_from(c.kind) {
            Ok(ChangeKind::AddVoter) => ConfChangeType::AddNode,
            Ok(ChangeKind::AddLearner) => ConfChangeType::AddLearnerNode,
            _ => ConfChangeType::RemoveNode,
        });
        cc.changes.push(single);
    }
    cc
}

/// The changes of a command, when it is a membership change.
pub(crate) fn change_peer_of(
    cmd: &shoal_proto::raft_cmdpb::RaftCmdRequest,
) -> Option<&ChangePeerRequest> {
    match cmd.admin.as_ref().and_then(|a| a.cmd.as_ref()) {
        Some(admin_request::Cmd::ChangePeer(c)) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::metapb::Peer as PeerMeta;

    fn peer(id: u64, store: u64, role: PeerRole) -> PeerMeta {
        PeerMeta {
            id,
            store_id: store,
            role: role as i32,
        }
    }

    fn region3() -> Region {
        Region {
            id: 1,
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![
                peer(11, 1, PeerRole::Voter),
                peer(12, 2, PeerRole::Voter),
                peer(13, 3, PeerRole::Voter),
            ],
            ..Default::default()
        }
    }

    fn change(kind: ChangeKind, id: u64, store: u64) -> PeerChange {
        PeerChange {
            kind: kind as i32,
            peer: Some(peer(id, store, PeerRole::Voter)),
        }
    }

    fn roles(r: &Region) -> Vec<(u64, PeerRole)> {
        let mut v: Vec<_> = r.peers.iter().map(|p| (p.id, role(p.role))).collect();
        v.sort_unstable_by_key(|p| p.0);
        v
    }

    #[test]
    fn a_move_goes_through_a_joint_configuration_and_out() {
        let r = region3();
        let learner = changed_region(&r, &[change(ChangeKind::AddLearner, 14, 4)]).unwrap();
        assert_eq!(learner.region_epoch.unwrap().conf_ver, 2);
        assert!(!learner.is_joint());
        let joint = changed_region(
            &learner,
            &[
                change(ChangeKind::AddVoter, 14, 4),
                change(ChangeKind::AddLearner, 13, 3),
            ],
        )
        .unwrap();
        assert!(joint.is_joint());
        let cs = crate::raft::storage::conf_state_of(&joint);
        let mut v = cs.voters.clone();
        v.sort_unstable();
        assert_eq!(v, vec![11, 12, 14]);
        let mut o = cs.voters_outgoing.clone();
        o.sort_unstable();
        assert_eq!(o, vec![11, 12, 13]);
        assert_eq!(cs.learners_next, vec![13]);
        // No other change until the joint configuration is left.
        assert!(changed_region(&joint, &[change(ChangeKind::Remove, 13, 3)]).is_err());
        let left = changed_region(&joint, &[]).unwrap();
        assert_eq!(
            roles(&left),
            vec![
                (11, PeerRole::Voter),
                (12, PeerRole::Voter),
                (13, PeerRole::Learner),
                (14, PeerRole::Voter)
            ]
        );
        let done = changed_region(&left, &[change(ChangeKind::Remove, 13, 3)]).unwrap();
        assert_eq!(done.peers.len(), 3);
        assert_eq!(done.region_epoch.unwrap().conf_ver, 5);
    }

    #[test]
    fn bad_changes_are_refused_with_the_reason() {
        let r = region3();
        let refused = |changes: &[PeerChange]| changed_region(&r, changes).unwrap_err();
        assert!(refused(&[change(ChangeKind::AddVoter, 21, 2)]).contains("already holds"));
        assert!(refused(&[change(ChangeKind::AddVoter, 12, 2)]).contains("already a voter"));
        assert!(refused(&[change(ChangeKind::Remove, 19, 9)]).contains("not a replica"));
        assert!(refused(&[change(ChangeKind::Remove, 12, 3)]).contains("is on store 2"));
        assert!(refused(&[]).contains("not in a joint"));
        assert!(refused(&[
            change(ChangeKind::AddVoter, 14, 4),
            change(ChangeKind::Remove, 13, 3)
        ])
        .contains("demoted"));
        assert!(refused(&[
            change(ChangeKind::AddLearner, 14, 4),
            change(ChangeKind::AddLearner, 15, 5)
        ])
        .contains("learners only"));
        assert!(refused(&[
            change(ChangeKind::AddLearner, 14, 4),
            change(ChangeKind::AddVoter, 15, 4)
        ])
        .contains("twice"));
        let one = Region {
            peers: vec![peer(11, 1, PeerRole::Voter)],
            ..region3()
        };
        assert!(changed_region(&one, &[change(ChangeKind::Remove, 11, 1)])
            .unwrap_err()
            .contains("without a voter"));
    }

    #[test]
    fn raft_rs_agrees_with_the_region_after_each_change() {
        use raft::{storage::MemStorage, Config, RawNode};
        let r = region3();
        let cs = crate::raft::storage::conf_state_of(&r);
        let store = MemStorage::new_with_conf_state(cs);
        let cfg = Config {
            id: 11,
            ..Default::default()
        };
        let logger = crate::raft::logger::raft_logger(1, 11);
        let mut raw = RawNode::new(&cfg, store, &logger).unwrap();
        let steps: Vec<Vec<PeerChange>> = vec![
            vec![change(ChangeKind::AddLearner, 14, 4)],
            vec![
                change(ChangeKind::AddVoter, 14, 4),
                change(ChangeKind::AddLearner, 13, 3),
            ],
            vec![],
            vec![change(ChangeKind::Remove, 13, 3)],
            vec![change(ChangeKind::AddVoter, 15, 5)],
        ];
        let mut region = r;
        for changes in steps {
            region = changed_region(&region, &changes).unwrap();
            let mut cs = raw.apply_conf_change(&conf_change_of(&changes)).unwrap();
            let mut ours = crate::raft::storage::conf_state_of(&region);
            for v in [
                &mut cs.voters,
                &mut cs.learners,
                &mut cs.voters_outgoing,
                &mut cs.learners_next,
            ] {
                v.sort_unstable();
            }
            for v in [
                &mut ours.voters,
                &mut ours.learners,
                &mut ours.voters_outgoing,
                &mut ours.learners_next,
            ] {
                v.sort_unstable();
            }
            assert_eq!(cs, ours, "after {changes:?}");
        }
    }
}
