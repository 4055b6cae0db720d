//! Membership and failure detection, as a pure state machine: what this
//! node knows of each peer (heard from when, which run, up, left) and
//! whether this node itself was refused by a peer (fenced).
//!
//! ```text
//!  hello (peer, incarnation) ──► taken (a new run: it restarted empty) ──► heard
//!  welcome from peer ──────────► it took this node's hello: this run is its member
//!  frame from peer at `now` ───► heard: a down peer that welcomed us comes up
//!  tick at `now` ──────────────► silent for over `timeout`: down
//!  leave ──────────────────────► left (down, stays down until it says hello again)
//!  refusal from a peer ────────► fenced: this node must not serve
//! ```
//!
//! A peer is up only once it has both been heard and welcomed this node's
//! run: a node that restarted must not count peers as up (and serve) before
//! they have answered its hello, since they may yet refuse it.
//!
//! Time is passed in: milliseconds on a clock of the host's choosing (the
//! server's since start, the simulator's steps), so the same detector runs
//! in the real node and in the simulation. It never reads a clock and never
//! touches a socket; the socket layer reports what it read, and this module
//! alone says whether a peer is up. A link that stays open but delivers
//! nothing (no RST, no FIN) is noticed the same way as a dead peer: by
//! silence.

use std::collections::BTreeMap;

use super::NodeId;

/// Milliseconds on the host's clock.
pub type Millis = u64;

/// What this node knows of one peer.
#[derive(Debug, Clone, Default)]
pub struct Member {
    /// When it was last heard from, if ever.
    pub last_heard: Option<Millis>,
    pub up: bool,
    /// Its run we took the last hello from.
    pub incarnation: Option<u64>,
    /// Its run that took this node's hello, if one did.
    pub welcomed_by: Option<u64>,
    /// It said it was leaving.
    pub left: bool,
    /// What it last said of itself: operations waiting, operations served.
    pub load: Load,
}

impl Member {
    /// Its state as `show` prints it.
    pub fn state(&self) -> &'static str {
        match (self.up, self.left) {
            (true, _) => "up",
            (false, true) => "left",
            (false, false) => "down",
        }
    }
}

/// A node's load as it reports it in every frame, for `show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub pending: u64,
    pub ops: u64,
}

/// A peer went up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub peer: NodeId,
    pub up: bool,
}

/// How a hello compares with what was known of its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The first run heard of, or the one already known.
    Known,
    /// A run other than the one known: the peer restarted and lost its memory.
    New,
}

/// What one node knows of its peers.
#[derive(Debug)]
pub struct Membership {
    peers: BTreeMap<NodeId, Member>,
    /// Silence longer than this makes a peer down.
    timeout: Millis,
    /// Why this node must not serve: a peer refused it.
    fenced: Option<String>,
}

impl Membership {
    pub fn new(peers: impl IntoIterator<Item = NodeId>, timeout: Millis) -> Membership {
        Membership {
            peers: peers.into_iter().map(|p| (p, Member::default())).collect(),
            timeout,
            fenced: None,
        }
    }

    pub fn members(&self) -> impl Iterator<Item = (NodeId, &Member)> {
        self.peers.iter().map(|(&id, m)| (id, m))
    }

    pub fn member(&self, peer: NodeId) -> Option<&Member> {
        self.peers.get(&peer)
    }

    /// Milliseconds of silence after which a peer is down.
    pub fn timeout(&self) -> Millis {
        self.timeout
    }

    pub fn up_count(&self) -> usize {
        self.peers.values().filter(|m| m.up).count()
    }

    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// How a hello of run `incarnation` from `peer` compares with what is
    /// known; `None` for a node that is not a peer of this cluster.
    pub fn run_of(&self, peer: NodeId, incarnation: u64) -> Option<Run> {
        let member = self.peers.get(&peer)?;
        Some(match member.incarnation {
            Some(known) if known != incarnation => Run::New,
            _ => Run::Known,
        })
    }

    /// The hello of run `incarnation` from `peer` is taken at `now`. A new
    /// run has not left, whatever the one before it said.
    pub fn take_hello(&mut self, peer: NodeId, incarnation: u64, now: Millis) -> Option<Change> {
        let member = self.peers.get_mut(&peer)?;
        if member.incarnation != Some(incarnation) {
            member.incarnation = Some(incarnation);
            member.left = false;
        }
        self.heard(peer, now)
    }

    /// `peer` was heard from at `now`: a peer that was down comes up
    /// (unless it left, for which a new run's hello is needed, or the run
    /// we know of it has not welcomed this node).
    pub fn heard(&mut self, peer: NodeId, now: Millis) -> Option<Change> {
        let member = self.peers.get_mut(&peer)?;
        member.last_heard = Some(now);
        let welcomed = member.welcomed_by.is_some() && member.welcomed_by == member.incarnation;
        if member.left || !welcomed {
            return None;
        }
        Self::set_up(peer, member, true)
    }

    /// Run `incarnation` of `peer` took this node's hello at `now` (its
    /// welcome may come before its own hello: it counts once that run's
    /// hello is taken too).
    pub fn welcome(&mut self, peer: NodeId, incarnation: u64, now: Millis) -> Option<Change> {
        let member = self.peers.get_mut(&peer)?;
        member.welcomed_by = Some(incarnation);
        let recent = member
            .last_heard
            .is_some_and(|at| now.saturating_sub(at) <= self.timeout);
        match recent {
            true => self.heard(peer, now),
            false => None,
        }
    }

    /// What `peer` said of its load in its last frame.
    pub fn report(&mut self, peer: NodeId, load: Load) {
        if let Some(member) = self.peers.get_mut(&peer) {
            member.load = load;
        }
    }

    /// `peer` said it is leaving.
    pub fn left(&mut self, peer: NodeId) -> Option<Change> {
        let member = self.peers.get_mut(&peer)?;
        member.left = true;
        Self::set_up(peer, member, false)
    }

    /// `peer` refused this node: it must not serve from now on.
    pub fn fence(&mut self, peer: NodeId, why: &str) {
        self.fenced = Some(format!("node {peer} refused this node: {why}"));
    }

    /// At `now`: every up peer silent for over the timeout goes down.
    pub fn tick(&mut self, now: Millis, changes: &mut Vec<Change>) {
        for (&peer, member) in self.peers.iter_mut() {
            let silent = member
                .last_heard
                .is_none_or(|at| now.saturating_sub(at) > self.timeout);
            if member.up && silent {
                changes.extend(Self::set_up(peer, member, false));
            }
        }
    }

    fn set_up(peer: NodeId, member: &mut Member, up: bool) -> Option<Change> {
        (member.up != up).then(|| {
            member.up = up;
            Change { peer, up }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_peers() -> Membership {
        Membership::new([1, 2], 500)
    }

    #[test]
    fn a_peer_is_up_once_heard_and_down_after_the_timeout_of_silence() {
        let mut m = two_peers();
        assert_eq!(m.take_hello(1, 7, 90), None, "it has not welcomed us yet");
        assert_eq!(m.welcome(1, 7, 100), Some(Change { peer: 1, up: true }));
        assert_eq!(m.heard(1, 300), None, "already up");
        let mut changes = Vec::new();
        m.tick(800, &mut changes);
        assert!(
            changes.is_empty(),
            "500 ms of silence is not over the timeout"
        );
        m.tick(801, &mut changes);
        assert_eq!(changes, [Change { peer: 1, up: false }]);
        assert_eq!(m.heard(1, 900), Some(Change { peer: 1, up: true }));
        assert_eq!(m.welcome(2, 3, 1000), None, "welcomed, never heard from");
        assert!(!m.member(2).unwrap().up);
    }

    #[test]
    fn a_new_run_is_told_apart() {
        let mut m = two_peers();
        assert_eq!(m.run_of(1, 7), Some(Run::Known), "the first run heard of");
        m.welcome(1, 7, 0);
        m.take_hello(1, 7, 0);
        assert_eq!(m.run_of(1, 7), Some(Run::Known));
        assert_eq!(m.run_of(1, 8), Some(Run::New));
        assert_eq!(m.run_of(5, 1), None, "not a peer of this cluster");
    }

    #[test]
    fn a_peer_that_left_stays_down_until_it_says_hello_again() {
        let mut m = two_peers();
        m.welcome(2, 3, 0);
        m.take_hello(2, 3, 0);
        assert_eq!(m.left(2), Some(Change { peer: 2, up: false }));
        assert_eq!(m.heard(2, 5), None);
        assert_eq!(
            m.take_hello(2, 3, 6),
            None,
            "its run redialing while it stops"
        );
        assert_eq!(m.member(2).unwrap().state(), "left");
        assert_eq!(
            m.take_hello(2, 4, 10),
            None,
            "a new run, not yet welcoming us"
        );
        assert_eq!(m.welcome(2, 4, 11), Some(Change { peer: 2, up: true }));
    }

    #[test]
    fn a_welcome_counts_for_the_run_that_gave_it() {
        let mut m = two_peers();
        assert_eq!(m.welcome(1, 7, 0), None, "its hello has not come yet");
        assert_eq!(m.take_hello(1, 7, 1), Some(Change { peer: 1, up: true }));
        // It restarts: its new run is taken (say, in eventual mode) but has
        // not welcomed this node, so it is not up on the old run's welcome.
        let mut changes = Vec::new();
        m.tick(600, &mut changes);
        assert_eq!(changes, [Change { peer: 1, up: false }]);
        assert_eq!(m.take_hello(1, 8, 601), None);
        assert_eq!(m.welcome(1, 8, 602), Some(Change { peer: 1, up: true }));
    }

    #[test]
    fn a_refusal_fences_this_node() {
        let mut m = two_peers();
        assert_eq!(m.fenced(), None);
        m.fence(1, "it restarted");
        assert_eq!(m.fenced(), Some("node 1 refused this node: it restarted"));
    }
}
