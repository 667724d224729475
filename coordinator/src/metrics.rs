//! Prometheus metrics of the coordinator.
//!
//! A small registry of counters, gauges and per-stage duration histograms,
//! rendered in the Prometheus text exposition format (version 0.0.4), and a
//! minimal HTTP/1.1 endpoint that serves it on `GET /metrics`.
//!
//! Every figure here is operational (round counts, durations, connection
//! counts, byte counts) or already released (the ε the ledger has recorded);
//! nothing is derived from the values of a participant's update.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Prefix of every metric name.
const PREFIX: &str = "tessera";

/// Upper bounds (seconds) of the stage-duration histogram buckets; `+Inf` is implied.
const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Largest request head (request line plus headers) the endpoint reads.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How long one connection may take to send its request and receive the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest number of connections served at once; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

pub use crate::round::Phase as Stage;

/// One cumulative histogram.
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket of [`BUCKETS`], plus one for `+Inf`.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let slot = BUCKETS
            .iter()
            .position(|&upper| seconds <= upper)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// The coordinator's metrics registry. Share it with `Arc<Metrics>`; every
/// method takes `&self`.
#[derive(Debug, Default)]
pub struct Metrics {
    rounds_completed: AtomicU64,
    rounds_aborted: AtomicU64,
    participants_connected: AtomicU64,
    participants_dropped: AtomicU64,
    /// Bits of an `f64`.
    epsilon_spent: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    stages: Mutex<[Histogram; Stage::ALL.len()]>,
}

impl Metrics {
    /// A registry with every counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one round whose aggregate was released.
    pub fn round_completed(&self) {
        self.rounds_completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one round that ended without a release.
    pub fn round_aborted(&self) {
        self.rounds_aborted.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a stage of a round took.
    pub fn observe_stage(&self, stage: Stage, duration: Duration) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages[stage.index()].observe(duration.as_secs_f64());
    }

    /// Sets the number of participants currently connected.
    pub fn set_participants_connected(&self, n: u64) {
        self.participants_connected.store(n, Ordering::Relaxed);
    }

    /// Counts participants that dropped out of a round.
    pub fn participants_dropped(&self, n: u64) {
        self.participants_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the ε the privacy ledger has recorded so far.
    pub fn set_epsilon_spent(&self, epsilon: f64) {
        self.epsilon_spent
            .store(epsilon.to_bits(), Ordering::Relaxed);
    }

    /// Counts bytes received from participants.
    pub fn add_bytes_received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes sent to participants.
    pub fn add_bytes_sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// The ε last set with [`Metrics::set_epsilon_spent`].
    pub fn epsilon_spent(&self) -> f64 {
        f64::from_bits(self.epsilon_spent.load(Ordering::Relaxed))
    }

    /// Renders every metric in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
            let _ = writeln!(out, "# TYPE {PREFIX}_{name} counter");
            let _ = writeln!(out, "{PREFIX}_{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: &str| {
            let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
            let _ = writeln!(out, "# TYPE {PREFIX}_{name} gauge");
            let _ = writeln!(out, "{PREFIX}_{name} {v}");
        };
        counter(
            &mut out,
            "rounds_completed_total",
            "Rounds whose aggregate was released.",
            self.rounds_completed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rounds_aborted_total",
            "Rounds that ended without a release.",
            self.rounds_aborted.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "participants_connected",
            "Participants currently connected.",
            &self
                .participants_connected
                .load(Ordering::Relaxed)
                .to_string(),
        );
        counter(
            &mut out,
            "participants_dropped_total",
            "Participants that dropped out of a round.",
            self.participants_dropped.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "epsilon_spent",
            "Privacy loss epsilon recorded in the ledger so far (best accountant).",
            &format_float(self.epsilon_spent()),
        );
        counter(
            &mut out,
            "bytes_received_total",
            "Bytes received from participants.",
            self.bytes_received.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "bytes_sent_total",
            "Bytes sent to participants.",
            self.bytes_sent.load(Ordering::Relaxed),
        );

        let stages = self
            .stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let name = format!("{PREFIX}_round_stage_duration_seconds");
        let _ = writeln!(out, "# HELP {name} Duration of each stage of a round.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for stage in Stage::ALL {
            let h = &stages[stage.index()];
            let label = stage.as_str();
            let mut cumulative = 0u64;
            for (i, upper) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "{name}_bucket{{stage=\"{label}\",le=\"{}\"}} {cumulative}",
                    format_float(*upper)
                );
            }
            cumulative += h.counts[BUCKETS.len()];
            let _ = writeln!(
                out,
                "{name}_bucket{{stage=\"{label}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{stage=\"{label}\"}} {}",
                format_float(h.sum)
            );
            let _ = writeln!(out, "{name}_count{{stage=\"{label}\"}} {}", h.count);
        }
        out
    }
}

/// Formats a float as the exposition format expects (`NaN`, `+Inf`, `-Inf`).
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
///
/// Each connection answers one request and is closed. Any other path or
/// method gets `404 Not Found`; a request head larger than
/// [`MAX_REQUEST_BYTES`] gets `431`; a connection that does not finish within
/// [`CONNECTION_TIMEOUT`] is dropped. At most [`MAX_CONNECTIONS`] are served
/// at once. Connections still open at shutdown are closed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "metrics endpoint busy; closing connection");
                        drop(stream);
                        continue;
                    }
                    let metrics = Arc::clone(&metrics);
                    connections.spawn(async move {
                        match tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, &metrics)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection failed"),
                            Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics endpoint could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Reads one request head and writes the answer.
async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(pos) = find_head_end(&buf) {
            break pos;
        }
        if buf.len() >= MAX_REQUEST_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "request too large\n",
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // Closed before a complete request head: nothing to answer.
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = &buf[..head_end];
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.trim_end_matches('\r').split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" && path == "/metrics" {
        let body = metrics.render();
        let header = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(header.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    } else {
        respond(&mut stream, "404 Not Found", "not found\n").await
    }
}

/// Position just past the blank line that ends an HTTP request head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(p + 4);
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2)
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let m = Metrics::new();
        m.observe_stage(Stage::Noise, Duration::from_millis(3));
        m.observe_stage(Stage::Noise, Duration::from_millis(700));
        m.observe_stage(Stage::Noise, Duration::from_secs(1000));
        let text = m.render();
        assert!(text.contains(
            "tessera_round_stage_duration_seconds_bucket{stage=\"noise\",le=\"0.005\"} 1\n"
        ));
        assert!(
            text.contains(
                "tessera_round_stage_duration_seconds_bucket{stage=\"noise\",le=\"1\"} 2\n"
            )
        );
        assert!(text.contains(
            "tessera_round_stage_duration_seconds_bucket{stage=\"noise\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("tessera_round_stage_duration_seconds_count{stage=\"noise\"} 3\n"));
        assert!(text.contains("tessera_round_stage_duration_seconds_count{stage=\"keys\"} 0\n"));
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>().unwrap(), stage);
        }
        assert!("nope".parse::<Stage>().is_err());
    }

    #[test]
    fn float_formatting() {
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }
}
