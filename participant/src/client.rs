//! The participant's I/O shell around the site machine: it reads the data
//! file, opens the SQLite ledger, draws randomness from the operating
//! system and the time from the system clock, then connects over mutual
//! TLS, runs sessions and reconnects with exponential backoff when the
//! coordinator goes away, until the federation ends.

use std::time::{Duration, Instant};

use anyhow::Context;
use tessera_proto::v1::federation_client::FederationClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Endpoint;
use tracing::{error, info, warn};

use rand::SeedableRng;
use tessera_proto::v1::ParticipantMessage;

use crate::config::ParticipantConfig;
use crate::data::LocalData;
use crate::ledger::SiteLedger;
use crate::site::{Action, Site, SiteParts, SystemClock};

/// Largest gRPC message accepted or sent.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Exit code when the coordinator refuses this participant (certificate, allow-list).
pub const EXIT_REFUSED: u8 = 5;
/// Exit code when the coordinator stayed unreachable past the give-up time.
pub const EXIT_UNREACHABLE: u8 = 6;
/// Sees every message after the shell has queued it for the coordinator.
/// Production runs without one; simulations use it to inject faults (a
/// site that vanishes at a chosen point of the protocol).
pub trait SendHook: Send {
    /// Called after `message` was queued for sending.
    fn sent(&mut self, message: &ParticipantMessage);

    /// Called before `message` is queued. `true` makes the site leave the
    /// round in progress here instead of sending it, as a site whose
    /// connection breaks and comes back would: the shell opens a new
    /// session and, once the coordinator has taken it (it waits while the
    /// old one is in the round), closes the old one. The coordinator thus
    /// sees the site drop at exactly this stage, and lets the new session
    /// in when the old one closes, in time for the next round.
    fn leave_before(&mut self, _message: &ParticipantMessage) -> bool {
        false
    }

    /// Called first, before `message` is queued: a simulation's hostile
    /// site may alter what it sends here (a site is free to send anything;
    /// the coordinator and the other sites must cope). Leaves it unchanged
    /// by default.
    fn rewrite(&mut self, _message: &mut ParticipantMessage) {}
}

/// Sites of this process that may handle a message at once: four per core.
///
/// A participant process runs one site, which never waits here. A
/// simulation runs many sites as tasks of one runtime: without a bound,
/// hundreds of them would each hold a thread busy with training or secure
/// aggregation while the sessions' keep-alive pings and messages wait for a
/// share of the same cores, and the coordinator would drop them as
/// unresponsive. Waiting for a slot is asynchronous, so the runtime's
/// workers stay free for I/O.
///
/// Why more than one per core: handling a message is not all computing. A
/// site writes its ledger (a synchronous SQLite commit, one `fsync`) before
/// its masked input leaves, and a slot held across that wait leaves its core
/// idle. With one slot per core a thousand sites' commits ran two at a time
/// (about 4 ms each here); with more slots they overlap, and the file
/// system groups concurrent commits. Four per core keeps the cores busy
/// through those waits while the threads competing with the runtime's
/// workers stay few.
const SLOTS_PER_CORE: usize = 4;

fn compute_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores * SLOTS_PER_CORE)
    })
}

/// The gRPC endpoint of the coordinator at `url` (`https://host:port`).
/// TLS is the connector's ([`crate::tls::Connector`]); tonic is handed the
/// same address as `http://` so that it does not add TLS of its own.
fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let plain = match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_owned(),
    };
    Ok(Endpoint::from_shared(plain)
        .with_context(|| format!("invalid coordinator URL {url}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(20)))
}

/// What a simulation may hand the shell; production uses the default
/// (no hook, the operating system's randomness).
#[derive(Default)]
pub struct ShellOptions {
    /// Sees (and may stop) every message sent.
    pub hook: Option<Box<dyn SendHook>>,
    /// The site's randomness (keys, masks, shares, stochastic rounding).
    /// A seeded generator makes the masks predictable: NOT secure, for
    /// reproducing simulations only.
    pub rng: Option<crate::site::SecureRng>,
}

/// A session the site is leaving, kept open until its successor is
/// established.
type Leaving = Box<dyn Send>;

enum SessionEnd {
    Exit(u8, String),
    Lost(String),
    Refused(String),
    /// The send hook made the site leave the round (see [`SendHook::leave_before`]).
    LeftRound(Leaving),
}

/// Runs the participant until the federation ends; returns the exit code.
pub async fn run(config: ParticipantConfig) -> anyhow::Result<u8> {
    run_with(config, None).await
}

/// [`run`], with a hook that sees every message sent.
pub async fn run_with(
    config: ParticipantConfig,
    hook: Option<Box<dyn SendHook>>,
) -> anyhow::Result<u8> {
    run_with_options(
        config,
        ShellOptions {
            hook,
            ..ShellOptions::default()
        },
    )
    .await
}

/// [`run`], with a simulation's options.
pub async fn run_with_options(
    config: ParticipantConfig,
    options: ShellOptions,
) -> anyhow::Result<u8> {
    let ShellOptions { mut hook, rng } = options;
    tessera_certs::install_crypto_provider();
    let material = config
        .tls
        .load()
        .context("loading this participant's TLS material")?;
    let server_name = config.server_name();
    let connector = crate::tls::Connector::new(
        tessera_certs::client_config(&material).context("TLS configuration")?,
        &server_name,
    )?;
    let endpoint = endpoint(&config.participant.coordinator)?;
    std::fs::create_dir_all(&config.participant.state_dir)
        .with_context(|| format!("creating {}", config.participant.state_dir.display()))?;
    let ledger = SiteLedger::open(&config.ledger_path())?;
    let mut data = LocalData::read(&config.participant.data).with_context(|| {
        format!(
            "reading this site's data {}",
            config.participant.data.display()
        )
    })?;
    if let Some(path) = &config.evaluation.data {
        let held_out = LocalData::read(path)
            .with_context(|| format!("reading this site's held-out rows {}", path.display()))?;
        data = data.with_held_out(held_out);
    }
    let reconnect = config.reconnect.clone();
    let key_signing = match crate::signing::KeySigning::from_material(&material) {
        Ok(signing) => Some(signing),
        Err(e) => {
            warn!(error = %e, "advertised keys cannot be signed; rounds with signed keys will be declined");
            None
        }
    };
    let mut site = Site::new(SiteParts {
        policy: config.site_policy(),
        data,
        ledger: Box::new(ledger),
        trainer: config.trainer(),
        rng: rng.unwrap_or_else(|| Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng()))),
        clock: Box::new(SystemClock),
        key_signing,
    })
    .with_round_memory(Box::new(crate::rounds::RoundLog::open(
        &config.rounds_path(),
    )?));

    let mut backoff = reconnect.initial();
    let mut unreachable_since = Instant::now();
    // Whether a session with the coordinator ever got going.
    let mut joined = false;
    // The session being left, open until the next one is established.
    let mut leaving: Option<Leaving> = None;
    loop {
        let end = match endpoint.connect_with_connector(connector.clone()).await {
            Ok(channel) => {
                let end = session(&mut site, channel, &mut hook, &mut joined, &mut leaving).await;
                if matches!(end, SessionEnd::Lost(_)) {
                    // A session that got going resets the clock and the backoff.
                    unreachable_since = Instant::now();
                    backoff = reconnect.initial();
                }
                end
            }
            Err(e) => SessionEnd::Lost(format!(
                "cannot connect to {}: {}",
                server_name,
                tessera_certs::describe_tls_error(&e)
            )),
        };
        match end {
            SessionEnd::Exit(code, reason) => {
                if code == 0 {
                    info!(%reason, "done");
                } else {
                    error!(%reason, "stopping");
                }
                return Ok(code);
            }
            SessionEnd::Refused(reason) => {
                error!(%reason, "the coordinator refused this participant");
                return Ok(EXIT_REFUSED);
            }
            SessionEnd::LeftRound(old) => {
                site.connection_lost();
                leaving = Some(old);
            }
            SessionEnd::Lost(reason) => {
                leaving = None;
                site.connection_lost();
                if unreachable_since.elapsed() > reconnect.give_up() {
                    error!(%reason, "coordinator unreachable for too long; giving up");
                    return Ok(EXIT_UNREACHABLE);
                }
                warn!(%reason, retry_in = ?backoff, "connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(reconnect.max());
            }
        }
    }
}

/// Whether the connection was dropped without a reason: the peer closed or
/// reset it, with no TLS alert or certificate error in the error chain.
/// From a coordinator that already accepted this participant, that is the
/// coordinator going down (a crash, a restart), not a refusal.
fn dropped_without_reason(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut dropped = false;
    let mut current = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return false;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            dropped |= matches!(
                io.kind(),
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
            );
            if let Some(inner) = io.get_ref() {
                current = Some(inner as &(dyn std::error::Error + 'static));
                continue;
            }
        }
        current = err.source();
    }
    dropped
}

/// Whether an RPC failure means the coordinator refused us for good.
fn refusal(status: &tonic::Status) -> Option<String> {
    match status.code() {
        // Not allowed, or another protocol version: reconnecting cannot help.
        Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => {
            Some(status.message().to_owned())
        }
        _ => {
            let described = tessera_certs::describe_tls_error(status);
            let lower = described.to_lowercase();
            (lower.contains("certificate")
                || lower.contains("unknown ca")
                || lower.contains("alert"))
            .then_some(described)
        }
    }
}

async fn session(
    site: &mut Site,
    channel: tonic::transport::Channel,
    hook: &mut Option<Box<dyn SendHook>>,
    joined: &mut bool,
    leaving: &mut Option<Leaving>,
) -> SessionEnd {
    let mut client = FederationClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(256);
    if tx.send(site.hello_with_budget()).await.is_err() {
        return SessionEnd::Lost("session closed".into());
    }
    let mut inbound = match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return match refusal(&status) {
                Some(reason) if !(*joined && dropped_without_reason(&status)) => {
                    SessionEnd::Refused(reason)
                }
                _ => SessionEnd::Lost(format!("session failed: {}", status.message())),
            };
        }
    };
    *joined = true;
    // The coordinator has this session: the one left behind (if any) can
    // close now, and the coordinator drops it from its round.
    *leaving = None;
    info!("connected to the coordinator");
    // The site's input waits here for the coordinator's grant.
    let mut uploads = crate::upload::UploadQueue::default();
    loop {
        let message = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return SessionEnd::Lost("the coordinator closed the session".into()),
            Err(status) => {
                return match refusal(&status) {
                    Some(reason)
                        if status.code() != Code::Unknown && !dropped_without_reason(&status) =>
                    {
                        SessionEnd::Refused(reason)
                    }
                    _ => SessionEnd::Lost(format!("session error: {}", status.message())),
                };
            }
        };
        match uploads.inbound(&message) {
            crate::upload::Inbound::Grant(now) => {
                for m in now {
                    if !send(&tx, m, hook).await {
                        return SessionEnd::Lost("session closed while sending".into());
                    }
                }
                continue;
            }
            crate::upload::Inbound::Site { withdraw: Some(w) } => {
                if !send(&tx, w, hook).await {
                    return SessionEnd::Lost("session closed while sending".into());
                }
            }
            crate::upload::Inbound::Site { withdraw: None } => {}
        }
        // Local training and the share stage can take a while: keep the
        // runtime's other work going, with a few sites per core at most
        // handling a message at once (see `compute_slots`).
        {
            let _slot = compute_slots().acquire().await;
            tokio::task::block_in_place(|| site.handle(message));
        }
        while let Some(action) = site.poll_action() {
            match action {
                Action::Send(mut m) => {
                    if let Some(h) = hook.as_mut() {
                        h.rewrite(&mut m);
                    }
                    if hook.as_mut().is_some_and(|h| h.leave_before(&m)) {
                        while site.poll_action().is_some() {}
                        return SessionEnd::LeftRound(Box::new((tx, inbound, client)));
                    }
                    for m in uploads.outgoing(m) {
                        if !send(&tx, m, hook).await {
                            return SessionEnd::Lost("session closed while sending".into());
                        }
                    }
                }
                Action::Exit { code, reason } => {
                    // Give queued messages (e.g. a task rejection) a moment to leave.
                    drop(tx);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return SessionEnd::Exit(code, reason);
                }
            }
        }
        // The site has handed over everything this message made it send:
        // an input vector now held is whole, and its request can name its
        // size.
        if let Some(request) = uploads.flush()
            && !send(&tx, request, hook).await
        {
            return SessionEnd::Lost("session closed while sending".into());
        }
    }
}

/// Queues `m` for the coordinator and shows it to the hook; `false` if the
/// session is closed.
async fn send(
    tx: &mpsc::Sender<ParticipantMessage>,
    m: ParticipantMessage,
    hook: &mut Option<Box<dyn SendHook>>,
) -> bool {
    let seen = hook.as_ref().map(|_| m.clone());
    if tx.send(m).await.is_err() {
        return false;
    }
    if let (Some(h), Some(m)) = (hook.as_mut(), seen) {
        h.sent(&m);
    }
    true
}
