//! TLS on the reactor's sockets: the configs built once at start from the
//! node's certificate files, and [`Stream`], a socket that is either plain
//! or carries a rustls session, read and written like a plain one.
//!
//! rustls does no I/O of its own, so the reactor drives it over its
//! non-blocking mio socket, as rustls's mio examples do:
//!
//! ```text
//!  socket ──read_tls──► session ──process_new_packets──► plaintext ──reader()──► read()
//!  write() ──writer()──► session (records, at most BUFFER_LIMIT buffered) ──write_tls──► socket
//! ```
//!
//! A read or a write moves whatever records the session has for the socket
//! (handshake messages included), so the handshake advances on whatever
//! readiness comes; [`Stream::wants_write`] tells the owner to ask for
//! writable readiness while records wait. A peer that is not speaking TLS
//! (a plain-text client on a TLS port) fails `process_new_packets`: the
//! read reports an error and the owner closes the socket.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use crate::config::TlsFiles;
use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConnection;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ConfigBuilder, WantsVerifier};

/// Plaintext a session buffers before a write would block: a slow reader
/// holds no more than this in TLS records (the owner's own output queue
/// is bounded separately).
const BUFFER_LIMIT: usize = 256 * 1024;

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match certs.is_empty() {
        true => Err(format!("{}: no certificate in it", path.display())),
        false => Ok(certs),
    }
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn roots(files: &TlsFiles) -> Result<Arc<RootCertStore>, String> {
    let ca = files
        .ca
        .as_ref()
        .ok_or("no CA file (tls_ca) to check peers with")?;
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A server config's builder with rustls's safe protocol versions.
fn server_builder() -> Result<ConfigBuilder<ServerConfig, WantsVerifier>, String> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// The node's certificate chain and private key, read once.
struct NodeIdentity<'a> {
    files: &'a TlsFiles,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl NodeIdentity<'_> {
    fn read(files: &TlsFiles) -> Result<NodeIdentity<'_>, String> {
        Ok(NodeIdentity {
            files,
            chain: certificates(&files.cert)?,
            key: private_key(&files.key)?,
        })
    }

    /// A rustls error about the pair, naming the certificate file.
    fn refused(&self, e: rustls::Error) -> String {
        format!("{}: {e}", self.files.cert.display())
    }
}

/// What a node presents to clients: its certificate, no client certificate asked.
pub fn client_facing(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let node = NodeIdentity::read(files)?;
    let config = server_builder()?
        .with_no_client_auth()
        .with_single_cert(node.chain.clone(), node.key.clone_key())
        .map_err(|e| node.refused(e))?;
    Ok(Arc::new(config))
}

/// The two sides of a peer link: the acceptor asks for a certificate
/// chaining to the CA, the dialer checks the acceptor's the same way; each
/// presents its own.
pub struct PeerTls {
    pub acceptor: Arc<ServerConfig>,
    pub dialer: Arc<ClientConfig>,
}

pub fn peer_facing(files: &TlsFiles) -> Result<PeerTls, String> {
    let node = NodeIdentity::read(files)?;
    let roots = roots(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| e.to_string())?;
    let acceptor = server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(node.chain.clone(), node.key.clone_key())
        .map_err(|e| node.refused(e))?;
    let dialer = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(node.chain.clone(), node.key.clone_key())
        .map_err(|e| node.refused(e))?;
    Ok(PeerTls {
        acceptor: Arc::new(acceptor),
        dialer: Arc::new(dialer),
    })
}

/// A socket, plain or with a TLS session on it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
}

/// A TLS session and the socket it runs over.
pub struct TlsSocket {
    conn: Connection,
    sock: TcpStream,
    /// An error met after plaintext was read: reported by the next read,
    /// so what came before it is not lost.
    failed: Option<io::Error>,
}

impl Stream {
    /// The accepting side of a TLS session on `socket`.
    pub fn accepted(socket: TcpStream, config: &Arc<ServerConfig>) -> io::Result<Stream> {
        let session = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(Stream::tls(socket, session.into()))
    }

    /// The dialing side of a TLS session to `host` (a DNS name or an IP
    /// address, as the config names the peer), whose certificate must name
    /// it.
    pub fn dialed(socket: TcpStream, host: &str, config: &Arc<ClientConfig>) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
        let session = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        Ok(Stream::tls(socket, session.into()))
    }

    fn tls(socket: TcpStream, mut session: Connection) -> Stream {
        session.set_buffer_limit(Some(BUFFER_LIMIT));
        Stream::Tls(Box::new(TlsSocket {
            conn: session,
            sock: socket,
            failed: None,
        }))
    }

    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &tls.sock,
        }
    }

    /// A read met an error after plaintext it returned: the next read
    /// reports it (the owner must read again, not wait for readiness).
    pub fn has_failed(&self) -> bool {
        matches!(self, Stream::Tls(tls) if tls.failed.is_some())
    }

    /// TLS records wait for the socket: ask for writable readiness.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.conn.wants_write(),
        }
    }
}

/// Writes the session's waiting records until the socket would block.
fn send_records(tls: &mut TlsSocket) -> io::Result<()> {
    while tls.conn.wants_write() {
        match tls.conn.write_tls(&mut tls.sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads plaintext into `buf` until it is full or the socket has no more
/// records (`WouldBlock` only when nothing was read), as a plain socket's
/// read would under edge-triggered readiness: a short read means the
/// socket is drained. `Ok(0)`: the peer closed.
fn read_plaintext(tls: &mut TlsSocket, buf: &mut [u8]) -> io::Result<usize> {
    if let Some(failed) = tls.failed.take() {
        return Err(failed);
    }
    let mut filled = 0;
    let keep = |tls: &mut TlsSocket, filled: usize, e: io::Error| match filled {
        0 => Err(e),
        _ => {
            tls.failed = Some(e);
            Ok(filled)
        }
    };
    loop {
        match tls.conn.reader().read(&mut buf[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => {
                filled += n;
                if filled == buf.len() {
                    return Ok(filled);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Closed without close_notify: as good as closed for us.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
            Err(e) => return keep(tls, filled, e),
        }
        match tls.conn.read_tls(&mut tls.sock) {
            Ok(0) => return Ok(filled),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return keep(tls, filled, e),
        }
        let processed = tls.conn.process_new_packets();
        // An alert for a broken peer, or the handshake's next flight.
        if let Err(e) = send_records(tls) {
            return keep(tls, filled, e);
        }
        if let Err(e) = processed {
            return keep(tls, filled, io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buf),
            Stream::Tls(tls) => read_plaintext(tls, buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::Tls(tls) => {
                send_records(tls)?;
                let n = tls.conn.writer().write(buf)?;
                send_records(tls)?;
                match n {
                    // The session's buffer is full: wait for the socket.
                    0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(tls) => send_records(tls),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.register(registry, token, interests),
            Stream::Tls(tls) => tls.sock.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.reregister(registry, token, interests),
            Stream::Tls(tls) => tls.sock.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.deregister(registry),
            Stream::Tls(tls) => tls.sock.deregister(registry),
        }
    }
}
