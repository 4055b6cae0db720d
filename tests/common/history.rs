//! Histories of key-value operations and their consistency checks, shared by
//! the simulation test (`tests/simulation.rs`) and the real-cluster test.
//!
//! A [`History`] is the sequence of invocations and returns of single-threaded
//! clients, in real-time order ([`History::merge`] builds one from per-client
//! timed logs). The reference object ([`KvSpec`]) is a map of string values:
//! `Get` returns the current value, `Set` stores, and `Cas { expected, .. }`
//! stores only if the current value equals `expected` (`NotFound` if absent,
//! else `Exists`). In the workloads every write writes a globally unique
//! value, so "the cas unique the client saw with `gets` still matches" is the
//! same as "the value is still the one the client saw".
//!
//! [`KvRet::Failed`] is an operation whose outcome is unknown (timeout,
//! `SERVER_ERROR`): it may take effect at any time after its invocation, or
//! never. It stays in flight for ever, at the end of its client's thread; the
//! client's later operations form a new thread. (For sequential consistency
//! this forgets the program order between the client's operations before and
//! after the failure: weaker, never wrong.) An operation still outstanding at
//! the end of the history is treated alike. An operation known to have had
//! no effect (refused at once) is better dropped with [`History::cancel`].
//!
//! Linearizability is local, so [`check_linearizable`] checks each key on its
//! own; sequential consistency is not, so [`check_sequential`] checks the
//! whole history against the whole map. Both run one memoized depth-first
//! search (`Search`, see its doc for the reductions that keep it small:
//! histories of a few hundred operations of a dozen clients check in
//! milliseconds). Unique written values make it much faster but are not
//! needed for a correct answer. What stays hard is sequential consistency
//! with many unknown outcomes (no real time bounds where they take effect):
//! a search that passes `MAX_STATES` gives up with an "inconclusive" error.
//!
//! stateright's testers ([`stateright_linearizable`],
//! [`stateright_sequential`]) decide the same questions without memoization,
//! which is exponential (its sequential tester takes minutes on 24 operations
//! of 6 clients): they are the independent oracle the checks are compared
//! with on small random histories, and [`KvSpec`] is their reference object.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use stateright::semantics::{
    ConsistencyTester, LinearizabilityTester, SequentialConsistencyTester, SequentialSpec,
};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    Get(String),
    Set(String, String),
    Cas {
        key: String,
        expected: String,
        new: String,
    },
}

impl KvOp {
    pub fn key(&self) -> &str {
        match self {
            KvOp::Get(key) | KvOp::Set(key, _) | KvOp::Cas { key, .. } => key,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvRet {
    Value(Option<String>),
    Stored,
    Exists,
    NotFound,
    /// The outcome is unknown: it may or may not have taken effect.
    Failed,
}

/// The sequential reference object: a map of string values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvSpec(BTreeMap<String, String>);

impl SequentialSpec for KvSpec {
    type Op = KvOp;
    type Ret = KvRet;

    fn invoke(&mut self, op: &KvOp) -> KvRet {
        match op {
            KvOp::Get(key) => KvRet::Value(self.0.get(key).cloned()),
            KvOp::Set(key, value) => {
                self.0.insert(key.clone(), value.clone());
                KvRet::Stored
            }
            KvOp::Cas { key, expected, new } => match self.0.get(key) {
                None => KvRet::NotFound,
                Some(current) if current == expected => {
                    self.0.insert(key.clone(), new.clone());
                    KvRet::Stored
                }
                Some(_) => KvRet::Exists,
            },
        }
    }

    fn is_valid_step(&mut self, op: &KvOp, ret: &KvRet) -> bool {
        // Reads compare without cloning the value.
        match (op, ret) {
            (KvOp::Get(key), KvRet::Value(seen)) => self.0.get(key) == seen.as_ref(),
            (KvOp::Get(_), _) => false,
            _ => &self.invoke(op) == ret,
        }
    }
}

impl KvSpec {
    /// Whether read-only `op` (a `Get`, a failed `Cas`) may return `ret` now.
    fn reads(&self, op: &KvOp, ret: &KvRet) -> bool {
        match (op, ret) {
            (KvOp::Get(key), KvRet::Value(seen)) => self.0.get(key) == seen.as_ref(),
            (KvOp::Cas { key, .. }, KvRet::NotFound) => !self.0.contains_key(key),
            (KvOp::Cas { key, expected, .. }, KvRet::Exists) => {
                self.0.get(key).is_some_and(|current| current != expected)
            }
            _ => false,
        }
    }
}

/// One event of a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Invoke(KvOp),
    Ret(KvRet),
}

/// Invocations and returns of clients, in real-time order.
#[derive(Clone, Debug, Default)]
pub struct History {
    events: Vec<(usize, Event)>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// `client` invokes `op` (call in real-time order).
    pub fn invoke(&mut self, client: usize, op: KvOp) {
        self.events.push((client, Event::Invoke(op)));
    }

    /// `client`'s outstanding operation returns `ret`.
    pub fn ret(&mut self, client: usize, ret: KvRet) {
        self.events.push((client, Event::Ret(ret)));
    }

    /// `client`'s outstanding operation was refused: it certainly had no
    /// effect, so it leaves the history (unlike [`KvRet::Failed`]).
    pub fn cancel(&mut self, client: usize) {
        let last = self.events.iter().rposition(|(c, _)| *c == client);
        match last {
            Some(i) if matches!(self.events[i].1, Event::Invoke(_)) => {
                self.events.remove(i);
            }
            _ => panic!("client {client} has no outstanding operation to cancel"),
        }
    }

    pub fn events(&self) -> &[(usize, Event)] {
        &self.events
    }

    /// How many operations were invoked.
    pub fn len(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Invoke(_)))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Merges per-client logs of `(time, event)`, each in its client's own
    /// order, into one history in time order. At equal times an invocation
    /// goes before a return of another client (claiming no real-time order
    /// that was not observed).
    pub fn merge<T: Ord + Copy>(logs: Vec<(usize, Vec<(T, Event)>)>) -> History {
        let mut queues: Vec<(usize, std::collections::VecDeque<(T, Event)>)> = logs
            .into_iter()
            .map(|(client, log)| (client, log.into()))
            .collect();
        let mut history = History::new();
        loop {
            let next = queues
                .iter()
                .enumerate()
                .filter_map(|(i, (_, q))| {
                    q.front().map(|(t, e)| (*t, matches!(e, Event::Ret(_)), i))
                })
                .min();
            let Some((_, _, i)) = next else {
                return history;
            };
            let (client, queue) = &mut queues[i];
            let (_, event) = queue.pop_front().expect("front exists");
            history.events.push((*client, event));
        }
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (client, event) in &self.events {
            match event {
                Event::Invoke(op) => writeln!(f, "  c{client} invoke {op:?}")?,
                Event::Ret(ret) => writeln!(f, "  c{client}     -> {ret:?}")?,
            }
        }
        Ok(())
    }
}

/// One operation as the checkers see it.
#[derive(Clone, Debug)]
struct Call {
    op: KvOp,
    /// `None`: in flight for ever (its outcome is unknown).
    ret: Option<KvRet>,
    /// Positions of its invocation and return in the history.
    invoked: usize,
    returned: usize,
}

/// Splits `h` into threads of operations: a client's operations run on one
/// thread until one fails, which stays in flight at the end of that thread;
/// the client's later operations run on a new thread.
fn threads(h: &History) -> Result<Vec<Vec<Call>>, String> {
    let mut of_client: BTreeMap<usize, usize> = BTreeMap::new();
    let mut threads: Vec<Vec<Call>> = Vec::new();
    let mut outstanding: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, (client, event)) in h.events.iter().enumerate() {
        let thread = *of_client.entry(*client).or_insert_with(|| {
            threads.push(Vec::new());
            threads.len() - 1
        });
        match event {
            Event::Invoke(op) => {
                if let Some(&before) = outstanding.get(client) {
                    return Err(format!(
                        "event {i}: client {client} invokes {op:?} while event {before}'s \
                         operation is outstanding"
                    ));
                }
                outstanding.insert(*client, i);
                threads[thread].push(Call {
                    op: op.clone(),
                    ret: None,
                    invoked: i,
                    returned: usize::MAX,
                });
            }
            Event::Ret(ret) => {
                if outstanding.remove(client).is_none() {
                    return Err(format!(
                        "event {i}: client {client} returns {ret:?} with nothing outstanding"
                    ));
                }
                if *ret == KvRet::Failed {
                    of_client.remove(client);
                } else {
                    let call = threads[thread].last_mut().expect("the invocation");
                    call.ret = Some(ret.clone());
                    call.returned = i;
                }
            }
        }
    }
    // An operation still outstanding at the end is in flight, like a failed one.
    threads.retain(|t| !t.is_empty());
    Ok(threads)
}

/// The largest search (distinct states visited) a check may make before it
/// gives up as inconclusive.
const MAX_STATES: usize = 1_000_000;

/// An interned value: keys and values become small numbers for the search.
type Id = u32;
/// The value of an absent key.
const ABSENT: Id = Id::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Set,
    Cas { expected: Id },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Value(Id),
    Stored,
    Exists,
    NotFound,
    /// In flight: failed, or still outstanding at the end.
    Unknown,
}

/// One operation, interned.
#[derive(Clone, Copy, Debug)]
struct Step {
    key: usize,
    kind: Kind,
    /// What a `Set` or `Cas` writes.
    value: Id,
    seen: Seen,
    invoked: usize,
    returned: usize,
}

impl Step {
    fn done(&self) -> bool {
        self.seen != Seen::Unknown
    }

    /// Completed and changes nothing: a `Get`, a failed `Cas`.
    fn read_only(&self) -> bool {
        match self.kind {
            Kind::Get => true,
            Kind::Set => false,
            Kind::Cas { .. } => matches!(self.seen, Seen::Exists | Seen::NotFound),
        }
    }

    /// What the key must hold when this completed operation takes effect.
    fn needs(&self) -> Option<(usize, Id)> {
        match (self.kind, self.seen) {
            (Kind::Get, Seen::Value(v)) => Some((self.key, v)),
            (Kind::Cas { expected }, Seen::Stored) => Some((self.key, expected)),
            (Kind::Cas { .. }, Seen::NotFound) => Some((self.key, ABSENT)),
            _ => None,
        }
    }

    /// Whether this completed read-only operation may return what it did
    /// when the key holds `current`.
    fn reads(&self, current: Id) -> bool {
        match (self.kind, self.seen) {
            (Kind::Get, Seen::Value(v)) => current == v,
            (Kind::Cas { .. }, Seen::NotFound) => current == ABSENT,
            (Kind::Cas { expected }, Seen::Exists) => current != ABSENT && current != expected,
            _ => false,
        }
    }

    /// Whether this write (completed or in flight) writes when the key holds
    /// `current` and, if completed, returns what it did.
    fn writes(&self, current: Id) -> bool {
        match (self.kind, self.seen) {
            (Kind::Set, Seen::Stored | Seen::Unknown) => true,
            (Kind::Cas { expected }, Seen::Stored | Seen::Unknown) => current == expected,
            _ => false,
        }
    }
}

/// Interns `threads`' keys and values.
fn intern<'a>(threads: &'a [Vec<Call>]) -> (Vec<Vec<Step>>, usize) {
    let mut keys: HashMap<&'a str, usize> = HashMap::new();
    let mut values: HashMap<&'a str, Id> = HashMap::new();
    let mut value = |v: &'a str| {
        let next = values.len() as Id;
        *values.entry(v).or_insert(next)
    };
    let mut steps = Vec::new();
    for thread in threads {
        let mut out = Vec::new();
        for call in thread {
            let next = keys.len();
            let key = *keys.entry(call.op.key()).or_insert(next);
            let (kind, written) = match &call.op {
                KvOp::Get(_) => (Kind::Get, ABSENT),
                KvOp::Set(_, v) => (Kind::Set, value(v)),
                KvOp::Cas { expected, new, .. } => (
                    Kind::Cas {
                        expected: value(expected),
                    },
                    value(new),
                ),
            };
            let seen = match &call.ret {
                None | Some(KvRet::Failed) => Seen::Unknown,
                Some(KvRet::Value(None)) => Seen::Value(ABSENT),
                Some(KvRet::Value(Some(v))) => Seen::Value(value(v)),
                Some(KvRet::Stored) => Seen::Stored,
                Some(KvRet::Exists) => Seen::Exists,
                Some(KvRet::NotFound) => Seen::NotFound,
            };
            out.push(Step {
                key,
                kind,
                value: written,
                seen,
                invoked: call.invoked,
                returned: call.returned,
            });
        }
        steps.push(out);
    }
    (steps, keys.len())
}

/// A depth-first search for a legal sequential order of the threads'
/// operations that keeps each thread's order and, with `real_time`, the
/// order of operations that did not overlap. What keeps it small:
/// - a read-only operation (a `Get`, a failed `Cas`) that may go now and is
///   legal now is taken at once: moving a read-only operation earlier, to
///   where it may go and is legal, never invalidates an order;
/// - a state (how far each thread got, the map) is explored once (Lowe's
///   cache for Wing & Gong's algorithm);
/// - when every write writes a distinct value (`unique`), a write never
///   overwrites a value that an operation not yet ordered needs (a read of
///   it, a `cas` expecting it): that value could never come back;
/// - a write in flight (outcome unknown) is tried only when the next
///   operation of some thread needs it (reads its value, is a `cas`
///   expecting it, or a failed `cas` it makes legal): moved later to just
///   before the first operation that needs it, or dropped if none does, it
///   still gives a legal order, as nothing in between can observe it;
/// - writes whose value some thread's next operation needs are tried first.
struct Search {
    threads: Vec<Vec<Step>>,
    real_time: bool,
    unique: bool,
    pos: Vec<usize>,
    /// The map: per key, the value it holds.
    state: Vec<Id>,
    /// Operations not yet ordered that need `(key, value)`.
    demand: HashMap<(usize, Id), usize>,
    /// Visited states: positions, then the map.
    seen: HashSet<Vec<Id>>,
}

impl Search {
    fn new(threads: &[Vec<Call>], real_time: bool) -> Search {
        let (threads, keys) = intern(threads);
        let mut written = HashSet::new();
        let unique = threads
            .iter()
            .flatten()
            .filter(|s| s.kind != Kind::Get)
            .all(|s| written.insert((s.key, s.value)));
        let mut demand = HashMap::new();
        for need in threads.iter().flatten().filter_map(Step::needs) {
            *demand.entry(need).or_insert(0) += 1;
        }
        Search {
            pos: vec![0; threads.len()],
            threads,
            real_time,
            unique,
            state: vec![ABSENT; keys],
            demand,
            seen: HashSet::new(),
        }
    }

    /// The next operation of thread `t`, if any.
    fn next(&self, t: usize) -> Option<&Step> {
        self.threads[t].get(self.pos[t])
    }

    /// With real time: an operation may go next only if it was invoked
    /// before every operation not yet ordered returned.
    fn limit(&self) -> usize {
        if !self.real_time {
            return usize::MAX;
        }
        (0..self.threads.len())
            .filter_map(|t| self.next(t).map(|s| s.returned))
            .min()
            .unwrap_or(usize::MAX)
    }

    fn finished(&self) -> bool {
        (0..self.threads.len()).all(|t| self.threads[t][self.pos[t]..].iter().all(|s| !s.done()))
    }

    fn advance(&mut self, t: usize) {
        if let Some(need) = self.threads[t][self.pos[t]].needs() {
            *self.demand.get_mut(&need).expect("counted") -= 1;
        }
        self.pos[t] += 1;
    }

    fn retreat(&mut self, t: usize) {
        self.pos[t] -= 1;
        if let Some(need) = self.threads[t][self.pos[t]].needs() {
            *self.demand.get_mut(&need).expect("counted") += 1;
        }
    }

    /// Takes every read-only operation that may go and is legal now;
    /// returns the threads advanced, to undo.
    fn take_reads(&mut self) -> Vec<usize> {
        let mut taken = Vec::new();
        loop {
            let limit = self.limit();
            let before = taken.len();
            for t in 0..self.threads.len() {
                while let Some(&step) = self.next(t) {
                    if step.invoked < limit && step.read_only() && step.reads(self.state[step.key])
                    {
                        self.advance(t);
                        taken.push(t);
                    } else {
                        break;
                    }
                }
            }
            if taken.len() == before {
                return taken;
            }
        }
    }

    /// The threads whose next operation is a write worth trying now.
    fn candidates(&self) -> Vec<usize> {
        let limit = self.limit();
        let next: Vec<Step> = (0..self.threads.len())
            .filter_map(|t| self.next(t).copied())
            .filter(|s| s.invoked < limit)
            .collect();
        let mut writes: Vec<(bool, usize)> = Vec::new();
        for t in 0..self.threads.len() {
            let Some(&step) = self.next(t) else {
                continue;
            };
            if step.invoked >= limit || step.kind == Kind::Get || step.read_only() {
                continue;
            }
            let current = self.state[step.key];
            if !step.writes(current) {
                continue; // not legal now (or, in flight, no effect)
            }
            let wanted = next
                .iter()
                .any(|n| n.needs() == Some((step.key, step.value)));
            if !step.done() {
                // In flight: only right before an operation that needs it.
                let enables = next.iter().any(|n| {
                    n.key == step.key
                        && match (n.kind, n.seen) {
                            (Kind::Cas { expected }, Seen::Unknown) => expected == step.value,
                            (_, Seen::Exists) => !n.reads(current) && n.reads(step.value),
                            _ => false,
                        }
                });
                if !wanted && !enables {
                    continue;
                }
            }
            writes.push((!wanted, t));
        }
        writes.sort();
        writes.into_iter().map(|(_, t)| t).collect()
    }

    fn run(&mut self) -> Result<bool, String> {
        let taken = self.take_reads();
        let found = self.branch();
        for t in taken.into_iter().rev() {
            self.retreat(t);
        }
        found
    }

    fn branch(&mut self) -> Result<bool, String> {
        if self.finished() {
            return Ok(true);
        }
        if self.seen.len() >= MAX_STATES {
            return Err(format!(
                "inconclusive: the search visited {MAX_STATES} states; check a smaller history"
            ));
        }
        let visit: Vec<Id> = self
            .pos
            .iter()
            .map(|&p| p as Id)
            .chain(self.state.iter().copied())
            .collect();
        if !self.seen.insert(visit) {
            return Ok(false);
        }
        for t in self.candidates() {
            let step = self.threads[t][self.pos[t]];
            let old = self.state[step.key];
            if self.unique {
                // Would this write destroy a value still needed elsewhere?
                let needed = self.demand.get(&(step.key, old)).copied().unwrap_or(0);
                let own = usize::from(step.needs() == Some((step.key, old)));
                if needed > own {
                    continue;
                }
            }
            self.state[step.key] = step.value;
            self.advance(t);
            let found = self.run();
            self.retreat(t);
            self.state[step.key] = old;
            if found? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn search(threads: &[Vec<Call>], real_time: bool) -> Result<bool, String> {
    Search::new(threads, real_time).run()
}

fn show(threads: &[Vec<Call>]) -> String {
    let mut calls: Vec<(usize, usize, &Call)> = threads
        .iter()
        .enumerate()
        .flat_map(|(t, calls)| calls.iter().map(move |c| (c.invoked, t, c)))
        .collect();
    calls.sort_by_key(|&(invoked, ..)| invoked);
    let mut s = String::new();
    for (_, t, c) in calls {
        let ret = match (&c.ret, c.returned) {
            (Some(ret), at) => format!("{ret:?} (at event {at})"),
            (None, _) => "unknown (failed or outstanding)".to_string(),
        };
        s += &format!("  event {:>4} t{t}: {:?} -> {ret}\n", c.invoked, c.op);
    }
    s
}

/// Whether `h` is linearizable for a map of string values (checked key by
/// key: linearizability is local).
pub fn check_linearizable(h: &History) -> Result<(), String> {
    let all = threads(h)?;
    let keys: BTreeSet<&str> = all.iter().flatten().map(|c| c.op.key()).collect();
    for key in keys {
        let of_key: Vec<Vec<Call>> = all
            .iter()
            .map(|t| t.iter().filter(|c| c.op.key() == key).cloned().collect())
            .filter(|t: &Vec<Call>| !t.is_empty())
            .collect();
        if !search(&of_key, true)? {
            return Err(format!(
                "not linearizable: no legal order of key {key:?}'s operations respects real time \
                 (t = client thread; a failed op ends its thread):\n{}",
                show(&of_key)
            ));
        }
    }
    Ok(())
}

/// Whether `h` is sequentially consistent for a map of string values.
pub fn check_sequential(h: &History) -> Result<(), String> {
    let threads = threads(h)?;
    if search(&threads, false)? {
        Ok(())
    } else {
        Err(format!(
            "not sequentially consistent: no legal order of all operations respects every \
             client's program order (t = client thread; a failed op ends its thread):\n{}",
            show(&threads)
        ))
    }
}

/// [`check_linearizable`] by stateright's [`LinearizabilityTester`] on the
/// whole history. Its search is exponential: small histories only (it serves
/// as an independent oracle for the checkers above).
pub fn stateright_linearizable(h: &History) -> Result<bool, String> {
    let mut tester = LinearizabilityTester::new(KvSpec::default());
    feed(&mut tester, h)?;
    Ok(tester.is_consistent())
}

/// [`check_sequential`] by stateright's [`SequentialConsistencyTester`]:
/// small histories only (24 operations of 6 clients can take minutes).
pub fn stateright_sequential(h: &History) -> Result<bool, String> {
    let mut tester = SequentialConsistencyTester::new(KvSpec::default());
    feed(&mut tester, h)?;
    Ok(tester.is_consistent())
}

/// Feeds `h` to a stateright tester: a failed operation is invoked and never
/// returns, and its client goes on as a new tester thread.
fn feed<C: ConsistencyTester<usize, KvSpec>>(tester: &mut C, h: &History) -> Result<(), String> {
    let mut of_client: BTreeMap<usize, usize> = BTreeMap::new();
    let mut next = 0;
    for (client, event) in &h.events {
        let thread = *of_client.entry(*client).or_insert_with(|| {
            next += 1;
            next - 1
        });
        match event {
            Event::Invoke(op) => {
                tester.on_invoke(thread, op.clone())?;
            }
            Event::Ret(KvRet::Failed) => {
                of_client.remove(client);
            }
            Event::Ret(ret) => {
                tester.on_return(thread, ret.clone())?;
            }
        }
    }
    Ok(())
}
