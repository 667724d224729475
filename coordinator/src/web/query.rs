//! Operator queries on the web endpoint: `POST /query` queues an analytics
//! query in the running coordinator and answers at once with its number;
//! `GET /query/<n>` answers `202` while it waits for its round and `200`
//! with the release (or why there is none) once it is over. The
//! `tessera-coordinator query` command uses both.
//!
//! Who may ask is who may read the status page, checked by the listener
//! (`web::connection`): anyone on a loopback address, and off loopback only
//! a client certificate of the federation CA named in `web.operators`
//! (anyone else gets `403` before any route runs). Answering at once and
//! polling keeps every connection within the endpoint's connection
//! timeout, however long the query's round takes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::analytics::AnalyticsEntryText;
use crate::driver::queries::{QueryRequest, QuerySender};

/// Largest request body of `POST /query` (the query text is at most 4096
/// characters).
pub const MAX_QUERY_BODY: usize = 16 * 1024;

/// Most answers kept for `GET /query/<n>` (the oldest go first).
const KEPT_ANSWERS: usize = 1024;

/// What `GET /query/<n>` answers once the query is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum QueryOutcome {
    /// Waiting for its round, or in it.
    Pending,
    /// Released: the answer with its noise, ε and δ, its round, and how
    /// many sites answered and declined.
    Released {
        /// Aggregation number of its round.
        round: u64,
        /// The release.
        release: tessera_analytics::Release,
        /// Sites whose vector is in the sum.
        answered: usize,
        /// Sites that declined (count only).
        declined: usize,
        /// ε of the coordinator's ledger after it.
        epsilon_after: Option<f64>,
    },
    /// Not answered; nothing released or counted.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The query desk of the web endpoint.
#[derive(Debug)]
pub struct WebQueries {
    sender: QuerySender,
    /// Why queries are refused in this federation (None: they are asked).
    refusal: Option<String>,
    next: AtomicU64,
    outcomes: Mutex<HashMap<u64, QueryOutcome>>,
}

impl WebQueries {
    /// Queries go to the driver through `sender`; with `refusal`, every
    /// one is refused with that reason.
    pub fn new(sender: QuerySender, refusal: Option<String>) -> Self {
        Self {
            sender,
            refusal,
            next: AtomicU64::new(0),
            outcomes: Mutex::new(HashMap::new()),
        }
    }

    fn set(&self, id: u64, outcome: QueryOutcome) {
        if let Ok(mut map) = self.outcomes.lock() {
            if map.len() >= KEPT_ANSWERS
                && let Some(&oldest) = map.keys().min()
            {
                map.remove(&oldest);
            }
            map.insert(id, outcome);
        }
    }

    fn get(&self, id: u64) -> Option<QueryOutcome> {
        self.outcomes.lock().ok()?.get(&id).cloned()
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The driver's answer to come, of query `id`.
pub(super) type Pending = (
    u64,
    oneshot::Receiver<Result<crate::round::QueryReleased, String>>,
);

/// `POST /query`: a JSON object with the keys of an `[[analytics]]` entry
/// (`query`, `epsilon` or `noise_multiplier`, `max_rows`): the query is
/// queued (the caller answers `202` with `{"id": n}`), or the response
/// naming what is wrong.
pub(super) fn post(desk: &WebQueries, body: &str) -> Result<Pending, Box<Response>> {
    if let Some(reason) = &desk.refusal {
        return Err(Box::new(text(StatusCode::CONFLICT, format!("{reason}\n"))));
    }
    if body.len() > MAX_QUERY_BODY {
        return Err(Box::new(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a query request is at most {MAX_QUERY_BODY} bytes\n"),
        )));
    }
    let entry: AnalyticsEntryText = serde_json::from_str(body).map_err(|e| {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("bad query request: {e}\n"),
        ))
    })?;
    let plan = entry
        .plan()
        .map_err(|e| Box::new(text(StatusCode::BAD_REQUEST, format!("{e}\n"))))?;
    let id = desk.next.fetch_add(1, Ordering::Relaxed) + 1;
    let (reply, answer) = oneshot::channel();
    if desk.sender.try_send(QueryRequest { plan, reply }).is_err() {
        return Err(Box::new(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator has too many queries waiting or is stopping; try again later\n".into(),
        )));
    }
    desk.set(id, QueryOutcome::Pending);
    Ok((id, answer))
}

/// The `202` of an accepted query.
pub(super) fn accepted(id: u64) -> Response {
    json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id }))
}

/// Waits for the driver's answer to query `id` and keeps it for `GET`.
pub(super) async fn settle(
    desk: std::sync::Arc<super::WebState>,
    id: u64,
    answer: oneshot::Receiver<Result<crate::round::QueryReleased, String>>,
) {
    let outcome = match answer.await {
        Ok(Ok(r)) => QueryOutcome::Released {
            round: r.round,
            release: r.release,
            answered: r.answered,
            declined: r.declined,
            epsilon_after: r.epsilon_after,
        },
        Ok(Err(reason)) => QueryOutcome::Failed { reason },
        Err(_) => QueryOutcome::Failed {
            reason: "the federation ended before the query's round".into(),
        },
    };
    if let Some(q) = desk.queries.as_ref() {
        q.set(id, outcome);
    }
}

/// `GET /query/<n>`: `202` while pending, `200` once over, `404` unknown.
pub(super) fn get(desk: &WebQueries, id: u64) -> Response {
    match desk.get(id) {
        Some(QueryOutcome::Pending) => json(StatusCode::ACCEPTED, &QueryOutcome::Pending),
        Some(outcome) => json(StatusCode::OK, &outcome),
        None => text(StatusCode::NOT_FOUND, format!("no query {id}\n")),
    }
}
