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
    /// that needs them all, in a release build (measured with the exponential
    /// history of `tests.rs` checked under the default options, timed and watched
    /// with `/usr/bin/time -v`).
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

mod display;
mod parse;

pub use display::show;
pub use parse::operations;

#[cfg(test)]
mod tests;
