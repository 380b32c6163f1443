//! The wire check against crafted input, against every message raft-rs sends, and
//! against rust-protobuf itself (every input the check passes parses; the
//! advisory's input, in a child process with a small stack).

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, MessageType, Snapshot,
};

use super::*;

fn tag(field: u32, wire_type: u8) -> Vec<u8> {
    let mut v = u64::from(field << 3 | u32::from(wire_type));
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// `depth` START_GROUP tags of field 99 (unknown everywhere), then as many ends.
fn nested_groups(depth: usize) -> Vec<u8> {
    let mut b = tag(99, 3).repeat(depth);
    b.extend(tag(99, 4).repeat(depth));
    b
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes().unwrap()
}

fn conf_change_v2() -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    for (t, id) in [
        (ConfChangeType::AddNode, 4),
        (ConfChangeType::AddLearnerNode, 5),
        (ConfChangeType::RemoveNode, 6),
    ] {
        let mut s = ConfChangeSingle::default();
        s.set_change_type(t);
        s.node_id = id;
        cc.mut_changes().push(s);
    }
    cc.set_context(b"ctx".to_vec().into());
    cc
}

fn entries() -> Vec<Entry> {
    let mut normal = Entry {
        term: 3,
        index: 10,
        sync_log: true,
        ..Default::default()
    };
    normal.set_data(b"a shoal command, opaque here".to_vec().into());
    normal.set_context(b"c".to_vec().into());
    let mut v1 = Entry::default();
    v1.set_entry_type(EntryType::EntryConfChange);
    let mut cc = ConfChange {
        id: 1,
        node_id: 7,
        ..Default::default()
    };
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc.set_context(b"x".to_vec().into());
    v1.set_data(encode(&cc).into());
    let mut v2 = Entry::default();
    v2.set_entry_type(EntryType::EntryConfChangeV2);
    v2.set_data(encode(&conf_change_v2()).into());
    // Leaving a joint configuration: an empty change.
    let mut leave = Entry::default();
    leave.set_entry_type(EntryType::EntryConfChangeV2);
    vec![normal, v1, v2, leave]
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    s.set_data(b"shoal's SnapshotData, opaque here".to_vec().into());
    let m = s.mut_metadata();
    m.index = 100;
    m.term = 7;
    m.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        voters_outgoing: vec![1, 2, u64::MAX],
        learners_next: vec![5],
        auto_leave: true,
        ..Default::default()
    });
    s
}

/// A message of type `t` with every field of the schema set (negative priority:
/// a ten-byte varint).
fn full_message(t: MessageType) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.to = 2;
    m.from = 1;
    m.term = 5;
    m.log_term = 4;
    m.index = 9;
    m.set_entries(entries().into());
    m.commit = 8;
    m.commit_term = 4;
    m.set_snapshot(snapshot());
    m.request_snapshot = 3;
    m.reject = true;
    m.reject_hint = 2;
    m.set_context(b"context".to_vec().into());
    m.deprecated_priority = 1;
    m.priority = -1;
    m
}

const TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

#[test]
fn a_valid_message_of_every_type_passes() {
    assert_eq!(check_message(&[]), Ok(()), "the empty message");
    for t in TYPES {
        let full = encode(&full_message(t));
        assert_eq!(check_message(&full), Ok(()), "{t:?}");
        let mut bare = Message::default();
        bare.set_msg_type(t);
        assert_eq!(check_message(&encode(&bare)), Ok(()), "{t:?}");
    }
    for e in entries() {
        assert_eq!(check_entry(&encode(&e)), Ok(()));
    }
}

#[test]
fn nested_groups_at_the_top_level_are_refused() {
    let mut b = encode(&full_message(MessageType::MsgAppend));
    let at = b.len();
    b.extend(nested_groups(100_000));
    let e = check_message(&b).unwrap_err();
    assert_eq!(e.problem, Problem::Group(3));
    assert_eq!((e.message, e.at), ("Message", at));
    // One group, not nested, is refused too (rust-protobuf 2.28 skips it).
    let mut one = tag(99, 3);
    one.extend(tag(99, 4));
    assert_eq!(check_message(&one).unwrap_err().problem, Problem::Group(3));
    // An end-group alone too.
    assert_eq!(
        check_message(&tag(99, 4)).unwrap_err().problem,
        Problem::Group(4)
    );
}

/// `inner` as field `field` (length-delimited) of a message.
fn wrap(field: u32, inner: &[u8]) -> Vec<u8> {
    let mut b = tag(field, 2);
    let mut len = inner.len() as u64;
    while len >= 0x80 {
        b.push((len as u8) | 0x80);
        len >>= 7;
    }
    b.push(len as u8);
    b.extend_from_slice(inner);
    b
}

#[test]
fn nested_groups_inside_an_entry_or_a_conf_change_are_refused() {
    let groups = nested_groups(10_000);
    // In an entry's unknown field.
    let mut entry = encode(&entries()[0]);
    entry.extend(&groups);
    let msg = wrap(7, &entry);
    let e = check_message(&msg).unwrap_err();
    assert_eq!((e.problem, e.message), (Problem::Group(3), "Entry"));
    assert_eq!(check_entry(&entry).unwrap_err().problem, Problem::Group(3));
    // In a ConfChangeV2 carried by an entry's data (the type written after the
    // data: the last one counts).
    let mut cc = encode(&conf_change_v2());
    cc.extend(&groups);
    let mut entry = wrap(4, &cc);
    entry.extend(tag(1, 0));
    entry.push(2);
    let e = check_message(&wrap(7, &entry)).unwrap_err();
    assert_eq!((e.problem, e.message), (Problem::Group(3), "ConfChangeV2"));
    // In one of its changes.
    let mut single = encode(&conf_change_v2().get_changes()[0]);
    single.extend(&groups);
    let mut entry = tag(1, 0);
    entry.push(2);
    entry.extend(wrap(4, &wrap(2, &single)));
    let e = check_message(&wrap(7, &entry)).unwrap_err();
    assert_eq!(
        (e.problem, e.message),
        (Problem::Group(3), "ConfChangeSingle")
    );
    // In a snapshot's conf state.
    let mut cs = encode(snapshot().get_metadata().get_conf_state());
    cs.extend(&groups);
    let msg = wrap(9, &wrap(2, &wrap(1, &cs)));
    let e = check_message(&msg).unwrap_err();
    assert_eq!((e.problem, e.message), (Problem::Group(3), "ConfState"));
    // A normal entry's data is Shoal's command (prost decodes it, with its own
    // recursion limit): opaque to this check, as to rust-protobuf.
    let normal = wrap(4, &groups);
    assert_eq!(check_message(&wrap(7, &normal)), Ok(()));
}

#[test]
fn truncated_input_is_refused_unless_cut_between_top_level_fields() {
    let full = encode(&full_message(MessageType::MsgSnapshot));
    // Where the top-level fields end: a cut there is a shorter valid message.
    let mut ends = vec![0];
    let mut fields = Fields::new(&full, 0, &MESSAGE);
    while let Some(f) = fields.next_field().unwrap() {
        assert!(f.at >= *ends.last().unwrap());
        ends.push(fields.pos);
    }
    assert!(ends.len() > 10);
    for n in 0..full.len() {
        let prefix = &full[..n];
        let checked = check_message(prefix);
        assert_eq!(
            checked.is_ok(),
            ends.contains(&n),
            "prefix of {n}: {checked:?}"
        );
        // Whatever rust-protobuf refuses, the check refuses (it is stricter:
        // rust-protobuf 2.28 takes a nested message cut short).
        if Message::parse_from_bytes(prefix).is_err() {
            assert!(checked.is_err(), "prefix of {n}");
        }
    }
    let entry = encode(&entries()[2]);
    for n in 1..entry.len() {
        let checked = check_entry(&entry[..n]);
        if Entry::parse_from_bytes(&entry[..n]).is_err() {
            assert!(checked.is_err(), "entry prefix of {n}");
        }
    }
}

#[test]
fn malformed_framing_is_refused() {
    let problem = |b: &[u8]| check_message(b).unwrap_err().problem;
    // A varint of 11 bytes, and one past 64 bits.
    let mut b = tag(2, 0);
    b.extend([0x80; 10]);
    b.push(1);
    assert_eq!(problem(&b), Problem::Varint);
    let mut b = tag(2, 0);
    b.extend([0xff; 9]);
    b.push(0x02);
    assert_eq!(problem(&b), Problem::Varint);
    // A tag past 32 bits (rust-protobuf would truncate it), field 0, wire types
    // that do not exist.
    assert_eq!(
        problem(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x00]),
        Problem::TagTooLong
    );
    assert_eq!(problem(&[0x00, 0x01]), Problem::FieldZero);
    assert_eq!(problem(&tag(2, 6)), Problem::BadWireType(6));
    assert_eq!(problem(&tag(2, 7)), Problem::BadWireType(7));
    // A length past the end, fixed values cut short.
    let mut b = tag(12, 2);
    b.extend([5, b'a', b'b']);
    assert_eq!(problem(&b), Problem::Truncated);
    let mut b = tag(99, 1);
    b.extend([0; 7]);
    assert_eq!(problem(&b), Problem::Truncated);
    // Known fields with another wire type than the schema's.
    let mut b = tag(7, 0);
    b.push(1);
    assert_eq!(
        problem(&b),
        Problem::WrongWireType {
            field: 7,
            wire_type: 0,
            expected: 2
        }
    );
    assert_eq!(
        problem(&wrap(2, b"")),
        Problem::WrongWireType {
            field: 2,
            wire_type: 2,
            expected: 0
        }
    );
    // Enum values the schema does not have (rust-protobuf refuses them too).
    let mut b = tag(1, 0);
    b.push(19);
    assert_eq!(
        problem(&b),
        Problem::UnknownEnum {
            field: 1,
            value: 19
        }
    );
    assert!(Message::parse_from_bytes(&b).is_err());
    let mut entry = tag(1, 0);
    entry.push(3);
    assert_eq!(
        problem(&wrap(7, &entry)),
        Problem::UnknownEnum { field: 1, value: 3 }
    );
    // A packed list with a cut varint inside.
    let packed = wrap(9, &wrap(2, &wrap(1, &wrap(1, &[0x80]))));
    assert_eq!(problem(&packed), Problem::Truncated);
    // Unknown fields of the other wire types are skipped, as proto3 asks.
    let mut b = encode(&full_message(MessageType::MsgHeartbeat));
    b.extend(tag(99, 0));
    b.push(1);
    b.extend(tag(98, 1));
    b.extend([0; 8]);
    b.extend(tag(97, 5));
    b.extend([0; 4]);
    b.extend(wrap(96, &nested_groups(3)));
    assert_eq!(check_message(&b), Ok(()));
    assert!(Message::parse_from_bytes(&b).is_ok());
}

/// xorshift64: the mutations below are the same on every run.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn whatever_the_check_passes_rust_protobuf_parses() {
    let seeds: Vec<Vec<u8>> = TYPES.iter().map(|&t| encode(&full_message(t))).collect();
    let mut x = 0x2545_f491_4f6c_dd1d;
    let (mut passed, mut refused) = (0, 0);
    for i in 0..20_000 {
        let mut b = seeds[i % seeds.len()].clone();
        for _ in 0..1 + next(&mut x) % 4 {
            let at = (next(&mut x) as usize) % b.len();
            match next(&mut x) % 3 {
                0 => b[at] = next(&mut x) as u8,
                1 => b.insert(at, next(&mut x) as u8),
                _ => {
                    b.remove(at);
                }
            }
        }
        match check_message(&b) {
            Ok(()) => {
                passed += 1;
                assert!(
                    Message::parse_from_bytes(&b).is_ok(),
                    "passed the check and does not parse: {b:?}"
                );
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        passed > 1000 && refused > 1000,
        "{passed} passed, {refused} refused"
    );
}

// --- the advisory's input against rust-protobuf itself ---

/// The crafted input: a heartbeat, then a million nested groups (2 MB, under
/// the node's gRPC message limit).
fn crafted() -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    let mut b = encode(&m);
    b.extend(nested_groups(1_000_000));
    b
}

/// Set in the child process: which child test to run for real.
const CHILD: &str = "SHOAL_WIRE_CHILD";
/// The stack of the child's thread: far below a poller's or a tokio worker's.
const SMALL_STACK: usize = 256 << 10;

/// Runs the ignored test `name` of this binary in a child process with
/// [`CHILD`] set: its exit status and its output.
fn run_child(name: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, name)
        .output()
        .unwrap()
}

/// In a child: `f` on a thread with a small stack, its answer printed.
fn on_small_stack(name: &str, f: impl FnOnce() -> String + Send + 'static) {
    if std::env::var(CHILD).as_deref() != Ok(name) {
        return;
    }
    let out = std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
    println!("child answer: {out}");
}

#[test]
#[ignore = "run by child_process_harness_sees_a_stack_overflow"]
fn child_recurses_without_bound() {
    // Called through an opaque pointer, with a frame live across the call: no
    // optimisation can make it a loop.
    fn down(n: u64) -> u64 {
        let pad = [n; 64];
        if n == u64::MAX {
            return 0;
        }
        let next: fn(u64) -> u64 = std::hint::black_box(down);
        let r = next(n + 1);
        std::hint::black_box(&pad);
        r
    }
    on_small_stack("raft::wire::tests::child_recurses_without_bound", || {
        down(0).to_string()
    });
}

#[test]
#[ignore = "run by rust_protobuf_2_28_refuses_the_advisorys_input_without_overflowing"]
fn child_parses_the_crafted_input() {
    on_small_stack("raft::wire::tests::child_parses_the_crafted_input", || {
        format!("{:?}", Message::parse_from_bytes(&crafted()).map(|_| ()))
    });
}

/// The harness below is able to see a crash: unbounded recursion on the small
/// stack kills the child (Rust's overflow handler aborts it).
#[test]
fn child_process_harness_sees_a_stack_overflow() {
    let out = run_child("raft::wire::tests::child_recurses_without_bound");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {out:?}");
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
}

/// What the crafted input does to the rust-protobuf this build parses with
/// (2.28): it does not recurse (its `skip_group` refuses a group inside a group:
/// `UnexpectedWireType(WireTypeStartGroup)`), so the child lives and the parse
/// fails. RUSTSEC-2024-0437's recursion is the 3.x `skip_group`'s. If this test
/// fails because the child died, the parser in the tree is one the advisory's
/// input crashes: the wire check (which refuses the input, below) must run before
/// every parse of a peer's bytes.
#[test]
fn rust_protobuf_2_28_refuses_the_advisorys_input_without_overflowing() {
    let input = crafted();
    assert_eq!(
        check_message(&input).unwrap_err().problem,
        Problem::Group(3)
    );
    let out = run_child("raft::wire::tests::child_parses_the_crafted_input");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rust-protobuf crashed on the crafted input: {out:?}"
    );
    assert!(
        stdout.contains("child answer: Err(WireError(UnexpectedWireType(WireTypeStartGroup)))"),
        "{stdout}"
    );
}
