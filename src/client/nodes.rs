//! Which node `mckv client` talks to: one address (`--host`, `--port`), or
//! the nodes of a config file (`--config`), starting with the first that
//! answers, and switched with `\node <id>`. A [`Link`] is the connection to
//! the current node.

use std::io::{self, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::NodeId;
use crate::config::{Config, NodeConfig};

/// How long to wait for a node to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for a reply before telling the user.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the client connects.
#[derive(Debug, Clone)]
pub enum Target {
    Address {
        host: String,
        port: u16,
    },
    /// The nodes of this config file.
    Config(PathBuf),
}

/// The connection to the node the client talks to.
pub struct Link {
    /// `host:port`, as given or as the config names it.
    pub addr: String,
    /// Its id in the config, when the client has one.
    pub node: Option<NodeId>,
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Link {
    fn open(addr: &str, node: Option<NodeId>) -> io::Result<Link> {
        let stream = connect(addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Link {
            addr: addr.to_string(),
            node,
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// What the terminal prompt shows.
    pub fn prompt(&self) -> String {
        match self.node {
            Some(id) => format!("mckv {} (node {id})> ", self.addr),
            None => format!("mckv {}> ", self.addr),
        }
    }
}

/// A connection to the first address `addr` (`host:port`) resolves to
/// that accepts within `timeout`.
pub fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for resolved in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `host:port`, an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// The nodes the client may switch between: those of its config, if any.
pub struct Nodes {
    config: Option<(PathBuf, Vec<NodeConfig>)>,
}

impl Nodes {
    /// The nodes of `target`, and a link to the one to start with.
    pub fn connect(target: &Target) -> io::Result<(Nodes, Link)> {
        match target {
            Target::Address { host, port } => {
                let addr = host_port(host, *port);
                let link = Link::open(&addr, None).map_err(|e| at(&addr, e))?;
                Ok((Nodes { config: None }, link))
            }
            Target::Config(path) => {
                let nodes = Config::load(path)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.0))?
                    .nodes;
                let link = first_answering(path, &nodes)?;
                Ok((
                    Nodes {
                        config: Some((path.clone(), nodes)),
                    },
                    link,
                ))
            }
        }
    }

    /// A link to node `id` of the config, or why there is none.
    pub fn switch(&self, id: &str) -> Result<Link, String> {
        let Some((path, nodes)) = &self.config else {
            return Err("\\node needs a config: start the client with --config FILE".into());
        };
        let ids = || {
            let ids: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
            ids.join(", ")
        };
        let node = id
            .parse::<NodeId>()
            .ok()
            .and_then(|id| nodes.iter().find(|n| n.id == id))
            .ok_or_else(|| {
                format!(
                    "no node {id:?} in {}: its nodes are {}",
                    path.display(),
                    ids()
                )
            })?;
        Link::open(&node.client, Some(node.id))
            .map_err(|e| format!("node {} ({}) does not answer: {e}", node.id, node.client))
    }
}

/// A link to the first of `nodes` (in id order) that answers; the error says why each
/// did not.
fn first_answering(path: &Path, nodes: &[NodeConfig]) -> io::Result<Link> {
    let mut failures = Vec::new();
    for node in nodes {
        match Link::open(&node.client, Some(node.id)) {
            Ok(link) => return Ok(link),
            Err(e) => failures.push(format!("node {} ({}): {e}", node.id, node.client)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!(
            "no node of {} answers: {}",
            path.display(),
            failures.join("; ")
        ),
    ))
}

/// `e`, saying which address it is about.
pub fn at(addr: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_is_bracketed_before_its_port() {
        assert_eq!(host_port("127.0.0.1", 8000), "127.0.0.1:8000");
        assert_eq!(host_port("::1", 8000), "[::1]:8000");
        assert_eq!(host_port("[::1]", 8000), "[::1]:8000");
        assert_eq!(host_port("localhost", 8000), "localhost:8000");
    }
}
