//! Eventual mode in a deterministic simulated cluster, over the shared
//! harness (`tests/harness`): N cluster cores ([`mckv::cluster::Node`])
//! running [`EventualEngine`]s, each with eventual mode's real store side
//! (a `MemoryStore` and its [`VersionLog`]) and the real failure detector,
//! over a seeded network of FIFO links with random delays; every frame goes
//! through the wire format. This file adds eventual mode's workload, its
//! faults and its checks.
//!
//! ```text
//!  Workload ─► client ─► on_client ─► Publish: execute, record ─► Report::Published
//!                          watch_reports: an acknowledged write and its versions ◄─┘
//!  outgoing(to) ─► filter: push loss, counters ─► link: FIFO, random delay ─► on_frame
//!  a heartbeat every 5 steps ─► a sync round every `sync_every` heartbeats
//! ```
//!
//! Faults, drawn every step while clients write: a *break* (the harness's
//! `Fault::Break`) loses the frames in flight on a directed link and tells
//! only the sender, which reconnects with a hello later, as after a TCP
//! reset (the chaos runs break both directions together, except in
//! `lost_sync_answer_is_asked_again`); a *hold* partition
//! (`Fault::Partition`, then `Heal`) delays both directions until it heals;
//! a *drop* partition breaks both directions, which stay down until it
//! heals; *push loss* (the harness's filter) strips the versions from pure
//! push frames; a *restart* crashes a node (memory and store gone, frames to
//! and from it lost) and starts a new run with an empty store, its clock
//! far above anything the old run used, whose hello may reach the others
//! late (`late_hello`). `a_crashed_and_restarted_node_converges` also keeps
//! crashed nodes down a while before they restart.
//!
//! Every acknowledged write is recorded with the versions it left (the
//! store side's `Report::Published`), so a run can be checked against
//! last-writer-wins: once faults end and sync rounds pass, every replica
//! must hold, byte for byte, the highest-stamped acknowledged version of
//! every key. An acknowledged write whose only holder crashed before any
//! other node held it (or anything newer) is lost with it, and is left out.
//!
//! A third of the seeds run with a one-byte frame budget ([`tiny_budget`]):
//! every sync answer and every frame of pushes carries one version, so
//! every scenario also runs with answers in parts.
//!
//! Checks: convergence, last-writer-wins against the acknowledged writes,
//! sync cost, catch-up after a restart, two negative controls (no
//! anti-entropy; parts that claim the whole answer), and regression tests
//! for the bugs the simulation found.
//! A run depends on its seed alone: the `replay` test prints the trace of one.
//!
//! [`VersionLog`]: mckv::cluster::eventual::version_log::VersionLog

mod harness;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Instant;

use harness::{Driver, EngineFactory, Fault, Outcome, Rng, Sim, SimConfig, SIM_NOW};
use mckv::cluster::eventual::origins::Coverage;
use mckv::cluster::eventual::version::{State, Version};
use mckv::cluster::eventual::{EventualEngine, Gossip, Report};
use mckv::cluster::{Engine, NodeId, Stamp, View};
use mckv::protocol::{Arith, Command, Key, KeysRef, Request, Storage, StorageMode};

/// `sync_every` that turns anti-entropy rounds off.
const SYNC_OFF: u64 = 1 << 40;

/// Per-step chances (per mille) of each fault while clients write.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    breaks: u64,
    holds: u64,
    drops: u64,
    /// A node crashes and restarts at once...
    restarts: u64,
    /// ...at most this many times a run.
    max_restarts: u32,
    /// Percentage of pure push frames whose versions are lost.
    push_loss: u64,
    /// A break takes both directions down (both TCP connections reset), so
    /// both ends are told; otherwise only one direction breaks.
    both_ways: bool,
    /// A restarted node's hello reaches each peer 2 to `2 * max_delay`
    /// steps after the peer's own link to it reopened (the hello comes on
    /// the other link), so the peer first talks to the new run as to the old.
    late_hello: bool,
}

/// A planned crash: `node` crashes at step `at` and restarts empty
/// `downtime` steps later.
#[derive(Debug, Clone, Copy)]
struct Crash {
    at: u64,
    node: NodeId,
    downtime: u64,
}

#[derive(Debug, Clone)]
struct Config {
    nodes: u32,
    seed: u64,
    /// Steps between heartbeats.
    heartbeat_every: u64,
    /// Heartbeats per sync round.
    sync_every: u64,
    /// A frame takes `1..=max_delay` steps, or up to `spike_factor` times
    /// longer for `spike_percent` of frames.
    max_delay: u64,
    spike_percent: u64,
    spike_factor: u64,
    /// Steps of silence after which the failure detector takes a peer down
    /// (eventual mode serves and syncs regardless).
    peer_timeout: u64,
    clients_per_node: u64,
    /// Per client per step, per mille.
    write_per_mille: u64,
    /// Of the writes, per mille that are `flush_all`.
    flush_per_mille: u64,
    /// Keys with string values (set/add/append/delete) and numeric values
    /// (set/add/incr/decr/delete).
    text_keys: usize,
    number_keys: usize,
    /// More keys the checks look at (`p0`, `p1`, ...), written by scripts.
    extra_keys: usize,
    workload_steps: u64,
    faults: Faults,
    crashes: Vec<Crash>,
    /// The engines' frame budget (about how many bytes of versions a sync
    /// answer carries, and a frame of pushes); `None`: the engine's own.
    frame_budget: Option<usize>,
    /// Broken on purpose, for the negative control: every part of a sync
    /// answer claims on its way to complete the whole answer (`upto` set to
    /// the sender's last change), skipping the changes it left out.
    parts_claim_whole: bool,
    /// Broken on purpose, for the negative controls: every sync request's
    /// summary claims one more write of each origin than its sender holds,
    /// so answers leave out what the asker lacks...
    summary_claims_more: bool,
    /// ...and every answer's coverage claims one more write of each origin
    /// than its sender held, so the asker takes a claim it cannot back.
    answer_claims_more: bool,
    /// Each store's memory cap.
    memory_limit: u64,
    /// Causal engines (`EventualEngine::causal`); this file checks what
    /// both modes share, `tests/causal_simulation.rs` causal order.
    causal: bool,
    /// An eviction is a delete on every replica (false: broken on purpose,
    /// for the negative control: evictions stay where they happened).
    evictions_replicated: bool,
    trace: bool,
}

impl Config {
    fn new(nodes: u32, seed: u64) -> Config {
        Config {
            nodes,
            seed,
            heartbeat_every: 5,
            sync_every: 4,
            max_delay: 6,
            spike_percent: 5,
            spike_factor: 6,
            peer_timeout: SimConfig::new(1, 0).peer_timeout,
            clients_per_node: 2,
            write_per_mille: 60,
            flush_per_mille: 3,
            text_keys: 7,
            number_keys: 3,
            extra_keys: 0,
            workload_steps: 600,
            faults: Faults::default(),
            crashes: Vec::new(),
            frame_budget: tiny_budget(seed),
            parts_claim_whole: false,
            summary_claims_more: false,
            causal: false,
            answer_claims_more: false,
            memory_limit: SimConfig::new(1, 0).memory_limit,
            evictions_replicated: true,
            trace: false,
        }
    }

    /// The chaos workload, each store with room for about half the keys.
    fn evicting(nodes: u32, seed: u64) -> Config {
        let mut c = Config::chaos(nodes, seed);
        // An item is 56 bytes of overhead, a 2-byte key and a short value.
        c.memory_limit = 5 * 70;
        c
    }

    fn chaos(nodes: u32, seed: u64) -> Config {
        let mut c = Config::new(nodes, seed);
        c.faults = Faults {
            breaks: 25,
            holds: 6,
            drops: 6,
            push_loss: 10,
            both_ways: true,
            ..Faults::default()
        };
        c
    }

    /// The chaos workload, during which one node or two in turn crash
    /// ([`crash_plan`]) and restart empty, a third of them with late hellos.
    fn crashing(nodes: u32, seed: u64) -> Config {
        let mut c = Config::chaos(nodes, seed);
        c.faults.late_hello = seed.is_multiple_of(3);
        // Long downtimes (and holds) take nodes down at their peers.
        c.peer_timeout = 60;
        c.crashes = crash_plan(nodes, seed);
        c
    }

    /// Steps per sync round (with anti-entropy off, as long as the default).
    fn interval(&self) -> u64 {
        let beats = match self.sync_every {
            SYNC_OFF => Config::new(1, 0).sync_every,
            beats => beats,
        };
        self.heartbeat_every * beats
    }

    /// The harness's shape of this cluster: no think time, so each client
    /// may write at every step.
    fn sim_config(&self) -> SimConfig {
        let mut sim = SimConfig::new(self.nodes, self.seed);
        sim.heartbeat_every = self.heartbeat_every;
        sim.max_delay = self.max_delay;
        sim.spike_percent = self.spike_percent;
        sim.spike_factor = self.spike_factor;
        sim.peer_timeout = self.peer_timeout;
        sim.max_think = 0;
        sim.memory_limit = self.memory_limit;
        sim.keep_evicted = self.evictions_replicated;
        if self.faults.late_hello {
            sim.late_hello_min = 2;
            sim.late_hello = 2 * self.max_delay;
        }
        sim
    }
}

/// A third of the seeds run with a one-byte frame budget: every sync answer
/// and every frame of pushes carries one version, so every scenario goes
/// through answers in parts. In runs of three seeds, so that it meets every
/// value of `seed % 3` (late hellos) and of `seed % 2` (one crash or two).
fn tiny_budget(seed: u64) -> Option<usize> {
    (seed / 3).is_multiple_of(3).then_some(1)
}

/// One node (even seeds) or two in turn (odd seeds) crash while clients
/// write (`workload_steps` = 600), each down for 1 to 150 steps; a node that
/// crashes late comes back only after the writes stopped.
fn crash_plan(nodes: u32, seed: u64) -> Vec<Crash> {
    let mut rng = Rng::new(seed ^ 0xC4A5_11ED);
    let n = u64::from(nodes);
    let first = Crash {
        at: rng.range(50, 400),
        node: rng.range(1, n) as NodeId,
        downtime: rng.range(1, 150),
    };
    let mut plan = vec![first];
    if seed % 2 == 1 {
        let other = (u64::from(first.node) - 1 + rng.range(1, n - 1)) % n + 1;
        let back = first.at + first.downtime;
        plan.push(Crash {
            at: (back + rng.range(20, 100)).min(590),
            node: other as NodeId,
            downtime: rng.range(1, 150),
        });
    }
    plan
}

/// Builds each run's engine. A node's first run starts its clock at a
/// wall time in microseconds, the nodes' clocks a little apart; a later
/// run (a restart) at `run * 1_000_000`, far above anything an earlier run
/// can have reached (writes and observed clocks move a run's clock by far
/// less than a million).
fn engines(
    seed: u64,
    sync_every: u64,
    frame_budget: Option<usize>,
    causal: bool,
) -> EngineFactory<EventualEngine> {
    let mut rng = Rng::new(seed ^ 0xE7E7_0A11_5EED);
    let mut started = BTreeSet::new();
    Box::new(move |id: NodeId, run: u64, members: &[NodeId]| {
        let start = match started.insert(id) {
            true => 1_000_000 + rng.below(1000),
            false => run * 1_000_000,
        };
        let view = View::new(0, members.to_vec());
        let mut engine = EventualEngine::new(id, run, view, start, sync_every);
        if causal {
            engine = engine.causal();
        }
        match frame_budget {
            Some(bytes) => engine.with_frame_budget(bytes),
            None => engine,
        }
    })
}

fn text_key(i: usize) -> Key {
    format!("t{i}").into_bytes()
}

fn extra_key(i: usize) -> Key {
    format!("p{i}").into_bytes()
}

fn number_key(i: usize) -> Key {
    format!("n{i}").into_bytes()
}

fn request(command: Command) -> Request {
    Request {
        command,
        noreply: false,
    }
}

fn store_request(mode: StorageMode, key: Key, value: &str, flags: u32) -> Request {
    request(Command::Storage(Storage {
        mode,
        key,
        flags,
        exptime: 0,
        value: value.as_bytes().to_vec(),
    }))
}

fn arith(key: Key, incr: bool, delta: u64) -> Request {
    request(Command::Arith(Arith { key, incr, delta }))
}

/// The clients' random writes: while `writing`, every client writes at each
/// step with probability `write_per_mille`.
struct Workload {
    rng: Rng,
    /// Each client's node and its number there.
    clients: Vec<(NodeId, u64)>,
    writing: bool,
    write_per_mille: u64,
    flush_per_mille: u64,
    text_keys: usize,
    number_keys: usize,
    writes: u64,
}

impl Workload {
    fn random_request(&mut self, id: NodeId, client: u64) -> Request {
        self.writes += 1;
        let seq = self.writes;
        let flags = self.rng.below(4) as u32;
        if self.rng.per_mille(self.flush_per_mille) {
            return request(Command::FlushAll { delay: 0 });
        }
        let keys = self.text_keys + self.number_keys;
        let k = self.rng.below(keys as u64) as usize;
        let roll = self.rng.below(100);
        if k < self.text_keys {
            let key = text_key(k);
            let value = format!("n{id}c{client}s{seq}");
            match roll {
                0..=34 => store_request(StorageMode::Set, key, &value, flags),
                35..=49 => store_request(StorageMode::Add, key, &value, flags),
                50..=79 => store_request(StorageMode::Append, key, &value, flags),
                _ => request(Command::Delete { key }),
            }
        } else {
            let key = number_key(k - self.text_keys);
            // Unique numbers: node, client and sequence in separate digits.
            let value = (u64::from(id) * 1_000_000_000 + client * 100_000_000 + seq).to_string();
            let delta = self.rng.range(1, 1000);
            match roll {
                0..=29 => store_request(StorageMode::Set, key, &value, flags),
                30..=39 => store_request(StorageMode::Add, key, &value, flags),
                40..=74 => arith(key, true, delta),
                75..=84 => arith(key, false, delta),
                _ => request(Command::Delete { key }),
            }
        }
    }
}

impl Driver for Workload {
    fn next_request(&mut self, _: u64, client: usize) -> Option<Request> {
        if !self.writing || !self.rng.per_mille(self.write_per_mille) {
            return None;
        }
        let (id, number) = self.clients[client];
        Some(self.random_request(id, number))
    }

    fn on_complete(&mut self, step: u64, client: usize, outcome: Outcome) {
        if let Outcome::Refused(reason) = outcome {
            let node = self.clients[client].0;
            panic!("step {step}: node {node} refused a write: {reason}");
        }
    }
}

/// An acknowledged write: a version it left (a flush has an empty key).
#[derive(Debug, Clone)]
struct Ack {
    version: Version,
    /// Its origin crashed before any other node held it (or anything newer).
    lost_in_crash: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    frames: u64,
    versions_sent: u64,
    /// Versions in sync answers.
    answer_versions: u64,
    /// Pushed versions, and the bytes their causes take on the wire (an
    /// origin's run and number, and a causal push's dependencies).
    pushed_versions: u64,
    cause_bytes: u64,
    /// Of the versions sent, tombstones and flush markers.
    tombstones_sent: u64,
    flushes_sent: u64,
    frames_lost: u64,
    pushes_lost: u64,
    acks: u64,
    breaks: u64,
    holds: u64,
    drops: u64,
    crashes: u64,
}

impl Counters {
    fn add(&mut self, c: &Counters) {
        self.frames += c.frames;
        self.versions_sent += c.versions_sent;
        self.answer_versions += c.answer_versions;
        self.pushed_versions += c.pushed_versions;
        self.cause_bytes += c.cause_bytes;
        self.tombstones_sent += c.tombstones_sent;
        self.flushes_sent += c.flushes_sent;
        self.frames_lost += c.frames_lost;
        self.pushes_lost += c.pushes_lost;
        self.acks += c.acks;
        self.breaks += c.breaks;
        self.holds += c.holds;
        self.drops += c.drops;
        self.crashes += c.crashes;
    }

    /// Counts what a frame about to be sent carries.
    fn count_sent(&mut self, gossip: &Gossip) {
        self.versions_sent += gossip.versions.len() as u64;
        for v in &gossip.versions {
            match v.state {
                State::Deleted => self.tombstones_sent += 1,
                State::Flushed => self.flushes_sent += 1,
                State::Present(_) => {}
            }
        }
        let pushes = gossip.pushes.min(gossip.versions.len());
        self.pushed_versions += pushes as u64;
        self.answer_versions += (gossip.versions.len() - pushes) as u64;
        let mut without = gossip.clone();
        for version in &mut without.versions[..pushes] {
            version.cause = None;
        }
        let mut only_pushes = gossip.clone();
        only_pushes.versions.truncate(pushes);
        without.versions.truncate(pushes);
        self.cause_bytes += (encoded_len(&only_pushes) - encoded_len(&without)) as u64;
    }
}

/// The bytes `gossip` takes on the wire, less one a version for saying it
/// has no cause (what a frame without causes would need).
fn encoded_len(gossip: &Gossip) -> usize {
    let mut out = Vec::new();
    mckv::cluster::wire::Message::encode(gossip, &mut out);
    out.len() - gossip.versions.iter().filter(|v| v.cause.is_none()).count()
}

/// What the harness's hooks saw, shared with them.
#[derive(Default)]
struct Record {
    /// The step being run (the hooks do not see the simulator).
    now: u64,
    acks: Vec<Ack>,
    counters: Counters,
    /// The step a part of a sync answer (one that leaves changes for the
    /// next request) was last sent at.
    last_part_sent: Option<u64>,
    /// Trace lines of this file's own (acks, lost pushes), when tracing.
    lines: Option<Vec<String>>,
}

impl Record {
    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            lines.push(format!("[{:>5}] {}", self.now, line()));
        }
    }
}

/// A simulated eventual-mode cluster: the harness, its workload, the
/// faults drawn for it, and what its hooks recorded.
struct Cluster {
    cfg: Config,
    sim: Sim<EventualEngine>,
    workload: Workload,
    record: Rc<RefCell<Record>>,
    /// Draws the faults and the scripts' choices.
    rng: Rng,
    keys: Vec<Key>,
    /// Hold partitions in force, and the step each heals at.
    held: BTreeMap<(NodeId, NodeId), u64>,
}

impl Cluster {
    fn new(cfg: Config) -> Cluster {
        let engines = engines(cfg.seed, cfg.sync_every, cfg.frame_budget, cfg.causal);
        let mut sim = Sim::new(cfg.sim_config(), engines);
        let mut clients = Vec::new();
        for id in sim.node_ids() {
            for number in 0..cfg.clients_per_node {
                sim.add_client(id);
                clients.push((id, number));
            }
        }
        if cfg.trace {
            sim.enable_trace();
        }
        let record = Rc::new(RefCell::new(Record {
            lines: cfg.trace.then(Vec::new),
            ..Record::default()
        }));
        let acks = Rc::clone(&record);
        sim.watch_reports(Box::new(move |node: NodeId, report: &Report| {
            if let Report::Published(versions) = report {
                let mut r = acks.borrow_mut();
                for version in versions {
                    r.log(|| format!("node {node} ack {}", show_version(version)));
                    r.acks.push(Ack {
                        version: version.clone(),
                        lost_in_crash: false,
                    });
                }
            }
        }));
        let sent = Rc::clone(&record);
        let push_loss = cfg.faults.push_loss;
        let parts_claim_whole = cfg.parts_claim_whole;
        let summary_claims_more = cfg.summary_claims_more;
        let answer_claims_more = cfg.answer_claims_more;
        sim.set_filter(Box::new(move |gossip: &mut Gossip, rng: &mut Rng| {
            let mut r = sent.borrow_mut();
            if let Some(request) = gossip.sync_request.as_mut().filter(|_| summary_claims_more) {
                request.covered = one_more(&request.covered);
            }
            if let Some(coverage) = gossip.coverage.as_mut().filter(|_| answer_claims_more) {
                *coverage = one_more(coverage);
            }
            if let Some(done) = gossip.sync_complete.as_mut().filter(|d| d.is_part()) {
                r.last_part_sent = Some(r.now);
                if parts_claim_whole {
                    done.upto.seq = done.last;
                }
            }
            let lost = gossip.sync_complete.is_none()
                && !gossip.versions.is_empty()
                && rng.below(100) < push_loss;
            if lost {
                r.counters.pushes_lost += gossip.versions.len() as u64;
                r.log(|| format!("push lost: {}", show_gossip(gossip)));
                gossip.versions.clear();
            }
            r.counters.count_sent(gossip);
            lost
        }));
        let keys = (0..cfg.text_keys)
            .map(text_key)
            .chain((0..cfg.number_keys).map(number_key))
            .chain((0..cfg.extra_keys).map(extra_key))
            .collect();
        let workload = Workload {
            rng: Rng::new(cfg.seed ^ 0x3017_E5ED),
            clients,
            writing: true,
            write_per_mille: cfg.write_per_mille,
            flush_per_mille: cfg.flush_per_mille,
            text_keys: cfg.text_keys,
            number_keys: cfg.number_keys,
            writes: 0,
        };
        Cluster {
            rng: Rng::new(cfg.seed ^ 0xFA17_5EED),
            cfg,
            sim,
            workload,
            record,
            keys,
            held: BTreeMap::new(),
        }
    }

    fn counters(&self) -> Counters {
        let r = self.record.borrow();
        let stats = self.sim.stats();
        Counters {
            frames: stats.frames_sent,
            frames_lost: stats.frames_dropped,
            acks: r.acks.len() as u64,
            ..r.counters
        }
    }

    /// Acknowledged writes lost with a crashed node.
    fn lost_in_crash(&self) -> usize {
        let record = self.record.borrow();
        record.acks.iter().filter(|a| a.lost_in_crash).count()
    }

    fn versions_sent(&self) -> u64 {
        self.record.borrow().counters.versions_sent
    }

    fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// One step: the faults drawn for it (while clients write), then the
    /// harness's step.
    fn step(&mut self) {
        if self.workload.writing {
            self.inject_faults();
        }
        self.record.borrow_mut().now = self.sim.now() + 1;
        self.sim.step(&mut self.workload);
    }

    /// A client of node `id` writes now; it is acknowledged at once.
    fn write(&mut self, id: NodeId, request: Request) {
        let client = self
            .workload
            .clients
            .iter()
            .position(|&(node, _)| node == id)
            .expect("every node has clients");
        self.record.borrow_mut().now = self.sim.now();
        self.sim.submit(client, request, &mut self.workload);
    }

    // ---- faults ----

    fn inject_faults(&mut self) {
        let f = self.cfg.faults;
        let n = u64::from(self.cfg.nodes);
        let now = self.sim.now();
        let due: Vec<Crash> = self
            .cfg
            .crashes
            .iter()
            .filter(|c| c.at == now)
            .copied()
            .collect();
        for crash in due {
            self.crash(crash.node);
            self.sim
                .schedule(now + crash.downtime.max(1), Fault::Restart(crash.node));
        }
        if n < 2 {
            return;
        }
        let pick_pair = |rng: &mut Rng| {
            let a = rng.below(n) as NodeId + 1;
            let b = (a - 1 + 1 + rng.below(n - 1) as NodeId) % n as NodeId + 1;
            (a, b)
        };
        if self.rng.per_mille(f.breaks) {
            let (from, to) = pick_pair(&mut self.rng);
            let after = self.rng.range(1, 60);
            self.break_link(from, to, after);
            if f.both_ways {
                self.break_link(to, from, after);
            }
        }
        if self.rng.per_mille(f.holds) {
            let (a, b) = pick_pair(&mut self.rng);
            let after = self.rng.range(10, 150);
            self.hold(a, b, after);
        }
        if self.rng.per_mille(f.drops) {
            let (a, b) = pick_pair(&mut self.rng);
            let after = self.rng.range(10, 150);
            self.break_link(a, b, after);
            self.break_link(b, a, after);
            self.record.borrow_mut().counters.drops += 1;
        }
        let crashes = self.record.borrow().counters.crashes;
        if crashes < u64::from(f.max_restarts) && self.rng.per_mille(f.restarts) {
            let id = self.rng.below(n) as NodeId + 1;
            self.restart(id);
        }
    }

    /// The TCP link `from → to` breaks: what is in flight on it is lost and
    /// only the sender notices; it reconnects `after` steps later.
    fn break_link(&mut self, from: NodeId, to: NodeId, after: u64) {
        self.record.borrow_mut().counters.breaks += 1;
        self.sim.fault(Fault::Break {
            from,
            to,
            reconnect_after: after,
            keep_some: false,
        });
    }

    /// Frames between `a` and `b` wait (none is lost) for `after` steps.
    fn hold(&mut self, a: NodeId, b: NodeId, after: u64) {
        let pair = (a.min(b), a.max(b));
        let now = self.sim.now();
        if self.held.get(&pair).is_some_and(|&heals| heals > now) {
            return;
        }
        self.record.borrow_mut().counters.holds += 1;
        self.sim.fault(Fault::Partition(a, b));
        self.sim.schedule(now + after, Fault::Heal(a, b));
        self.held.insert(pair, now + after);
    }

    /// Node `id`'s process dies: its engine, store and version log are gone,
    /// and so is what was in flight to and from it.
    fn crash(&mut self, id: NodeId) {
        self.record.borrow_mut().counters.crashes += 1;
        self.sim.fault(Fault::Crash(id));
        self.mark_lost_in_crash();
    }

    /// Node `id` crashes and starts again at once, empty.
    fn restart(&mut self, id: NodeId) {
        self.crash(id);
        self.sim.fault(Fault::Restart(id));
    }

    /// Acknowledged writes no live node holds (nor anything newer for their
    /// key) died with the crashed nodes: last-writer-wins cannot bring them
    /// back.
    fn mark_lost_in_crash(&mut self) {
        let mut survivors: Vec<(NodeId, Option<Stamp>)> = Vec::new();
        for id in self.sim.node_ids() {
            if self.sim.is_crashed(id) {
                continue;
            }
            let node = self.sim.node_mut(id);
            let all = node
                .replica
                .log()
                .since(
                    node.executor.store(),
                    0,
                    usize::MAX,
                    &Coverage::default(),
                    SIM_NOW,
                )
                .expect("the memory store is always readable")
                .versions;
            let flushed = all
                .iter()
                .filter(|v| v.state == State::Flushed)
                .map(|v| v.stamp)
                .max();
            survivors.push((id, flushed));
        }
        let mut record = self.record.borrow_mut();
        for ack in record.acks.iter_mut().filter(|a| !a.lost_in_crash) {
            let v = &ack.version;
            let held = survivors.iter().any(|&(id, flushed)| {
                let log = self.sim.node(id).replica.log();
                flushed.is_some_and(|f| f >= v.stamp)
                    || (!v.key.is_empty() && log.stamp(&v.key).is_some_and(|s| s >= v.stamp))
            });
            ack.lost_in_crash = !held;
        }
    }

    /// Stops the writes, heals every partition, waits until every broken
    /// link has reconnected and every restarted node's hellos have arrived,
    /// and lets sync rounds run: long enough for anything in flight to
    /// land, then `rounds` complete sync rounds. A sync answered in parts
    /// takes a round trip a part: the rounds count from its last part
    /// (and not before the longest gap between two parts has passed).
    fn settle(&mut self, rounds: u64) {
        self.workload.writing = false;
        self.sim.fault(Fault::HealAll);
        self.held.clear();
        let since = self.sim.now();
        while !self.sim.is_quiet() {
            assert!(
                self.sim.now() - since < 1_000,
                "links still down 1000 steps after the faults ended:\n{}",
                self.sim.describe()
            );
            self.step();
        }
        let drain = 2 * self.sim.config.max_latency() + 2 * self.cfg.max_delay;
        let settling = drain + rounds * self.cfg.interval();
        let since = self.sim.now();
        while self.sim.now() - since < settling
            || self.part_sent_within(settling.max(self.longest_gap_between_parts()))
        {
            assert!(
                self.sim.now() - since < 100_000,
                "nodes {} seed {}: syncs still answered in parts 100000 steps after the \
                 links came back:\n{}",
                self.cfg.nodes,
                self.cfg.seed,
                self.describe()
            );
            self.step();
        }
    }

    /// Whether a part of a sync answer was sent in the last `steps` steps.
    fn part_sent_within(&self, steps: u64) -> bool {
        let last = self.record.borrow().last_part_sent;
        last.is_some_and(|at| self.sim.now() - at < steps)
    }

    /// The longest two parts of one sync can be apart: a round trip (the
    /// next request goes once the part is applied), or, when a request or
    /// a part was lost, the wait before it is asked again (two rounds) and
    /// the next round.
    fn longest_gap_between_parts(&self) -> u64 {
        2 * self.sim.config.max_latency() + 3 * self.cfg.interval()
    }

    // ---- checks ----

    /// What a `gets` of every key returns at `id`, and its version stamps.
    fn snapshot(&mut self, id: NodeId) -> (Vec<u8>, Vec<Option<Stamp>>) {
        let reply = self.sim.dump(id, &self.keys);
        let log = self.sim.node(id).replica.log();
        let stamps = self.keys.iter().map(|k| log.stamp(k)).collect();
        (reply, stamps)
    }

    /// Items in node `id`'s store.
    fn items(&mut self, id: NodeId) -> u64 {
        self.sim.node_mut(id).executor.store().stats().items
    }

    /// Heartbeats since node `id` last completed a sync from `peer`.
    fn sync_lag(&self, id: NodeId, peer: NodeId) -> u64 {
        let engine = self.sim.node(id).node.engine();
        engine
            .peer_status(peer)
            .and_then(|p| p.sync_lag)
            .expect("eventual mode reports a sync lag")
    }

    /// Check 1: every replica holds the same items (values, flags, cas
    /// uniques) and the same version stamp per key. Unless `strict`, a key
    /// no replica holds may have its tombstone forgotten at some replicas
    /// and not (yet) at others, but no two replicas may know different stamps.
    fn check_converged(&mut self, strict: bool) -> Result<(), String> {
        let mut snapshots = Vec::new();
        for id in self.sim.node_ids() {
            snapshots.push((id, self.snapshot(id)));
        }
        let (first, (reply, _)) = &snapshots[0];
        for (id, (other_reply, _)) in &snapshots[1..] {
            if reply != other_reply {
                return Err(format!(
                    "node {first} holds\n{}node {id} holds\n{}",
                    String::from_utf8_lossy(reply),
                    String::from_utf8_lossy(other_reply)
                ));
            }
        }
        for (i, key) in self.keys.iter().enumerate() {
            let stamps: Vec<(NodeId, Option<Stamp>)> =
                snapshots.iter().map(|(id, (_, s))| (*id, s[i])).collect();
            let known: Vec<Stamp> = stamps.iter().filter_map(|(_, s)| *s).collect();
            let agree = match strict {
                true => stamps.iter().all(|(_, s)| *s == stamps[0].1),
                false => known.iter().all(|s| *s == known[0]),
            };
            if !agree {
                return Err(format!(
                    "key {}: version stamps differ: {stamps:?}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        Ok(())
    }

    /// Whether a frame completing a sync is in flight on `from → to`.
    fn answer_in_flight(&self, from: NodeId, to: NodeId) -> bool {
        self.sim
            .in_flight(from, to)
            .iter()
            .any(|frame| frame.body.sync_complete.is_some())
    }

    /// The highest-stamped acknowledged write of each key (a flush for a
    /// key stamped below it), leaving out those lost in a crash.
    fn last_writes(&self) -> Vec<(Key, Option<Version>)> {
        let record = self.record.borrow();
        let mut latest: BTreeMap<&[u8], &Version> = BTreeMap::new();
        let mut flush: Option<&Version> = None;
        for ack in record.acks.iter().filter(|a| !a.lost_in_crash) {
            let v = &ack.version;
            if v.key.is_empty() {
                if flush.is_none_or(|f| f.stamp < v.stamp) {
                    flush = Some(v);
                }
            } else if latest
                .get(v.key.as_slice())
                .is_none_or(|l| l.stamp < v.stamp)
            {
                latest.insert(&v.key, v);
            }
        }
        let winner = |key: &Key| match (latest.get(key.as_slice()), flush) {
            (Some(v), Some(f)) if f.stamp > v.stamp => Some(f.clone()),
            (Some(v), _) => Some((*v).clone()),
            (None, f) => f.cloned(),
        };
        self.keys.iter().map(|k| (k.clone(), winner(k))).collect()
    }

    /// Check 2: every key holds the highest-stamped acknowledged write for
    /// it (or nothing, if that is a delete or a flush) at every replica.
    fn check_last_writer_wins(&mut self) -> Result<(), String> {
        let expected = self.last_writes();
        for id in self.sim.node_ids() {
            let node = self.sim.node_mut(id);
            for (key, winner) in &expected {
                let mut item = None;
                node.executor
                    .store()
                    .retrieve(KeysRef::One(key), None, SIM_NOW, &mut |_, hit| {
                        item = Some(hit.to_item())
                    })
                    .unwrap();
                let stamp = node.replica.log().stamp(key);
                let name = String::from_utf8_lossy(key);
                let want = winner.as_ref().map(show_version);
                let fail = |what: String| {
                    Err(format!(
                        "node {id}, key {name}: {what}; the last acknowledged write is {want:?}"
                    ))
                };
                match winner.as_ref().map(|v| (&v.state, v.stamp)) {
                    Some((State::Present(want_item), want_stamp)) => {
                        let Some(item) = item else {
                            return fail("missing".into());
                        };
                        if item.value != want_item.value
                            || item.flags != want_item.flags
                            || item.cas != want_stamp.cas_unique()
                        {
                            return fail(format!(
                                "holds {:?} flags {} cas {}",
                                String::from_utf8_lossy(&item.value),
                                item.flags,
                                item.cas
                            ));
                        }
                        if stamp != Some(want_stamp) {
                            return fail(format!("version log stamp {stamp:?}"));
                        }
                    }
                    absent => {
                        if let Some(item) = item {
                            return fail(format!(
                                "holds {:?} cas {}",
                                String::from_utf8_lossy(&item.value),
                                item.cas
                            ));
                        }
                        // A tombstone may be kept or forgotten; nothing newer may be known.
                        let allowed = absent.map(|(_, s)| s);
                        if stamp.is_some() && stamp != allowed {
                            return fail(format!("version log stamp {stamp:?}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Per node: its clock, heartbeats since each peer's last completed
    /// sync, its sync counters; then the harness's view of nodes and links.
    fn describe(&self) -> String {
        let mut s = String::new();
        for id in self.sim.node_ids() {
            let engine = self.sim.node(id).node.engine();
            let status = engine.status();
            let lags: Vec<String> = self
                .sim
                .node_ids()
                .into_iter()
                .filter(|&p| p != id)
                .map(|p| format!("{p}:{}", self.sync_lag(id, p)))
                .collect();
            s += &format!(
                "  node {id}: clock {} sync lag (beats) [{}] {:?}\n",
                status.clock,
                lags.join(" "),
                status.sync
            );
        }
        s + &self.sim.describe()
    }

    /// The harness's trace with this file's lines (acks, lost pushes)
    /// merged in, each after the harness's lines of its step.
    fn dump_trace(&self) {
        let record = self.record.borrow();
        let mut lines: Vec<&String> = self.sim.trace().iter().collect();
        lines.extend(record.lines.iter().flatten());
        // Every line starts with its step, right-aligned: "[  123]".
        lines.sort_by(|a, b| a[..7].cmp(&b[..7]));
        for line in lines {
            eprintln!("{line}");
        }
    }
}

fn show_version(v: &Version) -> String {
    let state = match &v.state {
        State::Present(item) => {
            format!("={:?}/{}", String::from_utf8_lossy(&item.value), item.flags)
        }
        State::Deleted => " deleted".to_string(),
        State::Flushed => "flush_all".to_string(),
    };
    format!(
        "{}@{}.{}{state}",
        String::from_utf8_lossy(&v.key),
        v.stamp.ts,
        v.stamp.node
    )
}

fn show_gossip(g: &Gossip) -> String {
    let versions: Vec<String> = g.versions.iter().map(show_version).collect();
    format!(
        "clock {} request {:?} complete {:?} versions [{}]",
        g.clock,
        g.sync_request,
        g.sync_complete,
        versions.join(" ")
    )
}

// ---- scenarios ----

/// Runs a config: the workload with its faults, then heal and `rounds`
/// sync rounds with no writes.
fn run(cfg: &Config, rounds: u64) -> Cluster {
    let mut cluster = Cluster::new(cfg.clone());
    cluster.run(cfg.workload_steps);
    cluster.settle(rounds);
    cluster
}

/// A cluster with no random writes and no random faults, for scripts.
fn quiet(nodes: u32, seed: u64) -> Config {
    let mut cfg = Config::new(nodes, seed);
    cfg.write_per_mille = 0;
    cfg.workload_steps = 0;
    cfg
}

fn seeds(nodes: &[u32], count: u64, make: impl Fn(u32, u64) -> Config) -> Vec<Config> {
    let mut configs = Vec::new();
    for &n in nodes {
        for seed in 0..count {
            configs.push(make(n, seed));
        }
    }
    configs
}

/// Failed checks of a sweep, and totals of what its runs did.
#[derive(Default)]
struct Sweep {
    runs: usize,
    failures: Vec<String>,
    total: Counters,
    lost_in_crash: usize,
}

impl Sweep {
    fn new(
        configs: Vec<Config>,
        rounds: u64,
        check: impl Fn(&mut Cluster) -> Result<(), String>,
    ) -> Sweep {
        let mut sweep = Sweep::default();
        for cfg in configs {
            let mut cluster = run(&cfg, rounds);
            sweep.runs += 1;
            sweep.total.add(&cluster.counters());
            sweep.lost_in_crash += cluster.lost_in_crash();
            if let Err(why) = check(&mut cluster) {
                let line = format!("nodes {} seed {}: {why}", cfg.nodes, cfg.seed);
                sweep.failures.push(line);
            }
        }
        sweep
    }

    fn summary(&self, name: &str, started: Instant) -> String {
        let t = &self.total;
        format!(
            "{name}: {} runs in {:.2?}: {} acked writes ({} died with a crashed node), \
             {} frames, {} lost in {} breaks / {} drop partitions / {} crashes, \
             {} pushed versions lost, {} hold partitions; {} failed",
            self.runs,
            started.elapsed(),
            t.acks,
            self.lost_in_crash,
            t.frames,
            t.frames_lost,
            t.breaks,
            t.drops,
            t.crashes,
            t.pushes_lost,
            t.holds,
            self.failures.len()
        )
    }

    fn assert_ok(&self, name: &str, started: Instant) {
        eprintln!("{}", self.summary(name, started));
        assert!(
            self.failures.is_empty(),
            "{} of {} runs failed:\n{}",
            self.failures.len(),
            self.runs,
            self.failures.join("\n")
        );
    }
}

const SIZES: [u32; 3] = [2, 3, 5];
const SEEDS: u64 = 50;
/// Seeds per cluster size of `a_crashed_and_restarted_node_converges`.
const CRASH_SEEDS: u64 = 200;

/// Replays one run with its trace, e.g. `SEED=7 NODES=3 RESTARTS=4 LATE=1
/// cargo test --release --test eventual_simulation replay -- --ignored --nocapture`
/// (`ONEWAY=1`: breaks take one direction down only; `FLUSH=0`: no
/// flush_all; `CRASHES=1`: a run of `a_crashed_and_restarted_node_converges`,
/// the other variables but `SEED`, `NODES` and `ROUNDS` ignored). The frame
/// budget follows the seed, as in the sweeps.
#[test]
#[ignore = "a debugging aid"]
fn replay() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (nodes, seed) = (var("NODES", 3) as u32, var("SEED", 0));
    let mut cfg = Config::chaos(nodes, seed);
    cfg.faults.both_ways = var("ONEWAY", 0) == 0;
    cfg.faults.restarts = var("RESTARTS", 0);
    cfg.faults.max_restarts = 2;
    cfg.faults.late_hello = var("LATE", 0) == 1;
    cfg.flush_per_mille = var("FLUSH", cfg.flush_per_mille);
    if var("CRASHES", 0) == 1 {
        cfg = Config::crashing(nodes, seed);
    }
    cfg.trace = true;
    let mut cluster = run(&cfg, var("ROUNDS", 2));
    cluster.dump_trace();
    eprintln!("{}", cluster.describe());
    eprintln!("converged: {:?}", cluster.check_converged(false));
    eprintln!("strictly: {:?}", cluster.check_converged(true));
    eprintln!("last writer wins: {:?}", cluster.check_last_writer_wins());
}

/// Check 1. Breaks, hold and drop partitions and lost pushes while every
/// node's clients write; then heal, reconnect, two sync rounds with no
/// writes: every replica holds the same bytes and version stamps.
#[test]
fn replicas_converge_after_faults() {
    let started = Instant::now();
    let sweep = Sweep::new(seeds(&SIZES, SEEDS, Config::chaos), 2, |c| {
        c.check_converged(false)
    });
    sweep.assert_ok("convergence", started);
    let t = sweep.total;
    assert!(t.breaks > 0 && t.holds > 0 && t.drops > 0 && t.pushes_lost > 0);
}

/// Check 2. The same runs: every key holds, at every replica, the
/// highest-stamped acknowledged write to it (nothing after a delete or flush).
#[test]
fn no_acknowledged_write_is_lost() {
    let started = Instant::now();
    let sweep = Sweep::new(
        seeds(&SIZES, SEEDS, Config::chaos),
        2,
        Cluster::check_last_writer_wins,
    );
    sweep.assert_ok("last writer wins", started);
}

/// Keys of the converged store `sync_cost_follows_changes` and
/// `sync_after_a_short_partition_moves_only_what_changed` start from.
const PRELOADED: usize = 2000;

/// A converged cluster of `n` nodes holding `PRELOADED` keys, written
/// round the nodes, and its config.
fn preloaded(n: u32, seed: u64) -> (Cluster, Config) {
    let mut cfg = quiet(n, seed);
    cfg.extra_keys = PRELOADED;
    let mut c = Cluster::new(cfg.clone());
    for i in 0..PRELOADED {
        let node = (i as NodeId % n) + 1;
        let value = format!("n{node}c0s{i}");
        c.write(
            node,
            store_request(StorageMode::Set, extra_key(i), &value, 0),
        );
    }
    c.settle(3);
    c.check_converged(true).unwrap();
    (c, cfg)
}

/// Writes `count` of the preloaded keys, picked at random, on `node`.
fn overwrite(c: &mut Cluster, node: NodeId, count: usize, tag: &str) {
    let mut written = BTreeSet::new();
    while written.len() < count {
        let i = c.rng.below(PRELOADED as u64) as usize;
        if written.insert(i) {
            let value = format!("{tag}.{i}");
            c.write(
                node,
                store_request(StorageMode::Set, extra_key(i), &value, 7),
            );
        }
    }
}

/// Check 3. A converged cluster of 2,000 keys sends no versions while idle;
/// W new writes cost O(W) versions in all (pushes, answers, echoes), not
/// O(store size).
#[test]
fn sync_cost_follows_changes() {
    const KEYS: usize = PRELOADED;
    const W: u64 = 5;
    for n in SIZES {
        for seed in 0..3 {
            let (mut c, cfg) = preloaded(n, seed);
            let preload = c.versions_sent();
            assert!(preload >= (KEYS as u64) * u64::from(n - 1));

            let before = c.versions_sent();
            c.run(3 * cfg.interval());
            assert_eq!(c.versions_sent(), before, "idle sync rounds sent versions");

            let (before, answers) = (c.versions_sent(), c.counters().answer_versions);
            overwrite(&mut c, 1, W as usize, &format!("new{seed}"));
            c.settle(4);
            let sent = c.versions_sent() - before;
            let answered = c.counters().answer_versions - answers;
            // Pushes: W to each peer. Answers: every replica changed W keys
            // (the writer; the others on applying them), and each answers
            // each of its N-1 peers once.
            let n = u64::from(n);
            let bound = (n + 1) * W * (n - 1);
            eprintln!(
                "nodes {n} seed {seed}: preload sent {preload} versions; {W} writes then sent \
                 {sent} ({answered} in sync answers; bound {bound})"
            );
            assert!(sent >= W * (n - 1), "the writes were not replicated");
            assert!(
                sent <= bound,
                "{sent} versions for {W} writes (bound {bound})"
            );
            assert!(sent * 10 < KEYS as u64);
            c.check_converged(true).unwrap();
            c.check_last_writer_wins().unwrap();
            let before = c.versions_sent();
            c.run(3 * cfg.interval());
            assert_eq!(c.versions_sent(), before, "idle sync rounds sent versions");
        }
    }
}

/// Check 3b. The sync of a large store after a short partition moves only
/// what changed: the last node, cut off from node 1 (both links broken, so
/// node 1's pushes to it are lost) while node 1 writes W of the 2,000 keys,
/// gets them from anti-entropy once the links are back, and the sync
/// answers carry about the W writes it lacks, from each peer that has
/// them, not the store; the others, pushed the writes, are sent next to
/// none of them again (the summaries, `origins.rs`).
#[test]
fn sync_after_a_short_partition_moves_only_what_changed() {
    const W: u64 = 20;
    for n in SIZES {
        for seed in 0..3 {
            let (mut c, _) = preloaded(n, seed);
            let cut = n as NodeId;
            c.break_link(1, cut, 100);
            c.break_link(cut, 1, 100);
            let answers = c.counters().answer_versions;
            overwrite(&mut c, 1, W as usize, &format!("cut{seed}"));
            c.settle(4);
            let answered = c.counters().answer_versions - answers;
            // W from each peer that has them, and W more for versions in
            // flight when a summary was taken (a heartbeat old).
            let bound = W * u64::from(n);
            eprintln!("nodes {n} seed {seed}: {answered} versions in sync answers after {W} writes cut off from node {cut} (bound {bound})");
            assert!(
                answered >= W,
                "the cut-off node got the writes by anti-entropy"
            );
            assert!(answered <= bound, "{answered} versions in answers");
            assert!(answered * 10 < PRELOADED as u64, "not the store");
            c.check_converged(true).unwrap();
            c.check_last_writer_wins().unwrap();
        }
    }
}

/// Check 4. A node restarted with an empty store catches up: after sync
/// rounds it holds exactly what the others hold. Scripted (a loaded,
/// converged cluster with tombstones; one node restarts, nothing else
/// happens) and random (restarts amid the chaos workload, writes lost with
/// the crashed node excluded from the last-writer-wins check).
#[test]
fn restarted_empty_node_catches_up() {
    let started = Instant::now();
    for n in SIZES {
        for seed in 0..10 {
            let mut cfg = quiet(n, seed);
            cfg.extra_keys = 200;
            let mut c = Cluster::new(cfg);
            for i in 0..200 {
                let node = c.rng.below(u64::from(n)) as NodeId + 1;
                let value = format!("n{node}c0s{i}");
                c.write(
                    node,
                    store_request(StorageMode::Set, extra_key(i), &value, 1),
                );
            }
            for i in (0..200).step_by(4) {
                let node = c.rng.below(u64::from(n)) as NodeId + 1;
                c.write(node, request(Command::Delete { key: extra_key(i) }));
            }
            c.settle(3);
            c.check_converged(false).unwrap();
            let victim = c.rng.below(u64::from(n)) as NodeId + 1;
            let before = c.snapshot(victim);
            c.restart(victim);
            assert_eq!(c.items(victim), 0);
            c.settle(2);
            let after = c.snapshot(victim);
            assert_eq!(
                String::from_utf8_lossy(&after.0),
                String::from_utf8_lossy(&before.0),
                "nodes {n} seed {seed}: restarted node {victim} did not catch up"
            );
            let other = victim % n + 1;
            assert_eq!(c.items(victim), c.items(other));
            c.check_converged(false).unwrap();
            c.check_last_writer_wins().unwrap();
        }
    }
    let chaos_with_restarts = |n, seed| {
        let mut cfg = Config::chaos(n, seed);
        cfg.faults.restarts = 4;
        cfg.faults.max_restarts = 2;
        cfg
    };
    let sweep = Sweep::new(seeds(&SIZES, SEEDS, chaos_with_restarts), 2, |c| {
        c.check_converged(false)?;
        c.check_last_writer_wins()
    });
    sweep.assert_ok("restarts", started);
    assert!(sweep.total.crashes >= SEEDS);
}

/// Check 5. A node crashes amid the chaos workload (breaks, hold and drop
/// partitions, lost pushes): its engine, store and version log are gone,
/// what was in flight to and from it is lost, and its clients wait. It
/// stays down for 1 to 150 steps while the others go on writing (or, when
/// it crashed late, until after the writes stopped; its peers' failure
/// detectors take it down after 60 silent steps), then restarts empty as
/// a new run (with every third seed, its hello reaching the others late);
/// with odd seeds a second node does the same after it is back. Once faults
/// end and sync rounds pass, every replica, the restarted ones included,
/// holds byte for byte the highest-stamped acknowledged version of every
/// key, and no two know different version stamps. Acknowledged writes whose
/// only holder crashed before any other node held them (or anything newer)
/// are lost with it, and left out: counting them in, 2 of these 400 runs
/// fail.
#[test]
fn a_crashed_and_restarted_node_converges() {
    let started = Instant::now();
    let configs = seeds(&[3, 5], CRASH_SEEDS, Config::crashing);
    let planned: usize = configs.iter().map(|c| c.crashes.len()).sum();
    let sweep = Sweep::new(configs, 2, |c| {
        c.check_converged(false)?;
        c.check_last_writer_wins()
    });
    sweep.assert_ok("crashes", started);
    assert_eq!(sweep.total.crashes, planned as u64);
    assert!(sweep.lost_in_crash > 0, "no run lost a write with a crash");
}

/// Check 6, the negative control: with anti-entropy off (no sync rounds,
/// no link breaks, whose reconnects also sync) lost pushes are never
/// repaired and the convergence check fails; the same runs with sync rounds
/// on pass it.
#[test]
fn without_anti_entropy_lost_pushes_stay_lost() {
    let started = Instant::now();
    let lossy = |sync_every: u64| {
        move |n, seed| {
            let mut cfg = Config::new(n, seed);
            cfg.sync_every = sync_every;
            cfg.faults.push_loss = 30;
            cfg.faults.holds = 6;
            cfg
        }
    };
    let off = Sweep::new(seeds(&SIZES, 20, lossy(SYNC_OFF)), 2, |c| {
        c.check_converged(false)
    });
    eprintln!("{}", off.summary("anti-entropy off", started));
    assert!(off.total.pushes_lost > 0);
    assert!(
        off.failures.len() * 10 >= off.runs * 9,
        "only {} of {} runs without anti-entropy diverged",
        off.failures.len(),
        off.runs
    );
    let on = Sweep::new(seeds(&SIZES, 20, lossy(4)), 2, |c| {
        c.check_converged(false)?;
        c.check_last_writer_wins()
    });
    on.assert_ok("anti-entropy on", started);
}

/// Anti-entropy's volume under a steady load with no faults: versions in
/// sync answers per acknowledged write, in all, over 3 and 5 nodes. Before
/// summaries, a sync answer re-sent every key changed since the asker's
/// last sync, those it got by push too: every replica that took a write
/// answered its peers with it, though each already had it by push
/// (measured by this run: 3.9 per write on 3 nodes, 9.8 on 5; bound
/// (N - 1)²; that count also took the pushes riding in an answer's frame
/// for answer versions). With summaries (`origins.rs`) an answer leaves
/// out what the asker covers, and what is left is what it had not been
/// pushed yet when its store side last reported its coverage, a heartbeat
/// before it asked (measured: 1.26 on 3 nodes and 3.73 on 5 counted as
/// before; 1.16 and 3.49 counting answer versions only, as now). The bound
/// is now N - 1.
#[test]
fn anti_entropy_volume_per_write_under_a_steady_load() {
    for n in [3, 5] {
        let (mut acks, mut answered) = (0, 0);
        for seed in 0..10 {
            let c = run(&Config::new(n, seed), 2);
            let counters = c.counters();
            acks += counters.acks;
            answered += counters.answer_versions;
        }
        let per_write = answered as f64 / acks as f64;
        eprintln!("{n} nodes: {acks} writes, {answered} versions in sync answers: {per_write:.2} per write");
        assert!(acks > 1000, "{acks} writes");
        assert!(per_write <= f64::from(n - 1), "{per_write:.2} per write");
    }
}

/// What causes cost on the wire under the same steady load: per pushed
/// version, its origin's run and number (17 bytes with the byte that says
/// it has one), and in causal mode its dependencies (4 bytes and 20 per
/// origin the receiver's run did not say it covers, written out only when
/// they differ from the previous push's in the frame). The bound is the
/// most a push can take with one origin per other node; it holds with
/// nodes restarting too (one or two crashes a run, `crash_plan`), whose
/// earlier runs stay in the writers' coverage for good but are soon
/// covered by every receiver, so they are left out. Measured: 44.4 bytes
/// on 3 nodes and 69.4 on 5 without restarts, 44.6 and 69.1 with; before
/// covered dependencies were left out, 59.5 and 97.7 without restarts,
/// and 71.7 on 3 nodes with them (past the bound).
#[test]
fn causal_metadata_per_pushed_write_under_a_steady_load() {
    for (causal, restarts) in [(false, false), (true, false), (true, true)] {
        for n in [3, 5] {
            let (mut pushed, mut bytes) = (0, 0);
            for seed in 0..10 {
                let mut cfg = Config::new(n, seed);
                cfg.causal = causal;
                if restarts {
                    cfg.crashes = crash_plan(n, seed);
                }
                let counters = run(&cfg, 2).counters();
                pushed += counters.pushed_versions;
                bytes += counters.cause_bytes;
            }
            let per_push = bytes as f64 / pushed as f64;
            let mode = match (causal, restarts) {
                (false, _) => "eventual",
                (true, false) => "causal",
                (true, true) => "causal with restarts",
            };
            eprintln!(
                "{mode}, {n} nodes: {pushed} pushed versions, {per_push:.1} cause bytes each"
            );
            let most = match causal {
                true => 17 + 4 + 20 * (n - 1),
                false => 17,
            };
            assert!(pushed > 1000, "{pushed} pushes");
            assert!(
                per_push <= f64::from(most),
                "{mode}: {per_push:.1} bytes a push"
            );
            assert!(per_push >= 17.0, "{per_push:.1} bytes a push");
        }
    }
}

/// Check 8. Stores with room for about half the keys evict through the
/// chaos workload, and through crashes and restarts, in eventual and in
/// causal mode: each eviction is a delete stamped by the node that made
/// it, so the replicas still converge (values and stamps). Acknowledged
/// writes may be evicted, so last writer wins is not checked. The negative
/// control: evictions that stay where they happened leave replicas apart.
#[test]
fn full_stores_evict_and_the_replicas_still_converge() {
    let started = Instant::now();
    let evicting = |replicated: bool, crashing: bool, causal: bool| {
        move |n, seed| {
            let mut cfg = match crashing {
                true => Config::crashing(n, seed),
                false => Config::chaos(n, seed),
            };
            cfg.memory_limit = Config::evicting(n, seed).memory_limit;
            cfg.evictions_replicated = replicated;
            cfg.causal = causal;
            cfg
        }
    };
    let evictions = std::cell::Cell::new(0);
    let converged = |c: &mut Cluster| {
        evictions.set(evictions.get() + c.sim.evictions());
        c.check_converged(false)
    };
    for (crashing, causal) in [(false, false), (true, false), (false, true), (true, true)] {
        let runs = seeds(&SIZES, SEEDS, evicting(true, crashing, causal));
        let sweep = Sweep::new(runs, 2, converged);
        let what = match causal {
            false => "evicting stores converge",
            true => "evicting stores converge in causal mode",
        };
        sweep.assert_ok(what, started);
    }
    assert!(evictions.get() > 2000, "{} evictions", evictions.get());
    let kept = Sweep::new(seeds(&SIZES, 10, evicting(false, false, false)), 2, |c| {
        c.check_converged(false)
    });
    eprintln!("{}", kept.summary("evictions not replicated", started));
    assert!(
        kept.failures.len() * 2 >= kept.runs,
        "only {} of {} runs with evictions kept local diverged",
        kept.failures.len(),
        kept.runs
    );
}

/// Check 7, the negative control of answers in parts: a part must complete
/// only up to the last change it carries. With every part rewritten on its
/// way to claim the whole answer (`upto` = the sender's last change, as a
/// naive split would say), the asker skips the changes the part left out
/// and its peer may forget tombstones it never got: with a one-byte budget
/// and restarts amid the chaos workload, the convergence check fails. The
/// same runs with honest parts pass it.
#[test]
fn a_part_that_claims_the_whole_answer_is_caught() {
    let started = Instant::now();
    let parts = |parts_claim_whole: bool| {
        move |n, seed| {
            let mut cfg = Config::chaos(n, seed);
            cfg.faults.restarts = 4;
            cfg.faults.max_restarts = 2;
            cfg.frame_budget = Some(1);
            cfg.parts_claim_whole = parts_claim_whole;
            cfg
        }
    };
    let broken = Sweep::new(seeds(&SIZES, 20, parts(true)), 2, |c| {
        c.check_converged(false)
    });
    eprintln!(
        "{}",
        broken.summary("parts claiming the whole answer", started)
    );
    assert!(
        broken.failures.len() * 2 >= broken.runs,
        "only {} of {} runs with parts claiming the whole answer diverged",
        broken.failures.len(),
        broken.runs
    );
    let honest = Sweep::new(seeds(&SIZES, 20, parts(false)), 2, |c| {
        c.check_converged(false)?;
        c.check_last_writer_wins()
    });
    honest.assert_ok("honest parts", started);
}

/// `covered` claiming one more write of each origin.
fn one_more(covered: &Coverage) -> Coverage {
    let entries = covered.entries().iter();
    Coverage::from_entries(entries.map(|&(origin, seq)| (origin, seq + 1)).collect())
}

/// Negative controls for the summaries (`origins.rs`): a sync request whose
/// summary claims one more write per origin than its sender holds gets an
/// answer without it, and an asker that takes an answer's coverage claiming
/// one more passes that claim on; pushes lost in the chaos (and crashes)
/// then stay lost: the convergence checks catch both. The same runs with
/// honest claims converge.
#[test]
fn a_claim_of_more_than_is_held_is_caught() {
    let started = Instant::now();
    let chaos = |summary: bool, answer: bool| {
        move |n, seed| {
            let mut cfg = Config::chaos(n, seed);
            cfg.faults.restarts = 4;
            cfg.faults.max_restarts = 2;
            cfg.summary_claims_more = summary;
            cfg.answer_claims_more = answer;
            cfg
        }
    };
    let checks = |c: &mut Cluster| {
        c.check_converged(false)?;
        c.check_last_writer_wins()
    };
    for (name, broken) in [
        ("summaries claiming more", chaos(true, false)),
        ("answers' coverage claiming more", chaos(false, true)),
    ] {
        let broken = Sweep::new(seeds(&SIZES, 20, broken), 2, checks);
        eprintln!("{}", broken.summary(name, started));
        assert!(
            broken.failures.len() * 3 >= broken.runs,
            "only {} of {} runs with {name} failed",
            broken.failures.len(),
            broken.runs
        );
    }
    let honest = Sweep::new(seeds(&SIZES, 20, chaos(false, false)), 2, checks);
    honest.assert_ok("honest claims", started);
}

// ---- bugs the simulation found, kept as regression tests ----

/// A sync answer lost with its link. The requester marks its sync
/// `in_flight` and clears it on the answer or on `link_lost` of *its own*
/// link; when the answering direction breaks, only the answerer gets
/// `link_lost` (as in `server/peers.rs`: an accepted link closing tells the
/// engine nothing). Found by this simulation: against the engine of commit
/// 779d254 the requester never asked that peer again, so writes whose pushes
/// were lost never reached it (below: two nodes, one write, one break, and
/// node 2 never syncs from node 1 again; 11 of 150 chaos runs with one-way
/// breaks diverged). Fixed in 1dd904b: asked again after `2 * sync_every`
/// heartbeats without an answer.
#[test]
fn lost_sync_answer_is_asked_again() {
    let started = Instant::now();
    let cfg = quiet(2, 0);
    let mut c = Cluster::new(cfg.clone());
    c.write(1, store_request(StorageMode::Set, text_key(0), "a", 0));
    c.settle(2);
    c.check_converged(true).unwrap();
    while !c.answer_in_flight(1, 2) {
        c.step();
    }
    c.break_link(1, 2, 3); // node 1's answer to node 2 is lost
    c.write(1, store_request(StorageMode::Set, text_key(0), "b", 0)); // not pushed: link down
    c.settle(4);
    let lag = c.sync_lag(2, 1);
    assert!(
        lag <= 2 * cfg.sync_every,
        "node 2 last synced from node 1 {lag} heartbeats ago\n{}",
        c.describe()
    );
    c.check_converged(true).unwrap();
    c.check_last_writer_wins().unwrap();
    let one_way = |n, seed| {
        let mut cfg = Config::chaos(n, seed);
        cfg.faults.both_ways = false;
        cfg
    };
    let sweep = Sweep::new(seeds(&SIZES, SEEDS, one_way), 2, |c| {
        c.check_converged(false)?;
        c.check_last_writer_wins()
    });
    sweep.assert_ok("one-way breaks", started);
}

/// An idle cluster sends no versions once tombstones are collected (runs
/// without `flush_all`; `flush_markers_do_not_circulate` covers those).
/// Tombstone collection is per node, so a node that forgot a tombstone can
/// get it back as a new change from a peer that has not yet: in these runs
/// tombstones still travel after 10 idle rounds in 2 of 150 runs, never
/// after 40.
#[test]
fn idle_cluster_sends_nothing() {
    let started = Instant::now();
    let no_flush = |n, seed| {
        let mut cfg = Config::chaos(n, seed);
        cfg.flush_per_mille = 0;
        cfg
    };
    let sweep = Sweep::new(seeds(&SIZES, 20, no_flush), 40, idle_and_settled);
    sweep.assert_ok("idle", started);
}

/// Five more idle sync rounds send no version, and the replicas' version
/// logs agree exactly (tombstones included).
fn idle_and_settled(c: &mut Cluster) -> Result<(), String> {
    let before = c.counters();
    c.run(5 * c.cfg.interval());
    let after = c.counters();
    match after.versions_sent - before.versions_sent {
        0 => c.check_converged(true),
        idle => Err(format!(
            "{idle} versions sent in 5 idle sync rounds ({} tombstones, {} flush markers)",
            after.tombstones_sent - before.tombstones_sent,
            after.flushes_sent - before.flushes_sent
        )),
    }
}

/// Regression (fixed): `VersionLog::apply_remote` took a `flush_all` marker whose stamp
/// equals the one it holds as new (`is_flushed` is `stamp < flushed`, and the
/// `Flushed` branch then records it again): it gets a new change number,
/// so the next sync answer to every peer carries it again, and they do the
/// same. One `flush_all` circulates for ever: every idle round sends
/// N·(N-1) markers, and each receipt runs `apply_flush`, which scans every
/// key the log knows (O(store) per peer per round).
#[test]
fn flush_markers_do_not_circulate() {
    let started = Instant::now();
    // Minimal: two nodes, one write, one flush_all.
    let mut c = Cluster::new(quiet(2, 0));
    c.write(1, store_request(StorageMode::Set, text_key(0), "a", 0));
    c.write(1, request(Command::FlushAll { delay: 0 }));
    c.settle(10);
    c.check_last_writer_wins().unwrap();
    let scripted = idle_and_settled(&mut c);
    let sweep = Sweep::new(seeds(&SIZES, SEEDS, Config::chaos), 40, idle_and_settled);
    eprintln!("{}", sweep.summary("idle after flush_all", started));
    scripted.unwrap();
    sweep.assert_ok("idle after flush_all", started);
}

/// Regression (fixed). After a restart, a peer that reconnects before it
/// hears the new incarnation (its dialed link may open before the restarted
/// node's hello arrives on the other link) sends `sync request <since>` with
/// a change number of the *old* incarnation. The engine of commit 5dd8b4b
/// took it as `synced_to` (kept by `max`, never lowered), so
/// `ForgetTombstones` let the restarted node forget tombstones that peer
/// never received: an acknowledged delete was lost and the deleted value
/// came back (3 of 150 late-hello runs). Requests and answers now carry the
/// incarnation that counted their change number; a request naming another
/// run is answered from zero and moves nothing.
#[test]
fn stale_sync_request_after_restart_keeps_the_delete() {
    let started = Instant::now();
    // Minimal: node 2 made 200 changes, restarts, and node 1's stale
    // `since 200` goes out before node 1 hears of the restart.
    let mut cfg = quiet(2, 0);
    cfg.trace = std::env::var("TRACE").is_ok();
    let mut c = Cluster::new(cfg);
    for i in 0..200 {
        let value = format!("v{i}");
        c.write(2, store_request(StorageMode::Set, extra_key(0), &value, 0));
    }
    c.write(1, store_request(StorageMode::Set, text_key(0), "a", 0));
    c.settle(2);
    c.check_converged(true).unwrap();
    // The new run's hello reaches node 1 five steps after node 1's link to
    // it reopened.
    c.sim.config.late_hello_min = 5;
    c.sim.config.late_hello = 5;
    c.restart(2);
    c.run(3 * c.cfg.interval());
    // The new node 2 holds t0 = a again, and deletes it; the push is lost.
    assert!(c.sim.node(2).replica.log().stamp(&text_key(0)).is_some());
    c.write(2, request(Command::Delete { key: text_key(0) }));
    // Both links reset for a round: node 2 forgets the tombstone meanwhile.
    let outage = 2 * c.cfg.interval();
    c.break_link(2, 1, outage);
    c.break_link(1, 2, outage);
    c.run(outage + 1);
    c.settle(4);
    let scripted = c.check_last_writer_wins();
    c.dump_trace();
    eprintln!("{}", c.describe());
    // Random: the chaos workload with restarts and late hellos.
    let late = |n, seed| {
        let mut cfg = Config::chaos(n, seed);
        cfg.faults.restarts = 4;
        cfg.faults.max_restarts = 2;
        cfg.faults.late_hello = true;
        cfg
    };
    let sweep = Sweep::new(seeds(&SIZES, SEEDS, late), 2, |c| {
        c.check_converged(false)?;
        c.check_last_writer_wins()
    });
    eprintln!("{}", sweep.summary("late hellos", started));
    scripted.unwrap();
    sweep.assert_ok("late hellos", started);
}

/// Regression (fixed in d8b152e), found once a third of the seeds ran with
/// one-version answers: after node 2 restarted, the two nodes synced from
/// each other a part at a time, out of step, and each took as news a copy
/// of a tombstone it had just forgotten: they passed 50 tombstones back and
/// forth for good (the run below, `restarted_empty_node_catches_up`'s
/// first). A peer's word that it synced past a node's changes now counts
/// only once the node holds the copies the peer made. Once settled the
/// cluster is idle: five sync rounds send no version, and the version logs
/// agree, tombstones included.
#[test]
fn forgotten_tombstones_do_not_come_back() {
    let mut cfg = quiet(2, 0);
    cfg.frame_budget = Some(1);
    cfg.extra_keys = 200;
    let mut c = Cluster::new(cfg);
    for i in 0..200 {
        let node = c.rng.below(2) as NodeId + 1;
        let value = format!("n{node}c0s{i}");
        c.write(
            node,
            store_request(StorageMode::Set, extra_key(i), &value, 1),
        );
    }
    for i in (0..200).step_by(4) {
        let node = c.rng.below(2) as NodeId + 1;
        c.write(node, request(Command::Delete { key: extra_key(i) }));
    }
    c.settle(3);
    let victim = c.rng.below(2) as NodeId + 1;
    c.restart(victim);
    c.settle(2);
    c.check_last_writer_wins().unwrap();
    idle_and_settled(&mut c).unwrap();
}
