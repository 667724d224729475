//! The coordinator's read-only web endpoint: the status page, the privacy
//! report and `/metrics`, served by axum on hyper's HTTP/1.1, with limits.
//!
//! Limits: a request head larger than [`MAX_REQUEST_BYTES`] gets `431`; a
//! connection that does not finish within [`CONNECTION_TIMEOUT`] is
//! dropped; at most [`MAX_CONNECTIONS`] are served at once (further ones
//! are closed at once); each connection answers one request. Connections
//! still open at shutdown are closed.
//!
//! On a loopback address the endpoint speaks plain HTTP. On any other it
//! speaks HTTPS with the coordinator's certificate and requires a client
//! certificate of the federation CA whose name is on the operator list
//! ([`OperatorTls`]); anyone else gets `403`. Every page reads the store
//! read-only; the one thing an operator can do is ask an analytics query
//! ([`query`]: `POST /query`, `GET /query/<n>`), which the coordinator
//! answers with a noised release counted in its ledger.

mod chart;
mod evaluation;
mod page;
pub mod query;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics::{CONTENT_TYPE, Metrics};

pub use page::PageSource;

/// Largest request head (request line plus headers) read; hyper's smallest
/// buffer.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How long one connection may take to send its request and receive the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest number of connections served at once; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The `Content-Security-Policy` of every page: no script, no outside
/// resource, inline styles and `data:` images only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the handlers read.
#[derive(Debug)]
pub struct WebState {
    metrics: Arc<Metrics>,
    page: Option<PageSource>,
    queries: Option<query::WebQueries>,
}

impl WebState {
    /// `/metrics` only.
    pub fn metrics_only(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            page: None,
            queries: None,
        }
    }

    /// `/metrics`, the status page and the privacy report of `page`.
    pub fn with_page(metrics: Arc<Metrics>, page: PageSource) -> Self {
        Self {
            metrics,
            page: Some(page),
            queries: None,
        }
    }

    /// The same, answering operator queries too.
    pub fn with_queries(mut self, queries: query::WebQueries) -> Self {
        self.queries = Some(queries);
        self
    }
}

/// The routes: `/metrics`, and with a page source `/`, `/report.md` and
/// `/report.json`. Anything else is `404`; another method than GET `405`.
pub fn router(state: Arc<WebState>) -> Router {
    let mut app = Router::new().route("/metrics", get(metrics_handler));
    if state.page.is_some() {
        app = app
            .route("/", get(page_handler))
            .route("/report.md", get(report_markdown))
            .route("/report.json", get(report_json));
    }
    if state.queries.is_some() {
        app = app
            .route("/query", post(query_post))
            .route("/query/{id}", get(query_get));
    }
    app.with_state(state)
}

async fn query_post(State(state): State<Arc<WebState>>, body: String) -> Response {
    let Some(desk) = state.queries.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match query::post(desk, &body) {
        Ok((id, answer)) => {
            tokio::spawn(query::settle(Arc::clone(&state), id, answer));
            query::accepted(id)
        }
        Err(response) => *response,
    }
}

async fn query_get(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    match state.queries.as_ref() {
        Some(desk) => query::get(desk, id),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics_handler(State(state): State<Arc<WebState>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// Runs a blocking page renderer and answers with its text.
async fn rendered(
    state: Arc<WebState>,
    content_type: &'static str,
    render: fn(&PageSource) -> Result<String, String>,
) -> Response {
    let result = tokio::task::spawn_blocking(move || match &state.page {
        Some(source) => render(source),
        None => Err("no page configured".into()),
    })
    .await;
    let mut response = match result {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Ok(Err(e)) => {
            warn!(error = %e, "status page failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("the store cannot be read right now: {e}\n"),
            )
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn page_handler(State(state): State<Arc<WebState>>) -> Response {
    rendered(state, "text/html; charset=utf-8", page::render_page).await
}

async fn report_markdown(State(state): State<Arc<WebState>>) -> Response {
    rendered(
        state,
        "text/markdown; charset=utf-8",
        page::render_report_md,
    )
    .await
}

async fn report_json(State(state): State<Arc<WebState>>) -> Response {
    rendered(state, "application/json", page::render_report_json).await
}

/// Mutual TLS for a listener off loopback: the coordinator's certificate,
/// client certificates of the federation CA required, and the names that
/// may read.
#[derive(Clone)]
pub struct OperatorTls {
    acceptor: tokio_rustls::TlsAcceptor,
    operators: Arc<Vec<String>>,
}

impl std::fmt::Debug for OperatorTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorTls")
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}

impl OperatorTls {
    /// From the coordinator's TLS files: TLS 1.3, client certificates of
    /// the CA required, ALPN `http/1.1`; only `operators` may read.
    pub fn new(
        files: &tessera_certs::TlsFiles,
        operators: Vec<String>,
    ) -> Result<Self, tessera_certs::Error> {
        tessera_certs::install_crypto_provider();
        let material = files.load()?;
        let mut config = (*tessera_certs::server_config(&material)?).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            operators: Arc::new(operators),
        })
    }
}

/// Serves `app` on `listener` until `shutdown` completes, over mutual TLS
/// when `tls` is given (see the module documentation for the limits).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<OperatorTls>,
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
                        warn!(%peer, "web endpoint busy; closing connection");
                        drop(stream);
                        continue;
                    }
                    let app = app.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        match tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, peer, app, tls)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => debug!(%peer, error = %e, "web connection failed"),
                            Err(_) => debug!(%peer, "web connection timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "web endpoint could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<OperatorTls>,
) -> Result<(), BoxError> {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return http(TokioIo::new(stream), app).await;
    };
    let stream = tls.acceptor.accept(stream).await.inspect_err(|e| {
        warn!(%peer, reason = %tessera_certs::describe_tls_error(e), "web TLS handshake refused");
    })?;
    let name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| tessera_certs::peer_name_of_chain(chain).ok());
    let app = match name {
        Some(name) if tls.operators.contains(&name) => app,
        other => {
            warn!(%peer, name = ?other, "web request refused: not on the operator list");
            Router::new().fallback(|| async {
                (
                    StatusCode::FORBIDDEN,
                    "this certificate is not on the coordinator's operator list (web.operators)\n",
                )
            })
        }
    };
    http(TokioIo::new(stream), app).await
}

/// One HTTP/1.1 exchange on `io`, then the connection closes.
async fn http<I>(io: I, app: Router) -> Result<(), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(CONNECTION_TIMEOUT)
        .serve_connection(io, TowerToHyperService::new(app))
        .await?;
    Ok(())
}

/// File in `federation.output_dir` the page's bound address is written to
/// (for a page configured on port 0).
pub const WEB_ADDRESS_FILE: &str = "web_address";

/// Binds the listeners `settings` asks for (`[web] listen`, and
/// `federation.metrics_listen` for `/metrics` alone) and serves them until
/// `stop` changes. The page's bound address goes to
/// `output_dir/`[`WEB_ADDRESS_FILE`]. A page that cannot be bound is an
/// error; a metrics-only listener that cannot be bound is logged.
pub async fn start(
    settings: &crate::settings::Settings,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    start_with_queries(settings, metrics, stop, None).await
}

/// [`start`], with the status page also taking operator queries into
/// `queries` (see [`query`]).
pub async fn start_with_queries(
    settings: &crate::settings::Settings,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
    queries: Option<crate::driver::queries::QuerySender>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use anyhow::Context as _;
    let config = &settings.config;
    let files = tessera_certs::TlsFiles {
        ca: config.tls.ca.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
        crl: None,
    };
    let operators = config
        .web
        .as_ref()
        .map(|w| w.operators.clone())
        .unwrap_or_default();
    let tls_for = |addr: &SocketAddr| -> anyhow::Result<Option<OperatorTls>> {
        if crate::config::web::needs_operators(addr) {
            Ok(Some(
                OperatorTls::new(&files, operators.clone())
                    .context("the web endpoint's TLS configuration")?,
            ))
        } else {
            Ok(None)
        }
    };
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let mut tasks = Vec::new();
    if let Some(web) = &config.web {
        let listener = TcpListener::bind(web.listen)
            .await
            .with_context(|| format!("binding the status page at web.listen = {}", web.listen))?;
        let local = listener.local_addr()?;
        let dir = &config.federation.output_dir;
        let tmp = dir.join(format!("{WEB_ADDRESS_FILE}.tmp"));
        std::fs::write(&tmp, format!("{local}\n"))
            .and_then(|()| std::fs::rename(&tmp, dir.join(WEB_ADDRESS_FILE)))
            .with_context(|| format!("writing {}", dir.join(WEB_ADDRESS_FILE).display()))?;
        let tls = tls_for(&local)?;
        tracing::info!(address = %local, tls = tls.is_some(), "status page listening");
        let page = PageSource::new(
            settings.store.clone(),
            config.federation.name.clone(),
            config.privacy.delta,
            settings.max_epsilon,
            config.federation.rounds,
            web.refresh_seconds,
            Some(
                web.evaluation
                    .clone()
                    .unwrap_or_else(|| dir.join("rounds.csv")),
            ),
        );
        let mut state = WebState::with_page(Arc::clone(&metrics), page);
        if let Some(sender) = queries {
            let p = &config.privacy;
            let refusal =
                (p.enabled && p.placement != tessera_model::Placement::Central).then(|| {
                    format!(
                        "analytics queries are noised by the coordinator; this federation's noise \
                     placement is {} (see the README's \"Federated analytics\")",
                        p.placement
                    )
                });
            state = state.with_queries(query::WebQueries::new(sender, refusal));
        }
        let app = router(Arc::new(state));
        tasks.push(tokio::spawn(serve(
            listener,
            app,
            tls,
            until_stopped(stop.clone()),
        )));
    }
    if let Some(addr) = config.federation.metrics_listen {
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                let tls = tls_for(&addr)?;
                tracing::info!(address = %addr, tls = tls.is_some(), "metrics endpoint listening");
                let app = router(Arc::new(WebState::metrics_only(Arc::clone(&metrics))));
                tasks.push(tokio::spawn(serve(
                    listener,
                    app,
                    tls,
                    until_stopped(stop.clone()),
                )));
            }
            Err(e) => warn!(address = %addr, error = %e, "cannot bind the metrics endpoint"),
        }
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert(\"x&y\")</script>'"),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(escape("site-1"), "site-1");
    }
}
