//! The cluster core: how nodes agree on what to apply and talk to each
//! other, as pure state machines (no socket, no clock, no store).
//!
//! ```text
//!  node.rs        Node: membership + the mode's engine, the one interface the host drives
//!  membership.rs  failure detection: heartbeats, up/down after a timeout, runs, fencing
//!  engine.rs      the Engine trait every mode implements, and its store side (Replica)
//!  total_order/   linearizable and sequential: total-order broadcast (Broadcast messages)
//!  eventual/      eventual: last writer wins, anti-entropy, the version log (Gossip messages)
//!  message.rs     the link-level envelope: challenge, hello, welcome, refusal, frame, leave
//!  wire.rs        the byte format of the envelope and of replicated operations
//!  handshake.rs   challenge-response between peers, and the tag on every message after it
//!  stamp.rs view.rs  Lamport stamps and views
//! ```
//!
//! The sockets that carry messages live in [`crate::server`]; where store
//! work runs lives in [`crate::backend`]. Dependencies point one way:
//! server -> backend -> cluster -> (store, protocol).

pub mod engine;
pub mod eventual;
pub mod handshake;
pub mod membership;
pub mod message;
pub mod node;
pub mod stamp;
pub mod total_order;
pub mod view;
pub mod wire;

pub use engine::{
    Done, Effect, Engine, PeerEvent, PeerStatus, Replica, ReplyTo, Status, StoreWork, SyncStats,
};
pub use message::{Frame, Hello, Op, PeerMessage};
pub use node::Node;
pub use stamp::{LamportClock, Stamp};
pub use view::View;

/// A node's id: the `N` of its `[node.N]` section.
pub type NodeId = u32;
