//! A follower paused (SIGSTOP) for 30 s under write load: the leader's memory stays
//! bounded (the transport's queue toward the paused store, raft-rs's uncommitted
//! and in-flight limits, the pending-proposal bound), reads of another region keep
//! answering promptly, and the follower catches up once it resumes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, start_nodes};
use shoal_client::{Client, ClientConfig};

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_paused_follower_under_load_leaves_the_leader_bounded_and_other_regions_fast() {
    const PAUSE: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let nodes = start_nodes(dir.path(), &addrs, 2);
    let pids: Vec<u32> = nodes.0.iter().map(|c| c.id()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Client::connect(addrs.clone(), ClientConfig::default()))
        .unwrap();
    // Keys below 0x80 are in the first region, keys from 0x80 on in the second.
    let hot = |i: u64| [&[0x10u8][..], &i.to_be_bytes()].concat();
    let cold = |i: u64| [&[0xf0u8][..], &i.to_be_bytes()].concat();
    rt.block_on(async {
        for i in 0..50 {
            client.put(cold(i), b"cold").await.unwrap();
            client.put(hot(i), b"hot").await.unwrap();
        }
    });
    // Pause a store that leads neither region (3 stores, 2 regions: one exists).
    let (regions, _) = rt.block_on(client.list_regions()).unwrap();
    let leaders: Vec<u64> = regions
        .iter()
        .filter_map(|r| r.leader.map(|l| l.store_id))
        .collect();
    let paused = (1..=3u64).find(|s| !leaders.contains(s)).unwrap();
    let leader_of_hot = regions
        .iter()
        .find(|r| r.region.as_ref().unwrap().start_key.is_empty())
        .and_then(|r| r.leader)
        .unwrap()
        .store_id;
    let leader_pid = pids[(leader_of_hot - 1) as usize];
    let paused_pid = pids[(paused - 1) as usize];
    let rss_before = rss(leader_pid);

    signal(paused_pid, "-STOP");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let value = vec![b'v'; 4096];
    let mut writers = Vec::new();
    for w in 0..32u64 {
        let (client, stop, written, value) =
            (client.clone(), stop.clone(), written.clone(), value.clone());
        writers.push(rt.spawn(async move {
            // Bounded in count and in time (the stop flag).
            for i in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if client.put(hot(w * 1_000_000 + i), &value).await.is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    let mut read_latencies = Vec::new();
    let mut peak = rss_before;
    let mut i = 0u64;
    while start.elapsed() < PAUSE {
        let t = Instant::now();
        let got = rt.block_on(client.get(cold(i % 50)));
        read_latencies.push(t.elapsed());
        assert_eq!(got.unwrap().as_deref(), Some(&b"cold"[..]), "read {i}");
        peak = peak.max(rss(leader_pid));
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    signal(paused_pid, "-CONT");
    rt.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
    let writes = written.load(Ordering::Relaxed);
    assert!(
        writes > 1000,
        "only {writes} writes went through with one store paused"
    );
    read_latencies.sort();
    let p99 = read_latencies[read_latencies.len() * 99 / 100];
    println!(
        "writes {writes}, reads {}, read p99 {p99:?}, leader rss {} -> peak {} MiB",
        read_latencies.len(),
        rss_before >> 20,
        peak >> 20
    );
    // Bounded: 30 s of writes at 4 KiB held for the paused follower would be far
    // more than this.
    assert!(
        peak.saturating_sub(rss_before) < 512 << 20,
        "the leader grew from {} to {} MiB",
        rss_before >> 20,
        peak >> 20
    );
    assert!(
        p99 < Duration::from_secs(1),
        "reads of the other region p99 {p99:?}"
    );
    // The resumed follower catches up: every replica's checksum agrees.
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = Instant::now();
    loop {
        let sums: Vec<_> = addrs
            .iter()
            .map(|a| {
                rt.block_on(client.checksum(a, regions[0].region.as_ref().unwrap().id))
                    .map(|c| (c.applied_index, c.checksum))
            })
            .collect();
        let agree = sums.iter().all(|s| s.is_ok())
            && sums
                .windows(2)
                .all(|w| w[0].as_ref().ok() == w[1].as_ref().ok());
        if agree {
            println!(
                "the follower caught up {:?} after resuming",
                resumed.elapsed()
            );
            break;
        }
        println!("{:?} after resuming: {sums:?}", resumed.elapsed());
        assert!(Instant::now() < deadline, "replicas disagree: {sums:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(nodes);
}
