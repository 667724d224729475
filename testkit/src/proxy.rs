//! A loopback TCP proxy a test puts between a participant and the
//! coordinator, to cut, stall and slow the connections between them.
//!
//! The proxy forwards bytes as they are (TLS passes through untouched: the
//! participant still verifies the coordinator's certificate by name) and
//! obeys its [`Proxy`] handle at any moment:
//!
//! - [`Proxy::set_latency`]: every forwarded read waits this long first, in
//!   both directions (a slow link);
//! - [`Proxy::stall`]: nothing is forwarded while stalled, connections stay
//!   open (a link that hangs: neither side sees an error);
//! - [`Proxy::cut_all`]: every open connection is shut down at once (a
//!   dropped link);
//! - [`Proxy::refuse`]: new connections are closed as soon as accepted;
//! - [`Proxy::cut_downstream_after`]: the next connection is cut once that
//!   many bytes have gone from the coordinator to the participant, in the
//!   middle of whatever message carries them.
//!
//! Threads only (no runtime); every thread ends when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy's threads share with its handle.
#[derive(Debug, Default)]
struct Control {
    latency_ms: AtomicU64,
    stalled: AtomicBool,
    refusing: AtomicBool,
    closed: AtomicBool,
    /// Cut the next connection after this many downstream bytes (0: never).
    cut_downstream_after: AtomicU64,
    accepted: AtomicU64,
    cuts: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// Both sockets of every connection, to shut them down on a cut.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
}

impl Control {
    fn cut_everything(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for (a, b) in open.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
            self.cuts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running proxy on `127.0.0.1:PORT`; stops (and cuts everything) when
/// dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    control: Arc<Control>,
}

impl Proxy {
    /// Starts a proxy to `target` (e.g. the coordinator's `127.0.0.1:PORT`).
    ///
    /// # Panics
    /// If no loopback port can be bound: this is a test helper.
    pub fn start(target: &str) -> Self {
        let target: SocketAddr = target
            .parse()
            .unwrap_or_else(|e| panic!("proxy target {target:?}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let control = Arc::new(Control::default());
        let c = Arc::clone(&control);
        thread::spawn(move || accept_loop(&listener, target, &c));
        Self { addr, control }
    }

    /// `127.0.0.1:PORT`, to give participants instead of the coordinator's.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Delays every forwarded read by `latency` (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.control.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Stops (`true`) or resumes (`false`) forwarding; connections stay open.
    pub fn stall(&self, stalled: bool) {
        self.control.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Closes new connections as soon as they are accepted (`true`), or
    /// forwards them again (`false`).
    pub fn refuse(&self, refusing: bool) {
        self.control.refusing.store(refusing, Ordering::Relaxed);
    }

    /// Shuts down every open connection, both ways, now.
    pub fn cut_all(&self) {
        self.control.cut_everything();
    }

    /// Cuts the next connection (and only it) once `bytes` have gone from
    /// the target to the client in it.
    pub fn cut_downstream_after(&self, bytes: u64) {
        self.control
            .cut_downstream_after
            .store(bytes, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.control.accepted.load(Ordering::Relaxed)
    }

    /// Connections cut so far (by [`Proxy::cut_all`] or a byte limit).
    pub fn cuts(&self) -> u64 {
        self.control.cuts.load(Ordering::Relaxed)
    }

    /// Bytes forwarded to the target so far.
    pub fn bytes_up(&self) -> u64 {
        self.control.bytes_up.load(Ordering::Relaxed)
    }

    /// Bytes forwarded to the client so far.
    pub fn bytes_down(&self) -> u64 {
        self.control.bytes_down.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.control.closed.store(true, Ordering::Relaxed);
        self.control.cut_everything();
        // Wake the accept loop so that it sees `closed`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, control: &Arc<Control>) {
    for client in listener.incoming() {
        if control.closed.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        control.accepted.fetch_add(1, Ordering::Relaxed);
        if control.refusing.load(Ordering::Relaxed) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let limit = control.cut_downstream_after.swap(0, Ordering::Relaxed);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        control
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((c3, s3));
        let up = Arc::clone(control);
        thread::spawn(move || pump(client, server, &up, Direction::Up, 0));
        let down = Arc::clone(control);
        thread::spawn(move || pump(s2, c2, &down, Direction::Down, limit));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to target.
    Up,
    /// Target to client.
    Down,
}

/// Copies `from` to `to` under `control`; with a non-zero `limit`, shuts
/// both down once `limit` bytes went through (mid-buffer if need be).
fn pump(mut from: TcpStream, mut to: TcpStream, control: &Control, dir: Direction, limit: u64) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while control.stalled.load(Ordering::Relaxed) && !control.closed.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
        let latency = control.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            thread::sleep(Duration::from_millis(latency));
        }
        let mut take = n;
        let mut cut = false;
        if limit > 0 {
            let left = limit.saturating_sub(sent);
            if (n as u64) >= left {
                take = usize::try_from(left).unwrap_or(n);
                cut = true;
            }
        }
        if to.write_all(&buf[..take]).is_err() {
            break;
        }
        sent += take as u64;
        let counter = match dir {
            Direction::Up => &control.bytes_up,
            Direction::Down => &control.bytes_down,
        };
        counter.fetch_add(take as u64, Ordering::Relaxed);
        if cut {
            control.cuts.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback; returns its address.
    fn echo() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn round_trip(addr: &str, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn forwards_delays_and_cuts() {
        let p = Proxy::start(&echo());
        assert_eq!(round_trip(&p.address(), b"hello").unwrap(), b"hello");

        p.set_latency(Duration::from_millis(100));
        let t = Instant::now();
        assert_eq!(round_trip(&p.address(), b"slow").unwrap(), b"slow");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        p.set_latency(Duration::ZERO);

        p.cut_downstream_after(3);
        let err = round_trip(&p.address(), b"cut here");
        assert!(err.is_err(), "{err:?}");
        assert_eq!(round_trip(&p.address(), b"whole").unwrap(), b"whole");

        p.refuse(true);
        assert!(round_trip(&p.address(), b"no").is_err());
        p.refuse(false);

        let mut s = TcpStream::connect(p.address()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        p.stall(true);
        s.write_all(b"held").unwrap();
        let mut b = [0u8; 4];
        assert!(s.read_exact(&mut b).is_err(), "a stalled proxy forwarded");
        p.stall(false);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"held");
        p.cut_all();
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
        assert!(p.cuts() >= 2);
    }
}
