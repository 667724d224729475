//! Peak resident memory and CPU time, read from the kernel (`/proc`,
//! Linux only; elsewhere every figure is `None`).
//!
//! - this process: `VmHWM`, the kernel's own high-water mark of the
//!   resident set — exact; CPU time (user + system) from `/proc/self/stat`;
//! - a set of processes: a thread adds up their `VmRSS` every 100 ms and
//!   keeps the largest total (growth and shrinkage between two readings
//!   are missed, so the figure is a lower bound of the true peak of the
//!   sum, and every process's own `VmHWM` an upper bound of its share);
//!   their CPU times are added up from the last reading of each.
//!
//! CPU time matters on a shared machine: wall time per round grows with
//! whatever else runs, CPU time much less.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::procfs::{cpu_seconds, own_peak, status_bytes};

/// How often the processes are read.
const POLL: Duration = Duration::from_millis(100);

/// Follows the summed resident memory of a changing set of processes.
pub struct ProcessSetWatch {
    pids: Arc<Mutex<Vec<u32>>>,
    peak: Arc<AtomicU64>,
    /// Last CPU seconds read of each process, in milliseconds.
    cpu: Arc<Mutex<std::collections::BTreeMap<u32, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Default for ProcessSetWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessSetWatch {
    /// Starts the reading thread (with no process yet).
    pub fn new() -> Self {
        let pids: Arc<Mutex<Vec<u32>>> = Arc::default();
        let peak = Arc::new(AtomicU64::new(0));
        let cpu: Arc<Mutex<std::collections::BTreeMap<u32, u64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pids, peak, cpu, stop) = (
                Arc::clone(&pids),
                Arc::clone(&peak),
                Arc::clone(&cpu),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let list = pids.lock().map(|p| p.clone()).unwrap_or_default();
                    let total: u64 = list
                        .iter()
                        .filter_map(|p| status_bytes(&p.to_string(), "VmRSS:"))
                        .sum();
                    peak.fetch_max(total, Ordering::Relaxed);
                    if let Ok(mut c) = cpu.lock() {
                        for p in &list {
                            if let Some(s) = cpu_seconds(&p.to_string()) {
                                c.insert(*p, (s * 1000.0) as u64);
                            }
                        }
                    }
                    std::thread::sleep(POLL);
                }
            })
        };
        Self {
            pids,
            peak,
            cpu,
            stop,
            thread: Some(thread),
        }
    }

    /// Adds a process to the set.
    pub fn add(&self, pid: u32) {
        if let Ok(mut p) = self.pids.lock() {
            p.push(pid);
        }
    }

    /// The largest total read so far (None before any reading or off Linux).
    pub fn peak(&self) -> Option<u64> {
        Some(self.peak.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }

    /// CPU seconds of every process of the set, as last read.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let c = self.cpu.lock().ok()?;
        (!c.is_empty()).then(|| c.values().sum::<u64>() as f64 / 1000.0)
    }
}

impl Drop for ProcessSetWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
