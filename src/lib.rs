//! mckv: a replicated key-value store that speaks the memcached text protocol.
//!
//! A node is one reactor thread ([`server`]) that parses client requests
//! ([`protocol`]), hands them to its cluster core ([`cluster::Node`]: the
//! failure detector and the consistency mode's [`cluster::Engine`], pure
//! state machines), and carries out the store work the core asks for where
//! the store lives ([`backend`]: inline for the embedded memory store, on a
//! worker thread for a memcached one; [`store`]). A node with a data
//! directory logs its store's changes and recovers them ([`durability`]).
//! [`bench`] is `mckv bench`, the load generator: a client of any server,
//! it uses nothing of the node but [`protocol::base64`].
//! Dependencies point one way: server -> (backend -> cluster, durability)
//! -> (store, protocol). The operator's tools talk to nodes over the
//! protocol like any client: [`client`] (`mckv client`) and [`status`]
//! (`mckv status`). See `README.md` for operation and
//! `../shared/DESIGN.md` for the design.

pub mod backend;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod durability;
pub mod logging;
pub mod protocol;
pub mod server;
pub mod status;
pub mod store;
