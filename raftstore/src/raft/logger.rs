//! Forwards raft-rs's slog records to `tracing`, so one subscriber sees everything,
//! each line naming its region and peer. raft-rs's warnings are rate-limited
//! (`log_limit`): a stuck group can repeat one every tick.

use slog::{Drain, Level, OwnedKVList, Record};

struct TracingDrain {
    region: u64,
    peer: u64,
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
            Level::Warning => crate::warn_limited!(target: "raft", region, peer, "{msg}"),
            Level::Info => tracing::debug!(target: "raft", region, peer, "{msg}"),
            Level::Debug | Level::Trace => tracing::trace!(target: "raft", region, peer, "{msg}"),
        }
        Ok(())
    }
}

/// The logger given to the `RawNode` of `peer` of `region`.
pub fn raft_logger(region: u64, peer: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain { region, peer }.fuse(), slog::o!())
}
