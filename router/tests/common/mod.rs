//! A toy FSM and a recording poll handler shared by the integration tests.
//!
//! The handler reports what it does as [`Event`]s on a channel, and checks two
//! invariants as it goes, recording any breach in `violations`:
//! - an FSM is never handled by two pollers at once: from `handle_normal` until the
//!   `end` of that round it is marked busy, and finding it busy already is a breach;
//! - `end` sees exactly the FSMs handled in the round, in order.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use shoal_router::{
    create_system, BatchSystem, Config, Fsm, PollHandler, Round, RoundFsms, Router, Undelivered,
};

/// Every wait in the tests gives up (and fails) after this long.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ToyTick {
    Raft = 0,
    Gc = 1,
}

impl From<ToyTick> for u8 {
    fn from(t: ToyTick) -> u8 {
        t as u8
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    Data(u64),
    Tick(ToyTick),
    /// Stop the FSM (it is then unregistered by the poller).
    Stop,
    /// Block the poller until the router is closed (shutdown has begun).
    WaitClosed,
    /// Make the handler panic.
    Panic,
}

pub struct Toy {
    pub id: u64,
    pub stopped: bool,
}

impl Toy {
    pub fn new(id: u64) -> Box<Toy> {
        Box::new(Toy { id, stopped: false })
    }
}

impl Fsm for Toy {
    type Message = Msg;

    fn is_stopped(&self) -> bool {
        self.stopped
    }
}

#[derive(Debug)]
pub enum StoreMsg {
    Ping(u64),
    /// Create FSM `id` and deliver `msg` to it (the create-on-demand path).
    Create {
        id: u64,
        msg: Msg,
    },
}

pub struct Store;

impl Fsm for Store {
    type Message = StoreMsg;
}

pub type ToyRouter = Router<Toy, Store>;

#[derive(Debug)]
pub enum Event {
    Begin(Round),
    Normal {
        poller: usize,
        round: u64,
        id: u64,
        data: Vec<u64>,
        ticks: Vec<ToyTick>,
        thread: String,
    },
    Control {
        pings: Vec<u64>,
    },
    End {
        poller: usize,
        round: u64,
        ids: Vec<u64>,
    },
}

pub struct Recorder {
    poller: usize,
    round: u64,
    router: ToyRouter,
    events: Sender<Event>,
    busy: Arc<Mutex<HashSet<u64>>>,
    violations: Arc<Mutex<Vec<String>>>,
    handled: Vec<u64>,
}

impl Recorder {
    fn violation(&self, what: String) {
        self.violations.lock().push(what);
    }
}

impl PollHandler<Toy, Store> for Recorder {
    fn begin(&mut self, round: &Round) {
        self.round = round.index;
        self.handled.clear();
        let _ = self.events.send(Event::Begin(*round));
    }

    fn handle_control(&mut self, _store: &mut Store, msgs: &mut Vec<StoreMsg>) {
        let mut pings = Vec::new();
        for m in msgs.drain(..) {
            match m {
                StoreMsg::Ping(n) => pings.push(n),
                StoreMsg::Create { id, msg } => {
                    if self.router.register(id, Toy::new(id)).is_err() {
                        self.violation(format!("could not create fsm {id}"));
                    }
                    if self.router.send(id, msg).is_err() {
                        self.violation(format!("could not deliver to new fsm {id}"));
                    }
                }
            }
        }
        let _ = self.events.send(Event::Control { pings });
    }

    fn handle_normal(&mut self, fsm: &mut Toy, msgs: &mut Vec<Msg>) {
        if !self.busy.lock().insert(fsm.id) {
            self.violation(format!("fsm {} handled by two pollers at once", fsm.id));
        }
        if self.handled.contains(&fsm.id) {
            self.violation(format!("fsm {} twice in one round", fsm.id));
        }
        self.handled.push(fsm.id);
        let mut data = Vec::new();
        let mut ticks = Vec::new();
        let mut wait_closed = false;
        let mut panic = false;
        for m in msgs.drain(..) {
            match m {
                Msg::Data(n) => data.push(n),
                Msg::Tick(t) => ticks.push(t),
                Msg::Stop => fsm.stopped = true,
                Msg::WaitClosed => wait_closed = true,
                Msg::Panic => panic = true,
            }
        }
        let _ = self.events.send(Event::Normal {
            poller: self.poller,
            round: self.round,
            id: fsm.id,
            data,
            ticks,
            thread: thread::current().name().unwrap_or("").to_owned(),
        });
        if wait_closed {
            let deadline = Instant::now() + TIMEOUT;
            while !self.router.is_closed() {
                if Instant::now() > deadline {
                    self.violation("router never closed".into());
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
        if panic {
            panic!("toy handler asked to panic");
        }
    }

    fn end(&mut self, normals: RoundFsms<'_, Toy>) {
        let ids: Vec<u64> = normals.iter().map(|f| f.id).collect();
        if ids != self.handled {
            self.violation(format!(
                "end saw {ids:?} but the round handled {:?}",
                self.handled
            ));
        }
        {
            let mut busy = self.busy.lock();
            for id in &ids {
                busy.remove(id);
            }
        }
        let _ = self.events.send(Event::End {
            poller: self.poller,
            round: self.round,
            ids,
        });
    }
}

pub struct Harness {
    pub router: ToyRouter,
    pub system: BatchSystem<Toy, Store>,
    pub events: Receiver<Event>,
    events_tx: Sender<Event>,
    pub violations: Arc<Mutex<Vec<String>>>,
    busy: Arc<Mutex<HashSet<u64>>>,
}

pub fn config(pollers: usize, max_batch_size: usize, messages_per_tick: usize) -> Config {
    Config {
        pollers,
        max_batch_size,
        messages_per_tick,
    }
}

impl Harness {
    /// A system with pollers not started yet.
    pub fn new(cfg: Config) -> Harness {
        let (router, system) = create_system(&cfg, Box::new(Store)).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        Harness {
            router,
            system,
            events: rx,
            events_tx: tx,
            violations: Arc::default(),
            busy: Arc::default(),
        }
    }

    pub fn started(cfg: Config) -> Harness {
        let mut h = Harness::new(cfg);
        h.spawn();
        h
    }

    pub fn spawn(&mut self) {
        let router = self.router.clone();
        let events = self.events_tx.clone();
        let busy = self.busy.clone();
        let violations = self.violations.clone();
        self.system
            .spawn("shoal-poll", move |poller| Recorder {
                poller,
                round: 0,
                router: router.clone(),
                events: events.clone(),
                busy: busy.clone(),
                violations: violations.clone(),
                handled: Vec::new(),
            })
            .unwrap();
    }

    pub fn register(&self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.router.register(id, Toy::new(id)).unwrap();
        }
    }

    pub fn next_event(&self) -> Event {
        self.events
            .recv_timeout(TIMEOUT)
            .expect("timed out waiting for the pollers")
    }

    /// Collects events until `n` data messages have been handled.
    pub fn wait_data(&self, n: usize) -> Vec<Event> {
        let mut seen = 0;
        let mut out = Vec::new();
        while seen < n {
            let e = self.next_event();
            if let Event::Normal { data, .. } = &e {
                seen += data.len();
            }
            out.push(e);
        }
        out
    }

    /// Waits for the next event matching `pred`, returning it.
    pub fn wait_for(&self, mut pred: impl FnMut(&Event) -> bool) -> Event {
        loop {
            let e = self.next_event();
            if pred(&e) {
                return e;
            }
        }
    }

    pub fn assert_no_violations(&self) {
        let v = self.violations.lock();
        assert!(
            v.is_empty(),
            "invariants broken: {:?}",
            &v[..v.len().min(10)]
        );
    }

    /// Shuts down (failing the test if that hangs) and returns the undelivered mail and
    /// every event left in the channel.
    pub fn shutdown(self) -> (Undelivered<Msg, StoreMsg>, Vec<Event>) {
        self.assert_no_violations();
        let Harness {
            mut system,
            events,
            events_tx,
            ..
        } = self;
        drop(events_tx);
        let undelivered = within(TIMEOUT, move || system.shutdown());
        (undelivered, events.try_iter().collect())
    }
}

/// Runs `f` on a thread and fails the test if it has not returned within `limit`.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("operation hung")
}

/// Data payloads per FSM, in handling order.
pub fn data_by_fsm(events: &[Event]) -> std::collections::BTreeMap<u64, Vec<u64>> {
    let mut out = std::collections::BTreeMap::<u64, Vec<u64>>::new();
    for e in events {
        if let Event::Normal { id, data, .. } = e {
            out.entry(*id).or_default().extend(data);
        }
    }
    out
}
