//! The strong modes' engine: total-order broadcast with Lamport clocks
//! inside a view, and view changes agreed by a majority of the configured
//! nodes, as a pure state machine (no socket, no clock: inputs in,
//! [`Effect`]s out). Its message is [`Broadcast`]; its store side,
//! [`TotalOrderReplica`], applies what it delivers and moves snapshots.
//!
//! ```text
//!  on_client ──► stamp (ts, me) ──► queue (BinaryHeap by stamp) ──► deliver head ──► Apply
//!                     └─► outbox of every member ──► Broadcast ──► on_message at the members
//!  on_message ─► their proposals into the queue, their acks and clock noted ──► deliver
//!  on_tick ────► a member down, a node back, a member in another view: change the view
//! ```
//!
//! **Delivery inside a view.** Links are FIFO and a node stamps above every
//! clock it has seen. A node delivers the head of its queue, a proposal
//! `(ts, o)`, only when every member of the view holds it: the origin does
//! by definition, every other member `q` has said so in its cumulative ack.
//! When `q` acked it, `q`'s clock was at least `ts`, so anything `q`
//! proposes later is stamped above `ts`; anything `q` proposed earlier
//! reached us before its ack (FIFO). So no proposal stamped below the head
//! can still arrive, every member delivers the same sequence, and anything
//! delivered anywhere is held by every member. A linearizable read is
//! stamped locally and not shipped: it is delivered when every member has
//! echoed, in this view, a clock of ours at least its stamp, i.e. answered
//! a frame sent after the read was stamped. Then nothing stamped below it
//! can still arrive (it sees every write ordered before it), and no member
//! had left the view for a newer one when the read began (one that has
//! promised a newer ballot answers nothing in this view), so no write of a
//! newer view completed before the read. The origin replies when it
//! delivers, which is after the client asked: that makes the order
//! linearizable. Sequential mode orders writes the same way but serves
//! reads from the local replica at once, except that a read waits behind
//! the same session's writes that are not yet applied. Every frame carries
//! the ballot of its sender's view; a clock, an ack or a proposal of
//! another view is never counted.
//!
//! **Frames have a budget.** A frame carries at most about
//! `frame_budget` bytes of proposals (at least one), so a backlog for a
//! slow or returning peer goes in frames its link and the receiver's
//! message cap take. When the proposals queued for a peer pass the budget,
//! the backlog is *cut*: what a whole frame would say now (clock, echo,
//! acks, and the view-change messages queued so far) is held back, and the
//! backlog goes in *parts*, oldest proposals first, each carrying the clock
//! and echo of the last frame that had news and no acks; the backlog's last
//! part carries the held-back news. The argument above needs exactly that:
//! an ack or an echo is sent only after every proposal its sender made
//! before it, and a clock only once every proposal stamped below it is on
//! the link; the news of the cut was true when it was cut and stays true
//! (acks, clocks and echoes only grow). Proposals queued after the cut wait
//! for later frames, which the news does not cover, so news goes out once
//! per backlog however fast proposals come: acks and view-change messages
//! are delayed by at most one backlog, never starved. View-change messages
//! keep their place: those queued before the cut go with its news, as they
//! would have in the whole frame (and a receiver takes a frame's view-change
//! messages before its proposals, as ever). A node outside a view drops
//! what it had queued for its peers (nobody counts proposals outside a
//! view; they are in its own queue, so in its flush), so they never hold up
//! the view change's messages.
//!
//! **The queue has a limit.** An operation waits in a node's queue until
//! every member holds it, so a member that is up (it sends frames) but
//! slow to take what it is sent makes queues grow with every write. Once a
//! tick finds more than `queue_limit` bytes of operations waiting (64 MiB
//! unless set), the node refuses new writes ("the cluster is behind ...;
//! not applied": refused before they are stamped, so nothing of them is
//! anywhere) until a tick finds the queue under the limit. That bounds
//! the memory a slow member costs, and the view-change messages that carry
//! undelivered proposals (a flush holds at most a queue), to the limit plus
//! what one tick admits. Reads are not refused for it.
//!
//! **View changes** (Viewstamped Replication's, with Paxos-style ballots).
//! A view is a [`Ballot`] `(round, coordinator)` and its members, always a
//! majority of the configured nodes. When the failure detector says a
//! member is down, a node outside the view is up again, or a member left
//! the view (it restarted), the lowest-id node that is up coordinates a
//! higher ballot with the nodes it sees up. When it does not (it holds a
//! node the others hear left out, say), the next one up takes over after
//! `patience` ticks and each member of a serving view after it half a
//! patience later: two that took over together would preempt each other's
//! ballots in turn. A node in no serving view takes over after the
//! patience whatever its rank: its own `Prepare` tells the lowest that it
//! answers again.
//! A change that is not finishing is given up after `patience`, twice
//! that once the view is installed (the last member's `Started` may come
//! two one-way trips after the coordinator sent the view, to a member it
//! reached at once), and at once when its coordinator or, for the
//! coordinator, a member it waits for says it is leaving. A member that
//! gave up still installs the `StartView` of the ballot it flushed to
//! while it promised nothing since: idle, it refused every client and
//! counted nothing, so it holds what it flushed, and on a slow network the
//! others may have installed that view and wait for it.
//! 1. `Prepare(b)`: a node promises the highest ballot it has seen and
//!    refuses lower ones (`Nack`), so one coordinator per ballot means at
//!    most one view per ballot. From its promise on it counts nothing of
//!    its old view, so it acks nothing more there.
//! 2. `Flush`: each member sends the coordinator the ballot of the view it
//!    last installed (`normal`), whether it holds that view's whole state,
//!    and every proposal it holds that it has not delivered (a member
//!    waiting for a snapshot also how its view began: below, "A view whose
//!    sources are gone").
//! 3. With every member's flush, the coordinator takes the flushes of the
//!    highest `normal`; those that hold the state are the *sources*. None:
//!    the view that one was formed from, if a flusher holds its state
//!    ("A view whose sources are gone", below); else no view forms (safe,
//!    not live: someone with the state must come back). Otherwise
//!    `StartView(b, members, sources, start)`, `start` being the union of
//!    what those flushes hold, in stamp order.
//! 4. Every member installs it and tells every other (`Started`); a source
//!    delivers the start entries it has not delivered, and anything after
//!    them, only once every member started. A member without the state
//!    (restarted empty, or behind) is handed a snapshot of the store as of
//!    the end of the start sequence, in chunks, by the first source (the
//!    lowest whose data directory takes its log: "Data directories"); the
//!    member holds and acks new proposals meanwhile and delivers them once
//!    the snapshot is in. The source delivers nothing more until it has
//!    begun reading a snapshot: the store takes an *image* as the first
//!    chunk's work runs, after the start sequence's writes and before any
//!    later one (store work runs in order). An ordered memory store keeps
//!    that image while it applies writes (its table saves a copy of each
//!    item a write reaches first: see `store/dense.rs`), and so does a
//!    memcached backend (the keys it listed, and the record of each key a
//!    write reaches first, saved before that write: `store/key_image.rs`),
//!    so once its first chunk says so (with a data directory, once the log
//!    holds what it was read from: "Data directories") the source goes on
//!    delivering, and every chunk, also one read again after a lost link
//!    or for a member that chose later, is of the image. Each says where
//!    the image ends (the last write delivered before it), which is where
//!    the member stands once it installed the snapshot: it then delivers
//!    what it held, which is every write the source delivered since
//!    (delivery needed its ack).
//!    Delivery waits, as before, while the source hands a member the
//!    writes it missed (below): they end where delivery stopped, and a
//!    member that could take them takes the image instead once a write
//!    was delivered after it. It waits too for a store that keeps no
//!    image (read as it is, until the snapshot is out), and once more
//!    than `queue_limit` bytes of writes were delivered since the image:
//!    they wait in the members' queues, and the image's copies of what
//!    they changed in the store (about as many bytes; the bits the
//!    eviction clock clears are kept as bits, a `flush_all` keeps the
//!    whole store), until the snapshot is in. The image is dropped once no
//!    member is handed anything (every one said `Caught`) or the view ends.
//!    The source reads chunks as fast as the member installs them: the
//!    member says `Took` with how many chunks of the snapshot its store
//!    reported installed (`Report::ChunkInstalled`), not received, and the
//!    source reads one only while fewer than a window of those it sent are
//!    not said taken. That bounds the member's memory as well as the
//!    source's: within one attempt (one link from the source), a `Took` was
//!    true when said and the member's count only grows, so the source's
//!    count of installed chunks is never ahead of the member's, and the
//!    chunks the member holds uninstalled (queued for a store on a worker
//!    thread, which answers late) are at most a window. The exception is
//!    a source's lost link, after which it starts over: a `Took` of the
//!    attempt that ended, still on its way or said before the member took
//!    the next attempt's first chunk, counts the old attempt's chunks and
//!    may let the source send up to a window more early. There are at most
//!    a window of them (one per chunk the source had not heard taken), and
//!    one more each time the member's own link to it opens again; the next
//!    attempt's own `Took`s set the count right. It is pacing only: what
//!    a chunk holds and where it goes depend on nothing the `Took` says.
//!    Nobody serves a client before it holds the state of its view.
//!    The snapshot is the store exactly as the replicas hold it (an ordered
//!    store's dead items, order, eviction bits and sweep position too: see
//!    `store/memory.rs`), so the member goes on evicting and sweeping the
//!    same items as the others.
//!    A store on a worker thread (a memcached backend) answers late, so the
//!    store work that reads or installs a snapshot carries a tag, and a
//!    report for a snapshot a view change has since ended is dropped: a
//!    chunk read before the new view's start sequence was applied must not
//!    be handed over in it, nor an old install make the node serve. So a
//!    member forgets its install at its promise of a newer ballot, and
//!    takes no chunk of the old view after it (one taken would begin an
//!    install that could end once the newer view formed, and pass for its
//!    state without its start sequence). A member whose install fails
//!    asks for a new view (and a new snapshot) rather than serve a store
//!    missing part of it, as does one that hears
//!    nothing of its snapshot for a while; a source retries a failed read
//!    a few times, then gives up so that delivery, which waits while it
//!    reads, goes on.
//!
//! **A view whose sources are gone.** A view `L` may end before its
//! sources are heard again: the members that installed it without the
//! state wait for a source's snapshot, and the sources are cut off or
//! crashed (or never installed it: their `StartView` was lost). Then no
//! flusher holds `L`'s state, and a majority of the others would wait for
//! a source to come back. Instead the coordinator counts `L`'s members'
//! flushes for `B`, the latest started view `L` was formed from: the
//! sources are the holders of `B`'s state, as in step 3, and the start
//! sequence is what those flushed up to `L`'s floor `F`, then what `L`'s
//! members flushed.
//! That is `L`'s order up to every write `L` may have delivered:
//! - `L`'s state is `B`'s order up to `F`, then its start sequence `S`,
//!   which holds every write delivered anywhere in `B` above `F` (step 3;
//!   `StartView` carries `F`). A member that installed `L` without the
//!   state keeps `F` and `S` until it holds the state (`Began`) and
//!   flushes them, and flushes `B` as its base until then, also once `L`
//!   started.
//! - `B`'s holders hold `B`'s state with what they flush, as in step 3: a
//!   write `B` delivered is held by every member of `B`, and `B` delivers
//!   in stamp order, so what they flush up to `F` is `B`'s order from
//!   their state to `F`. What they flush above `F` and not in `S` was
//!   delivered nowhere, and may be stamped below writes of `S` that `L`
//!   delivered: it is left out (those clients were told nothing).
//! - In `L` a source delivers `S`, and each proposal after it, only once
//!   every member holds it (step 4 and "Delivery inside a view"), and a
//!   member without the state holds every proposal it acked until its
//!   snapshot is in. So any one member of `L` present flushes everything
//!   `L` delivered beyond `F`, and every member observed `S`'s last stamp
//!   when it installed `L`: what was proposed in `L` is stamped above
//!   `S`, and the start sequence, in stamp order, is `L`'s order.
//! - No view after `L` started (a present flusher would have installed
//!   it, majorities meeting). So the new view's sources deliver what `L`
//!   did, in its order, then what `L` never delivered.
//! - The new view holds `L`'s order, so it names `L` as its base: should
//!   it never start, its members' flushes count for `L`, whose holders
//!   are gone, and no view forms until one is back (were they to count
//!   for `B`, its holders' writes above `F` would come back, some of them
//!   ahead of what `L` delivered). The fallback goes back one view only.
//! - Only `B` itself: the members' flushes agree on it and on `F`, and no
//!   flush counts for a view between `B` and `L`. One that does looks
//!   started only because its members that never installed it are not
//!   here; a view between them that started before `L` formed would have
//!   been `L`'s base instead, but one that looks started need not have,
//!   and its state need not hold what `L` delivered. The view then waits.
//!
//! **Catching up.** A member behind the view (cut off for a while, or
//! paused) that remembers it (it installed a view in this run) or
//! recovered its store exactly from its data directory, whose store is
//! intact and not rebuilt, is handed only the writes it missed when the
//! view's first source still keeps them: each node keeps the writes it
//! delivered, in order, within about `retain_limit` bytes of memory (8
//! MiB unless set, `catch_up_mb`; none when alone), from `retained_from`. Past that, and
//! for any other member, it is handed a snapshot as above.
//! - Why such a store needs only those writes: it holds exactly the
//!   writes up to its `delivered_upto`, applied in the cluster's order by
//!   the same ordered store (at each write's own time, with its own
//!   unique), from the empty store of the cluster's first start or an
//!   exact copy of a peer's (a snapshot carries dead items, order and
//!   clock too). So it is the store of every
//!   such node at that write, the claim that makes such a member a source
//!   when it reaches the floor (step 3). The source keeps every write it
//!   delivered after `retained_from`, and delivers nothing while it hands
//!   them (it hands none once it delivered a write after taking an image
//!   for a snapshot: step 4; a member that chooses later takes the image),
//!   so a member at `upto >= retained_from` lacks exactly those after
//!   `upto`, up to the view's state; delivering them there in order makes
//!   its store the source's, if it holds them in the source's order.
//! - Why past `order_from`, where the source's order began, and not at
//!   it: a view formed from the longest log whose source was rebuilt
//!   (below: recovered from key states, or a member of an earlier such
//!   view that did not take its snapshot) makes that store's order the
//!   cluster's from its prefix `S` on, and its `order_from` is `S`. Every
//!   store that copies it starts at a snapshot's end, at or past `S`, and
//!   takes that as its `order_from`; so does a recovered one, at its
//!   mark. A member still in the order replaced holds at most `S` (`S`
//!   was the longest prefix an intact store held, a node without the
//!   state delivers nothing, and one half way through a snapshot holds no
//!   prefix, nor recovers as exact: below), so at or below the source's
//!   `order_from` it may hold the same writes in another order, and past
//!   it it does not: `upto > order_from` is the rule. The one exception is
//!   a store that holds no write, the first start's empty one in any
//!   order. Of longest logs as long, one in the cluster's order is taken
//!   as the source, so a view is reordered only when it must be.
//! - A store recovered exactly (`with_data_dir`'s `exact`) is such a
//!   prefix too: its log holds the calls its ordered store took since an
//!   exact start (a new directory, a peer's snapshot installed, or an exact
//!   recovery), and replays them into the very image it marked
//!   (`durability/call.rs`). Its node says `Behind` at its mark as one that
//!   remembers. Its directory says it is not exact when it was written by
//!   an earlier build (key states, rebuilt in another order), and when it
//!   crashed half way through installing a peer's snapshot: the store at
//!   its last mark was being replaced, perhaps because the cluster's
//!   order no longer was its own (the log marks it again, inexact, before
//!   the install's reset). A node that learns in a view that its order was
//!   replaced (`reordered`) and crashes before its snapshot's first part
//!   still recovers as exact, at most at `S`: the rule above hands it a
//!   snapshot. (Found by the simulation once its replicas' ordered
//!   images were compared, and the rebuilt-member case by review.)
//! - The member says where it stands (`Behind`) when it installs the view,
//!   before its `Started` on the same FIFO link to the first source, which
//!   begins handing only once every member started. The parts
//!   (`Missed`, each within a frame's budget) go paced by `Took` as chunks
//!   do, said once a part's writes are handed to the store (there is no
//!   install to wait for: they are store work as any delivered write, so
//!   what bounds them in a slow store's queue is the retain limit, not the
//!   window), and said again when the member's link to the source opens
//!   again. The member delivers each write stamped above what it holds, so a
//!   part handed again after a lost link applies nothing twice, and drops
//!   a part that starts past what it holds. It stays intact throughout (a
//!   prefix at every write, each marked in its log as any delivered one),
//!   so a view change half way leaves it behind by less; with the last
//!   part it holds the state and says `Caught`.
//! - A store rebuilt from a log may keep its items in another order
//!   (evictions would differ), one with a snapshot half installed holds no
//!   prefix, and one that restarted may hold what it does not say (a
//!   memcached backend keeps its items across the node's restart): none
//!   says it is behind, and each takes a snapshot. So does every member of
//!   a view whose only source was rebuilt from its log (formed from the
//!   longest log): its order is the cluster's from then on, and
//!   `StartView` says so (`reordered`), so the others count as rebuilt,
//!   neither sources nor behind, until they installed its snapshot (even
//!   one whose store holds exactly what the source's does).
//! - What it cannot see: a memcached backend that restarted (and lost its
//!   items) while its node was paused; the node takes the writes it
//!   missed onto what is left, as it would apply any delivered write.
//!
//! Why nothing delivered is lost or reordered. Claim: anything delivered
//! in view `V` is held (as a proposal, or in the state) by every member of
//! `V`, all of which installed `V`. Start entries are delivered only after
//! every member started, new proposals only with every member's ack, and
//! each member installed `V` before starting. A later view's flush comes
//! from all of its members, a majority, so it includes a member of `V`
//! (two majorities meet), whose `normal` is `V` or later; by induction the
//! flushes with the highest `normal` hold everything delivered in `V`, so
//! it is in `start` (or in the sources' state, if delivered earlier). Order:
//! the members of a view deliver prefixes of one stamp-ordered sequence;
//! any held proposal stamped below a delivered one was itself delivered
//! (its origin proposed it before acking the later one, and the FIFO link
//! delivered it first), so each source delivers exactly the start entries
//! above its own last delivered stamp, and all sources end identical. A
//! node outside every view with a majority refuses clients (`no quorum`);
//! one that may have sent a write it cannot resolve leaves it to the
//! reactor's deadline (`timeout; the operation may have been applied`).
//!
//! **Data directories.** A node with a `data_dir` logs its store's
//! changes (`durability/store.rs`), and after each delivered write, before
//! any reply, a mark: the stamp of the last write its store holds. A
//! recovery replays the log up to its last mark and drops what follows
//! (a write's changes whose mark was lost), so the store holds exactly the
//! writes up to that stamp: a prefix of the one delivery sequence. A
//! write's reply waits until the log holds its mark, and everything
//! appended before it (with `fsync = always`, on disk); a read's, until it
//! holds the mark after the last change of each key the read names
//! (`durability/shown.rs`). So **a write a client was answered is in the
//! log of the node that answered it**, with everything delivered before
//! it, and so is the last write of each key a read showed: a prefix that
//! holds it gives the key back as read. Views, promises and held
//! proposals are not logged: a node that
//! starts from a directory it ran with before is *recovered*, and until it
//! installs a view it flushes that prefix, no proposal, and no view.
//! - With a majority that remembers (nodes that did not restart, or that
//!   restarted with no directory and nobody saw it), the view forms as
//!   above: the argument needs only them. A recovered node is never a
//!   source there (it holds no proposal and forgot its views; the
//!   remembering sources suffice). One recovered exactly says it is behind
//!   and is handed what it missed ("Catching up"); one whose store was
//!   rebuilt from key states may order its items otherwise than its
//!   peers' (evictions would differ), so it is handed a snapshot like a
//!   node that restarted empty. It stays *rebuilt* (flushed as such, never
//!   a source there) until the snapshot is in, also once it installed a
//!   view and so no longer forgot views: a view change can end the
//!   snapshot before its first part.
//! - Without one (most nodes crashed at once), a view forms only once
//!   every configured node flushes, each remembering or recovered (none
//!   known to have come back empty). Every answered write is then in some
//!   flusher's prefix; the prefixes are of one sequence, so the longest
//!   holds every shorter one: its node is the only source, the others
//!   take its store, and the start sequence is every proposal anyone still
//!   holds (the source delivers those above its prefix). A proposal below
//!   it is skipped; one above was answered nowhere (its answer would have
//!   logged it), so delivering it now is a late apply of a write whose
//!   client was told it may have been applied. The same holds, and is
//!   done, when every configured node flushes and no remembering one
//!   holds the state of the latest view, whether or not any is still
//!   recovered. Only a view formed from the longest log can come to that:
//!   its one source never installed it (it crashed first, or gave up
//!   before its `StartView` came) while the others installed it waiting
//!   for that source's snapshot. (A view formed by a remembering majority
//!   has sources that hold its base's state, and a source that never
//!   installed it flushes that state with the older view, so the newer
//!   one counts as never started.) Nothing was delivered in such a view,
//!   and a member without the state delivers nothing and keeps its store
//!   intact until its snapshot's first part comes, when the source's log
//!   holds a longer prefix (below), so the longest intact prefix still
//!   holds every answered write: it is the state. A view
//!   that cannot form asks every node again, also those left out for not
//!   answering an earlier attempt: it may need them all.
//! - A snapshot replaces a member's prefix: from its first part on, the
//!   member is not intact, so no view forms from its store, and once the
//!   install's mark is logged its directory gives back the source's store,
//!   not its own (before that, a crash gives back its old prefix, marked
//!   again as inexact: `durability/store.rs`). Its prefix may hold writes
//!   it answered that no other log holds yet: a source that did not
//!   restart may hold them only in memory, its log behind its store (a
//!   store that applies late, or writes it was handed rather than
//!   answered). So a source
//!   hands a snapshot's first part only once its log holds everything
//!   appended before the part was read, as a write's reply waits for it
//!   (`TotalOrderReplica::report_waits`; the reactor holds the report):
//!   the view's state, so every prefix a member held. From then on the
//!   source's directory gives back every write the member's did; before
//!   it, the member's store and log are its own. A source whose log is
//!   stuck (its disk refuses it, or has taken none of it for a second:
//!   `durability/stall.rs`) would hand nothing until it moves again: its
//!   flush says so (`log_stuck`), and the coordinator lists it after the
//!   other sources, so that one whose log moves hands the view's
//!   snapshots (only a view whose every source's log is stuck waits; a
//!   log that stalls once a view formed keeps its members waiting for a
//!   snapshot's patience, and the next view lists it last). The order of
//!   the sources changes nothing else. (Found by the
//!   simulation: a view formed from the longest log whose source crashed
//!   while its members installed its snapshot came back from a log
//!   shorter than theirs had been.)
//! - A source is handed nothing: its store, intact, holds a prefix reaching
//!   what the view starts from, so it holds the view's state even if it
//!   was still waiting for a snapshot of the view before.
//! - A node whose disk refuses its log still applies what is delivered
//!   (its peers do) and answers nothing its log lacks; past a backlog of
//!   unwritten records, or after a failed fsync, it stops
//!   (`Durable::must_stop`). Either way
//!   its directory holds a prefix up to its last written mark, and every
//!   write it answered is in it: to the argument, a crash.
//! - A directory that is new (no file in it) is a node's first start, as
//!   without one; recovery writes its first snapshot before the node
//!   takes part in anything, so a node that ran with it is never new.

mod message;
mod replica;

use message::op_len;
pub use message::{Broadcast, Control, Flush, Proposal};
pub use replica::{Apply, Report, TotalOrderReplica, Work};
use view_change::Handing;

use std::cmp::Reverse;
use std::collections::{vec_deque, BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use super::engine::{Effect, Engine, PeerEvent, PeerStatus, ReplyTo, Status, Transfer};
use super::message::Op;
use super::view::Ballot;
use super::{LamportClock, NodeId, Stamp, View};
use crate::config::Consistency;
use crate::protocol::Request;
use crate::store::UnixTime;

/// Ticks a node waits for a view change to finish (or for the lowest node
/// to start one) before it starts one of its own.
const DEFAULT_PATIENCE: u64 = 10;
/// About how many bytes of proposals one frame carries (module doc).
const DEFAULT_FRAME_BUDGET: usize = 1 << 20;
/// About how many bytes of operations may wait for delivery at a node
/// before it refuses new writes (module doc).
const DEFAULT_QUEUE_LIMIT: usize = 64 << 20;
/// About how much memory the delivered writes a node keeps for members
/// that fall behind may hold ([`kept_bytes`]; module doc, "Catching up"):
/// a member that missed more is handed a snapshot.
const DEFAULT_RETAIN_LIMIT: usize = 8 << 20;

/// The store state the snapshots of a view are read from (module doc,
/// step 4): the store as the view's start sequence left it.
#[derive(Debug, Clone, Copy)]
struct Image {
    /// The last write it holds: where each of its snapshots ends.
    upto: Stamp,
    /// The store keeps it while it applies writes (an ordered memory
    /// store's frozen image, as its first chunk said), so delivery goes on.
    frozen: bool,
    /// Bytes of writes delivered since it was taken.
    written: usize,
}

/// A queued operation, ordered by stamp alone (stamps are unique).
#[derive(Debug)]
struct Queued {
    stamp: Stamp,
    op: Arc<Op>,
    reply_to: Option<ReplyTo>,
    /// A local linearizable read: never shipped, applied only here.
    read: bool,
    /// Part of the view's start sequence: delivered without acks.
    start: bool,
    /// The tick this node queued it at, to tell how long it has waited.
    queued_at: u64,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        self.stamp == other.stamp
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Queued) -> std::cmp::Ordering {
        self.stamp.cmp(&other.stamp)
    }
}

/// What is waiting to be sent to one peer.
#[derive(Debug, Default)]
struct Outbox {
    /// Oldest first; a backlog leaves from the front in parts.
    proposals: VecDeque<Proposal>,
    control: Vec<Control>,
    sent_clock: u64,
    sent_acks: u64,
    sent_echo: u64,
    /// A frame is owed even with nothing new in it (heartbeat, reconnect).
    due: bool,
    /// While a backlog goes in parts: the news they hold back.
    cut: Option<Cut>,
}

/// What a whole frame would have said when a backlog was cut into parts,
/// sent with the backlog's last part (module doc).
#[derive(Debug)]
struct Cut {
    /// Proposals of the backlog not sent yet (the first of `proposals`).
    proposals: usize,
    /// View-change messages queued before the cut (the first of `control`).
    controls: usize,
    news: News,
}

/// What this node knows of one peer.
#[derive(Debug, Default)]
struct Peer {
    /// The failure detector holds it up.
    up: bool,
    /// It said it is leaving, and has not been up since.
    left: bool,
    /// The ballot of the view it last said it is in.
    ballot: Ballot,
    /// In this view: the highest stamp time of its own proposals received here.
    received: u64,
    /// In this view: per origin, the highest stamp time it says it holds.
    holds: HashMap<NodeId, u64>,
    /// In this view: the highest clock it reported.
    clock: u64,
    /// In this view: the highest clock of ours it said it has seen, so it
    /// answered a frame we sent once our clock was there.
    echo: u64,
    /// This node's link to it is open.
    linked: bool,
    /// The peers it last said its failure detector holds up.
    sees: Vec<NodeId>,
    out: Outbox,
}

/// A client session's writes issued and applied here, and the reads waiting
/// for the writes issued before them (sequential mode).
#[derive(Debug, Default)]
struct SessionOrder {
    issued: u64,
    applied: u64,
    /// `(writes that must be applied first, reply_to, op)`, in arrival order.
    held_reads: VecDeque<(u64, ReplyTo, Arc<Op>)>,
}

/// Where this node is in forming and serving views.
#[derive(Debug)]
enum Phase {
    /// In no view that serves: at start, without a majority up, or left
    /// out of one.
    Idle,
    /// Coordinating the promised ballot: the flushes of `members` so far.
    Collecting {
        members: Vec<NodeId>,
        flushes: BTreeMap<NodeId, Flush>,
        since: u64,
    },
    /// Flushed to the promised ballot's coordinator; waiting for its view.
    Flushed { since: u64 },
    /// Installed the view; waiting for every member to have installed it.
    Starting {
        started: BTreeSet<NodeId>,
        since: u64,
    },
    /// Serving in the view.
    Normal,
}

/// The engine of one node.
#[derive(Debug)]
pub struct TotalOrder {
    me: NodeId,
    mode: Consistency,
    /// Every configured node, this one included.
    configured: Vec<NodeId>,
    view: View,
    ballot: Ballot,
    /// The highest ballot this node promised.
    promised: Ballot,
    /// The latest started view this node's state descends from: `ballot`
    /// once that view started and this node holds its state, before that
    /// the view it was formed from.
    base: Ballot,
    /// This node holds the whole state of `view` (else it waits for a snapshot).
    has_state: bool,
    /// Until it holds that state, how `view` began: if every source of the
    /// view is gone, the node flushes it, so that a view can form from the
    /// view `view` was formed from (module doc, "A view whose sources are
    /// gone").
    began: view_change::Began,
    /// The store holds the effect of exactly the writes up to
    /// `delivered_upto`: no snapshot is half installed.
    intact: bool,
    /// This run installed a view (a restarted node has not, and its empty
    /// store says nothing of what the cluster delivered).
    remembers: bool,
    /// This run began from a data directory and has installed no view
    /// since: its store holds a prefix of the delivered writes, the last it
    /// logged, but it forgot its views and the proposals it held.
    recovered: bool,
    /// The store was rebuilt from a data directory and is no copy of a
    /// peer's since, or this node is a member of a view whose only source's
    /// store was (`StartView::reordered`): its items may be in another
    /// order than the cluster's (module doc, "Data directories", "Catching
    /// up"). Until a snapshot is installed, or it is the only source of a
    /// view (the others copy it), it is no source, and never behind.
    rebuilt: bool,
    /// A data directory logs the store: each delivered write is marked in
    /// it, so that a recovery knows which prefix its store holds.
    marks_delivered: bool,
    /// That log is stuck now (`Engine::on_log_stuck`): flushed, so that a
    /// view's snapshots are handed by a source whose log moves.
    log_stuck: bool,
    phase: Phase,
    /// Members that said they installed the promised ballot's view before
    /// this node did (its `StartView` can come after another member's
    /// `Started`: they travel on different links).
    started_early: BTreeSet<NodeId>,
    /// The ballot this node last flushed to. A member that gave up waiting
    /// for its view (the patience ran out) still installs it when its
    /// `StartView` comes after all, as long as it promised nothing since.
    flushed_to: Option<Ballot>,
    /// Nodes left out of view changes: up by the detector, yet they did not
    /// flush when asked (until they are members again, ask themselves, or
    /// no majority is left without them).
    unresponsive: BTreeSet<NodeId>,
    /// Since when a view change has seemed needed, if it has.
    unsettled_since: Option<u64>,
    /// A member restarted: it is in the view but holds nothing of it.
    member_restarted: bool,
    /// Peers seen to come back as a new run, until a view this node
    /// started counts them as members again.
    amnesiacs: BTreeSet<NodeId>,
    patience: u64,
    frame_budget: usize,
    /// Entries a snapshot chunk lists at most (`replica::CHUNK_ENTRIES`
    /// unless a test sets fewer).
    chunk_entries: usize,
    /// Writes are refused while the queue held more than this at the last
    /// tick (module doc).
    queue_limit: usize,
    /// About how many bytes of operations the queue held at the last tick.
    queued_bytes: usize,
    ticks: u64,
    clock: LamportClock,
    queue: BinaryHeap<Reverse<Queued>>,
    peers: BTreeMap<NodeId, Peer>,
    /// Bumped whenever this node comes to hold a new proposal.
    ack_generation: u64,
    /// Own proposals not yet held by every member, oldest first.
    unacked: VecDeque<Proposal>,
    sessions: HashMap<u64, SessionOrder>,
    delivered: u64,
    /// The stamp of the last write delivered here.
    delivered_upto: Stamp,
    /// Whole ticks the oldest operation in `queue` had waited through at
    /// the last tick: how far this node's store trails what it already
    /// holds. Measured once a tick, as the reactor reads `status` every
    /// loop iteration.
    delivery_lag: u64,
    /// Members this node is handing a snapshot to, or the writes they
    /// missed. The snapshot is of the store as the start sequence left it:
    /// nothing else is delivered until it is read, or frozen (`image`).
    handing: BTreeMap<NodeId, Handing>,
    /// The store state this view's snapshots are read from, once the first
    /// is begun and while any is handed.
    image: Option<Image>,
    /// The snapshot this node is being handed, so far.
    receiving: Option<Transfer>,
    /// Chunks of the snapshot being installed here that the store has
    /// installed, told to its source to pace it (`Took`).
    chunks_installed: u64,
    /// Chunks of it handed to the store: while it has more than it
    /// installed, the member waits for its own store, not for its source.
    chunks_received: u64,
    /// The node handing that snapshot.
    installing_from: NodeId,
    /// The tag of the last store work that reads or installs a snapshot
    /// (so a late report of work a view change ended is known).
    tags: u64,
    /// The tag of the snapshot being installed here (`NO_SNAPSHOT`: none).
    installing: u64,
    /// The tick a member without the state last heard of its snapshot (or
    /// took its view).
    awaited_since: u64,
    /// Reads of the snapshot being handed that failed in a row.
    snapshot_failures: u32,
    /// The writes delivered here after `retained_from`, oldest first, within
    /// about `retain_limit` bytes (`retained_bytes`): what a member that is
    /// behind may be handed instead of a snapshot.
    retained: VecDeque<Proposal>,
    retained_bytes: usize,
    retained_from: Stamp,
    /// Where this store's order began (a recovery, a snapshot installed,
    /// or a `reordered` view it was the source of): a member holding the
    /// writes up to it, or fewer, may hold them in another order, and is
    /// handed a snapshot (module doc, "Catching up").
    order_from: Stamp,
    retain_limit: usize,
    /// Members that said they are `Behind`: the ballot they said it in and
    /// the last write their store holds.
    behind: BTreeMap<NodeId, (Ballot, Stamp)>,
    counters: ViewCounters,
    /// What the view changes since the last view said they wait for.
    said: view_change::Said,
}

/// What `stats` counts of views.
#[derive(Debug, Default, Clone, Copy)]
struct ViewCounters {
    views_installed: u64,
    refused_no_quorum: u64,
    snapshots_sent: u64,
    snapshots_received: u64,
    /// Members handed the writes they missed rather than a snapshot, and
    /// the writes handed.
    missed_handed: u64,
    missed_writes_handed: u64,
    missed_received: u64,
    writes_during_snapshots: u64,
}

impl TotalOrder {
    /// An engine for node `me` of the configured nodes `configured.members`,
    /// in a strong `mode`. Alone, it is its own view at once; otherwise it
    /// serves once a view with a majority forms.
    pub fn new(me: NodeId, configured: View, mode: Consistency) -> TotalOrder {
        assert!(
            configured.contains(me),
            "node {me} is not one of {configured:?}"
        );
        assert!(
            matches!(mode, Consistency::Linearizable | Consistency::Sequential),
            "the total-order engine runs the strong modes"
        );
        let peers = configured
            .others(me)
            .map(|id| (id, Peer::default()))
            .collect();
        let alone = configured.members.len() == 1;
        let ballot = match alone {
            true => Ballot {
                round: 1,
                coordinator: me,
            },
            false => Ballot::default(),
        };
        TotalOrder {
            me,
            mode,
            view: View::new(ballot.round, if alone { vec![me] } else { Vec::new() }),
            configured: configured.members,
            ballot,
            promised: ballot,
            base: ballot,
            has_state: true,
            began: view_change::Began::default(),
            intact: true,
            remembers: alone,
            recovered: false,
            rebuilt: false,
            marks_delivered: false,
            log_stuck: false,
            phase: match alone {
                true => Phase::Normal,
                false => Phase::Idle,
            },
            started_early: BTreeSet::new(),
            flushed_to: None,
            unresponsive: BTreeSet::new(),
            unsettled_since: None,
            member_restarted: false,
            amnesiacs: BTreeSet::new(),
            patience: DEFAULT_PATIENCE,
            frame_budget: DEFAULT_FRAME_BUDGET,
            chunk_entries: replica::CHUNK_ENTRIES,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            queued_bytes: 0,
            ticks: 0,
            clock: LamportClock::default(),
            queue: BinaryHeap::new(),
            peers,
            ack_generation: 0,
            unacked: VecDeque::new(),
            sessions: HashMap::new(),
            delivered: 0,
            delivered_upto: Stamp::default(),
            delivery_lag: 0,
            handing: BTreeMap::new(),
            image: None,
            receiving: None,
            chunks_installed: 0,
            chunks_received: 0,
            installing_from: me,
            tags: 0,
            installing: view_change::NO_SNAPSHOT,
            awaited_since: 0,
            snapshot_failures: 0,
            retained: VecDeque::new(),
            retained_bytes: 0,
            retained_from: Stamp::default(),
            order_from: Stamp::default(),
            // Alone, no member can fall behind.
            retain_limit: if alone { 0 } else { DEFAULT_RETAIN_LIMIT },
            behind: BTreeMap::new(),
            counters: ViewCounters::default(),
            said: view_change::Said::default(),
        }
    }

    /// Ticks to wait for a view change before starting one.
    /// Stamps from now on above the one `cas` was derived from (a node
    /// that recovered its store must not hand out a unique twice).
    pub fn stamp_above(&mut self, cas: u64) {
        self.clock.observe(Stamp::ts_of_unique(cas));
    }

    /// A node of several with a data directory: it marks every write it
    /// delivers in its log. `held`: what the directory held at start, if
    /// this node ran with it before: its store was recovered holding
    /// exactly the writes up to that stamp (the last its log marked), and
    /// the node takes part in views as one that forgot them (module doc,
    /// "Data directories"). `exact`: the store was recovered as the same
    /// ordered image its peers' held at that write (order, dead items,
    /// bits, clock hand), not rebuilt from key states: it may be handed
    /// only the writes it missed, as a node that remembers. A new
    /// directory is a node's first start.
    pub fn with_data_dir(mut self, held: Option<Stamp>, exact: bool) -> TotalOrder {
        if let Some(upto) = held {
            self.delivered_upto = upto;
            self.order_begins(upto);
            self.clock.observe(upto.ts);
            self.recovered = true;
            self.rebuilt = !exact;
        }
        self.marks_delivered = true;
        self
    }

    pub fn with_patience(mut self, ticks: u64) -> TotalOrder {
        self.patience = ticks.max(2);
        self
    }

    /// About how many bytes of proposals a frame carries (at least one
    /// proposal, whatever its size).
    pub fn with_frame_budget(mut self, bytes: usize) -> TotalOrder {
        self.frame_budget = bytes;
        self
    }

    /// Snapshots handed to members list at most `entries` entries a chunk
    /// (a simulation hands small stores in many chunks this way).
    pub fn with_chunk_entries(mut self, entries: usize) -> TotalOrder {
        self.chunk_entries = entries;
        self
    }

    /// About how many bytes of delivered writes are kept for members that
    /// fall behind.
    pub fn with_retain_limit(mut self, bytes: usize) -> TotalOrder {
        self.retain_limit = bytes;
        self
    }

    /// About how many bytes of operations may wait in the delivery queue
    /// before new writes are refused.
    pub fn with_queue_limit(mut self, bytes: usize) -> TotalOrder {
        self.queue_limit = bytes;
        self
    }

    fn majority(&self) -> usize {
        self.configured.len() / 2 + 1
    }

    fn serving(&self) -> bool {
        matches!(self.phase, Phase::Normal) && self.has_state
    }

    /// This node's role, for `show` and `stats`.
    fn role(&self) -> &'static str {
        match self.phase {
            Phase::Normal if !self.has_state => "catching-up",
            Phase::Normal => "member",
            Phase::Idle => "no-quorum",
            _ => "joining",
        }
    }

    /// Operations waiting here: queued for delivery or held behind writes.
    fn pending(&self) -> usize {
        self.queue.len()
            + self
                .sessions
                .values()
                .map(|c| c.held_reads.len())
                .sum::<usize>()
    }

    /// Measures the queue, once a tick, in one pass: `delivery_lag`, the
    /// whole ticks the longest-waiting operation has waited through (one
    /// queued since the last tick has waited through none: a lower bound,
    /// so steady traffic delivered within a tick shows 0), and
    /// `queued_bytes`, for the queue limit.
    fn measure_queue(&mut self) {
        let (mut oldest, mut bytes) = (None, 0);
        for Reverse(queued) in &self.queue {
            oldest = Some(oldest.map_or(queued.queued_at, |o: u64| o.min(queued.queued_at)));
            bytes += op_len(&queued.op);
        }
        self.delivery_lag = oldest.map_or(0, |at| self.ticks.saturating_sub(at + 1));
        self.queued_bytes = bytes;
    }

    /// The members of the view other than this node.
    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.view.others(self.me)
    }

    fn member_peers(&self) -> impl Iterator<Item = (NodeId, &Peer)> + '_ {
        self.others()
            .filter_map(|id| self.peers.get(&id).map(|p| (id, p)))
    }

    fn send(&mut self, to: NodeId, control: Control) {
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.out.control.push(control);
        }
    }

    fn propose(&mut self, proposal: Proposal) {
        let others: Vec<NodeId> = self.others().collect();
        if others.is_empty() {
            return;
        }
        for id in others {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.out.proposals.push_back(proposal.clone());
            }
        }
        self.unacked.push_back(proposal);
    }

    fn read_locally(&mut self, reply_to: ReplyTo, op: Arc<Op>, out: &mut Vec<Effect<Work>>) {
        match self.sessions.get_mut(&reply_to.session) {
            Some(order) if order.applied < order.issued => {
                order.held_reads.push_back((order.issued, reply_to, op));
            }
            _ => out.push(Effect::Work(Work::Apply(Apply {
                op,
                cas: 0,
                reply_to: Some(reply_to),
                mark_delivered: false,
            }))),
        }
    }

    /// Drops own proposals every member holds: they will never be resent.
    fn forget_acked(&mut self) {
        let me = self.me;
        let everywhere = self
            .member_peers()
            .map(|(_, p)| p.holds.get(&me).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        while self
            .unacked
            .front()
            .is_some_and(|p| p.stamp.ts <= everywhere)
        {
            self.unacked.pop_front();
        }
    }

    fn deliverable(&self, head: &Queued) -> bool {
        if head.start {
            return true;
        }
        if self.handing_holds_delivery() {
            return false; // the state is being handed: see there
        }
        if head.read {
            // Every member answered, in this view, a frame sent after the
            // read was stamped: none had left the view when the read began.
            return self.member_peers().all(|(_, p)| p.echo >= head.stamp.ts);
        }
        let origin = head.stamp.node;
        self.member_peers().all(|(id, p)| {
            id == origin || p.holds.get(&origin).copied().unwrap_or(0) >= head.stamp.ts
        })
    }

    fn deliver(&mut self, out: &mut Vec<Effect<Work>>) {
        if !self.serving() {
            return;
        }
        while let Some(Reverse(head)) = self.queue.peek() {
            if !self.deliverable(head) {
                break;
            }
            let Some(Reverse(entry)) = self.queue.pop() else {
                break;
            };
            let mine = entry.stamp.node == self.me;
            let reply_to = entry.reply_to.filter(|_| mine);
            if entry.read {
                self.delivered += 1;
                out.push(Effect::Work(Work::Apply(Apply {
                    op: entry.op,
                    cas: entry.stamp.cas_unique(),
                    reply_to,
                    mark_delivered: false,
                })));
                continue;
            }
            self.deliver_write(entry.stamp, entry.op, reply_to, out);
            if let Some(reply_to) = reply_to {
                self.write_applied(reply_to.session, out);
            }
        }
    }

    /// Applies the write of `stamp`, the next in the delivery order, here
    /// (replying to `reply_to`): kept for members that fall behind,
    /// counted against the image a snapshot is read from, and marked in
    /// the log of a data directory. Delivered from the queue, or from the
    /// writes a source handed this member (`on_missed`).
    fn deliver_write(
        &mut self,
        stamp: Stamp,
        op: Arc<Op>,
        reply_to: Option<ReplyTo>,
        out: &mut Vec<Effect<Work>>,
    ) {
        self.delivered += 1;
        self.delivered_upto = stamp;
        self.retain(stamp, &op);
        if let Some(image) = &mut self.image {
            image.written += op_len(&op);
            self.counters.writes_during_snapshots += 1;
        }
        out.push(Effect::Work(Work::Apply(Apply {
            op,
            cas: stamp.cas_unique(),
            reply_to,
            mark_delivered: self.marks_delivered,
        })));
    }

    /// Keeps the write of `stamp`, just delivered, for members that fall
    /// behind: the oldest kept go once they pass the limit.
    fn retain(&mut self, stamp: Stamp, op: &Arc<Op>) {
        if self.retain_limit == 0 {
            // Alone (or told to keep nothing): no work per write.
            self.retained_from = stamp;
            return;
        }
        let write = Proposal {
            stamp,
            op: op.clone(),
        };
        self.retained_bytes += kept_bytes(&write);
        self.retained.push_back(write);
        while self.retained_bytes > self.retain_limit {
            let Some(oldest) = self.retained.pop_front() else {
                break;
            };
            self.retained_bytes -= kept_bytes(&oldest);
            self.retained_from = oldest.stamp;
        }
    }

    /// The store now holds the writes up to `upto` by other means than
    /// delivering them (a recovery, a snapshot), or in an order that is the
    /// cluster's from now on: nothing kept reaches it, and its order begins
    /// there.
    fn order_begins(&mut self, upto: Stamp) {
        self.retained.clear();
        self.retained_bytes = 0;
        self.retained_from = upto;
        self.order_from = upto;
    }

    /// The writes delivered here after `upto`, if this node kept them all
    /// and its store holds nothing else: what a member whose store holds
    /// exactly the writes up to `upto` lacks. Only past `order_from`, not
    /// at it: a member holding the same writes in the order this store's
    /// replaced must take a snapshot (module doc, "Catching up"). A store
    /// that holds no write is the first start's empty one in any order.
    fn missed_since(&self, upto: Stamp) -> Option<vec_deque::Iter<'_, Proposal>> {
        let first_start = Stamp::default();
        let in_order =
            self.order_from < upto || (self.order_from, upto) == (first_start, first_start);
        let kept = self.intact
            && self.has_state
            && in_order
            && self.retained_from <= upto
            && upto <= self.delivered_upto;
        kept.then(|| {
            let first = self.retained.partition_point(|w| w.stamp <= upto);
            self.retained.range(first..)
        })
    }

    /// One of a session's writes was applied: release the reads that
    /// waited for it (and for nothing issued later).
    fn write_applied(&mut self, session: u64, out: &mut Vec<Effect<Work>>) {
        let Some(order) = self.sessions.get_mut(&session) else {
            return;
        };
        order.applied += 1;
        while order
            .held_reads
            .front()
            .is_some_and(|(needed, ..)| *needed <= order.applied)
        {
            if let Some((_, reply_to, op)) = order.held_reads.pop_front() {
                out.push(Effect::Work(Work::Apply(Apply {
                    op,
                    cas: 0,
                    reply_to: Some(reply_to),
                    mark_delivered: false,
                })));
            }
        }
        if order.applied == order.issued {
            self.sessions.remove(&session);
        }
    }

    /// A new link to `peer`: queue every own proposal it may not hold yet.
    fn resend_to(&mut self, peer: NodeId) {
        let me = self.me;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let held = p.holds.get(&me).copied().unwrap_or(0);
        p.out.proposals = self
            .unacked
            .iter()
            .filter(|q| q.stamp.ts > held)
            .cloned()
            .collect();
        p.out.cut = None;
        p.out.due = true;
    }

    /// Why a client's operation is refused now, if it is.
    fn refusal(&mut self) -> Option<String> {
        if self.serving() {
            // A member the detector holds down: a new view is coming.
            let down = self.member_peers().find(|(_, p)| !p.up).map(|(id, _)| id);
            return down.map(|d| format!("cluster unavailable: node {d} is down; not applied"));
        }
        Some(match self.phase {
            Phase::Idle => {
                self.counters.refused_no_quorum += 1;
                "no quorum; not applied".to_string()
            }
            Phase::Normal if !self.has_state => {
                "this node is catching up with the cluster; not applied".to_string()
            }
            _ => "the cluster is changing its view; not applied".to_string(),
        })
    }
}

mod view_change;

impl Engine for TotalOrder {
    type Message = Broadcast;
    type Replica = TotalOrderReplica;

    fn on_client(
        &mut self,
        to: ReplyTo,
        request: Request,
        now: UnixTime,
        out: &mut Vec<Effect<Work>>,
    ) {
        // Reads too: a node that is not serving a view with every member up
        // may be behind (or restarted empty) and must not answer from its replica.
        if let Some(reason) = self.refusal() {
            out.push(Effect::Refuse { to, reason });
            return;
        }
        let read = request.command.is_read();
        if !read && self.queued_bytes > self.queue_limit {
            let reason = format!(
                "the cluster is behind ({} MiB of operations wait to be delivered here); \
                 not applied",
                self.queued_bytes >> 20
            );
            out.push(Effect::Refuse { to, reason });
            return;
        }
        let op = Arc::new(Op { request, now });
        if read && self.mode == Consistency::Sequential {
            return self.read_locally(to, op, out);
        }
        let stamp = Stamp {
            ts: self.clock.tick(),
            node: self.me,
        };
        if !read {
            self.propose(Proposal {
                stamp,
                op: op.clone(),
            });
            if self.mode == Consistency::Sequential {
                self.sessions.entry(to.session).or_default().issued += 1;
            }
        }
        self.queue.push(Reverse(Queued {
            stamp,
            op,
            reply_to: Some(to),
            read,
            start: false,
            queued_at: self.ticks,
        }));
        self.deliver(out);
    }

    fn on_message(&mut self, from: NodeId, frame: Broadcast, out: &mut Vec<Effect<Work>>) {
        if !self.peers.contains_key(&from) {
            return;
        }
        self.clock.observe(frame.clock);
        for control in frame.control {
            self.on_control(from, control, out);
        }
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.ballot = frame.ballot;
        peer.sees = frame.sees;
        let installed = matches!(self.phase, Phase::Normal | Phase::Starting { .. });
        if frame.ballot != self.ballot || !installed || !self.view.contains(from) {
            return; // another view's clock, acks and proposals count for nothing here
        }
        peer.clock = peer.clock.max(frame.clock);
        peer.echo = peer.echo.max(frame.echo);
        for proposal in frame.proposals {
            let stamp = proposal.stamp;
            if stamp.node != from || stamp.ts <= peer.received {
                continue; // not its own, or a resent duplicate
            }
            peer.received = stamp.ts;
            self.clock.observe(stamp.ts);
            self.ack_generation += 1;
            self.queue.push(Reverse(Queued {
                stamp,
                op: proposal.op,
                reply_to: None,
                read: false,
                start: false,
                queued_at: self.ticks,
            }));
        }
        for (origin, ts) in frame.acks {
            let held = peer.holds.entry(origin).or_insert(0);
            *held = (*held).max(ts);
        }
        self.forget_acked();
        self.deliver(out);
    }

    fn on_tick(&mut self, out: &mut Vec<Effect<Work>>) {
        self.ticks += 1;
        self.measure_queue();
        for peer in self.peers.values_mut() {
            peer.out.due = true;
        }
        self.reconsider(out);
        self.hand_snapshots(out);
    }

    /// The detector's word on a peer is noted (a view change follows on the
    /// next tick); a lost link's unsent proposals are resent, with every own
    /// proposal the peer may not hold, when a new link opens.
    fn on_peer(&mut self, peer: NodeId, event: PeerEvent) {
        match event {
            PeerEvent::Up | PeerEvent::Down | PeerEvent::Left => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.up = event == PeerEvent::Up;
                    p.left = event == PeerEvent::Left;
                }
            }
            PeerEvent::LinkLost => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.linked = false;
                    p.out.proposals.clear();
                    p.out.control.clear();
                    p.out.cut = None;
                }
                // A snapshot in flight to it is lost: hand it again from the start.
                if let Some(handing) = self.handing.get_mut(&peer) {
                    *handing = Handing::anew();
                }
            }
            PeerEvent::LinkOpened => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.linked = true;
                }
                self.resend_to(peer);
                // A `Caught` or `Took` the broken link lost would leave a
                // source handing us a snapshot for good (or its window
                // full), delivering nothing; one that hands us nothing
                // ignores them.
                let ballot = self.ballot;
                if self.has_state && matches!(self.phase, Phase::Normal) {
                    self.send(peer, Control::Caught { ballot });
                } else if self.installing != view_change::NO_SNAPSHOT
                    || (!self.has_state && matches!(self.phase, Phase::Normal))
                {
                    // Also while it hands us missed writes, which install
                    // nothing (`installing` stays unset).
                    let chunks = self.chunks_installed;
                    self.send(peer, Control::Took { ballot, chunks });
                }
            }
        }
    }

    /// A restarted member rejoins through a view change that hands it the state.
    fn on_hello(&mut self, peer: NodeId, _incarnation: u64, restarted: bool) {
        if restarted {
            self.amnesiacs.insert(peer);
            if self.view.contains(peer) {
                self.member_restarted = true;
            }
        }
    }

    /// Nothing this engine sends depends on which run of a peer takes it.
    fn on_welcome(&mut self, _peer: NodeId, _incarnation: u64) {}

    fn on_log_stuck(&mut self, stuck: bool) {
        self.log_stuck = stuck;
    }

    fn on_store(&mut self, report: Report, out: &mut Vec<Effect<Work>>) {
        self.on_snapshot_report(report, out);
    }

    /// The frame owed to `to`, if any: new proposals, new acks, a higher
    /// clock, view-change messages, or a heartbeat. Everything since the
    /// last frame goes in one, within the frame budget: past it, in parts
    /// (module doc).
    fn outgoing(&mut self, to: NodeId) -> Option<Broadcast> {
        let clock = self.clock.now();
        let generation = self.ack_generation;
        let peer = self.peers.get(&to)?;
        let (out, echo) = (&peer.out, peer.clock);
        let owed = !out.proposals.is_empty()
            || !out.control.is_empty()
            || out.due
            || out.sent_acks != generation
            || out.sent_clock < clock
            || out.sent_echo < echo;
        if !owed {
            return None;
        }
        // Built only for a frame that goes: this runs every loop iteration.
        let acks: Vec<(NodeId, u64)> = self.peers.iter().map(|(&id, p)| (id, p.received)).collect();
        let sees: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.up)
            .map(|(&id, _)| id)
            .collect();
        // A node outside a view says so, so its members change the view
        // rather than wait for its acks.
        let ballot = match self.phase {
            Phase::Normal | Phase::Starting { .. } => self.ballot,
            _ => Ballot::default(),
        };
        let budget = self.frame_budget;
        let out = &mut self.peers.get_mut(&to)?.out;
        if ballot == Ballot::default() {
            // Nobody counts proposals outside a view (they are in this
            // node's queue, so in its flush): they must not hold up the
            // view change's messages.
            out.proposals.clear();
            out.cut = None;
        }
        let news = News {
            clock,
            echo,
            generation,
            acks,
        };
        let (proposals, news, controls) = match out.cut.take() {
            None if proposals_within(out.proposals.iter(), budget) == out.proposals.len() => {
                let controls = out.control.len();
                (out.proposals.drain(..).collect(), Some(news), controls)
            }
            cut => {
                let mut cut = cut.unwrap_or(Cut {
                    proposals: out.proposals.len(),
                    controls: out.control.len(),
                    news,
                });
                let backlog = out.proposals.iter().take(cut.proposals);
                let fits = proposals_within(backlog, budget);
                let part: Vec<Proposal> = out.proposals.drain(..fits).collect();
                cut.proposals -= fits;
                match cut.proposals {
                    0 => (part, Some(cut.news), cut.controls),
                    _ => {
                        out.cut = Some(cut);
                        (part, None, 0)
                    }
                }
            }
        };
        let news = match news {
            Some(news) => {
                out.sent_clock = news.clock;
                out.sent_acks = news.generation;
                out.sent_echo = news.echo;
                out.due = false;
                news
            }
            // A part: the oldest proposals and nothing new (module doc).
            None => News {
                clock: out.sent_clock,
                echo: out.sent_echo,
                generation: out.sent_acks,
                acks: Vec::new(),
            },
        };
        Some(Broadcast {
            ballot,
            clock: news.clock,
            echo: news.echo,
            sees,
            acks: news.acks,
            proposals,
            control: out.control.drain(..controls).collect(),
        })
    }

    fn status(&self) -> Status<'_> {
        Status {
            clock: self.clock.now(),
            epoch: self.view.epoch,
            members: self.view.members.len(),
            pending: self.pending(),
            delivered: self.delivered,
            delivery_lag: Some(self.delivery_lag),
            sync: None,
            role: self.role(),
            view_members: &self.view.members,
            views_installed: self.counters.views_installed,
            refused_no_quorum: self.counters.refused_no_quorum,
            snapshots_sent: self.counters.snapshots_sent,
            snapshots_received: self.counters.snapshots_received,
            missed_handed: self.counters.missed_handed,
            missed_writes_handed: self.counters.missed_writes_handed,
            missed_received: self.counters.missed_received,
            writes_during_snapshots: self.counters.writes_during_snapshots,
            receiving: self.receiving.filter(|_| !self.has_state),
        }
    }

    fn peer_status(&self, peer: NodeId) -> Option<PeerStatus> {
        self.peers.get(&peer).map(|p| PeerStatus {
            clock: p.clock,
            sync_lag: None,
            waiting: None,
        })
    }

    fn replica(&self) -> TotalOrderReplica {
        TotalOrderReplica::with_chunk_entries(self.chunk_entries)
    }
}

/// About the memory a kept write holds once nothing else shares it: its
/// place in the kept queue, its operation behind the `Arc` (two counts),
/// and the operation's key and value, which [`Proposal::approximate_len`]
/// counts with a little for the rest; each allocation takes a malloc chunk
/// about 16 bytes over its size.
fn kept_bytes(write: &Proposal) -> usize {
    const ALLOCATIONS: usize = 3;
    std::mem::size_of::<Proposal>()
        + 16
        + std::mem::size_of::<Op>()
        + write.approximate_len()
        + ALLOCATIONS * 16
}

/// What a frame tells a peer besides proposals and view-change messages.
#[derive(Debug)]
struct News {
    clock: u64,
    echo: u64,
    generation: u64,
    acks: Vec<(NodeId, u64)>,
}

/// How many of `proposals`, from the first, fit in `budget` bytes (at
/// least one).
fn proposals_within<'a>(proposals: impl Iterator<Item = &'a Proposal>, budget: usize) -> usize {
    let mut used = 0;
    let mut fits = 0;
    for proposal in proposals {
        used += proposal.approximate_len();
        if used > budget && fits > 0 {
            break;
        }
        fits += 1;
    }
    fits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, Get, Storage, StorageMode};

    pub(super) fn reply_to(session: u64, slot: u64) -> ReplyTo {
        ReplyTo { session, slot }
    }

    /// A `set` of `key` (the view change's tests use it too).
    pub(super) fn set(key: &str) -> Request {
        Request {
            command: Command::Storage(Storage {
                mode: StorageMode::Set,
                key: key.as_bytes().to_vec(),
                flags: 0,
                exptime: 0,
                value: b"v".to_vec(),
            }),
            noreply: false,
        }
    }

    fn get(key: &str) -> Request {
        Request {
            command: Command::Get(Get {
                keys: [key].into_iter().collect(),
                with_cas: false,
                touch: None,
            }),
            noreply: false,
        }
    }

    /// `n` engines that see each other up, through their first view
    /// change, keeping no delivered write: a member that is behind is
    /// handed a snapshot.
    fn cluster(n: u32, mode: Consistency) -> Vec<TotalOrder> {
        cluster_keeping(n, mode, 0)
    }

    /// [`cluster`], each node keeping about `retain` bytes of delivered
    /// writes for members that fall behind.
    pub(super) fn cluster_keeping(n: u32, mode: Consistency, retain: usize) -> Vec<TotalOrder> {
        let view = View::new(0, (0..n).collect());
        let mut engines: Vec<TotalOrder> = (0..n)
            .map(|id| {
                let mut e = TotalOrder::new(id, view.clone(), mode).with_retain_limit(retain);
                for peer in view.others(id) {
                    e.on_peer(peer, PeerEvent::LinkOpened);
                    e.on_peer(peer, PeerEvent::Up);
                }
                e
            })
            .collect();
        // The first heartbeats tell each node whom the others see; then a view forms.
        for _ in 0..3 {
            tick_all(&mut engines);
        }
        for e in &engines {
            assert_eq!(e.status().role, "member", "{e:?}");
            assert_eq!(e.status().view_members, view.members);
        }
        engines
    }

    /// A tick everywhere, then every frame it causes, delivered.
    fn tick_all(engines: &mut [TotalOrder]) {
        for e in engines.iter_mut() {
            let mut out = Vec::new();
            e.on_tick(&mut out);
            assert!(out.is_empty(), "no store work from a tick here: {out:?}");
        }
        exchange(engines, &mut vec![Vec::new(); engines.len()]);
    }

    /// Delivers every owed frame, in node order, until nothing moves;
    /// returns each node's applied ops as (key, cas, replied).
    fn exchange(engines: &mut [TotalOrder], applied: &mut [Vec<(Vec<u8>, u64, bool)>]) {
        for (to, effects) in exchange_all(engines).iter().enumerate() {
            record(effects, &mut applied[to]);
        }
    }

    /// Delivers every owed frame, in node order, until nothing moves;
    /// returns each node's effects.
    pub(super) fn exchange_all(engines: &mut [TotalOrder]) -> Vec<Vec<Effect<Work>>> {
        let mut effects = vec![Vec::new(); engines.len()];
        loop {
            let mut moved = false;
            for from in 0..engines.len() {
                for to in 0..engines.len() {
                    if from == to {
                        continue;
                    }
                    if let Some(frame) = engines[from].outgoing(to as NodeId) {
                        moved = true;
                        engines[to].on_message(from as NodeId, frame, &mut effects[to]);
                    }
                }
            }
            if !moved {
                return effects;
            }
        }
    }

    fn record(effects: &[Effect<Work>], into: &mut Vec<(Vec<u8>, u64, bool)>) {
        for effect in effects {
            if let Effect::Work(Work::Apply(Apply {
                op, cas, reply_to, ..
            })) = effect
            {
                let key = match &op.request.command {
                    Command::Storage(s) => s.key.clone(),
                    Command::Get(g) => g.keys[0].to_vec(),
                    _ => Vec::new(),
                };
                into.push((key, *cas, reply_to.is_some()));
            }
        }
    }

    #[test]
    fn a_single_node_applies_at_once_with_a_stamp_unique() {
        let mut e = cluster(1, Consistency::Linearizable).remove(0);
        let mut out = Vec::new();
        e.on_client(reply_to(1, 0), set("k"), 0, &mut out);
        let cas = Stamp { ts: 1, node: 0 }.cas_unique();
        assert!(
            matches!(&out[..], [Effect::Work(Work::Apply(Apply { cas: c, reply_to: Some(_), .. }))] if *c == cas)
        );
    }

    /// Alone, no member can fall behind: a node keeps none of the writes
    /// it delivers (its memory is its store's).
    #[test]
    fn a_node_alone_keeps_no_delivered_write() {
        let mut e = TotalOrder::new(0, View::new(0, vec![0]), Consistency::Linearizable);
        e.on_client(reply_to(1, 0), set("k"), 0, &mut Vec::new());
        assert_eq!(e.delivered, 1);
        assert!(e.retained.is_empty());
        let one_of_two = TotalOrder::new(0, View::new(0, vec![0, 1]), Consistency::Linearizable);
        assert_eq!(one_of_two.retain_limit, DEFAULT_RETAIN_LIMIT);
    }

    #[test]
    fn concurrent_writes_apply_in_the_same_order_everywhere() {
        let mut engines = cluster(3, Consistency::Linearizable);
        let mut applied = vec![Vec::new(); 3];
        for (node, key) in [(0, "a"), (1, "b"), (2, "c"), (1, "d")] {
            let mut out = Vec::new();
            engines[node].on_client(reply_to(node as u64, 0), set(key), 0, &mut out);
            assert!(
                out.is_empty(),
                "nothing is applied before every member holds it"
            );
        }
        exchange(&mut engines, &mut applied);
        let order = |a: &Vec<(Vec<u8>, u64, bool)>| {
            a.iter()
                .map(|(k, c, _)| (k.clone(), *c))
                .collect::<Vec<_>>()
        };
        assert_eq!(applied[0].len(), 4);
        assert_eq!(order(&applied[0]), order(&applied[1]));
        assert_eq!(order(&applied[0]), order(&applied[2]));
        // Only the origin answers its client.
        let replied: usize = applied.iter().flatten().filter(|(_, _, r)| *r).count();
        assert_eq!(replied, 4);
        assert!(engines.iter().all(|e| e.pending() == 0));
    }

    /// The delivery argument needs an ack to follow every proposal its
    /// sender made before it. Node 0 sends node 1 a backlog in parts; meanwhile
    /// it makes a proposal of its own, then takes (and acks) node 2's
    /// proposals stamped above it: that ack must not reach node 1 before the
    /// proposal does, though the backlog's last part goes first.
    #[test]
    fn an_ack_never_overtakes_a_proposal_made_before_it_when_a_backlog_goes_in_parts() {
        let mut engines = cluster(3, Consistency::Linearizable);
        let node0 = engines.remove(0).with_frame_budget(1);
        engines.insert(0, node0);
        let none = &mut Vec::new();
        for key in ["a", "b"] {
            engines[0].on_client(reply_to(1, 0), set(key), 0, none);
        }
        let mut frames = vec![engines[0].outgoing(1).expect("the first part")];
        engines[0].on_client(reply_to(1, 1), set("mine"), 0, none);
        let mine = engines[0].unacked.back().expect("proposed").stamp;
        for key in ["x", "y", "z", "w", "v", "u"] {
            engines[2].on_client(reply_to(2, 0), set(key), 0, none);
        }
        let theirs = engines[2].outgoing(0).expect("node 2's proposals");
        let above = theirs.proposals.last().expect("some").stamp.ts;
        assert!(
            above > mine.ts,
            "node 2's proposals are stamped above node 0's"
        );
        engines[0].on_message(2, theirs, none);
        frames.extend(std::iter::from_fn(|| engines[0].outgoing(1)).take(20));

        let carries_mine = |f: &Broadcast| f.proposals.iter().any(|p| p.stamp == mine);
        let acks_theirs = |f: &Broadcast| f.acks.iter().any(|&(o, ts)| o == 2 && ts >= above);
        let mine_at = frames.iter().position(carries_mine).expect("sent");
        let ack_at = frames.iter().position(acks_theirs).expect("acked");
        assert!(
            ack_at >= mine_at,
            "node 2's ack went in frame {ack_at}, node 0's own earlier proposal in {mine_at}"
        );
    }

    /// A backlog that never drains (a proposal queued for every frame that
    /// goes) still lets acks through: once per backlog, not never.
    #[test]
    fn acks_go_out_under_a_backlog_that_never_drains() {
        let mut engines = cluster(3, Consistency::Linearizable);
        let node0 = engines.remove(0).with_frame_budget(1);
        engines.insert(0, node0);
        let none = &mut Vec::new();
        engines[2].on_client(reply_to(2, 0), set("theirs"), 0, none);
        let theirs = engines[2].outgoing(0).expect("node 2's proposal");
        for key in ["a", "b", "c"] {
            engines[0].on_client(reply_to(1, 0), set(key), 0, none);
        }
        engines[0].on_message(2, theirs, none);
        let mut acked = false;
        for i in 0..12 {
            engines[0].on_client(reply_to(1, i), set("more"), 0, none);
            let frame = engines[0].outgoing(1).expect("a frame");
            acked |= frame.acks.iter().any(|&(origin, ts)| origin == 2 && ts > 0);
        }
        assert!(acked, "twelve frames and still no ack of node 2's proposal");
    }

    /// Writes a member never acknowledges pile up in the queue; past the
    /// queue limit (measured at each tick) new writes are refused, reads
    /// still go, and writes are taken again once the queue has drained.
    #[test]
    fn writes_are_refused_while_the_queue_holds_more_than_its_limit() {
        let mut engines = cluster(3, Consistency::Linearizable);
        let node0 = engines.remove(0).with_queue_limit(1_000);
        engines.insert(0, node0);
        let mut out = Vec::new();
        for i in 0..30 {
            engines[0].on_client(reply_to(1, i), set("k"), 0, &mut out);
        }
        assert!(out.iter().all(|e| !matches!(e, Effect::Refuse { .. })));
        engines[0].on_tick(&mut out);
        let refused = |out: &[Effect<Work>]| matches!(out, [Effect::Refuse { reason, .. }] if reason.contains("the cluster is behind"));
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 30), set("k"), 0, &mut out);
        assert!(refused(&out), "{out:?}");
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 31), get("k"), 0, &mut out);
        assert!(!refused(&out), "reads still go: {out:?}");

        exchange(&mut engines, &mut vec![Vec::new(); 3]);
        engines[0].on_tick(&mut Vec::new());
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 32), set("k"), 0, &mut out);
        assert!(!refused(&out), "taken again once delivered: {out:?}");
    }

    #[test]
    fn the_delivery_lag_counts_whole_ticks_the_oldest_waiting_operation_waited() {
        let mut engines = cluster(3, Consistency::Linearizable);
        let lag = |e: &TotalOrder| e.status().delivery_lag;
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut Vec::new());
        engines[0].on_tick(&mut Vec::new());
        assert_eq!(lag(&engines[0]), Some(0), "queued since the last tick");
        for _ in 0..3 {
            engines[0].on_tick(&mut Vec::new());
        }
        assert_eq!(lag(&engines[0]), Some(3), "no ack came for three ticks");
        exchange(&mut engines, &mut vec![Vec::new(); 3]);
        assert!(engines.iter().all(|e| e.pending() == 0));
        engines[0].on_tick(&mut Vec::new());
        assert_eq!(lag(&engines[0]), Some(0), "nothing waits");
    }

    #[test]
    fn a_down_peer_makes_new_operations_refused() {
        let mut engines = cluster(3, Consistency::Linearizable);
        engines[0].on_peer(2, PeerEvent::Down);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut out);
        assert!(
            matches!(&out[..], [Effect::Refuse { reason, .. }] if reason.contains("node 2 is down"))
        );
        assert!(engines[0].outgoing(1).is_none(), "nothing was proposed");
    }

    #[test]
    fn a_lost_link_resends_what_the_peer_does_not_hold() {
        let mut engines = cluster(2, Consistency::Linearizable);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut out);
        let lost = engines[0].outgoing(1).expect("a frame");
        assert_eq!(lost.proposals.len(), 1);
        engines[0].on_peer(1, PeerEvent::LinkLost);
        engines[0].on_peer(1, PeerEvent::LinkOpened);
        let mut applied = vec![Vec::new(); 2];
        exchange(&mut engines, &mut applied);
        assert_eq!(applied[0].len(), 1);
        assert_eq!(applied[1].len(), 1);
        // A duplicate of what was already received is ignored.
        engines[1].on_message(0, lost, &mut out);
        assert_eq!(engines[1].pending(), 0);
    }

    #[test]
    fn a_sequential_read_waits_only_for_its_own_earlier_writes() {
        let mut engines = cluster(2, Consistency::Sequential);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(7, 0), set("a"), 0, &mut out);
        engines[0].on_client(reply_to(7, 1), get("a"), 0, &mut out);
        engines[0].on_client(reply_to(7, 2), set("b"), 0, &mut out);
        engines[0].on_client(reply_to(8, 0), get("a"), 0, &mut out);
        // Another connection's read is served at once; ours waits.
        let mut applied = vec![Vec::new(); 2];
        record(&out, &mut applied[0]);
        assert_eq!(applied[0], vec![(b"a".to_vec(), 0, true)]);
        exchange(&mut engines, &mut applied);
        let keys: Vec<&[u8]> = applied[0].iter().map(|(k, ..)| k.as_slice()).collect();
        assert_eq!(
            keys,
            [&b"a"[..], b"a", b"a", b"b"],
            "the read comes after `set a`, before `set b`"
        );
    }

    #[test]
    fn a_node_that_cannot_reach_a_majority_refuses_with_no_quorum() {
        let view = View::new(0, vec![0, 1, 2]);
        let mut alone = TotalOrder::new(2, view, Consistency::Sequential);
        alone.on_tick(&mut Vec::new());
        let mut out = Vec::new();
        alone.on_client(reply_to(1, 0), get("k"), 0, &mut out);
        assert!(
            matches!(&out[..], [Effect::Refuse { reason, .. }] if reason == "no quorum; not applied"),
            "{out:?}"
        );
    }

    #[test]
    fn a_majority_forms_a_view_without_a_down_member_and_serves() {
        let mut engines = cluster(3, Consistency::Linearizable);
        for e in engines.iter_mut().take(2) {
            e.on_peer(2, PeerEvent::Down);
        }
        let (first, rest) = engines.split_at_mut(2);
        let _ = rest;
        for _ in 0..2 {
            tick_all(first);
        }
        for e in first.iter() {
            assert_eq!(e.status().view_members, [0, 1]);
            assert_eq!(e.status().role, "member");
        }
        let mut out = Vec::new();
        first[1].on_client(reply_to(1, 0), set("k"), 0, &mut out);
        let mut applied = vec![Vec::new(); 2];
        record(&out, &mut applied[1]);
        exchange(first, &mut applied);
        assert_eq!(applied[0].len(), 1, "applied at node 0 too");
        assert_eq!(applied[1].len(), 1);
        assert!(applied[1][0].2, "node 1 answers its client");
    }

    /// Node 2 restarts: a fresh engine, known to the others as a new run;
    /// a tick everywhere and every frame it causes. Each node's effects.
    fn restart_node_2(engines: &mut [TotalOrder]) -> Vec<Vec<Effect<Work>>> {
        engines[2] = TotalOrder::new(2, View::new(0, vec![0, 1, 2]), Consistency::Linearizable);
        for peer in [0, 1] {
            engines[2].on_peer(peer, PeerEvent::LinkOpened);
            engines[2].on_peer(peer, PeerEvent::Up);
        }
        for e in engines.iter_mut().take(2) {
            e.on_hello(2, 99, true);
        }
        for e in engines.iter_mut() {
            e.on_tick(&mut Vec::new());
        }
        exchange_all(engines)
    }

    #[test]
    fn a_restarted_node_that_missed_no_write_needs_no_snapshot() {
        let mut engines = cluster(3, Consistency::Linearizable);
        let effects = restart_node_2(&mut engines);
        assert!(
            !effects
                .iter()
                .flatten()
                .any(|e| matches!(e, Effect::Work(Work::Dump { .. }))),
            "the same (empty) sequence is the same store"
        );
        assert_eq!(engines[2].status().role, "member");
    }

    /// Nodes 0 and 1 hold node 2 down and write `keys` in a view of their
    /// own; then they see node 2 up again.
    fn write_while_node_2_is_cut_off(engines: &mut [TotalOrder], keys: &[&str]) {
        for e in engines.iter_mut().take(2) {
            e.on_peer(2, PeerEvent::Down);
        }
        let (first, _) = engines.split_at_mut(2);
        for _ in 0..2 {
            tick_all(first);
        }
        for (slot, key) in keys.iter().enumerate() {
            let mut out = Vec::new();
            first[0].on_client(reply_to(1, slot as u64), set(key), 0, &mut out);
            exchange(first, &mut vec![Vec::new(); 2]);
        }
        for e in engines.iter_mut().take(2) {
            e.on_peer(2, PeerEvent::Up);
        }
    }

    /// [`write_while_node_2_is_cut_off`], then nodes 0 and 1 take node 2
    /// back. Each node's effects from then on.
    fn node_2_cut_off_while_writing(
        engines: &mut [TotalOrder],
        keys: &[&str],
    ) -> Vec<Vec<Effect<Work>>> {
        write_while_node_2_is_cut_off(engines, keys);
        let mut effects = vec![Vec::new(); engines.len()];
        for _ in 0..3 {
            for (e, out) in engines.iter_mut().zip(effects.iter_mut()) {
                e.on_tick(out);
            }
            for (all, more) in effects.iter_mut().zip(exchange_all(engines)) {
                all.extend(more);
            }
        }
        effects
    }

    #[test]
    fn a_member_that_missed_writes_kept_is_handed_them_rather_than_a_snapshot() {
        let mut engines = cluster_keeping(3, Consistency::Linearizable, 1 << 20);
        let effects = node_2_cut_off_while_writing(&mut engines, &["k"]);
        assert!(
            !effects
                .iter()
                .flatten()
                .any(|e| matches!(e, Effect::Work(Work::Dump { .. }))),
            "no snapshot is read: {effects:?}"
        );
        assert_eq!(applies(&effects[2], "k"), 1, "{:?}", effects[2]);
        assert_eq!(engines[2].status().role, "member");
        assert_eq!(engines[0].status().missed_handed, 1);
        assert_eq!(engines[0].status().missed_writes_handed, 1);
        assert_eq!(engines[2].status().missed_received, 1);
        assert_eq!(engines[0].status().snapshots_sent, 0);
    }

    /// A node that restarted may hold items it does not say it holds (a
    /// memcached backend keeps them): it takes a snapshot, even when every
    /// write the cluster delivered is kept.
    #[test]
    fn a_restarted_member_is_handed_a_snapshot_even_when_every_write_is_kept() {
        let mut engines = cluster_keeping(3, Consistency::Linearizable, 1 << 20);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut out);
        exchange(&mut engines, &mut vec![Vec::new(); 3]);
        let effects = restart_node_2(&mut engines);
        assert_eq!(dump_tags(&effects[0]).len(), 1, "{:?}", effects[0]);
        assert_eq!(applies(&effects[2], "k"), 0);
    }

    #[test]
    fn a_member_that_missed_more_than_was_kept_is_handed_a_snapshot() {
        let mut engines = cluster_keeping(3, Consistency::Linearizable, 1);
        let effects = node_2_cut_off_while_writing(&mut engines, &["a", "b"]);
        assert_eq!(dump_tags(&effects[0]).len(), 1, "{:?}", effects[0]);
        assert_eq!(applies(&effects[2], "b"), 0);
        assert_eq!(engines[2].status().role, "catching-up");
    }

    #[test]
    fn a_member_without_the_state_is_handed_a_snapshot_before_it_serves() {
        let mut engines = cluster_with_a_write();
        let effects = restart_node_2(&mut engines);
        let mut out = Vec::new();
        engines[2].on_client(reply_to(5, 0), get("k"), 0, &mut out);
        assert!(
            matches!(&out[..], [Effect::Refuse { reason, .. }] if reason.contains("catching up")),
            "{out:?}"
        );
        // The lowest source reads the store for it once the view started.
        let tag = the_install_tag(&mut engines, &effects);
        assert_eq!(engines[2].status().role, "catching-up");
        engines[2].on_store(Report::Installed { tag }, &mut Vec::new());
        assert_eq!(engines[2].status().role, "member");
    }

    /// A member whose store installs its chunks slowly (a memcached backend
    /// that first deletes every item it held) has every chunk before the
    /// store has installed the first: it waits for its store, not for its
    /// source, and asks for no new view meanwhile (it did after four times
    /// the patience, found by a test of the real binaries: every new view
    /// handed the snapshot again, and the member never took it).
    #[test]
    fn a_member_whose_store_installs_slowly_waits_for_it_rather_than_a_new_view() {
        let mut engines = cluster_with_a_write();
        let effects = restart_node_2(&mut engines);
        let tag = the_install_tag(&mut engines, &effects);
        for _ in 0..2 * view_change::SNAPSHOT_PATIENCE * DEFAULT_PATIENCE {
            for e in engines.iter_mut() {
                e.on_tick(&mut Vec::new());
            }
            exchange_all(&mut engines);
        }
        assert_eq!(engines[2].status().role, "catching-up");
        assert_eq!(engines[2].status().views_installed, 1, "a new view");
        engines[2].on_store(Report::Installed { tag }, &mut Vec::new());
        assert_eq!(engines[2].status().role, "member");
    }

    /// A store on a worker thread reports the install of view V1's snapshot
    /// only after view V2 is installed (node 2 again without the state, V2's
    /// snapshot not begun): node 2 must not serve V1's store in V2.
    #[test]
    fn an_install_of_an_earlier_view_does_not_make_the_node_serve() {
        let mut engines = cluster_with_a_write();
        let effects = restart_node_2(&mut engines);
        let old = the_install_tag(&mut engines, &effects);
        // A write proposed while node 2 catches up: held, undelivered.
        engines[1].on_client(reply_to(7, 0), set("k2"), 0, &mut Vec::new());
        exchange_all(&mut engines);
        // A new view (node 1 seen to restart) before node 2's store says Installed.
        engines[0].on_hello(1, 99, true);
        for e in engines.iter_mut() {
            e.on_tick(&mut Vec::new());
        }
        let v2 = exchange_all(&mut engines);
        assert_eq!(dump_tags(&v2[0]).len(), 1, "{v2:?}");
        assert_eq!(engines[2].status().role, "catching-up");
        engines[2].on_store(Report::Installed { tag: old }, &mut Vec::new());
        exchange_all(&mut engines);
        assert_eq!(
            engines[2].status().role,
            "catching-up",
            "V1's install made node 2 serve in V2"
        );
    }

    /// A chunk whose install failed (a reset or import error) leaves the
    /// store incomplete: the later `Installed` must not make the node serve.
    #[test]
    fn a_failed_install_chunk_keeps_the_node_from_serving() {
        let mut engines = cluster_with_a_write();
        let effects = restart_node_2(&mut engines);
        let tag = the_install_tag(&mut engines, &effects);
        engines[2].on_store(
            Report::SnapshotFailed {
                tag,
                why: "reset failed".into(),
            },
            &mut Vec::new(),
        );
        engines[2].on_store(Report::Installed { tag }, &mut Vec::new());
        // It asks for a new view (and a new snapshot) instead.
        assert_ne!(
            engines[2].status().role,
            "member",
            "serves a store whose install failed"
        );
    }

    /// Three engines that all applied a write of `k`: a restarted node's
    /// empty store is behind.
    fn cluster_with_a_write() -> Vec<TotalOrder> {
        let mut engines = cluster(3, Consistency::Linearizable);
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut Vec::new());
        exchange(&mut engines, &mut vec![Vec::new(); 3]);
        engines
    }

    /// The tag of the one read of a snapshot for node 2 among node 0's
    /// effects (`effects[0]`).
    fn the_dump_tag(effects: &[Vec<Effect<Work>>]) -> u64 {
        match dump_tags(&effects[0])[..] {
            [tag] => tag,
            _ => panic!("one read of the store for node 2: {effects:?}"),
        }
    }

    /// Node 0 reads node 2's whole snapshot (asked for in `effects`) and
    /// hands it over: the tag of node 2's one install.
    fn the_install_tag(engines: &mut [TotalOrder], effects: &[Vec<Effect<Work>>]) -> u64 {
        let tag = the_dump_tag(effects);
        engines[0].on_store(chunk(tag, "k"), &mut Vec::new());
        let received = exchange_all(engines);
        match install_tags(&received[2])[..] {
            [tag] => tag,
            _ => panic!("one install on node 2: {received:?}"),
        }
    }

    /// The tags of the reads of a snapshot for node 2 from its start.
    fn dump_tags(effects: &[Effect<Work>]) -> Vec<u64> {
        let tags = effects.iter().filter_map(|e| match e {
            Effect::Work(Work::Dump {
                to: 2,
                start: true,
                tag,
            }) => Some(*tag),
            _ => None,
        });
        tags.collect()
    }

    fn install_tags(effects: &[Effect<Work>]) -> Vec<u64> {
        let tags = effects.iter().filter_map(|e| match e {
            Effect::Work(Work::Install { tag, .. }) => Some(*tag),
            _ => None,
        });
        tags.collect()
    }

    /// The whole snapshot for node 2 in one chunk, holding `key`.
    fn chunk(tag: u64, key: &str) -> Report {
        part(tag, key, true, true)
    }

    /// A part of node 2's snapshot that holds `key`: its first, its last,
    /// or one between.
    fn part(tag: u64, key: &str, first: bool, last: bool) -> Report {
        Report::Chunk {
            tag,
            to: 2,
            records: vec![chunk_record(key)],
            read_at: 1_700_000_000,
            first: first.then(crate::store::Head::default),
            last,
            total: key.len() as u64 + 1,
            frozen: true,
        }
    }

    /// A record of `key` as a snapshot chunk carries it.
    fn chunk_record(key: &str) -> crate::store::Record {
        crate::store::Record {
            key: key.as_bytes().to_vec(),
            entry: crate::store::Entry {
                flags: 0,
                expiry: crate::store::Expiry::Never,
                value: b"v".to_vec(),
            },
            cas: 1,
            stored_at: 1_700_000_000,
            referenced: false,
        }
    }

    /// The records of the `Install` work in `effects`.
    fn installed(effects: &[Effect<Work>]) -> Vec<Vec<u8>> {
        let installs = effects.iter().filter_map(|e| match e {
            Effect::Work(Work::Install { records, .. }) => Some(records),
            _ => None,
        });
        installs.flatten().map(|r| r.key.clone()).collect()
    }

    /// Writes of `key` that `effects` apply.
    fn applies(effects: &[Effect<Work>], key: &str) -> usize {
        let writes = effects.iter().filter(|e| match e {
            Effect::Work(Work::Apply(apply)) => matches!(
                &apply.op.request.command,
                Command::Storage(Storage { key: k, .. }) if k == key.as_bytes()
            ),
            _ => false,
        });
        writes.count()
    }

    /// A write proposed while the source hands a snapshot: read from an
    /// image the store keeps while it applies writes (an ordered memory
    /// store's), the source applies it at once; read from the store as it
    /// is (a memcached backend, listed by key), not until the member took
    /// the last chunk, since a chunk read after it would hold it. Either
    /// way the member applies it once, after its snapshot, which ends
    /// where the image was taken.
    fn a_write_while_a_snapshot_is_handed(frozen: bool) {
        let chunk = |tag, first, last| {
            let mut report = part(tag, "k", first, last);
            if let Report::Chunk { frozen: kept, .. } = &mut report {
                *kept = frozen;
            }
            report
        };
        let mut engines = cluster_with_a_write();
        let tag = the_dump_tag(&restart_node_2(&mut engines));
        let image = engines[0].delivered_upto;
        engines[0].on_store(chunk(tag, true, false), &mut Vec::new());
        engines[1].on_client(reply_to(7, 0), set("k2"), 0, &mut Vec::new());
        let mut during = exchange_all(&mut engines);
        during.extend(exchange_all(&mut engines));
        engines[0].on_tick(&mut during[0]);
        let rest = the_next_read(&during[0]);
        let applied = usize::from(frozen);
        assert_eq!(applies(&during[0], "k2"), applied, "{during:?}");
        engines[0].on_store(chunk(rest, false, true), &mut Vec::new());
        let received = exchange_all(&mut engines);
        assert_eq!(
            engines[2].delivered_upto, image,
            "the snapshot ends at the image"
        );
        let installed = install_tags(&received[2]);
        let mut member = Vec::new();
        engines[2].on_store(Report::Installed { tag: installed[0] }, &mut member);
        assert_eq!(applies(&member, "k2"), 1, "{member:?}");
        let after = exchange_all(&mut engines);
        assert_eq!(applies(&after[0], "k2"), 1 - applied, "{after:?}");
    }

    /// A snapshot read again after the source's link to the member broke
    /// is of the same image, and says so: it ends where the image was
    /// taken, not at the write the source delivered since, which the
    /// member applies after it, once.
    #[test]
    fn a_snapshot_read_again_after_a_lost_link_ends_where_the_image_was_taken() {
        let mut engines = cluster_with_a_write();
        let tag = the_dump_tag(&restart_node_2(&mut engines));
        let image = engines[0].delivered_upto;
        engines[0].on_store(part(tag, "k", true, false), &mut Vec::new());
        engines[1].on_client(reply_to(7, 0), set("k2"), 0, &mut Vec::new());
        let mut during = exchange_all(&mut engines);
        during.extend(exchange_all(&mut engines));
        assert_eq!(applies(&during[0], "k2"), 1, "{during:?}");
        engines[0].on_peer(2, PeerEvent::LinkLost);
        engines[0].on_peer(2, PeerEvent::LinkOpened);
        let mut again = Vec::new();
        engines[0].on_tick(&mut again);
        let [tag] = dump_tags(&again)[..] else {
            panic!("the snapshot is read again from its start: {again:?}");
        };
        engines[0].on_store(chunk(tag, "k"), &mut Vec::new());
        let received = exchange_all(&mut engines);
        assert_eq!(engines[2].delivered_upto, image, "{received:?}");
        let installed = install_tags(&received[2]);
        let mut member = Vec::new();
        let last = *installed.last().expect("an install");
        engines[2].on_store(Report::Installed { tag: last }, &mut member);
        assert_eq!(applies(&member, "k2"), 1, "{member:?}");
    }

    #[test]
    fn a_source_applies_writes_while_it_hands_a_snapshot_of_a_frozen_image() {
        a_write_while_a_snapshot_is_handed(true);
    }

    #[test]
    fn a_source_applies_no_write_while_it_hands_a_snapshot_of_its_live_store() {
        a_write_while_a_snapshot_is_handed(false);
    }

    /// The tag of the one read of a snapshot among `effects`, which reads
    /// its next chunk (not the first).
    fn the_next_read(effects: &[Effect<Work>]) -> u64 {
        let mut reads = effects.iter().filter_map(|e| match e {
            Effect::Work(Work::Dump { start, tag, .. }) => Some((*start, *tag)),
            _ => None,
        });
        match (reads.next(), reads.next()) {
            (Some((false, tag)), None) => tag,
            _ => panic!("one read of the next chunk: {effects:?}"),
        }
    }

    /// A source reads the next chunk once the last one left in a frame
    /// (one chunk a frame), while fewer than `WINDOW` are on their way; the
    /// member's `Took` of one lets it read another, without waiting for a
    /// tick. So a snapshot moves as fast as the member takes it, and a slow
    /// member or link holds at most a window of chunks in the source's
    /// memory.
    #[test]
    fn a_source_reads_ahead_of_its_member_by_at_most_a_window_of_chunks() {
        let mut engines = cluster_with_a_write();
        let frames = a_window_of_chunks_for_node_2(&mut engines);
        // Node 2 takes them, its store installs them, and it says so:
        // node 0 reads on.
        let mut taken = Vec::new();
        for frame in frames {
            engines[2].on_message(0, frame, &mut taken);
        }
        assert_eq!(installed(&taken).len() as u64, view_change::WINDOW);
        report_installs(&mut engines[2], &taken);
        let received = exchange_all(&mut engines);
        let tag = the_next_read(&received[0]);
        engines[0].on_store(part(tag, "k", false, true), &mut Vec::new());
        let received = exchange_all(&mut engines);
        assert_eq!(installed(&received[2]), [b"k".to_vec()], "the last part");
    }

    /// A member says it took a chunk only once its store reported the chunk
    /// installed, not when the chunk came: a store on a worker thread (a
    /// memcached backend) may install slower than chunks come, and the
    /// window must bound what waits in the member's memory as well as in
    /// its source's.
    #[test]
    fn a_member_says_it_took_a_chunk_only_once_its_store_installed_it() {
        let mut engines = cluster_with_a_write();
        let mut received = Vec::new();
        for frame in a_window_of_chunks_for_node_2(&mut engines) {
            engines[2].on_message(0, frame, &mut received);
        }
        let tags = install_tags(&received);
        assert_eq!(tags.len() as u64, view_change::WINDOW);
        let waiting = exchange_all(&mut engines);
        assert_eq!(
            reads(&waiting[0]),
            0,
            "node 0 read on before node 2's store installed a chunk: {waiting:?}"
        );
        engines[2].on_store(Report::ChunkInstalled { tag: tags[0] }, &mut Vec::new());
        let received = exchange_all(&mut engines);
        the_next_read(&received[0]);
    }

    /// Node 2 restarts, and node 0 reads and sends it a window of chunks
    /// of its snapshot, each once the last left in a frame (at a tick
    /// after it left, not at one before: node 2 says nothing meanwhile)
    /// and none past the window: those frames, not yet delivered.
    fn a_window_of_chunks_for_node_2(engines: &mut [TotalOrder]) -> Vec<Broadcast> {
        let mut tag = the_dump_tag(&restart_node_2(engines));
        let mut frames = Vec::new();
        for read in 1..=view_change::WINDOW {
            let mut early = Vec::new();
            engines[0].on_store(part(tag, "k", read == 1, false), &mut early);
            engines[0].on_tick(&mut early);
            assert_eq!(
                reads(&early),
                0,
                "read before the last chunk left: {early:?}"
            );
            frames.push(engines[0].outgoing(2).expect("a frame with the chunk"));
            let mut ticked = Vec::new();
            engines[0].on_tick(&mut ticked);
            if read < view_change::WINDOW {
                tag = the_next_read(&ticked);
            } else {
                assert_eq!(reads(&ticked), 0, "past the window: {ticked:?}");
            }
        }
        frames
    }

    /// `engine`'s store reports the chunks `effects` install as installed.
    fn report_installs(engine: &mut TotalOrder, effects: &[Effect<Work>]) {
        for tag in install_tags(effects) {
            engine.on_store(Report::ChunkInstalled { tag }, &mut Vec::new());
        }
    }

    /// Reads of the store for a snapshot among `effects`.
    fn reads(effects: &[Effect<Work>]) -> usize {
        let reads = effects
            .iter()
            .filter(|e| matches!(e, Effect::Work(Work::Dump { .. })));
        reads.count()
    }

    /// A view change that ends a snapshot under way tells the store side,
    /// which forgets how far it had listed it (on a memcached backend,
    /// every key of the store).
    #[test]
    fn a_view_change_that_ends_a_snapshot_tells_the_store_side() {
        let mut engines = cluster_with_a_write();
        the_dump_tag(&restart_node_2(&mut engines));
        // Node 2 restarts again: node 0 coordinates a new view at its tick.
        engines[2] = TotalOrder::new(2, View::new(0, vec![0, 1, 2]), Consistency::Linearizable);
        for peer in [0, 1] {
            engines[2].on_peer(peer, PeerEvent::LinkOpened);
            engines[2].on_peer(peer, PeerEvent::Up);
        }
        let mut ended = Vec::new();
        engines[0].on_hello(2, 100, true);
        engines[0].on_tick(&mut ended);
        assert!(ended.contains(&Effect::Work(Work::EndDumps)), "{ended:?}");
    }

    /// Nodes left out of a view change for not answering it are asked
    /// again once no majority is left without them: two nodes that each
    /// left the other out after a change their broken link stalled would
    /// otherwise never form a view together (found by the simulation: after
    /// a third node left, two nodes that saw each other up refused clients
    /// with `no quorum` for a thousand steps, until the third came back).
    #[test]
    fn nodes_left_out_for_silence_are_asked_again_when_no_majority_is_left_without_them() {
        let mut engines = cluster(3, Consistency::Linearizable);
        for (me, other) in [(0, 1), (1, 0)] {
            engines[me].on_peer(2, PeerEvent::Left);
            engines[me].unresponsive.insert(other);
        }
        engines.truncate(2);
        for _ in 0..4 * DEFAULT_PATIENCE {
            tick_all(&mut engines);
        }
        for e in &engines {
            assert_eq!(e.status().role, "member", "{e:?}");
            assert_eq!(e.status().view_members, [0, 1]);
        }
    }

    /// A member's `Took` lost with a broken link would leave its source's
    /// window full, reading nothing and delivering nothing until the member
    /// gave up on its snapshot (found by a review). The member says how
    /// many chunks it took again when the link opens again.
    #[test]
    fn a_took_lost_with_a_broken_link_is_said_again_when_it_reopens() {
        let mut engines = cluster_with_a_write();
        let mut taken = Vec::new();
        for frame in a_window_of_chunks_for_node_2(&mut engines) {
            engines[2].on_message(0, frame, &mut taken);
        }
        report_installs(&mut engines[2], &taken);
        // Node 2's link to node 0 breaks before its `Took`s leave.
        engines[2].on_peer(0, PeerEvent::LinkLost);
        let stalled = exchange_all(&mut engines);
        assert_eq!(reads(&stalled[0]), 0, "node 0 heard a Took");
        engines[2].on_peer(0, PeerEvent::LinkOpened);
        let received = exchange_all(&mut engines);
        the_next_read(&received[0]);
    }

    /// A `Took` for a part of missed writes, lost with a broken link, would
    /// leave the source's window full and its delivery held until the
    /// member gave up on it (found in review): the member says it again
    /// when the link opens again, though it installs no snapshot.
    #[test]
    fn a_took_for_missed_writes_lost_with_a_broken_link_is_said_again() {
        let mut engines = cluster_keeping(3, Consistency::Linearizable, 1 << 20);
        for e in engines.iter_mut() {
            e.frame_budget = 1; // a part per write
        }
        let part_came = |frame: &Broadcast| {
            frame
                .control
                .iter()
                .any(|c| matches!(c, Control::Missed { last: false, .. }))
        };
        write_while_node_2_is_cut_off(&mut engines, &["a", "b", "c"]);
        // Frames go one at a time until node 2 has a first part.
        let mut came = false;
        'frames: for _ in 0..20 {
            for e in engines.iter_mut() {
                e.on_tick(&mut Vec::new());
            }
            for (from, to) in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)] {
                if let Some(frame) = engines[from].outgoing(to as NodeId) {
                    came = to == 2 && part_came(&frame);
                    engines[to].on_message(from as NodeId, frame, &mut Vec::new());
                    if came {
                        break 'frames;
                    }
                }
            }
        }
        assert!(came, "node 2 was handed no part");
        // Its `Took` is lost with its link to node 0.
        engines[2].on_peer(0, PeerEvent::LinkLost);
        engines[2].on_peer(0, PeerEvent::LinkOpened);
        let frame = engines[2].outgoing(0).expect("a frame for node 0");
        assert!(
            frame
                .control
                .iter()
                .any(|c| matches!(c, Control::Took { chunks: 1, .. })),
            "{frame:?}"
        );
    }

    /// Nodes 0 and 1 crash together and recover from their logs (node 0's
    /// one write longer, `ahead`, or as long), rebuilt from key states;
    /// node 2 kept running. Returns the nodes node 0 and node 2 each read
    /// a snapshot for, and the parts of missed writes node 2 received.
    fn after_two_rebuilt_recoveries(ahead: bool) -> (Vec<NodeId>, Vec<NodeId>, u64) {
        let mut engines = cluster_keeping(3, Consistency::Linearizable, 1 << 20);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut out);
        exchange(&mut engines, &mut vec![Vec::new(); 3]);
        let upto = engines[2].delivered_upto;
        let longer = Stamp {
            ts: upto.ts + 1,
            ..upto
        };
        let view = View::new(0, vec![0, 1, 2]);
        for id in [0, 1] {
            let held = if id == 0 && ahead { longer } else { upto };
            let mut e = TotalOrder::new(id, view.clone(), Consistency::Linearizable)
                .with_retain_limit(1 << 20)
                .with_data_dir(Some(held), false);
            for peer in view.others(id) {
                e.on_peer(peer, PeerEvent::LinkOpened);
                e.on_peer(peer, PeerEvent::Up);
            }
            engines[id as usize] = e;
        }
        for e in engines.iter_mut().skip(2) {
            for peer in [0, 1] {
                e.on_hello(peer, 99, true);
            }
        }
        let mut dumps = [Vec::new(), Vec::new()];
        for _ in 0..30 {
            for e in engines.iter_mut() {
                e.on_tick(&mut Vec::new());
            }
            let effects = exchange_all(&mut engines);
            for (source, dumps) in [0, 2].into_iter().zip(dumps.iter_mut()) {
                dumps.extend(effects[source].iter().filter_map(|e| match e {
                    Effect::Work(Work::Dump {
                        to, start: true, ..
                    }) => Some(*to),
                    _ => None,
                }));
            }
        }
        let [mut from_0, mut from_2] = dumps;
        from_0.sort();
        from_2.sort();
        (from_0, from_2, engines[2].status().missed_received)
    }

    /// Node 0's log is the longest: it is the view's only source, its store
    /// rebuilt from its log, whose order may not be node 2's (found in
    /// review). Node 2 takes its snapshot, not the writes it missed, as
    /// node 1 does.
    #[test]
    fn a_member_of_a_view_whose_source_was_rebuilt_takes_its_snapshot() {
        let (from_0, from_2, missed) = after_two_rebuilt_recoveries(true);
        assert_eq!(from_0, [1, 2], "node 0 reads a snapshot for each");
        assert_eq!((from_2, missed), (vec![], 0));
    }

    /// The logs are as long: node 2, whose store is in the cluster's order,
    /// is the source rather than node 0, and the rebuilt take its snapshot.
    #[test]
    fn of_logs_as_long_the_store_in_the_clusters_order_is_the_source() {
        let (from_0, from_2, missed) = after_two_rebuilt_recoveries(false);
        assert_eq!((from_0, missed), (vec![], 0));
        assert_eq!(from_2, [0, 1], "node 2 reads a snapshot for each");
    }

    /// A member's `Caught` lost with a broken link would leave its source
    /// handing it a snapshot for good, and delivering nothing meanwhile
    /// (found by the simulation: a source's clients waited forever). The
    /// member says it again when the link opens again.
    #[test]
    fn a_caught_lost_with_a_broken_link_is_said_again_when_it_reopens() {
        let mut engines = cluster_with_a_write();
        let effects = restart_node_2(&mut engines);
        let tag = the_install_tag(&mut engines, &effects);
        engines[2].on_store(Report::Installed { tag }, &mut Vec::new());
        // Node 2's link to node 0 breaks before its `Caught` leaves.
        engines[2].on_peer(0, PeerEvent::LinkLost);
        exchange_all(&mut engines);
        assert!(!engines[0].handing.is_empty(), "node 0 heard no Caught");
        engines[2].on_peer(0, PeerEvent::LinkOpened);
        exchange_all(&mut engines);
        assert!(
            engines[0].handing.is_empty(),
            "node 0 hands node 2 a snapshot still"
        );
    }

    /// A member that promised a newer ballot takes nothing more of its old
    /// view's snapshot: a chunk still on its way would otherwise be
    /// installed, and with a store that answers late, its install could end
    /// once the newer view formed and pass for that view's state, without
    /// the newer view's start sequence (found by the simulation: a write
    /// acknowledged in the newer view was missing on the member).
    #[test]
    fn a_member_that_promised_a_newer_ballot_installs_nothing_of_the_old_snapshot() {
        let mut engines = cluster_with_a_write();
        let tag = the_dump_tag(&restart_node_2(&mut engines));
        engines[0].on_store(chunk(tag, "k"), &mut Vec::new());
        let held = engines[0].outgoing(2).expect("the frame with the snapshot");
        // Node 1 asks node 2 to leave the view for a newer one first.
        engines[1].on_tick(&mut Vec::new());
        let mut prepare = engines[1].outgoing(2).expect("a frame");
        let newer = Ballot {
            round: engines[2].ballot.round + 1,
            coordinator: 1,
        };
        prepare.ballot = Ballot::default();
        prepare.control = vec![Control::Prepare {
            ballot: newer,
            members: vec![0, 1, 2],
        }];
        let mut effects = Vec::new();
        engines[2].on_message(1, prepare, &mut effects);
        assert_eq!(engines[2].promised, newer);
        engines[2].on_message(0, held, &mut effects);
        assert_eq!(install_tags(&effects), [], "{effects:?}");
    }

    /// A store on a worker thread answers late: the chunk read for a view
    /// that a view change ended may come back after the next view asked for
    /// a new one, and must not be sent as the new one's (it lacks what the
    /// new view's start sequence wrote).
    #[test]
    fn a_chunk_read_for_an_earlier_view_is_not_handed_over_in_a_later_one() {
        let mut engines = cluster_with_a_write();
        let stale = the_dump_tag(&restart_node_2(&mut engines));
        // Node 2 restarts again before the first chunk is read: a new view.
        let fresh = the_dump_tag(&restart_node_2(&mut engines));
        let mut out = Vec::new();
        engines[0].on_store(chunk(stale, "old"), &mut out);
        engines[0].on_store(chunk(fresh, "k"), &mut out);
        let received = exchange_all(&mut engines);
        assert_eq!(installed(&received[2]), vec![b"k".to_vec()]);
    }
}
