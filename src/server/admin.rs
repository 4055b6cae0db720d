//! Commands the node answers itself, in their place among a connection's
//! replies: `version`, `verbosity`, `stats` (and its groups),
//! `cache_memlimit`, `slabs`, `show`, `quit`.

use super::stats::{self, Report};
use super::Server;
use crate::cluster::Engine;
use crate::config::KvType;
use crate::protocol::{reply, Admin, Detail, StatsGroup};

/// The largest slab class id of a memcached started with its default sizes
/// (`-n 48 -f 1.25 -I 1m`): `slabs reassign` names classes up to it.
const LARGEST_SLAB_CLASS: i32 = 39;

impl<E: Engine> Server<E> {
    /// Answers a command the node handles itself, in its place among the
    /// connection's replies.
    pub(super) fn answer_admin(&mut self, token: usize, command: Admin, noreply: bool) {
        let out = self.admin_reply(token, command);
        if !noreply {
            self.conns[token].reply(|o| o.extend_from_slice(&out));
        }
    }

    /// Does what a command the node handles itself asks, and returns its
    /// text reply (which a binary request's response is made from).
    pub(super) fn admin_reply(&mut self, token: usize, command: Admin) -> Vec<u8> {
        self.counters.ops += 1;
        let mut out = Vec::new();
        match command {
            Admin::Version => reply::version(&mut out),
            // Logging is set with `--log-level`; memcached's levels change nothing here.
            Admin::Verbosity => out.extend_from_slice(reply::OK),
            Admin::Stats(group) => self.answer_stats(token, group, &mut out),
            Admin::CacheMemlimit { megabytes } => {
                // Replicas with different caps would evict, or refuse,
                // different writes (and eventual mode deletes what any node
                // evicts, everywhere). Said once: clients may ask in a loop.
                let shared = self.settings.members.len() > 1;
                let taken = !shared && self.backend.set_memory_limit(u64::from(megabytes) << 20);
                let memory = self.settings.node.kv_type == KvType::Memory;
                if shared && memory && !self.memlimit_refusal_said {
                    self.memlimit_refusal_said = true;
                    log::warn!(
                        "cache_memlimit refused: the nodes of a cluster share its limit; \
                         set memory_limit_mb in [cluster] for every node and restart them all"
                    );
                }
                // A memcached backend's limit is its own: send it there.
                let text = if taken {
                    reply::OK
                } else {
                    reply::MEMLIMIT_ADJUST_FAILED
                };
                out.extend_from_slice(text);
            }
            // The store has no slab pages for memcached's automover to move:
            // the setting is taken and changes nothing, like `verbosity`.
            Admin::SlabsAutomove => out.extend_from_slice(reply::OK),
            Admin::SlabsReassign {
                source,
                destination,
            } => out.extend_from_slice(reassign(source, destination)),
            Admin::Show => self.report(token).show(&mut out),
            Admin::Quit => self.conns[token].close_when_flushed = true,
        }
        out
    }

    fn answer_stats(&mut self, token: usize, group: StatsGroup, out: &mut Vec<u8>) {
        match group {
            StatsGroup::General => self.report(token).general(out),
            StatsGroup::Settings => self.report(token).settings(out),
            StatsGroup::Conns => self.report(token).conns(out),
            StatsGroup::Detail(Detail::Dump) => self.report(token).detail_dump(out),
            StatsGroup::Items | StatsGroup::CacheDump { .. } => stats::no_slab_classes(out),
            StatsGroup::Slabs => stats::no_slab_pages(out),
            StatsGroup::Sizes => stats::sizes_not_tracked(out),
            StatsGroup::Extstore => stats::no_extstore(out),
            StatsGroup::Reset => {
                self.counters.reset();
                self.backend.counters.reset();
                out.extend_from_slice(reply::RESET);
            }
            StatsGroup::Detail(on @ (Detail::On | Detail::Off)) => {
                self.backend.counters.set_detail(on == Detail::On);
                out.extend_from_slice(reply::OK);
            }
        }
    }

    /// What `stats` and `show` read, for a request on connection `token`.
    fn report(&self, token: usize) -> Report<'_, E> {
        Report {
            cluster: &self.settings.cluster,
            config: &self.settings.node,
            members: &self.settings.members,
            started: self.started,
            now: self.millis(),
            counters: &self.counters,
            backend: &self.backend.counters,
            node: &self.node,
            peers: self.peers.as_ref(),
            durable: self.durable.as_ref().map(|d| (d, self.held.len())),
            listener: self.listener.as_ref(),
            conns: &self.conns,
            spare_buffers: &self.spare_buffers,
            asking: token,
        }
    }
}

/// memcached's `slabs reassign` where no class has a page to spare, which
/// is mckv's store (it has no slab pages): the same class twice, a class
/// out of range (`-1`, "any class", finds none), or no spare page.
fn reassign(source: i32, destination: i32) -> &'static [u8] {
    let classes = 0..=LARGEST_SLAB_CLASS;
    if source == destination {
        reply::REASSIGN_SAME
    } else if !classes.contains(&source) || !classes.contains(&destination) {
        reply::REASSIGN_BAD_CLASS
    } else {
        reply::REASSIGN_NO_SPARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassign_answers_as_memcached_with_no_spare_pages() {
        assert_eq!(reassign(3, 3), reply::REASSIGN_SAME);
        assert_eq!(reassign(-1, -1), reply::REASSIGN_SAME);
        assert_eq!(reassign(-1, 2), reply::REASSIGN_BAD_CLASS);
        assert_eq!(reassign(1, 40), reply::REASSIGN_BAD_CLASS);
        assert_eq!(reassign(i32::MIN, 1), reply::REASSIGN_BAD_CLASS);
        assert_eq!(reassign(0, 39), reply::REASSIGN_NO_SPARE);
        assert_eq!(reassign(1, 2), reply::REASSIGN_NO_SPARE);
    }
}
