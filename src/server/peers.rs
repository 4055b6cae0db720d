//! Peer links: the sockets between nodes, on the reactor thread. This
//! module only moves bytes: it hands the reactor what arrived as
//! [`LinkEvent`]s and sends the frames the cluster core gives it; whether a
//! peer is up, and whether a hello is taken, is the core's to say
//! ([`crate::cluster::Node`]).
//!
//! ```text
//!  this node ── dialed link (hello, then sealed frames) ─────► peer's listener
//!  this node ◄── accepted link (its hello, then its sealed frames) ── peer dials us
//! ```
//!
//! Each node sends only on the link it dialed (to the `peer` address its own
//! config names, so a proxy or NAT may sit between nodes) and receives only
//! on links it accepted, so each direction is one TCP stream: FIFO, as the
//! engines need. A link is tied to a node by the node id in its hello, whose
//! proof of the cluster secret (and of the mode's protocol) answers the
//! challenge this node sent first on the link, and is checked here, never
//! by its source address ([`crate::cluster::handshake`] says why a recorded
//! hello or a forged message fails). Until then a link is a stranger's: it
//! is read only up to a hello-sized first message and closed if no hello
//! comes within `peer_timeout`. Every message after the hello is sealed by
//! its sender and opened here before it is decoded. Dialed links reconnect
//! with backoff.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::cluster::handshake::{self, ClusterKey, Exchange, Nonce, Session};
use crate::cluster::wire::{self, Message};
use crate::cluster::{Frame, Hello, NodeId, PeerMessage};
use crate::server::tls::{PeerTls, Stream};

pub const PEER_LISTENER: Token = Token(usize::MAX - 4);
/// Link tokens are `LINK_BASE + slab key`, far above client tokens.
const LINK_BASE: usize = 1 << 40;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 64 * 1024;
/// A peer that leaves this much unread (only a view-change message bigger
/// than frames are can take a link past the low water by this much) is
/// dropped; the link is redialed and what it had not acknowledged resent.
const MAX_UNSENT: usize = 256 << 20;
/// Accepted links that have not said hello yet, at most: one more closes
/// the oldest of the address holding the most, so strangers cannot hold
/// the node's descriptors, and a peer's new link from an address of its
/// own still gets in however many one stranger opens.
const MAX_STRANGERS: usize = 256;
/// The longest reason a refusal carries or logs.
const MAX_REASON: usize = 160;
/// A refused link is logged once per remote address in this time...
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// ...for up to this many addresses and reasons at once (those past it in
/// one minute are counted, not logged).
const REFUSAL_LOG_ADDRESSES: usize = 1024;

/// How long a link may take from its TCP connect to its hello (accepted)
/// or its welcome (dialed): a TCP connect, a TLS handshake and the
/// challenge take several round trips, which `peer_timeout` (the failure
/// detector's silence, one way) may not cover on a long link.
pub fn handshake_timeout(peer_timeout: Duration) -> Duration {
    (4 * peer_timeout).max(Duration::from_secs(2))
}

/// Whether `token` belongs to the peer side.
pub fn owns(token: Token) -> bool {
    token == PEER_LISTENER || (LINK_BASE..LINK_BASE + (1 << 32)).contains(&token.0)
}

/// What happened on the peer links, for the reactor to hand to the core.
#[derive(Debug)]
pub enum LinkEvent<M> {
    /// This node's link to the peer opened and the peer's welcome proved the
    /// secret: frames can go.
    Opened(NodeId),
    /// This node's link to the peer broke: what was in flight may be lost.
    Lost(NodeId),
    /// A hello answering this link's challenge with a valid proof arrived
    /// on accepted link `link`: answer
    /// with [`Peers::admit`] or [`Peers::refuse`].
    Hello {
        link: usize,
        hello: Hello,
    },
    Frame {
        from: NodeId,
        frame: Frame<M>,
    },
    Leave(NodeId),
    /// Run `incarnation` of the peer took this node's hello (and proved
    /// the secret for this link).
    Welcomed {
        by: NodeId,
        incarnation: u64,
    },
    /// The peer refused this node's hello.
    Refused {
        by: NodeId,
        why: String,
    },
}

enum Role {
    Dialed(NodeId),
    /// Its node is known once its hello has been taken.
    Accepted(Option<NodeId>),
}

struct Link {
    stream: Stream,
    role: Role,
    /// Where an accepted link comes from (for the log of a refusal).
    from: Option<SocketAddr>,
    /// When the link was accepted or dialed: a stranger gets `peer_timeout` to say hello.
    opened: Instant,
    connected: bool,
    handshake: Handshake,
    /// Seals what this node sends after its hello (dialed links) or opens
    /// what the peer sends after its hello (accepted links, once taken).
    session: Option<Session>,
    /// Bytes read, `input[..filled]`; the rest is room, zeroed once, so a
    /// read costs no memset.
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    written: usize,
    wants_write: bool,
}

/// Where a link's handshake stands.
enum Handshake {
    /// Dialed: the peer's challenge has not come yet.
    AwaitingChallenge,
    /// Accepted: this challenge went, no hello has answered it yet.
    Challenged(Nonce),
    /// The hello went (dialed) or was checked (accepted).
    Exchanged(Exchange),
    /// Dialed: the welcome proved the secret; frames go.
    Welcomed,
}

/// How to reach one peer: its address, this node's dialed link to it and
/// the link it dialed to this node, and when to redial.
struct PeerSockets {
    addr: SocketAddr,
    host: String,
    dialed: Option<usize>,
    accepted: Option<usize>,
    backoff: Duration,
    retry_at: Instant,
}

/// A peer this node will talk to.
pub struct PeerAddress {
    pub id: NodeId,
    pub peer: SocketAddr,
    /// The host its config names (a name or an address): with peer TLS,
    /// its certificate must name it.
    pub host: String,
}

pub struct Identity<'a> {
    pub me: NodeId,
    pub cluster: &'a str,
    pub secret: &'a str,
    /// The settings every node must share, proven in each handshake.
    pub terms: &'a str,
    pub incarnation: u64,
    /// Links run over TLS with these configs (`peer_tls = on`).
    pub tls: Option<PeerTls>,
}

/// A message read from a link, and its length on the wire.
type ReadMessage<M> = (PeerMessage<M>, usize);

/// The peer side of one node, whose peers speak messages `M`.
pub struct Peers<M> {
    me: NodeId,
    key: ClusterKey,
    incarnation: u64,
    tls: Option<PeerTls>,
    unsent_limit: usize,
    /// How long a link may take to say hello (accepted) or be welcomed
    /// (dialed): [`handshake_timeout`] of `peer_timeout`.
    timeout: Duration,
    listener: TcpListener,
    links: Slab<Link>,
    nodes: BTreeMap<NodeId, PeerSockets>,
    /// Frames sent and received since start, and their bytes on the wire,
    /// for `stats`.
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frame_bytes_sent: u64,
    pub frame_bytes_received: u64,
    /// Accepted links closed before a hello was taken (a wrong secret or
    /// cluster, an unknown node, silence, garbage), for `stats`.
    pub hellos_refused: u64,
    /// When each reason of refusal from each address was last logged: at
    /// most once a minute each, so a peer redialing with a wrong secret
    /// cannot flood the log (and a port probe hides no other reason).
    refusals_logged: BTreeMap<(IpAddr, String), Instant>,
    messages: PhantomData<M>,
}

impl<M: Message> Peers<M> {
    pub fn bind(
        registry: &Registry,
        listen: SocketAddr,
        identity: Identity<'_>,
        others: Vec<PeerAddress>,
        (timeout, unsent_limit): (Duration, usize),
        now: Instant,
    ) -> io::Result<Peers<M>> {
        let mut listener = TcpListener::bind(listen)?;
        registry.register(&mut listener, PEER_LISTENER, Interest::READABLE)?;
        let nodes = others
            .into_iter()
            .map(|p| {
                let dialing = PeerSockets {
                    addr: p.peer,
                    host: p.host,
                    dialed: None,
                    accepted: None,
                    backoff: BACKOFF_MIN,
                    retry_at: now,
                };
                (p.id, dialing)
            })
            .collect();
        Ok(Peers {
            me: identity.me,
            key: ClusterKey::new::<M>(identity.cluster, identity.secret).with_terms(identity.terms),
            tls: identity.tls,
            unsent_limit,
            incarnation: identity.incarnation,
            timeout: handshake_timeout(timeout),
            listener,
            links: Slab::new(),
            nodes,
            frames_sent: 0,
            frames_received: 0,
            frame_bytes_sent: 0,
            frame_bytes_received: 0,
            hellos_refused: 0,
            refusals_logged: BTreeMap::new(),
            messages: PhantomData,
        })
    }

    /// Handles readiness of the listener or of a link.
    pub fn on_event(&mut self, registry: &Registry, event: &Event, events: &mut Vec<LinkEvent<M>>) {
        if event.token() == PEER_LISTENER {
            return self.accept(registry);
        }
        let key = event.token().0 - LINK_BASE;
        self.service(registry, key, events);
    }

    fn service(&mut self, registry: &Registry, key: usize, events: &mut Vec<LinkEvent<M>>) {
        if !self.links.contains(key) {
            return; // a spurious event for a link already closed
        }
        if let Err(why) = self.service_io(registry, key, events) {
            self.close(registry, key, &why, events);
        }
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    self.make_room_for_a_stranger(registry);
                    self.challenge(registry, stream, addr)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("peer accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// If [`MAX_STRANGERS`] are waiting, closes the oldest stranger of the
    /// address that holds the most, so one host filling the slots evicts
    /// its own links, not a peer's.
    fn make_room_for_a_stranger(&mut self, registry: &Registry) {
        let strangers = self.links.iter().filter(|(_, l)| l.is_stranger());
        if strangers.count() < MAX_STRANGERS {
            return;
        }
        let mut by_address: HashMap<Option<IpAddr>, (usize, usize, Instant)> = HashMap::new();
        for (key, link) in self.links.iter().filter(|(_, l)| l.is_stranger()) {
            let ip = link.from.map(|a| a.ip());
            let entry = by_address.entry(ip).or_insert((0, key, link.opened));
            entry.0 += 1;
            if link.opened < entry.2 {
                (entry.1, entry.2) = (key, link.opened);
            }
        }
        // The busiest address; of those as busy, the one whose stranger
        // has waited longest (so a peer's fresh link is the last to go).
        let busiest = by_address
            .values()
            .max_by_key(|&&(n, _, at)| (n, std::cmp::Reverse(at)));
        if let Some(&(_, oldest, _)) = busiest {
            let why =
                "too many links waiting to say hello (the oldest of the busiest address goes)";
            self.close(registry, oldest, why, &mut Vec::new());
        }
    }

    /// Takes a link a peer (or a stranger) dialed, and sends it this
    /// link's challenge.
    fn challenge(&mut self, registry: &Registry, socket: TcpStream, addr: SocketAddr) {
        let _ = socket.set_nodelay(true);
        let stream = match &self.tls {
            Some(tls) => Stream::accepted(socket, &tls.acceptor),
            None => Ok(Stream::Plain(socket)),
        };
        let (mut stream, nonce) = match stream
            .map_err(|e| e.to_string())
            .and_then(|stream| handshake::fresh_nonce().map(|nonce| (stream, nonce)))
        {
            Ok(taken) => taken,
            Err(why) => return log::warn!("peer link from {addr} dropped: {why}"),
        };
        let entry = self.links.vacant_entry();
        let key = entry.key();
        if let Err(e) = registry.register(&mut stream, Token(LINK_BASE + key), Interest::READABLE) {
            return log::warn!("cannot register peer link from {addr}: {e}");
        }
        let mut link = Link::new(stream, Role::Accepted(None), true);
        link.from = Some(addr);
        link.handshake = Handshake::Challenged(nonce);
        wire::encode(&PeerMessage::<M>::Challenge(nonce), &mut link.output);
        entry.insert(link);
        if let Err(why) = self.write(registry, key) {
            self.close(registry, key, &why, &mut Vec::new());
        }
    }

    fn service_io(
        &mut self,
        registry: &Registry,
        key: usize,
        events: &mut Vec<LinkEvent<M>>,
    ) -> Result<(), String> {
        let link = &mut self.links[key];
        if !link.connected {
            let socket = link.stream.socket();
            if let Some(e) = socket.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect failed: {e}"));
            }
            match socket.peer_addr() {
                Ok(_) => link.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(format!("connect failed: {e}")),
            }
        }
        let (messages, closed) = self.links[key].read_messages::<M>()?;
        for (message, length) in messages {
            self.on_message(key, message, length, events)?;
        }
        if closed {
            return Err("closed by peer".into());
        }
        self.write(registry, key)
    }

    /// Takes `message`, `length` bytes on the wire, from link `key`.
    fn on_message(
        &mut self,
        key: usize,
        message: PeerMessage<M>,
        length: usize,
        events: &mut Vec<LinkEvent<M>>,
    ) -> Result<(), String> {
        let role = match &self.links[key].role {
            Role::Dialed(id) => Role::Dialed(*id),
            Role::Accepted(id) => Role::Accepted(*id),
        };
        match (role, message) {
            (Role::Dialed(id), PeerMessage::Challenge(challenge)) => {
                self.answer(key, id, challenge)?;
            }
            (Role::Accepted(None), PeerMessage::Hello(hello)) => {
                let link = &mut self.links[key];
                let Handshake::Challenged(challenge) = link.handshake else {
                    return Err("a second hello".into());
                };
                let exchange = Exchange::check_hello(&self.key, self.me, challenge, &hello)?;
                link.handshake = Handshake::Exchanged(exchange);
                events.push(LinkEvent::Hello { link: key, hello });
            }
            (Role::Accepted(Some(from)), PeerMessage::Frame(frame)) => {
                self.frames_received += 1;
                self.frame_bytes_received += length as u64;
                events.push(LinkEvent::Frame { from, frame });
            }
            (Role::Accepted(Some(id)), PeerMessage::Leave) => events.push(LinkEvent::Leave(id)),
            (Role::Dialed(by), PeerMessage::Welcome { incarnation, proof }) => {
                let link = &mut self.links[key];
                let Handshake::Exchanged(exchange) = &link.handshake else {
                    return Err("a welcome out of turn".into());
                };
                exchange.check_welcome(&self.key, incarnation, &proof)?;
                link.handshake = Handshake::Welcomed;
                log::info!("node {}: link to node {by} open", self.me);
                if let Some(peer) = self.nodes.get_mut(&by) {
                    peer.backoff = BACKOFF_MIN;
                }
                events.push(LinkEvent::Opened(by));
                events.push(LinkEvent::Welcomed { by, incarnation })
            }
            (Role::Dialed(by), PeerMessage::Refused { why, proof }) => {
                let why: String = why.chars().take(MAX_REASON).collect();
                let Handshake::Exchanged(exchange) = &self.links[key].handshake else {
                    return Err(format!("a refusal out of turn ({why})"));
                };
                // Only the acceptor's refusal fences this node; a forged
                // one just closes the link.
                exchange.check_refusal(&self.key, &why, &proof)?;
                events.push(LinkEvent::Refused {
                    by,
                    why: why.clone(),
                });
                return Err(why);
            }
            (_, message) => return Err(format!("unexpected {}", message.kind())),
        }
        Ok(())
    }

    /// Answers the challenge on dialed link `key` to node `id` with this
    /// node's hello; what this node sends on it once welcomed is sealed.
    fn answer(&mut self, key: usize, id: NodeId, challenge: Nonce) -> Result<(), String> {
        let link = &mut self.links[key];
        if !matches!(link.handshake, Handshake::AwaitingChallenge) {
            return Err("a second challenge".into());
        }
        let exchange = Exchange {
            dialer: self.me,
            acceptor: id,
            challenge,
            answer: handshake::fresh_nonce()?,
        };
        let hello = exchange.hello(&self.key, self.incarnation);
        wire::encode(&PeerMessage::<M>::Hello(hello), &mut link.output);
        link.session = Some(exchange.session(&self.key));
        link.handshake = Handshake::Exchanged(exchange);
        Ok(())
    }

    /// The hello on `link` is taken: the peer is welcomed, the link is
    /// `peer`'s from now on (a link it had before is closed), and what
    /// followed the hello is read (and the welcome written).
    pub fn admit(
        &mut self,
        registry: &Registry,
        link: usize,
        peer: NodeId,
        events: &mut Vec<LinkEvent<M>>,
    ) {
        let Some(Handshake::Exchanged(exchange)) = self.links.get(link).map(|l| &l.handshake)
        else {
            return;
        };
        let welcome: PeerMessage<M> = PeerMessage::Welcome {
            incarnation: self.incarnation,
            proof: exchange.welcome_proof(&self.key, self.incarnation),
        };
        let session = exchange.session(&self.key);
        let accepted = &mut self.links[link];
        wire::encode(&welcome, &mut accepted.output);
        accepted.session = Some(session);
        accepted.role = Role::Accepted(Some(peer));
        let old = self
            .nodes
            .get_mut(&peer)
            .and_then(|p| p.accepted.replace(link));
        if let Some(old) = old.filter(|&old| old != link) {
            self.close(registry, old, "replaced by a new link", events);
        }
        // A stranger's link was read only up to its hello; readiness will
        // not be reported again for what followed it.
        self.service(registry, link, events);
    }

    /// The hello on `link` is refused: the peer is told why, and the link closes.
    pub fn refuse(
        &mut self,
        registry: &Registry,
        link: usize,
        why: &str,
        events: &mut Vec<LinkEvent<M>>,
    ) {
        let Some(Handshake::Exchanged(exchange)) = self.links.get(link).map(|l| &l.handshake)
        else {
            return;
        };
        let told: String = why.chars().take(MAX_REASON).collect();
        let proof = exchange.refusal_proof(&self.key, &told);
        let refusal: PeerMessage<M> = PeerMessage::Refused { why: told, proof };
        wire::encode(&refusal, &mut self.links[link].output);
        let _ = self.write(registry, link);
        self.close(registry, link, why, events);
    }

    /// Sends each peer, on its dialed link, the frame `owed` gives for it,
    /// unless the link still holds `unsent_limit` unsent: the engine keeps
    /// what it has for the peer (and coalesces it) until the link drains,
    /// so a slow peer's link holds at most that plus one frame. Called once
    /// per loop iteration, so everything since the last call is coalesced
    /// into that frame.
    pub fn flush(
        &mut self,
        registry: &Registry,
        owed: &mut dyn FnMut(NodeId) -> Option<Frame<M>>,
        events: &mut Vec<LinkEvent<M>>,
    ) {
        let ready: Vec<(NodeId, usize)> = self
            .nodes
            .iter()
            .filter_map(|(&id, p)| p.dialed.map(|key| (id, key)))
            .filter(|&(_, key)| self.links[key].is_welcomed())
            .collect();
        for (id, key) in ready {
            let link = &mut self.links[key];
            if link.output.len() - link.written < self.unsent_limit {
                if let Some(frame) = owed(id) {
                    let before = link.output.len();
                    link.send(&PeerMessage::Frame(frame));
                    self.frames_sent += 1;
                    self.frame_bytes_sent += (link.output.len() - before) as u64;
                }
            }
            if let Err(why) = self.write(registry, key) {
                self.close(registry, key, &why, events);
            }
        }
    }

    fn write(&mut self, registry: &Registry, key: usize) -> Result<(), String> {
        let link = &mut self.links[key];
        if !link.connected {
            return Ok(());
        }
        // TLS records (a handshake's, or what a full socket held back) first.
        link.stream.flush().map_err(|e| e.to_string())?;
        while link.written < link.output.len() {
            match link.stream.write(&link.output[link.written..]) {
                Ok(0) => return Err("peer link closed".into()),
                Ok(n) => link.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if link.written == link.output.len() {
            link.output.clear();
            link.written = 0;
        } else if link.output.len() - link.written > MAX_UNSENT {
            return Err("peer is not reading".into());
        }
        let wants_write = link.written < link.output.len() || link.stream.wants_write();
        if wants_write != link.wants_write {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry
                .reregister(&mut link.stream, Token(LINK_BASE + key), interest)
                .map_err(|e| e.to_string())?;
            link.wants_write = wants_write;
        }
        Ok(())
    }

    fn close(
        &mut self,
        registry: &Registry,
        key: usize,
        why: &str,
        events: &mut Vec<LinkEvent<M>>,
    ) {
        let Some(mut link) = self.links.try_remove(key) else {
            return;
        };
        let _ = registry.deregister(&mut link.stream);
        match link.role {
            Role::Dialed(id) => {
                events.push(LinkEvent::Lost(id));
                if let Some(peer) = self.nodes.get_mut(&id) {
                    peer.dialed = None;
                    peer.retry_at = Instant::now() + peer.backoff;
                    peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
                }
                log::debug!("node {}: link to node {id} closed: {why}", self.me);
            }
            Role::Accepted(Some(id)) => {
                if let Some(peer) = self.nodes.get_mut(&id) {
                    if peer.accepted == Some(key) {
                        peer.accepted = None;
                    }
                }
                log::debug!("node {}: link from node {id} closed: {why}", self.me);
            }
            Role::Accepted(None) => self.log_refusal(link.from, why),
        }
    }

    /// Logs a refused link, at most once a minute per remote address and
    /// reason.
    fn log_refusal(&mut self, from: Option<SocketAddr>, why: &str) {
        self.hellos_refused += 1;
        let now = Instant::now();
        let why: String = why.chars().take(MAX_REASON).collect();
        if let Some(ip) = from.map(|a| a.ip()) {
            // Numbers a stranger chose (a declared length) do not make a
            // reason new.
            let kind = why.chars().filter(|c| !c.is_ascii_digit()).collect();
            let seen = (ip, kind);
            let last = self.refusals_logged.get(&seen);
            if last.is_some_and(|&at| now - at < REFUSAL_LOG_EVERY) {
                return;
            }
            if self.refusals_logged.len() >= REFUSAL_LOG_ADDRESSES {
                self.refusals_logged
                    .retain(|_, &mut at| now - at < REFUSAL_LOG_EVERY);
            }
            if self.refusals_logged.len() >= REFUSAL_LOG_ADDRESSES {
                return; // as many logged this minute as are remembered: counted only
            }
            self.refusals_logged.insert(seen, now);
        }
        let from = from.map_or("?".to_string(), |a| a.to_string());
        log::warn!(
            "node {}: peer link from {from} refused: {why} (the same from that address is \
             not logged again for a minute)",
            self.me
        );
    }

    /// Every heartbeat: redial lost links, drop strangers that said nothing.
    pub fn tick(&mut self, registry: &Registry, events: &mut Vec<LinkEvent<M>>) {
        let now = Instant::now();
        let dial: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, p)| p.dialed.is_none() && now >= p.retry_at)
            .map(|(&id, _)| id)
            .collect();
        for id in dial {
            self.dial(registry, id, now);
        }
        let late = |l: &Link| now - l.opened > self.timeout;
        let mute: Vec<(usize, &str)> = (self.links.iter())
            .filter_map(|(key, l)| match &l.role {
                Role::Accepted(None) if late(l) => Some((key, "no hello in the handshake time")),
                // Half-open, or a listener that is no peer: redial.
                Role::Dialed(_) if !l.is_welcomed() && late(l) => {
                    Some((key, "no welcome in the handshake time"))
                }
                _ => None,
            })
            .collect();
        for (key, why) in mute {
            self.close(registry, key, why, events);
        }
    }

    fn dial(&mut self, registry: &Registry, id: NodeId, now: Instant) {
        let peer = self.nodes.get_mut(&id).expect("dialing a known peer");
        let connected = TcpStream::connect(peer.addr).and_then(|socket| {
            let _ = socket.set_nodelay(true);
            match &self.tls {
                Some(tls) => Stream::dialed(socket, &peer.host, &tls.dialer),
                None => Ok(Stream::Plain(socket)),
            }
        });
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                log::debug!(
                    "node {}: cannot dial node {id} at {}: {e}",
                    self.me,
                    peer.addr
                );
                peer.retry_at = now + peer.backoff;
                peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
                return;
            }
        };
        let entry = self.links.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry.register(&mut stream, Token(LINK_BASE + key), interest) {
            log::warn!("node {}: cannot register link to node {id}: {e}", self.me);
            return;
        }
        let mut link = Link::new(stream, Role::Dialed(id), false);
        link.wants_write = true;
        entry.insert(link);
        peer.dialed = Some(key);
    }

    /// Tells every peer this node is leaving (best effort, without waiting).
    pub fn leave(&mut self, registry: &Registry) {
        let keys: Vec<usize> = (self.nodes.values())
            .filter_map(|p| p.dialed)
            .filter(|&key| self.links[key].is_welcomed())
            .collect();
        for key in keys {
            self.links[key].send(&PeerMessage::<M>::Leave);
            let _ = self.write(registry, key);
        }
    }
}

impl Link {
    fn new(stream: Stream, role: Role, connected: bool) -> Link {
        Link {
            stream,
            role,
            from: None,
            opened: Instant::now(),
            connected,
            handshake: Handshake::AwaitingChallenge,
            session: None,
            input: Vec::new(),
            filled: 0,
            output: Vec::new(),
            written: 0,
            wants_write: false,
        }
    }

    /// An accepted link that has not said hello yet.
    fn is_stranger(&self) -> bool {
        matches!(self.role, Role::Accepted(None))
    }

    /// A dialed link whose peer proved the secret: frames go on it.
    fn is_welcomed(&self) -> bool {
        matches!(self.handshake, Handshake::Welcomed)
    }

    /// Queues a message after this node's welcome, sealed.
    fn send<M: Message>(&mut self, message: &PeerMessage<M>) {
        let start = self.output.len();
        wire::encode(message, &mut self.output);
        self.session
            .as_mut()
            .expect("a link sends only once its hello went")
            .seal(&mut self.output, start);
    }

    /// The largest message this link may carry: a stranger says at most a
    /// hello, and a peer this node dialed answers with at most a challenge,
    /// a welcome or a refusal; only a peer's accepted link carries frames.
    fn message_limit(&self) -> usize {
        match self.role {
            Role::Accepted(Some(_)) => wire::MAX_MESSAGE,
            _ => wire::MAX_HELLO,
        }
    }

    /// Reads until the socket would block and decodes every whole message,
    /// opening sealed ones; also says whether the peer closed the link
    /// after them. A link that has not said hello yet is read only up to
    /// its first message, and refused as soon as that declares more than a
    /// hello needs, so a stranger cannot make the node buffer more than
    /// that; what follows the hello is opened and decoded only once the
    /// link is admitted.
    /// The messages read, each with its length on the wire, and whether
    /// the peer closed the link.
    fn read_messages<M: Message>(&mut self) -> Result<(Vec<ReadMessage<M>>, bool), String> {
        let stranger = self.is_stranger();
        let limit = self.message_limit();
        let mut closed = false;
        while !closed {
            if self.input.len() - self.filled < READ_CHUNK {
                self.input.resize(self.filled + READ_CHUNK, 0);
            }
            match self.stream.read(&mut self.input[self.filled..]) {
                Ok(0) => closed = true,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
            let input = &self.input[..self.filled];
            if stranger
                && wire::next_message(input, limit)
                    .map_err(|e| e.to_string())?
                    .is_some()
            {
                break;
            }
        }
        let mut messages = Vec::new();
        let mut at = 0;
        while let Some(length) =
            wire::next_message(&self.input[at..self.filled], limit).map_err(|e| e.to_string())?
        {
            let message = &self.input[at..at + length];
            // Only a peer's accepted link carries sealed messages: a dialed
            // link's session seals what this node sends.
            let body = match (&self.role, self.session.as_mut()) {
                (Role::Accepted(Some(_)), Some(session)) => session.open(message)?,
                _ => &message[4..],
            };
            let decoded = wire::decode_body(body).map_err(|e| e.to_string())?;
            messages.push((decoded, length));
            at += length;
            if stranger {
                break; // what follows a hello is read once the hello is taken
            }
        }
        if at > 0 {
            self.input.copy_within(at..self.filled, 0);
            self.filled -= at;
        }
        // A buffer grown for a big frame goes once it is empty.
        if self.filled == 0 && self.input.len() > 4 * READ_CHUNK {
            self.input = vec![0; READ_CHUNK];
        }
        Ok((messages, closed))
    }
}
