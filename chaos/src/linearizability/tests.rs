//! Tests of the linearizability checker: hand-made histories, generated ones, and a
//! brute-force cross-check.

use std::collections::HashMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::history::CasValue;
use EventType::{Fail, Info, Invoke};

/// The key of the hand-made histories ("k").
const K: &str = "6b";

fn hx(s: &str) -> String {
    to_hex(s.as_bytes())
}

/// A hand-made history of key `K`; completions repeat the open invoke.
#[derive(Default)]
struct H {
    events: Vec<Event>,
    open: HashMap<u64, Event>,
}

impl H {
    fn push(&mut self, process: u64, kind: EventType, f: Func, key: &str, value: Value) -> &mut H {
        let e = Event {
            process,
            kind,
            f,
            key: key.into(),
            value,
            time_ns: 1000 * self.events.len() as u64,
        };
        match kind {
            Invoke => self.open.insert(process, e.clone()),
            _ => self.open.remove(&process),
        };
        self.events.push(e);
        self
    }

    fn call_get(&mut self, p: u64) -> &mut H {
        self.push(p, Invoke, Func::Get, K, Value::Null)
    }

    fn call_put(&mut self, p: u64, v: &str) -> &mut H {
        self.push(p, Invoke, Func::Put, K, Value::Hex(hx(v)))
    }

    fn call_cas(&mut self, p: u64, expect: Option<&str>, new: &str) -> &mut H {
        let v = Value::Cas(CasValue {
            expect: expect.map(hx),
            new: hx(new),
        });
        self.push(p, Invoke, Func::Cas, K, v)
    }

    /// Completes `p`'s open operation (a get reads `read`).
    fn end(&mut self, p: u64, kind: EventType, read: Option<&str>) -> &mut H {
        let inv = self.open[&p].clone();
        let value = match inv.f {
            Func::Get => read.map_or(Value::Null, |r| Value::Hex(hx(r))),
            _ => inv.value,
        };
        self.push(p, kind, inv.f, &inv.key, value)
    }

    fn ok(&mut self, p: u64) -> &mut H {
        self.end(p, EventType::Ok, None)
    }

    fn read(&mut self, p: u64, read: Option<&str>) -> &mut H {
        self.end(p, EventType::Ok, read)
    }

    fn fail(&mut self, p: u64) -> &mut H {
        self.end(p, Fail, None)
    }

    fn info(&mut self, p: u64) -> &mut H {
        self.end(p, Info, None)
    }

    fn put(&mut self, p: u64, v: &str) -> &mut H {
        self.call_put(p, v).ok(p)
    }

    fn get(&mut self, p: u64, read: Option<&str>) -> &mut H {
        self.call_get(p).read(p, read)
    }

    fn cas(&mut self, p: u64, expect: Option<&str>, new: &str) -> &mut H {
        self.call_cas(p, expect, new).ok(p)
    }

    fn check(&self) -> Report {
        check(&self.events).expect("well formed")
    }
}

/// The single violation of `r`.
fn violation(r: &Report) -> &Violation {
    assert_eq!(r.violations.len(), 1, "{r}");
    assert_eq!(r.linearizable, r.keys - 1, "{r}");
    assert!(r.undecided.is_empty(), "{r}");
    &r.violations[0]
}

fn passes(h: &H) -> Report {
    let r = h.check();
    assert!(r.passed(), "{r}");
    assert_eq!(r.linearizable, r.keys);
    r
}

#[test]
fn a_sequential_history_passes() {
    let mut h = H::default();
    h.get(1, None)
        .put(1, "a")
        .get(2, Some("a"))
        .cas(1, Some("a"), "b")
        .get(2, Some("b"))
        .call_cas(3, Some("a"), "x")
        .fail(3)
        .put(2, "c")
        .cas(1, Some("c"), "d")
        .get(1, Some("d"));
    let r = passes(&h);
    assert_eq!(
        (r.keys, r.ok, r.fail, r.info, r.unfinished),
        (1, 8, 1, 0, 0)
    );
}

#[test]
fn concurrent_operations_that_can_be_ordered_pass() {
    let mut h = H::default();
    // Three concurrent operations: the put of b must go before the put of a.
    h.call_put(1, "a")
        .call_put(2, "b")
        .call_get(3)
        .ok(2)
        .read(3, Some("a"))
        .ok(1)
        .get(3, Some("a"));
    // A get overlapping a put reads the old value, then the new.
    h.call_put(4, "c")
        .get(5, Some("a"))
        .get(5, Some("c"))
        .ok(4)
        .get(5, Some("c"));
    // A CAS read by a get before it completed.
    h.call_cas(1, Some("c"), "d")
        .get(2, Some("d"))
        .ok(1)
        .get(3, Some("d"));
    passes(&h);
}

#[test]
fn a_stale_read_fails() {
    let mut h = H::default();
    h.put(1, "a").put(2, "b").get(3, Some("a"));
    let r = h.check();
    let v = violation(&r);
    assert_eq!(v.key, b"k");
    assert_eq!((v.ops, v.linearized), (3, 2));
    assert_eq!(v.state.as_deref(), Some(&b"b"[..]));
    assert_eq!(v.stuck.len(), 1);
    assert_eq!(v.stuck[0].op.process, 3);
    assert!(
        v.stuck[0]
            .why
            .starts_with("it read \"a\" but the register holds \"b\""),
        "{v}"
    );
    let shown = v.to_string();
    assert!(
        shown.contains("key 6b: not linearizable: at most 2 of its 3"),
        "{shown}"
    );
    assert!(shown.contains("p2 put \"b\" ok"), "{shown}");
}

#[test]
fn a_stale_read_among_concurrent_operations_fails() {
    let mut h = H::default();
    h.put(1, "a")
        .call_put(2, "b")
        .call_put(3, "c")
        .call_get(4)
        .ok(2)
        .ok(3)
        .read(4, Some("b"))
        .get(4, Some("c"))
        .get(5, Some("b"));
    violation(&h.check());
}

#[test]
fn a_lost_write_fails() {
    let mut h = H::default();
    h.put(1, "a").get(2, None);
    let r = h.check();
    let v = violation(&r);
    assert!(v.stuck[0].why.contains("it read absent"), "{v}");
}

#[test]
fn a_cas_that_succeeded_twice_from_the_same_value_fails() {
    let mut h = H::default();
    h.put(1, "a")
        .call_cas(2, Some("a"), "b")
        .call_cas(3, Some("a"), "c")
        .ok(2)
        .ok(3);
    let r = h.check();
    let v = violation(&r);
    assert_eq!(v.linearized, 2);
    assert!(
        v.stuck.iter().all(|s| s.why.contains("it expects \"a\"")),
        "{v}"
    );
    // One after the other too.
    let mut h = H::default();
    h.put(1, "a").cas(2, Some("a"), "b").cas(3, Some("a"), "c");
    violation(&h.check());
    // From absent.
    let mut h = H::default();
    h.cas(2, None, "b").cas(3, None, "c");
    violation(&h.check());
}

#[test]
fn an_unknown_write_that_appears_late_passes() {
    let mut h = H::default();
    h.call_put(1, "a").info(1);
    h.put(2, "b")
        .get(3, Some("b"))
        .put(2, "c")
        .get(3, Some("c"))
        .get(3, Some("a"))
        .get(2, Some("a"));
    let r = passes(&h);
    assert_eq!((r.ok, r.info, r.unfinished), (6, 1, 0));
    // An invoke never completed is as unknown.
    let mut h = H::default();
    h.call_put(9, "z").put(2, "b").put(2, "c").get(3, Some("z"));
    let r = passes(&h);
    assert_eq!((r.ok, r.info, r.unfinished), (3, 1, 1));
    // Two unknown writes, one after the other, seen only at the end.
    let mut h = H::default();
    h.call_put(1, "a")
        .info(1)
        .call_cas(2, Some("a"), "b")
        .info(2);
    h.put(3, "c").get(3, Some("c")).get(4, Some("b"));
    passes(&h);
}

#[test]
fn an_unknown_write_cannot_appear_before_its_invoke() {
    let mut h = H::default();
    h.get(2, Some("a")).call_put(1, "a").info(1);
    violation(&h.check());
    // An unknown CAS takes effect only where its compare matches: this one
    // from absent cannot come after the puts.
    let mut h = H::default();
    h.call_cas(9, None, "z")
        .put(2, "b")
        .put(2, "c")
        .get(3, Some("z"));
    violation(&h.check());
    // Nor come back after being overwritten.
    let mut h = H::default();
    h.call_put(1, "a")
        .info(1)
        .get(2, Some("a"))
        .put(2, "b")
        .get(2, Some("a"));
    violation(&h.check());
}

#[test]
fn an_unknown_write_never_appearing_passes() {
    let mut h = H::default();
    h.call_put(1, "a").info(1);
    h.get(2, None).put(2, "b").get(3, Some("b"));
    passes(&h);
    // Kept by the search (its value is read, from another write) but it cannot
    // happen anywhere: it must be left out.
    let mut h = H::default();
    h.call_cas(1, Some("q"), "a").info(1);
    h.put(2, "a")
        .get(3, Some("a"))
        .put(2, "b")
        .get(3, Some("b"));
    let r = passes(&h);
    assert_eq!(r.info, 1);
    let register = Register::new(&operations(&h.events).unwrap()[&b"k".to_vec()]);
    assert_eq!(register.ops.len(), 5, "the unknown CAS is searched");
    // Unknown writes nobody sees are not searched: the CAS's value is never
    // read, and then neither is the put's (only that CAS expected it).
    let mut h = H::default();
    h.call_put(1, "a")
        .info(1)
        .call_cas(2, Some("a"), "b")
        .info(2);
    h.get(3, None).put(3, "c").get(3, Some("c"));
    passes(&h);
    let register = Register::new(&operations(&h.events).unwrap()[&b"k".to_vec()]);
    assert_eq!(register.ops.len(), 3);
}

#[test]
fn unknown_and_failed_gets_are_ignored() {
    let mut h = H::default();
    h.put(1, "a")
        .call_get(2)
        .info(2)
        .call_get(3)
        .fail(3)
        .get(4, Some("a"));
    let r = passes(&h);
    assert_eq!((r.ok, r.fail, r.info), (2, 1, 1));
}

#[test]
fn a_read_of_a_value_never_written_fails() {
    let mut h = H::default();
    h.put(1, "a").get(2, Some("zz"));
    let v = h.check();
    assert!(violation(&v).stuck[0].why.contains("it read \"zz\""));
    let mut h = H::default();
    h.get(2, Some("zz"));
    let r = h.check();
    let v = violation(&r);
    assert_eq!(v.linearized, 0);
    assert!(v.to_string().contains("nothing can go first"), "{v}");
}

#[test]
fn a_read_of_a_failed_write_fails() {
    let mut h = H::default();
    h.call_put(1, "a").fail(1).get(2, Some("a"));
    violation(&h.check());
    let mut h = H::default();
    h.put(1, "a")
        .call_cas(2, Some("a"), "b")
        .fail(2)
        .get(3, Some("b"));
    violation(&h.check());
}

#[test]
fn keys_are_checked_one_by_one() {
    let mut h = H::default();
    h.put(1, "a");
    h.push(1, Invoke, Func::Put, "6c", Value::Hex(hx("b")))
        .ok(1)
        .push(2, Invoke, Func::Get, "6c", Value::Null)
        .read(2, Some("a"))
        .get(2, Some("a"));
    let r = h.check();
    assert_eq!(r.keys, 2);
    assert_eq!(violation(&r).key, b"l");
}

#[test]
fn malformed_histories_are_errors() {
    let err = |h: &H| check(&h.events).unwrap_err();
    let mut h = H::default();
    h.push(1, EventType::Ok, Func::Put, K, Value::Hex(hx("a")));
    assert_eq!(
        err(&h),
        HistoryError::CompletionWithoutInvoke {
            event: 0,
            process: 1
        }
    );
    let mut h = H::default();
    h.put(1, "a").call_put(1, "b").call_get(1);
    assert_eq!(
        err(&h),
        HistoryError::DoubleInvoke {
            event: 3,
            process: 1,
            open: 2
        }
    );
    let mut h = H::default();
    h.call_put(1, "a").push(1, Info, Func::Get, K, Value::Null);
    assert!(matches!(
        err(&h),
        HistoryError::Mismatch {
            event: 1,
            invoke: 0,
            ..
        }
    ));
    let mut h = H::default();
    h.call_put(1, "a")
        .push(1, Info, Func::Put, "6c", Value::Hex(hx("a")));
    assert!(matches!(err(&h), HistoryError::Mismatch { event: 1, .. }));
    let mut h = H::default();
    h.call_put(1, "a")
        .push(1, Info, Func::Put, K, Value::Hex(hx("b")));
    assert!(matches!(err(&h), HistoryError::Mismatch { event: 1, .. }));
    let shown = err(&h).to_string();
    assert!(
        shown.ends_with("invoked put \"a\", completed put \"b\""),
        "{shown}"
    );
    let mut h = H::default();
    h.push(1, Invoke, Func::Get, "6", Value::Null);
    assert!(matches!(err(&h), HistoryError::BadHex { field: "key", .. }));
    let mut h = H::default();
    h.push(1, Invoke, Func::Put, K, Value::Hex("zz".into()));
    assert!(matches!(
        err(&h),
        HistoryError::BadHex { field: "value", .. }
    ));
    let mut h = H::default();
    h.call_get(1)
        .push(1, EventType::Ok, Func::Get, K, Value::Hex("6".into()));
    assert!(matches!(err(&h), HistoryError::BadHex { event: 1, .. }));
    let mut h = H::default();
    h.push(1, Invoke, Func::Put, K, Value::Null);
    assert!(matches!(err(&h), HistoryError::BadValue { event: 0, .. }));
    let mut h = H::default();
    h.push(1, Invoke, Func::Cas, K, Value::Hex(hx("a")));
    assert!(matches!(err(&h), HistoryError::BadValue { event: 0, .. }));
    let mut h = H::default();
    let cas = Value::Cas(CasValue {
        expect: None,
        new: hx("a"),
    });
    h.call_get(1).push(1, EventType::Ok, Func::Get, K, cas);
    assert!(matches!(err(&h), HistoryError::BadValue { event: 1, .. }));
    // A write's completion may leave its value out.
    let mut h = H::default();
    h.call_put(1, "a")
        .push(1, EventType::Ok, Func::Put, K, Value::Null);
    passes(&h);
}

/// Whether a one-key history is linearizable, straight from the definition:
/// every order of the `ok` operations and of any subset of the unknown writes.
fn brute_force(events: &[Event]) -> bool {
    fn go(ops: &[Operation], used: &mut [bool], state: Option<Vec<u8>>) -> bool {
        let ok = |j: usize| ops[j].outcome == EventType::Ok;
        if (0..ops.len()).all(|j| used[j] || !ok(j)) {
            return true;
        }
        for i in 0..ops.len() {
            // Not placed yet, and no `ok` one not placed completed before its
            // invoke.
            let late = |j: usize| ok(j) && ops[j].complete < Some(ops[i].invoke);
            if used[i] || (0..ops.len()).any(|j| !used[j] && late(j)) {
                continue;
            }
            let after = match &ops[i].op {
                Op::Get { read } => (*read == state).then(|| state.clone()),
                Op::Put { value } => Some(Some(value.clone())),
                Op::Cas { expect, new } => (*expect == state).then(|| Some(new.clone())),
            };
            if let Some(after) = after {
                used[i] = true;
                if go(ops, used, after) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    let ops: Vec<Operation> = operations(events)
        .unwrap()
        .into_values()
        .flatten()
        .filter(|o| match (o.outcome, &o.op) {
            (EventType::Ok, _) => true,
            (Info, Op::Get { .. }) => false,
            (outcome, _) => outcome == Info,
        })
        .collect();
    go(&ops, &mut vec![false; ops.len()], None)
}

/// A small random history of key `K`, linearizable or not: 2 to 4 processes,
/// 3 to 7 operations over two values, outcomes and reads at random.
fn small_random(rng: &mut StdRng) -> Vec<Event> {
    let values = ["a", "b"];
    let value = |rng: &mut StdRng| values[rng.gen_range(0..2)];
    let maybe = |rng: &mut StdRng| [None, Some("a"), Some("b")][rng.gen_range(0..3)];
    let processes = rng.gen_range(2..=4u64);
    let mut left = rng.gen_range(3..=7);
    let mut h = H::default();
    // Processes whose last operation never completes.
    let mut gone = Vec::new();
    while (left > 0 || h.open.len() > gone.len()) && gone.len() < processes as usize {
        let p = rng.gen_range(0..processes);
        if gone.contains(&p) {
            continue;
        }
        if !h.open.contains_key(&p) {
            if left > 0 {
                left -= 1;
                match rng.gen_range(0..3) {
                    0 => h.call_get(p),
                    1 => h.call_put(p, value(rng)),
                    _ => h.call_cas(p, maybe(rng), value(rng)),
                };
            }
            continue;
        }
        match rng.gen_range(0..20) {
            0..=11 => h.read(p, maybe(rng)),
            12..=15 => h.info(p),
            16..=18 => h.fail(p),
            _ => {
                gone.push(p);
                &mut h
            }
        };
    }
    h.events
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = StdRng::seed_from_u64(1);
    let (mut yes, mut no) = (0, 0);
    for i in 0..20000 {
        let events = small_random(&mut rng);
        let expected = brute_force(&events);
        let r = check(&events).unwrap();
        assert!(r.undecided.is_empty());
        if r.passed() != expected {
            let mut out = Vec::new();
            crate::history::write(&mut out, &events).unwrap();
            let shown = String::from_utf8(out).unwrap();
            panic!("history {i}: brute force says {expected}, the checker {r}\n{shown}");
        }
        match expected {
            true => yes += 1,
            false => no += 1,
        }
    }
    println!("{yes} linearizable, {no} not");
    assert!(yes > 5000 && no > 5000, "{yes} linearizable, {no} not");
}

#[test]
fn over_budget_is_undecided_never_passed() {
    let mut h = H::default();
    h.put(1, "a").put(2, "b").get(3, Some("a"));
    let small = Options {
        max_steps_per_key: 2,
    };
    let r = check_with(&h.events, &small).unwrap();
    assert!(!r.passed());
    assert!(r.violations.is_empty());
    assert_eq!(r.linearizable, 0);
    assert_eq!(r.undecided.len(), 1);
    assert_eq!(r.undecided[0].steps, 2);
    assert!(r.to_string().contains("key 6b: undecided"), "{r}");
    // A linearizable key too.
    let mut h = H::default();
    h.put(1, "a").put(2, "b").get(3, Some("b"));
    let r = check_with(&h.events, &small).unwrap();
    assert_eq!((r.linearizable, r.undecided.len()), (0, 1));
}

/// 22 concurrent puts, then a read of a value none wrote: proving it wrong
/// means trying every subset of the puts (times the last one).
fn exponential() -> H {
    let mut h = H::default();
    for p in 0..22 {
        h.call_put(p, &format!("v{p}"));
    }
    for p in 0..22 {
        h.ok(p);
    }
    h.get(99, Some("zz"));
    h
}

#[test]
fn an_exponential_history_is_undecided_within_its_budget() {
    let options = Options {
        max_steps_per_key: 200_000,
    };
    let start = Instant::now();
    let r = check_with(&exponential().events, &options).unwrap();
    println!("{:?}: {r}", start.elapsed());
    assert_eq!(r.undecided.len(), 1, "{r}");
    assert_eq!(r.undecided[0].steps, 200_000);
    assert!(!r.passed());
}

/// Registers that clients' operations take effect on, one key at a time.
struct Sim {
    rng: StdRng,
    keys: Vec<String>,
    register: HashMap<String, Option<String>>,
    /// Every value written, by key.
    written: HashMap<String, Vec<String>>,
    /// The percentage of operations that end `info`.
    info: u32,
    n: usize,
}

impl Sim {
    /// A random operation of process `p` (values unique).
    fn invoke(&mut self, p: u64) -> Event {
        self.n += 1;
        let key = self.keys[self.rng.gen_range(0..self.keys.len())].clone();
        let new = hx(&format!("{p}-{}", self.n));
        let (f, value) = match self.rng.gen_range(0..4) {
            0 | 1 => (Func::Get, Value::Null),
            2 => (Func::Put, Value::Hex(new)),
            _ => {
                let current = self.register.get(&key).cloned().flatten();
                let old = self.written.get(&key).and_then(|w| w.last().cloned());
                let expect = if self.rng.gen_bool(0.7) { current } else { old };
                (Func::Cas, Value::Cas(CasValue { expect, new }))
            }
        };
        Event {
            process: p,
            kind: Invoke,
            f,
            key,
            value,
            time_ns: 0,
        }
    }

    /// Invoke `e` takes effect now (or fails, or ends unknown with or
    /// without effect): its completion.
    fn take_effect(&mut self, mut e: Event) -> Event {
        let current = self.register.get(&e.key).cloned().flatten();
        let (kind, effect) = match self.rng.gen_range(0..100) {
            0..4 => (Fail, false),
            r if r < 4 + self.info => (Info, self.rng.gen_bool(0.5)),
            _ => (EventType::Ok, true),
        };
        e.kind = kind;
        let write = match (&e.f, &e.value) {
            (Func::Get, _) => {
                e.value = current.clone().map_or(Value::Null, Value::Hex);
                None
            }
            (Func::Put, Value::Hex(v)) => Some(v.clone()),
            (Func::Cas, Value::Cas(c)) if c.expect == current => Some(c.new.clone()),
            _ => {
                // A CAS whose compare does not match.
                if e.kind == EventType::Ok {
                    e.kind = Fail;
                }
                None
            }
        };
        if let (true, Some(v)) = (effect, write) {
            self.register.insert(e.key.clone(), Some(v.clone()));
            self.written.entry(e.key.clone()).or_default().push(v);
        }
        e
    }
}

/// A linearizable history: `processes` clients each run `per_process` random
/// operations on `keys` registers. Each operation takes effect on a simulated
/// register at a random moment between its invoke and its completion; a few
/// fail (no effect, like a CAS whose compare does not match) and `info`
/// percent end `info` (with or without effect).
fn generate(seed: u64, processes: u64, per_process: usize, keys: usize, info: u32) -> Vec<Event> {
    #[derive(Clone)]
    enum Phase {
        Idle,
        Invoked(Event),
        Done(Event),
    }
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(seed),
        keys: (0..keys).map(|i| hx(&format!("k{i}"))).collect(),
        register: HashMap::new(),
        written: HashMap::new(),
        info,
        n: 0,
    };
    let mut phase = vec![Phase::Idle; processes as usize];
    let mut done = vec![0; processes as usize];
    let mut events = Vec::new();
    let record = |events: &mut Vec<Event>, mut e: Event| {
        e.time_ns = 1000 * events.len() as u64;
        events.push(e);
    };
    loop {
        let busy: Vec<usize> = (0..processes as usize)
            .filter(|&p| done[p] < per_process || !matches!(phase[p], Phase::Idle))
            .collect();
        if busy.is_empty() {
            return events;
        }
        let p = busy[sim.rng.gen_range(0..busy.len())];
        phase[p] = match phase[p].clone() {
            Phase::Idle => {
                let e = sim.invoke(p as u64);
                record(&mut events, e.clone());
                Phase::Invoked(e)
            }
            Phase::Invoked(e) => Phase::Done(sim.take_effect(e)),
            Phase::Done(e) => {
                record(&mut events, e);
                done[p] += 1;
                Phase::Idle
            }
        };
    }
}

#[test]
fn generated_histories_pass_and_a_stale_read_appended_fails() {
    for seed in 0..20 {
        let events = generate(seed, 5, 40, 2, 4);
        let r = check(&events).unwrap();
        assert!(r.passed(), "seed {seed}: {r}");
        assert!(r.info > 0 && r.fail > 0, "seed {seed}: {r}");
        let r = append_stale_read(events, "k0").check();
        assert_eq!(violation(&r).key, b"k0", "seed {seed}");
    }
}

#[test]
fn ten_processes_of_500_operations_per_key_check_fast() {
    let events = generate(7, 10, 1500, 3, 4);
    let start = Instant::now();
    let r = check(&events).unwrap();
    let took = start.elapsed();
    println!("10 processes, 15000 operations on 3 keys: {took:?}, {r}");
    assert!(r.passed(), "{r}");
    assert_eq!(r.ok + r.fail + r.info, 15000);
    assert!(r.steps < 20 * 15000, "{r}");
}

/// Appends to `events` a put of a fresh value to `key`, then a get reading
/// `key`'s first value written ok (long overwritten): a stale read.
fn append_stale_read(events: Vec<Event>, key: &str) -> H {
    let ops = operations(&events).unwrap();
    let first = ops[key.as_bytes()]
        .iter()
        .find_map(|o| match (&o.op, o.outcome) {
            (Op::Put { value }, EventType::Ok) => Some(value.clone()),
            _ => None,
        })
        .unwrap();
    let mut h = H {
        events,
        open: HashMap::new(),
    };
    let first = String::from_utf8(first).unwrap();
    h.push(99, Invoke, Func::Put, &hx(key), Value::Hex(hx("fresh")))
        .ok(99)
        .push(99, Invoke, Func::Get, &hx(key), Value::Null)
        .read(99, Some(&first));
    h
}

#[test]
fn a_stale_read_at_the_end_of_a_long_concurrent_history_is_found() {
    let h = append_stale_read(generate(7, 10, 1500, 3, 4), "k1");
    let start = Instant::now();
    let r = h.check();
    let took = start.elapsed();
    println!("10 processes, 15002 operations on 3 keys, a stale read: {took:?}, {r}");
    let v = violation(&r);
    assert_eq!(v.key, b"k1");
    assert!(v.stuck.iter().any(|s| s.op.process == 99), "{v}");
}

#[test]
fn many_unknown_writes_pass_and_a_stale_read_among_them_is_found() {
    for info in [10, 40] {
        let events = generate(3, 10, 1500, 3, info);
        let start = Instant::now();
        let r = check(&events).unwrap();
        println!("{info}% info: {:?}, {r}", start.elapsed());
        assert!(r.passed(), "{r}");
        assert!(r.info > 15000 * info as usize / 200, "{r}");
        let h = append_stale_read(events, "k1");
        let start = Instant::now();
        let r = h.check();
        println!("{info}% info, a stale read: {:?}, {r}", start.elapsed());
        assert_eq!(violation(&r).key, b"k1");
    }
}

#[test]
fn a_long_sequential_ish_history_is_not_exponential() {
    let events = generate(11, 2, 2000, 1, 4);
    let start = Instant::now();
    let r = check(&events).unwrap();
    let took = start.elapsed();
    println!("2 processes, 4000 operations on 1 key: {took:?}, {r}");
    assert!(r.passed(), "{r}");
    assert!(r.steps < 5 * 4000, "{r}");
}
