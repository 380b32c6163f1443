//! What the processes of a run cost the machine, from `/proc`: CPU time and context
//! switches of a whole process (every thread of it), and CPU time per thread name
//! (`shoal-poll-0` and `shoal-poll-1` count as `shoal-poll`). Sampled right before
//! and right after the measured phase, for the servers and for the load generator
//! itself (it shares the machine's cores with them).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::counters::process_name;

/// One process at one moment.
#[derive(Debug, Clone, Default)]
pub struct ProcSample {
    /// CPU seconds (user + system) of every thread, by thread name.
    pub threads: BTreeMap<String, f64>,
    /// Voluntary and involuntary context switches of every thread.
    pub ctx_switches: u64,
}

impl ProcSample {
    fn cpu(&self) -> f64 {
        self.threads.values().sum()
    }
}

/// Seconds per clock tick of `/proc/*/stat`.
fn tick() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if t > 0 { t as f64 } else { 100.0 }
}

/// A thread's name without its trailing number (`shoal-poll-1` -> `shoal-poll`).
fn thread_kind(comm: &str) -> String {
    let t = comm.trim().trim_end_matches(|c: char| c.is_ascii_digit());
    t.trim_end_matches(['-', '_', '#']).to_string()
}

/// Process `pid` now, summed over its threads; `None` if it is not here.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut s = ProcSample::default();
    let tick = tick();
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("comm")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15, the 12th and 13th after the name.
        let cpu = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum::<f64>()
            * tick;
        *s.threads.entry(thread_kind(&comm)).or_default() += cpu;
        if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
            for line in status.lines() {
                if line.starts_with("voluntary_ctxt_switches:")
                    || line.starts_with("nonvoluntary_ctxt_switches:")
                {
                    let n = line.split_whitespace().nth(1).and_then(|v| v.parse().ok());
                    s.ctx_switches += n.unwrap_or(0u64);
                }
            }
        }
    }
    Some(s)
}

/// CPU of one kind of thread during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadCpu {
    /// The thread name, trailing number dropped.
    pub name: String,
    /// CPU seconds of all threads of that name.
    pub cpu_seconds: f64,
}

/// What one process cost during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct ProcCost {
    /// The process.
    pub pid: u32,
    /// Its command name.
    pub name: String,
    /// CPU seconds.
    pub cpu_seconds: f64,
    /// Context switches.
    pub ctx_switches: u64,
    /// CPU by thread name, largest first (threads that ended during the phase
    /// are missing).
    pub threads: Vec<ThreadCpu>,
}

/// The cost of `pid` between two samples.
pub fn cost(pid: u32, before: &ProcSample, after: &ProcSample) -> ProcCost {
    let mut threads: Vec<ThreadCpu> = after
        .threads
        .iter()
        .map(|(name, a)| ThreadCpu {
            name: name.clone(),
            cpu_seconds: (a - before.threads.get(name).copied().unwrap_or(0.0)).max(0.0),
        })
        .collect();
    threads.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    ProcCost {
        pid,
        name: process_name(pid).unwrap_or_default(),
        cpu_seconds: (after.cpu() - before.cpu()).max(0.0),
        ctx_switches: after.ctx_switches.saturating_sub(before.ctx_switches),
        threads,
    }
}

/// Samples of each of `pids` that is here.
pub fn sample_all(pids: &[u32]) -> Vec<(u32, ProcSample)> {
    pids.iter()
        .filter_map(|&p| sample(p).map(|s| (p, s)))
        .collect()
}

/// The cost of each pid sampled both times.
pub fn costs(before: &[(u32, ProcSample)], after: &[(u32, ProcSample)]) -> Vec<ProcCost> {
    after
        .iter()
        .filter_map(|(pid, a)| {
            let b = &before.iter().find(|(p, _)| p == pid)?.1;
            Some(cost(*pid, b, a))
        })
        .collect()
}

/// What the run cost per request: servers and load generator together.
#[derive(Debug, Clone, Serialize)]
pub struct CostPerOp {
    /// CPU microseconds of the server processes per request.
    pub server_cpu_us: f64,
    /// CPU microseconds of the load generator per request.
    pub client_cpu_us: f64,
    /// Their sum: what one request costs this machine.
    pub total_cpu_us: f64,
    /// Context switches of servers and load generator per request.
    pub ctx_switches: f64,
}

/// The per-request cost of `servers` and `client` over `ops` requests.
pub fn per_op(servers: &[ProcCost], client: &ProcCost, ops: u64) -> CostPerOp {
    let ops = ops.max(1) as f64;
    let server_cpu: f64 = servers.iter().map(|c| c.cpu_seconds).sum();
    let switches: u64 = servers.iter().map(|c| c.ctx_switches).sum::<u64>() + client.ctx_switches;
    CostPerOp {
        server_cpu_us: server_cpu * 1e6 / ops,
        client_cpu_us: client.cpu_seconds * 1e6 / ops,
        total_cpu_us: (server_cpu + client.cpu_seconds) * 1e6 / ops,
        ctx_switches: switches as f64 / ops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_grouped_by_name_without_their_number() {
        assert_eq!(thread_kind("shoal-poll-1\n"), "shoal-poll");
        assert_eq!(thread_kind("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_kind("worker#12"), "worker");
    }

    #[test]
    fn this_process_is_sampled_and_its_cost_grows_with_work() {
        let me = std::process::id();
        let before = sample(me).expect("this process");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample(me).unwrap();
        let c = cost(me, &before, &after);
        assert!(c.cpu_seconds > 0.1, "{c:?}");
        assert!(!c.threads.is_empty());
        let p = per_op(std::slice::from_ref(&c), &c, 1000);
        assert!((p.total_cpu_us - 2.0 * p.client_cpu_us).abs() < 1e-6);
    }
}
