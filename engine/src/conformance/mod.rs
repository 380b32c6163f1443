//! The conformance suite: the behaviour every [`LogEngine`] and [`KvEngine`]
//! implementation must show. An implementation runs all of it with one line:
//!
//! ```text
//! shoal_engine::engine_conformance!(MyHarness);
//! ```
//!
//! which expands to one `#[test]` per case, each calling a function of [`log`] or
//! [`kv`] with a fresh temporary directory.

pub mod kv;
pub mod log;

use std::path::Path;

use crate::{KvEngine, LogEngine};

/// How the suite opens an implementation. Opening the same directory again after
/// the previous instance was dropped must see what that instance wrote.
pub trait Harness {
    /// The log engine under test.
    type Log: LogEngine;
    /// The kv engine under test.
    type Kv: KvEngine;
    /// Opens the log engine stored in `dir`.
    fn open_log(dir: &Path) -> Self::Log;
    /// Opens the kv engine stored in `dir`.
    fn open_kv(dir: &Path) -> Self::Kv;
}

/// A fresh temporary directory for one case.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shoal-conformance-")
        .tempdir()
        .expect("create a temp dir")
}

/// Expands to one `#[test]` per conformance case for the given [`Harness`].
#[macro_export]
macro_rules! engine_conformance {
    ($harness:ty) => {
        $crate::engine_conformance!(@cases $harness, log:
            entries_and_state_survive_reopen,
            batch_of_many_regions_is_one_sync,
            conflicting_append_replaces_the_tail,
            append_refuses_a_hole,
            writes_in_one_batch_apply_in_order,
            fetch_respects_the_byte_limit,
            compaction_and_fetch_across_the_boundary,
            remove_region_forgets_everything,
            regions_are_listed_after_reopen,
            out_of_range_fetch_is_unavailable,
            concurrent_readers_see_monotonic_bounds,
            a_replacing_write_starts_the_log_afresh
        );
        $crate::engine_conformance!(@cases $harness, kv:
            empty_and_large_values,
            scan_order_and_limits,
            batch_is_atomic_across_column_families,
            delete_range_removes_only_the_range,
            snapshot_isolation,
            sst_ingest,
            exported_ssts_carry_a_range_as_of_a_snapshot,
            sst_key_bounds_leave_engine_and_files_as_they_were,
            synced_writes_survive_reopen
        );
    };
    (@cases $harness:ty, $module:ident: $($case:ident),+) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$module::$case::<$harness>();
            }
        )+
    };
}
