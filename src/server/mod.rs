//! One node's reactor: a single mio `Poll` loop that owns the client
//! listener and connections ([`clients`]), the peer links ([`peers`]), the
//! cluster core ([`Node`]), the backend that runs store work
//! ([`crate::backend`]), the timers, the signal pipe and the waker the
//! backend worker uses to hand back results. It is generic over the mode's
//! [`Engine`]; [`build`] is the one place that picks it.
//!
//! ```text
//!   client ─► clients.rs ─► parse ─► admin.rs answers (version, stats, show, ...)
//!                              └─► Node::on_client ─► effects ─► backlog ─► backend ─► Done ─► slot
//!   peers.rs ─► LinkEvent ─► Node (hello, welcome, refusal, frame, leave, link up/down) ─► effects
//!            ◄── admit (welcome) / refuse: what the core said of a hello
//!   Node::outgoing ─► peers.rs: one frame per peer per loop iteration
//!   tls.rs: a socket's TLS session (peer_tls), under peers.rs
//!   metrics.rs: GET /metrics ─► a snapshot of the above, in Prometheus's text format
//!   timers: per-request deadlines, heartbeats (Node::tick with the time), shutdown grace,
//!           scrape deadlines
//!   SIGINT/SIGTERM: tell peers, stop accepting and reading, drain what is owed, exit
//!   (also, exiting with the reason, a strong node whose log cannot catch up)
//! ```
//!
//! The loop never blocks except in `poll`, whose timeout is the nearest timer.

mod admin;
mod backlog;
mod binary;
mod build;
mod clients;
mod connection;
mod latency;
mod metrics;
mod peers;
mod process;
mod stats;
mod timers;
pub mod tls;

pub use build::serve;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::backend::{Backend, StoreFactory};
use crate::cluster::membership::{Load, Millis};
use crate::cluster::{Done, Effect, Engine, Node, PeerEvent, Replica, ReplyTo, StoreWork};
use crate::config::{ClusterConfig, KvType, NodeConfig};
use crate::durability::{Durable, Recovering, Wait};
use crate::protocol::{self, reply};
use crate::store::{unix_now, UnixTime};
use backlog::Backlog;
use connection::{Connection, SpareBuffers};
use latency::Latencies;
use metrics::MetricsEndpoint;
use peers::{Identity, LinkEvent, PeerAddress, Peers};
use stats::Counters;
use timers::Timers;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Jobs that may wait for the backend worker at once.
const BACKEND_QUEUE: usize = 16 * 1024;
/// How often the store's housekeeping runs, and while it has more to do
/// (a snapshot or an expiry sweep a slice at a time: each slice at most a
/// few milliseconds of work, one slice per tick).
const MAINTAIN_EVERY: Duration = Duration::from_millis(100);
const MAINTAIN_BUSY: Duration = Duration::from_millis(5);
/// How long a stopping node waits for owed replies before it exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often idle client connections are looked for (memcached's idle
/// kicker also wakes about once a second): one pass over the connections,
/// so a request costs nothing but the time its read already takes.
const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Send heartbeats, check peers, redial.
    Heartbeat,
    /// The store's housekeeping (a durable store's snapshot slices, the
    /// embedded store's expiry sweep).
    Maintain,
    /// The end of the shutdown grace period.
    Shutdown,
    /// Close client connections idle past `idle_timeout_s`.
    IdleSweep,
    /// Close metrics connections past their deadline.
    ScrapeDeadline,
}

/// What the node runs with.
pub struct Settings {
    pub cluster: ClusterConfig,
    pub node: NodeConfig,
    /// Every node of the cluster, this one included.
    pub members: Vec<NodeConfig>,
}

pub struct Server<E: Engine> {
    settings: Settings,
    /// The log said once why `cache_memlimit` is refused in a cluster.
    memlimit_refusal_said: bool,
    poll: Poll,
    listener: Option<TcpListener>,
    /// `client_tls = on`: every client connection is a TLS session.
    client_tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections still wait to be accepted after a pass's batch.
    accept_more: bool,
    /// Client connections that used their turn with work left (see
    /// `clients::PASSES_PER_TURN`): serviced again after the others with
    /// events, and the next poll then does not wait.
    yielded: Vec<usize>,
    signals: Signals,
    conns: Slab<Connection>,
    /// Read buffers and slot queues, lent to the connections that have work.
    spare_buffers: SpareBuffers,
    /// Reply buffers the connections are done with, for the store to reuse.
    spent: Vec<Vec<u8>>,
    /// Client sessions opened so far (part of each session's name).
    sessions: u64,
    backend: Backend<E::Replica>,
    /// The log of a node with a data directory (dropped after the backend,
    /// whose store feeds it, so its last commit is waited for).
    durable: Option<Durable>,
    /// Replies waiting for the log to be written or durable far enough.
    held: VecDeque<(Wait, ReplyTo, Vec<u8>)>,
    /// Reports waiting for the log (`Replica::report_waits`): those that
    /// tell peers what this node holds, in order, until it holds what they
    /// claim; versions to push, until their stamps are reserved.
    held_reports: VecDeque<(Wait, <E::Replica as Replica>::Done)>,
    backlog: Backlog<E::Replica>,
    node: Node<E>,
    /// The peer side; `None` in a one-node cluster.
    peers: Option<Peers<E::Message>>,
    effects: Vec<Effect<StoreWork<E>>>,
    /// Completed jobs, reused between loop iterations.
    done: Vec<Done<<E::Replica as Replica>::Done>>,
    /// What the peer links reported, and the batch being handled (both
    /// reused between loop iterations).
    link_events: Vec<LinkEvent<E::Message>>,
    link_batch: Vec<LinkEvent<E::Message>>,
    /// Connections with new replies to flush at the end of this iteration.
    dirty: Vec<usize>,
    /// Request deadlines in the order they were set (all are equally long,
    /// so a FIFO keeps them sorted); answered requests are skipped when due.
    deadlines: VecDeque<(Instant, ReplyTo)>,
    timers: Timers<Timer>,
    counters: Counters,
    /// Request latencies per command kind, for the metrics endpoint.
    latencies: Latencies,
    /// The Prometheus endpoint, with `metrics_addr`.
    metrics: Option<MetricsEndpoint>,
    limits: protocol::Limits,
    started: Instant,
    stopping: bool,
    /// The wall time of this loop iteration, which requests are taken at:
    /// read once after each poll, not once per request (a clock read is
    /// about 2 % of a busy node's CPU; memcached keeps a clock of its own
    /// too, updated once a second).
    now: UnixTime,
    /// Why the node stopped on its own, if it did (it exits with it).
    failure: Option<String>,
    stop_deadline_passed: bool,
}

impl<E: Engine> Server<E> {
    /// Binds the client and peer addresses and starts the backend, for run
    /// `incarnation` of the node, with `engine` as its mode and `replica`
    /// as its store side. With `durable`, the store is that recovered data
    /// directory's.
    pub fn bind(
        settings: Settings,
        incarnation: u64,
        (engine, replica): (E, E::Replica),
        factory: StoreFactory,
        durable: Option<Recovering>,
    ) -> io::Result<Server<E>> {
        let addr = resolve(&settings.node.client)?;
        let client_tls = match settings.cluster.tls_files(&settings.node) {
            Ok(Some(files)) if settings.cluster.client_tls => {
                Some(tls::client_facing(&files).map_err(io::Error::other)?)
            }
            Ok(_) => None,
            Err(e) => return Err(io::Error::other(e)),
        };
        let poll = Poll::new()?;
        // Bound before the client port, which callers (scripts, tests) take
        // as the sign that the node is up: a scrape right after must not
        // be refused.
        let metrics = match &settings.node.metrics_addr {
            Some(addr) => Some(MetricsEndpoint::bind(poll.registry(), resolve(addr)?)?),
            None => None,
        };
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let me = settings.node.id;
        let others: Vec<_> = settings.members.iter().filter(|n| n.id != me).collect();
        let peers = match others.is_empty() {
            true => None,
            false => Some(bind_peers(&settings, incarnation, &poll)?),
        };
        // Nothing may fail from here on: a log writer started below ends
        // only once the backend (which feeds it) is gone, and a local
        // `durable` would be dropped first on the way out.
        let (backend, durable) = match (settings.node.kv_type, durable) {
            (_, Some(recovering)) => {
                let (durable, store) = recovering.start(waker)?;
                let factory: StoreFactory = Box::new(move || store);
                (Backend::inline(factory, replica), Some(durable))
            }
            (KvType::Memory, None) => (Backend::inline(factory, replica), None),
            (KvType::Memcache, None) => {
                let backend = Backend::spawn(factory, replica, waker, BACKEND_QUEUE)?;
                (backend, None)
            }
        };
        let timeout = settings.cluster.peer_timeout.as_millis() as Millis;
        let node = Node::new(me, others.iter().map(|n| n.id), timeout, engine);
        let mut timers = Timers::new();
        if peers.is_some() {
            timers.schedule(Instant::now(), Timer::Heartbeat);
        }
        // Only a store on the reactor thread (embedded, durable or not) is
        // maintained from here; a memcached backend crawls its own items.
        if backend.is_inline() {
            timers.schedule(Instant::now(), Timer::Maintain);
        }
        if settings.cluster.idle_timeout.is_some() {
            timers.schedule(Instant::now() + IDLE_SWEEP_EVERY, Timer::IdleSweep);
        }
        Ok(Server {
            limits: settings.cluster.limits(),
            settings,
            memlimit_refusal_said: false,
            poll,
            listener: Some(listener),
            client_tls,
            accept_more: false,
            yielded: Vec::new(),
            signals,
            conns: Slab::new(),
            spare_buffers: SpareBuffers::default(),
            spent: Vec::new(),
            sessions: 0,
            backend,
            durable,
            held: VecDeque::new(),
            held_reports: VecDeque::new(),
            backlog: Backlog::new(),
            node,
            peers,
            effects: Vec::new(),
            done: Vec::new(),
            link_events: Vec::new(),
            link_batch: Vec::new(),
            dirty: Vec::new(),
            deadlines: VecDeque::new(),
            timers,
            counters: Counters::default(),
            latencies: Latencies::default(),
            metrics,
            started: Instant::now(),
            stopping: false,
            now: unix_now(),
            failure: None,
            stop_deadline_passed: false,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Serves until SIGINT/SIGTERM, then drains and returns.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        log::info!(
            "node {} serving clients on {} ({} store, {} mode)",
            self.settings.node.id,
            self.local_addr()?,
            self.settings.node.kv_type.name(),
            self.settings.cluster.consistency.name()
        );
        if let Some(metrics) = &self.metrics {
            log::info!("metrics at http://{}/metrics", metrics.local_addr()?);
        }
        self.check_descriptor_limit();
        while !self.finished() {
            let now = Instant::now();
            let next_deadline = self
                .deadlines
                .front()
                .map(|(at, _)| at.saturating_duration_since(now));
            let timeout = match (self.timers.poll_timeout(now), next_deadline) {
                _ if self.accept_more || !self.yielded.is_empty() => Some(Duration::ZERO),
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = unix_now();
            if self.accept_more {
                self.accept();
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        self.complete_jobs();
                        // The log writer wakes the loop after each commit,
                        // a failed one too; a node alone has no heartbeat.
                        self.check_log();
                    }
                    SIGNALS => self.on_signal(),
                    token if peers::owns(token) => self.on_peer_event(event),
                    token if metrics::owns(token) => self.on_metrics_event(event),
                    token => {
                        if event.is_read_closed() {
                            // The client's EOF may sit behind data a short read
                            // leaves; read on to it.
                            if let Some(conn) = self.conns.get_mut(token.0) {
                                conn.eof_pending = true;
                            }
                        }
                        self.service(token.0)
                    }
                }
            }
            // After the connections that had events: their turn comes first.
            for token in std::mem::take(&mut self.yielded) {
                self.service(token);
            }
            self.fire_timers();
            // Clients first: a connection their replies un-stall may propose
            // more, and those proposals should leave in this iteration's frames.
            self.flush_dirty();
            self.backend.end_batch();
            self.flush_peers();
        }
        log::info!("node {} stopped", self.settings.node.id);
        match self.failure.take() {
            Some(why) => Err(io::Error::other(why)),
            None => Ok(()),
        }
    }

    /// memcached raises its descriptor limit to `-c`; mckv only says when
    /// the limit is too low for `max_connections` (then connections past it
    /// wait in the listen backlog, since `accept` fails, instead of being
    /// refused with memcached's error).
    fn check_descriptor_limit(&self) {
        let max = self.settings.cluster.max_connections as u64;
        // What it holds now, and a link each way to every other node.
        let others = self.settings.members.len().saturating_sub(1) as u64;
        let held = process::open_descriptors().unwrap_or(0) + 2 * others;
        if let Some(limit) = process::open_files_limit() {
            if limit < max + held {
                log::warn!(
                    "max_connections is {max} but the process may open {limit} descriptors \
                     and needs {held} besides clients: raise `ulimit -n` to at least {}",
                    max + held
                );
            }
        }
    }

    fn finished(&self) -> bool {
        self.stopping && (self.conns.is_empty() || self.stop_deadline_passed)
    }

    /// The time the cluster core runs on: milliseconds since start.
    pub(super) fn millis(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    /// Carries out what the engine asked: store work in order, refusals at
    /// once; replies that are ready go to their connections.
    fn apply_effects(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Work(work) => self.backlog.enqueue(&mut self.backend, work),
                Effect::Refuse { to, reason } => {
                    let mut out = Vec::new();
                    reply::server_error(&mut out, &reason);
                    self.answer(to, out);
                }
            }
        }
        self.effects = effects;
        self.complete_jobs();
    }

    /// Puts the backend's replies in their slots and hands its reports to
    /// the engine.
    fn complete_jobs(&mut self) {
        let mut reported = self.release_held();
        self.backlog.drain(&mut self.backend);
        let mut done = std::mem::take(&mut self.done);
        self.backend.completed(&mut done);
        for done in done.drain(..) {
            match done {
                Done::Reply { to, reply, shows } => {
                    match self.durable.as_ref().and_then(|d| d.wait_for(shows)) {
                        Some(wait) => self.held.push_back((wait, to, reply)),
                        None => {
                            self.answer(to, reply);
                        }
                    }
                }
                Done::Engine(report) => match self.report_wait(&report) {
                    Some(wait) => self.held_reports.push_back((wait, report)),
                    None => {
                        self.node.on_store(report, &mut self.effects);
                        reported = true;
                    }
                },
            }
        }
        self.done = done;
        if reported && !self.effects.is_empty() {
            self.apply_effects();
        }
    }

    /// What `report` must wait for before the engine hears it, if anything
    /// (`Durable::report_wait`).
    fn report_wait(&self, report: &<E::Replica as Replica>::Done) -> Option<Wait> {
        let waits = E::Replica::report_waits(report);
        let durable = self.durable.as_ref()?;
        durable.report_wait(waits, !self.held_reports.is_empty())
    }

    /// Answers the held replies, and hands the engine the held reports, the
    /// log is now far enough for; whether the engine heard any.
    fn release_held(&mut self) -> bool {
        // Taken out while answering, which needs all of `self`.
        let Some(durable) = self.durable.take() else {
            return false;
        };
        // A reply whose request timed out meanwhile (its slot answered, or
        // its connection gone) is dropped: a log that stays stuck (a full
        // disk, a failed fsync) must not keep one per request it held.
        while self
            .held
            .front()
            .is_some_and(|&(wait, to, _)| durable.reached(wait) || !self.is_waiting(to))
        {
            if let Some((_, to, reply)) = self.held.pop_front() {
                self.answer(to, reply);
            }
        }
        let mut reported = false;
        while self
            .held_reports
            .front()
            .is_some_and(|(wait, _)| durable.reached(*wait))
        {
            if let Some((_, report)) = self.held_reports.pop_front() {
                self.node.on_store(report, &mut self.effects);
                reported = true;
            }
        }
        self.durable = Some(durable);
        reported
    }

    fn on_peer_event(&mut self, event: &mio::event::Event) {
        let Some(peers) = &mut self.peers else {
            return;
        };
        let mut link_events = std::mem::take(&mut self.link_events);
        peers.on_event(self.poll.registry(), event, &mut link_events);
        self.on_link_events(&mut link_events);
        self.link_events = link_events;
    }

    /// Hands what the peer links reported to the cluster core, and tells
    /// the links what the core decided about hellos. Taking a hello reads
    /// on, which may report more: handled in the same pass. Nothing to do
    /// (the common case, once per loop iteration) costs nothing.
    fn on_link_events(&mut self, events: &mut Vec<LinkEvent<E::Message>>) {
        if events.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.link_batch);
        while !events.is_empty() {
            std::mem::swap(events, &mut batch);
            let now = self.millis();
            for event in batch.drain(..) {
                match event {
                    LinkEvent::Opened(peer) => self.node.on_link(peer, PeerEvent::LinkOpened),
                    LinkEvent::Lost(peer) => self.node.on_link(peer, PeerEvent::LinkLost),
                    LinkEvent::Hello { link, hello } => {
                        let verdict = self.node.on_hello(hello.node, hello.incarnation, now);
                        let (registry, peers) = (self.poll.registry(), self.peers.as_mut());
                        let Some(peers) = peers else { continue };
                        match verdict {
                            Ok(()) => peers.admit(registry, link, hello.node, events),
                            Err(why) => peers.refuse(registry, link, &why, events),
                        }
                    }
                    LinkEvent::Frame { from, frame } => {
                        self.node.on_frame(from, frame, now, &mut self.effects)
                    }
                    LinkEvent::Leave(peer) => self.node.on_leave(peer),
                    LinkEvent::Welcomed { by, incarnation } => {
                        self.node.on_welcome(by, incarnation, now)
                    }
                    LinkEvent::Refused { by, why } => self.node.on_refused(by, &why),
                }
            }
        }
        self.link_batch = batch;
        self.apply_effects();
    }

    /// Sends each peer one frame with everything this loop iteration produced.
    fn flush_peers(&mut self) {
        let Some(peers) = &mut self.peers else {
            return;
        };
        let load = Load {
            pending: self.node.engine().status().pending as u64,
            ops: self.counters.ops,
        };
        let node = &mut self.node;
        let mut link_events = std::mem::take(&mut self.link_events);
        peers.flush(
            self.poll.registry(),
            &mut |to| node.outgoing(to, load),
            &mut link_events,
        );
        self.on_link_events(&mut link_events);
        self.link_events = link_events;
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while self.deadlines.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, reply_to)) = self.deadlines.pop_front() {
                self.time_out(reply_to);
            }
        }
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Heartbeat => self.heartbeat(now),
                Timer::Maintain => {
                    // A node alone has no heartbeat, and a stalled log
                    // wakes nothing: its stall is noticed here.
                    self.check_log();
                    let busy = self.backend.maintain();
                    let next = if busy { MAINTAIN_BUSY } else { MAINTAIN_EVERY };
                    self.timers.schedule(now + next, Timer::Maintain);
                }
                Timer::Shutdown => self.stop_deadline_passed = true,
                Timer::IdleSweep => {
                    if let Some(idle_timeout) = self.settings.cluster.idle_timeout {
                        self.kick_idle(now, idle_timeout);
                    }
                    self.timers
                        .schedule(now + IDLE_SWEEP_EVERY, Timer::IdleSweep);
                }
                Timer::ScrapeDeadline => self.expire_scrapes(now),
            }
        }
    }

    /// Every heartbeat: the core notices silent peers and owes every peer a
    /// frame; the links redial and drop strangers that said nothing.
    fn heartbeat(&mut self, now: Instant) {
        self.check_log();
        let millis = self.millis();
        self.node.tick(millis, &mut self.effects);
        self.apply_effects();
        let mut link_events = std::mem::take(&mut self.link_events);
        if let Some(peers) = &mut self.peers {
            peers.tick(self.poll.registry(), &mut link_events);
        }
        self.on_link_events(&mut link_events);
        self.link_events = link_events;
        self.timers
            .schedule(now + self.settings.cluster.heartbeat, Timer::Heartbeat);
    }

    fn on_signal(&mut self) {
        let received: Vec<i32> = self.signals.pending().collect();
        if received.is_empty() || self.stopping {
            return;
        }
        log::info!(
            "signal {received:?}: no longer accepting; draining {} connection(s)",
            self.conns.len()
        );
        self.stop();
    }

    /// Tells the engine whether the log is stuck now (the disk refuses it,
    /// or has taken none of it for a while: `durability/stall.rs`). A
    /// node whose fsync failed, or a strong cluster's node whose log can
    /// no longer catch up (its disk refused it past the backlog limit),
    /// stops, as on SIGTERM, and exits with the reason
    /// ([`Durable::must_stop`]).
    fn check_log(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        let stuck = (self.durable.as_mut()).is_some_and(|d| d.log_stuck(now));
        self.node.on_log_stuck(stuck);
        let Some(why) = self.durable.as_ref().and_then(Durable::must_stop) else {
            return;
        };
        log::error!("{why}");
        self.failure = Some(why);
        self.stop();
    }

    /// Tells peers, stops accepting and reading, and drains what is owed
    /// (for at most the grace period).
    fn stop(&mut self) {
        self.stopping = true;
        if let Some(peers) = &mut self.peers {
            peers.leave(self.poll.registry());
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.timers
            .schedule(Instant::now() + SHUTDOWN_GRACE, Timer::Shutdown);
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            if let Err(e) = self.settle(token) {
                log::debug!("client connection {token}: {e}");
                self.close(token);
            }
        }
    }
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot resolve {addr}"),
        )
    })
}

fn bind_peers<M: crate::cluster::wire::Message>(
    settings: &Settings,
    incarnation: u64,
    poll: &Poll,
) -> io::Result<Peers<M>> {
    let me = &settings.node;
    let mut others = Vec::new();
    for node in settings.members.iter().filter(|n| n.id != me.id) {
        let host = node.peer.rsplit_once(':').map_or("", |(host, _)| host);
        others.push(PeerAddress {
            id: node.id,
            peer: resolve(&node.peer)?,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        });
    }
    let tls = match settings.cluster.tls_files(me) {
        Ok(Some(files)) if settings.cluster.peer_tls => {
            Some(tls::peer_facing(&files).map_err(io::Error::other)?)
        }
        Ok(_) => None,
        Err(e) => return Err(io::Error::other(e)),
    };
    let terms = settings.cluster.replica_terms();
    log::info!("settings proven to peers in each handshake: {terms}");
    let identity = Identity {
        me: me.id,
        cluster: &settings.cluster.name,
        secret: &settings.cluster.secret,
        terms: &terms,
        incarnation,
        tls,
    };
    let listen = resolve(&me.peer)?;
    Peers::bind(
        poll.registry(),
        listen,
        identity,
        others,
        (
            settings.cluster.peer_timeout,
            settings.cluster.peer_unsent_limit,
        ),
        Instant::now(),
    )
}
