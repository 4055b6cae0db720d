//! What peers say to each other, whatever the mode: the link-level envelope
//! around each mode's own message.
//!
//! A link opens with the acceptor's [`PeerMessage::Challenge`] and the
//! dialer's [`Hello`] answering it ([`super::handshake`]); after it, every
//! message is a [`Frame`]:
//! the sender's load (for `show`) and its mode's message, which carries,
//! coalesced, everything the sender has for that peer since its last frame
//! ([`crate::cluster::total_order::Broadcast`],
//! [`crate::cluster::eventual::Gossip`]). [`PeerMessage::Welcome`] and
//! [`PeerMessage::Refused`] answer a hello, taken or not;
//! [`PeerMessage::Leave`] says the sender is shutting down.

use super::handshake::Nonce;
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
    /// The dialer's fresh nonce for this link.
    pub nonce: Nonce,
    /// HMAC-SHA256 under the cluster secret of the fields above, the
    /// acceptor's challenge and id, the wire version and the mode's protocol.
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
    /// The acceptor's first message on a link: the nonce the hello must prove.
    Challenge(Nonce),
    Hello(Hello),
    Frame(Frame<M>),
    /// Answers a hello that was taken, naming the run that took it: the
    /// receiver's run counts as a member for that run of the sender.
    Welcome {
        incarnation: u64,
        /// The acceptor's proof of the cluster secret for this link.
        proof: Vec<u8>,
    },
    /// The sender is shutting down.
    Leave,
    /// The receiver's hello was refused, and why, with the acceptor's proof
    /// for this link (a refusal fences the receiver: it must be the
    /// acceptor's); the link then closes.
    Refused {
        why: String,
        proof: Vec<u8>,
    },
}

impl<M> PeerMessage<M> {
    /// What kind of message it is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Challenge(_) => "challenge",
            PeerMessage::Hello(_) => "hello",
            PeerMessage::Frame(_) => "frame",
            PeerMessage::Welcome { .. } => "welcome",
            PeerMessage::Leave => "leave",
            PeerMessage::Refused { .. } => "refusal",
        }
    }
}
