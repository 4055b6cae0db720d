//! A deterministic simulated cluster: N [`Engine`]s, each with its own
//! [`MemoryStore`], in one process, over a seeded simulated network. For
//! tests: a seed gives one exact run, so a failure is replayable.
//!
//! ```text
//!  Driver ─ next_request ─► client ─► on_client ─┐        ┌─► Apply: execute on that node's store,
//!        ◄─ on_complete ─── reply ◄──────────────┼ Effect ┤   reply to the client if reply_to
//!                                                │        └─► Refuse: the client's op fails
//!  outgoing(to) ─► link (from, to): FIFO, random delay ─► on_frame(from) at `to`
//! ```
//!
//! Time is a step counter. One [`Sim::step`]:
//! 1. applies the faults scheduled for this step;
//! 2. delivers every frame that is due, link by link in a random order (so
//!    frames are reordered *across* links, never within one: the engine
//!    relies on FIFO links);
//! 3. every `heartbeat_every` steps, calls [`Engine::heartbeat`] everywhere,
//!    so idle nodes still exchange clocks (linearizable reads wait for them);
//! 4. lets every idle client whose think time is over issue its next request;
//! 5. takes from every engine the frame it owes each peer and puts it on the
//!    link with a random delay (never before the link's previous frame).
//!
//! Faults ([`Fault`]): a *partition* holds frames on a cut link (TCP would
//! retry; nothing is lost) and delivers them in order after the heal; a
//! *break* models a TCP reconnect: the frames in flight on that directed
//! link (or a random suffix of them) are lost, the sender gets
//! [`Engine::link_lost`], and [`Engine::link_opened`] some steps later, which
//! resends what the peer may not hold; *set up/down* marks a peer down (or
//! up again) at the others, as the server's failure detector would. Crashes
//! are not modelled: this engine has no view changes, so a crashed member
//! would only block progress.
//!
//! Frames go through the wire format on the way ([`SimConfig::wire_round_trip`]).
//! Each node logs the cas unique of every write it applies, so
//! [`Sim::replicas_agree`] can check that every replica applied the same
//! writes in the same order, none twice, and holds the same items (values,
//! flags, uniques). Every operation runs at [`SIM_NOW`], so nothing expires.
//! Decisions iterate in sorted order (`BTreeMap`) or draw from the seeded
//! [`Rng`], so a run depends on its seed alone; [`Sim::enable_trace`] logs
//! every event of a run for explaining a failing seed.

use std::collections::{BTreeMap, VecDeque};

use super::{wire, Effect, Engine, Frame, NodeId, PeerMessage, View};
use crate::backend::{ReplyTo, Work};
use crate::config::Consistency;
use crate::protocol::{Command, Get, Key, Limits, Request};
use crate::store::memory::MemoryStore;
use crate::store::{execute, UnixTime};

/// The wall time every simulated operation carries (so nothing expires).
pub const SIM_NOW: UnixTime = 1_700_000_000;

/// A small seeded PRNG (SplitMix64): deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// The shape of a simulated cluster and its network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes `1..=nodes`, all members of view 0.
    pub nodes: u32,
    pub mode: Consistency,
    pub seed: u64,
    /// A frame takes `1..=max_delay` steps to arrive...
    pub max_delay: u64,
    /// ...except this percentage of frames, which take up to
    /// `spike_factor` times longer (a slow link for a while).
    pub spike_percent: u64,
    pub spike_factor: u64,
    /// Steps between heartbeats.
    pub heartbeat_every: u64,
    /// After a reply, a client waits `0..=max_think` steps before its next request.
    pub max_think: u64,
    /// Sends every frame through the wire format (encode, then decode).
    pub wire_round_trip: bool,
    /// Links keep frames in order (true, as TCP does). `false` lets frames
    /// overtake each other on a link, which breaks what the engine relies
    /// on: only for checking that tests notice.
    pub fifo: bool,
}

impl SimConfig {
    pub fn new(nodes: u32, mode: Consistency, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            mode,
            seed,
            max_delay: 8,
            spike_percent: 5,
            spike_factor: 6,
            heartbeat_every: 5,
            max_think: 3,
            wire_round_trip: true,
            fifo: true,
        }
    }
}

/// How a client's request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reply bytes, exactly as a client would read them.
    Reply(Vec<u8>),
    /// The engine refused the request at once; nothing was applied.
    Refused(String),
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

/// A fault, applied at once ([`Sim::fault`]) or at a step ([`Sim::schedule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Hold every frame between `a` and `b`, both ways, until healed.
    Partition(NodeId, NodeId),
    Heal(NodeId, NodeId),
    HealAll,
    /// The TCP link `from → to` breaks: its frames in flight are lost (all
    /// of them, or with `keep_some` a random suffix: what had reached the
    /// peer's socket is still read), `from` gets `link_lost(to)`, and
    /// `link_opened(to)` `reconnect_after` steps later (nothing is sent on
    /// the link meanwhile).
    Break {
        from: NodeId,
        to: NodeId,
        reconnect_after: u64,
        keep_some: bool,
    },
    /// The reconnect of a break (scheduled by [`Fault::Break`]).
    Reconnect {
        from: NodeId,
        to: NodeId,
    },
    /// Every other node marks `peer` up or down (`Engine::set_up`).
    SetUp {
        peer: NodeId,
        up: bool,
    },
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub frames_sent: u64,
    pub frames_delivered: u64,
    pub frames_dropped: u64,
    pub requests: u64,
    pub replies: u64,
    pub refusals: u64,
    pub applies: u64,
}

struct Node {
    engine: Engine,
    store: MemoryStore,
    /// The cas unique of every write applied here, in apply order.
    writes: Vec<u64>,
}

#[derive(Default)]
struct Link {
    /// `(due step, frame)`, due steps non-decreasing (FIFO).
    in_flight: VecDeque<(u64, Frame)>,
    last_due: u64,
    cut: bool,
    broken: bool,
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
    conn_id: u64,
    next_slot: u64,
    state: ClientState,
}

/// The simulated cluster.
pub struct Sim {
    config: SimConfig,
    now: u64,
    rng: Rng,
    nodes: BTreeMap<NodeId, Node>,
    links: BTreeMap<(NodeId, NodeId), Link>,
    clients: Vec<Client>,
    schedule: BTreeMap<u64, Vec<Fault>>,
    stats: SimStats,
    trace: Option<Vec<String>>,
}

impl Sim {
    /// A cluster of `config.nodes` nodes that all see each other up.
    pub fn new(config: SimConfig) -> Sim {
        assert!(config.nodes >= 1 && config.max_delay >= 1 && config.heartbeat_every >= 1);
        let ids: Vec<NodeId> = (1..=config.nodes).collect();
        let mut nodes = BTreeMap::new();
        let mut links = BTreeMap::new();
        for &id in &ids {
            let mut engine = Engine::new(id, View::new(0, ids.clone()), config.mode);
            for &peer in ids.iter().filter(|&&p| p != id) {
                engine.set_up(peer, true);
                engine.link_opened(peer);
                links.insert((id, peer), Link::default());
            }
            let store = MemoryStore::new(64 << 20, Limits::default());
            let writes = Vec::new();
            nodes.insert(
                id,
                Node {
                    engine,
                    store,
                    writes,
                },
            );
        }
        Sim {
            rng: Rng::new(config.seed ^ 0x5EED_5EED_5EED),
            config,
            now: 0,
            nodes,
            links,
            clients: Vec::new(),
            schedule: BTreeMap::new(),
            stats: SimStats::default(),
            trace: None,
        }
    }

    /// Records a line per event (frames, applies, replies, faults), for
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

    /// Attaches a new client to `node`; returns its index (its `ReplyTo::token`).
    pub fn add_client(&mut self, node: NodeId) -> usize {
        assert!(self.nodes.contains_key(&node), "no node {node}");
        let index = self.clients.len();
        self.clients.push(Client {
            node,
            conn_id: 1000 + index as u64,
            next_slot: 0,
            state: ClientState::Ready {
                after: 0,
                declined: false,
            },
        });
        index
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
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

    pub fn engine(&self, node: NodeId) -> &Engine {
        &self.nodes[&node].engine
    }

    /// The node's store, e.g. to read it directly.
    pub fn store_mut(&mut self, node: NodeId) -> &mut MemoryStore {
        &mut self.node_mut(node).store
    }

    /// The cas uniques of the writes `node` applied, in order.
    pub fn applied_writes(&self, node: NodeId) -> &[u64] {
        &self.nodes[&node].writes
    }

    fn node_mut(&mut self, node: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    /// Applies `fault` at `step` (at the start of that step).
    pub fn schedule(&mut self, step: u64, fault: Fault) {
        assert!(step > self.now, "step {step} is not in the future");
        self.schedule.entry(step).or_default().push(fault);
    }

    /// Applies `fault` now.
    pub fn fault(&mut self, fault: Fault) {
        let line = format!("fault {fault:?}");
        self.log(|| line);
        match fault {
            Fault::Partition(a, b) => self.set_cut(a, b, true),
            Fault::Heal(a, b) => self.set_cut(a, b, false),
            Fault::HealAll => self.links.values_mut().for_each(|l| l.cut = false),
            Fault::Break {
                from,
                to,
                reconnect_after,
                keep_some,
            } => {
                let Some(link) = self.links.get_mut(&(from, to)) else {
                    return;
                };
                if link.broken {
                    return; // already down; its reconnect is scheduled
                }
                link.broken = true;
                let keep = match keep_some {
                    true => self.rng.below(link.in_flight.len() as u64 + 1) as usize,
                    false => 0,
                };
                let dropped = link.in_flight.len() - keep;
                link.in_flight.truncate(keep);
                self.stats.frames_dropped += dropped as u64;
                self.log(|| format!("link {from}->{to}: {dropped} frame(s) lost"));
                self.node_mut(from).engine.link_lost(to);
                let at = self.now + reconnect_after.max(1);
                self.schedule
                    .entry(at)
                    .or_default()
                    .push(Fault::Reconnect { from, to });
            }
            Fault::Reconnect { from, to } => {
                if let Some(link) = self.links.get_mut(&(from, to)) {
                    link.broken = false;
                    self.node_mut(from).engine.link_opened(to);
                }
            }
            Fault::SetUp { peer, up } => {
                for (&id, node) in self.nodes.iter_mut() {
                    if id != peer {
                        node.engine.set_up(peer, up);
                    }
                }
            }
        }
    }

    fn set_cut(&mut self, a: NodeId, b: NodeId, cut: bool) {
        for key in [(a, b), (b, a)] {
            if let Some(link) = self.links.get_mut(&key) {
                link.cut = cut;
            }
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

    /// Nothing left to happen: every client declined to go on and has no
    /// request out, every engine has nothing pending, no proposal is on the
    /// wire, no link is cut or broken, and no fault is scheduled.
    pub fn is_quiet(&self) -> bool {
        self.schedule.is_empty()
            && self
                .clients
                .iter()
                .all(|c| matches!(c.state, ClientState::Ready { declined: true, .. }))
            && self.nodes.values().all(|n| n.engine.pending() == 0)
            && self.links.values().all(|l| {
                !l.cut && !l.broken && l.in_flight.iter().all(|(_, f)| f.proposals.is_empty())
            })
    }

    /// The state of every node, link and client, for a failure message.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (id, node) in &self.nodes {
            let e = &node.engine;
            let peers: Vec<String> = e
                .view()
                .others(*id)
                .map(|p| {
                    format!(
                        "{p}:{}{}",
                        e.peer_clock(p).unwrap_or(0),
                        if e.is_up(p) { "" } else { "(down)" }
                    )
                })
                .collect();
            s += &format!(
                "  node {id}: clock {} pending {} delivered {} writes {} peer clocks [{}]\n",
                e.clock(),
                e.pending(),
                e.delivered(),
                node.writes.len(),
                peers.join(" ")
            );
        }
        for ((from, to), link) in &self.links {
            if link.cut || link.broken || !link.in_flight.is_empty() {
                s += &format!(
                    "  link {from}->{to}: {} in flight{}{}\n",
                    link.in_flight.len(),
                    if link.cut { ", cut" } else { "" },
                    if link.broken { ", broken" } else { "" }
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
            s += &format!("  scheduled faults: {:?}\n", self.schedule);
        }
        s
    }

    /// One step of simulated time (see the module doc).
    pub fn step(&mut self, driver: &mut dyn Driver) {
        self.now += 1;
        if let Some(faults) = self.schedule.remove(&self.now) {
            for fault in faults {
                self.fault(fault);
            }
        }
        self.deliver(driver);
        if self.now.is_multiple_of(self.config.heartbeat_every) {
            for node in self.nodes.values_mut() {
                node.engine.heartbeat();
            }
        }
        self.issue(driver);
        self.flush();
    }

    fn deliver(&mut self, driver: &mut dyn Driver) {
        let now = self.now;
        let mut due: Vec<(NodeId, NodeId)> = self
            .links
            .iter()
            .filter(|(_, l)| !l.cut && l.in_flight.front().is_some_and(|(at, _)| *at <= now))
            .map(|(&key, _)| key)
            .collect();
        self.rng.shuffle(&mut due);
        for (from, to) in due {
            loop {
                let link = self.links.get_mut(&(from, to)).expect("link");
                if link.in_flight.front().is_none_or(|(at, _)| *at > now) {
                    break;
                }
                let Some((_, frame)) = link.in_flight.pop_front() else {
                    break;
                };
                self.stats.frames_delivered += 1;
                self.log(|| {
                    format!(
                        "deliver {from}->{to}: clock {} acks {:?} proposals {:?}",
                        frame.clock,
                        frame.acks,
                        frame.proposals.iter().map(|p| p.stamp).collect::<Vec<_>>()
                    )
                });
                let mut effects = Vec::new();
                self.node_mut(to).engine.on_frame(from, frame, &mut effects);
                self.apply_effects(to, effects, driver);
            }
        }
    }

    fn issue(&mut self, driver: &mut dyn Driver) {
        for client in 0..self.clients.len() {
            let ClientState::Ready { after, .. } = self.clients[client].state else {
                continue;
            };
            if after > self.now {
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
            token: client,
            conn_id: c.conn_id,
            slot: c.next_slot,
        };
        c.next_slot += 1;
        c.state = ClientState::Waiting(reply_to);
        let node = c.node;
        self.stats.requests += 1;
        self.log(|| format!("client {client} -> node {node}: {:?}", request.command));
        let mut effects = Vec::new();
        self.node_mut(node)
            .engine
            .on_client(reply_to, request, SIM_NOW, &mut effects);
        self.apply_effects(node, effects, driver);
    }

    fn apply_effects(&mut self, at: NodeId, effects: Vec<Effect>, driver: &mut dyn Driver) {
        for effect in effects {
            match effect {
                Effect::Store(Work::Apply { op, cas, reply_to }) => {
                    let node = self.node_mut(at);
                    let mut reply = Vec::new();
                    execute(&mut node.store, &op.request, op.now, cas, &mut reply);
                    let read = matches!(&op.request.command, Command::Get(g) if g.touch.is_none());
                    if !read {
                        node.writes.push(cas);
                    }
                    self.stats.applies += 1;
                    self.log(|| {
                        format!(
                            "node {at} applies cas {cas} {:?} -> {:?}",
                            op.request.command,
                            String::from_utf8_lossy(&reply)
                        )
                    });
                    if let Some(reply_to) = reply_to {
                        self.complete(at, reply_to, Outcome::Reply(reply), driver);
                    }
                }
                Effect::Refuse { reply_to, reason } => {
                    self.stats.refusals += 1;
                    self.complete(at, reply_to, Outcome::Refused(reason), driver);
                }
                other => unreachable!("the ordering engine emits only Apply and Refuse: {other:?}"),
            }
        }
    }

    fn complete(
        &mut self,
        at: NodeId,
        reply_to: ReplyTo,
        outcome: Outcome,
        driver: &mut dyn Driver,
    ) {
        let client = reply_to.token;
        let c = self
            .clients
            .get_mut(client)
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
        let think = self.rng.below(self.config.max_think + 1);
        c.state = ClientState::Ready {
            after: self.now + think,
            declined: false,
        };
        self.stats.replies += 1;
        let line = format!("client {client} <- node {at}: {outcome:?}");
        self.log(|| line);
        driver.on_complete(self.now, client, outcome);
    }

    fn flush(&mut self) {
        let now = self.now;
        for (&(from, to), link) in self.links.iter_mut() {
            if link.broken {
                continue;
            }
            let node = self.nodes.get_mut(&from).expect("node");
            let Some(mut frame) = node.engine.outgoing(to) else {
                continue;
            };
            if self.config.wire_round_trip {
                frame = round_trip(frame);
            }
            let mut delay = self.rng.range(1, self.config.max_delay);
            if self.rng.chance(self.config.spike_percent) {
                delay *= self.rng.range(2, self.config.spike_factor.max(2));
            }
            if self.config.fifo {
                let due = (now + delay).max(link.last_due);
                link.last_due = due;
                link.in_flight.push_back((due, frame));
            } else {
                let due = now + delay;
                let at = link.in_flight.partition_point(|(d, _)| *d <= due);
                link.in_flight.insert(at, (due, frame));
            }
            self.stats.frames_sent += 1;
        }
    }

    /// `gets` of `keys` on `node`'s store, straight from the store: the
    /// reply bytes (values, flags and cas uniques).
    pub fn dump(&mut self, node: NodeId, keys: &[Key]) -> Vec<u8> {
        let request = Request {
            command: Command::Get(Get {
                keys: keys.to_vec(),
                with_cas: true,
                touch: None,
            }),
            noreply: false,
        };
        let mut out = Vec::new();
        execute(
            &mut self.node_mut(node).store,
            &request,
            SIM_NOW,
            0,
            &mut out,
        );
        out
    }

    /// Every node holds the same items for `keys` (values, flags, cas
    /// uniques) and applied the same writes in the same order, none twice.
    pub fn replicas_agree(&mut self, keys: &[Key]) -> Result<(), String> {
        let ids = self.node_ids();
        let first = ids[0];
        let reference = self.dump(first, keys);
        for &id in &ids {
            let writes = &self.nodes[&id].writes;
            let mut uniques = writes.clone();
            uniques.sort_unstable();
            uniques.dedup();
            if uniques.len() != writes.len() {
                return Err(format!("node {id} applied a write twice: {writes:?}"));
            }
            if writes != &self.nodes[&first].writes {
                return Err(format!(
                    "nodes {first} and {id} applied different write sequences:\n  {:?}\n  {:?}",
                    self.nodes[&first].writes, writes
                ));
            }
            let dump = self.dump(id, keys);
            if dump != reference {
                return Err(format!(
                    "nodes {first} and {id} hold different items:\n  {:?}\n  {:?}",
                    String::from_utf8_lossy(&reference),
                    String::from_utf8_lossy(&dump)
                ));
            }
        }
        Ok(())
    }
}

/// The frame as the peer would decode it from the wire.
fn round_trip(frame: Frame) -> Frame {
    let message = PeerMessage::Frame(frame);
    let mut bytes = Vec::new();
    wire::encode(&message, &mut bytes);
    match wire::decode(&bytes) {
        Ok(Some((decoded, used))) if used == bytes.len() && decoded == message => {
            let PeerMessage::Frame(frame) = decoded else {
                unreachable!("decoded equals a frame")
            };
            frame
        }
        other => panic!("the wire format does not round-trip {message:?}: {other:?}"),
    }
}
