//! Shoal's raftstore (not implemented yet): peer and store state machines on
//! raft-rs `RawNode`, the poll round, the log writer that turns many regions'
//! writes into one fsync, apply, reads, split/merge, conf change, snapshots, log GC.
