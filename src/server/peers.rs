//! Peer links: the sockets between nodes, on the reactor thread.
//!
//! ```text
//!  this node ── dialed link (hello, then frames) ──────────► peer's listener
//!  this node ◄── accepted link (its hello, then its frames) ── peer dials us
//! ```
//!
//! Each node sends only on the link it dialed (to the `peer` address its own
//! config names, so a proxy or NAT may sit between nodes) and receives only
//! on links it accepted, so each direction is one TCP stream: FIFO, as the
//! engine needs. A link is tied to a node by the node id in its hello, whose
//! proof of the cluster secret is checked, never by its source address.
//! Until then a link is a stranger's: it is read only up to a hello-sized
//! first message and closed if no hello comes within `peer_timeout`.
//! Dialed links reconnect with backoff; a peer is up while it has been heard
//! from within `peer_timeout`. A peer that comes back under a new
//! incarnation has lost its state: in eventual mode anti-entropy refills it;
//! in the strong modes it is refused (it cannot rejoin without view changes)
//! and told so, and it then refuses clients (it is "fenced").

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::cluster::{handshake, wire, Effect, NodeId, PeerMessage, Replicator};

pub const PEER_LISTENER: Token = Token(usize::MAX - 4);
/// Link tokens are `LINK_BASE + slab key`, far above client tokens.
const LINK_BASE: usize = 1 << 40;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 64 * 1024;
/// A peer that leaves this much unread is dropped; the link is redialed and
/// what it had not acknowledged is resent.
const MAX_UNSENT: usize = 256 << 20;

/// Whether `token` belongs to the peer side.
pub fn owns(token: Token) -> bool {
    token == PEER_LISTENER || (LINK_BASE..LINK_BASE + (1 << 32)).contains(&token.0)
}

enum Role {
    Dialed(NodeId),
    /// Its node is known once its hello has been checked.
    Accepted(Option<NodeId>),
}

struct Link {
    stream: TcpStream,
    role: Role,
    /// When the link was accepted or dialed: a stranger gets `peer_timeout` to say hello.
    opened: Instant,
    connected: bool,
    /// Bytes read, `input[..filled]`; the rest is room, zeroed once, so a
    /// read costs no memset.
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    written: usize,
    wants_write: bool,
}

/// What this node knows of one peer.
pub struct PeerState {
    pub id: NodeId,
    /// The peer's client address, for `show`.
    pub client: String,
    addr: SocketAddr,
    pub last_heard: Option<Instant>,
    pub up: bool,
    /// What the peer last said about itself: queue depth and ops served.
    pub reported: (u64, u64),
    dialed: Option<usize>,
    accepted: Option<usize>,
    backoff: Duration,
    retry_at: Instant,
    incarnation: Option<u64>,
    /// Came back under a new incarnation: refused from then on.
    restarted: bool,
    left: bool,
}

impl PeerState {
    pub fn state(&self) -> &'static str {
        match (self.up, self.left, self.restarted) {
            (true, ..) => "up",
            (false, true, _) => "left",
            (false, _, true) => "restarted",
            _ => "down",
        }
    }
}

/// A peer this node will talk to.
pub struct PeerAddress {
    pub id: NodeId,
    pub client: String,
    pub peer: SocketAddr,
}

/// The peer side of one node.
pub struct Peers {
    me: NodeId,
    cluster: String,
    secret: String,
    incarnation: u64,
    timeout: Duration,
    listener: TcpListener,
    links: Slab<Link>,
    nodes: BTreeMap<NodeId, PeerState>,
    /// Why this node must not serve: a peer knew an earlier run of it.
    pub fenced: Option<String>,
    /// Frames sent and received since start, for `stats`.
    pub frames_sent: u64,
    pub frames_received: u64,
}

pub struct Identity<'a> {
    pub me: NodeId,
    pub cluster: &'a str,
    pub secret: &'a str,
    pub incarnation: u64,
}

impl Peers {
    pub fn bind(
        registry: &Registry,
        listen: SocketAddr,
        identity: Identity<'_>,
        others: Vec<PeerAddress>,
        timeout: Duration,
        now: Instant,
    ) -> io::Result<Peers> {
        let mut listener = TcpListener::bind(listen)?;
        registry.register(&mut listener, PEER_LISTENER, Interest::READABLE)?;
        let nodes = others
            .into_iter()
            .map(|p| {
                let state = PeerState {
                    id: p.id,
                    client: p.client,
                    addr: p.peer,
                    last_heard: None,
                    up: false,
                    reported: (0, 0),
                    dialed: None,
                    accepted: None,
                    backoff: BACKOFF_MIN,
                    retry_at: now,
                    incarnation: None,
                    restarted: false,
                    left: false,
                };
                (p.id, state)
            })
            .collect();
        Ok(Peers {
            me: identity.me,
            cluster: identity.cluster.to_string(),
            secret: identity.secret.to_string(),
            incarnation: identity.incarnation,
            timeout,
            listener,
            links: Slab::new(),
            nodes,
            fenced: None,
            frames_sent: 0,
            frames_received: 0,
        })
    }

    pub fn states(&self) -> impl Iterator<Item = &PeerState> {
        self.nodes.values()
    }

    pub fn up_count(&self) -> usize {
        self.nodes.values().filter(|p| p.up).count()
    }

    /// Handles readiness of the listener or of a link.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        event: &Event,
        engine: &mut Replicator,
        effects: &mut Vec<Effect>,
    ) {
        let now = Instant::now();
        if event.token() == PEER_LISTENER {
            return self.accept(registry);
        }
        let key = event.token().0 - LINK_BASE;
        if !self.links.contains(key) {
            return; // a spurious event for a link already closed
        }
        if let Err(why) = self.service(registry, key, engine, effects, now) {
            self.close(registry, key, engine, now, &why);
        }
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.links.vacant_entry();
                    let token = Token(LINK_BASE + entry.key());
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        log::warn!("cannot register peer link from {addr}: {e}");
                        continue;
                    }
                    entry.insert(Link::new(stream, Role::Accepted(None), true));
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

    fn service(
        &mut self,
        registry: &Registry,
        key: usize,
        engine: &mut Replicator,
        effects: &mut Vec<Effect>,
        now: Instant,
    ) -> Result<(), String> {
        let link = &mut self.links[key];
        if !link.connected {
            if let Some(e) = link.stream.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect failed: {e}"));
            }
            match link.stream.peer_addr() {
                Ok(_) => link.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(format!("connect failed: {e}")),
            }
            if let Role::Dialed(id) = link.role {
                log::info!("node {}: link to node {id} open", self.me);
                engine.link_opened(id);
                if let Some(peer) = self.nodes.get_mut(&id) {
                    peer.backoff = BACKOFF_MIN;
                }
            }
        }
        loop {
            let link = &mut self.links[key];
            let stranger = matches!(link.role, Role::Accepted(None));
            let (messages, closed) = link.read_messages()?;
            for message in messages {
                self.on_message(registry, key, message, engine, effects, now)?;
            }
            if closed {
                return Err("closed by peer".into());
            }
            // A stranger's link was read only up to its hello; now that the
            // hello is taken, read on (readiness will not be reported again).
            let greeted = !matches!(self.links[key].role, Role::Accepted(None));
            if !(stranger && greeted) {
                break;
            }
        }
        self.write(registry, key)
    }

    fn on_message(
        &mut self,
        registry: &Registry,
        key: usize,
        message: PeerMessage,
        engine: &mut Replicator,
        effects: &mut Vec<Effect>,
        now: Instant,
    ) -> Result<(), String> {
        let role = match &self.links[key].role {
            Role::Dialed(id) => Role::Dialed(*id),
            Role::Accepted(id) => Role::Accepted(*id),
        };
        match (role, message) {
            (Role::Accepted(None), PeerMessage::Hello(hello)) => {
                self.on_hello(registry, key, hello, engine, now)
            }
            (Role::Accepted(Some(id)), PeerMessage::Frame(frame)) => {
                self.frames_received += 1;
                self.heard(id, engine, now);
                if let Some(peer) = self.nodes.get_mut(&id) {
                    peer.reported = (frame.pending, frame.ops);
                }
                engine.on_frame(id, frame, effects);
                Ok(())
            }
            (Role::Accepted(Some(id)), PeerMessage::Leave) => {
                log::info!("node {}: node {id} is leaving", self.me);
                if let Some(peer) = self.nodes.get_mut(&id) {
                    peer.left = true;
                    peer.up = false;
                }
                engine.set_up(id, false);
                Ok(())
            }
            (Role::Dialed(id), PeerMessage::Refused(why)) => {
                let fence = format!("node {id} refused this node: {why}");
                log::error!(
                    "node {}: {fence}; restart the whole cluster to rejoin",
                    self.me
                );
                self.fenced = Some(fence);
                Err(why)
            }
            (_, message) => Err(format!("unexpected {}", kind(&message))),
        }
    }

    fn on_hello(
        &mut self,
        registry: &Registry,
        key: usize,
        hello: crate::cluster::Hello,
        engine: &mut Replicator,
        now: Instant,
    ) -> Result<(), String> {
        handshake::check(&hello, &self.secret, &self.cluster)?;
        let id = hello.node;
        let Some(peer) = self.nodes.get_mut(&id) else {
            return Err(format!("node {id} is not a member of this cluster"));
        };
        let new_run = peer
            .incarnation
            .is_some_and(|known| known != hello.incarnation);
        let taken = !peer.restarted && engine.peer_incarnation(id, hello.incarnation, new_run);
        if taken && new_run {
            log::info!("node {}: node {id} restarted; it syncs from empty", self.me);
        } else if !taken {
            peer.restarted = true;
            peer.up = false;
            engine.set_up(id, false);
            let why =
                "this cluster knew an earlier run of this node, and rejoining is not supported yet";
            log::error!(
                "node {}: refusing node {id}: it restarted and lost its state",
                self.me
            );
            let link = &mut self.links[key];
            wire::encode(&PeerMessage::Refused(why.into()), &mut link.output);
            let _ = self.write(registry, key);
            return Err("restarted peer refused".into());
        }
        peer.incarnation = Some(hello.incarnation);
        if let Some(old) = peer.accepted.replace(key) {
            if old != key && self.links.contains(old) {
                self.close(registry, old, engine, now, "replaced by a new link");
            }
        }
        self.links[key].role = Role::Accepted(Some(id));
        self.heard(id, engine, now);
        Ok(())
    }

    fn heard(&mut self, id: NodeId, engine: &mut Replicator, now: Instant) {
        let Some(peer) = self.nodes.get_mut(&id) else {
            return;
        };
        peer.last_heard = Some(now);
        if !peer.up && !peer.restarted && !peer.left {
            peer.up = true;
            engine.set_up(id, true);
            log::info!("node {}: node {id} is up", self.me);
        }
    }

    /// Sends each peer, on its dialed link, the one frame the engine owes it.
    /// Called once per loop iteration, so everything since the last call is
    /// coalesced into that frame.
    pub fn flush(&mut self, registry: &Registry, engine: &mut Replicator, load: (u64, u64)) {
        let ready: Vec<(NodeId, usize)> = self
            .nodes
            .values()
            .filter_map(|p| p.dialed.map(|key| (p.id, key)))
            .filter(|&(_, key)| self.links[key].connected)
            .collect();
        for (id, key) in ready {
            if let Some(mut frame) = engine.outgoing(id) {
                (frame.pending, frame.ops) = load;
                wire::encode(&PeerMessage::Frame(frame), &mut self.links[key].output);
                self.frames_sent += 1;
            }
            if let Err(why) = self.write(registry, key) {
                self.close(registry, key, engine, Instant::now(), &why);
            }
        }
    }

    fn write(&mut self, registry: &Registry, key: usize) -> Result<(), String> {
        let link = &mut self.links[key];
        if !link.connected {
            return Ok(());
        }
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
        let wants_write = link.written < link.output.len();
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
        engine: &mut Replicator,
        now: Instant,
        why: &str,
    ) {
        let Some(mut link) = self.links.try_remove(key) else {
            return;
        };
        let _ = registry.deregister(&mut link.stream);
        match link.role {
            Role::Dialed(id) => {
                engine.link_lost(id);
                if let Some(peer) = self.nodes.get_mut(&id) {
                    peer.dialed = None;
                    peer.retry_at = now + peer.backoff;
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
            Role::Accepted(None) => log::warn!("node {}: peer link refused: {why}", self.me),
        }
    }

    /// Every heartbeat: owe every peer a frame, notice silent peers, redial.
    pub fn tick(
        &mut self,
        registry: &Registry,
        engine: &mut Replicator,
        effects: &mut Vec<Effect>,
    ) {
        let now = Instant::now();
        engine.heartbeat(effects);
        let mut dial = Vec::new();
        for peer in self.nodes.values_mut() {
            let silent = peer
                .last_heard
                .is_none_or(|t| now.duration_since(t) > self.timeout);
            if peer.up && silent {
                peer.up = false;
                engine.set_up(peer.id, false);
                log::warn!(
                    "node {}: node {} is down (silent for over {:?})",
                    self.me,
                    peer.id,
                    self.timeout
                );
            }
            if peer.dialed.is_none() && now >= peer.retry_at {
                dial.push(peer.id);
            }
        }
        for id in dial {
            self.dial(registry, id, now);
        }
        let mute: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| {
                matches!(l.role, Role::Accepted(None)) && now - l.opened > self.timeout
            })
            .map(|(key, _)| key)
            .collect();
        for key in mute {
            self.close(registry, key, engine, now, "no hello within peer_timeout");
        }
    }

    fn dial(&mut self, registry: &Registry, id: NodeId, now: Instant) {
        let hello = handshake::hello(&self.secret, &self.cluster, self.me, self.incarnation);
        let peer = self.nodes.get_mut(&id).expect("dialing a known peer");
        let mut stream = match TcpStream::connect(peer.addr) {
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
        let _ = stream.set_nodelay(true);
        let entry = self.links.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry.register(&mut stream, Token(LINK_BASE + key), interest) {
            log::warn!("node {}: cannot register link to node {id}: {e}", self.me);
            return;
        }
        let mut link = Link::new(stream, Role::Dialed(id), false);
        link.wants_write = true;
        wire::encode(&PeerMessage::Hello(hello), &mut link.output);
        entry.insert(link);
        peer.dialed = Some(key);
    }

    /// Tells every peer this node is leaving (best effort, without waiting).
    pub fn leave(&mut self, registry: &Registry) {
        let keys: Vec<usize> = self.nodes.values().filter_map(|p| p.dialed).collect();
        for key in keys {
            wire::encode(&PeerMessage::Leave, &mut self.links[key].output);
            let _ = self.write(registry, key);
        }
    }
}

impl Link {
    fn new(stream: TcpStream, role: Role, connected: bool) -> Link {
        Link {
            stream,
            role,
            opened: Instant::now(),
            connected,
            input: Vec::new(),
            filled: 0,
            output: Vec::new(),
            written: 0,
            wants_write: false,
        }
    }

    /// Reads until the socket would block and decodes every whole message;
    /// also says whether the peer closed the link after them. A link that
    /// has not said hello yet is read only up to its first message, and
    /// refused as soon as that declares more than a hello needs, so a
    /// stranger cannot make the node buffer more than that.
    fn read_messages(&mut self) -> Result<(Vec<PeerMessage>, bool), String> {
        let stranger = matches!(self.role, Role::Accepted(None));
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
            if stranger
                && wire::decode_within(&self.input[..self.filled], wire::MAX_HELLO)
                    .map_err(|e| e.to_string())?
                    .is_some()
            {
                break;
            }
        }
        let mut messages = Vec::new();
        let mut at = 0;
        while let Some((message, used)) =
            wire::decode(&self.input[at..self.filled]).map_err(|e| e.to_string())?
        {
            messages.push(message);
            at += used;
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

fn kind(message: &PeerMessage) -> &'static str {
    match message {
        PeerMessage::Hello(_) => "hello",
        PeerMessage::Frame(_) => "frame",
        PeerMessage::Leave => "leave",
        PeerMessage::Refused(_) => "refusal",
    }
}
