//! Prometheus metrics of the coordinator, kept in a `prometheus-client`
//! registry and rendered in the OpenMetrics text format.
//!
//! Every figure here is operational (round counts, durations, connection
//! counts, byte counts) or already released (the ε the ledger has recorded);
//! nothing is derived from the values of a participant's update. The HTTP
//! side (`GET /metrics`, its limits, mutual TLS off loopback) is
//! [`crate::web`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use crate::round::Phase as Stage;
pub use crate::web::{CONNECTION_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_BYTES};

/// Prefix of every metric name.
const PREFIX: &str = "tessera";

/// Content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the stage-duration histogram buckets; `+Inf` is implied.
const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The `stage` label of the stage-duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

type StageFamily = Family<StageLabel, Histogram, fn() -> Histogram>;

/// The `metric` label of the federated-evaluation gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: String,
}

type EvaluationFamily = Family<MetricLabel, Gauge<f64, AtomicU64>>;

fn stage_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The coordinator's metrics registry. Share it with `Arc<Metrics>`; every
/// method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rounds_completed: Counter,
    rounds_aborted: Counter,
    participants_connected: Gauge,
    participants_dropped: Counter,
    epsilon_spent: Gauge<f64, AtomicU64>,
    bytes_received: Counter,
    bytes_sent: Counter,
    stages: StageFamily,
    evaluation: EvaluationFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every counter at zero and every stage's histogram
    /// present (empty).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let rounds_completed = Counter::default();
        let rounds_aborted = Counter::default();
        let participants_connected = Gauge::default();
        let participants_dropped = Counter::default();
        let epsilon_spent = Gauge::<f64, AtomicU64>::default();
        let bytes_received = Counter::default();
        let bytes_sent = Counter::default();
        let stages: StageFamily = Family::new_with_constructor(stage_histogram);
        for stage in Stage::ALL {
            let _ = stages.get_or_create(&StageLabel {
                stage: stage.as_str().to_owned(),
            });
        }
        registry.register(
            "rounds_completed",
            "Rounds whose aggregate was released.",
            rounds_completed.clone(),
        );
        registry.register(
            "rounds_aborted",
            "Rounds that ended without a release.",
            rounds_aborted.clone(),
        );
        registry.register(
            "participants_connected",
            "Participants currently connected.",
            participants_connected.clone(),
        );
        registry.register(
            "participants_dropped",
            "Participants that dropped out of a round.",
            participants_dropped.clone(),
        );
        registry.register(
            "epsilon_spent",
            "Privacy loss epsilon recorded in the ledger so far (best accountant).",
            epsilon_spent.clone(),
        );
        registry.register(
            "bytes_received",
            "Bytes received from participants.",
            bytes_received.clone(),
        );
        registry.register(
            "bytes_sent",
            "Bytes sent to participants.",
            bytes_sent.clone(),
        );
        registry.register(
            "round_stage_duration_seconds",
            "Duration of each stage of a round.",
            stages.clone(),
        );
        let evaluation = EvaluationFamily::default();
        registry.register(
            "evaluation",
            "The latest federated evaluation's global metrics (the cohort's sums, noised under DP).",
            evaluation.clone(),
        );
        Self {
            registry,
            rounds_completed,
            rounds_aborted,
            participants_connected,
            participants_dropped,
            epsilon_spent,
            bytes_received,
            bytes_sent,
            stages,
            evaluation,
        }
    }

    /// Sets the gauges of the latest federated evaluation (its global metrics).
    pub fn set_evaluation(&self, m: &tessera_model::EvalMetrics) {
        for (name, value) in [
            ("rows", Some(m.rows)),
            ("accuracy", m.accuracy),
            ("balanced_accuracy", m.balanced_accuracy),
            ("log_loss", m.log_loss),
            ("auc", m.auc),
            ("rmse", m.rmse),
            ("mae", m.mae),
            ("r2", m.r2),
        ] {
            if let Some(v) = value {
                self.evaluation
                    .get_or_create(&MetricLabel {
                        metric: name.to_owned(),
                    })
                    .set(v);
            }
        }
    }

    /// Counts one round whose aggregate was released.
    pub fn round_completed(&self) {
        self.rounds_completed.inc();
    }

    /// Counts one round that ended without a release.
    pub fn round_aborted(&self) {
        self.rounds_aborted.inc();
    }

    /// Records how long a stage of a round took.
    pub fn observe_stage(&self, stage: Stage, duration: Duration) {
        self.stages
            .get_or_create(&StageLabel {
                stage: stage.as_str().to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Sets the number of participants currently connected.
    pub fn set_participants_connected(&self, n: u64) {
        self.participants_connected
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts participants that dropped out of a round.
    pub fn participants_dropped(&self, n: u64) {
        self.participants_dropped.inc_by(n);
    }

    /// Sets the ε the privacy ledger has recorded so far.
    pub fn set_epsilon_spent(&self, epsilon: f64) {
        self.epsilon_spent.set(epsilon);
    }

    /// Counts bytes received from participants.
    pub fn add_bytes_received(&self, n: u64) {
        self.bytes_received.inc_by(n);
    }

    /// Counts bytes sent to participants.
    pub fn add_bytes_sent(&self, n: u64) {
        self.bytes_sent.inc_by(n);
    }

    /// The ε last set with [`Metrics::set_epsilon_spent`].
    pub fn epsilon_spent(&self) -> f64 {
        self.epsilon_spent.get()
    }

    /// Renders every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` alone on `listener` until `shutdown` completes,
/// with the limits of [`crate::web::serve`] and no TLS (for loopback
/// listeners; `crate::web` picks mutual TLS for other addresses).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let app = crate::web::router(Arc::new(crate::web::WebState::metrics_only(metrics)));
    crate::web::serve(listener, app, None, shutdown).await;
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
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has("tessera_round_stage_duration_seconds_bucket{le=\"0.005\",stage=\"noise\"} 1"),
            "{text}"
        );
        assert!(has(
            "tessera_round_stage_duration_seconds_bucket{le=\"1.0\",stage=\"noise\"} 2"
        ));
        assert!(has(
            "tessera_round_stage_duration_seconds_bucket{le=\"+Inf\",stage=\"noise\"} 3"
        ));
        assert!(has(
            "tessera_round_stage_duration_seconds_count{stage=\"noise\"} 3"
        ));
        assert!(has(
            "tessera_round_stage_duration_seconds_count{stage=\"keys\"} 0"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>().unwrap(), stage);
        }
        assert!("nope".parse::<Stage>().is_err());
    }

    #[test]
    fn counters_and_gauges_keep_their_names() {
        let m = Metrics::new();
        m.round_completed();
        m.set_epsilon_spent(0.5);
        m.set_participants_connected(3);
        let text = m.render();
        for line in [
            "tessera_rounds_completed_total 1",
            "tessera_epsilon_spent 0.5",
            "tessera_participants_connected 3",
            "tessera_bytes_sent_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(m.epsilon_spent(), 0.5);
    }
}
