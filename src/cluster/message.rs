//! What peers say to each other, whatever the mode: the link-level envelope
//! around each mode's own message.
//!
//! A link opens with a [`Hello`]; after it, every message is a [`Frame`]:
//! the sender's load (for `show`) and its mode's message, which carries,
//! coalesced, everything the sender has for that peer since its last frame
//! ([`crate::cluster::total_order::Broadcast`],
//! [`crate::cluster::eventual::Gossip`]). [`PeerMessage::Welcome`] and
//! [`PeerMessage::Refused`] answer a hello, taken or not;
//! [`PeerMessage::Leave`] says the sender is shutting down.

use super::membership::Load;
use super::NodeId;
use crate::protocol::Request;
use crate::store::UnixTime;

/// An operation as it is replicated: the client's request and the origin's
/// wall time, so relative expiry times mean the same at every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub request: Request,
    pub now: UnixTime,
}

/// The first message on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub cluster: String,
    pub node: NodeId,
    /// Changes every time the node process starts.
    pub incarnation: u64,
    /// HMAC-SHA256 of the fields above (and of the wire version and the
    /// mode's protocol) under the cluster secret.
    pub proof: Vec<u8>,
}

/// Everything new a node has for one peer: its load and its mode's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<M> {
    pub load: Load,
    pub body: M,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage<M> {
    Hello(Hello),
    Frame(Frame<M>),
    /// Answers a hello that was taken, naming the run that took it: the
    /// receiver's run counts as a member for that run of the sender.
    Welcome {
        incarnation: u64,
    },
    /// The sender is shutting down.
    Leave,
    /// The receiver's hello was refused, and why; the link then closes.
    Refused(String),
}

impl<M> PeerMessage<M> {
    /// What kind of message it is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Hello(_) => "hello",
            PeerMessage::Frame(_) => "frame",
            PeerMessage::Welcome { .. } => "welcome",
            PeerMessage::Leave => "leave",
            PeerMessage::Refused(_) => "refusal",
        }
    }
}
