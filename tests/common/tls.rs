//! Certificates for tests that run TLS: a CA and a node certificate it
//! signed, made with the `openssl` command (as README's "Peer TLS" shows),
//! and clusters whose peer links run over them.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{cluster_config_with, launch_cluster_text, Cluster, TempDir};

/// A CA, and a certificate it signed for 127.0.0.1 (server and client use).
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = super::output(Command::new("openssl").current_dir(dir).args(args))
        .expect("the openssl command (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A new CA called `name` in `dir`, and a node certificate it signed.
    pub fn new(dir: &Path, name: &str) -> Certs {
        Certs::naming(dir, name, "IP:127.0.0.1")
    }

    /// Like [`Certs::new`], the node certificate naming `names` (its
    /// `subjectAltName`).
    pub fn naming(dir: &Path, name: &str, names: &str) -> Certs {
        let file = |what: &str| format!("{name}-{what}");
        let (ca_key, ca, key, csr, cert, ext) = (
            file("ca.key"),
            file("ca.pem"),
            file("node.key"),
            file("node.csr"),
            file("node.pem"),
            file("node.ext"),
        );
        let ec = "ec_paramgen_curve:prime256v1";
        let ca_subject = format!("/CN={name} test CA");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                ec,
                "-nodes",
                "-days",
                "2",
                "-subj",
                &ca_subject,
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                ec,
                "-nodes",
                "-subj",
                "/CN=mckv node",
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName = {names}\nbasicConstraints = CA:FALSE\n\
                 extendedKeyUsage = serverAuth, clientAuth\n"
            ),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        Certs {
            ca: dir.join(ca),
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// A node section's TLS keys for these files.
    pub fn node_keys(&self) -> String {
        format!(
            "tls_cert = {}\ntls_key = {}",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// The `[cluster]` keys that turn peer TLS on with the CA `ca`.
pub fn peer_tls(ca: &Path) -> String {
    format!("peer_tls = on\ntls_ca = {}", ca.display())
}

/// An `n`-node cluster in `consistency` whose peer links run over TLS;
/// the certificates' directory goes with the second value.
pub fn start_cluster_over_peer_tls(
    n: usize,
    consistency: &str,
    extra_cluster_keys: &str,
) -> (Cluster, TempDir) {
    let dir = TempDir::new("certs");
    let certs = Certs::new(&dir.0, "cluster");
    let keys = format!("{}\n{extra_cluster_keys}", peer_tls(&certs.ca));
    let (text, ports) = cluster_config_with(n, consistency, &keys, |_| certs.node_keys());
    (launch_cluster_text(text, ports), dir)
}
