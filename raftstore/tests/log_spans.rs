//! Every raftstore log line that is about a region names its peer too, whichever
//! thread writes it: the poller, the apply worker, the snapshot, region and log GC
//! workers. A layer records, for each event, its thread, whether it or one of its
//! spans names a region, and whether one names a peer; a cluster then splits,
//! merges and catches a stopped follower up through a snapshot, which makes lines
//! on the poller, apply and snapshot threads.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{gc_config, key, Cluster};
use shoal_engine::LogEngine;
use shoal_raftstore::{Config, TickMode};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const T: Duration = Duration::from_secs(30);

/// Which of `region` and `peer` a set of fields names.
#[derive(Default, Clone, Copy)]
struct Names {
    region: bool,
    peer: bool,
}

impl Visit for Names {
    fn record_debug(&mut self, field: &Field, _: &dyn std::fmt::Debug) {
        match field.name() {
            "region" => self.region = true,
            "peer" => self.peer = true,
            _ => {}
        }
    }
}

/// One event seen: its thread, its message, what it and its spans name.
#[derive(Debug, Clone)]
#[allow(dead_code)] // `message` is read through `Debug`, in the failures' text
struct Line {
    thread: String,
    message: String,
    region: bool,
    peer: bool,
}

/// Records every event of the raftstore and of raft-rs.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Line>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut names = Names::default();
        attrs.record(&mut names);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(names);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if !target.starts_with("shoal_raftstore") && !target.starts_with("raft") {
            return;
        }
        let mut names = Names::default();
        event.record(&mut names);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(n) = span.extensions().get::<Names>() {
                    names.region |= n.region;
                    names.peer |= n.peer;
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push(Line {
            thread: std::thread::current().name().unwrap_or("?").to_string(),
            message: message.0,
            region: names.region,
            peer: names.peer,
        });
    }
}

#[test]
fn every_line_about_a_region_names_its_peer_on_every_thread() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(
        recorder
            .clone()
            .with_filter(tracing::level_filters::LevelFilter::INFO),
    );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let cfg = Config {
        raft_log_gc_count_limit: 100,
        ..gc_config()
    };
    let mut c = Cluster::start_with(3, 1, TickMode::Manual, cfg);
    let region = c.regions[0].id;
    let leader = c.wait_leader(region, T);
    // A split and a merge: apply writes "merge committed" on its thread.
    let halves = c.split(&key(500), T).unwrap();
    let (low, high) = (halves[0].id, halves[1].id);
    c.wait_leader(high, T);
    c.merge(high, low, T).unwrap();
    c.wait_cover(1, T);
    // A follower stopped past the log's count limit catches up from a snapshot:
    // the snapshot worker writes "generated a raft snapshot".
    let behind = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    c.put(&key(0), b"seen", T).unwrap();
    c.wait_local(behind, &key(0), b"seen", T);
    let last_seen = c.engines[&behind].log.last_index(low).unwrap().unwrap();
    c.stop_store(behind);
    for i in 1..400u32 {
        c.put(&key(i), b"v", T).unwrap();
    }
    let now_leader = c.wait_leader(low, T);
    c.tick_until(
        "the leader to truncate what the stopped store lacks",
        || c.first_index(now_leader, low) > last_seen + 1,
    );
    c.start_store(behind);
    c.tick_until("the snapshot to be applied", || {
        c.store(behind).metrics().snapshots_applied.get() >= 1
    });
    c.check_acked();

    let lines = recorder.0.lock().unwrap().clone();
    let unnamed: Vec<&Line> = lines.iter().filter(|l| l.region && !l.peer).collect();
    assert!(
        unnamed.is_empty(),
        "lines naming a region but no peer: {unnamed:#?}"
    );
    for thread in ["shoal-poll", "shoal-apply", "shoal-snap"] {
        let on: Vec<&Line> = lines
            .iter()
            .filter(|l| l.thread.starts_with(thread))
            .collect();
        assert!(!on.is_empty(), "no line from a {thread} thread: {lines:#?}");
        let bare: Vec<&&Line> = on.iter().filter(|l| !l.peer).collect();
        assert!(bare.is_empty(), "{thread} lines without a peer: {bare:#?}");
    }
}
