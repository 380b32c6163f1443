//! Shoal's Rust client (not implemented yet): it will connect to a cluster's
//! endpoints, cache the region map, send each request to the leader of the key's
//! region, and refresh and retry on `NotLeader` / `EpochNotMatch` within a deadline.
