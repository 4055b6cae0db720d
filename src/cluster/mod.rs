//! The cluster: how nodes agree on the order of operations and talk to each
//! other. Pure parts (stamps, views, messages, the wire format, the engine)
//! live here; the sockets that carry them live in [`crate::server`].

pub mod engine;
pub mod eventual;
pub mod handshake;
pub mod message;
pub mod replicator;
pub mod sim;
pub mod stamp;
pub mod view;
pub mod wire;

pub use engine::{Effect, Engine};
pub use message::{ChangeMark, Frame, Hello, Op, PeerMessage, Proposal, SyncDone};
pub use replicator::Replicator;
pub use stamp::{LamportClock, Stamp};
pub use view::View;

/// A node's id: the `N` of its `[node.N]` section.
pub type NodeId = u32;
