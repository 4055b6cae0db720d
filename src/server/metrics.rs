//! The native Prometheus endpoint (`metrics_addr`): a tiny HTTP/1.1
//! listener served by the node's own event loop, and the encoding of the
//! cluster's metrics in Prometheus's text format (with `prometheus-client`).
//!
//! ```text
//!  accept ─► Scrape ─► read the head (at most MAX_HEAD bytes) ─► GET /metrics ─► Snapshot ─► text
//!                                                             └► 404 / 405 / 400
//!           response ─► write until WouldBlock, on again when writable ─► close
//!  timer: a scrape not done SCRAPE_TIMEOUT after it was accepted is closed
//! ```
//!
//! One request per connection, answered with `Connection: close`. Nothing
//! here blocks the loop: a client that sends half a head, or nothing, or
//! reads slowly, holds only its own connection until its deadline, and at
//! most [`MAX_SCRAPES`] connections are open at once (one more is answered
//! `503` and closed). The metrics are read from the reactor's state at each
//! scrape ([`Snapshot`]); only the latency histograms are kept between
//! scrapes, by [`super::latency`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry as MetricRegistry;
use slab::Slab;

use super::latency::{CommandKind, Latencies, BOUNDS_NS};
use super::Server;
use crate::cluster::engine::{SyncStats, Transfer};
use crate::cluster::{Engine, NodeId};
use crate::durability::{Durable, LogNumbers};
use crate::protocol::reply;

pub const METRICS_LISTENER: Token = Token(usize::MAX - 5);
/// Scrape connections' tokens: `SCRAPE_BASE + slab key`.
const SCRAPE_BASE: usize = 1 << 44;
/// Scrape connections open at once.
pub const MAX_SCRAPES: usize = 64;
/// The longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a scrape connection may take from accept to its last byte.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Whether `token` belongs to the metrics endpoint.
pub fn owns(token: Token) -> bool {
    token == METRICS_LISTENER || (SCRAPE_BASE..SCRAPE_BASE + (1 << 32)).contains(&token.0)
}

/// One HTTP connection: its request head as it arrives, then its response.
struct Scrape {
    stream: TcpStream,
    opened: Instant,
    head: Vec<u8>,
    /// The response, once the head is in; `written` bytes of it are sent.
    response: Option<Vec<u8>>,
    written: usize,
}

/// What a scrape connection should do next.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Wait for more of the head, or for the socket to take more.
    Wait,
    /// Everything was sent, or the client went away: close.
    Done,
}

/// The listener and its open connections.
pub struct MetricsEndpoint {
    listener: TcpListener,
    scrapes: Slab<Scrape>,
}

impl MetricsEndpoint {
    pub fn bind(registry: &Registry, addr: SocketAddr) -> io::Result<MetricsEndpoint> {
        let mut listener = TcpListener::bind(addr)?;
        registry.register(&mut listener, METRICS_LISTENER, Interest::READABLE)?;
        Ok(MetricsEndpoint {
            listener,
            scrapes: Slab::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts every waiting connection; returns whether one was taken (its
    /// deadline needs a timer).
    fn accept(&mut self, registry: &Registry, now: Instant) -> bool {
        let mut taken = false;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.scrapes.len() >= MAX_SCRAPES => {
                    // A fresh socket's send buffer is empty: this cannot block.
                    let _ = (&stream).write(BUSY);
                }
                Ok((mut stream, addr)) => {
                    let entry = self.scrapes.vacant_entry();
                    let token = Token(SCRAPE_BASE + entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = registry.register(&mut stream, token, interest) {
                        log::warn!("cannot register metrics client {addr}: {e}");
                        continue;
                    }
                    entry.insert(Scrape {
                        stream,
                        opened: now,
                        head: Vec::new(),
                        response: None,
                        written: 0,
                    });
                    taken = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return taken,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("metrics accept failed: {e}");
                    return taken;
                }
            }
        }
    }

    /// Reads, answers and writes for one connection until it would block;
    /// `metrics` renders the body of a `GET /metrics`.
    fn service(&mut self, registry: &Registry, key: usize, metrics: impl FnOnce() -> String) {
        let Some(scrape) = self.scrapes.get_mut(key) else {
            return;
        };
        match scrape.advance(metrics) {
            Ok(Progress::Wait) => {}
            Ok(Progress::Done) => self.close(registry, key),
            Err(e) => {
                log::debug!("metrics connection: {e}");
                self.close(registry, key);
            }
        }
    }

    /// Closes every connection accepted `SCRAPE_TIMEOUT` or longer ago.
    fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self
            .scrapes
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.opened) >= SCRAPE_TIMEOUT)
            .map(|(key, _)| key)
            .collect();
        for key in late {
            log::debug!("metrics connection {key}: not done in {SCRAPE_TIMEOUT:?}, closed");
            self.close(registry, key);
        }
    }

    fn close(&mut self, registry: &Registry, key: usize) {
        if let Some(mut scrape) = self.scrapes.try_remove(key) {
            let _ = registry.deregister(&mut scrape.stream);
        }
    }
}

impl Scrape {
    fn advance(&mut self, metrics: impl FnOnce() -> String) -> io::Result<Progress> {
        if self.response.is_none() {
            let closed = self.read_head()?;
            let Some(end) = head_end(&self.head) else {
                // A client that closed before its head ended is owed nothing.
                return Ok(if closed {
                    Progress::Done
                } else {
                    Progress::Wait
                });
            };
            self.response = Some(respond(&self.head[..end], metrics));
        }
        self.write_response()
    }

    /// Reads what has come; `true` when the client has closed its side
    /// (it may still read the response).
    fn read_head(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.head.extend_from_slice(&buf[..n]);
                    if self.head.len() > MAX_HEAD && head_end(&self.head).is_none() {
                        return Err(io::Error::other("request head over 8 KiB"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn write_response(&mut self) -> io::Result<Progress> {
        let Some(response) = &self.response else {
            return Ok(Progress::Wait);
        };
        while self.written < response.len() {
            match self.stream.write(&response[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Wait),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Progress::Done)
    }
}

/// Where the head ends (after its blank line), if it has.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let limit = bytes.len().min(MAX_HEAD);
    (0..limit).find_map(|i| match &bytes[i..] {
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        [b'\n', b'\n', ..] => Some(i + 2),
        _ => None,
    })
}

/// The response to a request head.
fn respond(head: &[u8], metrics: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let well_formed = version.is_some_and(|v| v.starts_with("HTTP/1.")) && parts.next().is_none();
    let path = target.map(|t| t.split('?').next().unwrap_or(t));
    match (well_formed, method, path) {
        (false, _, _) => response("400 Bad Request", "text/plain", "bad request\n", ""),
        (true, Some("GET"), Some("/metrics")) => {
            response("200 OK", prometheus_text::CONTENT_TYPE, &metrics(), "")
        }
        (true, Some("GET"), _) => response(
            "404 Not Found",
            "text/plain",
            "not found: metrics are at /metrics\n",
            "",
        ),
        (true, _, _) => response(
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n",
            "Allow: GET\r\n",
        ),
    }
}

fn response(status: &str, content_type: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<E: Engine> Server<E> {
    /// Dispatches a readiness event of the metrics endpoint.
    pub(super) fn on_metrics_event(&mut self, event: &Event) {
        // Taken out while serving, which reads all of `self`.
        let Some(mut endpoint) = self.metrics.take() else {
            return;
        };
        let registry = self.poll.registry();
        if event.token() == METRICS_LISTENER {
            let now = Instant::now();
            if endpoint.accept(registry, now) {
                self.timers
                    .schedule(now + SCRAPE_TIMEOUT, super::Timer::ScrapeDeadline);
            }
        } else {
            let key = event.token().0 - SCRAPE_BASE;
            endpoint.service(registry, key, || encode(self.metrics_snapshot()));
        }
        self.metrics = Some(endpoint);
    }

    /// Closes the scrape connections past their deadline.
    pub(super) fn expire_scrapes(&mut self, now: Instant) {
        if let Some(endpoint) = &mut self.metrics {
            endpoint.expire(self.poll.registry(), now);
        }
    }

    /// The node's metrics now.
    fn metrics_snapshot(&self) -> Snapshot {
        let status = self.node.engine().status();
        let membership = self.node.membership();
        let now = self.millis();
        let heartbeat = self.settings.cluster.heartbeat.as_secs_f64();
        let peers = membership
            .members()
            .map(|(id, member)| {
                let engine = self.node.engine().peer_status(id).unwrap_or_default();
                PeerMetrics {
                    id,
                    up: member.up,
                    last_heard_seconds: member
                        .last_heard
                        .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                    sync_lag_seconds: engine.sync_lag.map(|beats| beats as f64 * heartbeat),
                    causal_waiting: engine.waiting_total().map(|n| n as f64),
                    causal_waiting_runs: engine.waiting.unwrap_or_default(),
                }
            })
            .collect();
        Snapshot {
            node: self.settings.node.id,
            mode: self.settings.cluster.consistency.name(),
            backend: self.settings.node.kv_type.name(),
            uptime_seconds: self.started.elapsed().as_secs(),
            view_epoch: status.epoch,
            view_members: status.members as u64,
            members_up: 1 + membership.up_count() as u64,
            role: status.role,
            peers,
            pending: status.pending as u64,
            delivery_lag_seconds: status.delivery_lag.map(|beats| beats as f64 * heartbeat),
            delivered: status.delivered,
            ops: self.counters.ops,
            views_installed: status.views_installed,
            refused_no_quorum: status.refused_no_quorum,
            snapshots_sent: status.snapshots_sent,
            snapshots_received: status.snapshots_received,
            missed_handed: status.missed_handed,
            missed_writes_handed: status.missed_writes_handed,
            missed_received: status.missed_received,
            writes_during_snapshots: status.writes_during_snapshots,
            catch_up: status.receiving.unwrap_or_default(),
            sync: status.sync,
            frames_sent: self.peers.as_ref().map_or(0, |p| p.frames_sent),
            frames_received: self.peers.as_ref().map_or(0, |p| p.frames_received),
            frame_bytes_sent: self.peers.as_ref().map_or(0, |p| p.frame_bytes_sent),
            frame_bytes_received: self.peers.as_ref().map_or(0, |p| p.frame_bytes_received),
            timeouts: self.counters.timeouts,
            connections: self.counters.curr_connections,
            log: self.durable.as_ref().map(Durable::numbers),
            replies_held: self.held.len() as u64,
            latencies: self.latencies.clone(),
        }
    }
}

/// What one peer looks like from this node.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerMetrics {
    pub id: NodeId,
    pub up: bool,
    /// Seconds since it was last heard from; `None` if it never was.
    pub last_heard_seconds: Option<f64>,
    /// Eventual mode: seconds since the last completed sync from it.
    pub sync_lag_seconds: Option<f64>,
    /// Causal mode: its writes waiting here for their causes.
    pub causal_waiting: Option<f64>,
    /// Causal mode: the same per run of it with writes waiting, by run.
    pub causal_waiting_runs: Vec<(u64, usize)>,
}

/// Every metric the endpoint serves, read from the reactor at one scrape.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node: NodeId,
    pub mode: &'static str,
    pub backend: &'static str,
    pub uptime_seconds: u64,
    pub view_epoch: u64,
    pub view_members: u64,
    pub members_up: u64,
    pub role: &'static str,
    pub peers: Vec<PeerMetrics>,
    pub pending: u64,
    /// Strong modes: seconds the oldest operation waiting for delivery has
    /// waited, in whole heartbeats.
    pub delivery_lag_seconds: Option<f64>,
    pub delivered: u64,
    pub ops: u64,
    pub views_installed: u64,
    pub refused_no_quorum: u64,
    pub snapshots_sent: u64,
    pub snapshots_received: u64,
    pub missed_handed: u64,
    pub missed_writes_handed: u64,
    pub missed_received: u64,
    pub writes_during_snapshots: u64,
    pub catch_up: Transfer,
    pub sync: Option<SyncStats>,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frame_bytes_sent: u64,
    pub frame_bytes_received: u64,
    pub timeouts: u64,
    pub connections: u64,
    /// With a data directory: its log, and the replies waiting for it.
    pub log: Option<LogNumbers>,
    pub replies_held: u64,
    pub latencies: Latencies,
}

/// The roles a node may have in its view (`mckv_role` has a series for each).
const ROLES: [&str; 4] = ["member", "joining", "catching-up", "no-quorum"];

/// `snapshot` in Prometheus's text format (version 0.0.4).
pub fn encode(snapshot: Snapshot) -> String {
    let mut registry = MetricRegistry::with_prefix("mckv");
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut text, &registry);
    text
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: u64| -> std::fmt::Result {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        gauge(
            "view_epoch",
            "Epoch of the view this node is in.",
            self.view_epoch,
        )?;
        gauge(
            "view_members",
            "Members of the view this node is in.",
            self.view_members,
        )?;
        gauge(
            "members_up",
            "Nodes this node holds up, itself included.",
            self.members_up,
        )?;
        gauge(
            "pending",
            "Operations waiting here to be delivered (the delivery queue).",
            self.pending,
        )?;
        gauge(
            "catch_up_received_bytes",
            "Bytes of the snapshot this node is being handed, so far (0 when none).",
            self.catch_up.done,
        )?;
        gauge(
            "catch_up_expected_bytes",
            "About how many bytes that snapshot carries in all (0 when none).",
            self.catch_up.total,
        )?;
        gauge(
            "current_connections",
            "Client connections open.",
            self.connections,
        )?;
        if let (Some(sync), "causal") = (&self.sync, self.mode) {
            gauge(
                "causal_waiting",
                "Causal mode: peers' writes waiting here for their causes.",
                sync.waiting,
            )?;
        }
        gauge(
            "uptime_seconds",
            "Seconds since the node started.",
            self.uptime_seconds,
        )?;
        if let Some(log) = &self.log {
            gauge(
                "log_bytes",
                "Bytes in the data directory's current log.",
                log.bytes,
            )?;
            gauge(
                "log_failed",
                "1 while the disk refuses the log (full, unwritable) or after a failed fsync.",
                u64::from(log.failed),
            )?;
            gauge(
                "log_stalled",
                "1 while the disk has taken none of what waits for it for a second or more.",
                u64::from(log.stalled),
            )?;
            gauge(
                "replies_held",
                "Replies waiting for the log now.",
                self.replies_held,
            )?;
            gauge(
                "snapshot_bytes",
                "Bytes of the last whole snapshot of the data directory.",
                log.snapshot_bytes,
            )?;
        }

        if let Some(lag) = self.delivery_lag_seconds {
            let metric = ConstGauge::new(lag);
            metric.encode(encoder.encode_descriptor(
                "delivery_lag_seconds",
                "Strong modes: seconds the oldest operation waiting here for delivery has waited (whole heartbeats).",
                None,
                metric.metric_type(),
            )?)?;
        }

        let mut counter = |name: &str, help: &str, value: u64| -> std::fmt::Result {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        counter(
            "ops",
            "Requests answered, of every kind (reset by `stats reset`).",
            self.ops,
        )?;
        counter(
            "delivered",
            "Operations delivered in order (strong modes).",
            self.delivered,
        )?;
        counter(
            "views_installed",
            "Views this node installed.",
            self.views_installed,
        )?;
        counter(
            "refused_no_quorum",
            "Requests refused because this node had no quorum.",
            self.refused_no_quorum,
        )?;
        counter(
            "snapshots_sent",
            "Snapshots of the state sent to members catching up.",
            self.snapshots_sent,
        )?;
        counter(
            "snapshots_received",
            "Snapshots of the state received while catching up.",
            self.snapshots_received,
        )?;
        counter(
            "missed_handed",
            "Members that were behind handed the writes they missed instead of a snapshot.",
            self.missed_handed,
        )?;
        counter(
            "missed_writes_handed",
            "Writes handed to members that were behind.",
            self.missed_writes_handed,
        )?;
        counter(
            "missed_received",
            "Times this node was handed the writes it missed instead of a snapshot.",
            self.missed_received,
        )?;
        counter(
            "writes_during_snapshots",
            "Writes this node applied while it handed a snapshot to a member.",
            self.writes_during_snapshots,
        )?;
        counter("frames_sent", "Frames sent to peers.", self.frames_sent)?;
        counter(
            "frames_received",
            "Frames received from peers.",
            self.frames_received,
        )?;
        counter(
            "frame_bytes_sent",
            "Bytes of the frames sent to peers, as on the wire.",
            self.frame_bytes_sent,
        )?;
        counter(
            "frame_bytes_received",
            "Bytes of the frames received from peers, as on the wire.",
            self.frame_bytes_received,
        )?;
        counter(
            "timeouts",
            "Requests answered with a timeout (reset by `stats reset`).",
            self.timeouts,
        )?;
        if let Some(log) = &self.log {
            counter("log_fsyncs", "Fsyncs of the log.", log.fsyncs)?;
            counter(
                "snapshots_written",
                "Snapshots of the data directory written, the start's own included.",
                log.snapshots_written,
            )?;
        }
        if let Some(sync) = self.sync {
            counter(
                "sync_rounds",
                "Anti-entropy rounds started (eventual and causal modes).",
                sync.rounds,
            )?;
            counter(
                "versions_written",
                "Versions this node's writes and evictions made (eventual and causal modes).",
                sync.versions_written,
            )?;
            counter(
                "sync_versions_sent",
                "Versions sent to peers, pushed or in sync answers (eventual and causal modes).",
                sync.versions_sent,
            )?;
            counter(
                "sync_versions_answered",
                "Versions sent to peers in sync answers (eventual and causal modes).",
                sync.versions_answered,
            )?;
            counter(
                "sync_versions_received",
                "Versions received from peers by anti-entropy (eventual and causal modes).",
                sync.versions_received,
            )?;
            counter(
                "pushes_dropped",
                "Pushes dropped because a peer's link was backed up; anti-entropy brings \
                 them (eventual and causal modes).",
                sync.pushes_dropped,
            )?;
        }

        let info = Info::new(vec![
            ("node", self.node.to_string()),
            ("mode", self.mode.to_string()),
            ("backend", self.backend.to_string()),
            ("version", reply::MCKV_VERSION.to_string()),
        ]);
        info.encode(encoder.encode_descriptor(
            "node",
            "This node: its id, consistency mode, store and mckv version.",
            None,
            info.metric_type(),
        )?)?;

        let mut roles = encoder.encode_descriptor(
            "role",
            "This node's part in its view: 1 for the role it has, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        let current = std::iter::once(self.role).filter(|r| !ROLES.contains(r));
        for role in ROLES.into_iter().chain(current) {
            let value = ConstGauge::new(u64::from(role == self.role));
            value.encode(roles.encode_family(&[("role", role)])?)?;
        }

        self.encode_peers(&mut encoder)?;
        self.encode_latencies(&mut encoder)
    }
}

impl Snapshot {
    fn encode_peers(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let peer_gauges = |encoder: &mut DescriptorEncoder,
                           name: &str,
                           help: &str,
                           value: &dyn Fn(&PeerMetrics) -> Option<f64>|
         -> std::fmt::Result {
            if self.peers.iter().all(|p| value(p).is_none()) {
                return Ok(());
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for peer in &self.peers {
                if let Some(v) = value(peer) {
                    let labels = [("peer", peer.id.to_string())];
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
            Ok(())
        };
        peer_gauges(
            encoder,
            "peer_up",
            "1 while this node holds the peer up (heard within peer_timeout_ms, welcomed), else 0.",
            &|p| Some(f64::from(u8::from(p.up))),
        )?;
        peer_gauges(
            encoder,
            "peer_last_heard_seconds",
            "Seconds since this node last heard from the peer (absent if it never did).",
            &|p| p.last_heard_seconds,
        )?;
        peer_gauges(
            encoder,
            "peer_sync_lag_seconds",
            "Eventual and causal modes: seconds since the last completed anti-entropy sync from the peer.",
            &|p| p.sync_lag_seconds,
        )?;
        peer_gauges(
            encoder,
            "peer_causal_waiting",
            "Causal mode: the peer's writes waiting here for their causes.",
            &|p| p.causal_waiting,
        )?;
        self.encode_origins(encoder)
    }

    /// Causal mode: per origin (a peer's run) with writes waiting here,
    /// how many. Absent when none waits: a run that is long dead leaves
    /// no series behind.
    fn encode_origins(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        if self.peers.iter().all(|p| p.causal_waiting_runs.is_empty()) {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "origin_causal_waiting",
            "Causal mode: a peer's writes waiting here for their causes, per run of the peer that wrote them.",
            None,
            MetricType::Gauge,
        )?;
        for peer in &self.peers {
            for (run, n) in &peer.causal_waiting_runs {
                let labels = [("peer", peer.id.to_string()), ("run", run.to_string())];
                ConstGauge::new(*n as f64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_latencies(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "request_duration_seconds",
            "Seconds from parsing a request to its reply taking its place on the connection.",
            None,
            MetricType::Histogram,
        )?;
        for kind in CommandKind::ALL {
            let histogram = self.latencies.of(kind);
            let mut buckets = [(0.0, 0); BOUNDS_NS.len() + 1];
            for (i, bucket) in buckets.iter_mut().enumerate() {
                let bound = BOUNDS_NS
                    .get(i)
                    .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
                *bucket = (bound, histogram.buckets[i]);
            }
            let labels = [("command", kind.label())];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_nanos as f64 / 1e9,
                    histogram.count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::latency::Asked;

    fn status_line(response: &[u8]) -> String {
        let text = String::from_utf8_lossy(response);
        text.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn a_head_ends_at_its_blank_line_with_or_without_carriage_returns() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let body = || "mckv_ops_total 1\n".to_string();
        let cases: [(&[u8], &str); 7] = [
            (b"GET /metrics HTTP/1.1\r\n", "HTTP/1.1 200 OK"),
            (b"GET /metrics?x=1 HTTP/1.0\r\n", "HTTP/1.1 200 OK"),
            (b"GET / HTTP/1.1\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (b"get k\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET /metrics\r\n", "HTTP/1.1 400 Bad Request"),
            (b"\xff\xfe\r\n", "HTTP/1.1 400 Bad Request"),
        ];
        for (head, expected) in cases {
            let response = respond(head, body);
            assert_eq!(status_line(&response), expected, "{head:?}");
            let text = String::from_utf8_lossy(&response).into_owned();
            assert!(text.contains("Connection: close\r\n"), "{text}");
        }
        let ok = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\n", body)).unwrap();
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(ok.ends_with("\r\n\r\nmckv_ops_total 1\n"), "{ok}");
        assert!(ok.contains("Content-Length: 17\r\n"), "{ok}");
        let post = String::from_utf8(respond(b"PUT /metrics HTTP/1.1\r\n", body)).unwrap();
        assert!(post.contains("Allow: GET\r\n"), "{post}");
    }

    #[test]
    fn a_snapshot_encodes_every_family_with_its_labels() {
        let mut latencies = Latencies::default();
        for kind in [CommandKind::Get, CommandKind::Get, CommandKind::Set] {
            latencies.observe(Asked {
                kind,
                at: Instant::now(),
            });
        }
        let snapshot = Snapshot {
            node: 0,
            mode: "linearizable",
            backend: "memory",
            view_epoch: 2,
            view_members: 3,
            members_up: 2,
            role: "member",
            peers: vec![
                PeerMetrics {
                    id: 1,
                    up: true,
                    last_heard_seconds: Some(0.05),
                    sync_lag_seconds: None,
                    causal_waiting: None,
                    causal_waiting_runs: Vec::new(),
                },
                PeerMetrics {
                    id: 2,
                    up: false,
                    last_heard_seconds: None,
                    sync_lag_seconds: None,
                    causal_waiting: None,
                    causal_waiting_runs: Vec::new(),
                },
            ],
            ops: 7,
            delivery_lag_seconds: Some(0.2),
            refused_no_quorum: 4,
            latencies,
            ..Snapshot::default()
        };
        let text = encode(snapshot);
        for line in [
            "# TYPE mckv_view_epoch gauge",
            "mckv_view_epoch 2",
            "mckv_view_members 3",
            "# TYPE mckv_delivery_lag_seconds gauge",
            "mckv_delivery_lag_seconds 0.2",
            "# TYPE mckv_ops_total counter",
            "mckv_ops_total 7",
            "mckv_refused_no_quorum_total 4",
            "mckv_role{role=\"member\"} 1",
            "mckv_role{role=\"no-quorum\"} 0",
            "mckv_peer_up{peer=\"1\"} 1.0",
            "mckv_peer_up{peer=\"2\"} 0.0",
            "mckv_peer_last_heard_seconds{peer=\"1\"} 0.05",
            "# TYPE mckv_request_duration_seconds histogram",
            "mckv_request_duration_seconds_count{command=\"get\"} 2",
            "mckv_request_duration_seconds_count{command=\"set\"} 1",
            "mckv_request_duration_seconds_bucket{command=\"get\",le=\"+Inf\"} 2",
            "mckv_request_duration_seconds_count{command=\"incr_decr\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let info = text.lines().find(|l| l.starts_with("mckv_node_info{"));
        assert!(
            info.is_some_and(|l| l.contains("node=\"0\"") && l.contains("mode=\"linearizable\"")),
            "{text}"
        );
        // Never heard from: no series; no sync in a strong mode: no family.
        assert!(!text.contains("mckv_peer_last_heard_seconds{peer=\"2\"}"));
        assert!(!text.contains("sync"), "{text}");
    }

    #[test]
    fn writes_waiting_are_a_series_per_run_of_a_peer_that_has_some() {
        let peer = |id, runs: Vec<(u64, usize)>| PeerMetrics {
            id,
            up: true,
            last_heard_seconds: Some(0.0),
            sync_lag_seconds: Some(0.0),
            causal_waiting: Some(runs.iter().map(|(_, n)| n).sum::<usize>() as f64),
            causal_waiting_runs: runs,
        };
        let snapshot = |peers| Snapshot {
            mode: "causal",
            peers,
            ..Snapshot::default()
        };
        let text = encode(snapshot(vec![
            peer(1, vec![(10, 1), (11, 2)]),
            peer(2, Vec::new()),
        ]));
        for line in [
            "# TYPE mckv_origin_causal_waiting gauge",
            "mckv_origin_causal_waiting{peer=\"1\",run=\"10\"} 1.0",
            "mckv_origin_causal_waiting{peer=\"1\",run=\"11\"} 2.0",
            "mckv_peer_causal_waiting{peer=\"1\"} 3.0",
            "mckv_peer_causal_waiting{peer=\"2\"} 0.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("origin_causal_waiting{peer=\"2\""), "{text}");
        let idle = encode(snapshot(vec![peer(1, Vec::new()), peer(2, Vec::new())]));
        assert!(!idle.contains("origin_causal_waiting"), "{idle}");
    }
}
