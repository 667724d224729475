//! Child processes of tests: waiting with patience, a guard that kills every
//! child still running when a test ends (however it ends), signals, and free
//! loopback ports.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long any single wait may take before a test fails. Generous: the
/// machine may be shared and loaded; nothing here measures speed.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(50);

/// Polls `child` until it exits; `None` if it still runs after `limit`.
///
/// # Panics
/// If the child cannot be polled.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("polling a child process") {
            return Some(status);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits for `child`; after `limit`, kills it and panics naming `what`.
pub fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    match wait_within(child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
    }
}

/// Kills `child` (SIGKILL on Unix) if it still runs, and reaps it.
pub fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    child.wait().ok()
}

/// Named child processes, in start order; every one still running is
/// killed and reaped when the guard is dropped.
#[derive(Debug, Default)]
pub struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    /// No processes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a started process under `name`.
    pub fn push(&mut self, name: impl Into<String>, child: Child) {
        self.children.push((name.into(), child));
    }

    /// The names, in start order.
    pub fn names(&self) -> Vec<String> {
        self.children.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Whether a process was started under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.children.iter().any(|(n, _)| n == name)
    }

    /// The process last started under `name`.
    ///
    /// # Panics
    /// If there is none.
    pub fn get(&self, name: &str) -> &Child {
        self.children
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no process {name} was started"))
    }

    /// The process last started under `name`, mutably.
    ///
    /// # Panics
    /// If there is none.
    pub fn get_mut(&mut self, name: &str) -> &mut Child {
        self.children
            .iter_mut()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no process {name} was started"))
    }

    /// Every process, in start order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Child)> {
        self.children.iter_mut().map(|(n, c)| (n.as_str(), c))
    }

    /// The processes that have exited, with their statuses.
    pub fn exited(&mut self) -> Vec<(String, ExitStatus)> {
        self.children
            .iter_mut()
            .filter_map(|(n, c)| {
                c.try_wait()
                    .expect("polling a child process")
                    .map(|s| (n.clone(), s))
            })
            .collect()
    }

    /// Kills `name` (SIGKILL on Unix) and reaps it.
    ///
    /// # Panics
    /// If there is no such process or it cannot be killed.
    pub fn kill(&mut self, name: &str) -> ExitStatus {
        let child = self.get_mut(name);
        child.kill().expect("killing a child process");
        child.wait().expect("reaping a child process")
    }

    /// Kills (SIGKILL on Unix) and reaps every process started under
    /// `name`, and forgets them.
    pub fn remove(&mut self, name: &str) {
        for (_, c) in self.children.iter_mut().filter(|(n, _)| n == name) {
            kill_and_reap(c);
        }
        self.children.retain(|(n, _)| n != name);
    }

    /// Kills and reaps every process still running.
    pub fn kill_all(&mut self) {
        for (_, c) in &mut self.children {
            kill_and_reap(c);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Sends signal `sig` (a name such as `STOP`, `CONT`, `TERM`) to process
/// `pid` with `kill -s`.
///
/// # Panics
/// If `kill` cannot be run or fails.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(ok.success(), "kill -s {sig} {pid} failed");
}

/// A free loopback port (bound and released at once).
///
/// # Panics
/// If no port can be bound.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}
