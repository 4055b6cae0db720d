//! The proof in a peer's hello: HMAC-SHA256 under the cluster secret over
//! the wire version, cluster name, node id and incarnation, so a node with
//! another cluster's config or secret, or another version of the peer wire
//! format, is refused.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::message::Hello;
use super::NodeId;

fn mac(secret: &str, cluster: &str, node: NodeId, incarnation: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    // v2: frames carry sync marks (incarnation, change number).
    mac.update(b"mckv hello v2\0");
    mac.update(cluster.as_bytes());
    mac.update(b"\0");
    mac.update(&node.to_be_bytes());
    mac.update(&incarnation.to_be_bytes());
    mac
}

/// The hello node `node` sends.
pub fn hello(secret: &str, cluster: &str, node: NodeId, incarnation: u64) -> Hello {
    Hello {
        cluster: cluster.to_string(),
        node,
        incarnation,
        proof: mac(secret, cluster, node, incarnation)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

/// Why a hello is refused, if it is.
pub fn check(hello: &Hello, secret: &str, cluster: &str) -> Result<(), String> {
    if hello.cluster != cluster {
        return Err(format!("cluster {:?} is not {cluster:?}", hello.cluster));
    }
    mac(secret, cluster, hello.node, hello.incarnation)
        .verify_slice(&hello.proof)
        .map_err(|_| "wrong cluster secret (or another mckv version)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_secret_and_cluster_pass() {
        let good = hello("s3cret", "c", 1, 7);
        assert_eq!(check(&good, "s3cret", "c"), Ok(()));
        assert!(check(&good, "other", "c").is_err());
        assert!(check(&good, "s3cret", "d").is_err());
        let mut forged = good.clone();
        forged.node = 2;
        assert!(check(&forged, "s3cret", "c").is_err());
    }
}
