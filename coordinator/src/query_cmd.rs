//! `tessera-coordinator query`: asks the running coordinator an analytics
//! query through its web endpoint (`POST /query`, then `GET /query/<n>`
//! until the release; see `web::query`) and prints the answer with its
//! noise scale and ε.
//!
//! The endpoint is the status page's (`[web] listen`, or the address the
//! running coordinator wrote to `output_dir/web_address`), with the same
//! authorisation: plain HTTP on a loopback address, otherwise mutual TLS
//! with an operator certificate (`--cert`, `--key`) of the federation CA
//! named in `web.operators`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::CoordinatorConfig;
use crate::config::analytics::AnalyticsEntryText;
use crate::web::query::QueryOutcome;

/// The options of `query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Configuration file (TOML) of the running coordinator.
    #[arg(long)]
    pub config: PathBuf,
    /// The query, e.g. "count where age > 65 and cp = 4".
    pub query: String,
    /// ε of a count, sum, mean or top k (pure differential privacy).
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// σ of a histogram's discrete Gaussian, per unit of row cap.
    #[arg(long)]
    pub noise_multiplier: Option<f64>,
    /// Most rows one site contributes (the sensitivity).
    #[arg(long, default_value_t = crate::config::analytics::DEFAULT_MAX_ROWS)]
    pub max_rows: u64,
    /// Operator certificate (PEM) for an endpoint off loopback.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name the coordinator's certificate is checked against (TLS only).
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Give up waiting for the release after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How to reach the endpoint.
struct Endpoint {
    address: SocketAddr,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

/// An HTTP answer: status code and body.
struct Answer {
    status: u16,
    body: String,
}

/// Largest answer read (a release of a 1000-bin histogram is far smaller).
const MAX_ANSWER_BYTES: u64 = 4 << 20;

/// Runs the command: the release is printed, or why there is none.
pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(&args.config)?;
    let entry = AnalyticsEntryText {
        query: args.query.clone(),
        epsilon: args.epsilon,
        noise_multiplier: args.noise_multiplier,
        max_rows: args.max_rows,
    };
    // Checked here first, so a typo is shown with its position at once.
    entry
        .plan()
        .map_err(|e| anyhow::anyhow!("{}", e.replacen("analytics.", "--", 1)))?;
    let endpoint = endpoint(&config, &args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(ask(&endpoint, &entry, args.timeout_seconds))?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    match outcome {
        QueryOutcome::Released {
            round,
            release,
            answered,
            declined,
            epsilon_after,
        } => {
            if !args.json {
                println!("query:   {}", release.query);
                println!("answer:  {}", release.answer.summary());
                for n in &release.noise {
                    println!(
                        "noise:   {} — {}, scale {:.4}, std {:.4}",
                        n.part,
                        crate::privacy_report::mechanism_name(n.mechanism),
                        n.scale,
                        n.std
                    );
                }
                println!("ε = {} (δ = {})", release.epsilon, release.delta);
                println!(
                    "sites:   {answered} answered, {declined} declined (round {round}){}",
                    epsilon_after
                        .map_or(String::new(), |e| format!("; the ledger's ε is now {e:.4}"))
                );
            }
            Ok(())
        }
        QueryOutcome::Failed { reason } => bail!("the query was not answered: {reason}"),
        QueryOutcome::Pending => bail!("the query is still waiting"),
    }
}

fn endpoint(config: &CoordinatorConfig, args: &QueryArgs) -> anyhow::Result<Endpoint> {
    let Some(web) = &config.web else {
        bail!(
            "{} has no [web] section: the running coordinator takes queries on its status page's listener",
            args.config.display()
        );
    };
    // The address a coordinator on port 0 bound, else the configured one.
    let written = config
        .federation
        .output_dir
        .join(crate::web::WEB_ADDRESS_FILE);
    let address = std::fs::read_to_string(&written)
        .ok()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(web.listen);
    if !crate::config::web::needs_operators(&address) {
        return Ok(Endpoint { address, tls: None });
    }
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        bail!(
            "the status page at {address} is not on loopback: give an operator certificate \
             with --cert and --key (its name must be in web.operators)"
        );
    };
    tessera_certs::install_crypto_provider();
    let files = tessera_certs::TlsFiles {
        ca: config.tls.ca.clone(),
        cert: cert.clone(),
        key: key.clone(),
        crl: None,
    };
    let material = files.load()?;
    let mut client = (*tessera_certs::client_config(&material)?).clone();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(args.server_name.clone())
        .with_context(|| format!("--server-name {:?}", args.server_name))?;
    Ok(Endpoint {
        address,
        tls: Some((tokio_rustls::TlsConnector::from(Arc::new(client)), name)),
    })
}

async fn ask(
    endpoint: &Endpoint,
    entry: &AnalyticsEntryText,
    timeout_seconds: u64,
) -> anyhow::Result<QueryOutcome> {
    let body = serde_json::to_string(entry)?;
    let posted = request(endpoint, "POST", "/query", &body).await?;
    if posted.status != 202 {
        bail!(
            "the coordinator refused the query ({}): {}",
            posted.status,
            posted.body.trim()
        );
    }
    let id = serde_json::from_str::<serde_json::Value>(&posted.body)
        .ok()
        .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
        .context("the coordinator's answer names no query number")?;
    let until = Instant::now() + Duration::from_secs(timeout_seconds);
    // Polls often at first (a query round on a few sites takes tens of
    // milliseconds), then every 200 ms.
    let mut pause = Duration::from_millis(10);
    loop {
        let got = request(endpoint, "GET", &format!("/query/{id}"), "").await?;
        match got.status {
            200 => {
                return serde_json::from_str(&got.body)
                    .context("the coordinator's answer is not a query outcome");
            }
            202 if Instant::now() < until => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            202 => bail!("no release within {timeout_seconds} s (query {id} is still waiting)"),
            s => bail!("the coordinator answered {s}: {}", got.body.trim()),
        }
    }
}

async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(endpoint.address)
        .await
        .with_context(|| format!("connecting to the status page at {}", endpoint.address))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        endpoint.address,
        body.len()
    );
    match &endpoint.tls {
        None => exchange(tcp, &head, body).await,
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| anyhow::anyhow!(tessera_certs::describe_tls_error(&e)))
                .with_context(|| format!("TLS with the status page at {}", endpoint.address))?;
            exchange(tls, &head, body).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
    body: &str,
) -> anyhow::Result<Answer> {
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut raw)
        .await
        .context("reading the coordinator's answer")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the coordinator's answer is not HTTP")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the coordinator's answer has no status")?;
    Ok(Answer {
        status,
        body: body.to_owned(),
    })
}
