//! `mckv bench`: a load generator for any memcached-protocol server
//! (memcached, an mckv node or cluster, anything that speaks the text
//! protocol) and for etcd's v3 JSON gateway, which `cargo bench --bench
//! load` also runs on the servers it starts.
//!
//! ```text
//!  Args ─► Plan (plan.rs) ─┐
//!  --servers ─► Targets ───┴► Bench (run.rs): populate, then per cell x target
//!                                  threads ─► driver.rs (connections, pipelining, pacing)
//!                                           ─► stats.rs (histograms, timeline)
//!                              ─► Run ─► report.rs (table, details, CSV)
//!                                     ─► plot.rs (SVG)
//! ```
//!
//! The keys are stored first, so every `get` has one right answer: every
//! reply is checked, and a wrong one, a miss, a timeout or a lost
//! connection is an error (counted, never a hang). The files: `target.rs`
//! (what is measured), `workload.rs` (the requests and expected replies),
//! `framing.rs` (where replies end), `timer.rs` (the open loop's send
//! timer), `cpu.rs` (CPU from `/proc`), `progress.rs` (stderr while it runs),
//! `idle.rs` (the idle connections of `--idle-conns` and their memory).

mod cpu;
mod driver;
mod framing;
mod idle;
mod plan;
mod plot;
mod progress;
mod report;
mod run;
mod stats;
mod target;
mod timer;
mod workload;

use std::process::ExitCode;

pub use framing::parse_http;
pub use idle::{raise_open_files_limit, IdleCost};
pub use plan::{Cell, LoadArgs, Plan};
pub use report::{load_line, machine_line};
pub use run::{Bench, CellResult, Run};
pub use target::{Protocol, Target};
pub use workload::etcd_put;

/// `mckv bench`'s command line.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The servers to measure, comma-separated, each `[NAME=][etcd://]HOST:PORT`
    /// (e.g. `memcached=127.0.0.1:11211,mckv=127.0.0.1:8000`); one table
    /// column each, compared with the one named `memcached`.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "[NAME=]HOST:PORT"
    )]
    pub servers: Vec<String>,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Runs `mckv bench`: exits 2 on bad flags, 1 if a server cannot be
/// populated or a cell completed no request at all.
pub fn run(args: &Args) -> ExitCode {
    let bench = match bench_of(args) {
        Ok(bench) => bench,
        Err(e) => {
            eprintln!("mckv bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = bench.populate() {
        eprintln!("mckv bench: {e}");
        return ExitCode::FAILURE;
    }
    print!(
        "{}{}{}",
        machine_line(),
        report::target_lines(&bench.targets),
        load_line(&bench.plan)
    );
    let run = bench.measure(|_| None);
    let mut failed = report(&run, &args.load).is_err();
    for cell in run.failed_cells() {
        eprintln!("mckv bench: no request completed: {cell}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The plan and the targets, each name once; a target listening on this
/// machine has its CPU measured.
fn bench_of(args: &Args) -> Result<Bench, String> {
    let plan = Plan::new(&args.load)?;
    if plan.cells.iter().any(|c| c.idle > 0) {
        raise_open_files_limit();
    }
    let mut targets: Vec<Target> = Vec::new();
    for spec in &args.servers {
        let mut target = Target::parse(spec)?;
        if targets.iter().any(|t| t.name == target.name) {
            return Err(format!("two servers named {:?}", target.name));
        }
        target.pids.extend(cpu::listener_pid(target.addr));
        targets.push(target);
    }
    Bench::new(plan, targets)
}

/// Prints the table and the details to stdout and writes the CSV and the
/// plot if asked (saying so on stderr); an error for a file not written.
pub fn report(run: &Run, load: &LoadArgs) -> Result<(), String> {
    println!("\n{}", run.table());
    print!("{}", run.details());
    let mut result = Ok(());
    if let Some(path) = &load.csv {
        match run.write_csv(path) {
            Ok(()) => eprintln!("csv: {}", path.display()),
            Err(e) => result = Err(format!("cannot write {}: {e}", path.display())),
        }
    }
    if let Some(path) = &load.plot {
        match plot::write_svg(run, path) {
            Ok(()) => eprintln!("plot: {}", path.display()),
            Err(e) => result = Err(format!("cannot draw {}: {e}", path.display())),
        }
    }
    if let Err(e) = &result {
        eprintln!("mckv bench: {e}");
    }
    result
}
