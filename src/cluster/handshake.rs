//! The proof in a peer's hello: HMAC-SHA256 under the cluster secret over
//! the wire version, the mode's protocol, cluster name, node id and
//! incarnation, so a node with another cluster's config or secret, started
//! in another mode, or speaking another version of the peer wire format, is
//! refused.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::message::Hello;
use super::wire::Message;
use super::NodeId;

fn mac<M: Message>(secret: &str, cluster: &str, node: NodeId, incarnation: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    // v3: a frame is the sender's load and its mode's own message.
    mac.update(b"mckv hello v3\0");
    mac.update(M::PROTOCOL.as_bytes());
    mac.update(b"\0");
    mac.update(cluster.as_bytes());
    mac.update(b"\0");
    mac.update(&node.to_be_bytes());
    mac.update(&incarnation.to_be_bytes());
    mac
}

/// The hello node `node` sends to peers speaking `M`.
pub fn hello<M: Message>(secret: &str, cluster: &str, node: NodeId, incarnation: u64) -> Hello {
    Hello {
        cluster: cluster.to_string(),
        node,
        incarnation,
        proof: mac::<M>(secret, cluster, node, incarnation)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

/// Why a hello is refused, if it is.
pub fn check<M: Message>(hello: &Hello, secret: &str, cluster: &str) -> Result<(), String> {
    if hello.cluster != cluster {
        return Err(format!("cluster {:?} is not {cluster:?}", hello.cluster));
    }
    mac::<M>(secret, cluster, hello.node, hello.incarnation)
        .verify_slice(&hello.proof)
        .map_err(|_| {
            "wrong cluster secret (or another mckv version or consistency mode)".to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::eventual::Gossip;
    use crate::cluster::total_order::Broadcast;

    #[test]
    fn only_the_right_secret_and_cluster_pass() {
        let good = hello::<Broadcast>("s3cret", "c", 1, 7);
        assert_eq!(check::<Broadcast>(&good, "s3cret", "c"), Ok(()));
        assert!(check::<Broadcast>(&good, "other", "c").is_err());
        assert!(check::<Broadcast>(&good, "s3cret", "d").is_err());
        let mut forged = good.clone();
        forged.node = 2;
        assert!(check::<Broadcast>(&forged, "s3cret", "c").is_err());
        assert!(
            check::<Gossip>(&good, "s3cret", "c").is_err(),
            "a node of another mode is refused"
        );
    }
}
