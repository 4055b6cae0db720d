//! The `mckv` command line: `mckv server` runs a node, `mckv client` talks to
//! one, `mckv status` asks every node of a cluster how it is, `mckv bench`
//! measures any memcached-protocol servers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mckv::client::Target;
use mckv::config::{ClusterConfig, Config, Consistency, KvType, NodeConfig};
use mckv::durability::DataDirError;
use mckv::server::{self, Settings};
use simplelog::LevelFilter;

#[derive(Parser)]
#[command(
    name = "mckv",
    version,
    about = "A replicated key-value store that speaks the memcached protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node. Without --config: a one-node cluster on 127.0.0.1:8000.
    Server(ServerArgs),
    /// An interactive line client (also reads commands from a pipe).
    Client {
        #[arg(long, default_value = "127.0.0.1", conflicts_with = "config")]
        host: String,
        #[arg(long, default_value_t = 8000, conflicts_with = "config")]
        port: u16,
        /// Talk to the first node of this config that answers (`\node N` switches).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Every node of a config in one table; exits 1 if a node does not answer.
    Status {
        /// The cluster's config.ini.
        #[arg(long)]
        config: PathBuf,
    },
    /// Load generator: drives any memcached-protocol servers and prints
    /// throughput, latency percentiles and errors (optionally a CSV and an SVG plot).
    Bench(mckv::bench::Args),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// The cluster's config.ini.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Which [node.N] of the config this process is.
    #[arg(long, default_value_t = 0)]
    node: u32,
    /// linearizable | sequential | eventual | causal
    #[arg(long)]
    consistency: Option<Consistency>,
    /// memory | memcache
    #[arg(long)]
    kv_type: Option<KvType>,
    /// Host of this node's memcached (kv_type = memcache).
    #[arg(long)]
    kv_host: Option<String>,
    /// Port of this node's memcached (kv_type = memcache).
    #[arg(long)]
    kv_port: Option<u16>,
    /// Client address host (overrides the node's `client`).
    #[arg(long)]
    host: Option<String>,
    /// Client port (overrides the node's `client`).
    #[arg(long)]
    port: Option<u16>,
    /// Log file (default: the node's `log_file`, logs/node<N>.log).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// error | warn | info | debug | trace
    #[arg(long, default_value = "info")]
    log_level: LevelFilter,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Server(args) => serve(args),
        Cmd::Client { host, port, config } => {
            let target = config.map_or(Target::Address { host, port }, Target::Config);
            client(&target)
        }
        Cmd::Status { config } => status(&config),
        Cmd::Bench(args) => mckv::bench::run(&args),
    }
}

fn status(config: &std::path::Path) -> ExitCode {
    match mckv::status::run(config, &mut std::io::stdout().lock()) {
        Ok(mckv::status::Health::AllAnswered) => ExitCode::SUCCESS,
        Ok(mckv::status::Health::SomeSilent) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mckv status: {e}");
            ExitCode::from(2)
        }
    }
}

fn client(target: &Target) -> ExitCode {
    match mckv::client::run(target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mckv client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServerArgs) -> ExitCode {
    let settings = match settings(&args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("mckv server: {e}");
            return ExitCode::from(2);
        }
    };
    let log_file = args
        .log_file
        .clone()
        .unwrap_or_else(|| settings.node.log_file.clone());
    if let Err(e) = mckv::logging::init(args.log_level, &log_file) {
        eprintln!("mckv server: cannot log to {}: {e}", log_file.display());
        return ExitCode::from(2);
    }
    mckv::logging::exit_on_panic();
    let client = settings.node.client.clone();
    match server::serve(settings) {
        Ok(()) => ExitCode::SUCCESS,
        // A data directory that cannot be opened, is another node's or
        // cannot be replayed: named, rather than the address.
        Err(e) if DataDirError::of(&e).is_some() => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            // A failed start (an address in use) or a node that stopped on
            // its own (a data directory that refused its log too long).
            log::error!("stopped serving on {client}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file (or the one-node default) with the flags applied on top.
fn settings(args: &ServerArgs) -> Result<Settings, String> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::single_node(),
    };
    let mut cluster = config.cluster.clone();
    let mut node = config.node(args.node).map_err(|e| e.to_string())?.clone();
    if let Some(consistency) = args.consistency {
        cluster.consistency = consistency;
    }
    if let Some(kv_type) = args.kv_type {
        node.kv_type = kv_type;
    }
    if node.data_dir.is_some() {
        check_durable(&node)?;
    }
    check_tls(&cluster, &node)?;
    node.client = override_addr(&node.client, args.host.as_deref(), args.port)?;
    node.kv_addr = override_addr(&node.kv_addr, args.kv_host.as_deref(), args.kv_port)?;
    Ok(Settings {
        cluster,
        node,
        members: config.nodes.clone(),
    })
}

/// Where a `data_dir` can be kept with this build.
fn check_durable(node: &NodeConfig) -> Result<(), String> {
    if node.kv_type == KvType::Memcache {
        return Err(format!(
            "[node.{}] data_dir: a memcached backend keeps nothing across its own restarts, \
             so mckv keeps no log for it; use kv_type = memory, or drop data_dir",
            node.id
        ));
    }
    Ok(())
}

/// Reads the node's TLS files now, so a missing or bad one stops the node
/// at start with the file named, before it recovers or binds anything.
fn check_tls(cluster: &ClusterConfig, node: &NodeConfig) -> Result<(), String> {
    let Some(files) = cluster.tls_files(node).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    if cluster.client_tls {
        server::tls::client_facing(&files)?;
    }
    if cluster.peer_tls {
        server::tls::peer_facing(&files)?;
    }
    Ok(())
}

/// `host:port` with either part replaced.
fn override_addr(addr: &str, host: Option<&str>, port: Option<u16>) -> Result<String, String> {
    let (old_host, old_port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} is not host:port"))?;
    let port = port.map_or_else(|| old_port.to_string(), |p| p.to_string());
    Ok(format!("{}:{port}", host.unwrap_or(old_host)))
}
