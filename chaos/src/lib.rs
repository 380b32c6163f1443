//! `shoal chaos`: a Jepsen-style suite. It starts a cluster of real `shoal node`
//! processes, runs a workload of client processes while a nemesis injects faults,
//! heals, and checks the history and the cluster.
//!
//! - [`history`]: the JSON-lines history format.
//! - [`linearizability`]: the register checker (Wing–Gong search with Lowe's cache).
//! - [`set_check`]: the set workload's check (no acknowledged write lost, no
//!   phantom, no failed write present).

pub mod history;
pub mod linearizability;
pub mod set_check;
