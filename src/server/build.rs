//! Builds a node for its consistency mode: the one place the server looks
//! at the mode. Everything after it is generic over the mode's [`Engine`].
//!
//! ```text
//!  one member ─────────► TotalOrder (linearizable: alone, every mode is)
//!  linearizable/sequential ► TotalOrder ─┐
//!  eventual ────────────► EventualEngine ┤
//!  causal ──────────────► EventualEngine::causal ┴─► Node<E> ─► Server<E>::run
//! ```

use std::io;

use super::{Server, Settings};
use crate::backend::StoreFactory;
use crate::cluster::engine::Engine;
use crate::cluster::eventual::EventualEngine;
use crate::cluster::total_order::TotalOrder;
use crate::cluster::{Stamp, View};
use crate::config::{Consistency, KvType};
use crate::durability::Recovering;
use crate::store::memcache::MemcacheStore;
use crate::store::memory::MemoryStore;
use crate::store::VersionedStore;

/// Serves as node `settings.node` until SIGINT/SIGTERM, then drains and returns.
pub fn serve(settings: Settings) -> io::Result<()> {
    let incarnation = incarnation();
    let me = settings.node.id;
    let view = View::new(0, settings.members.iter().map(|n| n.id).collect());
    let factory = store_factory(&settings);
    match settings.cluster.consistency {
        _ if view.members.len() == 1 => {
            let mut engine = TotalOrder::new(me, view, Consistency::Linearizable);
            let durable = match &settings.node.data_dir {
                Some(dir) => {
                    let recovering =
                        Recovering::open(dir, me, &settings.cluster, memory(&settings))?;
                    engine.stamp_above(recovering.highest_cas());
                    Some(recovering)
                }
                None => None,
            };
            let replica = engine.replica();
            Server::bind(settings, incarnation, (engine, replica), factory, durable)?.run()
        }
        mode @ (Consistency::Eventual | Consistency::Causal) => {
            let cluster = &settings.cluster;
            let beats = cluster.sync_interval.as_millis() / cluster.heartbeat.as_millis().max(1);
            // The clock starts at the wall time in microseconds.
            let start = incarnation / 1000;
            let engine = EventualEngine::new(me, incarnation, view, start, beats.max(1) as u64);
            let mut engine = match mode {
                Consistency::Causal => engine.causal(),
                _ => engine,
            };
            let mut replica = engine.replica();
            let durable = match &settings.node.data_dir {
                Some(dir) => {
                    let store = memory(&settings);
                    let mut recovering =
                        Recovering::open_journaled(dir, me, cluster, store, &mut replica)?;
                    engine.stamp_above(replica.highest_replayed_ts());
                    replica = replica.with_journal(recovering.journal_log());
                    Some(recovering)
                }
                None => None,
            };
            Server::bind(settings, incarnation, (engine, replica), factory, durable)?.run()
        }
        mode => {
            // A view change not done within about a failure-detector
            // timeout is started over.
            let cluster = &settings.cluster;
            let patience = cluster.peer_timeout.as_millis() / cluster.heartbeat.as_millis().max(1);
            let mut engine = TotalOrder::new(me, view, mode)
                .with_patience(patience as u64)
                .with_retain_limit(cluster.catch_up_bytes);
            let durable = match &settings.node.data_dir {
                Some(dir) => {
                    let recovering = Recovering::open_marked(dir, me, cluster, memory(&settings))?;
                    let recovered = recovering.recovered();
                    let held = recovered.delivered.map(Stamp::of_unique);
                    engine = engine.with_data_dir(held, recovered.exact);
                    engine.stamp_above(recovered.highest_cas);
                    Some(recovering)
                }
                None => None,
            };
            let replica = engine.replica();
            Server::bind(settings, incarnation, (engine, replica), factory, durable)?.run()
        }
    }
}

/// A replica of a linearizable or sequential cluster of several nodes.
fn strong_replica(settings: &Settings) -> bool {
    let strong = matches!(
        settings.cluster.consistency,
        Consistency::Linearizable | Consistency::Sequential
    );
    strong && settings.members.len() > 1
}

/// A replica of an eventual or causal cluster of several nodes: one that
/// exchanges versions with its peers.
fn eventual_replica(settings: &Settings) -> bool {
    let versioned = matches!(
        settings.cluster.consistency,
        Consistency::Eventual | Consistency::Causal
    );
    versioned && settings.members.len() > 1
}

/// This run's incarnation: the start time, so a restart is told apart.
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The embedded store, empty, with the cluster's limits. A strong mode's
/// replicas keep theirs ordered: their sweep and evictions follow the
/// writes they all apply, so they free and evict the same items (and a
/// data directory logs the writes, from which it evicts alike). Eventual
/// mode's nodes hand what they evict to the engine, which deletes it on
/// every replica; a node with a data directory, to its log.
fn memory(settings: &Settings) -> Box<dyn VersionedStore> {
    let cluster = &settings.cluster;
    let store = MemoryStore::new(cluster.memory_limit_bytes, cluster.limits())
        .with_sweep(cluster.expiry_sweep)
        .with_eviction(cluster.eviction);
    if strong_replica(settings) && settings.node.data_dir.is_some() {
        // Its log notes what each write evicted (`durability/shown.rs`).
        Box::new(store.ordered().keeping_evicted())
    } else if strong_replica(settings) {
        Box::new(store.ordered())
    } else if settings.node.data_dir.is_some() || eventual_replica(settings) {
        Box::new(store.keeping_evicted())
    } else {
        Box::new(store)
    }
}

fn store_factory(settings: &Settings) -> StoreFactory {
    let cluster = &settings.cluster;
    match settings.node.kv_type {
        KvType::Memory => {
            let store = memory(settings);
            Box::new(move || store)
        }
        KvType::Memcache => {
            let (addr, timeout) = (settings.node.kv_addr.clone(), cluster.backend_timeout);
            let limits = cluster.limits();
            let replicates_versions = eventual_replica(settings);
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
