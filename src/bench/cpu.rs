//! CPU time from Linux's `/proc`: a process's, the whole machine's, and
//! which process on this machine listens on a port (so `mckv bench` can
//! show a local server's CPU without being told its pid). Anything that
//! cannot be read is `None`: the table then shows `-`.

use std::net::SocketAddr;

/// Linux's USER_HZ, the unit of /proc/<pid>/stat times.
const CLOCK_TICKS: f64 = 100.0;

/// CPU seconds (user + system) a process has used; `pid` may be `self`.
pub fn process_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime); `after` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

/// CPU seconds the whole machine spent busy (steal included: a host taking
/// the CPU away is noise too).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Some(busy / CLOCK_TICKS)
}

/// The process listening on `addr`'s port, if `addr` is a loopback address
/// (so the listener is on this machine) and `/proc` lets us see it.
pub fn listener_pid(addr: SocketAddr) -> Option<u32> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|table| listening_inode(&table, addr.port()))?;
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|proc| {
        let pid: u32 = proc.file_name().to_str()?.parse().ok()?;
        let mut fds = std::fs::read_dir(proc.path().join("fd")).ok()?;
        fds.any(|fd| fd.is_ok_and(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == *socket)))
            .then_some(pid)
    })
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        let listening = *f.get(3)? == LISTEN;
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_listener_of_a_loopback_port_is_found() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listener_pid(addr), Some(std::process::id()));
        drop(listener);
        assert_eq!(listener_pid(addr), None);
    }

    #[test]
    fn cpu_times_are_read() {
        assert!(process_seconds("self").is_some());
        assert!(machine_busy_seconds().is_some());
    }
}
