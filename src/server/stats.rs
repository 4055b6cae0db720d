//! What a node reports: `stats` and its groups in memcached's format
//! (memcached's fields, names and order, then mckv's `mckv_*` fields) and
//! `show` (the cluster status, one line per node).
//!
//! Every field of memcached 1.6's `stats` is here but `libevent` (the
//! version of an event library mckv does not use; no tool reads it). A
//! field counts what it counts on memcached where mckv does the same thing;
//! where mckv has no such thing (slab pages, an LRU, log watchers, SASL)
//! it shows what memcached shows while it has done none of it: 0, "no", or
//! an empty group. Each such field says why below. memcached's LRU
//! crawler's fields are the embedded store's expiry sweep's.
//!
//! The store work counters (`cmd_*`, hits, misses, `total_items`, ...) are
//! counted where a client's command executes with a reply, on the node that
//! took the request (see [`crate::store::counters`]); connections and bytes
//! are the node's own.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpListener;
use slab::Slab;

use super::connection::{Connection, SpareBuffers};
use super::peers::Peers;
use super::process;
use crate::cluster::membership::Millis;
use crate::cluster::SyncStats;
use crate::cluster::{Engine, Node, NodeId};
use crate::config::{ClusterConfig, Consistency, KvType, NodeConfig};
use crate::durability::Durable;
use crate::protocol::reply;
use crate::store::unix_now;
use crate::store::{Counter, Eviction, KeyPrefixes, StoreCounters, StoreStats};

/// Counters kept on the reactor thread.
#[derive(Debug, Default)]
pub struct Counters {
    pub curr_connections: u64,
    pub total_connections: u64,
    /// The most client connections open at once: connection slots the node
    /// holds (memcached's `connection_structures`).
    pub connection_structures: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests answered, of every kind.
    pub ops: u64,
    /// Requests that missed their deadline in the backend.
    pub timeouts: u64,
    /// Connections refused over `max_connections`.
    pub rejected_connections: u64,
    /// Connections closed for idling past `idle_timeout_s`.
    pub idle_kicks: u64,
}

impl Counters {
    /// `stats reset`: everything but what describes the present.
    pub fn reset(&mut self) {
        *self = Counters {
            curr_connections: self.curr_connections,
            connection_structures: self.connection_structures,
            ..Counters::default()
        };
    }
}

/// memcached 1.6.18 counts only `me` as `cmd_meta` (a debug command);
/// mckv does not count it, and counts `mg ms md ma` as the classic
/// commands they stand for, as memcached does.
const NO_META_COMMANDS: &[&str] = &["cmd_meta"];

/// memcached counts SASL and ASCII authentication; mckv has neither, and
/// memcached shows 0 while it is off.
const NO_AUTHENTICATION: &[&str] = &["auth_cmds", "auth_errors"];

/// memcached stops accepting at its connection limit only with
/// `maxconns_fast` off; mckv refuses the connections over its limit one by
/// one, as memcached does with it on (its default), so it never stops.
const LISTENER_NEVER_DISABLED: &[&str] = &["listen_disabled_num", "time_in_listen_disabled_us"];

/// memcached's slab allocator: mckv's store has no slab pages to move.
const NO_SLABS: &[&str] = &[
    "slab_reassign_rescues",
    "slab_reassign_chunk_rescues",
    "slab_reassign_evictions_nomem",
    "slab_reassign_inline_reclaim",
    "slab_reassign_busy_items",
    "slab_reassign_busy_deletes",
    "slab_reassign_running",
    "slabs_moved",
];

/// memcached's LRU maintainer and log watchers: mckv's store has no LRU to
/// maintain and no `watch` command, so none of these ever happen. (The
/// crawler's counters, between these and [`NO_SLABS`], are the expiry
/// sweep's.)
const NO_LRU_OR_WATCHERS: &[&str] = &[
    "lru_maintainer_juggles",
    // Rust aborts the process when an allocation fails: none is counted.
    "malloc_fails",
    "log_worker_dropped",
    "log_worker_written",
    "log_watcher_skipped",
    "log_watcher_sent",
    "log_watchers",
    // No NAPI-id thread placement.
    "unexpected_napi_ids",
    "round_robin_fallback",
];

/// What a report needs to know about the node.
pub struct Report<'a, E: Engine> {
    pub cluster: &'a ClusterConfig,
    pub config: &'a NodeConfig,
    /// Every node of the cluster, this one included.
    pub members: &'a [NodeConfig],
    pub started: Instant,
    /// The cluster core's time (see [`super::Server`]), to age `last_heard`.
    pub now: Millis,
    pub counters: &'a Counters,
    pub backend: &'a StoreCounters,
    pub node: &'a Node<E>,
    pub peers: Option<&'a Peers<E::Message>>,
    /// The log of a node with a data directory, and how many replies wait
    /// for it.
    pub durable: Option<(&'a Durable, usize)>,
    /// The client listener; `None` once the node stops accepting.
    pub listener: Option<&'a TcpListener>,
    pub conns: &'a Slab<Connection>,
    pub spare_buffers: &'a SpareBuffers,
    /// The connection that asked.
    pub asking: usize,
}

impl<E: Engine> Report<'_, E> {
    /// The memory limit: the embedded store's, as `cache_memlimit` left it;
    /// a memcached backend's own limit is unknown to the node, so the
    /// configured one is shown, as before the store could change it.
    fn limit_bytes(&self, store: &StoreStats) -> u64 {
        match self.config.kv_type {
            KvType::Memory => store.limit_bytes,
            KvType::Memcache => self.cluster.memory_limit_bytes,
        }
    }

    /// `stats`: memcached 1.6's fields in its order, then mckv's.
    pub fn general(&self, out: &mut Vec<u8>) {
        let c = self.counters;
        let store = self.backend.store_stats();
        let count = |out: &mut Vec<u8>, counter: Counter| {
            reply::stat(out, counter.name(), self.backend.get(counter))
        };
        let zeros = |out: &mut Vec<u8>, names: &[&str]| {
            for name in names {
                reply::stat(out, name, 0);
            }
        };
        reply::stat(out, "pid", std::process::id());
        reply::stat(out, "uptime", self.started.elapsed().as_secs());
        reply::stat(out, "time", unix_now());
        reply::stat(out, "version", reply::VERSION);
        reply::stat(out, "pointer_size", usize::BITS);
        let cpu = process::cpu_times();
        reply::stat(out, "rusage_user", process::seconds_micros(cpu.user));
        reply::stat(out, "rusage_system", process::seconds_micros(cpu.system));
        reply::stat(out, "max_connections", self.cluster.max_connections);
        reply::stat(out, "curr_connections", c.curr_connections);
        reply::stat(out, "total_connections", c.total_connections);
        reply::stat(out, "rejected_connections", c.rejected_connections);
        reply::stat(out, "connection_structures", c.connection_structures);
        self.buffers(out);
        reply::stat(out, "reserved_fds", self.reserved_descriptors());
        for counter in [
            Counter::CmdGet,
            Counter::CmdSet,
            Counter::CmdFlush,
            Counter::CmdTouch,
        ] {
            count(out, counter);
        }
        zeros(out, NO_META_COMMANDS);
        for counter in [
            Counter::GetHits,
            Counter::GetMisses,
            Counter::GetExpired,
            Counter::GetFlushed,
            Counter::DeleteMisses,
            Counter::DeleteHits,
            Counter::IncrMisses,
            Counter::IncrHits,
            Counter::DecrMisses,
            Counter::DecrHits,
            Counter::CasMisses,
            Counter::CasHits,
            Counter::CasBadval,
            Counter::TouchHits,
            Counter::TouchMisses,
            Counter::StoreTooLarge,
            Counter::StoreNoMemory,
        ] {
            count(out, counter);
        }
        zeros(out, NO_AUTHENTICATION);
        // Shown while idle connections are closed, as memcached shows it.
        if self.cluster.idle_timeout.is_some() {
            reply::stat(out, "idle_kicks", c.idle_kicks);
        }
        reply::stat(out, "bytes_read", c.bytes_read);
        reply::stat(out, "bytes_written", c.bytes_written);
        reply::stat(out, "limit_maxbytes", self.limit_bytes(&store));
        reply::stat(out, "accepting_conns", u8::from(self.listener.is_some()));
        zeros(out, LISTENER_NEVER_DISABLED);
        // One reactor thread serves every client.
        reply::stat(out, "threads", 1);
        // memcached yields a connection after 20 requests so others get a
        // turn; mckv's loop serves a connection's whole read at once.
        reply::stat(out, "conn_yields", 0);
        let slots = store.table_slots;
        let power = if slots == 0 {
            0
        } else {
            slots.trailing_zeros()
        };
        reply::stat(out, "hash_power_level", power);
        reply::stat(out, "hash_bytes", store.table_bytes);
        // The key table grows within one insert: never caught expanding.
        reply::stat(out, "hash_is_expanding", 0);
        zeros(out, NO_SLABS);
        // The embedded store's expiry sweep is memcached's LRU crawler; a
        // memcached backend's own crawler is not counted here.
        reply::stat(out, "lru_crawler_running", u8::from(store.sweeping));
        count(out, Counter::LruCrawlerStarts);
        zeros(out, NO_LRU_OR_WATCHERS);
        reply::stat(out, "bytes", store.bytes);
        reply::stat(out, "curr_items", store.items);
        count(out, Counter::TotalItems);
        // No slab pages, so none wait in a global pool.
        reply::stat(out, "slab_global_page_pool", 0);
        count(out, Counter::ExpiredUnfetched);
        count(out, Counter::EvictedUnfetched);
        // No item is marked active: the eviction clock has one bit per item.
        reply::stat(out, "evicted_active", 0);
        count(out, Counter::Evictions);
        count(out, Counter::Reclaimed);
        // Dead items go when a command meets them, when a full store
        // reclaims them (`reclaimed` above) or when the expiry sweep, the
        // embedded store's crawler, finds them.
        count(out, Counter::CrawlerReclaimed);
        count(out, Counter::CrawlerItemsChecked);
        // No LRU to move items within.
        zeros(
            out,
            &[
                "lrutail_reflocked",
                "moves_to_cold",
                "moves_to_warm",
                "moves_within_lru",
            ],
        );
        count(out, Counter::DirectReclaims);
        // No LRU, so no LRU bump to drop.
        zeros(out, &["lru_bumps_dropped"]);
        self.mckv_fields(out);
        out.extend_from_slice(reply::END);
    }

    /// memcached's read buffers and response objects are the connections'
    /// read and write buffers here (a connection waiting for its client
    /// holds neither); the free read buffers are the node's spare ones;
    /// none failed to allocate.
    fn buffers(&self, out: &mut Vec<u8>) {
        let (mut reads, mut read_bytes, mut writes, mut write_bytes) = (0, 0, 0, 0);
        for (_, conn) in self.conns.iter() {
            let (read, write) = conn.buffer_bytes();
            reads += u64::from(read > 0);
            read_bytes += read as u64;
            writes += u64::from(write > 0);
            write_bytes += write as u64;
        }
        reply::stat(out, "response_obj_oom", 0);
        reply::stat(out, "response_obj_count", writes);
        reply::stat(out, "response_obj_bytes", write_bytes);
        reply::stat(out, "read_buf_count", reads);
        reply::stat(out, "read_buf_bytes", read_bytes);
        let free = self.spare_buffers.spare_read_bytes() as u64;
        reply::stat(out, "read_buf_bytes_free", free);
        reply::stat(out, "read_buf_oom", 0);
    }

    /// Descriptors the node keeps for itself (listeners, peer links, the
    /// event loop, its log): all it holds open but client connections.
    fn reserved_descriptors(&self) -> u64 {
        process::open_descriptors().map_or(0, |open| open.saturating_sub(self.conns.len() as u64))
    }

    fn mckv_fields(&self, out: &mut Vec<u8>) {
        let c = self.counters;
        let status = self.node.engine().status();
        reply::stat(out, "mckv_node", self.config.id);
        reply::stat(out, "mckv_mode", self.cluster.consistency.name());
        reply::stat(out, "mckv_backend", self.config.kv_type.name());
        reply::stat(out, "mckv_ops", c.ops);
        reply::stat(out, "mckv_clock", status.clock);
        reply::stat(out, "mckv_view_epoch", status.epoch);
        reply::stat(out, "mckv_members", status.members);
        reply::stat(
            out,
            "mckv_members_up",
            1 + self.node.membership().up_count(),
        );
        reply::stat(out, "mckv_role", status.role);
        reply::stat(out, "mckv_view_members", node_list(status.view_members));
        reply::stat(out, "mckv_views_installed", status.views_installed);
        reply::stat(out, "mckv_refused_no_quorum", status.refused_no_quorum);
        reply::stat(out, "mckv_snapshots_sent", status.snapshots_sent);
        reply::stat(out, "mckv_snapshots_received", status.snapshots_received);
        reply::stat(out, "mckv_missed_handed", status.missed_handed);
        reply::stat(
            out,
            "mckv_missed_writes_handed",
            status.missed_writes_handed,
        );
        reply::stat(out, "mckv_missed_received", status.missed_received);
        reply::stat(
            out,
            "mckv_writes_during_snapshots",
            status.writes_during_snapshots,
        );
        let receiving = status.receiving.unwrap_or_default();
        reply::stat(out, "mckv_catch_up_bytes_done", receiving.done);
        reply::stat(out, "mckv_catch_up_bytes_total", receiving.total);
        reply::stat(out, "mckv_delivered", status.delivered);
        reply::stat(out, "mckv_pending", status.pending);
        if let Some(lag) = status.delivery_lag {
            reply::stat(out, "mckv_delivery_lag_ms", self.heartbeats_ms(lag));
        }
        if let Some(sync) = status.sync {
            reply::stat(out, "mckv_sync_rounds", sync.rounds);
            reply::stat(out, "mckv_versions_written", sync.versions_written);
            reply::stat(out, "mckv_versions_sent", sync.versions_sent);
            reply::stat(out, "mckv_versions_answered", sync.versions_answered);
            // Anti-entropy's volume: versions in sync answers per version
            // this node wrote (pushes are one per peer per version).
            let per_write = sync.versions_answered as f64 / sync.versions_written.max(1) as f64;
            reply::stat(
                out,
                "mckv_versions_answered_per_written",
                format!("{per_write:.2}"),
            );
            reply::stat(out, "mckv_versions_received", sync.versions_received);
            reply::stat(out, "mckv_pushes_dropped", sync.pushes_dropped);
            if self.cluster.consistency == Consistency::Causal {
                self.causal_stats(out, sync);
            }
            let log_bytes = self.backend.version_log_bytes();
            reply::stat(out, "mckv_version_log_bytes", log_bytes);
        }
        reply::stat(
            out,
            "mckv_frames_sent",
            self.peers.map_or(0, |p| p.frames_sent),
        );
        reply::stat(
            out,
            "mckv_frames_received",
            self.peers.map_or(0, |p| p.frames_received),
        );
        reply::stat(
            out,
            "mckv_frame_bytes_sent",
            self.peers.map_or(0, |p| p.frame_bytes_sent),
        );
        reply::stat(
            out,
            "mckv_frame_bytes_received",
            self.peers.map_or(0, |p| p.frame_bytes_received),
        );
        reply::stat(
            out,
            "mckv_peer_links_refused",
            self.peers.map_or(0, |p| p.hellos_refused),
        );
        reply::stat(out, "mckv_timeouts", c.timeouts);
        if let Some((durable, held)) = self.durable {
            durability_fields(out, durable, held);
        }
        reply::stat(out, "mckv_version", reply::MCKV_VERSION);
    }

    /// Causal mode: peers' writes waiting here for their causes, in all,
    /// per peer, and per run of a peer that has writes waiting (a restarted
    /// peer writes as a new origin: its runs' writes wait apart), and
    /// pushes dropped for want of room to wait.
    fn causal_stats(&self, out: &mut Vec<u8>, sync: SyncStats) {
        reply::stat(out, "mckv_causal_waiting", sync.waiting);
        for id in self.members.iter().map(|n| n.id) {
            let Some(peer) = self.node.engine().peer_status(id) else {
                continue;
            };
            if let Some(total) = peer.waiting_total() {
                reply::stat(out, &format!("mckv_causal_waiting_from_{id}"), total);
            }
            for (run, n) in peer.waiting.iter().flatten() {
                let name = format!("mckv_causal_waiting_from_{id}_run_{run}");
                reply::stat(out, &name, n);
            }
        }
        reply::stat(out, "mckv_causal_waiting_dropped", sync.waiting_dropped);
    }

    /// `beats` heartbeat periods in milliseconds.
    fn heartbeats_ms(&self, beats: u64) -> u64 {
        beats * self.cluster.heartbeat.as_millis() as u64
    }

    /// `stats settings`: the memcached settings that mean something for
    /// mckv, in memcached's order, then mckv's. Slab, LRU and extstore
    /// settings are left out: mckv has none of those; of TLS, whether it is on.
    pub fn settings(&self, out: &mut Vec<u8>) {
        let store = self.backend.store_stats();
        let client = self.listener.and_then(|l| l.local_addr().ok());
        reply::stat(out, "maxbytes", self.limit_bytes(&store));
        reply::stat(out, "maxconns", self.cluster.max_connections);
        reply::stat(out, "tcpport", client.map_or(0, |a| a.port()));
        reply::stat(out, "udpport", 0);
        match client {
            Some(addr) => reply::stat(out, "inter", addr.ip()),
            None => reply::stat(out, "inter", "NULL"),
        }
        // A memcached backend evicts unless it was started with `-M`.
        let refuses =
            self.config.kv_type == KvType::Memory && self.cluster.eviction == Eviction::None;
        let evicts = !refuses;
        reply::stat(out, "evictions", if evicts { "on" } else { "off" });
        reply::stat(out, "domain_socket", "NULL");
        reply::stat(out, "shutdown_command", "no");
        reply::stat(out, "num_threads", 1);
        reply::stat(out, "stat_key_prefix", char::from(KeyPrefixes::DELIMITER));
        let detail = if self.backend.detail_enabled() {
            "yes"
        } else {
            "no"
        };
        reply::stat(out, "detail_enabled", detail);
        reply::stat(out, "cas_enabled", "yes");
        // mio listens with std's backlog.
        reply::stat(out, "tcp_backlog", 128);
        reply::stat(out, "binding_protocol", "ascii");
        reply::stat(out, "auth_enabled_sasl", "no");
        reply::stat(out, "auth_enabled_ascii", "no");
        reply::stat(out, "item_size_max", self.cluster.item_size_max);
        // A connection over the limit is refused at once, not left waiting.
        reply::stat(out, "maxconns_fast", "yes");
        // The embedded store's expiry sweep (memcached's LRU crawler); a
        // memcached backend's crawler is that server's setting.
        let crawler = match self.config.kv_type {
            KvType::Memory if self.cluster.expiry_sweep => "yes",
            KvType::Memory | KvType::Memcache => "no",
        };
        reply::stat(out, "lru_crawler", crawler);
        reply::stat(out, "flush_enabled", "yes");
        reply::stat(out, "dump_enabled", "yes");
        reply::stat(out, "lru_maintainer_thread", "no");
        reply::stat(out, "lru_segmented", "no");
        let idle_timeout = self.cluster.idle_timeout.map_or(0, |t| t.as_secs());
        reply::stat(out, "idle_timeout", idle_timeout);
        // Read buffers have no cap of their own (back-pressure bounds them).
        reply::stat(out, "read_buf_mem_limit", 0);
        reply::stat(out, "track_sizes", "no");
        let yes_no = |on: bool| if on { "yes" } else { "no" };
        reply::stat(out, "ssl_enabled", yes_no(self.cluster.client_tls));
        reply::stat(out, "mckv_client", &self.config.client);
        reply::stat(out, "mckv_peer", &self.config.peer);
        reply::stat(
            out,
            "mckv_backend_timeout_ms",
            self.cluster.backend_timeout.as_millis(),
        );
        reply::stat(out, "mckv_peer_tls", yes_no(self.cluster.peer_tls));
        reply::stat(out, "mckv_max_reply_buffer", self.cluster.max_reply_buffer);
        reply::stat(
            out,
            "mckv_peer_unsent_limit",
            self.cluster.peer_unsent_limit,
        );
        reply::stat(out, "mckv_catch_up_bytes", self.cluster.catch_up_bytes);
        out.extend_from_slice(reply::END);
    }

    /// `stats conns`: the client listener and every client connection, by
    /// descriptor, as memcached lists its own.
    pub fn conns(&self, out: &mut Vec<u8>) {
        let mut lines: Vec<(i32, String)> = Vec::new();
        if let Some(listener) = self.listener {
            let fd = listener.as_raw_fd();
            let addr = listener.local_addr().map(conn_text).unwrap_or_default();
            let since = self.started.elapsed().as_secs();
            lines.push((
                fd,
                format!(
                    "STAT {fd}:addr {addr}\r\nSTAT {fd}:state conn_listening\r\n\
                     STAT {fd}:secs_since_last_cmd {since}\r\n"
                ),
            ));
        }
        for (token, conn) in self.conns.iter() {
            let fd = conn.stream.socket().as_raw_fd();
            let local = (conn.stream.socket().local_addr())
                .map(conn_text)
                .unwrap_or_default();
            let state = memcached_state(conn, token == self.asking);
            let since = conn.last_command.elapsed().as_secs();
            lines.push((
                fd,
                format!(
                    "STAT {fd}:addr {}\r\nSTAT {fd}:listen_addr {local}\r\n\
                     STAT {fd}:state {state}\r\nSTAT {fd}:secs_since_last_cmd {since}\r\n",
                    conn_text(conn.addr)
                ),
            ));
        }
        lines.sort_by_key(|(fd, _)| *fd);
        for (_, text) in lines {
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(reply::END);
    }

    /// `stats detail dump`: the per-prefix counts.
    pub fn detail_dump(&self, out: &mut Vec<u8>) {
        self.backend.prefixes().dump(out);
    }
}

/// `stats items` and `stats cachedump`: mckv's store keeps no slab classes,
/// so it answers as memcached does for classes that hold no item: `stats
/// items` lists none, a class dumps no key.
pub fn no_slab_classes(out: &mut Vec<u8>) {
    out.extend_from_slice(reply::END);
}

/// `stats slabs`: memcached's reply before it allocated any slab page, which
/// mckv's store never does.
pub fn no_slab_pages(out: &mut Vec<u8>) {
    reply::stat(out, "active_slabs", 0);
    reply::stat(out, "total_malloced", 0);
    out.extend_from_slice(reply::END);
}

/// `stats sizes`: memcached's reply while it does not track item sizes
/// (`track_sizes no`), which mckv does not.
pub fn sizes_not_tracked(out: &mut Vec<u8>) {
    reply::stat(out, "sizes_status", "disabled");
    out.extend_from_slice(reply::END);
}

/// The log's numbers, for a node with a data directory, `held` replies
/// waiting for it.
fn durability_fields(out: &mut Vec<u8>, durable: &Durable, held: usize) {
    let log = durable.numbers();
    reply::stat(out, "mckv_fsync", durable.fsync.name());
    reply::stat(out, "mckv_log_bytes", log.bytes);
    reply::stat(out, "mckv_log_fsyncs", log.fsyncs);
    reply::stat(out, "mckv_log_failed", u8::from(log.failed));
    reply::stat(out, "mckv_log_stalled", u8::from(log.stalled));
    reply::stat(out, "mckv_replies_held", held);
    reply::stat(out, "mckv_snapshots_written", log.snapshots_written);
    reply::stat(out, "mckv_snapshot_bytes", log.snapshot_bytes);
    reply::stat(out, "mckv_snapshot_time", log.snapshot_time);
    reply::stat(out, "mckv_recovered_bytes", log.recovered_bytes);
    reply::stat(
        out,
        "mckv_recovered_dropped_bytes",
        log.recovered_dropped_bytes,
    );
}

/// `stats extstore`: memcached's reply when it has no flash storage
/// configured; mckv keeps everything in memory.
pub fn no_extstore(out: &mut Vec<u8>) {
    out.extend_from_slice(reply::END);
}

impl<E: Engine> Report<'_, E> {
    /// What a full store does: the embedded store's policy, or
    /// `memcached` for a backend, which evicts unless run with `-M`.
    fn eviction(&self) -> &'static str {
        match self.config.kv_type {
            KvType::Memory => self.cluster.eviction.name(),
            KvType::Memcache => "memcached",
        }
    }

    /// `show`: one line per node, then `END`:
    /// `NODE <id> <client address> <state> <self|peer> last_heard_ms=<ms|->
    /// clock=<lamport> view=<epoch> queue=<n> ops=<n>`; this node's state is
    /// its role (`up` as a serving member), and its line ends with the
    /// view's `members=` (in the strong modes, then `delivery_lag_ms=`;
    /// while it is handed a snapshot, then `catch_up_bytes=<done>/<total>`).
    /// A peer's queue and ops are what it last reported, and its line goes
    /// on with `run=`, its run whose hello this node took last (`-` before
    /// any).
    pub fn show(&self, out: &mut Vec<u8>) {
        let status = self.node.engine().status();
        let epoch = status.epoch;
        let now = self.now;
        let mut members: Vec<&NodeConfig> = self.members.iter().collect();
        members.sort_by_key(|n| n.id);
        for config in members {
            let id = config.id;
            if id == self.config.id {
                // This node is `up` once it serves as a member of its view.
                let state = match status.role {
                    "member" => "up",
                    role => role,
                };
                let lag = status
                    .delivery_lag
                    .map(|beats| format!(" delivery_lag_ms={}", self.heartbeats_ms(beats)))
                    .unwrap_or_default();
                let progress = status
                    .receiving
                    .map(|t| format!(" catch_up_bytes={}/{}", t.done, t.total))
                    .unwrap_or_default();
                let eviction = self.eviction();
                let line = format!(
                    "NODE {id} {} {state} self last_heard_ms=0 clock={} view={epoch} queue={} ops={} members={} eviction={eviction}{lag}{progress}\r\n",
                    config.client, status.clock, status.pending, self.counters.ops, node_list(status.view_members),
                );
                out.extend_from_slice(line.as_bytes());
                continue;
            }
            let Some(member) = self.node.membership().member(id) else {
                continue;
            };
            let heard = member
                .last_heard
                .map_or("-".to_string(), |t| now.saturating_sub(t).to_string());
            let peer = self.node.engine().peer_status(id).unwrap_or_default();
            let load = member.load;
            // A restart makes a new run, so this is the one alive, if any:
            // the runs `waiting_runs` names besides it are of its past.
            let run = member
                .incarnation
                .map_or("-".to_string(), |run| run.to_string());
            // Eventual mode: how long since the last completed sync from it.
            let lag = peer
                .sync_lag
                .map(|beats| format!(" sync_lag_ms={}", self.heartbeats_ms(beats)))
                .unwrap_or_default();
            // Causal mode: its writes waiting here for their causes, and
            // per run of it with writes waiting, `<run>:<n>` by run.
            let waiting = peer
                .waiting_total()
                .map(|n| format!(" waiting={n}"))
                .unwrap_or_default();
            let runs: Vec<String> = peer
                .waiting
                .iter()
                .flatten()
                .map(|(run, n)| format!("{run}:{n}"))
                .collect();
            let waiting_runs = match runs.is_empty() {
                true => String::new(),
                false => format!(" waiting_runs={}", runs.join(",")),
            };
            let line = format!(
                "NODE {id} {} {} peer last_heard_ms={heard} clock={} view={epoch} queue={} ops={} run={run}{lag}{waiting}{waiting_runs}\r\n",
                config.client,
                member.state(),
                peer.clock,
                load.pending,
                load.ops,
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(reply::END);
    }
}

/// memcached's text for a socket address: `tcp:<ip>:<port>`, or
/// `tcp6:[<ip>]:<port>`.
fn conn_text(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("tcp:{v4}"),
        SocketAddr::V6(v6) => format!("tcp6:{v6}"),
    }
}

/// The memcached connection state closest to what `conn` is doing.
fn memcached_state(conn: &Connection, asking: bool) -> &'static str {
    if asking {
        "conn_parse_cmd"
    } else if conn.close_when_flushed {
        "conn_closing"
    } else if conn.swallow > 0 {
        "conn_swallow"
    } else if !conn.is_drained() {
        "conn_mwrite"
    } else if memchr::memchr(b'\n', conn.unparsed()).is_some() {
        // A command line whose value is still arriving.
        "conn_nread"
    } else {
        "conn_read"
    }
}

/// Node ids as `stats` and `show` print them: `0,1,2`.
fn node_list(nodes: &[NodeId]) -> String {
    let ids: Vec<String> = nodes.iter().map(NodeId::to_string).collect();
    ids.join(",")
}
