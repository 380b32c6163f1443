//! # shoal-router: the generic batch system
//!
//! Runs many small state machines (FSMs) on a few poller threads, in batches, so that the
//! work of all FSMs handled in one round can be done once (one log write, one fsync).
//! It knows nothing about Raft: `shoal-raftstore` plugs its peer and store FSMs in, and the
//! benchmarks use a toy FSM.
//!
//! ## Layout
//!
//! - `fsm.rs`: the [`Fsm`] trait and [`FsmState`] (idle / notified / closed), with the
//!   state diagram.
//! - `mailbox.rs`: [`Mailbox`], one per FSM: a queue, the FSM itself while idle, and the
//!   state. Why a send to an idle FSM schedules it exactly once and no wake-up is lost.
//! - `router.rs`: [`Router`], id -> mailbox (a `DashMap`) plus the one control FSM.
//!   [`SendError`] hands undeliverable messages back.
//! - `batch.rs`: [`BatchSystem`] and its poller threads, the [`PollHandler`] hooks
//!   (`begin`, `handle_control`, `handle_normal`, `end`), [`HandlerBuilder`], fairness
//!   and shutdown.
//! - `config.rs`: [`Config`] (pollers, batch size, per-round message quota) and
//!   `validate()`.
//! - `ticker.rs`: [`Ticker`], one timer wheel for the whole store; FSMs register tick kinds
//!   instead of owning timers.
//! - `hash.rs`: the integer hasher of the router map and the ticker.
//!
//! ## Life of a message
//!
//! ```text
//! router.send(id, msg) ─► mailbox queue ─(idle -> notified: FSM goes in the poll queue)─►
//!   poller: begin ─► handle_control? ─► handle_normal × batch ─► end(batch) ─► release:
//!     mail left? back of the poll queue : idle in its mailbox
//! ```
//!
//! ## Using it
//!
//! ```
//! use shoal_router::{create_system, Config, Fsm, PollHandler};
//!
//! struct Counter { total: u64 }
//! impl Fsm for Counter { type Message = u64; }
//! struct Store;
//! impl Fsm for Store { type Message = (); }
//!
//! struct Handler { tx: crossbeam_channel::Sender<u64> }
//! impl PollHandler<Counter, Store> for Handler {
//!     fn handle_control(&mut self, _: &mut Store, _: &mut Vec<()>) {}
//!     fn handle_normal(&mut self, c: &mut Counter, msgs: &mut Vec<u64>) {
//!         for n in msgs.drain(..) {
//!             c.total += n;
//!         }
//!         self.tx.send(c.total).unwrap();
//!     }
//! }
//!
//! let cfg = Config { pollers: 1, ..Config::default() };
//! let (router, mut system) = create_system(&cfg, Box::new(Store)).unwrap();
//! let (tx, rx) = crossbeam_channel::unbounded();
//! system.spawn("shoal-poll", move |_| Handler { tx: tx.clone() }).unwrap();
//! router.register(1, Box::new(Counter { total: 0 })).unwrap();
//! router.send(1, 5).unwrap();
//! assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), 5);
//! assert!(router.send(2, 1).unwrap_err().is_not_found());
//! assert!(system.shutdown().is_empty());
//! ```
#![deny(missing_docs)]

mod batch;
mod config;
mod fsm;
mod hash;
mod mailbox;
mod router;
mod ticker;

pub use batch::{
    create_system, BatchSystem, HandlerBuilder, PollHandler, Round, RoundFsms, Undelivered,
};
pub use config::{Config, ConfigError, MAX_POLLERS};
pub use fsm::{Fsm, FsmState};
pub use mailbox::Mailbox;
pub use router::{RegisterError, Router, SendError, Target};
pub use ticker::{TickKind, Ticker, TickerThread, DEFAULT_WHEEL_SLOTS};
