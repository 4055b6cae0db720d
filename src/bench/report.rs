//! A run in words and numbers: the header that says what was measured
//! where, the table (ops/s, p50/p99/p99.9, errors and server CPU per
//! server and cell, and the ratios to memcached), the details (bytes per
//! request, other CPU, errors by kind), and the CSV of the timeline.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::plan::Plan;
use super::run::{CellResult, Run, OTHER_CPU_FLAG};
use super::target::{Protocol, Target};
use super::workload::KEY_LEN;

pub fn fmt_us(us: f64) -> String {
    if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn fmt_cpu(c: Option<f64>) -> String {
    c.map_or_else(|| "-".into(), |c| format!("{:.0}", c * 100.0))
}

/// `machine:` and the CPUs, model and kernel this runs on.
pub fn machine_line() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |k| k.trim().to_string());
    format!("machine:   {nproc} CPUs, {model}, Linux {kernel}\n")
}

/// `load:` and what every cell does.
pub fn load_line(plan: &Plan) -> String {
    let gets = match plan.keys_per_get {
        1 => String::new(),
        n => format!(", each get names {n} keys"),
    };
    format!(
        "load:      {} keys of {KEY_LEN} B, {} B values, uniform keys{gets}; {:.1} s measured \
         after {:.1} s warm-up per cell; {} generator thread(s); timeout {} ms\n",
        plan.keys,
        plan.value_len,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.threads,
        plan.timeout.as_millis()
    )
}

/// `server:` lines: each target's name, address and protocol, and whether
/// its CPU is measured.
pub fn target_lines(targets: &[Target]) -> String {
    let mut s = String::new();
    for t in targets {
        let protocol = match t.protocol {
            Protocol::Memcached => "memcached text protocol",
            Protocol::EtcdHttp => "etcd v3 JSON over HTTP/1.1",
        };
        let cpu = match t.pids.first() {
            Some(pid) => format!("cpu of pid {pid}"),
            None => "cpu not measured (not a local listener)".into(),
        };
        let _ = writeln!(s, "server:    {} at {}, {protocol}, {cpu}", t.name, t.addr);
    }
    s
}

impl Run {
    fn name_width(&self) -> usize {
        let longest = self.cells.iter().map(|c| c.name().len()).max();
        // Room for the " !" of a disturbed cell and a space.
        longest.unwrap_or(0).max(24) + 3
    }

    /// The table of every cell against every server.
    pub fn table(&self) -> String {
        let width = self.name_width();
        let baseline = self.baseline();
        let compared: Vec<usize> = match baseline {
            Some(b) => (0..self.names.len()).filter(|&i| i != b).collect(),
            None => Vec::new(),
        };
        let mut head1 = format!("{:<width$}", "");
        let mut head2 = format!("{:<width$}", "workload");
        for name in &self.names {
            let _ = write!(head1, "| {name:<48}");
            let _ = write!(
                head2,
                "| {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} ",
                "ops/s", "p50", "p99", "p99.9", "errors", "cpu%"
            );
        }
        if let Some(b) = baseline {
            for &i in &compared {
                let _ = write!(
                    head1,
                    "| {:<16}",
                    format!("{}/{}", self.names[i], self.names[b])
                );
                let _ = write!(head2, "| {:>7} {:>7} ", "ops", "p99");
            }
        }
        let rule = "-".repeat(head2.len());
        let mut out = format!("{}\n{}\n{rule}\n", head1.trim_end(), head2.trim_end());
        for (cell, row) in self.cells.iter().zip(&self.results) {
            let disturbed = row.iter().flatten().any(CellResult::disturbed);
            let mark = if disturbed { " !" } else { "" };
            let mut line = format!("{:<width$}", format!("{}{mark}", cell.name()));
            for result in row {
                line.push_str(&result_cells(result.as_ref()));
            }
            if let Some(b) = baseline {
                for &i in &compared {
                    line.push_str(&ratio_cells(row[i].as_ref(), row[b].as_ref()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&self.footnotes());
        out
    }

    fn footnotes(&self) -> String {
        let open = self.cells.iter().any(|c| c.rate.is_some());
        let mut s = format!(
            "\nlatency in µs, {} to the read of its whole reply; cpu% = server process CPU over \
             the measured window (100 = one core); errors over the whole cell, warm-up \
             included",
            if open {
                "from when the request was due (open loop, @rate/s) or from its write (closed loop)"
            } else {
                "from the write of the request"
            }
        );
        if self.baseline().is_some() && self.names.len() > 1 {
            s.push_str("; ratios: throughput (higher is better) and p99 (lower is better)");
        }
        s.push_str(".\n");
        if self.all().any(|(_, _, r)| r.disturbed()) {
            let _ = writeln!(
                s,
                "! = other processes (or the host's steal) used more than {:.0}% of a CPU during \
                 that cell: its numbers are disturbed; rerun on a quiet machine.",
                OTHER_CPU_FLAG * 100.0
            );
        }
        s
    }

    /// Bytes per request, the generator's and other processes' CPU, and
    /// the errors by kind, one line per server and cell.
    pub fn details(&self) -> String {
        let width = self.name_width();
        let mut s = String::from(
            "details (bytes per completed request; CPU of the generator and of everything \
             else, 100 = one core; error kinds):\n",
        );
        for (cell, t, r) in self.all() {
            let done = r.stats.completed.max(1) as f64;
            let _ = write!(
                s,
                "  {:<width$} {:<12} out {:>5.1} B/op  in {:>5.1} B/op  generator cpu {:>4}%  \
                 other cpu {:>4}%",
                cell.name(),
                self.names[t],
                r.stats.bytes_out as f64 / done,
                r.stats.bytes_in as f64 / done,
                fmt_cpu(r.generator_cpu),
                fmt_cpu(r.other_cpu),
            );
            let e = r.stats.errors;
            if e.total() > 0 {
                let _ = write!(
                    s,
                    "  ERRORS: wrong {} miss {} timeout {} io {}",
                    e.wrong, e.miss, e.timeout, e.io
                );
            }
            if let Some(first) = &r.stats.first_io_error {
                let _ = write!(s, " (first io error: {first})");
            }
            s.push('\n');
        }
        s.push_str(&self.idle_costs());
        s
    }

    /// What the idle connections of each cell that had some cost each server.
    fn idle_costs(&self) -> String {
        let width = self.name_width();
        let mut s = String::new();
        for (cell, t, r) in self.all() {
            let Some(idle) = &r.idle else { continue };
            if s.is_empty() {
                s.push_str(
                    "memory per idle connection (server RSS before and after opening them, each \
                     having made one get):\n",
                );
            }
            let _ = write!(
                s,
                "  {:<width$} {:<12} {} of {} opened",
                cell.name(),
                self.names[t],
                idle.opened,
                idle.wanted
            );
            if let (Some((before, after)), Some(bytes)) = (idle.rss_kib, idle.bytes_per_conn()) {
                let _ = write!(
                    s,
                    ": RSS {before} KiB -> {after} KiB, {bytes:.0} B per connection"
                );
            }
            if let Some(e) = &idle.error {
                let _ = write!(s, "  ERROR: {e}");
            }
            s.push('\n');
        }
        s
    }

    /// One row per server, cell and sample interval of the measured window.
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(f, "{CSV_HEADER}")?;
        for (cell, t, r) in self.all() {
            let sample = r.stats.sample;
            for (i, s) in r.stats.timeline.iter().enumerate() {
                let from = sample * i as u32;
                // The last interval may be cut short by the window's end.
                let length = sample.min(r.window.saturating_sub(from)).as_secs_f64();
                let us = |q: f64| s.hist.value_at_quantile(q) as f64 / 1000.0;
                writeln!(
                    f,
                    "{},{},{},{},{},{:.3},{:.0},{:.1},{:.1},{:.1},{:.1},{}",
                    csv_field(&self.names[t]),
                    cell.conns,
                    cell.get_percent,
                    cell.depth,
                    cell.rate.unwrap_or(0),
                    from.as_secs_f64(),
                    s.ok as f64 / length.max(f64::MIN_POSITIVE),
                    us(0.5),
                    us(0.99),
                    us(0.999),
                    s.hist.max() as f64 / 1000.0,
                    s.errors
                )?;
            }
        }
        f.flush()
    }
}

/// The CSV's columns; `rate` 0 is a closed loop, `t_s` the start of the
/// interval in the measured window, latencies in µs (0 with no reply).
const CSV_HEADER: &str =
    "server,conns,get_percent,depth,rate,t_s,ops_per_sec,p50_us,p99_us,p999_us,max_us,errors";

/// A CSV field, quoted if it holds a comma, a quote or a line end.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn result_cells(result: Option<&CellResult>) -> String {
    match result {
        Some(r) => format!(
            "| {:>8.0} {:>7} {:>7} {:>7} {:>6} {:>6} ",
            r.ops_per_sec(),
            fmt_us(r.percentile_us(0.50)),
            fmt_us(r.percentile_us(0.99)),
            fmt_us(r.percentile_us(0.999)),
            r.stats.errors.total(),
            fmt_cpu(r.server_cpu)
        ),
        None => format!("| {:<48}", "not run (server down)"),
    }
}

fn ratio_cells(result: Option<&CellResult>, base: Option<&CellResult>) -> String {
    match (result, base) {
        (Some(r), Some(base)) if base.ops_per_sec() > 0.0 => {
            let p99 = base.percentile_us(0.99);
            let p99_ratio = if p99 > 0.0 {
                format!("{:.2}", r.percentile_us(0.99) / p99)
            } else {
                "-".into()
            };
            format!(
                "| {:>7.2} {:>7} ",
                r.ops_per_sec() / base.ops_per_sec(),
                p99_ratio
            )
        }
        _ => format!("| {:>7} {:>7} ", "-", "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_separators_are_quoted() {
        assert_eq!(csv_field("mckv"), "mckv");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
