//! Analytics queries in the driver: the `[[analytics]]` entries queued when
//! the coordinator starts (those a restarted coordinator already answered
//! are not asked again), operator requests (`tessera-coordinator query`)
//! taken from a channel, and each query's outcome stored, logged and handed
//! to whoever waits for it.

use std::collections::HashMap;
use std::time::Instant;

use tessera_analytics::QueryPlan;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::Driver;
use crate::round::{QueryFailed, QueryOrigin, QueryReleased, QueuedQuery};
use crate::store::AnalyticsRow;
use tessera_common::time::now_ms;

/// How many operator requests may wait in the channel.
pub const QUERY_CHANNEL: usize = 16;

/// An operator's query and where its outcome goes.
#[derive(Debug)]
pub struct QueryRequest {
    /// The plan to announce.
    pub plan: QueryPlan,
    /// The answer: the release, or why there is none.
    pub reply: oneshot::Sender<Result<QueryReleased, String>>,
}

/// The sending end operators' requests go into (see [`Driver::query_sender`]).
pub type QuerySender = mpsc::Sender<QueryRequest>;

/// The driver's side of analytics queries.
#[derive(Debug, Default)]
pub struct QueryDesk {
    requests: Option<mpsc::Receiver<QueryRequest>>,
    waiting: HashMap<u64, oneshot::Sender<Result<QueryReleased, String>>>,
    next_id: u64,
}

/// The next operator request (pending forever without a channel).
pub(super) async fn next_request(desk: &mut QueryDesk) -> Option<QueryRequest> {
    match desk.requests.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// A channel for operator queries: each request is queued in the
    /// machine and answered once released or failed.
    pub fn query_sender(&mut self) -> QuerySender {
        let (tx, rx) = mpsc::channel(QUERY_CHANNEL);
        self.queries.requests = Some(rx);
        tx
    }

    /// Queues the configured queries not yet answered by this federation.
    pub(super) fn queue_configured_queries(&mut self) -> anyhow::Result<()> {
        let answered: Vec<String> = self
            .store
            .analytics()?
            .into_iter()
            .filter(|r| r.release.is_some())
            .map(|r| r.origin)
            .collect();
        let entries = self.settings.config.analytics.clone();
        for (i, entry) in entries.into_iter().enumerate() {
            let origin = QueryOrigin::Config(i);
            if answered.contains(&origin.as_string()) {
                info!(entry = i, query = %entry.plan.query, "configured query already answered; not asked again");
                continue;
            }
            self.queries.next_id += 1;
            let query = QueuedQuery {
                id: self.queries.next_id,
                plan: entry.plan,
                origin,
            };
            self.machine.queue_query(Instant::now(), query);
        }
        Ok(())
    }

    /// An operator's query: queued; its requester waits for the outcome.
    pub(super) fn operator_query(&mut self, request: QueryRequest) {
        self.queries.next_id += 1;
        let id = self.queries.next_id;
        self.queries.waiting.insert(id, request.reply);
        self.machine.queue_query(
            Instant::now(),
            QueuedQuery {
                id,
                plan: request.plan,
                origin: QueryOrigin::Operator,
            },
        );
    }

    /// A released query: stored (its ledger row already is), logged,
    /// handed to its requester.
    pub(super) fn query_released(&mut self, r: QueryReleased) -> anyhow::Result<()> {
        self.store.record_analytics(&AnalyticsRow {
            round: Some(r.round),
            origin: r.query.origin.as_string(),
            query: r.release.query.clone(),
            release: Some(r.release.clone()),
            answered: r.answered as u32,
            declined: r.declined as u32,
            reason: None,
            recorded_at_ms: now_ms(),
        })?;
        if let Some(eps) = r.epsilon_after {
            self.metrics.set_epsilon_spent(eps);
        }
        for n in &r.release.noise {
            info!(
                round = r.round,
                part = %n.part,
                mechanism = ?n.mechanism,
                scale = n.scale,
                std = n.std,
                "analytics noise"
            );
        }
        if let Some(reply) = self.queries.waiting.remove(&r.query.id) {
            let _ = reply.send(Ok(r));
        }
        Ok(())
    }

    /// A query that was not answered: stored with why, handed to its requester.
    pub(super) fn query_failed(&mut self, f: QueryFailed) -> anyhow::Result<()> {
        warn!(id = f.query.id, query = %f.query.plan.query, reason = %f.reason, "analytics query not answered");
        self.store.record_analytics(&AnalyticsRow {
            round: None,
            origin: f.query.origin.as_string(),
            query: f.query.plan.query.to_string(),
            release: None,
            answered: 0,
            declined: 0,
            reason: Some(f.reason.clone()),
            recorded_at_ms: now_ms(),
        })?;
        if let Some(reply) = self.queries.waiting.remove(&f.query.id) {
            let _ = reply.send(Err(f.reason));
        }
        Ok(())
    }
}
