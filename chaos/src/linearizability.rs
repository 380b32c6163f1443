//! Linearizability of each key's history as a register (get, put, CAS).
//!
//! # What is checked
//!
//! Every key is an independent register that starts absent. A history is
//! linearizable when each key's operations can be put in one sequence such that
//! (1) the sequence respects real time: an operation that completed before another
//! was invoked comes first, and (2) replaying the sequence on a register gives every
//! operation the result it saw: a `get` returns what the register holds (absent or
//! a value), a `put` sets it, a `cas` finds its `expect` (absent when `None`) and
//! sets `new`. Keys are independent (linearizability is compositional), so each is
//! searched on its own.
//!
//! Outcomes:
//! - `ok`: it took effect somewhere between its invoke and its completion; it must
//!   be in the sequence.
//! - `fail`: it did not take effect; it is left out (a value only a failed write
//!   wrote then has no writer, so reading it is a violation).
//! - `info` (and an invoke that never completed): unknown. A `get` is left out (it
//!   changed nothing and nobody saw its result). A `put` or `cas` may take effect at
//!   any point after its invoke, however late, or never: it has no completion that
//!   could order it before anything, and the search may leave it out.
//!
//! # How
//!
//! The history is cut into operations (each invoke paired with the next event of
//! its process, see [`operations`]), grouped by key. The events' positions in the
//! history give real time (the recorder appends an invoke before the request
//! leaves and a completion after the reply arrived, so an operation whose
//! completion comes before another's invoke in the history did finish before the
//! other started); `time_ns` is only shown to people.
//!
//! For each key, the search (Wing and Gong's, with Lowe's improvements, the one
//! Porcupine and Knossos's `linear` also use) walks a list of the key's invoke and
//! completion entries in history order, from which it takes out the operations it
//! has placed in the sequence so far:
//!
//! - It scans the list from its start. An invoke entry is a candidate to go next:
//!   nothing un-placed completed before it was invoked, or the scan would have met
//!   that completion first. If the operation's step is legal from the current
//!   register state, the search places it (its entries leave the list, the old state
//!   is pushed on a stack) and starts the scan again from the start of the list.
//!   Otherwise it goes on to the next entry.
//! - Meeting a completion entry means that operation had to be placed before
//!   everything after it in the list, and no candidate before it worked: the
//!   search backtracks: it pops the last placed operation off the stack, puts its
//!   entries back where they were (dancing links, so undoing is O(1)), restores the
//!   state, and resumes the scan at the entry after that operation's invoke, i.e.
//!   it tries the next candidate in its place.
//! - It succeeds when every `ok` operation is placed (`info` writes left in the list
//!   never happened), and fails when it must backtrack with nothing on the stack.
//!
//! Lowe's cache makes this practical: the search remembers every (set of placed
//! operations, register state) it has reached. Whatever follows depends only on
//! that pair, so reaching it again by another order is a dead end already explored
//! (or being explored), and that branch is cut. The set is a bitset over the key's
//! operations, stored without its leading all-ones and trailing all-zeros words:
//! in a history that is not wildly concurrent only a short window of operations is
//! in flight, so an entry costs a few words whatever the history's length. The
//! stack is explicit: no recursion, whatever the depth.
//!
//! Unknown writes are what make the search expensive: each may go anywhere after
//! its invoke, or nowhere. Two rules cut them down without losing any valid
//! sequence:
//!
//! - An `info` write whose value no `ok` get read and no CAS expected is dropped
//!   before searching: nothing needs the register to hold its value, so leaving it
//!   out never breaks a sequence. (Only the CASes kept count: dropping an unknown
//!   CAS may leave another unknown write unseen, so this is repeated until nothing
//!   more goes.)
//! - An `info` write is placed only right before a get or a CAS (which then reads
//!   or expects its value), never right before a put and never last. In a valid
//!   sequence, what directly follows an unknown write is a get or CAS that sees its
//!   value (one that does not could not be there), a put, or nothing; in the last
//!   two cases the unknown write can be taken out and the sequence stays valid (the
//!   put overwrites it, or nothing sees it). Doing so until no such write is left
//!   gives a valid sequence that follows the rule. What may come next now also
//!   depends on whether the last operation placed was an unknown write, so the
//!   cache entry records that too.
//!
//! Values are interned to small integers (0 = absent), so a state is a `u32`.
//!
//! # Bounds and reports
//!
//! Deciding linearizability is NP-complete, and proving a violation means trying
//! every order. Each key's search has a budget of steps (list entries looked at,
//! [`Options::max_steps_per_key`]); a key over it is reported as *undecided*,
//! neither passed nor failed. A key that fails is reported with the longest prefix
//! the search could place, the register's value after it, and the operations that
//! could have gone next, each with why it could not. All of it is deterministic:
//! keys in byte order, candidates in history order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::history::{from_hex, to_hex, Event, EventType, Func, Value};

/// What an operation asked for (and, for a get, what it read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read. `read` is what an `ok` get returned (`None`: absent); for a get
    /// that did not complete `ok` it is `None` and means nothing.
    Get {
        /// The value read.
        read: Option<Vec<u8>>,
    },
    /// A write.
    Put {
        /// The value written.
        value: Vec<u8>,
    },
    /// A compare-and-swap.
    Cas {
        /// The value expected, `None` for absent.
        expect: Option<Vec<u8>>,
        /// The value written when the compare matches.
        new: Vec<u8>,
    },
}

/// One operation: an invoke paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client process.
    pub process: u64,
    /// What it did.
    pub op: Op,
    /// `Ok`, `Fail` or `Info` (an invoke that never completed is `Info`).
    pub outcome: EventType,
    /// The position of its invoke in the history (from 0).
    pub invoke: usize,
    /// The position of its completion, `None` when it never completed.
    pub complete: Option<usize>,
    /// The invoke's `time_ns`.
    pub invoke_ns: u64,
    /// The completion's `time_ns`.
    pub complete_ns: Option<u64>,
}

/// Why a history is not well formed. `event` is a position in the history (from
/// 0).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A process completed an operation it had not invoked.
    #[error("event {event}: process {process} completes an operation it did not invoke")]
    CompletionWithoutInvoke {
        /// The completion.
        event: usize,
        /// Its process.
        process: u64,
    },
    /// A process invoked while its previous operation was still open.
    #[error("event {event}: process {process} invokes while its operation of event {open} is still open")]
    DoubleInvoke {
        /// The second invoke.
        event: usize,
        /// Its process.
        process: u64,
        /// The open invoke.
        open: usize,
    },
    /// A completion does not match its invoke (operation, key or value).
    #[error("event {event}: process {process}'s completion does not match its invoke (event {invoke}): {detail}")]
    Mismatch {
        /// The completion.
        event: usize,
        /// Its process.
        process: u64,
        /// Its invoke.
        invoke: usize,
        /// What differs.
        detail: String,
    },
    /// A key or value is not hex.
    #[error("event {event}: the {field} is not hex: {text:?}")]
    BadHex {
        /// The event.
        event: usize,
        /// Which field.
        field: &'static str,
        /// What it holds.
        text: String,
    },
    /// A value of the wrong shape for the operation (e.g. a put without a value).
    #[error("event {event}: {reason}")]
    BadValue {
        /// The event.
        event: usize,
        /// What is wrong.
        reason: String,
    },
}

/// How much work the checker may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// List entries the search of one key may look at before the key is reported
    /// undecided. This bounds the time and the cache (at most one entry, a few
    /// words, per step): the default 10M steps took 1.7 s and 130 MB on a history
    /// that needs them all, in a release build.
    pub max_steps_per_key: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_steps_per_key: 10_000_000,
        }
    }
}

/// A key whose history is not linearizable, with where the search got stuck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Vec<u8>,
    /// The operations the search had to place (`ok` ones, and `info` writes whose
    /// value someone saw).
    pub ops: usize,
    /// How many it could place at most (the longest linearizable prefix found).
    pub linearized: usize,
    /// The last operations of that prefix, in their order (at most
    /// [`SHOWN_PREFIX`]).
    pub prefix_tail: Vec<Operation>,
    /// The register after the prefix (`None`: absent).
    pub state: Option<Vec<u8>>,
    /// The operations that could have gone next, each with why it could not
    /// (`ok` ones first, at most [`SHOWN_STUCK`]).
    pub stuck: Vec<Stuck>,
    /// How many more could have gone next.
    pub stuck_more: usize,
}

/// An operation that could not go next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// The operation.
    pub op: Operation,
    /// Why not.
    pub why: String,
}

/// A key whose search ran out of budget: neither passed nor failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided {
    /// The key.
    pub key: Vec<u8>,
    /// The operations the search had to place.
    pub ops: usize,
    /// The steps it took.
    pub steps: u64,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Keys in the history.
    pub keys: usize,
    /// Operations that completed `ok`.
    pub ok: usize,
    /// Operations that completed `fail`.
    pub fail: usize,
    /// Operations with an unknown outcome (`info`, and invokes never completed).
    pub info: usize,
    /// Of `info`, the invokes never completed.
    pub unfinished: usize,
    /// Keys found linearizable.
    pub linearizable: usize,
    /// Keys found not linearizable, in key order.
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of budget, in key order.
    pub undecided: Vec<Undecided>,
    /// Search steps over all keys.
    pub steps: u64,
}

impl Report {
    /// Every key was found linearizable (no violation, nothing undecided).
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }
}

/// At most this many operations of the linearizable prefix are shown.
pub const SHOWN_PREFIX: usize = 8;

/// At most this many operations that could not go next are shown.
pub const SHOWN_STUCK: usize = 16;

/// Checks every key of `events` with the default [`Options`].
pub fn check(events: &[Event]) -> Result<Report, HistoryError> {
    check_with(events, &Options::default())
}

/// Checks every key of `events`.
pub fn check_with(events: &[Event], options: &Options) -> Result<Report, HistoryError> {
    let keys = operations(events)?;
    let mut report = Report {
        keys: keys.len(),
        ..Report::default()
    };
    for (key, ops) in keys {
        for o in &ops {
            match o.outcome {
                EventType::Ok => report.ok += 1,
                EventType::Fail => report.fail += 1,
                _ => report.info += 1,
            }
            report.unfinished += usize::from(o.complete.is_none());
        }
        let register = Register::new(&ops);
        let (found, steps) = register.search(options.max_steps_per_key);
        report.steps += steps;
        match found {
            Found::Linearizable => report.linearizable += 1,
            Found::OverBudget => report.undecided.push(Undecided {
                key,
                ops: register.ops.len(),
                steps,
            }),
            Found::Stuck { prefix, state } => report
                .violations
                .push(register.explain(key, &ops, &prefix, state)),
        }
    }
    Ok(report)
}

fn func_name(f: Func) -> &'static str {
    match f {
        Func::Get => "get",
        Func::Put => "put",
        Func::Cas => "cas",
    }
}

fn hex(event: usize, field: &'static str, text: &str) -> Result<Vec<u8>, HistoryError> {
    from_hex(text).ok_or_else(|| HistoryError::BadHex {
        event,
        field,
        text: text.to_string(),
    })
}

/// The operation an invoke (or a write's completion, which repeats it) carries.
fn carried_op(i: usize, e: &Event) -> Result<Op, HistoryError> {
    match (e.f, &e.value) {
        (Func::Get, _) => Ok(Op::Get { read: None }),
        (Func::Put, Value::Hex(v)) => Ok(Op::Put {
            value: hex(i, "value", v)?,
        }),
        (Func::Cas, Value::Cas(c)) => Ok(Op::Cas {
            expect: match &c.expect {
                Some(x) => Some(hex(i, "cas expect", x)?),
                None => None,
            },
            new: hex(i, "cas new", &c.new)?,
        }),
        (f, v) => Err(HistoryError::BadValue {
            event: i,
            reason: format!("a {} with the value {v:?}", func_name(f)),
        }),
    }
}

/// The operation once completed by `e` (event `i`): a get's read, or a write's
/// value, which must repeat the invoke's when present.
fn completed_op(i: usize, e: &Event, invoked: Op, invoke: usize) -> Result<Op, HistoryError> {
    if let Op::Get { .. } = invoked {
        let read = match (&e.value, e.kind) {
            (Value::Hex(v), EventType::Ok) => Some(hex(i, "value", v)?),
            (Value::Cas(_), EventType::Ok) => {
                return Err(HistoryError::BadValue {
                    event: i,
                    reason: "a get completed with a CAS value".into(),
                })
            }
            _ => None,
        };
        return Ok(Op::Get { read });
    }
    if e.value != Value::Null {
        let repeated = carried_op(i, e)?;
        if repeated != invoked {
            return Err(HistoryError::Mismatch {
                event: i,
                process: e.process,
                invoke,
                detail: format!("invoked {invoked}, completed {repeated}"),
            });
        }
    }
    Ok(invoked)
}

/// Pairs each invoke with its process's next event, and groups the operations by
/// key (each key's in invoke order). An invoke never completed is an `Info`
/// operation.
pub fn operations(events: &[Event]) -> Result<BTreeMap<Vec<u8>, Vec<Operation>>, HistoryError> {
    let mut open: HashMap<u64, (usize, Vec<u8>, Op)> = HashMap::new();
    let mut keys: BTreeMap<Vec<u8>, Vec<Operation>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let key = hex(i, "key", &e.key)?;
        if e.kind == EventType::Invoke {
            if let Some((j, ..)) = open.get(&e.process) {
                return Err(HistoryError::DoubleInvoke {
                    event: i,
                    process: e.process,
                    open: *j,
                });
            }
            let op = carried_op(i, e)?;
            open.insert(e.process, (i, key, op));
            continue;
        }
        let Some((j, invoked_key, op)) = open.remove(&e.process) else {
            return Err(HistoryError::CompletionWithoutInvoke {
                event: i,
                process: e.process,
            });
        };
        let inv = &events[j];
        if inv.f != e.f || invoked_key != key {
            return Err(HistoryError::Mismatch {
                event: i,
                process: e.process,
                invoke: j,
                detail: format!(
                    "invoked {} of key {}, completed {} of key {}",
                    func_name(inv.f),
                    inv.key,
                    func_name(e.f),
                    e.key
                ),
            });
        }
        let op = completed_op(i, e, op, j)?;
        keys.entry(key).or_default().push(Operation {
            process: e.process,
            op,
            outcome: e.kind,
            invoke: j,
            complete: Some(i),
            invoke_ns: inv.time_ns,
            complete_ns: Some(e.time_ns),
        });
    }
    for (process, (j, key, op)) in open {
        keys.entry(key).or_default().push(Operation {
            process,
            op,
            outcome: EventType::Info,
            invoke: j,
            complete: None,
            invoke_ns: events[j].time_ns,
            complete_ns: None,
        });
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|o| o.invoke);
    }
    Ok(keys)
}

/// An operation's effect on the register, values interned (0 = absent).
#[derive(Clone, Copy, Debug)]
enum Step {
    Get(u32),
    Put(u32),
    Cas(u32, u32),
}

impl Step {
    /// The state after the step from `state`, `None` when it cannot happen there.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Get(read) => (read == state).then_some(state),
            Step::Put(value) => Some(value),
            Step::Cas(expect, new) => (expect == state).then_some(new),
        }
    }
}

/// An operation the search places (`ok`), or may place (`info` write).
#[derive(Clone, Copy, Debug)]
struct SearchOp {
    /// Its index in the key's operations.
    index: usize,
    /// Its invoke's position in the history.
    call: usize,
    /// Its completion's position; `None` for an `info` write (it may take effect
    /// whenever, or never).
    ret: Option<usize>,
    step: Step,
}

/// One key's register problem.
struct Register {
    /// The operations to place, in invoke order.
    ops: Vec<SearchOp>,
    /// The interned values (`values[0]` stands for absent).
    values: Vec<Vec<u8>>,
}

/// What a key's search found.
enum Found {
    Linearizable,
    /// Not linearizable: the longest prefix placed (indexes into `Register::ops`)
    /// and the state after it.
    Stuck {
        prefix: Vec<usize>,
        state: u32,
    },
    OverBudget,
}

/// An operation placed, with what to restore when taking it back.
struct Placed {
    op: usize,
    state: u32,
    after_unknown: bool,
}

/// A key's search in progress.
struct Search<'a> {
    ops: &'a [SearchOp],
    /// The entries of the operations not placed, in history order.
    links: Links,
    /// The operations placed.
    bits: Vec<u64>,
    cache: HashSet<Seen>,
    stack: Vec<Placed>,
    state: u32,
    /// The last operation placed is an `info` write: only a get or CAS (one
    /// that sees its value) may follow.
    after_unknown: bool,
    /// The `ok` operations not placed.
    ok_left: usize,
}

impl Search<'_> {
    /// Places operation `k` next if it can go there and that point was not
    /// reached before.
    fn place(&mut self, k: usize) -> bool {
        let o = self.ops[k];
        if self.after_unknown && matches!(o.step, Step::Put(_)) {
            return false;
        }
        let Some(after) = o.step.apply(self.state) else {
            return false;
        };
        let unknown = o.ret.is_none();
        self.bits[k / 64] |= 1 << (k % 64);
        if !self.cache.insert(Seen::new(&self.bits, after, unknown)) {
            self.bits[k / 64] &= !(1 << (k % 64));
            return false;
        }
        self.stack.push(Placed {
            op: k,
            state: self.state,
            after_unknown: self.after_unknown,
        });
        self.state = after;
        self.after_unknown = unknown;
        self.links.unlink(call_node(k));
        if !unknown {
            self.ok_left -= 1;
            self.links.unlink(ret_node(k));
        }
        true
    }

    /// Takes back the last operation placed, `None` when there is none.
    fn undo(&mut self) -> Option<usize> {
        let p = self.stack.pop()?;
        let k = p.op;
        self.state = p.state;
        self.after_unknown = p.after_unknown;
        self.bits[k / 64] &= !(1 << (k % 64));
        if self.ops[k].ret.is_some() {
            self.ok_left += 1;
            self.links.relink(ret_node(k));
        }
        self.links.relink(call_node(k));
        Some(k)
    }
}

/// A cache entry: a set of placed operations (a bitset without its leading
/// all-ones and trailing all-zeros words), a state, and whether the last
/// operation placed is an `info` write (then only a get or CAS may follow).
#[derive(Hash, PartialEq, Eq)]
struct Seen {
    first: u32,
    words: Box<[u64]>,
    state: u32,
    after_unknown: bool,
}

impl Seen {
    fn new(bits: &[u64], state: u32, after_unknown: bool) -> Seen {
        let first = bits
            .iter()
            .position(|&w| w != u64::MAX)
            .unwrap_or(bits.len());
        let end = bits
            .iter()
            .rposition(|&w| w != 0)
            .map_or(first, |p| (p + 1).max(first));
        Seen {
            first: first as u32,
            words: bits[first..end].into(),
            state,
            after_unknown,
        }
    }
}

const HEAD: usize = 0;
const TAIL: usize = 1;

/// The list node of an operation's invoke entry.
fn call_node(op: usize) -> usize {
    2 + 2 * op
}

/// The list node of an operation's completion entry.
fn ret_node(op: usize) -> usize {
    3 + 2 * op
}

/// A doubly linked list of entries whose removals are undone in reverse order.
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }
}

/// The id of `v` (0 for absent), numbering new values as they come.
fn intern<'a>(
    ids: &mut HashMap<&'a [u8], u32>,
    values: &mut Vec<Vec<u8>>,
    v: Option<&'a [u8]>,
) -> u32 {
    let Some(v) = v else { return 0 };
    *ids.entry(v).or_insert_with(|| {
        values.push(v.to_vec());
        (values.len() - 1) as u32
    })
}

impl Register {
    /// The problem for a key's operations (in invoke order): `fail` operations and
    /// `info` gets left out, and `info` writes of a value nobody saw.
    fn new(all: &[Operation]) -> Register {
        let mut ids: HashMap<&[u8], u32> = HashMap::new();
        let mut values = vec![Vec::new()];
        let mut ops = Vec::new();
        for (index, o) in all.iter().enumerate() {
            let ok = o.outcome == EventType::Ok;
            if !ok && o.outcome != EventType::Info {
                continue;
            }
            let step = match &o.op {
                Op::Get { read } if ok => Step::Get(intern(&mut ids, &mut values, read.as_deref())),
                Op::Get { .. } => continue,
                Op::Put { value } => {
                    Step::Put(intern(&mut ids, &mut values, Some(value.as_slice())))
                }
                Op::Cas { expect, new } => Step::Cas(
                    intern(&mut ids, &mut values, expect.as_deref()),
                    intern(&mut ids, &mut values, Some(new.as_slice())),
                ),
            };
            ops.push(SearchOp {
                index,
                call: o.invoke,
                ret: if ok { o.complete } else { None },
                step,
            });
        }
        // Dropping an unknown CAS may leave the value it expected unseen: repeat.
        loop {
            let seen: HashSet<u32> = ops
                .iter()
                .filter_map(|o| match o.step {
                    Step::Get(v) | Step::Cas(v, _) => Some(v),
                    Step::Put(_) => None,
                })
                .collect();
            let before = ops.len();
            ops.retain(|o| match o.step {
                Step::Put(v) | Step::Cas(_, v) => o.ret.is_some() || seen.contains(&v),
                Step::Get(_) => true,
            });
            if ops.len() == before {
                return Register { ops, values };
            }
        }
    }

    /// The list of invoke and completion entries in history order, between `HEAD`
    /// and `TAIL`.
    fn links(&self) -> Links {
        let mut entries: Vec<(usize, usize)> = Vec::with_capacity(2 * self.ops.len());
        for (k, o) in self.ops.iter().enumerate() {
            entries.push((o.call, call_node(k)));
            if let Some(ret) = o.ret {
                entries.push((ret, ret_node(k)));
            }
        }
        entries.sort_unstable();
        let n = 2 + 2 * self.ops.len();
        let mut links = Links {
            next: vec![TAIL; n],
            prev: vec![HEAD; n],
        };
        let mut last = HEAD;
        for &(_, node) in &entries {
            links.next[last] = node;
            links.prev[node] = last;
            last = node;
        }
        links.next[last] = TAIL;
        links.prev[TAIL] = last;
        links
    }

    /// Wing and Gong's search with Lowe's cache, at most `budget` steps.
    fn search(&self, budget: u64) -> (Found, u64) {
        let mut s = Search {
            ops: &self.ops,
            links: self.links(),
            bits: vec![0u64; self.ops.len().div_ceil(64)],
            cache: HashSet::new(),
            stack: Vec::new(),
            state: 0,
            after_unknown: false,
            ok_left: self.ops.iter().filter(|o| o.ret.is_some()).count(),
        };
        let mut best: (Vec<usize>, u32) = (Vec::new(), 0);
        let mut steps = 0u64;
        let mut entry = s.links.next[HEAD];
        loop {
            if s.ok_left == 0 {
                return (Found::Linearizable, steps);
            }
            if steps >= budget {
                return (Found::OverBudget, steps);
            }
            steps += 1;
            // A completion (or the end): what is after it cannot go next.
            if entry == TAIL || (entry - 2) % 2 == 1 {
                if s.stack.len() > best.0.len() && !s.after_unknown {
                    best = (s.stack.iter().map(|p| p.op).collect(), s.state);
                }
                let Some(k) = s.undo() else {
                    let (prefix, state) = best;
                    return (Found::Stuck { prefix, state }, steps);
                };
                entry = s.links.next[call_node(k)];
                continue;
            }
            let k = (entry - 2) / 2;
            if s.place(k) {
                entry = s.links.next[HEAD];
                continue;
            }
            entry = s.links.next[entry];
        }
    }

    fn value(&self, id: u32) -> Option<Vec<u8>> {
        (id != 0).then(|| self.values[id as usize].clone())
    }

    /// The violation for a search stuck after `prefix`, in state `state`.
    fn explain(&self, key: Vec<u8>, all: &[Operation], prefix: &[usize], state: u32) -> Violation {
        let ops = &self.ops;
        let mut placed = vec![false; ops.len()];
        for &k in prefix {
            placed[k] = true;
        }
        // The un-placed `ok` operation that completed first: whatever goes next
        // was invoked before that completion.
        let first_ret = (0..ops.len())
            .filter(|&k| !placed[k])
            .filter_map(|k| ops[k].ret)
            .min()
            .unwrap_or(usize::MAX);
        let shown = |v: u32| show(self.value(v).as_deref());
        // The `ok` candidates first, then the unknown writes.
        let mut candidates: Vec<usize> = (0..ops.len())
            .filter(|&k| !placed[k] && ops[k].call < first_ret)
            .collect();
        candidates.sort_by_key(|&k| ops[k].ret.is_none());
        let stuck_more = candidates.len().saturating_sub(SHOWN_STUCK);
        candidates.truncate(SHOWN_STUCK);
        let stuck = candidates
            .into_iter()
            .map(|k| {
                let o = &ops[k];
                let mut why = match (o.step.apply(state), o.step) {
                    (Some(_), _) => "placing it next leads to a dead end later".to_string(),
                    (None, Step::Get(read)) => format!(
                        "it read {} but the register holds {}",
                        shown(read),
                        shown(state)
                    ),
                    (None, Step::Cas(expect, _)) => format!(
                        "it expects {} but the register holds {}",
                        shown(expect),
                        shown(state)
                    ),
                    (None, Step::Put(_)) => unreachable!("a put can always be placed"),
                };
                if o.ret == Some(first_ret) {
                    let end = format!("; it must go before anything invoked after #{first_ret}");
                    why.push_str(&end);
                }
                Stuck {
                    op: all[o.index].clone(),
                    why,
                }
            })
            .collect();
        let tail = &prefix[prefix.len().saturating_sub(SHOWN_PREFIX)..];
        Violation {
            key,
            ops: ops.len(),
            linearized: prefix.len(),
            prefix_tail: tail.iter().map(|&k| all[ops[k].index].clone()).collect(),
            state: self.value(state),
            stuck,
            stuck_more,
        }
    }
}

/// A value for people: `"text"` when it is printable ASCII, hex otherwise,
/// `absent` for `None`.
pub fn show(v: Option<&[u8]>) -> String {
    match v {
        None => "absent".into(),
        Some(b) if !b.is_empty() && b.iter().all(|c| (0x20..0x7f).contains(c) && *c != b'"') => {
            format!("\"{}\"", String::from_utf8_lossy(b))
        }
        Some(b) => format!("0x{}", to_hex(b)),
    }
}

fn outcome_name(t: EventType) -> &'static str {
    match t {
        EventType::Invoke => "invoke",
        EventType::Ok => "ok",
        EventType::Fail => "fail",
        EventType::Info => "info",
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}ms", ns as f64 / 1e6)
}

impl fmt::Display for Operation {
    /// `#12 1.000ms..#15 1.300ms p3 put "3-4" ok` (positions in the history, then
    /// times).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match (self.complete, self.complete_ns) {
            (Some(i), Some(t)) => format!("#{i} {}", ms(t)),
            _ => "never completed".into(),
        };
        write!(
            f,
            "#{} {}..{end} p{} ",
            self.invoke,
            ms(self.invoke_ns),
            self.process
        )?;
        match &self.op {
            Op::Get { read } if self.outcome == EventType::Ok => {
                write!(f, "get -> {}", show(read.as_deref()))?
            }
            op => write!(f, "{op}")?,
        }
        write!(f, " {}", outcome_name(self.outcome))
    }
}

impl fmt::Display for Op {
    /// `get`, `put "a"`, `cas "a" -> "b"` (values as [`show`] gives them; a get's
    /// read is not shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { .. } => write!(f, "get"),
            Op::Put { value } => write!(f, "put {}", show(Some(value))),
            Op::Cas { expect, new } => {
                write!(f, "cas {} -> {}", show(expect.as_deref()), show(Some(new)))
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: not linearizable: at most {} of its {} operations can be ordered",
            to_hex(&self.key),
            self.linearized,
            self.ops
        )?;
        if self.prefix_tail.is_empty() {
            writeln!(f, "  nothing can go first")?;
        } else {
            writeln!(f, "  the longest order found ends with:")?;
            for o in &self.prefix_tail {
                writeln!(f, "    {o}")?;
            }
        }
        writeln!(
            f,
            "  the register then holds {}; none of these can go next:",
            show(self.state.as_deref())
        )?;
        for s in &self.stuck {
            writeln!(f, "    {}: {}", s.op, s.why)?;
        }
        if self.stuck_more > 0 {
            writeln!(f, "    and {} more", self.stuck_more)?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "linearizability: {} keys, {} operations ({} ok, {} fail, {} info of which {} \
             never completed): {} linearizable, {} not, {} undecided ({} search steps)",
            self.keys,
            self.ok + self.fail + self.info,
            self.ok,
            self.fail,
            self.info,
            self.unfinished,
            self.linearizable,
            self.violations.len(),
            self.undecided.len(),
            self.steps
        )?;
        for v in &self.violations {
            write!(f, "{v}")?;
        }
        for u in &self.undecided {
            writeln!(
                f,
                "key {}: undecided: {} operations, gave up after {} steps",
                to_hex(&u.key),
                u.ops,
                u.steps
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        fn push(
            &mut self,
            process: u64,
            kind: EventType,
            f: Func,
            key: &str,
            value: Value,
        ) -> &mut H {
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

    /// The default budget's time and memory (run in release, with --ignored).
    #[test]
    #[ignore]
    fn measure_default_budget() {
        let start = Instant::now();
        let r = check(&exponential().events).unwrap();
        println!("{:?}: {r}", start.elapsed());
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
    fn generate(
        seed: u64,
        processes: u64,
        per_process: usize,
        keys: usize,
        info: u32,
    ) -> Vec<Event> {
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
}
