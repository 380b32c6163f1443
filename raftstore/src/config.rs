//! raftstore settings. Every field has a documented default and bounds, checked by
//! [`Config::validate`].

use std::time::Duration;

use crate::error::ConfigError;

/// How a store runs its Raft groups.
#[derive(Clone, Debug)]
pub struct Config {
    /// Length of one Raft tick. Default 100 ms; 1 ms ..= 10 s.
    pub raft_tick_interval: Duration,
    /// Ticks without a heartbeat before a follower campaigns. Default 10 (1 s); must
    /// exceed `raft_heartbeat_ticks`.
    pub raft_election_ticks: usize,
    /// Ticks between leader heartbeats. Default 2; >= 1.
    pub raft_heartbeat_ticks: usize,
    /// Most bytes of entries in one append message. Default 1 MiB; >= 1 KiB.
    pub raft_max_size_per_msg: u64,
    /// Largest Raft entry (an encoded command) a proposal may make; larger ones are
    /// refused with `EntryTooLarge` before they reach Raft. Every gRPC message
    /// limit derives from it (see the server's config). Default 8 MiB;
    /// 64 KiB ..= 256 MiB.
    pub raft_entry_max_size: u64,
    /// Most append messages in flight per follower. Default 32; >= 1. With
    /// `raft_max_size_per_msg` it sets how many bytes a leader pushes toward one
    /// catching-up follower (32 x 1 MiB): keep that under the transport's queue per
    /// store (64 MiB), or a catch-up overflows it, the store is reported unreachable,
    /// raft-rs drops back to probing, and the follower crawls (measured: 68 s instead
    /// of 8 s to catch up 30 s of writes with 256 in flight).
    pub raft_max_inflight_msgs: usize,
    /// Entries kept in each peer's in-memory cache once persisted. Default 1024;
    /// >= 1.
    pub entry_cache_limit: usize,
    /// Bytes kept in each peer's entry cache once persisted. Default 4 MiB; >= 1.
    pub entry_cache_max_bytes: u64,
    /// Bytes kept in the entry caches of all of a store's peers once persisted
    /// (past it, every peer gives up its persisted entries). Default 256 MiB; >= 1.
    pub entry_cache_store_max_bytes: u64,
    /// Poller threads of the batch system. Default: the machine's cores, at most 4.
    pub pollers: usize,
    /// Most FSMs one poll round handles. Default 256; >= 1.
    pub max_batch_size: usize,
    /// Apply worker threads. Default 1, and 1 is the only value accepted while a
    /// merge must find its source and target on one worker.
    pub apply_workers: usize,
    /// Most writes a leader keeps waiting for apply (each write of a merged
    /// proposal counts), and most client requests a region's mailbox holds, before
    /// new ones get `ServerIsBusy`. Default 4096; >= 1.
    pub max_pending_proposals: usize,
    /// Most bytes of entries a leader keeps uncommitted (raft-rs
    /// `max_uncommitted_size`) before refusing proposals with `ServerIsBusy`: a
    /// leader whose followers stall stops taking writes instead of growing.
    /// Default 128 MiB; >= raft-entry-max-size.
    pub raft_max_uncommitted_size: u64,
    /// Whether a leader leaves its new commit index to ride on its next append or
    /// heartbeat instead of broadcasting it at once (raft-rs's `skip_bcast_commit`;
    /// still broadcast while a membership change is pending). Followers learn of a
    /// commit up to a heartbeat later (they apply later; reads are the leader's);
    /// each write saves a round of messages to every follower. Default true.
    pub raft_skip_bcast_commit: bool,
    /// Whether idle regions go dormant: a leader that finds nothing to do for an
    /// election timeout, with every follower holding its whole log, stops ticking
    /// and heartbeating, and so do its followers; any request or message wakes
    /// the region. Followers of a dormant region learn that its leader's store
    /// died through store liveness (one heartbeat per store pair every
    /// `raft_heartbeat_ticks`, a store silent for `raft_election_ticks` is down).
    /// Default true.
    pub dormant_regions: bool,
    /// How many dormant peers a store wakes per second when many must wake at
    /// once: all of them at start-up (a store starts its regions dormant and wakes
    /// them at this pace, each electing as it wakes), and the regions of a store
    /// that went silent. Paced so that a store of 100,000 regions does not tick
    /// them all at once and melt. Default 3,000.
    pub dormant_wake_rate: u32,
    /// Whether the writes one region's leader receives in one poll round (puts,
    /// deletes, compare-and-swaps, batch writes, from any clients) are proposed as
    /// one Raft entry, up to `raft_entry_max_size`, instead of one entry each: one
    /// log key, one apply step and less raft-rs work for all of them. Each caller
    /// still gets its own answer; they commit or fail together. Default true.
    pub raft_merge_writes: bool,
    /// Threads that run scans and region checksums. Default 2; >= 1.
    pub read_pool_threads: usize,
    /// Reads queued for the read pool before more are refused with `ServerIsBusy`.
    /// Default 1024; >= 1.
    pub read_pool_queue: usize,
    /// A leader splits its region near the middle once it holds more than this many
    /// bytes of keys and values. Default 96 MiB; >= 1.
    pub region_max_size: u64,
    /// ... or more than this many keys. Default 960,000; >= 1.
    pub region_max_keys: u64,
    /// How often each leader checks its region against the two limits (a store-level
    /// tick, not per write). Default 10 s; a multiple of the raft tick, >= 1 tick.
    pub split_check_interval: Duration,
    /// How often each leader considers truncating its region's Raft log. Default
    /// 10 s; at least one raft tick.
    pub raft_log_gc_tick_interval: Duration,
    /// A leader truncates its log only when at least this many entries, applied and
    /// held by every replica, can go: fewer are not worth a Raft proposal.
    /// Default 50; >= 1.
    pub raft_log_gc_threshold: u64,
    /// Past this many entries between the first index and the applied index, a
    /// leader truncates even entries a slow or stopped replica still needs (at
    /// least half of its log): that replica catches up from a Raft snapshot.
    /// Default 73728; >= raft-log-gc-threshold.
    pub raft_log_gc_count_limit: u64,
    /// ... or past this many bytes of entries in the log (estimated from what the
    /// peer appended since its last truncation). Default 72 MiB; >= 1.
    pub raft_log_gc_size_limit: u64,
    /// How long an awake replica hears from no leader before it asks the region's
    /// peers whether it still belongs (a replica removed while cut off, or an
    /// uninitialized one whose snapshot never came, is told so and destroyed;
    /// `operation/conf_change/stale.rs`). A dormant replica never asks. Default
    /// 5 min; at least two election timeouts.
    pub raft_stale_peer_check_interval: Duration,
    /// Where Raft snapshots are generated and received (files, under the data
    /// directory). Default: none, and the store cannot send or take snapshots;
    /// the node sets `<data-dir>/snap`.
    pub snap_dir: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Config {
            raft_tick_interval: Duration::from_millis(100),
            raft_election_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_max_size_per_msg: 1 << 20,
            raft_entry_max_size: 8 << 20,
            raft_max_inflight_msgs: 32,
            entry_cache_limit: 1024,
            entry_cache_max_bytes: 4 << 20,
            entry_cache_store_max_bytes: 256 << 20,
            pollers: cores.clamp(1, 4),
            max_batch_size: 256,
            apply_workers: 1,
            max_pending_proposals: 4096,
            raft_max_uncommitted_size: 128 << 20,
            raft_skip_bcast_commit: true,
            dormant_regions: true,
            dormant_wake_rate: 3000,
            raft_merge_writes: true,
            read_pool_threads: 2,
            read_pool_queue: 1024,
            region_max_size: 96 << 20,
            region_max_keys: 960_000,
            split_check_interval: Duration::from_secs(10),
            raft_log_gc_tick_interval: Duration::from_secs(10),
            raft_log_gc_threshold: 50,
            raft_log_gc_count_limit: 72 << 10,
            raft_log_gc_size_limit: 72 << 20,
            raft_stale_peer_check_interval: Duration::from_secs(300),
            snap_dir: None,
        }
    }
}

impl Config {
    /// The split check period in raft ticks.
    pub(crate) fn split_check_ticks(&self) -> u32 {
        let ticks =
            self.split_check_interval.as_millis() / self.raft_tick_interval.as_millis().max(1);
        ticks.clamp(1, u32::MAX as u128) as u32
    }

    /// How long a store may stay silent before the dormant regions it leads are
    /// woken elsewhere: an election timeout.
    pub(crate) fn liveness_timeout(&self) -> std::time::Duration {
        self.raft_tick_interval * self.raft_election_ticks as u32
    }

    /// Dormant peers woken per liveness round (`dormant_wake_rate` per second).
    pub(crate) fn wakes_per_round(&self) -> usize {
        let round = self.raft_tick_interval * self.raft_heartbeat_ticks.max(1) as u32;
        ((self.dormant_wake_rate as f64 * round.as_secs_f64()).ceil() as usize).max(1)
    }

    /// The stale-peer check's period in raft ticks.
    pub(crate) fn stale_peer_check_ticks(&self) -> u32 {
        let ticks = self.raft_stale_peer_check_interval.as_millis()
            / self.raft_tick_interval.as_millis().max(1);
        ticks.clamp(1, u32::MAX as u128) as u32
    }

    /// The log GC period in raft ticks.
    pub(crate) fn raft_log_gc_ticks(&self) -> u32 {
        let ticks =
            self.raft_log_gc_tick_interval.as_millis() / self.raft_tick_interval.as_millis().max(1);
        ticks.clamp(1, u32::MAX as u128) as u32
    }

    /// The raft-rs settings of peer `id`, resuming after `applied`.
    pub(crate) fn raft_config(&self, id: u64, applied: u64) -> raft::Config {
        raft::Config {
            id,
            election_tick: self.raft_election_ticks,
            heartbeat_tick: self.raft_heartbeat_ticks,
            applied,
            max_size_per_msg: self.raft_max_size_per_msg,
            max_inflight_msgs: self.raft_max_inflight_msgs,
            max_uncommitted_size: self.raft_max_uncommitted_size,
            skip_bcast_commit: self.raft_skip_bcast_commit,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        }
    }

    /// Checks every bound, saying exactly which field is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tick = self.raft_tick_interval;
        if tick < Duration::from_millis(1) || tick > Duration::from_secs(10) {
            return Err(ConfigError(format!(
                "raft-tick-interval must be 1ms..=10s, got {tick:?}"
            )));
        }
        if self.raft_heartbeat_ticks == 0 {
            return Err(ConfigError(
                "raft-heartbeat-ticks must be at least 1".into(),
            ));
        }
        if self.raft_election_ticks <= self.raft_heartbeat_ticks {
            return Err(ConfigError(format!(
                "raft-election-ticks ({}) must exceed raft-heartbeat-ticks ({})",
                self.raft_election_ticks, self.raft_heartbeat_ticks
            )));
        }
        if self.dormant_wake_rate == 0 {
            return Err(ConfigError(
                "dormant-wake-rate must be at least 1 (regions per second)".into(),
            ));
        }
        if self.region_max_size == 0 || self.region_max_keys == 0 {
            return Err(ConfigError(
                "region-max-size and region-max-keys must be at least 1".into(),
            ));
        }
        if self.split_check_interval < tick {
            return Err(ConfigError(format!(
                "split-check-interval ({:?}) must be at least one raft tick ({tick:?})",
                self.split_check_interval
            )));
        }
        if self.raft_log_gc_tick_interval < tick {
            return Err(ConfigError(format!(
                "raft-log-gc-tick-interval ({:?}) must be at least one raft tick ({tick:?})",
                self.raft_log_gc_tick_interval
            )));
        }
        let election = tick * self.raft_election_ticks as u32;
        if self.raft_stale_peer_check_interval < election * 2 {
            return Err(ConfigError(format!(
                "raft-stale-peer-check-interval ({:?}) must be at least two election \
                 timeouts ({:?})",
                self.raft_stale_peer_check_interval,
                election * 2
            )));
        }
        if self.raft_log_gc_threshold == 0 {
            return Err(ConfigError(
                "raft-log-gc-threshold must be at least 1".into(),
            ));
        }
        if self.raft_log_gc_count_limit < self.raft_log_gc_threshold {
            return Err(ConfigError(format!(
                "raft-log-gc-count-limit ({}) must be at least raft-log-gc-threshold ({})",
                self.raft_log_gc_count_limit, self.raft_log_gc_threshold
            )));
        }
        if self.raft_log_gc_size_limit == 0 {
            return Err(ConfigError(
                "raft-log-gc-size-limit must be at least 1".into(),
            ));
        }
        if self.raft_max_size_per_msg < 1024 {
            return Err(ConfigError(
                "raft-max-size-per-msg must be at least 1024 bytes".into(),
            ));
        }
        if !(64 << 10..=256 << 20).contains(&self.raft_entry_max_size) {
            return Err(ConfigError(format!(
                "raft-entry-max-size must be 65536..=268435456 bytes, got {}",
                self.raft_entry_max_size
            )));
        }
        if self.raft_max_size_per_msg > self.raft_entry_max_size {
            return Err(ConfigError(format!(
                "raft-max-size-per-msg ({}) must not exceed raft-entry-max-size ({})",
                self.raft_max_size_per_msg, self.raft_entry_max_size
            )));
        }
        if self.raft_max_uncommitted_size < self.raft_entry_max_size {
            return Err(ConfigError(format!(
                "raft-max-uncommitted-size ({}) must be at least raft-entry-max-size ({})",
                self.raft_max_uncommitted_size, self.raft_entry_max_size
            )));
        }
        if self.apply_workers != 1 {
            return Err(ConfigError(format!(
                "apply-workers must be 1 (got {}): a merge applies the source and the \
                 target on one apply worker",
                self.apply_workers
            )));
        }
        for (name, v) in [
            ("raft-max-inflight-msgs", self.raft_max_inflight_msgs),
            ("pollers", self.pollers),
            ("max-batch-size", self.max_batch_size),
            ("apply-workers", self.apply_workers),
            ("max-pending-proposals", self.max_pending_proposals),
            ("read-pool-threads", self.read_pool_threads),
            ("read-pool-queue", self.read_pool_queue),
            ("entry-cache-limit", self.entry_cache_limit),
            ("entry-cache-max-bytes", self.entry_cache_max_bytes as usize),
            (
                "entry-cache-store-max-bytes",
                self.entry_cache_store_max_bytes as usize,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let bad = Config {
            raft_election_ticks: 2,
            ..Config::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("raft-election-ticks"));
        let bad = Config {
            pollers: 0,
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("pollers"));
        let bad = Config {
            apply_workers: 2,
            ..Config::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("apply-workers must be 1"));
        // Under two election timeouts (2 s by default) a check would run during
        // ordinary elections.
        let bad = Config {
            raft_stale_peer_check_interval: Duration::from_millis(1999),
            ..Config::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("raft-stale-peer-check-interval"));
    }
}
