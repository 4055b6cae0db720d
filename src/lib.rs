//! mckv: a replicated key-value store that speaks the memcached text protocol.
//!
//! A node is one reactor thread ([`server`]) that parses client requests
//! ([`protocol`]) and hands store work to a backend worker thread
//! ([`backend`]) owning a [`store::Store`]. See `README.md` for operation and
//! `../shared/DESIGN.md` for the design.

pub mod backend;
pub mod client;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod protocol;
pub mod server;
pub mod store;
