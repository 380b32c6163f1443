//! Store metrics: what the poll round, the log writer, the transport and apply did,
//! as Prometheus counters, gauges and histograms.
//!
//! Every metric is created once, when the store starts, and registered in the
//! store's [`Registry`] ([`StoreMetrics::registry`]), which carries the constant label
//! `store="ID"`. Updating one on the hot path is an atomic add: no lock, no
//! allocation, no label lookup (metrics with a label, such as the Raft messages by
//! type, are bound to each label value up front). The node adds its own metrics to
//! the same registry (requests, transport, process) and serves it at `/metrics`.
//!
//! The Admin API's `StoreCounters` are read from the same metrics
//! ([`StoreMetrics::counters`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus::{
    exponential_buckets, Counter, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry,
};
use raft::eraftpb::MessageType;
use shoal_proto::adminpb::StoreCounters;

/// Buckets of a duration histogram, in seconds: 50 us to about 26 s, doubling.
pub fn duration_buckets() -> Vec<f64> {
    exponential_buckets(0.000_05, 2.0, 20).expect("valid buckets")
}

/// Buckets of a count histogram (entries per fsync, messages per round): 1 to 8192.
pub fn count_buckets() -> Vec<f64> {
    exponential_buckets(1.0, 2.0, 14).expect("valid buckets")
}

/// The Raft message types, in raft-rs's numbering, with the label each is
/// counted under.
const MESSAGE_TYPES: [(MessageType, &str); 19] = [
    (MessageType::MsgHup, "hup"),
    (MessageType::MsgBeat, "beat"),
    (MessageType::MsgPropose, "propose"),
    (MessageType::MsgAppend, "append"),
    (MessageType::MsgAppendResponse, "append_response"),
    (MessageType::MsgRequestVote, "request_vote"),
    (MessageType::MsgRequestVoteResponse, "request_vote_response"),
    (MessageType::MsgSnapshot, "snapshot"),
    (MessageType::MsgHeartbeat, "heartbeat"),
    (MessageType::MsgHeartbeatResponse, "heartbeat_response"),
    (MessageType::MsgUnreachable, "unreachable"),
    (MessageType::MsgSnapStatus, "snap_status"),
    (MessageType::MsgCheckQuorum, "check_quorum"),
    (MessageType::MsgTransferLeader, "transfer_leader"),
    (MessageType::MsgTimeoutNow, "timeout_now"),
    (MessageType::MsgReadIndex, "read_index"),
    (MessageType::MsgReadIndexResp, "read_index_response"),
    (MessageType::MsgRequestPreVote, "request_pre_vote"),
    (
        MessageType::MsgRequestPreVoteResponse,
        "request_pre_vote_response",
    ),
];

/// One counter per Raft message type, bound up front.
#[derive(Debug)]
pub struct ByMessageType {
    counters: Vec<IntCounter>,
}

impl ByMessageType {
    fn new(vec: &IntCounterVec) -> Self {
        let counters = MESSAGE_TYPES
            .iter()
            .map(|(_, name)| vec.with_label_values(&[name]))
            .collect();
        ByMessageType { counters }
    }

    /// Counts one message of type `t`.
    pub fn inc(&self, t: MessageType) {
        if let Some(c) = self.counters.get(t as usize) {
            c.inc();
        }
    }

    /// All types together.
    pub fn total(&self) -> u64 {
        self.counters.iter().map(IntCounter::get).sum()
    }
}

/// Metrics shared by every thread of one store.
#[derive(Debug)]
pub struct StoreMetrics {
    registry: Registry,
    /// Synced log writes.
    pub fsyncs: IntCounter,
    /// How long each synced log write took, fsync included.
    pub log_write_seconds: Histogram,
    /// Regions written by each fsync.
    pub regions_per_fsync: Histogram,
    /// Log entries written by each fsync.
    pub entries_per_fsync: Histogram,
    /// Raft messages handed to the transport, by type.
    pub raft_messages_sent: ByMessageType,
    /// Raft messages stepped into raft-rs, by type.
    pub raft_messages_received: ByMessageType,
    /// Batches handed to the transport (one per remote store per round).
    pub transport_batches_sent: IntCounter,
    /// Encoded bytes of the Raft messages handed to the transport (what goes on the
    /// wire, before gRPC's framing).
    pub raft_message_bytes_sent: IntCounter,
    /// Raft messages dropped before raft-rs: not addressed to this store or peer, or
    /// from a peer the region does not have.
    pub raft_messages_refused: IntCounter,
    /// Raft messages refused unparsed: their bytes hold what the `eraftpb` schema
    /// does not allow (`raft/wire.rs`).
    pub raft_messages_malformed: IntCounter,
    /// Commands proposed to Raft.
    pub proposals: IntCounter,
    /// Writes proposed in another write's entry (`raft_merge_writes`): a proposal
    /// of N merged writes adds N - 1.
    pub writes_merged: IntCounter,
    /// From a proposal to its entry's commit, at the leader.
    pub propose_commit_seconds: Histogram,
    /// From committed entries handed to apply to their kv write done.
    pub commit_apply_seconds: Histogram,
    /// How long one apply batch took (apply, kv write, answers).
    pub apply_batch_seconds: Histogram,
    /// Entries applied to the kv engine.
    pub applied_entries: IntCounter,
    /// Synced kv writes of apply batches holding an admin command (split, merge).
    pub admin_kv_syncs: IntCounter,
    /// Reads answered.
    pub reads_served: IntCounter,
    /// How long a poll round took (its messages handled, its work handed on).
    pub poll_round_seconds: Histogram,
    /// Messages a poll round handled.
    pub poll_round_messages: Histogram,
    /// Writes proposed and waiting for their entry to commit, over every region of
    /// the store.
    pub pending_writes: IntGauge,
    /// Write tasks queued for the log writer.
    pub log_writer_queue: IntGauge,
    /// Batches queued for the apply workers.
    pub apply_queue: IntGauge,
    /// Raft log entries deleted by log GC.
    pub log_entries_truncated: IntCounter,
    /// Compactions of the log engine that gave truncated entries' space back.
    pub log_reclaims: IntCounter,
    /// Raft snapshots generated, their bytes, and the time generating took.
    pub snapshots_generated: IntCounter,
    pub snapshot_generated_bytes: IntCounter,
    pub snapshot_generate_seconds: Counter,
    /// Raft snapshots sent to other stores, their bytes and sending time.
    pub snapshots_sent: IntCounter,
    pub snapshot_sent_bytes: IntCounter,
    pub snapshot_send_seconds: Counter,
    /// Raft snapshots received whole (checked and kept), their bytes and the time
    /// receiving took.
    pub snapshots_received: IntCounter,
    pub snapshot_received_bytes: IntCounter,
    pub snapshot_receive_seconds: Counter,
    /// Raft snapshots applied, and the time applying took.
    pub snapshots_applied: IntCounter,
    pub snapshot_apply_seconds: Counter,
    /// Snapshots that failed to generate, send, receive or apply.
    pub snapshot_failures: IntCounter,
    /// Snapshots refused once received: a file holds keys outside the
    /// snapshot's region (`snapshot/recv.rs`).
    pub snapshots_out_of_region: IntCounter,
    /// Snapshot receives cut because no chunk came for too long or the whole
    /// took too long (the server's Raft service).
    pub snapshot_receive_timeouts: IntCounter,
    /// A region's bytes of keys and values at each split check (leaders check
    /// their regions periodically; counted up to just past the split limit).
    pub region_check_bytes: Histogram,
    /// ... and its keys.
    pub region_check_keys: Histogram,
    /// Peers on this store.
    pub region_count: IntGauge,
    /// Peers on this store that lead their region.
    pub leader_count: IntGauge,
    /// Peers on this store whose region is dormant (`operation/dormancy.rs`).
    pub dormant_regions: IntGauge,
    /// Dormant peers here waiting on another store's liveness.
    pub liveness_watched: IntGauge,
    /// Store liveness heartbeats sent and received.
    pub store_heartbeats_sent: IntCounter,
    pub store_heartbeats_received: IntCounter,
    /// Dormant peers woken because the store leading them went silent.
    pub liveness_wakes: IntCounter,
    /// Dormant peers queued to wake at the paced rate (start-up, a silent store).
    pub wake_queue: IntGauge,
    /// Mirror of `disk_full` for the exposition: 1 or 0.
    disk_full_gauge: IntGauge,
    /// A write found the disk full: proposals are refused until a write succeeds
    /// again (the log writer and apply retry theirs, losing nothing).
    pub disk_full: AtomicBool,
}

/// Builds and registers the metrics of one store.
struct Builder<'a> {
    registry: &'a Registry,
}

impl Builder<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn seconds(&self, name: &str, help: &str) -> Counter {
        self.register(Counter::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.register(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn by_type(&self, name: &str, help: &str) -> ByMessageType {
        let vec = IntCounterVec::new(Opts::new(name, help), &["type"]).expect("valid metric");
        ByMessageType::new(&self.register(vec))
    }
}

impl Default for StoreMetrics {
    /// The metrics of a store with no id yet (`store="0"`: tests).
    fn default() -> Self {
        StoreMetrics::new(0)
    }
}

impl StoreMetrics {
    /// The metrics of store `store_id`, registered in a registry of their own.
    pub fn new(store_id: u64) -> StoreMetrics {
        let labels = HashMap::from([("store".to_string(), store_id.to_string())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("valid labels");
        let b = Builder {
            registry: &registry,
        };
        let d = duration_buckets;
        let n = count_buckets;
        StoreMetrics {
            fsyncs: b.counter("shoal_fsyncs_total", "Synced log engine writes."),
            log_write_seconds: b.histogram(
                "shoal_log_write_seconds",
                "Duration of a synced log engine write, fsync included.",
                d(),
            ),
            regions_per_fsync: b.histogram(
                "shoal_log_regions_per_fsync",
                "Regions whose log entries or state one fsync wrote.",
                n(),
            ),
            entries_per_fsync: b.histogram(
                "shoal_log_entries_per_fsync",
                "Log entries one fsync wrote.",
                n(),
            ),
            raft_messages_sent: b.by_type(
                "shoal_raft_messages_sent_total",
                "Raft messages handed to the transport, by type.",
            ),
            raft_messages_received: b.by_type(
                "shoal_raft_messages_received_total",
                "Raft messages from other stores stepped into Raft, by type.",
            ),
            transport_batches_sent: b.counter(
                "shoal_transport_batches_sent_total",
                "Transport batches (one per remote store per round).",
            ),
            raft_message_bytes_sent: b.counter(
                "shoal_raft_message_sent_bytes_total",
                "Encoded bytes of the Raft messages sent to other stores.",
            ),
            raft_messages_refused: b.counter(
                "shoal_raft_messages_refused_total",
                "Raft messages dropped before Raft: misaddressed, or from a peer the \
                 region does not have.",
            ),
            raft_messages_malformed: b.counter(
                "shoal_raft_messages_malformed_total",
                "Raft messages (and snapshots) refused unparsed: their bytes hold what the \
                 eraftpb schema does not allow (a group, a malformed varint or length, a \
                 field of the wrong wire type).",
            ),
            proposals: b.counter("shoal_proposals_total", "Commands proposed to Raft."),
            writes_merged: b.counter(
                "shoal_writes_merged_total",
                "Writes proposed in another write's Raft entry (N merged writes count N - 1).",
            ),
            propose_commit_seconds: b.histogram(
                "shoal_raft_propose_commit_seconds",
                "From a proposal to its entry's commit, at the leader.",
                d(),
            ),
            commit_apply_seconds: b.histogram(
                "shoal_raft_commit_apply_seconds",
                "From committed entries handed to apply to their kv write done.",
                d(),
            ),
            apply_batch_seconds: b.histogram(
                "shoal_apply_batch_seconds",
                "Duration of one apply batch: entries applied, kv write, answers.",
                d(),
            ),
            applied_entries: b.counter("shoal_applied_entries_total", "Log entries applied."),
            admin_kv_syncs: b.counter(
                "shoal_apply_admin_syncs_total",
                "Synced kv writes of apply batches holding an admin command.",
            ),
            reads_served: b.counter("shoal_reads_served_total", "Linearizable reads answered."),
            poll_round_seconds: b.histogram(
                "shoal_poll_round_seconds",
                "Duration of a poll round of the batch system.",
                d(),
            ),
            poll_round_messages: b.histogram(
                "shoal_poll_round_messages",
                "Messages one poll round handled.",
                n(),
            ),
            pending_writes: b.gauge(
                "shoal_pending_writes",
                "Writes proposed and not yet committed, over the store's regions.",
            ),
            log_writer_queue: b.gauge(
                "shoal_log_writer_queue",
                "Write tasks queued for the log writer.",
            ),
            apply_queue: b.gauge(
                "shoal_apply_queue",
                "Batches of apply tasks queued for the apply workers.",
            ),
            log_entries_truncated: b.counter(
                "shoal_log_entries_truncated_total",
                "Raft log entries deleted by log GC.",
            ),
            log_reclaims: b.counter(
                "shoal_log_reclaims_total",
                "Compactions of the log engine that gave truncated entries' space back.",
            ),
            snapshots_generated: b.counter(
                "shoal_snapshots_generated_total",
                "Raft snapshots generated (as a leader).",
            ),
            snapshot_generated_bytes: b.counter(
                "shoal_snapshot_generated_bytes_total",
                "Bytes of the Raft snapshots generated.",
            ),
            snapshot_generate_seconds: b.seconds(
                "shoal_snapshot_generate_seconds_total",
                "Time spent generating Raft snapshots.",
            ),
            snapshots_sent: b.counter(
                "shoal_snapshots_sent_total",
                "Raft snapshots sent to other stores.",
            ),
            snapshot_sent_bytes: b.counter(
                "shoal_snapshot_sent_bytes_total",
                "Bytes of the Raft snapshots sent.",
            ),
            snapshot_send_seconds: b.seconds(
                "shoal_snapshot_send_seconds_total",
                "Time spent sending Raft snapshots.",
            ),
            snapshots_received: b.counter(
                "shoal_snapshots_received_total",
                "Raft snapshots received whole and checked.",
            ),
            snapshot_received_bytes: b.counter(
                "shoal_snapshot_received_bytes_total",
                "Bytes of the Raft snapshots received.",
            ),
            snapshot_receive_seconds: b.seconds(
                "shoal_snapshot_receive_seconds_total",
                "Time spent receiving Raft snapshots.",
            ),
            snapshots_applied: b.counter(
                "shoal_snapshots_applied_total",
                "Raft snapshots applied (as a follower).",
            ),
            snapshot_apply_seconds: b.seconds(
                "shoal_snapshot_apply_seconds_total",
                "Time spent applying Raft snapshots.",
            ),
            snapshot_failures: b.counter(
                "shoal_snapshot_failures_total",
                "Raft snapshots that failed to generate, send, receive or apply.",
            ),
            snapshots_out_of_region: b.counter(
                "shoal_snapshots_out_of_region_total",
                "Raft snapshots refused once received: a file holds keys outside the \
                 snapshot's region.",
            ),
            snapshot_receive_timeouts: b.counter(
                "shoal_snapshot_receive_timeouts_total",
                "Raft snapshot receives cut: no chunk for too long, or the whole took \
                 too long.",
            ),
            region_check_bytes: b.histogram(
                "shoal_region_size_bytes",
                "Bytes of keys and values of a region at each split check by its leader.",
                exponential_buckets(1024.0, 4.0, 12).expect("valid buckets"),
            ),
            region_check_keys: b.histogram(
                "shoal_region_keys",
                "Keys of a region at each split check by its leader.",
                exponential_buckets(1.0, 4.0, 14).expect("valid buckets"),
            ),
            region_count: b.gauge("shoal_regions", "Peers on this store."),
            leader_count: b.gauge("shoal_leaders", "Peers on this store leading their region."),
            dormant_regions: b.gauge(
                "shoal_dormant_regions",
                "Peers on this store whose region is dormant (no ticks, no heartbeats).",
            ),
            liveness_watched: b.gauge(
                "shoal_liveness_watched_regions",
                "Dormant followers here waiting on their leader's store's liveness.",
            ),
            store_heartbeats_sent: b.counter(
                "shoal_store_heartbeats_sent_total",
                "Store liveness heartbeats sent to other stores.",
            ),
            store_heartbeats_received: b.counter(
                "shoal_store_heartbeats_received_total",
                "Store liveness heartbeats received from other stores.",
            ),
            wake_queue: b.gauge(
                "shoal_wake_queue",
                "Dormant peers waiting to be woken at the paced rate (start-up, a silent store's regions).",
            ),
            liveness_wakes: b.counter(
                "shoal_liveness_wakes_total",
                "Dormant peers woken because the store leading their region went silent or restarted.",
            ),
            disk_full_gauge: b.gauge(
                "shoal_disk_full",
                "Whether the disk is full (writes refused, reads served): 1 or 0.",
            ),
            disk_full: AtomicBool::new(false),
            registry,
        }
    }

    /// The registry holding every metric of this store (the node adds its own).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Marks the disk full or not; returns whether it was.
    fn set_disk_full(&self, full: bool) -> bool {
        self.disk_full_gauge.set(i64::from(full));
        self.disk_full.swap(full, Ordering::AcqRel)
    }

    /// Runs `write` until it does not fail for a full disk: while it does, the
    /// store is marked disk-full (proposals are refused) and the write is tried
    /// again, 50 ms to 1 s apart, until space returns. `what` names it in the logs.
    /// Any other outcome is returned.
    pub(crate) fn retry_while_disk_full<T>(
        &self,
        what: &str,
        mut write: impl FnMut() -> shoal_engine::Result<T>,
    ) -> shoal_engine::Result<T> {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match write() {
                Err(shoal_engine::Error::NoSpace(e)) => {
                    if !self.set_disk_full(true) {
                        tracing::error!(
                            "{what}: the disk is full ({e}); refusing writes until space returns"
                        );
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                other => {
                    if other.is_ok()
                        && self.disk_full.load(Ordering::Acquire)
                        && self.set_disk_full(false)
                    {
                        tracing::warn!("{what}: the disk has space again; taking writes");
                    }
                    return other;
                }
            }
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &IntCounter, n: u64) {
        counter.inc_by(n);
    }

    /// Adds the time since `since` to a seconds counter; returns it in milliseconds.
    pub fn add_elapsed(counter: &Counter, since: Instant) -> u64 {
        let d = since.elapsed();
        counter.inc_by(d.as_secs_f64());
        d.as_millis() as u64
    }

    /// A snapshot of the counters, as the Admin API reports them.
    pub fn counters(&self) -> StoreCounters {
        let millis = |c: &Counter| (c.get() * 1000.0) as u64;
        let gauge = |g: &IntGauge| g.get().max(0) as u64;
        StoreCounters {
            fsyncs: self.fsyncs.get(),
            regions_per_fsync_sum: self.regions_per_fsync.get_sample_sum() as u64,
            entries_per_fsync_sum: self.entries_per_fsync.get_sample_sum() as u64,
            raft_messages_sent: self.raft_messages_sent.total(),
            transport_batches_sent: self.transport_batches_sent.get(),
            raft_message_bytes_sent: self.raft_message_bytes_sent.get(),
            proposals: self.proposals.get(),
            writes_merged: self.writes_merged.get(),
            applied_entries: self.applied_entries.get(),
            reads_served: self.reads_served.get(),
            region_count: gauge(&self.region_count),
            leader_count: gauge(&self.leader_count),
            dormant_regions: gauge(&self.dormant_regions),
            store_heartbeats_sent: self.store_heartbeats_sent.get(),
            store_heartbeats_received: self.store_heartbeats_received.get(),
            log_entries_truncated: self.log_entries_truncated.get(),
            log_reclaims: self.log_reclaims.get(),
            snapshots_generated: self.snapshots_generated.get(),
            snapshot_generated_bytes: self.snapshot_generated_bytes.get(),
            snapshot_generate_millis: millis(&self.snapshot_generate_seconds),
            snapshots_sent: self.snapshots_sent.get(),
            snapshot_sent_bytes: self.snapshot_sent_bytes.get(),
            snapshot_send_millis: millis(&self.snapshot_send_seconds),
            snapshots_received: self.snapshots_received.get(),
            snapshot_received_bytes: self.snapshot_received_bytes.get(),
            snapshot_receive_millis: millis(&self.snapshot_receive_seconds),
            snapshots_applied: self.snapshots_applied.get(),
            snapshot_apply_millis: millis(&self.snapshot_apply_seconds),
            snapshot_failures: self.snapshot_failures.get(),
            // Filled in by the store, which has the log engine and the caches.
            log_engine_disk_bytes: 0,
            entry_cache_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_type_has_its_own_counter() {
        let m = StoreMetrics::new(7);
        for (i, (t, _)) in MESSAGE_TYPES.iter().enumerate() {
            assert_eq!(*t as usize, i, "MESSAGE_TYPES follows raft-rs's numbering");
        }
        m.raft_messages_sent.inc(MessageType::MsgAppend);
        m.raft_messages_sent.inc(MessageType::MsgAppend);
        m.raft_messages_sent.inc(MessageType::MsgHeartbeat);
        assert_eq!(m.counters().raft_messages_sent, 3);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry().gather())
            .unwrap();
        let value = |t: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("shoal_raft_messages_sent_total{")
                        && l.contains(&format!("type=\"{t}\""))
                        && l.contains("store=\"7\"")
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(String::from)
        };
        assert_eq!(value("append").as_deref(), Some("2"), "{text}");
        assert_eq!(value("heartbeat").as_deref(), Some("1"), "{text}");
        assert_eq!(value("snapshot").as_deref(), Some("0"), "{text}");
    }

    #[test]
    fn fsync_sums_come_from_the_histograms() {
        let m = StoreMetrics::new(1);
        m.regions_per_fsync.observe(3.0);
        m.regions_per_fsync.observe(5.0);
        m.entries_per_fsync.observe(40.0);
        let c = m.counters();
        assert_eq!((c.regions_per_fsync_sum, c.entries_per_fsync_sum), (8, 40));
    }
}
