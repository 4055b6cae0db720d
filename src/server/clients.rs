//! The client side of the reactor: accepting connections, reading and
//! parsing requests, handing data commands to the cluster core, and putting
//! replies in their slots, so they leave each connection in request order
//! (see [`super::connection`] for the slots and memcached's flush points).
//!
//! ```text
//!  accept ─► Connection ─► read ─► parse ─► Admin: answered here (admin.rs)
//!                                    └────► data command ─► Node::on_client ─► effects
//!  answer(reply_to) ◄── store replies, refusals, timeouts ─► slot ─► flush at loop end
//! ```
//!
//! A connection whose first byte is the binary protocol's request magic
//! speaks that protocol for good, as on memcached; its requests are
//! dispatched in [`super::binary`], into the same store commands, slots and
//! flush points.
//!
//! Limits, with memcached's names: a connection past `max_connections` is
//! written memcached's `ERROR Too many open connections` and closed at
//! accept, never registered; with `idle_timeout_s`, a sweep once a second
//! closes, silently, every connection that has sent nothing for that long
//! and is owed nothing (the read that a request costs already stamps it).
//!
//! An admin command whose answer depends on what the requests before it
//! did (`stats` counts them) waits, unparsed, until they are answered, as it
//! would on memcached, which serves a connection's requests in turn.
//!
//! A client session is named by its slab token and a serial number
//! ([`session_id`]), so a reply for a connection that closed is never
//! written to the one that took its token.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::connection::Connection;
use super::latency::{Asked, CommandKind};
use super::tls::Stream;
use super::Server;
use crate::cluster::engine::Effect;
use crate::cluster::{Engine, ReplyTo};
use crate::durability::Durable;
use crate::protocol::binary::Responder;
use crate::protocol::{reply, Action, Admin, Command, Request};

/// The name of the `serial`th session, on slab token `token`.
pub(super) fn session_id(token: usize, serial: u64) -> u64 {
    (serial << 32) | (token as u64 & 0xffff_ffff)
}

/// The slab token of a session.
pub(super) fn token_of(session: u64) -> usize {
    (session & 0xffff_ffff) as usize
}

/// With `client_tls`, connections accepted per loop pass at most: each
/// costs a TLS handshake (a signature) on the reactor, so a storm of new
/// clients is taken a batch per pass, between which peers' frames,
/// heartbeats and the clients already connected are served.
const TLS_ACCEPTS_PER_PASS: usize = 64;

/// Rounds of read, parse, write one connection gets per turn (memcached's
/// `reqs_per_event`, in reads): a client that keeps its socket busy, by
/// pipelining big values say, would otherwise keep the loop to itself,
/// since its reads never come up short and its writes never block. One
/// that uses its turn up is serviced again after the others with events
/// (later in the same loop iteration, or after the next poll).
const PASSES_PER_TURN: usize = 8;

impl<E: Engine> Server<E> {
    /// Takes new client connections until none wait, or (with client TLS)
    /// a pass's batch is taken: then `accept_more` asks the loop to come
    /// back at once (readiness, edge-triggered, is not reported again).
    pub(super) fn accept(&mut self) {
        let batch = match self.client_tls {
            Some(_) => TLS_ACCEPTS_PER_PASS,
            None => usize::MAX,
        };
        self.accept_more = false;
        for _ in 0..batch {
            if !self.accept_one() {
                return;
            }
        }
        self.accept_more = true;
    }

    /// Takes one waiting connection; false when none waits (or accepting
    /// failed).
    fn accept_one(&mut self) -> bool {
        loop {
            let Some(listener) = &self.listener else {
                return false;
            };
            match listener.accept() {
                Ok((stream, addr)) if self.conns.len() >= self.settings.cluster.max_connections => {
                    self.refuse_connection(stream, addr);
                    return true;
                }
                Ok((socket, addr)) => {
                    let _ = socket.set_nodelay(true);
                    let mut stream = match &self.client_tls {
                        Some(config) => match Stream::accepted(socket, config) {
                            Ok(stream) => stream,
                            Err(e) => {
                                log::warn!("cannot start TLS for client {addr}: {e}");
                                return true;
                            }
                        },
                        None => Stream::Plain(socket),
                    };
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        log::warn!("cannot register client {addr}: {e}");
                        return true;
                    }
                    self.sessions += 1;
                    let session = session_id(token.0, self.sessions);
                    let reply_cap = self.settings.cluster.max_reply_buffer;
                    entry.insert(Connection::new(stream, session, addr, reply_cap));
                    let c = &mut self.counters;
                    c.curr_connections += 1;
                    c.total_connections += 1;
                    c.connection_structures = c.connection_structures.max(c.curr_connections);
                    log::debug!("client {addr} connected");
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // e.g. out of file descriptors: keep serving who is connected.
                    log::warn!("accept failed: {e}");
                    return false;
                }
            }
        }
    }

    /// A connection over `max_connections` gets memcached's refusal and is
    /// closed at once, never registered: the write goes to a fresh socket's
    /// empty send buffer, so it cannot block, and a failed one is let go.
    fn refuse_connection(&mut self, stream: mio::net::TcpStream, addr: std::net::SocketAddr) {
        let _ = (&stream).write(reply::TOO_MANY_CONNECTIONS);
        drop(stream);
        self.counters.rejected_connections += 1;
        log::debug!(
            "client {addr} refused: {} connections open (max_connections)",
            self.conns.len()
        );
    }

    /// Closes every connection that sent nothing and was owed nothing for
    /// `idle_timeout` (memcached's idle kicker: silently).
    pub(super) fn kick_idle(&mut self, now: Instant, idle_timeout: Duration) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.idle_for(now).is_some_and(|idle| idle >= idle_timeout))
            .map(|(token, _)| token)
            .collect();
        for token in idle {
            log::debug!("client connection {token}: idle for {idle_timeout:?}, closed");
            self.close(token);
            self.counters.idle_kicks += 1;
        }
    }

    /// Reads, parses, answers and writes for one connection until it would
    /// block; closes it on error, EOF with nothing owed, or a finished `quit`.
    pub(super) fn service(&mut self, token: usize) {
        match self.service_io(token) {
            Ok(()) => {}
            Err(e) => {
                log::debug!("client connection {token}: {e}");
                self.close(token);
            }
        }
    }

    fn service_io(&mut self, token: usize) -> io::Result<()> {
        for pass in 1.. {
            let Some(conn) = self.conns.get_mut(token) else {
                return Ok(());
            };
            let mut got_input = false;
            let may_read = !conn.read_closed && !conn.close_when_flushed && !self.stopping;
            if may_read && conn.backpressured() {
                conn.stalled = true;
            } else if may_read {
                match conn.read_chunk(&mut self.spare_buffers) {
                    Ok((0, _)) => conn.read_closed = true,
                    Ok((n, asked)) => {
                        self.counters.bytes_read += n as u64;
                        conn.last_command = Instant::now();
                        // A short read emptied the socket; edge-triggered
                        // readiness will report the next bytes (but not an
                        // EOF that had already arrived: read on to that).
                        got_input = n == asked || conn.eof_pending || conn.stream.has_failed();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => got_input = true,
                    Err(e) => return Err(e),
                }
            }
            self.process_input(token);
            let conn = &mut self.conns[token];
            self.counters.bytes_written += conn.flush(&mut self.spent)? as u64;
            // Go round again while input comes, or when writing lifted the
            // back-pressure that held input back.
            if !got_input && !conn.may_resume() {
                break;
            }
            if pass == PASSES_PER_TURN {
                self.yielded.push(token);
                break;
            }
        }
        if let Some(conn) = self.conns.get_mut(token) {
            conn.give_back_buffers(&mut self.spare_buffers, &mut self.spent);
            if !self.spent.is_empty() {
                self.backend.recycle(&mut self.spent);
            }
        }
        self.settle(token)
    }

    /// After I/O: close a connection that is done, or register for
    /// writability while output is stuck.
    pub(super) fn settle(&mut self, token: usize) -> io::Result<()> {
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
        // memcached flushed everything owed when it last ran out of input
        // (an admin command that waited did not run out of it).
        let conn = &mut self.conns[token];
        if !conn.admin_waits {
            conn.mark_flush_point();
        }
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
            conn.admin_waits = false;
            if conn.swallow > 0 {
                conn.swallow_available();
                if conn.swallow > 0 {
                    return;
                }
            }
            if conn.speaks_binary() {
                match self.next_binary(token) {
                    true => continue,
                    false => return,
                }
            }
            let Some(parsed) = conn.parse_next(&self.limits) else {
                return;
            };
            let observes = match &parsed.action {
                Action::Admin { command, .. } => observes_earlier_requests(command),
                _ => false,
            };
            if observes && conn.owes_replies() {
                // memcached serves a connection's requests one after the
                // other, so `stats` counts what the requests before it did:
                // the node reads this one again once they are answered.
                conn.stalled = true;
                conn.admin_waits = true;
                return;
            }
            conn.consume(parsed.consumed);
            conn.swallow = parsed.swallow;
            match parsed.action {
                Action::Reply {
                    text,
                    silent,
                    discards_unflushed,
                } => {
                    let asked = asked_now(CommandKind::Other);
                    self.counters.ops += 1;
                    if discards_unflushed {
                        conn.discard_since_flush_point(&mut self.spent);
                    }
                    if !silent {
                        conn.reply(|out| out.extend_from_slice(text));
                    }
                    self.latencies.observe(asked);
                }
                Action::MetaNoop => {
                    let asked = asked_now(CommandKind::Meta);
                    self.counters.ops += 1;
                    conn.reply(|out| out.extend_from_slice(reply::MN));
                    conn.mark_flush_point();
                    self.latencies.observe(asked);
                }
                Action::Close => {
                    conn.discard_since_flush_point(&mut self.spent);
                    conn.close_when_flushed = true;
                }
                Action::Admin { command, noreply } => {
                    let asked = asked_now(CommandKind::Other);
                    self.answer_admin(token, command, noreply);
                    self.latencies.observe(asked);
                }
                Action::Execute(request) => self.execute(token, request),
            }
        }
    }

    /// Sends a data command to the store.
    fn execute(&mut self, token: usize, request: Request) {
        self.counters.ops += 1;
        let retrieval = matches!(request.command, Command::Get(_));
        self.submit(token, request);
        if retrieval {
            // memcached flushes after every retrieval.
            self.conns[token].mark_flush_point();
        }
    }

    /// Hands a data command to the cluster core, holding its reply's place.
    fn submit(&mut self, token: usize, request: Request) {
        let asked = asked_now(CommandKind::of(&request.command));
        self.submit_asked(token, request, asked, None);
    }

    /// Hands a data command asked as `asked` to the cluster core, holding
    /// its reply's place (`binary`: and how that reply becomes a binary
    /// response); the client gets a timeout if no answer comes by the
    /// deadline.
    pub(super) fn submit_asked(
        &mut self,
        token: usize,
        request: Request,
        asked: Asked,
        binary: Option<Box<Responder>>,
    ) {
        let conn = &mut self.conns[token];
        let reply_to = ReplyTo {
            session: conn.id,
            slot: conn.reserve_slot(asked, binary),
        };
        let deadline = asked.at + self.settings.cluster.backend_timeout;
        let refusal = self.durable.as_ref().and_then(Durable::intake_refusal);
        match refusal.filter(|_| !request.command.is_read()) {
            Some(reason) => self.effects.push(Effect::Refuse {
                to: reply_to,
                reason,
            }),
            None => self
                .node
                .on_client(reply_to, request, self.now, &mut self.effects),
        }
        self.apply_effects();
        // A reply that came at once (the inline store on one node) needs no
        // deadline: only one still owed takes a place in the queue.
        if self.is_waiting(reply_to) {
            self.deadlines.push_back((deadline, reply_to));
        }
    }

    /// Whether the reply for `reply_to` has yet to come.
    pub(super) fn is_waiting(&self, reply_to: ReplyTo) -> bool {
        self.conns
            .get(token_of(reply_to.session))
            .is_some_and(|c| c.id == reply_to.session && c.is_waiting(reply_to.slot))
    }

    /// Puts a reply in its slot; the connection is flushed at the end of
    /// this loop iteration. Returns whether the slot was still waiting.
    pub(super) fn answer(&mut self, reply_to: ReplyTo, reply: Vec<u8>) -> bool {
        let token = token_of(reply_to.session);
        let Some(conn) = self.conns.get_mut(token) else {
            return false;
        };
        if conn.id != reply_to.session {
            return false;
        }
        let Some(asked) = conn.fill_slot(reply_to.slot, reply, &mut self.spent) else {
            return false;
        };
        self.latencies.observe(asked);
        self.backend.recycle(&mut self.spent);
        self.dirty.push(token);
        true
    }

    /// Writes out the replies that came in this iteration; a connection
    /// whose back-pressure this lifts is serviced again.
    pub(super) fn flush_dirty(&mut self) {
        while let Some(token) = self.dirty.pop() {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.admin_waits && conn.may_resume() {
                // The admin command's turn has come: answer it, and what
                // follows it, before writing, as memcached writes a batch.
                self.service(token);
                continue;
            }
            match conn.flush(&mut self.spent) {
                Ok(n) => {
                    self.counters.bytes_written += n as u64;
                    conn.give_back_buffers(&mut self.spare_buffers, &mut self.spent);
                    if !self.spent.is_empty() {
                        self.backend.recycle(&mut self.spent);
                    }
                }
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

    /// A request missed its deadline: answer it now; a late answer is dropped.
    pub(super) fn time_out(&mut self, reply_to: ReplyTo) {
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
                token_of(reply_to.session)
            );
        }
    }

    pub(super) fn close(&mut self, token: usize) {
        if let Some(mut conn) = self.conns.try_remove(token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.counters.curr_connections -= 1;
            log::debug!("client {} closed", conn.addr);
        }
    }
}

/// A request of `kind` parsed now.
pub(super) fn asked_now(kind: CommandKind) -> Asked {
    Asked {
        kind,
        at: Instant::now(),
    }
}

/// Whether memcached's answer to `command` depends on what the requests
/// before it on the connection did (or changes what they do), so it must
/// wait for their replies: `stats` and its groups count them, `show` shows
/// them, `cache_memlimit` must not refuse a write sent before it.
pub(super) fn observes_earlier_requests(command: &Admin) -> bool {
    match command {
        Admin::Stats(_) | Admin::Show | Admin::CacheMemlimit { .. } => true,
        Admin::Version
        | Admin::Verbosity
        | Admin::Quit
        | Admin::SlabsAutomove
        | Admin::SlabsReassign { .. } => false,
    }
}
