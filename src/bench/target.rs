//! What a run is pointed at: a named server address and the protocol it
//! speaks, written `[NAME=][etcd://]HOST:PORT` on the command line.

use std::net::{SocketAddr, ToSocketAddrs};

/// How a server is spoken to: its requests and the framing of its replies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    /// The memcached text protocol (memcached, mckv, anything that speaks it).
    Memcached,
    /// etcd's v3 JSON gateway over HTTP/1.1 (`etcd://` on the command line).
    EtcdHttp,
}

/// One server of a run: a table column, a CSV series, a line of the plot.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// The server's processes on this machine. The first one's CPU is the
    /// table's `cpu%` (a cluster's node the load goes through); all of them
    /// are the server when other processes' CPU is reckoned. Empty: the
    /// server's CPU is not measured.
    pub pids: Vec<u32>,
}

impl Target {
    /// Parses `[NAME=][etcd://]HOST:PORT`; the name defaults to the address
    /// as written. The host is resolved once, here.
    pub fn parse(spec: &str) -> Result<Target, String> {
        let (name, address) = match spec.split_once('=') {
            Some((name, address)) if !name.is_empty() => (name, address),
            Some(_) => return Err(format!("{spec:?}: empty name before `=`")),
            None => (spec, spec),
        };
        let (protocol, host_port) = match address.strip_prefix("etcd://") {
            Some(rest) => (Protocol::EtcdHttp, rest),
            None => (Protocol::Memcached, address),
        };
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| format!("{spec:?}: not HOST:PORT ({e})"))?
            .next()
            .ok_or_else(|| format!("{spec:?}: {host_port} resolves to no address"))?;
        Ok(Target {
            name: name.to_string(),
            addr,
            protocol,
            pids: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_an_address_with_an_optional_name_and_protocol() {
        let t = Target::parse("127.0.0.1:11211").unwrap();
        assert_eq!(
            (t.name.as_str(), t.addr.port(), t.protocol),
            ("127.0.0.1:11211", 11211, Protocol::Memcached)
        );
        let t = Target::parse("mckv=127.0.0.1:8000").unwrap();
        assert_eq!((t.name.as_str(), t.addr.port()), ("mckv", 8000));
        let t = Target::parse("etcd=etcd://localhost:2379").unwrap();
        assert_eq!((t.name.as_str(), t.protocol), ("etcd", Protocol::EtcdHttp));
        assert!(t.addr.ip().is_loopback());
    }

    #[test]
    fn a_target_without_a_port_or_with_an_empty_name_is_refused() {
        for bad in ["127.0.0.1", "=127.0.0.1:1", "mckv=", "a=b=c:1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
