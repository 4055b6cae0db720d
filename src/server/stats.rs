//! The counters a node reports through `stats` (memcached's names plus
//! `mckv_*` fields) and `show` (the cluster status, one line per node).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::peers::Peers;
use crate::backend::BackendCounters;
use crate::cluster::Replicator;
use crate::config::{ClusterConfig, NodeConfig};
use crate::protocol::reply;
use crate::store::unix_now;

/// Counters kept on the reactor thread.
#[derive(Debug, Default)]
pub struct Counters {
    pub curr_connections: u64,
    pub total_connections: u64,
    pub cmd_get: u64,
    pub cmd_set: u64,
    pub cmd_touch: u64,
    pub cmd_flush: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests answered, of every kind.
    pub ops: u64,
    /// Requests that missed their deadline in the backend.
    pub timeouts: u64,
}

impl Counters {
    /// `stats reset`: everything but what describes the present.
    pub fn reset(&mut self) {
        *self = Counters {
            curr_connections: self.curr_connections,
            ..Counters::default()
        };
    }
}

/// What a report needs to know about the node.
pub struct Report<'a> {
    pub cluster: &'a ClusterConfig,
    pub node: &'a NodeConfig,
    pub started: Instant,
    pub counters: &'a Counters,
    pub backend: &'a BackendCounters,
    pub engine: &'a Replicator,
    pub peers: Option<&'a Peers>,
}

impl Report<'_> {
    pub fn general(&self, out: &mut Vec<u8>) {
        let c = self.counters;
        let store = self.backend.store_stats();
        reply::stat(out, "pid", std::process::id());
        reply::stat(out, "uptime", self.started.elapsed().as_secs());
        reply::stat(out, "time", unix_now());
        reply::stat(out, "version", reply::VERSION);
        reply::stat(out, "pointer_size", usize::BITS);
        reply::stat(out, "curr_connections", c.curr_connections);
        reply::stat(out, "total_connections", c.total_connections);
        reply::stat(out, "cmd_get", c.cmd_get);
        reply::stat(out, "cmd_set", c.cmd_set);
        reply::stat(out, "cmd_flush", c.cmd_flush);
        reply::stat(out, "cmd_touch", c.cmd_touch);
        reply::stat(
            out,
            "get_hits",
            self.backend.get_hits.load(Ordering::Relaxed),
        );
        reply::stat(
            out,
            "get_misses",
            self.backend.get_misses.load(Ordering::Relaxed),
        );
        reply::stat(out, "bytes_read", c.bytes_read);
        reply::stat(out, "bytes_written", c.bytes_written);
        reply::stat(out, "limit_maxbytes", self.cluster.memory_limit_bytes);
        reply::stat(out, "threads", 1);
        reply::stat(out, "curr_items", store.items);
        reply::stat(out, "bytes", store.bytes);
        reply::stat(out, "mckv_node", self.node.id);
        reply::stat(out, "mckv_mode", self.cluster.consistency.name());
        reply::stat(out, "mckv_backend", self.node.kv_type.name());
        reply::stat(out, "mckv_ops", c.ops);
        reply::stat(out, "mckv_clock", self.engine.clock());
        reply::stat(out, "mckv_view_epoch", self.engine.view().epoch);
        reply::stat(out, "mckv_members", self.engine.view().members.len());
        reply::stat(
            out,
            "mckv_members_up",
            1 + self.peers.map_or(0, Peers::up_count),
        );
        reply::stat(out, "mckv_delivered", self.engine.delivered());
        reply::stat(out, "mckv_pending", self.engine.pending());
        if let Some(sync) = self.engine.sync_stats() {
            reply::stat(out, "mckv_sync_rounds", sync.rounds);
            reply::stat(out, "mckv_versions_sent", sync.versions_sent);
            reply::stat(out, "mckv_versions_received", sync.versions_received);
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
        reply::stat(out, "mckv_timeouts", c.timeouts);
        out.extend_from_slice(reply::END);
    }

    pub fn settings(&self, out: &mut Vec<u8>) {
        reply::stat(out, "maxbytes", self.cluster.memory_limit_bytes);
        reply::stat(out, "item_size_max", self.cluster.item_size_max);
        reply::stat(out, "evictions", "off");
        reply::stat(out, "cas_enabled", "yes");
        reply::stat(out, "mckv_client", &self.node.client);
        reply::stat(out, "mckv_peer", &self.node.peer);
        reply::stat(
            out,
            "mckv_backend_timeout_ms",
            self.cluster.backend_timeout.as_millis(),
        );
        out.extend_from_slice(reply::END);
    }

    /// `show`: one line per node, then `END`:
    /// `NODE <id> <client address> <up|down|left|restarted> <self|peer>
    /// last_heard_ms=<ms|-> clock=<lamport> view=<epoch> queue=<n> ops=<n>`.
    /// A peer's queue and ops are what it last reported.
    pub fn show(&self, out: &mut Vec<u8>) {
        let epoch = self.engine.view().epoch;
        let mut lines = vec![(
            self.node.id,
            format!(
                "NODE {} {} up self last_heard_ms=0 clock={} view={epoch} queue={} ops={}\r\n",
                self.node.id,
                self.node.client,
                self.engine.clock(),
                self.engine.pending(),
                self.counters.ops,
            ),
        )];
        for peer in self.peers.iter().flat_map(|p| p.states()) {
            let heard = peer
                .last_heard
                .map_or("-".to_string(), |t| t.elapsed().as_millis().to_string());
            let clock = self.engine.peer_clock(peer.id).unwrap_or(0);
            let (queue, ops) = peer.reported;
            // Eventual mode: how long since the last completed sync from it.
            let lag = self
                .engine
                .sync_lag(peer.id)
                .map(|beats| {
                    format!(
                        " sync_lag_ms={}",
                        beats * self.cluster.heartbeat.as_millis() as u64
                    )
                })
                .unwrap_or_default();
            let line = format!(
                "NODE {} {} {} peer last_heard_ms={heard} clock={clock} view={epoch} queue={queue} ops={ops}{lag}\r\n",
                peer.id,
                peer.client,
                peer.state(),
            );
            lines.push((peer.id, line));
        }
        lines.sort_by_key(|(id, _)| *id);
        for (_, line) in lines {
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(reply::END);
    }
}
