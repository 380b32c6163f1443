//! Forwards raft-rs's slog records to `tracing`, so one subscriber sees everything,
//! each line naming its region and peer. raft-rs's warnings are rate-limited per
//! peer (`log_limit`): a stuck group can repeat one every tick, and one noisy group
//! must not hide the others.

use slog::{Drain, Level, OwnedKVList, Record};

struct TracingDrain {
    region: u64,
    peer: u64,
    warnings: crate::log_limit::LogLimit,
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _: &OwnedKVList) -> Result<(), slog::Never> {
        let msg = record.msg();
        let (region, peer) = (self.region, self.peer);
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft", region, peer, "{msg}")
            }
            Level::Warning => {
                if let Some(suppressed) = self.warnings.check(crate::log_limit::INTERVAL) {
                    tracing::warn!(target: "raft", region, peer, suppressed, "{msg}");
                }
            }
            Level::Info => tracing::debug!(target: "raft", region, peer, "{msg}"),
            Level::Debug | Level::Trace => tracing::trace!(target: "raft", region, peer, "{msg}"),
        }
        Ok(())
    }
}

/// The logger given to the `RawNode` of `peer` of `region`.
pub fn raft_logger(region: u64, peer: u64) -> slog::Logger {
    let drain = TracingDrain {
        region,
        peer,
        warnings: crate::log_limit::LogLimit::new(),
    };
    slog::Logger::root(drain.fuse(), slog::o!())
}
