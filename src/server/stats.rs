//! The counters a node reports through `stats` (memcached's names plus
//! `mckv_*` fields) and `show` (the cluster status, one line per node).

use std::time::Instant;

use super::peers::Peers;
use crate::cluster::membership::Millis;
use crate::cluster::{Engine, Node};
use crate::config::{ClusterConfig, NodeConfig};
use crate::protocol::reply;
use crate::store::unix_now;
use crate::store::{Counter, StoreCounters};

/// Counters kept on the reactor thread.
#[derive(Debug, Default)]
pub struct Counters {
    pub curr_connections: u64,
    pub total_connections: u64,
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
}

impl<E: Engine> Report<'_, E> {
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
        for counter in [
            Counter::CmdGet,
            Counter::CmdSet,
            Counter::CmdFlush,
            Counter::CmdTouch,
            Counter::GetHits,
            Counter::GetMisses,
        ] {
            reply::stat(out, counter.name(), self.backend.get(counter));
        }
        reply::stat(out, "bytes_read", c.bytes_read);
        reply::stat(out, "bytes_written", c.bytes_written);
        reply::stat(out, "limit_maxbytes", self.cluster.memory_limit_bytes);
        reply::stat(out, "threads", 1);
        reply::stat(out, "curr_items", store.items);
        reply::stat(out, "bytes", store.bytes);
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
        let members: Vec<String> = status.view_members.iter().map(|m| m.to_string()).collect();
        reply::stat(out, "mckv_view_members", members.join(","));
        reply::stat(out, "mckv_views_installed", status.views_installed);
        reply::stat(out, "mckv_refused_no_quorum", status.refused_no_quorum);
        reply::stat(out, "mckv_snapshots_sent", status.snapshots_sent);
        reply::stat(out, "mckv_snapshots_received", status.snapshots_received);
        reply::stat(out, "mckv_delivered", status.delivered);
        reply::stat(out, "mckv_pending", status.pending);
        if let Some(sync) = status.sync {
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
        reply::stat(out, "mckv_version", reply::MCKV_VERSION);
        out.extend_from_slice(reply::END);
    }

    pub fn settings(&self, out: &mut Vec<u8>) {
        reply::stat(out, "maxbytes", self.cluster.memory_limit_bytes);
        reply::stat(out, "item_size_max", self.cluster.item_size_max);
        reply::stat(out, "evictions", "off");
        reply::stat(out, "cas_enabled", "yes");
        reply::stat(out, "mckv_client", &self.config.client);
        reply::stat(out, "mckv_peer", &self.config.peer);
        reply::stat(
            out,
            "mckv_backend_timeout_ms",
            self.cluster.backend_timeout.as_millis(),
        );
        out.extend_from_slice(reply::END);
    }

    /// `show`: one line per node, then `END`:
    /// `NODE <id> <client address> <state> <self|peer> last_heard_ms=<ms|->
    /// clock=<lamport> view=<epoch> queue=<n> ops=<n>`; this node's state is
    /// its role (`up` as a serving member), and its line ends with the
    /// view's `members=`. A peer's queue and ops are what it last reported.
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
                let members: Vec<String> =
                    status.view_members.iter().map(|m| m.to_string()).collect();
                let line = format!(
                    "NODE {id} {} {state} self last_heard_ms=0 clock={} view={epoch} queue={} ops={} members={}\r\n",
                    config.client, status.clock, status.pending, self.counters.ops, members.join(","),
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
            // Eventual mode: how long since the last completed sync from it.
            let lag = peer
                .sync_lag
                .map(|beats| {
                    format!(
                        " sync_lag_ms={}",
                        beats * self.cluster.heartbeat.as_millis() as u64
                    )
                })
                .unwrap_or_default();
            let line = format!(
                "NODE {id} {} {} peer last_heard_ms={heard} clock={} view={epoch} queue={} ops={}{lag}\r\n",
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
