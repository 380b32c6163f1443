//! Rate-limited log lines: a warning a fault can repeat thousands of times a
//! second (a message for a peer the store no longer knows, a store without an
//! address) is written at most once per interval per call site, with how many were
//! suppressed since, so that a fault cannot flood the log or the disk.
//!
//! ```ignore
//! shoal_raftstore::warn_limited!(region = id, "dropping a raft message: {why}");
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The interval of [`warn_limited!`](crate::warn_limited): one line per call site
/// per 10 s.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One call site's limit.
pub struct LogLimit {
    /// Milliseconds since [`epoch`] of the last line written, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogLimit {
    /// A limit that has let nothing through yet.
    pub const fn new() -> Self {
        LogLimit {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now (`interval` after the last one); if so,
    /// how many were suppressed since. Lock-free: of threads racing past the
    /// interval, one wins.
    pub fn check(&self, interval: Duration) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= interval.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!` at most once per [`INTERVAL`] per call site; the line carries
/// `suppressed`, how many were not written since the last one.
#[macro_export]
macro_rules! warn_limited {
    (target: $target:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit = $crate::log_limit::LogLimit::new();
        if let Some(suppressed) = LIMIT.check($crate::log_limit::INTERVAL) {
            tracing::warn!(target: $target, suppressed, $($arg)+);
        }
    }};
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit = $crate::log_limit::LogLimit::new();
        if let Some(suppressed) = LIMIT.check($crate::log_limit::INTERVAL) {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let limit = LogLimit::new();
        let interval = Duration::from_millis(200);
        assert_eq!(limit.check(interval), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.check(interval), None);
        }
        std::thread::sleep(interval + Duration::from_millis(20));
        assert_eq!(limit.check(interval), Some(1000));
        assert_eq!(limit.check(interval), None);
    }

    #[test]
    fn the_macro_writes_one_line_per_call_site() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                crate::warn_limited!(n = i, "a repeated warning");
            }
            crate::warn_limited!("another call site");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("a repeated warning").count(), 1, "{text}");
        assert!(text.contains("suppressed=0"), "{text}");
        assert_eq!(text.matches("another call site").count(), 1, "{text}");
    }
}
