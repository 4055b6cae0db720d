//! Running a plan: every cell against every target, targets taking turns
//! cell by cell (so a drift of the machine's speed during the run hits them
//! alike), each cell on `threads` generator threads ([`super::driver`]),
//! with the server's, the generator's and the whole machine's CPU read
//! over the measured window.
//!
//! ```text
//!  Plan x Targets ──► Bench::populate ──► Bench::measure ──► Run
//!                                          per cell: threads ─► Stats ─┐
//!                                          CPU before/after window ────┴► CellResult
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cpu;
use super::driver::{drive, Live, Shard, Times};
use super::idle::{self, IdleCost};
use super::plan::{Cell, Plan};
use super::progress::Progress;
use super::report::fmt_us;
use super::stats::Stats;
use super::target::{Protocol, Target};
use super::workload::{populate, Workload};

/// Time between starting the generator threads and the load, so every
/// connection is made before the first request is due.
const LEAD: Duration = Duration::from_millis(100);

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The least patience [`Bench::populate`] has for a reply: a server that
/// has just started (or etcd, committing each put) may be slow at first.
const POPULATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Busy CPU (in cores) of everything but the server and the generator
/// above which a cell is flagged as disturbed.
pub const OTHER_CPU_FLAG: f64 = 0.15;

/// A plan, the servers it runs against, and the requests for each.
pub struct Bench {
    pub plan: Plan,
    pub targets: Vec<Target>,
    /// One per target; servers speaking the same protocol share one.
    workloads: Vec<Arc<Workload>>,
}

/// What one cell measured against one server.
pub struct CellResult {
    pub stats: Stats,
    pub window: Duration,
    /// CPU of the target's first process over the window (1.0 = one core).
    pub server_cpu: Option<f64>,
    pub generator_cpu: Option<f64>,
    /// CPU used by other processes (and the host's steal) meanwhile.
    pub other_cpu: Option<f64>,
    /// The idle connections held open during the cell, and their memory.
    pub idle: Option<IdleCost>,
}

impl CellResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.stats.measured as f64 / self.window.as_secs_f64()
    }

    pub fn percentile_us(&self, q: f64) -> f64 {
        self.stats.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn disturbed(&self) -> bool {
        self.other_cpu.is_some_and(|c| c > OTHER_CPU_FLAG)
    }
}

/// Everything a run measured.
pub struct Run {
    pub names: Vec<String>,
    pub cells: Vec<Cell>,
    /// `results[cell][target]`; `None`: not run (the server was down).
    pub results: Vec<Vec<Option<CellResult>>>,
}

impl Run {
    /// The target the others are compared with: one named `memcached`.
    pub fn baseline(&self) -> Option<usize> {
        self.names.iter().position(|n| n == "memcached")
    }

    pub fn errors(&self) -> u64 {
        self.all().map(|(_, _, r)| r.stats.errors.total()).sum()
    }

    /// Every result with its cell and target index.
    pub fn all(&self) -> impl Iterator<Item = (&Cell, usize, &CellResult)> {
        self.cells
            .iter()
            .zip(&self.results)
            .flat_map(|(cell, row)| {
                row.iter()
                    .enumerate()
                    .filter_map(move |(t, r)| Some((cell, t, r.as_ref()?)))
            })
    }

    /// The cells in which no request to a server completed: every
    /// connection failed. Each as `name cell: first error`.
    pub fn failed_cells(&self) -> Vec<String> {
        self.all()
            .filter(|(_, _, r)| r.stats.completed == 0)
            .map(|(cell, t, r)| {
                let why = r.stats.first_io_error.as_deref().unwrap_or("no reply");
                format!("{} {}: {why}", self.names[t], cell.short_name())
            })
            .collect()
    }
}

/// CPU seconds at one moment: of the target's first process, of this
/// process, of the machine, of all of the target's processes.
struct CpuReading {
    server: Option<f64>,
    generator: Option<f64>,
    machine: Option<f64>,
    all_server: Option<f64>,
}

impl CpuReading {
    fn now(target: &Target) -> CpuReading {
        let pid_seconds = |pid: &u32| cpu::process_seconds(&pid.to_string());
        CpuReading {
            server: target.pids.first().and_then(pid_seconds),
            generator: cpu::process_seconds("self"),
            machine: cpu::machine_busy_seconds(),
            all_server: if target.pids.is_empty() {
                None
            } else {
                target.pids.iter().map(pid_seconds).sum()
            },
        }
    }
}

/// The share of a core `before` to `after` used over `window`.
fn per_window(before: Option<f64>, after: Option<f64>, window: Duration) -> Option<f64> {
    Some((after? - before?) / window.as_secs_f64())
}

impl Bench {
    /// The bench of `plan` against `targets`; an error for a plan a
    /// target's protocol cannot run (a multi-get on etcd).
    pub fn new(plan: Plan, targets: Vec<Target>) -> Result<Bench, String> {
        if plan.keys_per_get > 1 {
            if let Some(t) = targets.iter().find(|t| t.protocol != Protocol::Memcached) {
                return Err(format!(
                    "{}: --keys-per-get is for memcached-protocol servers",
                    t.name
                ));
            }
        }
        let mut shared: Vec<Arc<Workload>> = Vec::new();
        let workloads = targets
            .iter()
            .map(|t| {
                let same = shared.iter().find(|w| w.protocol == t.protocol).cloned();
                same.unwrap_or_else(|| {
                    let w = Arc::new(Workload::new(
                        t.protocol,
                        plan.keys,
                        plan.value_len,
                        plan.keys_per_get,
                    ));
                    shared.push(w.clone());
                    w
                })
            })
            .collect();
        Ok(Bench {
            plan,
            targets,
            workloads,
        })
    }

    /// Stores every key in every target.
    pub fn populate(&self) -> Result<(), String> {
        let timeout = self.plan.timeout.max(POPULATE_TIMEOUT);
        for (t, w) in self.targets.iter().zip(&self.workloads) {
            populate(t.addr, w, timeout)
                .map_err(|e| format!("cannot store the keys in {} ({}): {e}", t.name, t.addr))?;
        }
        Ok(())
    }

    /// Runs every cell against every target. `down(t)` says why target
    /// `t` is down, if it is: its cells are then skipped.
    pub fn measure(&self, mut down: impl FnMut(usize) -> Option<String>) -> Run {
        let mut progress = Progress::new(self.plan.progress);
        let total = self.plan.cells.len() * self.targets.len();
        let mut results = Vec::new();
        for (c, cell) in self.plan.cells.iter().enumerate() {
            let mut row = Vec::new();
            for (t, target) in self.targets.iter().enumerate() {
                let label = format!(
                    "[{}/{total}] {:<12} {}",
                    c * self.targets.len() + t + 1,
                    target.name,
                    cell.name()
                );
                if let Some(why) = down(t) {
                    progress.cell_done(&format!("{label}: skipped, server {why}"));
                    row.push(None);
                    continue;
                }
                let r = self.run_cell(t, *cell, &label, &mut progress);
                progress.cell_done(&format!(
                    "{label}: {:>8.0} ops/s  p99 {:>6} µs  errors {}",
                    r.ops_per_sec(),
                    fmt_us(r.percentile_us(0.99)),
                    r.stats.errors.total()
                ));
                row.push(Some(r));
                // Let the server close the old connections before the next cell.
                std::thread::sleep(Duration::from_millis(50));
            }
            results.push(row);
        }
        Run {
            names: self.targets.iter().map(|t| t.name.clone()).collect(),
            cells: self.plan.cells.clone(),
            results,
        }
    }

    fn run_cell(&self, t: usize, cell: Cell, label: &str, progress: &mut Progress) -> CellResult {
        let (plan, target) = (&self.plan, &self.targets[t]);
        let threads = plan.threads.min(cell.conns);
        // Opened before the cell's clock starts; closed when it is over.
        let (_held, idle) = match cell.idle {
            0 => (Vec::new(), None),
            n => {
                let pid = target.pids.first().copied();
                let (held, cost) =
                    idle::open(target.addr, n, &self.workloads[t], pid, plan.timeout);
                (held, Some(cost))
            }
        };
        let start = Instant::now() + LEAD;
        let times = Times {
            start,
            measure: start + plan.warmup,
            end: start + plan.warmup + plan.duration,
        };
        let lives: Vec<Live> = (0..threads).map(|_| Live::default()).collect();
        let shards: Vec<Shard> = (0..threads)
            .map(|i| Shard {
                addr: target.addr,
                ids: (i..cell.conns).step_by(threads).collect(),
                cell,
                workload: self.workloads[t].clone(),
                times,
                timeout: plan.timeout,
                sample: plan.sample,
            })
            .collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .iter()
                .zip(&lives)
                .enumerate()
                .map(|(i, (shard, live))| {
                    std::thread::Builder::new()
                        .name(format!("load-{i}"))
                        .spawn_scoped(scope, move || drive(shard, live))
                        .expect("spawn a generator thread")
                })
                .collect();
            let show = |progress: &mut Progress| {
                let sum = |f: fn(&Live) -> u64| lives.iter().map(f).sum::<u64>();
                progress.update(
                    label,
                    Instant::now().saturating_duration_since(times.start),
                    times.end - times.start,
                    sum(|l| l.completed.load(Ordering::Relaxed)),
                    sum(|l| l.errors.load(Ordering::Relaxed)),
                );
            };
            wait_until(times.measure, || show(progress));
            let before = CpuReading::now(target);
            wait_until(times.end, || show(progress));
            let after = CpuReading::now(target);
            let mut stats = Stats::new(plan.duration, plan.sample);
            for h in handles {
                stats.merge(&h.join().expect("generator thread panicked"));
            }
            let mut result = cell_result(stats, plan.duration, &before, &after);
            result.idle = idle;
            result
        })
    }
}

/// Sleeps until `deadline`, calling `tick` every [`PROGRESS_EVERY`].
fn wait_until(deadline: Instant, mut tick: impl FnMut()) {
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(left.min(PROGRESS_EVERY));
        tick();
    }
}

fn cell_result(
    stats: Stats,
    window: Duration,
    before: &CpuReading,
    after: &CpuReading,
) -> CellResult {
    let server_cpu = per_window(before.server, after.server, window);
    let generator_cpu = per_window(before.generator, after.generator, window);
    // A cluster's other nodes are the server too, not a disturbance.
    let all_server_cpu = per_window(before.all_server, after.all_server, window);
    let machine = per_window(before.machine, after.machine, window);
    let other_cpu = (|| Some((machine? - all_server_cpu? - generator_cpu?).max(0.0)))();
    CellResult {
        stats,
        window,
        server_cpu,
        generator_cpu,
        other_cpu,
        idle: None,
    }
}
