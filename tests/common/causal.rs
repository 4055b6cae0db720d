//! Causal-consistency checks over a history of sessions, for causal mode
//! (issue 13), and the replicas' convergence check after healing.
//!
//! A [`CausalHistory`] is one ordered list of operations per session (one
//! client connection): [`Op::Write`], [`Op::Read`] (`None` is the initial
//! value: the key absent) and [`Op::MaybeWrite`], a write whose outcome the
//! client never learnt (timeout, error). No real time is recorded: causal
//! consistency does not ask for it. Every write writes a value no other
//! write of its key writes (a "differentiated" history), so a read's value
//! names the write it read from; a history that writes one value twice to a
//! key is refused ([`CausalError::NotDifferentiated`]). A read whose outcome
//! the client never learnt observed nothing and is simply left out.
//!
//! The definitions and bad patterns are those of Bouajjani, Enea, Guerraoui
//! and Hamza, "On verifying causal consistency" (POPL 2017), for a
//! read-write memory:
//!
//! ```text
//!   session order (so)      each session's operations, in order
//!   reads-from    (rf)      the write of v  ->  every read returning v
//!   causal order  (co)   =  (so ∪ rf)+
//!   conflict      (cf)      w1 -> w2 when both write x, w1 co r and r reads from w2
//! ```
//!
//! - CC ([`check_cc`]): every read can be explained by some order of the
//!   writes in its own causal past. It holds iff none of these occur:
//!   [`Pattern::ThinAirRead`] (a value nobody wrote), [`Pattern::CyclicCO`],
//!   [`Pattern::WriteCOInitRead`] (a write of x in the causal past of a read
//!   of x's initial value) and [`Pattern::WriteCORead`] (`w1 co w2 co r`,
//!   all on x, while `r` reads from `w1`: it read a value its own past had
//!   overwritten). This is "no client sees an effect before its cause", with
//!   read-your-writes, monotonic reads and writes-follow-reads, as session
//!   order and reads-from are both in `co`.
//! - CCv ([`check_ccv`]): causal convergence, what causal+ with convergence
//!   by stamp gives (COPS): one total arbitration order of all writes,
//!   containing `co`, that every read respects (it returns the
//!   arbitration-last write of its key in its causal past). It holds iff CC
//!   holds and `co ∪ cf` is acyclic ([`Pattern::CyclicCF`]): two clients
//!   that see two concurrent writes in opposite orders, say. "Never going
//!   back in time" is then by that order: a session may read concurrent
//!   writes 2 then 1 (1 is arbitrated after 2), but then no session may
//!   read 1 then 2. (The paper's
//!   WriteHBInitRead and CyclicHB characterize causal memory, CM, not CCv:
//!   CM is not what causal+ promises, so they are not checked.)
//!
//! Patterns are looked for in stages, and the first stage that finds any
//! is the answer: a thin-air read or a cycle in `co` (the other patterns
//! presume `co` is an order), then the two CC read patterns, then (CCv)
//! `CyclicCF`, which every `WriteCORead` would also be. Each pattern found
//! is reported once, with the operations of its first instance and how many
//! instances there are.
//!
//! A `MaybeWrite` may or may not have taken effect: if some read returns its
//! value, it did; if none does, it is left out, which is always at least as
//! good an explanation (a write nobody read is in no read's causal past).
//! It follows the session's earlier operations in `co` (it was sent with
//! them as its dependencies) but nothing later in the session follows it:
//! the client never learnt it had taken effect, so neither read-your-writes
//! nor a later write's dependency on it can be asked for.
//!
//! Cost: polynomial, with per-chain vector clocks rather than bitsets. A
//! chain is a session without its `MaybeWrite`s (each one kept is a chain
//! of its own, as nothing later in its session follows it); a chain's part
//! of any causal past is a prefix, so an operation's past is one number per
//! chain, and `a co b` is one comparison. That is `n × chains` numbers
//! where a bitset closure takes `n²` bits: smaller for the dozen or so
//! sessions of a simulation. (Each `MaybeWrite` that was read adds a chain:
//! a history with thousands of them read would be cheaper with bitsets.)
//! The clocks are computed in one pass in topological order (Kahn's
//! algorithm, which also finds the cycles). The read patterns then need,
//! per read and per chain, only the last write of the read's key in its
//! past on that chain (the chain's earlier ones are causally before it),
//! found by binary search: `O(reads × chains × log n)`, and as many
//! conflict edges. The 5,000 operations of 16 sessions of
//! `tests/causal_checker.rs` check in about 10 ms.
//!
//! [`check_converged`] compares the replicas' final contents after healing.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// One operation of a session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `Write(key, value)`, acknowledged.
    Write(String, String),
    /// A write whose outcome the client never learnt: it may have taken
    /// effect (at any time after it was sent) or not.
    MaybeWrite(String, String),
    /// `Read(key, value)`: what the read returned, `None` for the initial
    /// value (the key absent).
    Read(String, Option<String>),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Write(key, _) | Op::MaybeWrite(key, _) | Op::Read(key, _) => key,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write(key, value) => write!(f, "write {key}={value}"),
            Op::MaybeWrite(key, value) => write!(f, "write {key}={value} (outcome unknown)"),
            Op::Read(key, Some(value)) => write!(f, "read {key} -> {value}"),
            Op::Read(key, None) => write!(f, "read {key} -> init"),
        }
    }
}

/// Where an operation is: its session and its place in the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId {
    pub session: usize,
    pub index: usize,
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}.{}", self.session, self.index)
    }
}

/// The operations of each session, in session order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CausalHistory {
    sessions: Vec<Vec<Op>>,
}

impl CausalHistory {
    pub fn new() -> CausalHistory {
        CausalHistory::default()
    }

    pub fn from_sessions(sessions: Vec<Vec<Op>>) -> CausalHistory {
        CausalHistory { sessions }
    }

    /// Appends `op` to `session` (sessions up to it are opened as needed).
    pub fn push(&mut self, session: usize, op: Op) {
        if self.sessions.len() <= session {
            self.sessions.resize(session + 1, Vec::new());
        }
        self.sessions[session].push(op);
    }

    pub fn write(&mut self, session: usize, key: &str, value: &str) {
        self.push(session, Op::Write(key.into(), value.into()));
    }

    pub fn maybe_write(&mut self, session: usize, key: &str, value: &str) {
        self.push(session, Op::MaybeWrite(key.into(), value.into()));
    }

    pub fn read(&mut self, session: usize, key: &str, seen: Option<&str>) {
        self.push(session, Op::Read(key.into(), seen.map(String::from)));
    }

    pub fn sessions(&self) -> &[Vec<Op>] {
        &self.sessions
    }

    pub fn sessions_mut(&mut self) -> &mut Vec<Vec<Op>> {
        &mut self.sessions
    }

    /// How many operations, in all sessions.
    pub fn len(&self) -> usize {
        self.sessions.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn op(&self, id: OpId) -> &Op {
        &self.sessions[id.session][id.index]
    }

    /// `s1.0 read y -> 1`: an operation as violations name it.
    fn show(&self, id: OpId) -> String {
        format!("{id} {}", self.op(id))
    }
}

impl fmt::Display for CausalHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (s, ops) in self.sessions.iter().enumerate() {
            let ops: Vec<String> = ops.iter().map(Op::to_string).collect();
            writeln!(f, "  s{s}: {}", ops.join("; "))?;
        }
        Ok(())
    }
}

/// The consistency model checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// Causal consistency.
    Cc,
    /// Causal convergence: causal consistency with one arbitration order.
    Ccv,
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Cc => "causally consistent (CC)",
            Model::Ccv => "causally convergent (CCv)",
        })
    }
}

/// The bad patterns (in the order they are looked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// A read returns a value no write of its key wrote.
    ThinAirRead,
    /// Causal order (session order and reads-from) has a cycle.
    CyclicCO,
    /// A read returns the initial value while a write of its key is in its
    /// causal past.
    WriteCOInitRead,
    /// A read returns `w1`'s value while its causal past has `w2`, of the
    /// same key, causally after `w1`.
    WriteCORead,
    /// Causal order with the conflict relation (`w1` before `w2` when `w1`
    /// is in the causal past of a read of `w2`) has a cycle: no one order of
    /// the writes explains every read. CCv only.
    CyclicCF,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One instance of a bad pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub pattern: Pattern,
    /// The operations involved, in the order `explanation` names them.
    pub ops: Vec<OpId>,
    pub explanation: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CausalError {
    /// Two writes write one value to one key: reads-from is ambiguous.
    NotDifferentiated {
        key: String,
        value: String,
        first: OpId,
        second: OpId,
    },
    /// The history is not `model`: per pattern found, its first instance
    /// and how many instances there are.
    Violations {
        model: Model,
        found: Vec<(Violation, usize)>,
    },
}

impl CausalError {
    /// The patterns found (none for a history refused as malformed).
    pub fn patterns(&self) -> Vec<Pattern> {
        match self {
            CausalError::NotDifferentiated { .. } => Vec::new(),
            CausalError::Violations { found, .. } => found.iter().map(|(v, _)| v.pattern).collect(),
        }
    }

    pub fn violations(&self) -> Vec<&Violation> {
        match self {
            CausalError::NotDifferentiated { .. } => Vec::new(),
            CausalError::Violations { found, .. } => found.iter().map(|(v, _)| v).collect(),
        }
    }
}

impl fmt::Display for CausalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CausalError::NotDifferentiated {
                key,
                value,
                first,
                second,
            } => write!(
                f,
                "not a differentiated history: {first} and {second} both write {value:?} to \
                 {key:?}, so a read of it cannot say which it read from"
            ),
            CausalError::Violations { model, found } => {
                writeln!(f, "not {model}:")?;
                for (v, count) in found {
                    write!(f, "  {}: {}", v.pattern, v.explanation)?;
                    match count {
                        1 => writeln!(f)?,
                        n => writeln!(f, " (and {} more like it)", n - 1)?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Whether `h` is causally consistent (CC).
pub fn check_cc(h: &CausalHistory) -> Result<(), CausalError> {
    check(h, Model::Cc)
}

/// Whether `h` is causally convergent (CCv): causally consistent, with one
/// order of all writes that every read respects.
pub fn check_ccv(h: &CausalHistory) -> Result<(), CausalError> {
    check(h, Model::Ccv)
}

/// Whether `h` is `model`, looking for the bad patterns in the module
/// doc's stages.
pub fn check(h: &CausalHistory, model: Model) -> Result<(), CausalError> {
    let graph = Graph::new(h)?;
    let mut found = Findings::new(model);
    graph.find_thin_air_reads(&mut found);
    let order = graph.topological_order(&[]);
    if let Err(left) = &order {
        found.add(Pattern::CyclicCO, graph.cycle(&[], left));
    }
    found.end_stage()?;
    let clocks = Clocks::new(&graph, &order.expect("no cycle"));
    let conflicts = graph.find_read_patterns(&clocks, &mut found);
    found.end_stage()?;
    if model == Model::Ccv {
        if let Err(left) = graph.topological_order(&conflicts) {
            found.add(Pattern::CyclicCF, graph.cycle(&conflicts, &left));
        }
    }
    found.end_stage()
}

/// The violations found in the current stage, grouped by pattern.
struct Findings {
    model: Model,
    by_pattern: BTreeMap<Pattern, (Violation, usize)>,
}

impl Findings {
    fn new(model: Model) -> Findings {
        Findings {
            model,
            by_pattern: BTreeMap::new(),
        }
    }

    fn add(&mut self, pattern: Pattern, (ops, explanation): (Vec<OpId>, String)) {
        self.by_pattern
            .entry(pattern)
            .and_modify(|(_, count)| *count += 1)
            .or_insert((
                Violation {
                    pattern,
                    ops,
                    explanation,
                },
                1,
            ));
    }

    /// The answer if this stage found anything: later stages presume none.
    fn end_stage(&mut self) -> Result<(), CausalError> {
        if self.by_pattern.is_empty() {
            return Ok(());
        }
        Err(CausalError::Violations {
            model: self.model,
            found: std::mem::take(&mut self.by_pattern).into_values().collect(),
        })
    }
}

/// `before` must be arbitrated before `after`, both writes of one key:
/// `before` is in the causal past of `read`, which reads from `after`.
#[derive(Clone, Copy, Debug)]
struct Conflict {
    before: usize,
    after: usize,
    read: usize,
}

/// Why one operation directly precedes another in a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    Session,
    ReadsFrom,
    /// Conflict: arbitrated before, because this read (a node) has the
    /// source in its causal past and reads from the target.
    Conflict {
        read: usize,
    },
}

/// What a read read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Init,
    Write(usize),
    /// A value nobody wrote.
    ThinAir,
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Write,
    Read(Source),
}

/// One operation in the causal graph: `pos` is its place on `chain`.
#[derive(Clone, Copy, Debug)]
struct Node {
    id: OpId,
    key: u32,
    chain: u32,
    pos: u32,
    role: Role,
}

/// The operations the checks keep (all but the `MaybeWrite`s nobody read),
/// on their chains, with the session-order and reads-from edges that
/// generate the causal order.
struct Graph<'h> {
    h: &'h CausalHistory,
    nodes: Vec<Node>,
    /// Per node, its direct predecessors: the previous operation of its
    /// chain (or, for a `MaybeWrite`, of its session) and, for a read, the
    /// write it read from.
    preds: Vec<Vec<(usize, Edge)>>,
    /// Per chain, its nodes in order.
    chains: Vec<Vec<usize>>,
    /// Per (key, chain), the positions on the chain of the key's writes.
    writes_on: HashMap<(u32, u32), Vec<u32>>,
}

impl<'h> Graph<'h> {
    fn new(h: &'h CausalHistory) -> Result<Graph<'h>, CausalError> {
        let writers = writers(h)?;
        let read_values: HashSet<(&str, &str)> = h
            .sessions
            .iter()
            .flatten()
            .filter_map(|op| match op {
                Op::Read(key, Some(value)) => Some((key.as_str(), value.as_str())),
                _ => None,
            })
            .collect();
        let mut graph = Graph {
            h,
            nodes: Vec::new(),
            preds: Vec::new(),
            chains: Vec::new(),
            writes_on: HashMap::new(),
        };
        let node_of = graph.place_operations(&read_values);
        graph.link_reads(&writers, &node_of);
        Ok(graph)
    }

    /// Puts each operation kept on its chain, after its session's previous
    /// one; returns where each went.
    fn place_operations(&mut self, read_values: &HashSet<(&str, &str)>) -> HashMap<OpId, usize> {
        let mut keys: HashMap<&str, u32> = HashMap::new();
        let mut node_of: HashMap<OpId, usize> = HashMap::new();
        for (session, ops) in self.h.sessions.iter().enumerate() {
            let chain = self.open_chain();
            let mut last: Option<usize> = None;
            for (index, op) in ops.iter().enumerate() {
                let id = OpId { session, index };
                let next = keys.len() as u32;
                let key = *keys.entry(op.key()).or_insert(next);
                let node = match op {
                    Op::Write(..) => self.add(id, key, chain, Role::Write, last),
                    Op::Read(..) => self.add(id, key, chain, Role::Read(Source::Init), last),
                    Op::MaybeWrite(k, v) if read_values.contains(&(k.as_str(), v.as_str())) => {
                        let own = self.open_chain();
                        node_of.insert(id, self.add(id, key, own, Role::Write, last));
                        continue; // later operations do not follow it
                    }
                    Op::MaybeWrite(..) => continue, // nobody read it: left out
                };
                node_of.insert(id, node);
                last = Some(node);
            }
        }
        node_of
    }

    /// Gives each read of a value its source and reads-from edge.
    fn link_reads(
        &mut self,
        writers: &HashMap<(&str, &str), OpId>,
        node_of: &HashMap<OpId, usize>,
    ) {
        for node in 0..self.nodes.len() {
            let Op::Read(key, Some(value)) = self.h.op(self.nodes[node].id) else {
                continue;
            };
            let source = match writers.get(&(key.as_str(), value.as_str())) {
                Some(writer) => {
                    let writer = node_of[writer];
                    self.preds[node].push((writer, Edge::ReadsFrom));
                    Source::Write(writer)
                }
                None => Source::ThinAir,
            };
            self.nodes[node].role = Role::Read(source);
        }
    }

    fn open_chain(&mut self) -> u32 {
        self.chains.push(Vec::new());
        (self.chains.len() - 1) as u32
    }

    /// Adds a node at the end of `chain`, after `after` in session order.
    fn add(&mut self, id: OpId, key: u32, chain: u32, role: Role, after: Option<usize>) -> usize {
        let node = self.nodes.len();
        let pos = self.chains[chain as usize].len() as u32;
        self.chains[chain as usize].push(node);
        if let Role::Write = role {
            self.writes_on.entry((key, chain)).or_default().push(pos);
        }
        self.nodes.push(Node {
            id,
            key,
            chain,
            pos,
            role,
        });
        self.preds
            .push(after.map(|p| (p, Edge::Session)).into_iter().collect());
        node
    }

    fn show(&self, node: usize) -> String {
        self.h.show(self.nodes[node].id)
    }

    fn find_thin_air_reads(&self, findings: &mut Findings) {
        for (node, n) in self.nodes.iter().enumerate() {
            if let Role::Read(Source::ThinAir) = n.role {
                let explanation = format!("{}, a value no write of the key wrote", self.show(node));
                findings.add(Pattern::ThinAirRead, (vec![n.id], explanation));
            }
        }
    }

    /// The nodes in an order that respects the causal order's edges and
    /// the conflict edges `extra`; or, if they have a
    /// cycle, the nodes left unordered (each has a predecessor among them).
    fn topological_order(&self, extra: &[Conflict]) -> Result<Vec<usize>, Vec<bool>> {
        let n = self.nodes.len();
        let mut waiting: Vec<usize> = self.preds.iter().map(Vec::len).collect();
        let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (node, preds) in self.preds.iter().enumerate() {
            for &(p, _) in preds {
                succs[p].push(node);
            }
        }
        for c in extra {
            succs[c.before].push(c.after);
            waiting[c.after] += 1;
        }
        let mut order: Vec<usize> = (0..n).filter(|&v| waiting[v] == 0).collect();
        let mut next = 0;
        while next < order.len() {
            for &s in &succs[order[next]] {
                waiting[s] -= 1;
                if waiting[s] == 0 {
                    order.push(s);
                }
            }
            next += 1;
        }
        if order.len() == n {
            Ok(order)
        } else {
            Err(waiting.iter().map(|&w| w > 0).collect())
        }
    }

    /// A cycle among the nodes `left` unordered, shown edge by edge: every
    /// such node has a predecessor among them, so walking predecessors
    /// must come back to a node already seen.
    fn cycle(&self, extra: &[Conflict], left: &[bool]) -> (Vec<OpId>, String) {
        let pred_in_left = |v: usize| -> (usize, Edge) {
            let ordinary = self.preds[v].iter().copied().find(|&(p, _)| left[p]);
            ordinary
                .or_else(|| {
                    extra
                        .iter()
                        .find(|c| c.after == v && left[c.before])
                        .map(|c| (c.before, Edge::Conflict { read: c.read }))
                })
                .expect("a node left unordered has a predecessor left unordered")
        };
        let start = left.iter().position(|&l| l).expect("a cycle");
        let mut walked: Vec<(usize, Edge)> = Vec::new(); // (node, edge into the previous one)
        let mut at: HashMap<usize, usize> = HashMap::new();
        let mut v = start;
        while !at.contains_key(&v) {
            at.insert(v, walked.len());
            let (p, edge) = pred_in_left(v);
            walked.push((v, edge));
            v = p;
        }
        // Walked backwards from `v` to `v`; show it forwards.
        let mut cycle: Vec<(usize, Edge)> = walked[at[&v]..].to_vec();
        cycle.reverse();
        // cycle[i] = (node, the edge into it from its predecessor in the
        // cycle); the predecessor of cycle[0] is the last node.
        let ops: Vec<OpId> = cycle.iter().map(|&(node, _)| self.nodes[node].id).collect();
        let mut text = self.show(cycle[cycle.len() - 1].0);
        for &(node, edge) in &cycle {
            let arrow = match edge {
                Edge::Session => " -session order-> ".to_string(),
                Edge::ReadsFrom => " -read by-> ".to_string(),
                Edge::Conflict { read } => {
                    format!(
                        " -in the past of {}, so arbitrated before-> ",
                        self.show(read)
                    )
                }
            };
            text += &arrow;
            text += &self.show(node);
        }
        (ops, text)
    }

    /// The last write of `key` on `chain` in the causal past of `node`.
    fn last_write_before(
        &self,
        clocks: &Clocks,
        key: u32,
        chain: u32,
        node: usize,
    ) -> Option<usize> {
        let positions = self.writes_on.get(&(key, chain))?;
        let seen = clocks.seen(node, chain);
        let k = positions.partition_point(|&p| p < seen);
        (k > 0).then(|| self.chains[chain as usize][positions[k - 1] as usize])
    }

    /// Finds the CC read patterns (WriteCOInitRead, WriteCORead) and returns
    /// the conflict edges that CCv adds: per read of
    /// `w` and per chain, the last other write of the key in the read's past
    /// is arbitrated before `w` (earlier ones on that chain are causally
    /// before it, so their edges would add nothing).
    fn find_read_patterns(&self, clocks: &Clocks, findings: &mut Findings) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        for (r, node) in self.nodes.iter().enumerate() {
            let Role::Read(source) = node.role else {
                continue;
            };
            for chain in 0..self.chains.len() as u32 {
                let Some(w2) = self.last_write_before(clocks, node.key, chain, r) else {
                    continue;
                };
                match source {
                    Source::ThinAir => {}
                    Source::Init => {
                        let explanation = format!(
                            "{} is in the causal past of {}",
                            self.show(w2),
                            self.show(r)
                        );
                        let ops = vec![self.nodes[w2].id, node.id];
                        findings.add(Pattern::WriteCOInitRead, (ops, explanation));
                        break; // one instance per read
                    }
                    Source::Write(w) if w2 == w => {}
                    Source::Write(w) if clocks.before(&self.nodes[w], w2) => {
                        let explanation = format!(
                            "{} is overwritten by {}, which is in the causal past of {}",
                            self.show(w),
                            self.show(w2),
                            self.show(r)
                        );
                        let ops = vec![self.nodes[w].id, self.nodes[w2].id, node.id];
                        findings.add(Pattern::WriteCORead, (ops, explanation));
                        break;
                    }
                    Source::Write(w) => conflicts.push(Conflict {
                        before: w2,
                        after: w,
                        read: r,
                    }),
                }
            }
        }
        conflicts
    }
}

/// Each value written, by key, and who wrote it; refuses a value written
/// twice to one key.
fn writers(h: &CausalHistory) -> Result<HashMap<(&str, &str), OpId>, CausalError> {
    let mut writers: HashMap<(&str, &str), OpId> = HashMap::new();
    for (session, ops) in h.sessions.iter().enumerate() {
        for (index, op) in ops.iter().enumerate() {
            let (Op::Write(key, value) | Op::MaybeWrite(key, value)) = op else {
                continue;
            };
            let id = OpId { session, index };
            if let Some(&first) = writers.get(&(key.as_str(), value.as_str())) {
                return Err(CausalError::NotDifferentiated {
                    key: key.clone(),
                    value: value.clone(),
                    first,
                    second: id,
                });
            }
            writers.insert((key, value), id);
        }
    }
    Ok(writers)
}

/// Per node, how many operations of each chain are in its causal past
/// (strictly before it): a prefix of each chain.
struct Clocks {
    width: usize,
    seen: Vec<u32>,
}

impl Clocks {
    /// Joins the predecessors' clocks in topological `order`.
    fn new(graph: &Graph, order: &[usize]) -> Clocks {
        let width = graph.chains.len();
        let mut seen = vec![0u32; graph.nodes.len() * width];
        let mut row = vec![0u32; width];
        for &node in order {
            row.fill(0);
            for &(p, _) in &graph.preds[node] {
                let pred = &seen[p * width..(p + 1) * width];
                for (r, &s) in row.iter_mut().zip(pred) {
                    *r = (*r).max(s);
                }
                let Node { chain, pos, .. } = graph.nodes[p];
                row[chain as usize] = row[chain as usize].max(pos + 1);
            }
            seen[node * width..(node + 1) * width].copy_from_slice(&row);
        }
        Clocks { width, seen }
    }

    /// How many operations of `chain` are in `node`'s causal past.
    fn seen(&self, node: usize, chain: u32) -> u32 {
        self.seen[node * self.width + chain as usize]
    }

    /// Whether `a` is causally before node `b`.
    fn before(&self, a: &Node, b: usize) -> bool {
        self.seen(b, a.chain) > a.pos
    }
}

/// A replica's final contents: key -> value, `None` (or no entry) for an
/// absent key.
pub type Contents = BTreeMap<String, Option<String>>;

/// The first key on which two replicas' contents differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub key: String,
    /// `(replica, value)`: replica 0's, then the first other that differs.
    pub first: (usize, Option<String>),
    pub second: (usize, Option<String>),
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replicas differ at key {:?}: replica {} holds {:?}, replica {} holds {:?}",
            self.key, self.first.0, self.first.1, self.second.0, self.second.1
        )
    }
}

/// Whether every replica holds the same contents (a key with no entry is
/// absent, the same as `None`); if not, the smallest key where one differs
/// from replica 0.
pub fn check_converged(replicas: &[Contents]) -> Result<(), Divergence> {
    let value = |r: usize, key: &str| replicas[r].get(key).cloned().flatten();
    let keys: std::collections::BTreeSet<&String> = replicas
        .iter()
        .flat_map(|contents| contents.keys())
        .collect();
    for key in keys {
        let expected = value(0, key);
        for r in 1..replicas.len() {
            let held = value(r, key);
            if held != expected {
                return Err(Divergence {
                    key: key.clone(),
                    first: (0, expected),
                    second: (r, held),
                });
            }
        }
    }
    Ok(())
}
