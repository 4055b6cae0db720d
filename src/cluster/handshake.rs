//! How two nodes prove to each other that they hold the cluster secret, and
//! how every message after that proof is authenticated.
//!
//! ```text
//!  dialer D                                        acceptor A
//!     ◄──── challenge: nonce_a (fresh per link) ──────
//!     ───── hello: D, run, nonce_d, proof_D ─────────►  A checks proof_D
//!     ◄──── welcome: A's run, proof_A ───────────────   (or a refusal)
//!  D checks proof_A
//!     ───── frame ‖ tag(0), frame ‖ tag(1), ... ─────►  A checks each tag
//! ```
//!
//! Every proof is HMAC-SHA256 under the cluster secret over a label naming
//! its role, the peer wire version, the mode's protocol, the cluster name,
//! both node ids, the prover's run and both nonces ([`Exchange`]). Why this
//! holds:
//!
//! - A recorded hello is worthless: `proof_D` covers `nonce_a`, which A
//!   draws fresh from the OS for every link, so it answers no other
//!   challenge. A recorded welcome is worthless for the same reason with
//!   `nonce_d`, which D draws fresh when it answers.
//! - A hello cannot be reflected as a welcome or sent to another node: the
//!   labels differ ("hello" / "welcome"), and both ids are inside, so a
//!   proof made for A does not pass at B, and a node reached at the wrong
//!   address is found out.
//! - Nothing can be injected, altered, dropped, reordered or replayed after
//!   the hello: each message D sends on the link ends in a tag, HMAC-SHA256
//!   under a session key derived from the secret and both nonces (so it is
//!   this link's alone) over the message's sequence number on the link and
//!   its bytes. A checks each tag before decoding the message and closes
//!   the link at the first bad one. A sends nothing after the welcome, so
//!   only that direction is sealed; a node's messages to A travel on the
//!   link A dialed, sealed the same way.
//! - A refusal fences the refused node (it stops serving: its config is
//!   not the cluster's), so it carries the acceptor's proof over its reason
//!   and both nonces; one without a valid proof only closes the link.
//! - A dialer sends nothing but its hello until the acceptor's welcome
//!   proved the secret, so a stranger listening on a peer's address gets
//!   no frame.
//! - Not protected: confidentiality (frames are readable on the path; keep
//!   peer ports on a private network, or turn `peer_tls` on), and the links
//!   themselves: an on-path attacker can cut one (resetting the TCP
//!   connection), which the cluster sees as a network fault.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::message::Hello;
use super::wire::Message;
use super::NodeId;

pub const NONCE_LEN: usize = 32;
/// The tag that ends every sealed message: a whole HMAC-SHA256.
pub const TAG_LEN: usize = 32;
/// A link's challenge or answer: random bytes, fresh for every link.
pub type Nonce = [u8; NONCE_LEN];

type HmacSha256 = Hmac<Sha256>;

/// A nonce from the operating system's random source.
pub fn fresh_nonce() -> Result<Nonce, String> {
    let mut nonce = [0; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| format!("no random nonce: {e}"))?;
    Ok(nonce)
}

/// The cluster's name and secret, as every proof and session key of a mode
/// speaking one protocol is keyed.
#[derive(Clone)]
pub struct ClusterKey {
    cluster: String,
    protocol: &'static str,
    /// What every node must agree on besides (the store settings replicas
    /// need alike to stay identical); empty by default.
    terms: String,
    /// HMAC keyed by the secret, cloned for each use (keying hashes the
    /// secret; cloning copies two hash states).
    keyed: HmacSha256,
}

impl ClusterKey {
    pub fn new<M: Message>(cluster: &str, secret: &str) -> ClusterKey {
        ClusterKey {
            cluster: cluster.to_string(),
            protocol: M::PROTOCOL,
            terms: String::new(),
            keyed: HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key"),
        }
    }

    /// The same key, proving `terms` too: a node whose terms differ fails
    /// every proof, as one with another secret does.
    pub fn with_terms(mut self, terms: &str) -> ClusterKey {
        self.terms = terms.to_string();
        self
    }

    /// A MAC over `label`, the wire version, the protocol and the cluster,
    /// for the caller to feed the rest.
    fn mac(&self, label: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        // v4: challenge-response and sealed messages.
        mac.update(b"mckv v4 ");
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(self.protocol.as_bytes());
        mac.update(b"\0");
        mac.update(self.cluster.as_bytes());
        mac.update(b"\0");
        mac.update(self.terms.as_bytes());
        mac.update(b"\0");
        mac
    }
}

/// One link's handshake: who is at each end and the nonces each sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    pub dialer: NodeId,
    pub acceptor: NodeId,
    /// The acceptor's nonce, sent first on the link.
    pub challenge: Nonce,
    /// The dialer's nonce, sent in its hello.
    pub answer: Nonce,
}

impl Exchange {
    /// A MAC over `label` and everything the exchange names.
    fn mac(&self, key: &ClusterKey, label: &str) -> HmacSha256 {
        let mut mac = key.mac(label);
        mac.update(&self.dialer.to_be_bytes());
        mac.update(&self.acceptor.to_be_bytes());
        mac.update(&self.challenge);
        mac.update(&self.answer);
        mac
    }

    fn proof(&self, key: &ClusterKey, label: &str, incarnation: u64) -> Vec<u8> {
        let mut mac = self.mac(key, label);
        mac.update(&incarnation.to_be_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The dialer's hello, for run `incarnation` of it.
    pub fn hello(&self, key: &ClusterKey, incarnation: u64) -> Hello {
        Hello {
            cluster: key.cluster.clone(),
            node: self.dialer,
            incarnation,
            nonce: self.answer,
            proof: self.proof(key, "hello", incarnation),
        }
    }

    /// The exchange a hello answering `challenge` at node `acceptor` opens,
    /// or why the hello is refused.
    pub fn check_hello(
        key: &ClusterKey,
        acceptor: NodeId,
        challenge: Nonce,
        hello: &Hello,
    ) -> Result<Exchange, String> {
        // The peer's name is not echoed: a stranger chooses it.
        if hello.cluster != key.cluster {
            return Err("a hello of another cluster (its name differs)".into());
        }
        let exchange = Exchange {
            dialer: hello.node,
            acceptor,
            challenge,
            answer: hello.nonce,
        };
        let mut mac = exchange.mac(key, "hello");
        mac.update(&hello.incarnation.to_be_bytes());
        mac.verify_slice(&hello.proof).map_err(|_| {
            "wrong cluster secret (or another mckv version, consistency, or store \
             settings: memory_limit_mb, eviction, expiry_sweep, item_size_max)"
                .to_string()
        })?;
        Ok(exchange)
    }

    /// The acceptor's proof in its welcome, for its run `incarnation`.
    pub fn welcome_proof(&self, key: &ClusterKey, incarnation: u64) -> Vec<u8> {
        self.proof(key, "welcome", incarnation)
    }

    /// Whether a welcome's proof is the acceptor's for this exchange.
    pub fn check_welcome(
        &self,
        key: &ClusterKey,
        incarnation: u64,
        proof: &[u8],
    ) -> Result<(), String> {
        let mut mac = self.mac(key, "welcome");
        mac.update(&incarnation.to_be_bytes());
        mac.verify_slice(proof)
            .map_err(|_| "a welcome without a valid proof of the cluster secret".to_string())
    }

    /// The acceptor's proof in its refusal, over the reason it gives.
    pub fn refusal_proof(&self, key: &ClusterKey, why: &str) -> Vec<u8> {
        let mut mac = self.mac(key, "refused");
        mac.update(why.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether a refusal's proof is the acceptor's for this exchange.
    pub fn check_refusal(&self, key: &ClusterKey, why: &str, proof: &[u8]) -> Result<(), String> {
        let mut mac = self.mac(key, "refused");
        mac.update(why.as_bytes());
        mac.verify_slice(proof)
            .map_err(|_| "a refusal without a valid proof of the cluster secret".to_string())
    }

    /// The session that seals (at the dialer) and opens (at the acceptor)
    /// what the dialer sends after its hello.
    pub fn session(&self, key: &ClusterKey) -> Session {
        let session_key = self.mac(key, "session").finalize().into_bytes();
        Session {
            keyed: HmacSha256::new_from_slice(&session_key).expect("HMAC takes any key"),
            sequence: 0,
        }
    }
}

/// One direction of one link after its handshake: each message is tagged
/// with its sequence number on the link, so the tags of one link are no
/// use on another, nor at another place on the same one.
pub struct Session {
    keyed: HmacSha256,
    /// The sequence number of the next message.
    sequence: u64,
}

impl Session {
    fn tag(&self, message: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(&self.sequence.to_be_bytes());
        mac.update(message);
        mac
    }

    /// Seals the message `out[start..]`, a length prefix and its body (as
    /// [`super::wire::encode`] wrote it): the prefix grows to count the tag,
    /// and the tag over the prefix and body is appended.
    pub fn seal(&mut self, out: &mut Vec<u8>, start: usize) {
        let sealed = (out.len() - start - 4 + TAG_LEN) as u32;
        out[start..start + 4].copy_from_slice(&sealed.to_be_bytes());
        let tag = self.tag(&out[start..]).finalize().into_bytes();
        out.extend_from_slice(&tag);
        self.sequence += 1;
    }

    /// The body of the sealed message `message` (length prefix, body, tag),
    /// if its tag is the next one this session expects.
    pub fn open<'a>(&mut self, message: &'a [u8]) -> Result<&'a [u8], String> {
        let Some(tagged) = message.len().checked_sub(TAG_LEN).filter(|&n| n >= 4) else {
            return Err("a message too short to carry its tag".into());
        };
        let (sealed, tag) = message.split_at(tagged);
        self.tag(sealed)
            .verify_slice(tag)
            .map_err(|_| "a message with a bad tag (altered, replayed or forged)".to_string())?;
        self.sequence += 1;
        Ok(&sealed[4..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::eventual::Gossip;
    use crate::cluster::total_order::Broadcast;

    fn key() -> ClusterKey {
        ClusterKey::new::<Broadcast>("c", "s3cret")
    }

    fn exchange() -> Exchange {
        Exchange {
            dialer: 1,
            acceptor: 0,
            challenge: [7; NONCE_LEN],
            answer: [9; NONCE_LEN],
        }
    }

    #[test]
    fn a_hello_passes_only_with_the_right_secret_cluster_mode_node_and_challenge() {
        let good = exchange().hello(&key(), 5);
        let check = |key: &ClusterKey, acceptor, challenge, hello: &Hello| {
            Exchange::check_hello(key, acceptor, challenge, hello)
        };
        let mut renamed = good.clone();
        renamed.cluster = "d".into();
        assert!(check(&key(), 0, [7; NONCE_LEN], &renamed).is_err());
        assert_eq!(check(&key(), 0, [7; NONCE_LEN], &good), Ok(exchange()));
        let other_secret = ClusterKey::new::<Broadcast>("c", "other");
        assert!(check(&other_secret, 0, [7; NONCE_LEN], &good).is_err());
        let other_cluster = ClusterKey::new::<Broadcast>("d", "s3cret");
        assert!(check(&other_cluster, 0, [7; NONCE_LEN], &good).is_err());
        let other_mode = ClusterKey::new::<Gossip>("c", "s3cret");
        assert!(check(&other_mode, 0, [7; NONCE_LEN], &good).is_err());
        let other_terms = key().with_terms("memory_limit=1");
        assert!(check(&other_terms, 0, [7; NONCE_LEN], &good).is_err());
        let same_terms = |terms| key().with_terms(terms);
        let hello = exchange().hello(&same_terms("t"), 9);
        assert!(check(&same_terms("t"), 0, [7; NONCE_LEN], &hello).is_ok());
        assert!(check(&same_terms("u"), 0, [7; NONCE_LEN], &hello).is_err());
        assert!(
            check(&key(), 2, [7; NONCE_LEN], &good).is_err(),
            "a hello made for node 0 does not pass at node 2"
        );
        assert!(
            check(&key(), 0, [8; NONCE_LEN], &good).is_err(),
            "a recorded hello does not answer another challenge"
        );
        for forge in [
            |h: &mut Hello| h.node = 2,
            |h: &mut Hello| h.incarnation = 6,
            |h: &mut Hello| h.nonce[0] ^= 1,
        ] {
            let mut forged = good.clone();
            forge(&mut forged);
            assert!(check(&key(), 0, [7; NONCE_LEN], &forged).is_err());
        }
    }

    #[test]
    fn a_welcome_proves_the_acceptor_for_this_exchange_only() {
        let proof = exchange().welcome_proof(&key(), 3);
        assert_eq!(exchange().check_welcome(&key(), 3, &proof), Ok(()));
        assert!(exchange().check_welcome(&key(), 4, &proof).is_err());
        let replayed = Exchange {
            answer: [1; NONCE_LEN],
            ..exchange()
        };
        assert!(replayed.check_welcome(&key(), 3, &proof).is_err());
        let hello = exchange().hello(&key(), 3);
        assert!(
            exchange().check_welcome(&key(), 3, &hello.proof).is_err(),
            "a hello's proof is no welcome"
        );
    }

    #[test]
    fn a_refusal_is_proven_for_its_reason_and_link() {
        let proof = exchange().refusal_proof(&key(), "not a member");
        assert_eq!(
            exchange().check_refusal(&key(), "not a member", &proof),
            Ok(())
        );
        assert!(exchange().check_refusal(&key(), "other", &proof).is_err());
        let other_link = Exchange {
            answer: [1; NONCE_LEN],
            ..exchange()
        };
        assert!(other_link
            .check_refusal(&key(), "not a member", &proof)
            .is_err());
        let welcome = exchange().welcome_proof(&key(), 3);
        assert!(exchange().check_refusal(&key(), "", &welcome).is_err());
    }

    fn sealed(session: &mut Session, body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        session.seal(&mut out, 0);
        out
    }

    #[test]
    fn sealed_messages_open_in_order_and_nothing_else_does() {
        let mut sender = exchange().session(&key());
        let first = sealed(&mut sender, b"first");
        let second = sealed(&mut sender, b"second");
        assert_eq!(
            u32::from_be_bytes(first[..4].try_into().unwrap()) as usize,
            first.len() - 4,
            "the prefix counts the tag"
        );

        let mut receiver = exchange().session(&key());
        assert!(receiver.open(&second).is_err(), "out of order");
        let mut receiver = exchange().session(&key());
        assert_eq!(receiver.open(&first), Ok(&b"first"[..]));
        assert!(receiver.open(&first).is_err(), "replayed");
        assert_eq!(receiver.open(&second), Ok(&b"second"[..]));

        let mut altered = sealed(&mut exchange().session(&key()), b"first");
        altered[5] ^= 1;
        assert!(exchange().session(&key()).open(&altered).is_err());
        let other_link = Exchange {
            challenge: [8; NONCE_LEN],
            ..exchange()
        };
        assert!(other_link.session(&key()).open(&first).is_err());
        assert!(exchange().session(&key()).open(&first[..TAG_LEN]).is_err());
    }
}
