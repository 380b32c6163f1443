//! `shoal chaos`: a Jepsen-style suite. It starts a cluster of real `shoal node`
//! processes, runs a workload of client processes while a nemesis injects faults,
//! heals, and checks the history and the cluster.
//!
//! - [`cli`]: the `shoal chaos` command and its settings;
//! - [`run`]: one run: start, load and faults, heal, check, summary;
//! - [`cluster`]: the node processes; [`proxy`]: the TCP proxies of the links
//!   between them (network faults without root);
//! - [`nemesis`]: the faults; [`workload`]: the client processes and the history
//!   they record ([`history`]: its JSON-lines format);
//! - [`linearizability`], [`set_check`], [`checks`]: the checks.

pub mod checks;
pub mod cli;
pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod proxy;
pub mod run;
pub mod set_check;
pub mod workload;
