//! Who wrote what, and what a replica holds of it: every write is made by
//! an origin and numbered; a replica's [`Coverage`] says, per origin, up to
//! which number it holds every write. Eventual and causal mode both use it
//! to send in a sync answer only what the asker lacks; causal mode's
//! [`Gate`] also holds back a peer's write until its causes are applied.
//!
//! **Origins and sequence numbers.** A node's run is an [`Origin`]: a
//! restarted node comes back empty, remembers nothing it wrote, and writes
//! as a new origin. Each write an origin makes (a client's write, or a
//! delete of what its store evicted) takes the next sequence number of
//! that origin, 1, 2, 3, ... Pushes carry their origin and number, and so
//! do the versions of a sync answer (the version log keeps both per key).
//!
//! **What coverage claims.** `coverage[o] = n` means: this replica has
//! applied every write of `o` numbered up to `n`, so for each key it holds
//! that write's version or a newer one (last writer wins keeps the highest
//! stamp; a tombstone is forgotten only once every peer holds it or newer,
//! and an eviction is a newer delete). A replica's coverage moves in two
//! ways. (1) It applies a pushed write numbered one past its coverage of
//! that origin (and, in eventual mode, any later ones it applied out of
//! order that now follow on). (2) It applies a whole sync answer, then
//! takes the larger number of each origin from the answering node's
//! coverage when it collected the answer: the answer held every key that
//! changed there since the asker's last sync, except those the asker
//! already covered, and the asker holds the rest from that last sync, so
//! afterwards the asker holds, per key, the answering node's version or a
//! newer one, and with it everything that node's coverage claimed.
//!
//! **A summary saves resending.** A sync request carries the asker's
//! coverage (as its store side last reported it: an older coverage claims
//! less, which is safe); the answering node leaves out every version whose
//! write the asker covers, by the claim above. Without it an answer resent
//! everything changed since the last sync, the writes the asker had been
//! pushed by their origins included. So an answer is only good for the run
//! that asked: a node that crashed and came back empty covers nothing its
//! earlier run did, and takes nothing from an answer collected for it
//! (requests carry the asker's run, answers echo it).
//!
//! **Causal mode: dependencies.** A local write depends on everything its
//! node had applied when it was made: its [`Cause`] carries the node's
//! coverage then (without its own origin, whose earlier writes the sequence
//! number already implies). That covers a session's causal past: a session
//! is a client connection, which talks to one node, so everything it read
//! or wrote was applied there, and a read there never waits. (Two
//! connections of one application are two sessions; a library that spreads
//! keys over several nodes gets causal order per node, not across them.)
//!
//! **Causal mode: a push leaves out what its receiver covers.** A push's
//! dependencies go on the wire without the entries its receiver is known
//! to cover: those at or below what the receiver's run said it covers in
//! its last sync request (`message.rs`, `Gossip::receiver_covers`). Its
//! gate would find them held anyway: a run's coverage of what it applied
//! only grows (a hole stops what it *tells*, not what it applied). So
//! this holds only for the run that said it, and only on a link that run
//! welcomed: a peer that restarted is a new run, empty, and its hello (on
//! its own link) may reach us after our frames reach it on ours, so the
//! engine ties the coverage to the run that welcomed its link, and drops
//! that tie when the link breaks. This keeps a push's dependencies to the
//! origins whose writes the receiver may still lack: the entries of a
//! node's earlier runs, which stay in coverage for good, soon go nowhere.
//!
//! **Causal mode: pushes are gated.** A peer's pushed write `w` of origin
//! `o` is applied only when this replica holds `o`'s writes up to `w`'s
//! number minus one and covers `w`'s dependencies; until then it waits
//! here. Each applied write moves the coverage on, which may release
//! others. So what a replica applies is always closed under causes: if it
//! holds a write, it holds that write's causes, and every read here sees a
//! causally closed set of writes.
//!
//! **Causal mode: anti-entropy merges states, not writes.** A store keeps
//! one version per key, so a peer cannot replay every write another node
//! lacks; it answers with its current versions, as above. A replica's
//! state is, per key, the highest-stamped write of its causally closed set.
//! Merging two such states key by key keeps the highest stamp, which is
//! exactly the state of the union of the two sets, and a union of closed
//! sets is closed: so the asker applies the whole answer at once (in one
//! piece of store work, so no read sees half of it), then takes the
//! answering node's coverage. An answer in parts is kept aside until its
//! last part, or staged out of sight and swapped in whole (`staging.rs`
//! says why that is the same step), and the coverage that goes with it is
//! the last part's (see the engine's module doc). Waiting pushes the merged coverage holds are
//! dropped; others may now be released.
//!
//! **Convergence by stamp (causal+).** Stamps are Lamport times: a node's
//! clock has seen the stamp of everything it applied, so a write is stamped
//! above its causes, and the order of stamps is one order of all writes
//! that extends causal order. Every replica keeps per key the highest
//! stamp, so replicas that applied the same writes hold the same values,
//! and no session sees concurrent writes in two orders.
//!
//! **Tombstones.** A delete is a write like any other. The version log
//! forgets a tombstone once every peer has synced past it; a waiting push
//! of an older write of the same key would then come back as news, so a
//! key with a write waiting here keeps its tombstone.
//!
//! **A write the store cannot keep** (a value over its limits, or a full
//! store with `eviction = none`) would leave a hole in a causally closed
//! set: in causal mode its key becomes a delete of this node, stamped above
//! every version held and pushed like an eviction, so no replica shows
//! what followed the write without it. (Eventual mode takes it as held, as
//! asking again would only be refused again.)
//!
//! **A claim stops at what is lost.** A write counted as applied whose
//! version the store then refused (eventual mode) or lost (a memcached
//! that evicts on its own, found when an answer reads it) makes a hole:
//! the coverage this replica tells others stops below it, for the rest of
//! its run, or an asker would leave the write out of its answers and pass
//! the false claim on, and the replica would never get it again.
//!
//! **Nothing waits for ever.** Dropping a waiting write is always safe:
//! anti-entropy brings what it carried, from any node that applied it. So
//! a write still waiting after [`WAIT_ROUNDS`] sync rounds is dropped
//! (its causes may have died with a crashed node that pushed it to no one
//! else), as is one that finds more than [`WAITING_LIMIT`] bytes waiting,
//! and eventual mode's out-of-order numbers beyond [`AHEAD_LIMIT`] per
//! origin (which only delays coverage). All are counted.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use super::version::Version;
use crate::cluster::wire::{self, Reader, WireError};
use crate::cluster::NodeId;

/// Bytes of waiting writes beyond which a new one is dropped.
pub const WAITING_LIMIT: usize = 64 << 20;

/// Sync rounds after which a write still waiting is dropped.
pub const WAIT_ROUNDS: u64 = 4;

/// One run of one node: the author of writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub node: NodeId,
    pub run: u64,
}

/// Per origin, the number up to which every write of that origin is held:
/// a version vector, sorted by origin. Origins absent hold nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage(Vec<(Origin, u64)>);

impl Coverage {
    pub fn get(&self, origin: Origin) -> u64 {
        match self.0.binary_search_by_key(&origin, |(o, _)| *o) {
            Ok(at) => self.0[at].1,
            Err(_) => 0,
        }
    }

    fn set(&mut self, origin: Origin, seq: u64) {
        *self.entry(origin) = seq;
    }

    /// `origin`'s number, to move in place: one search (an origin absent
    /// is added, holding nothing).
    fn entry(&mut self, origin: Origin) -> &mut u64 {
        let at = match self.0.binary_search_by_key(&origin, |(o, _)| *o) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (origin, 0));
                at
            }
        };
        &mut self.0[at].1
    }

    /// Whether every write `deps` names is held here.
    pub fn covers(&self, deps: &Coverage) -> bool {
        deps.0.iter().all(|&(origin, seq)| self.get(origin) >= seq)
    }

    /// Takes the larger number of each origin; whether any moved.
    fn merge(&mut self, other: &Coverage) -> bool {
        let mut moved = false;
        for &(origin, seq) in &other.0 {
            if seq > self.get(origin) {
                self.set(origin, seq);
                moved = true;
            }
        }
        moved
    }

    /// This coverage without `origin`'s entry.
    fn without(&self, origin: Origin) -> Coverage {
        Coverage(
            self.0
                .iter()
                .copied()
                .filter(|(o, _)| *o != origin)
                .collect(),
        )
    }

    pub fn entries(&self) -> &[(Origin, u64)] {
        &self.0
    }

    pub fn from_entries(mut entries: Vec<(Origin, u64)>) -> Coverage {
        entries.sort_unstable();
        entries.dedup_by_key(|(o, _)| *o);
        Coverage(entries)
    }

    /// Bytes on the wire: a count, then a node, run and number per origin.
    pub fn wire_len(&self) -> usize {
        4 + self.0.len() * 20
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_beyond(&Coverage::default(), out);
    }

    /// [`Coverage::encode`] of the entries above what `covered` holds: a
    /// write's dependencies as a receiver covering `covered` still needs
    /// them (it holds the rest).
    pub fn encode_beyond(&self, covered: &Coverage, out: &mut Vec<u8>) {
        let beyond = |&&(origin, seq): &&(Origin, u64)| seq > covered.get(origin);
        wire::put_u32(out, self.0.iter().filter(beyond).count() as u32);
        for (origin, seq) in self.0.iter().filter(beyond) {
            wire::put_u32(out, origin.node);
            wire::put_u64(out, origin.run);
            wire::put_u64(out, *seq);
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Coverage, WireError> {
        let n = r.count(20)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let origin = Origin {
                node: r.u32()?,
                run: r.u64()?,
            };
            entries.push((origin, r.u64()?));
        }
        Ok(Coverage::from_entries(entries))
    }
}

/// Who wrote a version, its number among that origin's writes, and, on a
/// causal node's push, what it depends on. Dependencies are shared by the
/// writes made between two changes of their node's coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub origin: Origin,
    pub seq: u64,
    /// A causal node's push: its node's coverage when it was written.
    pub deps: Option<Arc<Coverage>>,
}

/// Eventual mode: out-of-order numbers kept per origin beyond which more
/// are dropped (coverage then waits for a sync).
pub const AHEAD_LIMIT: usize = 1 << 16;

/// The store side's record of origins: numbers local writes, keeps the
/// coverage of what is applied, and in causal mode holds back writes
/// waiting for their causes.
#[derive(Debug)]
pub struct Gate {
    me: Origin,
    causal: bool,
    applied: Coverage,
    /// Causal mode: the dependencies of the next local write: `applied`
    /// without our own origin, built again once another origin's entry moved.
    deps: Option<Arc<Coverage>>,
    /// Causal mode: writes waiting for their causes, each with the sync
    /// round it came in.
    waiting: BTreeMap<Origin, BTreeMap<u64, (u64, Version)>>,
    waiting_bytes: usize,
    dropped: u64,
    /// Sync rounds so far.
    round: u64,
    /// Eventual mode: numbers applied past a gap in an origin's pushes.
    ahead: BTreeMap<Origin, BTreeSet<u64>>,
    /// Per origin, the lowest number of a write counted as applied that
    /// this replica does not hold (its store refused or lost it): what it
    /// tells others it covers stops below it.
    holes: BTreeMap<Origin, u64>,
}

impl Gate {
    /// Eventual mode's record for origin `me`: writes are applied as they come.
    pub fn eventual(me: Origin) -> Gate {
        Gate {
            me,
            causal: false,
            applied: Coverage::default(),
            deps: None,
            waiting: BTreeMap::new(),
            waiting_bytes: 0,
            dropped: 0,
            round: 0,
            ahead: BTreeMap::new(),
            holes: BTreeMap::new(),
        }
    }

    /// Causal mode's gate for origin `me`.
    pub fn causal(me: Origin) -> Gate {
        Gate {
            causal: true,
            ..Gate::eventual(me)
        }
    }

    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// A sync round began: drops the writes that have waited too long.
    pub fn next_round(&mut self) {
        self.round += 1;
        let round = self.round;
        let mut freed = 0;
        let mut dropped = 0;
        for queue in self.waiting.values_mut() {
            queue.retain(|_, (came, version)| {
                let keep = round - *came < WAIT_ROUNDS;
                if !keep {
                    freed += version.approximate_len();
                    dropped += 1;
                }
                keep
            });
        }
        self.waiting.retain(|_, queue| !queue.is_empty());
        self.waiting_bytes -= freed;
        self.dropped += dropped;
    }

    /// Numbers this node's new versions as its next writes; in causal mode
    /// each depends on everything applied here.
    pub fn number_local(&mut self, versions: &mut [Version]) {
        // No entry for our origin until it wrote: a coverage claims no
        // origin that holds nothing.
        if versions.is_empty() {
            return;
        }
        let me = self.me;
        // Dependencies leave our own origin out, so numbering our writes
        // leaves them as they are: one set serves the whole batch.
        let deps = self.causal.then(|| {
            self.deps
                .get_or_insert_with(|| Arc::new(self.applied.without(me)))
                .clone()
        });
        // One search of our origin for the batch, not two per write.
        let held = self.applied.entry(me);
        for version in versions {
            *held = held.saturating_add(1);
            version.cause = Some(Cause {
                origin: me,
                seq: *held,
                deps: deps.clone(),
            });
        }
    }

    /// A peer's pushed write, applied through `apply` (which says whether
    /// the store took it) unless already covered. In causal mode it waits
    /// until its causes are applied, and releases what waited for it.
    pub fn offer(&mut self, version: Version, apply: &mut impl FnMut(&Version) -> bool) {
        let Some(cause) = &version.cause else {
            apply(&version);
            return;
        };
        let (origin, seq) = (cause.origin, cause.seq);
        if seq <= self.applied.get(origin) {
            return;
        }
        if !self.causal {
            if apply(&version) {
                self.applied_out_of_order(origin, seq);
            }
            return;
        }
        if self.ready(origin, seq, cause) {
            if apply(&version) {
                self.advance(origin, seq);
                self.release(apply);
            } else {
                self.dropped += 1;
            }
            return;
        }
        let len = version.approximate_len();
        if self.waiting_bytes + len > WAITING_LIMIT {
            self.dropped += 1;
            return;
        }
        self.waiting_bytes += len;
        let queue = self.waiting.entry(origin).or_default();
        if let Some((_, old)) = queue.insert(seq, (self.round, version)) {
            self.waiting_bytes -= old.approximate_len();
        }
    }

    /// A sync answer was applied whole: what it covered is held now.
    pub fn merge(&mut self, coverage: &Coverage, apply: &mut impl FnMut(&Version) -> bool) {
        if self.applied.merge(coverage) {
            self.deps = None;
        }
        let origins: Vec<Origin> = self.ahead.keys().copied().collect();
        for origin in origins {
            self.follow_on(origin);
        }
        self.release(apply);
    }

    /// The coverage of what is held here, for others: a sync request's
    /// summary, or what goes with a sync answer. Below the holes.
    pub fn coverage(&self) -> Coverage {
        let mut held = self.applied.clone();
        for (origin, hole) in &self.holes {
            if held.get(*origin) >= *hole {
                held.set(*origin, hole.saturating_sub(1));
            }
        }
        held
    }

    /// The write `cause` names counts as applied but is not held here (the
    /// store refused or lost it): no peer may be told it is, or it would
    /// leave it out of every answer to us, and pass the claim on.
    pub fn lost(&mut self, cause: &Cause) {
        // Numbers start at 1: a 0 (from a faulty peer) names no write.
        if cause.seq == 0 {
            return;
        }
        let hole = self.holes.entry(cause.origin).or_insert(cause.seq);
        *hole = (*hole).min(cause.seq);
    }

    /// Per origin, how many writes wait for their causes.
    pub fn waiting(&self) -> Vec<(Origin, usize)> {
        self.waiting
            .iter()
            .map(|(origin, queue)| (*origin, queue.len()))
            .collect()
    }

    /// Writes dropped: waited too long, found too many waiting, or
    /// refused by the store when their turn came.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The keys of waiting writes (their tombstones must stay).
    pub fn waiting_keys(&self) -> HashSet<&[u8]> {
        self.waiting
            .values()
            .flat_map(|queue| queue.values().map(|(_, v)| &v.key[..]))
            .collect()
    }

    /// Eventual mode: write `seq` of `origin` is applied; coverage moves
    /// on if it follows on, else the number waits for the gap to close.
    fn applied_out_of_order(&mut self, origin: Origin, seq: u64) {
        if seq == self.applied.get(origin).saturating_add(1) {
            self.applied.set(origin, seq);
        } else {
            let ahead = self.ahead.entry(origin).or_default();
            if ahead.len() < AHEAD_LIMIT {
                ahead.insert(seq);
            }
        }
        self.follow_on(origin);
    }

    /// Eventual mode: takes in the numbers applied ahead of `origin`'s
    /// coverage that now follow on, and forgets those it passed.
    fn follow_on(&mut self, origin: Origin) {
        let Some(ahead) = self.ahead.get_mut(&origin) else {
            return;
        };
        let mut held = self.applied.get(origin);
        while let Some(&next) = ahead.first() {
            if next > held.saturating_add(1) {
                break;
            }
            held = held.max(next);
            ahead.pop_first();
        }
        self.applied.set(origin, held);
        if ahead.is_empty() {
            self.ahead.remove(&origin);
        }
    }

    fn ready(&self, origin: Origin, seq: u64, cause: &Cause) -> bool {
        seq == self.applied.get(origin).saturating_add(1) && self.covers_deps(cause)
    }

    fn covers_deps(&self, cause: &Cause) -> bool {
        cause.deps.as_ref().is_none_or(|d| self.applied.covers(d))
    }

    fn advance(&mut self, origin: Origin, seq: u64) {
        self.applied.set(origin, seq);
        if origin != self.me {
            self.deps = None;
        }
    }

    /// Applies waiting writes whose causes are held, until none is, and
    /// drops those already covered. A write the store could not take is
    /// dropped too: its origin's later writes wait until a sync brings it.
    fn release(&mut self, apply: &mut impl FnMut(&Version) -> bool) {
        loop {
            let mut progressed = false;
            let origins: Vec<Origin> = self.waiting.keys().copied().collect();
            for origin in origins {
                progressed |= self.release_origin(origin, apply);
            }
            self.waiting.retain(|_, queue| !queue.is_empty());
            if !progressed {
                return;
            }
        }
    }

    /// Releases `origin`'s waiting writes in order while each is ready;
    /// whether any was applied.
    fn release_origin(&mut self, origin: Origin, apply: &mut impl FnMut(&Version) -> bool) -> bool {
        let mut progressed = false;
        loop {
            let first = self.waiting.get(&origin).and_then(|q| q.first_key_value());
            let Some((seq, ready)) = first.map(|(&seq, (_, version))| {
                let cause = version.cause.as_ref();
                (seq, cause.is_some_and(|c| self.ready(origin, seq, c)))
            }) else {
                break;
            };
            let held = self.applied.get(origin);
            if seq > held && !ready {
                break;
            }
            let queue = self.waiting.get_mut(&origin);
            let Some((_, version)) = queue.and_then(|q| q.remove(&seq)) else {
                break;
            };
            self.waiting_bytes -= version.approximate_len();
            if seq <= held {
                continue; // a sync brought it, or something newer
            }
            if !apply(&version) {
                self.dropped += 1;
                break;
            }
            self.advance(origin, seq);
            progressed = true;
        }
        progressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::eventual::version::State;
    use crate::cluster::Stamp;

    const A: Origin = Origin { node: 1, run: 10 };
    const B: Origin = Origin { node: 2, run: 20 };
    const C: Origin = Origin { node: 3, run: 30 };

    fn coverage(entries: &[(Origin, u64)]) -> Coverage {
        Coverage::from_entries(entries.to_vec())
    }

    fn write(key: &str, origin: Origin, seq: u64, deps: &[(Origin, u64)]) -> Version {
        Version {
            key: key.as_bytes().to_vec(),
            stamp: Stamp {
                ts: seq,
                node: origin.node,
            },
            state: State::Deleted,
            cause: Some(Cause {
                origin,
                seq,
                deps: Some(Arc::new(coverage(deps))),
            }),
        }
    }

    /// Offers `versions` to a gate of node 3 and returns the keys applied, in order.
    fn applied_order(gate: &mut Gate, versions: Vec<Version>) -> Vec<String> {
        let mut order = Vec::new();
        for version in versions {
            gate.offer(version, &mut |v: &Version| {
                order.push(String::from_utf8_lossy(&v.key).into_owned());
                true
            });
        }
        order
    }

    #[test]
    fn a_write_waits_for_its_causes_and_its_origins_earlier_writes() {
        let mut gate = Gate::causal(C);
        let x = write("x", A, 1, &[]);
        let y = write("y", B, 1, &[(A, 1)]);
        let z = write("z", A, 2, &[]);
        assert_eq!(
            applied_order(&mut gate, vec![y.clone(), z]),
            Vec::<String>::new()
        );
        assert_eq!(gate.waiting(), vec![(A, 1), (B, 1)]);
        assert_eq!(applied_order(&mut gate, vec![x]), ["x", "z", "y"]);
        assert!(gate.waiting().is_empty());
        assert_eq!(
            applied_order(&mut gate, vec![y]),
            Vec::<String>::new(),
            "already held"
        );
    }

    #[test]
    fn writes_wait_per_origin_so_two_runs_of_one_node_are_counted_apart() {
        // Node 1 restarted: run 10 wrote x, run 11 (which never saw x)
        // wrote y and z after reading w of node 2.
        const A_AGAIN: Origin = Origin { node: 1, run: 11 };
        let mut gate = Gate::causal(C);
        let w = write("w", B, 1, &[]);
        let x = write("x", A, 2, &[]);
        let y = write("y", A_AGAIN, 1, &[(B, 1)]);
        let z = write("z", A_AGAIN, 2, &[(B, 1)]);
        assert!(applied_order(&mut gate, vec![x, y, z]).is_empty());
        assert_eq!(gate.waiting(), vec![(A, 1), (A_AGAIN, 2)]);
        assert_eq!(applied_order(&mut gate, vec![w]), ["w", "y", "z"]);
        assert_eq!(gate.waiting(), vec![(A, 1)], "x still lacks its run's 1");
        applied_order(&mut gate, vec![write("v", A, 1, &[])]);
        assert!(gate.waiting().is_empty(), "no entry left for a run");
    }

    #[test]
    fn a_merged_coverage_drops_what_it_holds_and_releases_the_rest() {
        let mut gate = Gate::causal(C);
        let late = write("late", A, 3, &[(B, 1)]);
        let held = write("held", A, 2, &[]);
        applied_order(&mut gate, vec![late, held]);
        let mut order = Vec::new();
        gate.merge(&coverage(&[(A, 2), (B, 1)]), &mut |v: &Version| {
            order.push(v.key.clone());
            true
        });
        assert_eq!(order, [b"late".to_vec()]);
        assert_eq!(gate.coverage(), coverage(&[(A, 3), (B, 1)]));
    }

    #[test]
    fn local_writes_depend_on_what_is_applied_and_share_their_dependencies() {
        let mut gate = Gate::causal(C);
        applied_order(&mut gate, vec![write("x", A, 1, &[])]);
        let mut mine = vec![write("m", C, 0, &[]), write("n", C, 0, &[])];
        gate.number_local(&mut mine);
        let causes: Vec<&Cause> = mine.iter().map(|v| v.cause.as_ref().unwrap()).collect();
        assert_eq!((causes[0].seq, causes[1].seq), (1, 2));
        let deps: Vec<&Arc<Coverage>> = causes.iter().map(|c| c.deps.as_ref().unwrap()).collect();
        assert_eq!(**deps[0], coverage(&[(A, 1)]), "our own origin is implied");
        assert!(Arc::ptr_eq(deps[0], deps[1]));
    }

    #[test]
    fn a_write_the_store_refused_holds_back_its_origins_later_writes() {
        let mut gate = Gate::causal(C);
        gate.offer(write("x", A, 1, &[]), &mut |_: &Version| false);
        let order = applied_order(&mut gate, vec![write("y", A, 2, &[])]);
        assert!(order.is_empty(), "{order:?}");
        assert_eq!(gate.waiting(), vec![(A, 1)]);
    }

    #[test]
    fn a_write_still_waiting_after_a_few_rounds_is_dropped() {
        let mut gate = Gate::causal(C);
        applied_order(&mut gate, vec![write("y", B, 1, &[(A, 1)])]);
        for _ in 1..WAIT_ROUNDS {
            gate.next_round();
        }
        assert_eq!(gate.waiting(), vec![(B, 1)]);
        gate.next_round();
        assert!(gate.waiting().is_empty());
        assert_eq!(gate.dropped(), 1);
        let order = applied_order(&mut gate, vec![write("x", A, 1, &[])]);
        assert_eq!(order, ["x"], "y is for a sync to bring");
    }

    #[test]
    fn eventual_coverage_moves_on_once_a_gap_closes() {
        let mut gate = Gate::eventual(C);
        let pushed = |key, seq| write(key, A, seq, &[]);
        let order = applied_order(
            &mut gate,
            vec![pushed("a", 1), pushed("c", 3), pushed("d", 4)],
        );
        assert_eq!(order, ["a", "c", "d"], "applied as they come");
        assert_eq!(gate.coverage().get(A), 1, "2 is missing");
        applied_order(&mut gate, vec![pushed("b", 2)]);
        assert_eq!(gate.coverage().get(A), 4);
        gate.merge(&coverage(&[(A, 6)]), &mut |_: &Version| true);
        applied_order(&mut gate, vec![pushed("g", 7)]);
        assert_eq!(gate.coverage().get(A), 7);
    }

    #[test]
    fn what_is_told_stops_below_a_lost_write() {
        let mut gate = Gate::eventual(C);
        applied_order(
            &mut gate,
            (1..=5).map(|seq| write("k", A, seq, &[])).collect(),
        );
        let lost = |seq| Cause {
            origin: A,
            seq,
            deps: None,
        };
        gate.lost(&lost(0));
        assert_eq!(gate.coverage().get(A), 5, "0 names no write");
        gate.lost(&lost(4));
        gate.lost(&lost(3));
        assert_eq!(gate.coverage().get(A), 2);
        applied_order(&mut gate, vec![write("k", A, 6, &[])]);
        assert_eq!(gate.coverage().get(A), 2, "for the rest of the run");
    }

    #[test]
    fn coverage_crosses_the_wire() {
        let sent = coverage(&[(B, 7), (A, 3)]);
        let mut buf = Vec::new();
        sent.encode(&mut buf);
        assert_eq!(buf.len(), sent.wire_len());
        let got = Coverage::decode(&mut Reader::new(&buf)).unwrap();
        assert_eq!(got, sent);
    }
}
