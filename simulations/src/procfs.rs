//! What the kernel tells about processes (`/proc`, Linux only; elsewhere
//! every figure is `None`): peak and current resident memory, CPU time,
//! parents and open descriptors, and a monitor of the federation processes
//! a benchmark starts.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

/// How often [`ChildMonitor`] reads the processes.
const POLL: Duration = Duration::from_millis(50);

/// A field of `/proc/<pid>/status` in bytes (`VmHWM`, `VmRSS`).
pub fn status_bytes(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())?;
    Some(kib * 1024)
}

/// This process's peak resident memory so far.
pub fn own_peak() -> Option<u64> {
    status_bytes("self", "VmHWM:")
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` after the command name (which is in
/// parentheses and may hold spaces or parentheses itself): the first is
/// field 3 of the line (the state).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// The parent of a process (field 4 of `/proc/<pid>/stat`).
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(&pid.to_string())?.get(1)?.parse().ok()
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Peak resident memory of one process.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ProcessPeak {
    /// `coordinator`, or the participant's site name.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Highest `VmHWM` read, in bytes.
    pub peak_rss_bytes: u64,
    /// CPU seconds (user and system) it had used at the last reading.
    pub cpu_seconds: f64,
}

/// Polls the peak resident memory and CPU time of this process's children
/// that run a coordinator or a participant, every 50 ms.
pub struct ChildMonitor {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<BTreeMap<u32, ProcessPeak>>>,
}

impl ChildMonitor {
    /// Starts polling the children of this process.
    pub fn start() -> Self {
        if !Path::new("/proc/self/status").exists() {
            return ChildMonitor {
                stop: Arc::new(AtomicBool::new(true)),
                handle: None,
            };
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let me = std::process::id();
        let handle = std::thread::spawn(move || {
            let mut seen = BTreeMap::new();
            loop {
                // Read once more after the stop signal so the last values are in.
                let stopping = flag.load(Ordering::Acquire);
                scan_children(me, &mut seen);
                if stopping {
                    return seen;
                }
                std::thread::sleep(POLL);
            }
        });
        ChildMonitor {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops polling; returns the peaks, coordinator first.
    pub fn finish(mut self) -> Vec<ProcessPeak> {
        self.stop.store(true, Ordering::Release);
        let seen = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let mut v: Vec<ProcessPeak> = seen.into_values().collect();
        v.sort_by(|a, b| {
            (a.name != "coordinator", &a.name).cmp(&(b.name != "coordinator", &b.name))
        });
        v
    }
}

/// Updates `seen` with the `VmHWM` of every child of `parent` that runs a
/// coordinator or a participant.
fn scan_children(parent: u32, seen: &mut BTreeMap<u32, ProcessPeak>) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let entry = match seen.entry(pid) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                if parent_pid(pid) != Some(parent) {
                    continue;
                }
                let Some(name) = role_of(pid) else {
                    continue;
                };
                e.insert(ProcessPeak {
                    name,
                    pid,
                    peak_rss_bytes: 0,
                    cpu_seconds: 0.0,
                })
            }
        };
        if let Some(hwm) = status_bytes(&pid.to_string(), "VmHWM:") {
            entry.peak_rss_bytes = entry.peak_rss_bytes.max(hwm);
        }
        if let Some(cpu) = cpu_seconds(&pid.to_string()) {
            entry.cpu_seconds = entry.cpu_seconds.max(cpu);
        }
    }
}

/// `coordinator`, or the site name of a participant, from the configuration
/// file on the process's command line.
fn role_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let config = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))?;
    let config = Path::new(config);
    match config.file_name()?.to_str()? {
        "coordinator.toml" => Some("coordinator".into()),
        "participant.toml" => Some(
            config
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "participant".into()),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_high_water_mark_a_parent_and_descriptors() {
        let me = std::process::id();
        assert!(status_bytes("self", "VmHWM:").unwrap() > 0);
        assert!(own_peak().unwrap() > 0);
        assert_eq!(parent_pid(me), Some(std::os::unix::process::parent_id()));
        assert!(cpu_seconds(&me.to_string()).unwrap() >= 0.0);
        assert!(open_fds(me).unwrap() >= 3);
        assert_eq!(role_of(me), None);
    }
}
