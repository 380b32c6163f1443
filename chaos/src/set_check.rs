//! The set workload's check: after the run, a scan of the whole key space must
//! find every key whose write was acknowledged, and nothing else.
//!
//! Input:
//! - the history events of the set keys: `put`s only, each key invoked at most
//!   once. A BatchWrite is recorded as one put per key, its invokes one after the
//!   other and then its completions, so a process may have several puts open at
//!   once: invokes and completions are paired by key (and must be of the same
//!   process);
//! - the keys the final scan found, as raw bytes (not hex), restricted by the
//!   caller to the set workload's keys (any other key found would count as a
//!   phantom).
//!
//! For each key:
//! - written `ok`: it must be in the scan, or the write was *lost*;
//! - written `fail`: it must not be, or a write that certainly failed happened;
//! - `info`, or an invoke never completed: either is fine (how many were found is
//!   counted);
//! - found by the scan but never written: a *phantom*.
//!
//! Values are not checked (the scan gives keys).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{from_hex, to_hex, Event, EventType, Func};

/// At most this many keys of each kind of offence are listed.
pub const SHOWN: usize = 10;

/// Keys that break a rule: how many, and the first few in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offenders {
    /// How many keys.
    pub count: usize,
    /// The first [`SHOWN`] of them, in key order.
    pub first: Vec<Vec<u8>>,
}

impl Offenders {
    fn add(&mut self, key: &[u8]) {
        self.count += 1;
        if self.first.len() < SHOWN {
            self.first.push(key.to_vec());
        }
    }
}

/// The outcome of the set check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetReport {
    /// Keys written (invoked).
    pub keys: usize,
    /// Writes that completed `ok`.
    pub ok: usize,
    /// Writes that completed `fail`.
    pub fail: usize,
    /// Writes with an unknown outcome (`info`, and invokes never completed).
    pub info: usize,
    /// Of `info`, the invokes never completed.
    pub unfinished: usize,
    /// Keys the scan found.
    pub scanned: usize,
    /// Unknown writes the scan found (the others did not happen, or were lost,
    /// which is allowed).
    pub info_present: usize,
    /// `ok` writes the scan did not find.
    pub lost: Offenders,
    /// `fail` writes the scan found.
    pub failed_present: Offenders,
    /// Keys the scan found that were never written.
    pub phantom: Offenders,
}

impl SetReport {
    /// No write lost, no failed write present, no phantom.
    pub fn passed(&self) -> bool {
        self.lost.count == 0 && self.failed_present.count == 0 && self.phantom.count == 0
    }
}

/// Why the set history is not well formed. `event` is a position in the history
/// (from 0).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The set workload only puts.
    #[error("event {event}: a {f:?}, the set workload only puts")]
    NotAPut {
        /// The event.
        event: usize,
        /// What it is.
        f: Func,
    },
    /// A key is not hex.
    #[error("event {event}: the key is not hex: {text:?}")]
    BadHex {
        /// The event.
        event: usize,
        /// What it holds.
        text: String,
    },
    /// A key was written twice.
    #[error("event {event}: key {key} is written again (first at event {first})")]
    InvokedTwice {
        /// The second invoke.
        event: usize,
        /// The key (hex).
        key: String,
        /// The first invoke.
        first: usize,
    },
    /// A completion of a key with no open put.
    #[error("event {event}: completes a put of key {key} that is not open")]
    NotOpen {
        /// The completion.
        event: usize,
        /// The key (hex).
        key: String,
    },
    /// A put invoked by one process and completed by another.
    #[error("event {event}: process {completed_by} completes the put of key {key} process {invoked_by} invoked")]
    ProcessMismatch {
        /// The completion.
        event: usize,
        /// The key (hex).
        key: String,
        /// Who invoked it.
        invoked_by: u64,
        /// Who completed it.
        completed_by: u64,
    },
}

/// A key's write.
struct Write {
    process: u64,
    invoke: usize,
    /// `None` while open (and for an invoke never completed).
    outcome: Option<EventType>,
}

/// The writes of `events` by key.
fn writes(events: &[Event]) -> Result<BTreeMap<Vec<u8>, Write>, SetError> {
    let mut writes: BTreeMap<Vec<u8>, Write> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.f != Func::Put {
            return Err(SetError::NotAPut { event: i, f: e.f });
        }
        let key = from_hex(&e.key).ok_or_else(|| SetError::BadHex {
            event: i,
            text: e.key.clone(),
        })?;
        if e.kind == EventType::Invoke {
            if let Some(w) = writes.get(&key) {
                return Err(SetError::InvokedTwice {
                    event: i,
                    key: e.key.clone(),
                    first: w.invoke,
                });
            }
            let w = Write {
                process: e.process,
                invoke: i,
                outcome: None,
            };
            writes.insert(key, w);
            continue;
        }
        let Some(w) = writes.get_mut(&key).filter(|w| w.outcome.is_none()) else {
            return Err(SetError::NotOpen {
                event: i,
                key: e.key.clone(),
            });
        };
        if w.process != e.process {
            return Err(SetError::ProcessMismatch {
                event: i,
                key: e.key.clone(),
                invoked_by: w.process,
                completed_by: e.process,
            });
        }
        w.outcome = Some(e.kind);
    }
    Ok(writes)
}

/// Checks the set keys' history `events` against the keys the final scan found
/// (`scan`: raw bytes, set keys only).
pub fn check(events: &[Event], scan: &BTreeSet<Vec<u8>>) -> Result<SetReport, SetError> {
    let writes = writes(events)?;
    let mut r = SetReport {
        keys: writes.len(),
        scanned: scan.len(),
        ..SetReport::default()
    };
    for (key, w) in &writes {
        let present = scan.contains(key);
        match w.outcome {
            Some(EventType::Ok) => {
                r.ok += 1;
                if !present {
                    r.lost.add(key);
                }
            }
            Some(EventType::Fail) => {
                r.fail += 1;
                if present {
                    r.failed_present.add(key);
                }
            }
            outcome => {
                r.info += 1;
                r.unfinished += usize::from(outcome.is_none());
                r.info_present += usize::from(present);
            }
        }
    }
    for key in scan.iter().filter(|k| !writes.contains_key(*k)) {
        r.phantom.add(key);
    }
    Ok(r)
}

impl fmt::Display for Offenders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.first.iter().map(|k| to_hex(k)).collect();
        write!(f, "{}", keys.join(" "))?;
        if self.count > self.first.len() {
            write!(f, " and {} more", self.count - self.first.len())?;
        }
        Ok(())
    }
}

impl fmt::Display for SetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "set: {} keys written ({} ok, {} fail, {} info of which {} never completed), \
             {} found by the scan ({} of the info ones)",
            self.keys,
            self.ok,
            self.fail,
            self.info,
            self.unfinished,
            self.scanned,
            self.info_present
        )?;
        let offences = [
            ("lost (written ok, not found)", &self.lost),
            ("failed writes found", &self.failed_present),
            ("phantoms (found, never written)", &self.phantom),
        ];
        for (what, o) in offences.into_iter().filter(|(_, o)| o.count > 0) {
            writeln!(f, "  {} {what}: {o}", o.count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    /// A set history under construction.
    #[derive(Default)]
    struct H {
        events: Vec<Event>,
    }

    impl H {
        fn push(&mut self, process: u64, kind: EventType, key: &str) -> &mut H {
            self.events.push(Event {
                process,
                kind,
                f: Func::Put,
                key: to_hex(key.as_bytes()),
                value: Value::Hex(to_hex(b"v")),
                time_ns: 1000 * self.events.len() as u64,
            });
            self
        }

        /// A single put of `key` by `process` that completes as `kind`.
        fn put(&mut self, process: u64, key: &str, kind: EventType) -> &mut H {
            self.push(process, EventType::Invoke, key)
                .push(process, kind, key)
        }

        fn check(&self, scan: &[&str]) -> SetReport {
            let scan = scan.iter().map(|k| k.as_bytes().to_vec()).collect();
            check(&self.events, &scan).expect("well formed")
        }
    }

    fn keys(ks: &[&str]) -> Vec<Vec<u8>> {
        ks.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn acknowledged_writes_found_and_failed_ones_absent_pass() {
        let mut h = H::default();
        h.put(1, "a", EventType::Ok)
            .put(2, "b", EventType::Ok)
            .put(1, "c", EventType::Fail)
            .put(3, "d", EventType::Info)
            .put(4, "e", EventType::Info);
        let r = h.check(&["a", "b", "d"]);
        assert!(r.passed(), "{r}");
        let counts = (r.keys, r.ok, r.fail, r.info, r.unfinished, r.scanned);
        assert_eq!(counts, (5, 2, 1, 2, 0, 3));
        assert_eq!(r.info_present, 1);
        assert_eq!(r.lost, Offenders::default());
    }

    #[test]
    fn a_lost_write_fails() {
        let mut h = H::default();
        h.put(1, "a", EventType::Ok).put(2, "b", EventType::Ok);
        let r = h.check(&["b"]);
        assert!(!r.passed());
        assert_eq!(
            r.lost,
            Offenders {
                count: 1,
                first: keys(&["a"])
            }
        );
        assert!(
            r.to_string()
                .contains("1 lost (written ok, not found): 61\n"),
            "{r}"
        );
        assert_eq!((r.failed_present.count, r.phantom.count), (0, 0));
    }

    #[test]
    fn a_failed_write_found_fails() {
        let mut h = H::default();
        h.put(1, "a", EventType::Ok).put(2, "b", EventType::Fail);
        let r = h.check(&["a", "b"]);
        assert!(!r.passed());
        assert_eq!(r.failed_present.first, keys(&["b"]));
        assert_eq!((r.lost.count, r.phantom.count), (0, 0));
    }

    #[test]
    fn a_key_never_written_found_fails() {
        let mut h = H::default();
        h.put(1, "a", EventType::Ok);
        let r = h.check(&["a", "zz"]);
        assert!(!r.passed());
        assert_eq!(r.phantom.first, keys(&["zz"]));
        assert!(
            r.to_string()
                .contains("phantoms (found, never written): 7a7a"),
            "{r}"
        );
        // Nothing written, something found.
        let r = H::default().check(&["q"]);
        assert_eq!((r.keys, r.phantom.count), (0, 1));
    }

    #[test]
    fn unknown_writes_may_be_found_or_not() {
        let mut h = H::default();
        h.put(1, "a", EventType::Info)
            .put(2, "b", EventType::Info)
            .push(3, EventType::Invoke, "c")
            .push(4, EventType::Invoke, "d");
        for (scan, present) in [
            (vec![], 0),
            (vec!["a", "c"], 2),
            (vec!["a", "b", "c", "d"], 4),
        ] {
            let r = h.check(&scan);
            assert!(r.passed(), "{r}");
            assert_eq!((r.info, r.unfinished, r.info_present), (4, 2, present));
        }
    }

    #[test]
    fn a_batch_write_pairs_its_keys() {
        let mut h = H::default();
        for k in ["a", "b", "c"] {
            h.push(1, EventType::Invoke, k);
        }
        h.put(2, "d", EventType::Ok);
        for k in ["a", "b", "c"] {
            h.push(1, EventType::Ok, k);
        }
        assert!(h.check(&["a", "b", "c", "d"]).passed());
        let r = h.check(&["a", "c", "d"]);
        assert_eq!(r.lost.first, keys(&["b"]));
    }

    #[test]
    fn only_the_first_few_offenders_are_listed() {
        let mut h = H::default();
        let names: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
        for n in &names {
            h.put(1, n, EventType::Ok);
        }
        let r = h.check(&[]);
        assert_eq!(r.lost.count, 25);
        assert_eq!(r.lost.first.len(), SHOWN);
        assert_eq!(r.lost.first[0], b"k00");
        assert_eq!(r.lost.first[SHOWN - 1], b"k09");
        assert!(r.to_string().contains(" and 15 more"), "{r}");
    }

    #[test]
    fn malformed_histories_are_errors() {
        let err = |h: &H| check(&h.events, &BTreeSet::new()).unwrap_err();
        let mut h = H::default();
        h.put(1, "a", EventType::Ok).events[1].f = Func::Get;
        assert_eq!(
            err(&h),
            SetError::NotAPut {
                event: 1,
                f: Func::Get
            }
        );
        let mut h = H::default();
        h.put(1, "a", EventType::Fail).put(2, "a", EventType::Ok);
        assert_eq!(
            err(&h),
            SetError::InvokedTwice {
                event: 2,
                key: "61".into(),
                first: 0
            }
        );
        let mut h = H::default();
        h.push(1, EventType::Ok, "a");
        assert_eq!(
            err(&h),
            SetError::NotOpen {
                event: 0,
                key: "61".into()
            }
        );
        let mut h = H::default();
        h.put(1, "a", EventType::Ok).push(1, EventType::Ok, "a");
        assert!(matches!(err(&h), SetError::NotOpen { event: 2, .. }));
        let mut h = H::default();
        h.push(1, EventType::Invoke, "a")
            .push(2, EventType::Ok, "a");
        assert!(matches!(
            err(&h),
            SetError::ProcessMismatch {
                invoked_by: 1,
                completed_by: 2,
                ..
            }
        ));
        let mut h = H::default();
        h.push(1, EventType::Invoke, "a").events[0].key = "6".into();
        assert!(matches!(err(&h), SetError::BadHex { event: 0, .. }));
    }
}
