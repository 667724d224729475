//! The accept loop: TCP connections in, TLS 1.3 connections out, without
//! letting anyone who has not authenticated hold the door.
//!
//! - The loop never waits: a connection that cannot get a handshake slot
//!   (all [`AcceptLimits::handshakes`] in use, or its address already has
//!   [`AcceptLimits::per_address`] handshakes in progress) is closed at
//!   once, and the loop goes on accepting.
//! - A peer must send its first byte within [`AcceptLimits::first_byte`]
//!   and finish the handshake within [`AcceptLimits::handshake`]; idle or
//!   stalled connections give their slot back quickly.
//! - The TLS configuration is read per connection from a [`TlsConfigCell`],
//!   so a reloaded configuration (a new revocation list) applies to the
//!   next handshake.
//!
//! Every refused handshake gets one log line naming the peer and the reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// Bounds on connections that have not finished their TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Handshakes in progress at once, over all addresses.
    pub handshakes: usize,
    /// Handshakes in progress at once from one IP address.
    pub per_address: usize,
    /// Time a new connection has to send its first byte.
    pub first_byte: Duration,
    /// Time a connection has to finish its handshake.
    pub handshake: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            handshakes: 256,
            per_address: 64,
            first_byte: Duration::from_secs(2),
            handshake: Duration::from_secs(10),
        }
    }
}

/// The server TLS configuration in force, replaceable while serving.
#[derive(Debug)]
pub struct TlsConfigCell(RwLock<Arc<rustls::ServerConfig>>);

impl TlsConfigCell {
    /// A cell holding `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(RwLock::new(config))
    }

    /// The configuration in force.
    pub fn get(&self) -> Arc<rustls::ServerConfig> {
        match self.0.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the configuration for the next handshakes.
    pub fn set(&self, config: Arc<rustls::ServerConfig>) {
        match self.0.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// Handshakes in progress per address.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// A handshake slot of one address, given back on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn try_take(table: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut map = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `stop` changes, handing every
/// completed TLS connection to `out`.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<TlsConfigCell>,
    limits: AcceptLimits,
    out: mpsc::Sender<TlsStream<TcpStream>>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.handshakes));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(address_slot) = PerAddress::try_take(&per_address, peer.ip(), limits.per_address)
        else {
            debug!(%peer, "connection closed: too many handshakes in progress from this address");
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            debug!(%peer, "connection closed: too many handshakes in progress");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.get());
        let out = out.clone();
        tokio::spawn(async move {
            let _slots = (permit, address_slot);
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.first_byte, tcp.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    debug!(%peer, "connection closed: nothing sent");
                    return;
                }
            }
            match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    drop(_slots);
                    let _ = out.send(stream).await;
                }
                Ok(Err(e)) => {
                    warn!(%peer, reason = %tessera_certs::describe_tls_error(&e), "TLS handshake refused");
                }
                Err(_) => warn!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
