//! Where the work goes: each Shoal node's counters (Admin `Status`) and the CPU time
//! of processes (from `/proc/PID/stat`), read before and after the measured phase.

use serde::Serialize;
use shoal_client::Client;
use shoal_proto::adminpb::StoreCounters;

/// CPU time (user + system) of process `pid` in seconds, from `/proc/PID/stat`;
/// `None` if there is no such process here.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields after the last
    // ')' start with field 3 (state). utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// The command name of process `pid` (`/proc/PID/comm`).
pub fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim().to_string())
}

/// One node's counters at one moment.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// The store.
    pub store_id: u64,
    /// Its gRPC address.
    pub address: String,
    /// Its counters.
    pub counters: StoreCounters,
    /// CPU seconds of its process, when it runs on this machine.
    pub cpu_seconds: Option<f64>,
    /// Its process, when it runs on this machine.
    pub pid: Option<u32>,
}

/// A store whose counters could not be read (down, say): a benchmark of a
/// degraded cluster goes on without them, and says so.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SilentStore {
    /// The store.
    pub store_id: u64,
    /// Its gRPC address.
    pub address: String,
    /// Why its counters are missing.
    pub why: String,
}

/// Every store's counters at one moment: those that answered, and those that
/// did not.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The stores that answered, by id.
    pub nodes: Vec<NodeSnapshot>,
    /// The stores that did not.
    pub silent: Vec<SilentStore>,
}

/// Reads every store's counters (and CPU time, when the node runs here). A store
/// that does not answer is listed in `silent` (a removed store is not asked).
pub async fn snapshot_shoal(client: &Client) -> Result<Snapshot, String> {
    let (_, stores) = client
        .list_regions()
        .await
        .map_err(|e| format!("cannot list the stores: {e}"))?;
    let mut out = Vec::new();
    let mut silent = Vec::new();
    for store in stores {
        if store.state == shoal_proto::metapb::StoreState::Removed as i32 {
            continue;
        }
        let status = match client.status(&store.address).await {
            Ok(s) => s,
            Err(e) => {
                silent.push(SilentStore {
                    store_id: store.id,
                    address: store.address,
                    why: e.to_string(),
                });
                continue;
            }
        };
        // A pid is only ours to read if the process there is a shoal node.
        let pid = (status.pid != 0
            && process_name(status.pid).is_some_and(|n| n.starts_with("shoal")))
        .then_some(status.pid);
        let cpu_seconds = pid.and_then(process_cpu_seconds);
        out.push(NodeSnapshot {
            store_id: store.id,
            address: store.address,
            counters: status.counters.unwrap_or_default(),
            cpu_seconds,
            pid,
        });
    }
    out.sort_by_key(|n| n.store_id);
    silent.sort_by_key(|n| n.store_id);
    Ok(Snapshot { nodes: out, silent })
}

/// One node's work during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct NodeWork {
    /// The store.
    pub store_id: u64,
    /// Its address.
    pub address: String,
    /// Synced log-engine writes.
    pub fsyncs: u64,
    /// Log entries those writes carried.
    pub log_entries: u64,
    /// Log entries per fsync.
    pub entries_per_fsync: f64,
    /// Raft messages sent to other stores.
    pub raft_messages: u64,
    /// Transport batches (gRPC stream messages) sent to other stores.
    pub transport_rpcs: u64,
    /// Encoded bytes of the Raft messages sent to other stores.
    pub raft_bytes: u64,
    /// CPU seconds the node used, when it runs on this machine.
    pub cpu_seconds: Option<f64>,
    /// CPU seconds per 1,000 requests.
    pub cpu_s_per_1k_ops: Option<f64>,
}

/// The cluster's work during the measured phase, per node and per request.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterWork {
    /// Per node.
    pub nodes: Vec<NodeWork>,
    /// fsyncs of all nodes per request.
    pub fsyncs_per_op: f64,
    /// Log entries per fsync over all nodes.
    pub entries_per_fsync: f64,
    /// Raft messages of all nodes per request.
    pub raft_messages_per_op: f64,
    /// Transport RPCs of all nodes per request.
    pub transport_rpcs_per_op: f64,
    /// Bytes of Raft messages all nodes sent per request.
    pub raft_bytes_per_op: f64,
    /// CPU seconds of all nodes per 1,000 requests (nodes on this machine).
    pub cpu_s_per_1k_ops: Option<f64>,
    /// Stores whose counters are missing before or after the measured phase: the
    /// figures above leave them out.
    pub silent: Vec<SilentStore>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The difference `after - before` for `ops` requests. Nodes missing from either
/// snapshot are left out, and named in `silent`.
pub fn cluster_work(before: &Snapshot, after: &Snapshot, ops: u64) -> ClusterWork {
    let ops_f = ops as f64;
    let mut nodes = Vec::new();
    let mut silent: Vec<SilentStore> = Vec::new();
    let mut note = |s: SilentStore| {
        if !silent.iter().any(|x| x.store_id == s.store_id) {
            silent.push(s);
        }
    };
    for s in before.silent.iter().chain(&after.silent) {
        note(s.clone());
    }
    for (one, other, when) in [(before, after, "after"), (after, before, "before")] {
        for n in &one.nodes {
            let answered = other.nodes.iter().any(|o| o.store_id == n.store_id);
            let known = other.silent.iter().any(|o| o.store_id == n.store_id);
            if !answered && !known {
                note(SilentStore {
                    store_id: n.store_id,
                    address: n.address.clone(),
                    why: format!("not listed {when} the measured phase"),
                });
            }
        }
    }
    silent.sort_by_key(|s| s.store_id);
    for a in &after.nodes {
        let Some(b) = before.nodes.iter().find(|b| b.store_id == a.store_id) else {
            continue;
        };
        let (ca, cb) = (&a.counters, &b.counters);
        let fsyncs = ca.fsyncs.saturating_sub(cb.fsyncs);
        let log_entries = ca
            .entries_per_fsync_sum
            .saturating_sub(cb.entries_per_fsync_sum);
        let cpu = a
            .cpu_seconds
            .zip(b.cpu_seconds)
            .map(|(x, y)| (x - y).max(0.0));
        nodes.push(NodeWork {
            store_id: a.store_id,
            address: a.address.clone(),
            fsyncs,
            log_entries,
            entries_per_fsync: ratio(log_entries as f64, fsyncs as f64),
            raft_messages: ca.raft_messages_sent.saturating_sub(cb.raft_messages_sent),
            transport_rpcs: ca
                .transport_batches_sent
                .saturating_sub(cb.transport_batches_sent),
            raft_bytes: ca
                .raft_message_bytes_sent
                .saturating_sub(cb.raft_message_bytes_sent),
            cpu_seconds: cpu,
            cpu_s_per_1k_ops: cpu.map(|c| ratio(c * 1000.0, ops_f)),
        });
    }
    let sum = |f: fn(&NodeWork) -> u64| nodes.iter().map(f).sum::<u64>() as f64;
    let fsyncs = sum(|n| n.fsyncs);
    let cpus: Vec<f64> = nodes.iter().filter_map(|n| n.cpu_seconds).collect();
    ClusterWork {
        fsyncs_per_op: ratio(fsyncs, ops_f),
        entries_per_fsync: ratio(sum(|n| n.log_entries), fsyncs),
        raft_messages_per_op: ratio(sum(|n| n.raft_messages), ops_f),
        transport_rpcs_per_op: ratio(sum(|n| n.transport_rpcs), ops_f),
        raft_bytes_per_op: ratio(sum(|n| n.raft_bytes), ops_f),
        cpu_s_per_1k_ops: (!cpus.is_empty())
            .then(|| ratio(cpus.iter().sum::<f64>() * 1000.0, ops_f)),
        nodes,
        silent,
    }
}

/// CPU used by one of the `--pids` processes during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// The process.
    pub pid: u32,
    /// Its command name.
    pub name: String,
    /// CPU seconds used.
    pub cpu_seconds: f64,
    /// CPU seconds per 1,000 requests.
    pub cpu_s_per_1k_ops: f64,
}

/// CPU seconds of each pid now (absent pids are skipped).
pub fn snapshot_pids(pids: &[u32]) -> Vec<(u32, f64)> {
    pids.iter()
        .filter_map(|&p| process_cpu_seconds(p).map(|c| (p, c)))
        .collect()
}

/// The CPU each pid used between the two snapshots.
pub fn pid_work(before: &[(u32, f64)], after: &[(u32, f64)], ops: u64) -> Vec<ProcessCpu> {
    after
        .iter()
        .filter_map(|&(pid, a)| {
            let b = before.iter().find(|(p, _)| *p == pid)?.1;
            let used = (a - b).max(0.0);
            Some(ProcessCpu {
                pid,
                name: process_name(pid).unwrap_or_default(),
                cpu_seconds: used,
                cpu_s_per_1k_ops: ratio(used * 1000.0, ops as f64),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read_from_proc_and_grows() {
        let me = std::process::id();
        assert!(process_name(me).is_some());
        let before = process_cpu_seconds(me).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_seconds(me).unwrap();
        assert!(after - before >= 0.1, "{before} -> {after}");
        assert_eq!(process_cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn work_is_the_difference_per_op() {
        let snap = |fsyncs, entries, msgs, cpu| NodeSnapshot {
            store_id: 1,
            address: "a".into(),
            counters: StoreCounters {
                fsyncs,
                entries_per_fsync_sum: entries,
                raft_messages_sent: msgs,
                transport_batches_sent: msgs / 2,
                raft_message_bytes_sent: msgs * 100,
                ..Default::default()
            },
            cpu_seconds: Some(cpu),
            pid: None,
        };
        let of = |nodes| Snapshot {
            nodes,
            silent: Vec::new(),
        };
        let w = cluster_work(
            &of(vec![snap(10, 100, 40, 1.0)]),
            &of(vec![snap(110, 3100, 240, 3.0)]),
            2000,
        );
        assert_eq!(w.nodes[0].fsyncs, 100);
        assert_eq!(w.entries_per_fsync, 30.0);
        assert_eq!(w.fsyncs_per_op, 0.05);
        assert_eq!(w.raft_messages_per_op, 0.1);
        assert_eq!(w.transport_rpcs_per_op, 0.05);
        assert_eq!(w.raft_bytes_per_op, 10.0);
        assert_eq!(w.cpu_s_per_1k_ops, Some(1.0));
        assert!(w.silent.is_empty());
    }

    #[test]
    fn a_store_that_did_not_answer_is_left_out_and_named() {
        let node = |store_id| NodeSnapshot {
            store_id,
            address: format!("a{store_id}"),
            counters: StoreCounters {
                fsyncs: 10 * store_id,
                ..Default::default()
            },
            cpu_seconds: None,
            pid: None,
        };
        let down = SilentStore {
            store_id: 3,
            address: "a3".into(),
            why: "unreachable".into(),
        };
        let before = Snapshot {
            nodes: vec![node(1), node(2)],
            silent: vec![down.clone()],
        };
        // Store 2 stopped answering during the run, store 3 never did.
        let after = Snapshot {
            nodes: vec![node(1)],
            silent: vec![down.clone()],
        };
        let w = cluster_work(&before, &after, 100);
        assert_eq!(w.nodes.iter().map(|n| n.store_id).collect::<Vec<_>>(), [1]);
        assert_eq!(
            w.silent.iter().map(|s| s.store_id).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(w.silent[1], down);
    }
}
