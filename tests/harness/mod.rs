//! One deterministic simulation harness for every consistency mode, in the
//! manner of raft-rs's `harness/`: N cluster cores ([`Node`]) in one
//! process, each with the real store side of its mode (its [`Replica`]
//! running on a [`MemoryStore`] through the real [`Executor`]) and the real
//! failure detector on simulated time, over a seeded simulated network.
//! Scenario files (`tests/simulation.rs`, `tests/eventual_simulation.rs`)
//! drive it; it is not part of the library.
//!
//! ```text
//!  Driver ─ next_request ─► client ─► Node::on_client ─┐          ┌─► Work: Replica::perform on
//!        ◄─ on_complete ─── reply ◄─────────────────────┼ effects ─┤   that node's store ─► Done
//!                                                      │          └─► Refuse: the client's op fails
//!  Node::outgoing(to) ─► encode ─► link (from, to): FIFO, random delay ─► decode ─► Node::on_frame
//!  every heartbeat: Node::tick(now) (silent peers go down), links reconnect, hellos
//! ```
//!
//! Time is a step counter, and the cluster core's clock reads it as
//! milliseconds, so `peer_timeout` is in steps. One [`Sim::step`]:
//! 1. applies the faults scheduled for this step (and reconnects, hellos);
//! 2. delivers every frame that is due, link by link in a random order (so
//!    frames are reordered *across* links, never within one: engines rely
//!    on FIFO links);
//! 3. every `heartbeat_every` steps, ticks every running node;
//! 4. lets every idle client whose think time is over issue its next request;
//! 5. takes from every running node the frame it owes each peer it has a
//!    link to, encodes it and puts it on the link with a random delay.
//!
//! A link from `a` to `b` is `a`'s dialed TCP connection: it opens with a
//! hello that `b`'s core takes or refuses ([`Node::on_hello`]; a refusal
//! fences `a`), after which `a` is told the link opened. Faults ([`Fault`]):
//! - *partition* (two-way) and *one-way* cuts hold frames (TCP retries;
//!   nothing is lost) and deliver them in order after the heal, unless the
//!   silence lasts past `peer_timeout` (the detector then marks the peer
//!   down, as it would a black-holed link);
//! - *break*: a TCP reset of one direction: the frames in flight (or a
//!   random suffix of them) are lost, the sender is told, and the link
//!   reopens with a hello some steps later;
//! - *pause* / *resume*: a SIGSTOPped node takes no input and sends
//!   nothing; what arrives for it waits, and it resumes with the backlog;
//! - *crash*: the node's memory is gone; frames to and from it are lost,
//!   its peers' links to it break, its clients' outstanding requests end
//!   with an unknown outcome ([`Outcome::Lost`]);
//! - *leave*: a clean shutdown (SIGTERM): what the node sent is still
//!   delivered, followed by a leave on each link; then it is down as after
//!   a crash;
//! - *restart*: a crashed (or departed) node comes back as a new run (new incarnation,
//!   empty store), built by the scenario's engine factory; its links open
//!   with hellos, the hello it sends each peer arriving
//!   `late_hello_min..=late_hello` steps late.
//!
//! With `data_dirs` ([`Sim::with_data_dirs`]) every node has a simulated
//! data directory (`durable.rs`): a restart brings it back holding what its
//! directory gives back, an image of its store at one of its marks (after a
//! crash, any from the one current at its last reply on), and its engine is
//! told the image's stamp.
//!
//! A run depends on its seed alone: every decision iterates in sorted
//! order (`BTreeMap`) or draws from the seeded [`Rng`]; [`Sim::enable_trace`]
//! logs every event for explaining a failing seed, and with
//! [`capture_engine_logs`] what the engines log, at the step they log it.
#![allow(dead_code)]

pub mod durable;
pub mod keyed;
pub mod rng;
pub mod shared;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use mckv::cluster::membership::Load;
use mckv::cluster::wire;
use mckv::cluster::{
    Done, Effect, Engine, Frame, Node, NodeId, PeerEvent, PeerMessage, Replica, ReplyTo, Stamp,
    StoreWork,
};
use mckv::durability::ReportWait;
use mckv::protocol::{Command, Get, Key, Limits, Request};
use mckv::store::memory::MemoryStore;
use mckv::store::{Executor, StoreCounters, UnixTime, VersionedStore};
pub use rng::Rng;

use durable::{Image, ImagingStore, Journal, SharedJournal};
use keyed::KeyedStore;
use shared::SharedStore;

/// The wall time every simulated operation and store call runs at (so
/// nothing expires).
pub const SIM_NOW: UnixTime = 1_700_000_000;

fn sim_now() -> UnixTime {
    SIM_NOW
}

/// The shape of a simulated cluster and its network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes `1..=nodes`.
    pub nodes: u32,
    pub seed: u64,
    /// A frame takes `1..=max_delay` steps to arrive...
    pub max_delay: u64,
    /// ...except this percentage of frames, which take up to
    /// `spike_factor` times longer (a slow link for a while).
    pub spike_percent: u64,
    pub spike_factor: u64,
    /// Steps between heartbeats.
    pub heartbeat_every: u64,
    /// Steps of silence after which a peer is down (the real detector's
    /// `peer_timeout_ms`, a step being a millisecond).
    pub peer_timeout: u64,
    /// After a reply, a client waits `0..=max_think` steps before its next request.
    pub max_think: u64,
    /// A restarted node's hello reaches each peer up to this many steps
    /// after the peer's own link to it opened.
    pub late_hello: u64,
    /// ...and at least this many (up to `late_hello`).
    pub late_hello_min: u64,
    /// Links keep frames in order (true, as TCP does). `false` lets frames
    /// overtake each other on a link, which breaks what the engines rely
    /// on: only for checking that tests notice.
    pub fifo: bool,
    /// The memory store's cap on each node.
    pub memory_limit: u64,
    /// Each node's store is ordered, as a strong mode's replicas are (see
    /// `store/memory.rs`).
    pub ordered_store: bool,
    /// Each node's store keeps the keys it evicts for the engine, as
    /// eventual mode's do.
    pub keep_evicted: bool,
    /// 0: store work is done at once, as the embedded store does it on
    /// the reactor. Otherwise each node's store work waits in a FIFO
    /// queue, each item done `0..=store_delay` steps after the one before
    /// it at the earliest, as a memcached backend's worker thread does it:
    /// replies and reports reach the engine late, while it goes on.
    pub store_delay: u64,
    /// Every node has a data directory (see [`Sim::with_data_dirs`]).
    pub data_dirs: bool,
    /// Negative control: a crashed node's directory may give back an image
    /// older than the one current at its last reply (a log that lost what
    /// a reply had waited for).
    pub stale_images: bool,
    /// Negative control: with data directories, a read's reply waits for
    /// no mark at all (a store that notes nothing of what its reads show),
    /// so a crash may take back what a read showed.
    pub blind_reads: bool,
    /// Negative control: with data directories, a report that waits for
    /// the log (a snapshot's first chunk) reaches the engine without it,
    /// so a crash may give back less than the store the report showed.
    pub unlogged_reports: bool,
    /// Negative control: with data directories, a store hands each chunk
    /// of a snapshot from the store as it is then, not from the image it
    /// froze at the first (as if it kept nothing of what writes changed
    /// meanwhile).
    pub thawing_images: bool,
    /// Stores listed by key that keep a key image while they hand a
    /// snapshot, as memcached backends do (`keyed.rs`; unordered stores,
    /// without data directories).
    pub keyed_store: bool,
    /// Negative control of causal mode's staged answers: each store's
    /// `empty_like` is itself, so what is staged is in sight (`shared.rs`).
    pub staged_in_sight: bool,
    /// With data directories: half the recoveries place the items
    /// otherwise than the store held them, as a directory written by an
    /// earlier build does (its log held keys' states, not every move:
    /// dead items removed unlogged moved others, and eviction bits were
    /// not logged), so the store evicts other items than its peers' until
    /// it takes a snapshot. Here: in reverse, and the engine is told the
    /// store is not exact. The other half give back the image exactly.
    pub reordering_recovery: bool,
    /// Negative control: with `reordering_recovery`, every recovery
    /// reorders, and the engine is told the store is exact.
    pub lying_recovery: bool,
    /// With data directories: each node's log is stuck now and then (its
    /// disk refuses or stalls it), which its engine hears at each
    /// heartbeat (`Engine::on_log_stuck`). A view lists a stuck source
    /// last, which must change nothing but who hands the state.
    pub stuck_logs: bool,
}

impl SimConfig {
    pub fn new(nodes: u32, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            max_delay: 8,
            spike_percent: 5,
            spike_factor: 6,
            heartbeat_every: 5,
            // Long enough that delays and spikes alone never make a peer down.
            peer_timeout: 1_000,
            max_think: 3,
            late_hello: 0,
            late_hello_min: 0,
            fifo: true,
            memory_limit: 256 << 20,
            ordered_store: false,
            keep_evicted: false,
            store_delay: 0,
            data_dirs: false,
            stale_images: false,
            blind_reads: false,
            thawing_images: false,
            unlogged_reports: false,
            keyed_store: false,
            staged_in_sight: false,
            reordering_recovery: false,
            lying_recovery: false,
            stuck_logs: false,
        }
    }

    /// The longest a frame can take.
    pub fn max_latency(&self) -> u64 {
        self.max_delay * self.spike_factor.max(2)
    }
}

/// How a client's request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reply bytes, exactly as a client would read them.
    Reply(Vec<u8>),
    /// The node refused the request at once; nothing was applied.
    Refused(String),
    /// The node crashed with the request outstanding: it may or may not
    /// have been applied.
    Lost,
}

/// What the clients do: asked for a request whenever a client is idle, told
/// of every completion. Calls come in simulated real-time order, so a driver
/// can record a history directly.
pub trait Driver {
    /// `client` is idle at `step`: its next request, or `None` (asked again next step).
    fn next_request(&mut self, step: u64, client: usize) -> Option<Request>;
    /// `client`'s outstanding request ended at `step`.
    fn on_complete(&mut self, step: u64, client: usize, outcome: Outcome);
}

/// A driver that issues nothing, for runs driven by [`Sim::submit`].
pub struct Idle;

impl Driver for Idle {
    fn next_request(&mut self, _: u64, _: usize) -> Option<Request> {
        None
    }

    fn on_complete(&mut self, _: u64, _: usize, _: Outcome) {}
}

/// A fault, applied at once ([`Sim::fault`]) or at a step ([`Sim::schedule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Hold every frame between `a` and `b`, both ways, until healed.
    Partition(NodeId, NodeId),
    /// Hold every frame from `from` to `to` until healed.
    OneWay {
        from: NodeId,
        to: NodeId,
    },
    /// Ends the cuts between `a` and `b`, both ways.
    Heal(NodeId, NodeId),
    HealAll,
    /// The TCP link `from → to` breaks: its frames in flight are lost (all
    /// of them, or with `keep_some` a random suffix: what had reached the
    /// peer's socket is still read), `from` is told, and the link reopens
    /// with a hello `reconnect_after` steps later.
    Break {
        from: NodeId,
        to: NodeId,
        reconnect_after: u64,
        keep_some: bool,
    },
    /// The node stops taking input and sending (SIGSTOP) ...
    Pause(NodeId),
    /// ... and goes on with what waited for it (SIGCONT).
    Resume(NodeId),
    /// The node's process dies: its memory is gone.
    Crash(NodeId),
    /// The node shuts down cleanly (SIGTERM): what it sent is still
    /// delivered, then a leave on each link; its clients' outstanding
    /// requests end with an unknown outcome, and it is down as after a
    /// crash (a [`Fault::Restart`] brings it back).
    Leave(NodeId),
    /// A crashed node starts again as a new run, with an empty store.
    Restart(NodeId),
}

/// What a scheduled step does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Fault(Fault),
    /// Link `from → to` opens: `to` takes (or refuses) `from`'s hello.
    Open {
        from: NodeId,
        to: NodeId,
        run: u64,
    },
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub frames_sent: u64,
    pub frames_delivered: u64,
    pub frames_dropped: u64,
    /// Frames the scenario's filter changed.
    pub frames_filtered: u64,
    pub requests: u64,
    pub replies: u64,
    pub refusals: u64,
    pub lost: u64,
    pub crashes: u64,
    pub leaves: u64,
    pub restarts: u64,
    /// Crashes whose node's directory lost marks (its log's tail).
    pub tails_lost: u64,
    /// Restarts from a directory whose store the engine was told is exact,
    /// and told is not.
    pub exact_recoveries: u64,
    pub inexact_recoveries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Crashed,
}

/// One simulated node: its cluster core and its store side.
pub struct SimNode<E: Engine> {
    pub node: Node<E>,
    pub replica: E::Replica,
    /// The node's store, as its store side works on it (checks read items
    /// and the store side's answers through it).
    pub executor: Executor,
    pub incarnation: u64,
    run: Run,
    /// Store work waiting for the worker (with `store_delay`): the step it
    /// is done at, in order.
    worker: VecDeque<(u64, StoreWork<E>)>,
    /// Reports held for the log (`Replica::report_waits`), in order: the
    /// step the log holds what they wait for, and its journal position.
    held: VecDeque<(u64, u64, <E::Replica as Replica>::Done)>,
    /// With `stuck_logs`: whether its log is stuck now.
    stuck: bool,
}

impl<E: Engine> SimNode<E> {
    /// No store work waits for the worker, nor a report for the log.
    pub fn store_idle(&self) -> bool {
        self.worker.is_empty() && self.held.is_empty()
    }

    fn new(node: Node<E>, incarnation: u64, store: Box<dyn VersionedStore>) -> SimNode<E> {
        let counters = std::sync::Arc::new(StoreCounters::default());
        let replica = node.engine().replica();
        SimNode {
            node,
            replica,
            executor: Executor::new(store, counters).with_clock(sim_now),
            incarnation,
            run: Run::Running,
            worker: VecDeque::new(),
            held: VecDeque::new(),
            stuck: false,
        }
    }

    /// `gets` of `keys` straight from the store: the reply bytes (values,
    /// flags and cas uniques).
    pub fn dump(&mut self, keys: &[Key]) -> Vec<u8> {
        let request = Request {
            command: Command::Get(Get {
                keys: keys.iter().collect(),
                with_cas: true,
                touch: None,
            }),
            noreply: false,
        };
        self.executor.execute(&request, SIM_NOW, 0).0
    }
}

#[derive(Default)]
struct Link {
    /// `(due step, encoded frame)`, due steps non-decreasing when FIFO.
    in_flight: VecDeque<(u64, Vec<u8>)>,
    last_due: u64,
    /// Cut by a partition: frames wait.
    cut: bool,
    /// Not open: nothing is sent (broken, refused, or its end crashed).
    down: bool,
    /// The hello was refused: the link stays down.
    refused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// Not yet asked since its think time ended, or asked and declined.
    Ready {
        after: u64,
        declined: bool,
    },
    Waiting(ReplyTo),
}

struct Client {
    node: NodeId,
    next_slot: u64,
    state: ClientState,
}

/// Builds the engine of run `incarnation` of a node.
pub type EngineFactory<E> = Box<dyn FnMut(NodeId, u64, &[NodeId]) -> E>;
/// Builds the engine of run `incarnation` of a node with a data directory,
/// given what the directory held at start: `None` at the first start (a new
/// directory), else the stamp its store was recovered up to and whether it
/// was recovered exactly ([`Image::exact`]).
pub type DurableFactory<E> = Box<dyn FnMut(NodeId, u64, &[NodeId], Option<(Stamp, bool)>) -> E>;
/// Sees each piece of store work a node carries out, in order.
pub type WorkWatch<E> = Box<dyn FnMut(NodeId, &StoreWork<E>)>;
/// Sees each report the store side gives a node's engine.
pub type ReportWatch<E> = Box<dyn FnMut(NodeId, &<<E as Engine>::Replica as Replica>::Done)>;
/// May change a message on its way (e.g. lose what it carries); returns
/// whether it did.
pub type Filter<E> = Box<dyn FnMut(&mut <E as Engine>::Message, &mut Rng) -> bool>;

/// The simulated cluster.
pub struct Sim<E: Engine> {
    pub config: SimConfig,
    now: u64,
    rng: Rng,
    make: DurableFactory<E>,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode<E>>,
    links: BTreeMap<(NodeId, NodeId), Link>,
    clients: Vec<Client>,
    schedule: BTreeMap<u64, Vec<Event>>,
    stats: SimStats,
    trace: Option<Vec<String>>,
    watch_work: Option<WorkWatch<E>>,
    watch_report: Option<ReportWatch<E>>,
    filter: Option<Filter<E>>,
    /// Runs started so far (each run's incarnation is unique).
    runs: u64,
    /// Clients whose node crashed under their request, to be told.
    lost: Vec<usize>,
    /// With data directories: each node's journal of images (its current
    /// or last run's)...
    journals: BTreeMap<NodeId, SharedJournal>,
    /// ...what the directory of each stopped node gives back at its restart...
    disks: BTreeMap<NodeId, Image>,
    /// ...and what each node's current run started from (`None`: a new
    /// directory).
    held: BTreeMap<NodeId, Option<Stamp>>,
}

impl<E: Engine + 'static> Sim<E>
where
    E::Message: Clone + std::fmt::Debug,
{
    /// A cluster of `config.nodes` nodes, built by `make(id, incarnation,
    /// members)`, whose links open with hellos in the first steps.
    pub fn new(config: SimConfig, mut make: EngineFactory<E>) -> Sim<E> {
        assert!(
            !config.data_dirs,
            "data directories need Sim::with_data_dirs"
        );
        Sim::build(
            config,
            Box::new(move |id, run, members, _| make(id, run, members)),
        )
    }

    /// A cluster whose nodes have data directories: each run is built by
    /// `make(id, incarnation, members, held)` (see [`DurableFactory`]), and
    /// a restarted node's store holds the image its directory gives back.
    pub fn with_data_dirs(mut config: SimConfig, make: DurableFactory<E>) -> Sim<E> {
        config.data_dirs = true;
        Sim::build(config, make)
    }

    fn build(config: SimConfig, make: DurableFactory<E>) -> Sim<E> {
        assert!(config.nodes >= 1 && config.max_delay >= 1 && config.heartbeat_every >= 1);
        let ids: Vec<NodeId> = (1..=config.nodes).collect();
        let mut sim = Sim {
            rng: Rng::new(config.seed ^ 0x5EED_5EED_5EED),
            config,
            now: 0,
            make,
            ids: ids.clone(),
            nodes: BTreeMap::new(),
            links: BTreeMap::new(),
            clients: Vec::new(),
            schedule: BTreeMap::new(),
            stats: SimStats::default(),
            trace: None,
            watch_work: None,
            watch_report: None,
            filter: None,
            runs: 0,
            lost: Vec::new(),
            journals: BTreeMap::new(),
            disks: BTreeMap::new(),
            held: BTreeMap::new(),
        };
        for &id in &ids {
            sim.start(id);
            for &peer in ids.iter().filter(|&&p| p != id) {
                sim.links.insert(
                    (id, peer),
                    Link {
                        down: true,
                        ..Link::default()
                    },
                );
            }
        }
        for &from in &ids {
            for &to in ids.iter().filter(|&&p| p != from) {
                let run = sim.nodes[&from].incarnation;
                sim.open(from, to, run);
            }
        }
        sim
    }

    /// Starts a new run of node `id`: with an empty store, or with data
    /// directories, holding what its directory gives back.
    fn start(&mut self, id: NodeId) {
        self.runs += 1;
        let incarnation = self.runs;
        let peers: Vec<NodeId> = self.ids.iter().copied().filter(|&p| p != id).collect();
        let mut store = self.memory_store();
        let recovered = self
            .disks
            .remove(&id)
            .map(|image| self.recover(&image, &mut store));
        let engine = (self.make)(id, incarnation, &self.ids, recovered);
        let node = Node::new(id, peers, self.config.peer_timeout, engine);
        let held = recovered.map(|(upto, _)| upto);
        let store: Box<dyn VersionedStore> = match self.config.data_dirs {
            true => {
                let exact = recovered.is_none_or(|(_, exact)| exact);
                Box::new(self.imaging(id, store, held, exact))
            }
            false if self.config.keyed_store => Box::new(KeyedStore::new(store)),
            false if self.config.staged_in_sight => Box::new(SharedStore::new(store)),
            false => Box::new(store),
        };
        self.held.insert(id, held);
        self.nodes
            .insert(id, SimNode::new(node, incarnation, store));
    }

    /// Restores `image` on `store`, a fresh one, exactly or (see
    /// `SimConfig::reordering_recovery`) reordered: the stamp it holds the
    /// writes up to, and whether the engine is told it is exact.
    fn recover(&mut self, image: &Image, store: &mut MemoryStore) -> (Stamp, bool) {
        let reorder = self.config.reordering_recovery
            && (self.config.lying_recovery || self.rng.below(2) == 0);
        match reorder {
            true => image.reversed().restore(store),
            false => image.restore(store),
        }
        let exact = image.exact && (!reorder || self.config.lying_recovery);
        match exact {
            true => self.stats.exact_recoveries += 1,
            false => self.stats.inexact_recoveries += 1,
        }
        (image.upto, exact)
    }

    /// A fresh, empty store as the config says.
    fn memory_store(&self) -> MemoryStore {
        let mut store = MemoryStore::new(self.config.memory_limit, Limits::default());
        if self.config.ordered_store {
            store = store.ordered();
        }
        if self.config.keep_evicted {
            store = store.keeping_evicted();
        }
        store
    }

    /// `store` (holding the writes up to `held`, `exact`ly or not) wrapped
    /// to take images into a new journal of node `id`, whose first image is
    /// `store` now.
    fn imaging(
        &mut self,
        id: NodeId,
        mut store: MemoryStore,
        held: Option<Stamp>,
        exact: bool,
    ) -> ImagingStore {
        let upto = held.unwrap_or_default().cas_unique();
        let first = Image::of(&mut store, upto, exact);
        let journal = Journal::new(first, self.config.stale_images);
        let journal = std::sync::Arc::new(std::sync::Mutex::new(journal));
        self.journals.insert(id, journal.clone());
        let report_evicted = self.config.keep_evicted;
        let mut imaging = ImagingStore::new(store, journal, (upto, exact), report_evicted);
        if self.config.blind_reads {
            imaging = imaging.blind();
        }
        match self.config.thawing_images {
            true => imaging.thawing(),
            false => imaging,
        }
    }

    /// With data directories: the stamp node `id`'s current run started
    /// from (`None`: a first start, or no data directories).
    pub fn held(&self, id: NodeId) -> Option<Stamp> {
        self.held.get(&id).copied().flatten()
    }

    pub fn watch_work(&mut self, watch: WorkWatch<E>) {
        self.watch_work = Some(watch);
    }

    pub fn watch_reports(&mut self, watch: ReportWatch<E>) {
        self.watch_report = Some(watch);
    }

    pub fn set_filter(&mut self, filter: Filter<E>) {
        self.filter = Some(filter);
    }

    /// Records a line per event (frames, effects, replies, faults), for
    /// explaining a failing seed. Off by default.
    pub fn enable_trace(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("[{:>5}] {}", self.now, line()));
        }
    }

    /// Puts what the engines logged during this step into the trace.
    fn take_engine_logs(&mut self) {
        let lines = ENGINE_LOGS.with(|logs| std::mem::take(&mut *logs.borrow_mut()));
        for line in lines {
            self.log(|| line);
        }
    }

    /// Attaches a new client to `node`; returns its index.
    pub fn add_client(&mut self, node: NodeId) -> usize {
        assert!(self.ids.contains(&node), "no node {node}");
        let index = self.clients.len();
        self.clients.push(Client {
            node,
            next_slot: 0,
            state: ClientState::Ready {
                after: 0,
                declined: false,
            },
        });
        index
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.ids.clone()
    }

    pub fn client_node(&self, client: usize) -> NodeId {
        self.clients[client].node
    }

    /// The current step.
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Node `id`'s current run (also while it is crashed: its last one).
    pub fn node(&self, id: NodeId) -> &SimNode<E> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut SimNode<E> {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Live items every node's store evicted to make room, in all.
    pub fn evictions(&mut self) -> u64 {
        let stores = self.nodes.values_mut().map(|n| n.executor.store().stats());
        stores.map(|stats| stats.events.evicted).sum()
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes[&id].run == Run::Running
    }

    pub fn is_crashed(&self, id: NodeId) -> bool {
        self.nodes[&id].run == Run::Crashed
    }

    /// Applies `fault` at `step` (at the start of that step).
    pub fn schedule(&mut self, step: u64, fault: Fault) {
        assert!(step > self.now, "step {step} is not in the future");
        self.at(step, Event::Fault(fault));
    }

    fn at(&mut self, step: u64, event: Event) {
        self.schedule.entry(step).or_default().push(event);
    }

    /// Applies `fault` now.
    pub fn fault(&mut self, fault: Fault) {
        let line = format!("fault {fault:?}");
        self.log(|| line);
        match fault {
            Fault::Partition(a, b) => self.set_cut(a, b, true),
            Fault::OneWay { from, to } => {
                if let Some(link) = self.links.get_mut(&(from, to)) {
                    link.cut = true;
                }
            }
            Fault::Heal(a, b) => self.set_cut(a, b, false),
            Fault::HealAll => self.links.values_mut().for_each(|l| l.cut = false),
            Fault::Break {
                from,
                to,
                reconnect_after,
                keep_some,
            } => {
                if self.break_link(from, to, keep_some) {
                    let run = self.nodes[&from].incarnation;
                    let at = self.now + reconnect_after.max(1);
                    self.at(at, Event::Open { from, to, run });
                }
            }
            Fault::Pause(id) => {
                let node = self.node_mut(id);
                if node.run == Run::Running {
                    node.run = Run::Paused;
                }
            }
            Fault::Resume(id) => {
                let node = self.node_mut(id);
                if node.run == Run::Paused {
                    node.run = Run::Running;
                }
            }
            Fault::Crash(id) => self.crash(id),
            Fault::Leave(id) => self.leave(id),
            Fault::Restart(id) => self.restart(id),
        }
    }

    fn set_cut(&mut self, a: NodeId, b: NodeId, cut: bool) {
        for key in [(a, b), (b, a)] {
            if let Some(link) = self.links.get_mut(&key) {
                link.cut = cut;
            }
        }
    }

    /// Link `from → to` goes down, losing its frames in flight (or only a
    /// random suffix of them: the oldest had reached the peer's socket and
    /// are still read, as TCP keeps them in order); the sender is told.
    /// Returns whether it was up.
    fn break_link(&mut self, from: NodeId, to: NodeId, keep_some: bool) -> bool {
        let Some(link) = self.links.get_mut(&(from, to)) else {
            return false;
        };
        if link.down {
            return false; // already down; its reopening is scheduled
        }
        link.down = true;
        let keep = match keep_some {
            true => self.rng.below(link.in_flight.len() as u64 + 1) as usize,
            false => 0,
        };
        let dropped = link.in_flight.len() - keep;
        link.in_flight.truncate(keep);
        self.stats.frames_dropped += dropped as u64;
        self.log(|| format!("link {from}->{to}: {dropped} frame(s) lost"));
        if self.nodes[&from].run != Run::Crashed {
            self.node_mut(from).node.on_link(to, PeerEvent::LinkLost);
        }
        true
    }

    /// Link `from → to` opens if run `run` of `from` is still the current
    /// one: `to` takes its hello (or refuses it, fencing `from`).
    fn open(&mut self, from: NodeId, to: NodeId, run: u64) {
        let (sender, receiver) = (&self.nodes[&from], &self.nodes[&to]);
        let link = &self.links[&(from, to)];
        if sender.incarnation != run
            || sender.run == Run::Crashed
            || receiver.run == Run::Crashed
            || !link.down
            || link.refused
        {
            return;
        }
        let reverse_cut = self.links[&(to, from)].cut;
        if receiver.run == Run::Paused || sender.run == Run::Paused || link.cut || reverse_cut {
            // A paused process neither dials nor accepts, and a cut link
            // carries neither the hello nor its answer: try again later.
            let at = self.now + self.config.heartbeat_every;
            self.at(at, Event::Open { from, to, run });
            return;
        }
        let now = self.now;
        let verdict = self.node_mut(to).node.on_hello(from, run, now);
        self.log(|| format!("hello {from}->{to} (run {run}): {verdict:?}"));
        match verdict {
            Ok(()) => {
                let link = self.links.get_mut(&(from, to)).expect("link");
                link.down = false;
                let receiver_run = self.nodes[&to].incarnation;
                let sender = &mut self.node_mut(from).node;
                sender.on_link(to, PeerEvent::LinkOpened);
                sender.on_welcome(to, receiver_run, now);
            }
            Err(why) => {
                self.links.get_mut(&(from, to)).expect("link").refused = true;
                self.node_mut(from).node.on_refused(to, &why);
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        self.stop(id, false);
    }

    /// A clean shutdown: the node's open links carry what it sent, then a
    /// leave, as its kernel delivers them after it exits.
    fn leave(&mut self, id: NodeId) {
        if self.nodes[&id].run != Run::Running {
            return;
        }
        for &peer in &self.ids.clone() {
            let Some(link) = self.links.get_mut(&(id, peer)) else {
                continue;
            };
            if !link.down {
                let mut bytes = Vec::new();
                wire::encode(&PeerMessage::<E::Message>::Leave, &mut bytes);
                let due = (self.now + 1).max(link.last_due);
                link.in_flight.push_back((due, bytes));
            }
        }
        self.stop(id, true);
    }

    /// The process of node `id` ends; with `clean`, what its links carry
    /// is still delivered.
    fn stop(&mut self, id: NodeId, clean: bool) {
        if self.nodes[&id].run == Run::Crashed {
            return;
        }
        match clean {
            true => self.stats.leaves += 1,
            false => self.stats.crashes += 1,
        }
        self.node_mut(id).run = Run::Crashed;
        self.keep_disk(id, clean);
        for &peer in &self.ids.clone() {
            if peer == id {
                continue;
            }
            // Its peers' links to it reset; its own die with it, unless a
            // clean exit left their contents to the kernel.
            for key in [(id, peer), (peer, id)] {
                if clean && key.0 == id {
                    continue;
                }
                let link = self.links.get_mut(&key).expect("link");
                self.stats.frames_dropped += link.in_flight.len() as u64;
                link.in_flight.clear();
            }
            self.links.get_mut(&(id, peer)).expect("link").down = true;
            self.break_link(peer, id, false);
        }
        // Their clients learn it at the start of the next step.
        for (index, client) in self.clients.iter_mut().enumerate() {
            if client.node == id && matches!(client.state, ClientState::Waiting(_)) {
                self.stats.lost += 1;
                client.state = ClientState::Ready {
                    after: self.now,
                    declined: false,
                };
                self.lost.push(index);
            }
        }
    }

    /// With data directories: what node `id`'s directory will give back at
    /// its restart, fixed as its process ends (see [`Journal::pick`]).
    fn keep_disk(&mut self, id: NodeId, clean: bool) {
        let Some(journal) = self.journals.get(&id).cloned() else {
            return;
        };
        let stale = self.config.stale_images;
        let journal = journal.lock().expect("journal");
        let (image, tail_lost) = journal.pick(&mut self.rng, clean, stale);
        drop(journal);
        self.stats.tails_lost += u64::from(tail_lost);
        let upto = image.upto;
        self.log(|| format!("node {id}'s directory holds the writes up to {upto:?}"));
        self.disks.insert(id, image);
    }

    fn restart(&mut self, id: NodeId) {
        if self.nodes[&id].run != Run::Crashed {
            return;
        }
        self.stats.restarts += 1;
        self.start(id);
        let run = self.nodes[&id].incarnation;
        for &peer in &self.ids.clone() {
            if peer == id {
                continue;
            }
            for key in [(id, peer), (peer, id)] {
                let link = self.links.get_mut(&key).expect("link");
                link.refused = false;
                link.down = true;
            }
            let earliest = self.config.late_hello_min.min(self.config.late_hello);
            let late = self.rng.range(earliest, self.config.late_hello);
            self.at(
                self.now + 1 + late,
                Event::Open {
                    from: id,
                    to: peer,
                    run,
                },
            );
            let peer_run = self.nodes[&peer].incarnation;
            self.at(
                self.now + 1,
                Event::Open {
                    from: peer,
                    to: id,
                    run: peer_run,
                },
            );
        }
    }

    /// Runs `steps` steps.
    pub fn run(&mut self, steps: u64, driver: &mut dyn Driver) {
        for _ in 0..steps {
            self.step(driver);
        }
    }

    /// Runs until [`Sim::is_quiet`]; returns the step it got quiet at, or a
    /// description of what is stuck after `max_steps` more steps.
    pub fn run_until_quiet(
        &mut self,
        max_steps: u64,
        driver: &mut dyn Driver,
    ) -> Result<u64, String> {
        for _ in 0..max_steps {
            self.step(driver);
            if self.is_quiet() {
                return Ok(self.now);
            }
        }
        Err(format!(
            "not quiet after {max_steps} steps (step {}):\n{}",
            self.now,
            self.describe()
        ))
    }

    /// Nothing left to happen but heartbeats: every client declined to go
    /// on and has no request out, no live node has anything pending, no
    /// link between live nodes is cut or down, and nothing is scheduled. In
    /// the strong modes an operation in flight is pending at its origin, so
    /// quiet means settled; eventual mode's pushes and sync answers may
    /// still be travelling, so its scenarios run sync rounds after.
    pub fn is_quiet(&self) -> bool {
        self.schedule.is_empty()
            && self
                .clients
                .iter()
                .all(|c| matches!(c.state, ClientState::Ready { declined: true, .. }))
            && self
                .nodes
                .values()
                .filter(|n| n.run != Run::Crashed)
                .all(|n| n.node.engine().status().pending == 0 && n.store_idle())
            && self.links.iter().all(|(&(from, to), l)| {
                let ends_alive = !self.is_crashed(from) && !self.is_crashed(to);
                !(ends_alive && (l.cut || (l.down && !l.refused)))
            })
    }

    /// The state of every node, link and client, for a failure message.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (id, n) in &self.nodes {
            let status = n.node.engine().status();
            let peers: Vec<String> = n
                .node
                .membership()
                .members()
                .map(|(p, m)| {
                    let clock = n.node.engine().peer_status(p).map_or(0, |s| s.clock);
                    format!("{p}:{clock}{}", if m.up { "" } else { "(down)" })
                })
                .collect();
            s += &format!(
                "  node {id} ({:?}, run {}): clock {} pending {} delivered {} fenced {:?} peer clocks [{}]\n",
                n.run,
                n.incarnation,
                status.clock,
                status.pending,
                status.delivered,
                n.node.membership().fenced(),
                peers.join(" ")
            );
        }
        for ((from, to), link) in &self.links {
            if link.cut || link.down || !link.in_flight.is_empty() {
                s += &format!(
                    "  link {from}->{to}: {} in flight{}{}{}\n",
                    link.in_flight.len(),
                    if link.cut { ", cut" } else { "" },
                    if link.down { ", down" } else { "" },
                    if link.refused { ", refused" } else { "" }
                );
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if let ClientState::Waiting(r) = c.state {
                s += &format!(
                    "  client {i} on node {} waiting (slot {})\n",
                    c.node, r.slot
                );
            }
        }
        if !self.schedule.is_empty() {
            s += &format!("  scheduled: {:?}\n", self.schedule);
        }
        s
    }

    /// One step of simulated time (see the module doc).
    pub fn step(&mut self, driver: &mut dyn Driver) {
        self.now += 1;
        if let Some(events) = self.schedule.remove(&self.now) {
            for event in events {
                match event {
                    Event::Fault(fault) => self.fault(fault),
                    Event::Open { from, to, run } => self.open(from, to, run),
                }
            }
        }
        for client in std::mem::take(&mut self.lost) {
            driver.on_complete(self.now, client, Outcome::Lost);
        }
        self.deliver(driver);
        self.work(driver);
        if self.now.is_multiple_of(self.config.heartbeat_every) {
            self.tick(driver);
        }
        self.issue(driver);
        self.flush();
        self.take_engine_logs();
    }

    fn tick(&mut self, driver: &mut dyn Driver) {
        let now = self.now;
        if self.config.stuck_logs {
            self.stick_logs();
        }
        for id in self.ids.clone() {
            if self.nodes[&id].run != Run::Running {
                continue;
            }
            let mut effects = Vec::new();
            self.node_mut(id).node.tick(now, &mut effects);
            self.apply_effects(id, effects, driver);
        }
    }

    /// Each running node's log gets stuck, or moves again, now and then
    /// (stuck for four heartbeats on average, every twelve), and its
    /// engine hears how it is.
    fn stick_logs(&mut self) {
        for id in self.ids.clone() {
            if self.nodes[&id].run != Run::Running {
                continue;
            }
            let flip = match self.nodes[&id].stuck {
                true => self.rng.chance(25),
                false => self.rng.per_mille(125),
            };
            let node = self.node_mut(id);
            node.stuck ^= flip;
            node.node.on_log_stuck(node.stuck);
        }
    }

    fn deliver(&mut self, driver: &mut dyn Driver) {
        let now = self.now;
        let mut due: Vec<(NodeId, NodeId)> = self
            .links
            .iter()
            .filter(|(&(_, to), l)| {
                !l.cut
                    && self.nodes[&to].run == Run::Running
                    && l.in_flight.front().is_some_and(|(at, _)| *at <= now)
            })
            .map(|(&key, _)| key)
            .collect();
        self.rng.shuffle(&mut due);
        for (from, to) in due {
            loop {
                let link = self.links.get_mut(&(from, to)).expect("link");
                if link.in_flight.front().is_none_or(|(at, _)| *at > now) {
                    break;
                }
                let Some((_, bytes)) = link.in_flight.pop_front() else {
                    break;
                };
                self.stats.frames_delivered += 1;
                let Some(frame) = decode::<E::Message>(&bytes) else {
                    self.log(|| format!("deliver {from}->{to}: leave"));
                    self.node_mut(to).node.on_leave(from);
                    continue;
                };
                self.log(|| format!("deliver {from}->{to}: {:?}", frame.body));
                let mut effects = Vec::new();
                self.node_mut(to)
                    .node
                    .on_frame(from, frame, now, &mut effects);
                self.apply_effects(to, effects, driver);
            }
        }
    }

    fn issue(&mut self, driver: &mut dyn Driver) {
        for client in 0..self.clients.len() {
            let ClientState::Ready { after, .. } = self.clients[client].state else {
                continue;
            };
            if after > self.now || self.nodes[&self.clients[client].node].run != Run::Running {
                continue;
            }
            match driver.next_request(self.now, client) {
                Some(request) => self.submit(client, request, driver),
                None => {
                    self.clients[client].state = ClientState::Ready {
                        after,
                        declined: true,
                    }
                }
            }
        }
    }

    /// Sends `request` from idle `client` to its node now.
    pub fn submit(&mut self, client: usize, request: Request, driver: &mut dyn Driver) {
        let c = &mut self.clients[client];
        assert!(
            matches!(c.state, ClientState::Ready { .. }),
            "client {client} already has a request out"
        );
        let reply_to = ReplyTo {
            session: client as u64,
            slot: c.next_slot,
        };
        c.next_slot += 1;
        c.state = ClientState::Waiting(reply_to);
        let node = c.node;
        self.stats.requests += 1;
        self.log(|| format!("client {client} -> node {node}: {:?}", request.command));
        if self.nodes[&node].run == Run::Crashed {
            self.stats.lost += 1;
            self.finish(client, Outcome::Lost, driver);
            return;
        }
        let mut effects = Vec::new();
        self.node_mut(node)
            .node
            .on_client(reply_to, request, SIM_NOW, &mut effects);
        self.apply_effects(node, effects, driver);
    }

    /// Carries out a node's effects as the reactor does: store work through
    /// the mode's real store side, in order; refusals at once.
    fn apply_effects(
        &mut self,
        at: NodeId,
        mut effects: Vec<Effect<StoreWork<E>>>,
        driver: &mut dyn Driver,
    ) {
        while !effects.is_empty() {
            for effect in std::mem::take(&mut effects) {
                match effect {
                    Effect::Work(work) if self.config.store_delay > 0 => {
                        let delay = self.rng.range(0, self.config.store_delay);
                        let now = self.now;
                        let worker = &mut self.node_mut(at).worker;
                        let due = worker.back().map_or(now, |&(last, _)| last).max(now) + delay;
                        worker.push_back((due, work));
                    }
                    Effect::Work(work) => self.perform(at, work, &mut effects, driver),
                    Effect::Refuse { to, reason } => {
                        self.stats.refusals += 1;
                        self.complete(at, to, (Outcome::Refused(reason), None), driver);
                    }
                }
            }
        }
    }

    /// Every running node's worker does the store work that is due, in
    /// order, and the reports held for its log that it now holds go on to
    /// its engine.
    fn work(&mut self, driver: &mut dyn Driver) {
        let now = self.now;
        for id in self.ids.clone() {
            loop {
                let node = self.node_mut(id);
                let due = node.worker.front().is_some_and(|&(at, _)| at <= now);
                if node.run != Run::Running || !due {
                    break;
                }
                let (_, work) = node.worker.pop_front().expect("due work");
                let mut effects = Vec::new();
                self.perform(id, work, &mut effects, driver);
                self.apply_effects(id, effects, driver);
            }
            loop {
                let node = self.node_mut(id);
                let due = node.held.front().is_some_and(|&(at, _, _)| at <= now);
                if node.run != Run::Running || !due {
                    break;
                }
                let (_, position, report) = node.held.pop_front().expect("a due report");
                if let Some(journal) = self.journals.get(&id) {
                    journal.lock().expect("journal").answered(Some(position));
                }
                let mut effects = Vec::new();
                self.node_mut(id).node.on_store(report, &mut effects);
                self.apply_effects(id, effects, driver);
            }
        }
    }

    /// Node `at`'s store side does `work`; what it reports to the engine
    /// adds to `effects`.
    fn perform(
        &mut self,
        at: NodeId,
        work: StoreWork<E>,
        effects: &mut Vec<Effect<StoreWork<E>>>,
        driver: &mut dyn Driver,
    ) {
        if let Some(watch) = &mut self.watch_work {
            watch(at, &work);
        }
        self.log(|| format!("node {at} performs {work:?}"));
        let mut done = Vec::new();
        let n = self.node_mut(at);
        n.replica
            .perform(work, &mut n.executor, &mut |d| done.push(d));
        for d in done {
            match d {
                Done::Reply { to, reply, shows } => {
                    self.complete(at, to, (Outcome::Reply(reply), shows), driver)
                }
                Done::Engine(report) => {
                    if let Some(watch) = &mut self.watch_report {
                        watch(at, &report);
                    }
                    match self.log_position(at, &report) {
                        Some(position) => self.hold_for_log(at, position, report),
                        None => self.node_mut(at).node.on_store(report, effects),
                    }
                }
            }
        }
    }

    /// The journal position a report of node `at` waits for, if it waits
    /// for the log (`Replica::report_waits`): everything marked before it.
    /// None for a node without a directory, and with the negative control
    /// `unlogged_reports`.
    fn log_position(&self, at: NodeId, report: &<E::Replica as Replica>::Done) -> Option<u64> {
        let waits = E::Replica::report_waits(report);
        let logged = matches!(waits, ReportWait::Logged | ReportWait::Everything);
        if !logged || self.config.unlogged_reports {
            return None;
        }
        let journal = self.journals.get(&at)?;
        let position = journal.lock().expect("journal").latest();
        Some(position)
    }

    /// Holds `report` until node `at`'s log holds `position`, as a real
    /// node's reactor does: a while (its log writes and syncs), behind the
    /// reports held before it. Once released, no crash gives back less.
    fn hold_for_log(&mut self, at: NodeId, position: u64, report: <E::Replica as Replica>::Done) {
        let delay = self
            .rng
            .range(1, self.config.heartbeat_every + self.config.store_delay);
        let now = self.now;
        let held = &mut self.node_mut(at).held;
        let due = held.back().map_or(now, |&(last, _, _)| last).max(now) + delay;
        held.push_back((due, position, report));
    }

    fn complete(
        &mut self,
        at: NodeId,
        reply_to: ReplyTo,
        (outcome, shows): (Outcome, Option<u64>),
        driver: &mut dyn Driver,
    ) {
        let client = reply_to.session as usize;
        let c = self
            .clients
            .get(client)
            .unwrap_or_else(|| panic!("node {at} replied to unknown client {reply_to:?}"));
        assert_eq!(
            c.node, at,
            "node {at} replied to client {client}, which is attached to node {}",
            c.node
        );
        assert_eq!(
            c.state,
            ClientState::Waiting(reply_to),
            "node {at} replied to {reply_to:?}, which is not client {client}'s outstanding request"
        );
        self.stats.replies += 1;
        if let (Outcome::Reply(_), Some(journal)) = (&outcome, self.journals.get(&at)) {
            journal.lock().expect("journal").answered(shows);
        }
        let line = format!("client {client} <- node {at}: {outcome:?}");
        self.log(|| line);
        self.finish(client, outcome, driver);
    }

    fn finish(&mut self, client: usize, outcome: Outcome, driver: &mut dyn Driver) {
        let think = self.rng.below(self.config.max_think + 1);
        self.clients[client].state = ClientState::Ready {
            after: self.now + think,
            declined: false,
        };
        driver.on_complete(self.now, client, outcome);
    }

    fn flush(&mut self) {
        let now = self.now;
        for (&(from, to), link) in self.links.iter_mut() {
            let sender = self.nodes.get_mut(&from).expect("node");
            if link.down || sender.run != Run::Running {
                continue;
            }
            let Some(mut frame) = sender.node.outgoing(to, Load::default()) else {
                continue;
            };
            if let Some(filter) = &mut self.filter {
                if filter(&mut frame.body, &mut self.rng) {
                    self.stats.frames_filtered += 1;
                }
            }
            let mut bytes = Vec::new();
            wire::encode(&PeerMessage::Frame(frame), &mut bytes);
            let mut delay = self.rng.range(1, self.config.max_delay);
            if self.rng.chance(self.config.spike_percent) {
                delay *= self.rng.range(2, self.config.spike_factor.max(2));
            }
            if self.config.fifo {
                let due = (now + delay).max(link.last_due);
                link.last_due = due;
                link.in_flight.push_back((due, bytes));
            } else {
                let due = now + delay;
                let at = link.in_flight.partition_point(|(d, _)| *d <= due);
                link.in_flight.insert(at, (due, bytes));
            }
            self.stats.frames_sent += 1;
        }
    }

    /// The frames in flight on link `from → to`, oldest first, as `to` will
    /// decode them.
    pub fn in_flight(&self, from: NodeId, to: NodeId) -> Vec<Frame<E::Message>> {
        self.links.get(&(from, to)).map_or(Vec::new(), |link| {
            link.in_flight
                .iter()
                .filter_map(|(_, bytes)| decode(bytes))
                .collect()
        })
    }

    /// `gets` of `keys` on `node`'s store (see [`SimNode::dump`]).
    pub fn dump(&mut self, node: NodeId, keys: &[Key]) -> Vec<u8> {
        self.node_mut(node).dump(keys)
    }

    /// Node `node`'s store as it is, in its order: head and every entry
    /// (dead ones too, with their eviction bits), as a snapshot lists it.
    pub fn image(&mut self, node: NodeId) -> Image {
        Image::of(self.node_mut(node).executor.store(), 0, true)
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }
}

/// A frame as the peer decodes it from the wire (`None`: a leave).
fn decode<M: wire::Message>(bytes: &[u8]) -> Option<Frame<M>> {
    match wire::decode::<M>(bytes) {
        Ok(Some((PeerMessage::Frame(frame), used))) if used == bytes.len() => Some(frame),
        Ok(Some((PeerMessage::Leave, used))) if used == bytes.len() => None,
        other => panic!(
            "the wire format does not round-trip a frame: {}",
            describe(&other)
        ),
    }
}

fn describe<M>(decoded: &Result<Option<(PeerMessage<M>, usize)>, wire::WireError>) -> String {
    match decoded {
        Ok(Some((message, used))) => format!("a {} of {used} bytes", message.kind()),
        Ok(None) => "incomplete".into(),
        Err(e) => e.to_string(),
    }
}

thread_local! {
    /// What the engines of this thread's simulation logged since the last
    /// step ended (each test runs on a thread of its own).
    static ENGINE_LOGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Keeps what the engines log up to `level` for the trace of the
/// simulation on the logging thread (for replaying a seed; the logger is
/// the process's, so the first call's level holds).
pub fn capture_engine_logs(level: log::LevelFilter) {
    static LOGGER: EngineLogger = EngineLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

struct EngineLogger;

impl log::Log for EngineLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        ENGINE_LOGS.with(|logs| logs.borrow_mut().push(line));
    }

    fn flush(&self) {}
}
