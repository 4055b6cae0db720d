//! One node's reactor: a single mio `Poll` loop that owns the client
//! listener, the client connections (a `Slab` keyed by token), the peer links
//! ([`peers`]), the cluster [`Engine`], the timers, the signal pipe and the
//! waker the backend worker uses to hand back results.
//!
//! ```text
//!   client ─► Connection ─► parse ─► reply now (version, stats, show, errors)
//!                             └─► Engine::on_client ─► Effects ─► Job ─► backend ─► Done ─► slot
//!   peer links ─► Engine::on_frame ─► Effects;  Engine::outgoing ─► one frame per peer per loop
//!   timers: per-request deadlines, heartbeats, shutdown grace
//!   SIGINT/SIGTERM: tell peers, stop accepting and reading, drain what is owed, exit
//! ```
//!
//! The loop never blocks except in `poll`, whose timeout is the nearest timer.

mod connection;
mod peers;
mod stats;
mod timers;

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

use crate::backend::{Backend, Done, ReplyTo, StoreFactory, Work};
use crate::cluster::eventual::EventualEngine;
use crate::cluster::{Effect, Engine, Replicator, View};
use crate::config::{ClusterConfig, Consistency, KvType, NodeConfig};
use crate::protocol::{self, reply, Action, Admin, Command, Request, StatsGroup};
use crate::store::memcache::MemcacheStore;
use crate::store::memory::MemoryStore;
use crate::store::unix_now;
use connection::Connection;
use peers::{Identity, PeerAddress, Peers};
use stats::{Counters, Report};
use timers::Timers;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Jobs that may wait for the backend worker at once.
const BACKEND_QUEUE: usize = 16 * 1024;
/// How long a stopping node waits for owed replies before it exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Send heartbeats, check peers, redial.
    Heartbeat,
    /// The end of the shutdown grace period.
    Shutdown,
}

/// What the node runs with.
pub struct Settings {
    pub cluster: ClusterConfig,
    pub node: NodeConfig,
    /// Every node of the cluster, this one included.
    pub members: Vec<NodeConfig>,
}

pub struct Server {
    settings: Settings,
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    conns: Slab<Connection>,
    next_conn_id: u64,
    backend: Backend,
    /// Work the backend queue had no room for, in order, sent as it drains.
    backlog: VecDeque<Work>,
    engine: Replicator,
    /// The peer side; `None` in a one-node cluster.
    peers: Option<Peers>,
    effects: Vec<Effect>,
    /// Completed jobs, reused between loop iterations.
    done: Vec<Done>,
    /// Connections with new replies to flush at the end of this iteration.
    dirty: Vec<usize>,
    /// Request deadlines in the order they were set (all are equally long,
    /// so a FIFO keeps them sorted); answered requests are skipped when due.
    deadlines: VecDeque<(Instant, ReplyTo)>,
    timers: Timers<Timer>,
    counters: Counters,
    limits: protocol::Limits,
    started: Instant,
    stopping: bool,
    stop_deadline_passed: bool,
}

impl Server {
    /// Binds the client address and starts the backend worker.
    pub fn bind(settings: Settings) -> io::Result<Server> {
        let addr = resolve(&settings.node.client)?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let backend = match settings.node.kv_type {
            KvType::Memory => Backend::inline(store_factory(&settings)),
            KvType::Memcache => Backend::spawn(store_factory(&settings), waker, BACKEND_QUEUE)?,
        };
        let limits = settings.cluster.limits();
        let incarnation = incarnation();
        let me = settings.node.id;
        let view = View::new(0, settings.members.iter().map(|n| n.id).collect());
        let engine = match settings.cluster.consistency {
            // Alone, a node is every mode at once; the ordering engine serves it.
            _ if view.members.len() == 1 => {
                Replicator::Ordered(Engine::new(me, view, Consistency::Linearizable))
            }
            Consistency::Eventual => {
                let cluster = &settings.cluster;
                let beats =
                    cluster.sync_interval.as_millis() / cluster.heartbeat.as_millis().max(1);
                let start = incarnation / 1000;
                Replicator::Eventual(EventualEngine::new(
                    me,
                    incarnation,
                    view,
                    start,
                    beats.max(1) as u64,
                ))
            }
            mode => Replicator::Ordered(Engine::new(me, view, mode)),
        };
        let peers = if settings.members.len() > 1 {
            Some(bind_peers(&settings, incarnation, &poll)?)
        } else {
            None
        };
        let mut timers = Timers::new();
        if peers.is_some() {
            timers.schedule(Instant::now(), Timer::Heartbeat);
        }
        Ok(Server {
            settings,
            poll,
            listener: Some(listener),
            signals,
            conns: Slab::new(),
            next_conn_id: 0,
            backend,
            backlog: VecDeque::new(),
            engine,
            peers,
            effects: Vec::new(),
            done: Vec::new(),
            dirty: Vec::new(),
            deadlines: VecDeque::new(),
            timers,
            counters: Counters::default(),
            limits,
            started: Instant::now(),
            stopping: false,
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
        while !self.finished() {
            let now = Instant::now();
            let next_deadline = self
                .deadlines
                .front()
                .map(|(at, _)| at.saturating_duration_since(now));
            let timeout = match (self.timers.poll_timeout(now), next_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.complete_jobs(),
                    SIGNALS => self.on_signal(),
                    token if peers::owns(token) => self.on_peer_event(event),
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
            self.fire_timers();
            // Clients first: a connection their replies un-stall may propose
            // more, and those proposals should leave in this iteration's frames.
            self.flush_dirty();
            self.flush_peers();
        }
        log::info!("node {} stopped", self.settings.node.id);
        Ok(())
    }

    fn finished(&self) -> bool {
        self.stopping && (self.conns.is_empty() || self.stop_deadline_passed)
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        log::warn!("cannot register client {addr}: {e}");
                        continue;
                    }
                    self.next_conn_id += 1;
                    entry.insert(Connection::new(stream, self.next_conn_id, addr));
                    self.counters.curr_connections += 1;
                    self.counters.total_connections += 1;
                    log::debug!("client {addr} connected");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // e.g. out of file descriptors: keep serving who is connected.
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Reads, parses, answers and writes for one connection until it would
    /// block; closes it on error, EOF with nothing owed, or a finished `quit`.
    fn service(&mut self, token: usize) {
        match self.service_io(token) {
            Ok(()) => {}
            Err(e) => {
                log::debug!("client connection {token}: {e}");
                self.close(token);
            }
        }
    }

    fn service_io(&mut self, token: usize) -> io::Result<()> {
        loop {
            let Some(conn) = self.conns.get_mut(token) else {
                return Ok(());
            };
            let mut got_input = false;
            let may_read = !conn.read_closed && !conn.close_when_flushed && !self.stopping;
            if may_read && conn.backpressured() {
                conn.stalled = true;
            } else if may_read {
                match conn.read_chunk() {
                    Ok((0, _)) => conn.read_closed = true,
                    Ok((n, asked)) => {
                        self.counters.bytes_read += n as u64;
                        // A short read emptied the socket; edge-triggered
                        // readiness will report the next bytes (but not an
                        // EOF that had already arrived: read on to that).
                        got_input = n == asked || conn.eof_pending;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => got_input = true,
                    Err(e) => return Err(e),
                }
            }
            self.process_input(token);
            let conn = &mut self.conns[token];
            self.counters.bytes_written += conn.flush()? as u64;
            // Go round again while input comes, or when writing lifted the
            // back-pressure that held input back.
            if !got_input && !conn.may_resume() {
                break;
            }
        }
        self.settle(token)
    }

    /// After I/O: close a connection that is done, or register for
    /// writability while output is stuck.
    fn settle(&mut self, token: usize) -> io::Result<()> {
        let stopping = self.stopping;
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        let done = conn.read_closed || conn.close_when_flushed || stopping;
        if done && conn.is_drained() {
            self.close(token);
            return Ok(());
        }
        let wants_write = conn.has_unsent_output();
        if wants_write != conn.wants_write {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            self.poll
                .registry()
                .reregister(&mut conn.stream, Token(token), interest)?;
            conn.wants_write = wants_write;
        }
        Ok(())
    }

    /// Parses and dispatches every complete request in the input buffer.
    fn process_input(&mut self, token: usize) {
        // memcached flushed everything owed when it last ran out of input.
        self.conns[token].mark_flush_point();
        loop {
            let conn = &mut self.conns[token];
            if conn.close_when_flushed {
                return;
            }
            if conn.backpressured() {
                conn.stalled = true;
                return;
            }
            conn.stalled = false;
            if conn.swallow > 0 {
                conn.swallow_available();
                if conn.swallow > 0 {
                    return;
                }
            }
            let parsed = match protocol::parse(conn.unparsed(), &self.limits) {
                Ok(parsed) => parsed,
                Err(protocol::Incomplete) => return,
            };
            conn.consume(parsed.consumed);
            conn.swallow = parsed.swallow;
            match parsed.action {
                Action::Reply {
                    text,
                    silent,
                    discards_unflushed,
                } => {
                    self.counters.ops += 1;
                    if discards_unflushed {
                        conn.discard_since_flush_point();
                    }
                    if !silent {
                        conn.reply(|out| out.extend_from_slice(text));
                    }
                }
                Action::Close => {
                    conn.discard_since_flush_point();
                    conn.close_when_flushed = true;
                }
                Action::Admin { command, noreply } => self.answer_admin(token, command, noreply),
                Action::Execute(request) => self.execute(token, request),
            }
        }
    }

    /// Sends a data command to the store.
    fn execute(&mut self, token: usize, request: Request) {
        self.counters.ops += 1;
        self.count(&request.command);
        let retrieval = matches!(request.command, Command::Get(_));
        self.submit(token, request);
        if retrieval {
            // memcached flushes after every retrieval.
            self.conns[token].mark_flush_point();
        }
    }

    /// Answers a command the node handles itself, in its place among the
    /// connection's replies.
    fn answer_admin(&mut self, token: usize, command: Admin, noreply: bool) {
        self.counters.ops += 1;
        let report = Report {
            cluster: &self.settings.cluster,
            node: &self.settings.node,
            started: self.started,
            counters: &self.counters,
            backend: &self.backend.counters,
            engine: &self.engine,
            peers: self.peers.as_ref(),
        };
        let mut out = Vec::new();
        match command {
            Admin::Version => reply::version(&mut out),
            Admin::Verbosity => out.extend_from_slice(reply::OK),
            Admin::Stats(StatsGroup::General) => report.general(&mut out),
            Admin::Stats(StatsGroup::Settings) => report.settings(&mut out),
            Admin::Stats(StatsGroup::Reset) => {
                self.counters.reset();
                self.backend.counters.reset();
                out.extend_from_slice(reply::RESET);
            }
            Admin::Show => report.show(&mut out),
            Admin::Quit => self.conns[token].close_when_flushed = true,
        }
        if !noreply {
            self.conns[token].reply(|o| o.extend_from_slice(&out));
        }
    }

    fn count(&mut self, command: &Command) {
        let c = &mut self.counters;
        match command {
            Command::Get(get) => {
                c.cmd_get += get.keys.len() as u64;
                if get.touch.is_some() {
                    c.cmd_touch += get.keys.len() as u64;
                }
            }
            Command::Storage(_) | Command::TooLarge { .. } => c.cmd_set += 1,
            Command::Touch { .. } => c.cmd_touch += 1,
            Command::FlushAll { .. } => c.cmd_flush += 1,
            Command::Delete { .. } | Command::Arith(_) => {}
        }
    }

    /// Hands a store command to the engine, holding its reply's place; the
    /// client gets a timeout if no answer comes by the deadline.
    fn submit(&mut self, token: usize, request: Request) {
        let conn = &mut self.conns[token];
        let reply_to = ReplyTo {
            token,
            conn_id: conn.id,
            slot: conn.reserve_slot(),
        };
        if let Some(fence) = self.peers.as_ref().and_then(|p| p.fenced.as_ref()) {
            let mut out = Vec::new();
            reply::server_error(&mut out, &format!("node unavailable: {fence}; not applied"));
            self.answer(reply_to, out);
            return;
        }
        let deadline = Instant::now() + self.settings.cluster.backend_timeout;
        self.engine
            .on_client(reply_to, request, unix_now(), &mut self.effects);
        self.apply_effects();
        // A reply that came at once (the inline store on one node) needs no
        // deadline: only one still owed takes a place in the queue.
        if self.is_waiting(reply_to) {
            self.deadlines.push_back((deadline, reply_to));
        }
    }

    /// Whether the reply for `reply_to` has yet to come.
    fn is_waiting(&self, reply_to: ReplyTo) -> bool {
        self.conns
            .get(reply_to.token)
            .is_some_and(|c| c.id == reply_to.conn_id && c.is_waiting(reply_to.slot))
    }

    /// Carries out what the engine asked: store work in order, refusals at
    /// once; replies that are ready go to their connections.
    fn apply_effects(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            let work = match effect {
                Effect::Store(work) => work,
                Effect::Refuse { reply_to, reason } => {
                    let mut out = Vec::new();
                    reply::server_error(&mut out, &reason);
                    self.answer(reply_to, out);
                    continue;
                }
            };
            self.enqueue(work);
        }
        self.effects = effects;
        self.complete_jobs();
    }

    /// Puts a reply in its slot; the connection is flushed at the end of
    /// this loop iteration. Returns whether the slot was still waiting.
    fn answer(&mut self, reply_to: ReplyTo, reply: Vec<u8>) -> bool {
        let Some(conn) = self.conns.get_mut(reply_to.token) else {
            return false;
        };
        if conn.id != reply_to.conn_id || !conn.fill_slot(reply_to.slot, reply) {
            return false;
        }
        self.backend.recycle(&mut conn.spent);
        self.dirty.push(reply_to.token);
        true
    }

    /// Writes out the replies that came in this iteration; a connection
    /// whose back-pressure this lifts is serviced again.
    fn flush_dirty(&mut self) {
        while let Some(token) = self.dirty.pop() {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            match conn.flush() {
                Ok(n) => self.counters.bytes_written += n as u64,
                Err(e) => {
                    log::debug!("client connection {token}: {e}");
                    self.close(token);
                    continue;
                }
            }
            if self.conns[token].may_resume() {
                self.service(token);
            } else if let Err(e) = self.settle(token) {
                log::debug!("client connection {token}: {e}");
                self.close(token);
            }
        }
    }

    /// Queues a job for the backend without blocking and without reordering:
    /// once one had to wait, later ones wait behind it.
    fn enqueue(&mut self, job: Work) {
        if self.backlog.is_empty() {
            if let Err(job) = self.backend.submit(job) {
                self.backlog.push_back(job);
            }
        } else {
            self.backlog.push_back(job);
        }
    }

    fn drain_backlog(&mut self) {
        while let Some(job) = self.backlog.pop_front() {
            if let Err(job) = self.backend.submit(job) {
                self.backlog.push_front(job);
                return;
            }
        }
    }

    fn on_peer_event(&mut self, event: &mio::event::Event) {
        if let Some(peers) = &mut self.peers {
            peers.on_event(
                self.poll.registry(),
                event,
                &mut self.engine,
                &mut self.effects,
            );
        }
        self.apply_effects();
    }

    /// Sends each peer one frame with everything this loop iteration produced.
    fn flush_peers(&mut self) {
        if let Some(peers) = &mut self.peers {
            let load = (self.engine.pending() as u64, self.counters.ops);
            peers.flush(self.poll.registry(), &mut self.engine, load);
        }
    }

    /// Puts the backend's answers in their slots.
    fn complete_jobs(&mut self) {
        self.drain_backlog();
        let mut done = std::mem::take(&mut self.done);
        self.backend.completed(&mut done);
        for done in done.drain(..) {
            match done {
                Done::Reply { reply_to, reply } => {
                    self.answer(reply_to, reply);
                }
                Done::Published(versions) => self.engine.on_published(versions),
                Done::Collected {
                    peer,
                    versions,
                    since,
                    upto,
                } => self.engine.on_collected(peer, versions, since, upto),
                Done::SyncApplied {
                    from,
                    mark,
                    all_kept,
                } => self.engine.on_sync_applied(from, mark, all_kept),
            }
        }
        self.done = done;
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
                Timer::Heartbeat => {
                    if let Some(peers) = &mut self.peers {
                        peers.tick(self.poll.registry(), &mut self.engine, &mut self.effects);
                    }
                    self.apply_effects();
                    self.timers
                        .schedule(now + self.settings.cluster.heartbeat, Timer::Heartbeat);
                }
                Timer::Shutdown => self.stop_deadline_passed = true,
            }
        }
    }

    /// A request missed its deadline: answer it now; a late answer is dropped.
    fn time_out(&mut self, reply_to: ReplyTo) {
        // Most deadlines outlive their request (every write in a cluster
        // keeps one): no reply is composed for those.
        if !self.is_waiting(reply_to) {
            return;
        }
        let mut out = Vec::new();
        reply::server_error(&mut out, "timeout; the operation may have been applied");
        if self.answer(reply_to, out) {
            self.counters.timeouts += 1;
            log::warn!(
                "a request on client connection {} timed out",
                reply_to.token
            );
        }
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

    fn close(&mut self, token: usize) {
        if let Some(mut conn) = self.conns.try_remove(token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.counters.curr_connections -= 1;
            log::debug!("client {} closed", conn.addr);
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

fn bind_peers(settings: &Settings, incarnation: u64, poll: &Poll) -> io::Result<Peers> {
    let me = &settings.node;
    let mut others = Vec::new();
    for node in settings.members.iter().filter(|n| n.id != me.id) {
        others.push(PeerAddress {
            id: node.id,
            client: node.client.clone(),
            peer: resolve(&node.peer)?,
        });
    }
    let identity = Identity {
        me: me.id,
        cluster: &settings.cluster.name,
        secret: &settings.cluster.secret,
        incarnation,
    };
    let listen = resolve(&me.peer)?;
    Peers::bind(
        poll.registry(),
        listen,
        identity,
        others,
        settings.cluster.peer_timeout,
        Instant::now(),
    )
}

/// This run's incarnation: the start time, so a restart is told apart.
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn store_factory(settings: &Settings) -> StoreFactory {
    let cluster = &settings.cluster;
    match settings.node.kv_type {
        KvType::Memory => {
            let (limit, limits) = (cluster.memory_limit_bytes, cluster.limits());
            Box::new(move || Box::new(MemoryStore::new(limit, limits)))
        }
        KvType::Memcache => {
            let (addr, timeout) = (settings.node.kv_addr.clone(), cluster.backend_timeout);
            let limits = cluster.limits();
            let replicates_versions =
                cluster.consistency == Consistency::Eventual && settings.members.len() > 1;
            Box::new(move || {
                // The store's own socket timeout stays under the reactor's
                // deadline, so a dead memcached is noticed by the store too.
                let store = MemcacheStore::new(&addr, timeout.mul_f32(0.8), limits);
                match replicates_versions {
                    true => Box::new(store.starting_empty()),
                    false => Box::new(store),
                }
            })
        }
    }
}
