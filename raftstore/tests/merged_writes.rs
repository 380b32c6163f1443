//! Merged writes (`raft_merge_writes`): the writes a leader receives in one poll
//! round become one Raft entry, and each caller still gets the answer of its own
//! requests: here, hundreds of compare-and-swaps sent at once, each of whose
//! answers names a value only its own caller can expect.

mod common;

use std::time::Duration;

use common::{test_config, Cluster};
use shoal_proto::raft_cmdpb::{request, CompareAndSwapOp, RaftCmdRequest, Request};
use shoal_raftstore::{Config, TickMode};

const T: Duration = Duration::from_secs(20);
const N: u32 = 300;

fn cas(c: &Cluster, i: u32) -> RaftCmdRequest {
    let key = format!("k{i:04}").into_bytes();
    RaftCmdRequest {
        header: Some(c.header(&c.region_for(&key))),
        requests: vec![Request {
            cmd: Some(request::Cmd::Cas(CompareAndSwapOp {
                key,
                expected_value: format!("old-{i}").into_bytes(),
                expected_absent: false,
                new_value: format!("new-{i}").into_bytes(),
            })),
        }],
        admin: None,
    }
}

/// Sends `N` compare-and-swaps to the leader of the only region at once; checks
/// that every caller's answer is its own; returns the store's merged-write count.
fn swap_all_at_once(cfg: Config) -> u64 {
    let c = Cluster::start_with(3, 1, TickMode::Timer, cfg);
    for i in 0..N {
        c.put(
            format!("k{i:04}").as_bytes(),
            format!("old-{i}").as_bytes(),
            T,
        )
        .unwrap();
    }
    let leader = c.store(c.wait_leader(1, T));
    let before = leader.counters().writes_merged;
    let cmds: Vec<_> = (0..N).map(|i| cas(&c, i)).collect();
    let answers = c.rt.block_on(async {
        let tasks: Vec<_> = cmds
            .into_iter()
            .map(|cmd| {
                let leader = leader.clone();
                tokio::spawn(async move { leader.write(cmd).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    });
    for (i, answer) in answers.into_iter().enumerate() {
        let responses = answer.unwrap_or_else(|e| panic!("cas {i}: {e}"));
        assert_eq!(responses.len(), 1, "cas {i}: one response per request");
        let r = &responses[0];
        assert!(r.succeeded, "cas {i} found {:?}", r.previous_value);
        assert_eq!(
            r.previous_value,
            format!("old-{i}").into_bytes(),
            "cas {i} got another caller's answer"
        );
    }
    for i in (0..N).step_by(37) {
        let got = c.get(format!("k{i:04}").as_bytes(), T).unwrap();
        assert_eq!(got, Some(format!("new-{i}").into_bytes()));
    }
    leader.counters().writes_merged - before
}

#[test]
fn writes_sent_at_once_share_entries_and_each_caller_gets_its_own_answer() {
    let merged = swap_all_at_once(test_config());
    assert!(merged > 0, "{N} writes at once were never merged");
}

#[test]
fn with_merging_off_every_write_is_its_own_entry() {
    let cfg = Config {
        raft_merge_writes: false,
        ..test_config()
    };
    assert_eq!(swap_all_at_once(cfg), 0);
}
