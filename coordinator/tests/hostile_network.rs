//! The coordinator's port under hostile traffic, in process on loopback:
//! idle, garbage and stalled connections do not lock sites out; HTTP/2 is
//! bounded per connection; a participant whose certificate is revoked
//! while it is connected is dropped, and refused from then on; input is
//! read only under an upload grant, a few sites at a time, and a site
//! that sends without one or sits on one loses its session.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_coordinator::server::{self, AcceptLimits};
use tessera_coordinator::settings::Settings;
use tessera_proto::v1::federation_client::FederationClient;
use tessera_proto::v1::{Hello, ParticipantMessage, participant_message::Body};
use tessera_testkit::pki::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// A coordinator serving on loopback until the guard is dropped.
struct Coordinator {
    addr: SocketAddr,
    pki: TestPki,
    crl: PathBuf,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

fn write_config(dir: &Path, pki: &TestPki, crl: &Path) -> PathBuf {
    let path = dir.join("coordinator.toml");
    let p = |f: &str| pki.dir.join(f).display().to_string();
    std::fs::write(
        &path,
        format!(
            r#"
[federation]
name = "hostile"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 1
output_dir = "{out}"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
crl = "{crl}"
[task]
features = ["a"]
label = "y"
positive = "> 0"
[privacy]
enabled = false
"#,
            out = dir.join("out").display(),
            ca = p("ca.crt"),
            cert = p("coordinator.crt"),
            key = p("coordinator.key"),
            crl = crl.display(),
        ),
    )
    .unwrap();
    path
}

async fn start(limits: AcceptLimits) -> Coordinator {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path().join("pki"), &["a", "b", "c", "gone"]);
    // A CRL from the start (revoking a participant that never connects).
    let crl = tessera_certs::revoke(&pki.dir, "gone").unwrap().crl;
    let config = write_config(dir.path(), &pki, &crl);
    let settings = Arc::new(Settings::load(&config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let _ = server::run_with_limits(settings, listener, limits, shutdown).await;
    });
    Coordinator {
        addr,
        pki,
        crl,
        _stop: stop,
        _dir: dir,
    }
}

fn connector(pki: &TestPki, name: &str) -> TlsConnector {
    let material = pki.files_for(name).load().unwrap();
    TlsConnector::from(tessera_certs::client_config(&material).unwrap())
}

/// A full TLS handshake as participant `name`; how long it took.
async fn handshake(c: &Coordinator, name: &str) -> std::io::Result<Duration> {
    let t = Instant::now();
    let tcp = TcpStream::connect(c.addr).await?;
    let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector(&c.pki, name).connect(server, tcp).await?;
    // TLS 1.3: the client finishes first; a refusal arrives as an alert.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await?;
    let mut header = [0u8; 9];
    tls.read_exact(&mut header).await?;
    Ok(t.elapsed())
}

/// Whether the server closes `tcp` within `limit` (EOF or reset).
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// 300 idle connections from one address (measured before: every TLS
/// handshake then timed out, because 256 handshake slots waited 10 s each
/// and the accept loop waited for a slot). Now the address gets at most
/// its share of slots, idle ones are closed after the first-byte deadline,
/// and a site on another address gets in at once.
#[test]
fn idle_connections_do_not_lock_sites_out() {
    runtime().block_on(async {
        let c = start(AcceptLimits::default()).await;
        let mut idle = Vec::new();
        for _ in 0..300 {
            let s = TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            idle.push(s.connect(c.addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let took = tokio::time::timeout(Duration::from_secs(3), handshake(&c, "a"))
            .await
            .expect("a valid handshake completes while idle connections are open")
            .unwrap();
        assert!(took < Duration::from_secs(2), "handshake took {took:?}");
        // Every idle connection is closed: over the per-address share at
        // once, the rest at the first-byte deadline.
        let deadline = AcceptLimits::default().first_byte + Duration::from_secs(2);
        for tcp in &mut idle {
            assert!(
                closed_within(tcp, deadline).await,
                "an idle connection stayed open"
            );
        }
        assert!(handshake(&c, "b").await.is_ok());
    });
}

/// Garbage before TLS, a handshake that stops half-way, and garbage after a
/// complete handshake: each connection is closed, the port keeps serving.
#[test]
fn garbage_and_stalled_handshakes_are_dropped() {
    runtime().block_on(async {
        let limits = AcceptLimits {
            handshake: Duration::from_secs(1),
            ..AcceptLimits::default()
        };
        let c = start(limits).await;
        let mut garbage = TcpStream::connect(c.addr).await.unwrap();
        garbage.write_all(&[0x47; 4096]).await.unwrap();
        assert!(closed_within(&mut garbage, Duration::from_secs(3)).await);

        // A TLS record header announcing a handshake, then nothing.
        let mut stalled = Vec::new();
        for _ in 0..50 {
            let mut s = TcpStream::connect(c.addr).await.unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
            stalled.push(s);
        }
        assert!(
            handshake(&c, "a").await.is_ok(),
            "served while handshakes stall"
        );
        for s in &mut stalled {
            assert!(closed_within(s, Duration::from_secs(4)).await);
        }

        // Truncated and garbage bytes after the handshake: HTTP/2 refuses them.
        let tcp = TcpStream::connect(c.addr).await.unwrap();
        let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector(&c.pki, "b").connect(server, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection was closed");
        assert!(handshake(&c, "a").await.is_ok());
    });
}

/// The server's HTTP/2 SETTINGS bound concurrent streams and the header
/// list per connection (tonic sets neither by default).
#[test]
fn http2_is_bounded_per_connection() {
    runtime().block_on(async {
        let c = start(AcceptLimits::default()).await;
        let tcp = TcpStream::connect(c.addr).await.unwrap();
        let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector(&c.pki, "a").connect(server, tcp).await.unwrap();
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut header = [0u8; 9];
        tls.read_exact(&mut header).await.unwrap();
        assert_eq!(header[3], 0x04, "the server's first frame is SETTINGS");
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).await.unwrap();
        let settings: Vec<(u16, u32)> = payload
            .chunks_exact(6)
            .map(|s| {
                (
                    u16::from_be_bytes([s[0], s[1]]),
                    u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                )
            })
            .collect();
        assert!(
            settings.contains(&(0x3, server::MAX_STREAMS_PER_CONNECTION)),
            "{settings:?}"
        );
        assert!(
            settings.contains(&(0x6, server::MAX_HEADER_LIST_BYTES)),
            "{settings:?}"
        );
        assert!(
            settings.contains(&(0x4, server::RECEIVE_WINDOW_BYTES)),
            "{settings:?}"
        );
    });
}

/// A gRPC channel to the coordinator as participant `name`, over the
/// project's TLS 1.3 client policy.
async fn channel(c: &Coordinator, name: &str) -> tonic::transport::Channel {
    let addr = c.addr;
    let tls = connector(&c.pki, name);
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower_fn(move || {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let stream = tls.connect(server, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

/// A connector made of a closure (the URI is ignored).
fn tower_fn<F, Fut, T>(f: F) -> TowerFn<F>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    TowerFn(f)
}

#[derive(Clone)]
struct TowerFn<F>(F);

impl<F, Fut, T> tower_service::Service<tonic::codegen::http::Uri> for TowerFn<F>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>> + Send + 'static,
{
    type Response = T;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<T>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        Box::pin((self.0)())
    }
}

/// A session of participant `name` opened with a Hello of protocol
/// `version`. Returns the sending side and the inbound stream.
async fn open_session(
    c: &Coordinator,
    name: &str,
    version: u32,
) -> (
    tokio::sync::mpsc::Sender<ParticipantMessage>,
    tonic::Streaming<tessera_proto::v1::CoordinatorMessage>,
) {
    let ch = channel(c, name).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ParticipantMessage {
        body: Some(Body::Hello(Hello {
            protocol_version: version,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let inbound = FederationClient::new(ch)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, inbound)
}

/// A session of participant `name`: its Hello sent and the coordinator's
/// welcome received. Returns the sending side and the inbound stream.
async fn session(
    c: &Coordinator,
    name: &str,
) -> (
    tokio::sync::mpsc::Sender<ParticipantMessage>,
    tonic::Streaming<tessera_proto::v1::CoordinatorMessage>,
) {
    let (tx, mut inbound) = open_session(c, name, tessera_proto::PROTOCOL_VERSION).await;
    let welcome = inbound.message().await.unwrap().unwrap();
    assert!(welcome.body.is_some());
    (tx, inbound)
}

/// A participant that speaks another protocol version is refused at its
/// Hello with both versions named (it cannot heal by reconnecting), and
/// the coordinator goes on serving the others.
#[test]
fn another_protocol_version_is_refused_at_hello() {
    runtime().block_on(async {
        let c = start(AcceptLimits::default()).await;
        let (_tx, mut inbound) = open_session(&c, "a", tessera_proto::PROTOCOL_VERSION + 7).await;
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the session ends within seconds");
        let status = end.expect_err("refused with an error");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        let wanted = format!(
            "protocol version {}, this coordinator version {}",
            tessera_proto::PROTOCOL_VERSION + 7,
            tessera_proto::PROTOCOL_VERSION
        );
        assert!(status.message().contains(&wanted), "{status:?}");
        // Another participant speaking this version is welcome.
        let (_tx, _b) = session(&c, "b").await;
    });
}

/// A hospital leaving the federation: its certificate is revoked while it
/// is connected. The coordinator sees the CRL change, closes the session
/// with "revoked" (before any next round), and refuses new handshakes
/// under that certificate; other participants stay.
#[test]
fn a_connected_participant_is_dropped_when_revoked() {
    runtime().block_on(async {
        let c = start(AcceptLimits::default()).await;
        let (_tx_a, mut a) = session(&c, "a").await;
        let (_tx_b, mut b) = session(&c, "b").await;

        tessera_certs::revoke(&c.pki.dir, "a").unwrap();
        assert!(c.crl.exists());
        let end = tokio::time::timeout(Duration::from_secs(5), a.message())
            .await
            .expect("the revoked session is closed within seconds");
        let status = end.expect_err("closed with an error");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("revoked"), "{status:?}");
        assert!(
            handshake(&c, "a").await.is_err(),
            "a new handshake is refused"
        );

        // b is still connected and still welcome.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), b.message())
                .await
                .is_err(),
            "b's session is untouched"
        );
        assert!(handshake(&c, "b").await.is_ok());
    });
}

/// A message asking for an upload grant.
/// A request for an upload of `bytes` bytes of element data.
fn upload_request(round: u64, bytes: u64) -> ParticipantMessage {
    ParticipantMessage {
        body: Some(Body::UploadRequest(tessera_proto::v1::UploadRequest {
            round,
            bytes,
        })),
    }
}

/// An input chunk of `elements` 4-byte elements of a vector of `total`.
fn input_chunk(round: u64, offset: u64, elements: usize, total: u64) -> ParticipantMessage {
    use tessera_proto::v1::{ChunkPurpose, VectorChunk};
    ParticipantMessage {
        body: Some(Body::Chunk(VectorChunk {
            round,
            purpose: ChunkPurpose::MaskedInput as i32,
            offset,
            total,
            data: vec![0u8; elements * 4].into(),
        })),
    }
}

/// The next message on `inbound` within `limit`: `Some(Ok(grant round))`
/// for an upload grant, `Some(Err(status))` if the session ended with an
/// error, `None` if nothing came.
async fn next_grant(
    inbound: &mut tonic::Streaming<tessera_proto::v1::CoordinatorMessage>,
    limit: Duration,
) -> Option<Result<u64, tonic::Status>> {
    use tessera_proto::v1::coordinator_message::Body as In;
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, inbound.message()).await {
            Err(_) => return None,
            Ok(Ok(Some(m))) => match m.body {
                Some(In::UploadGrant(g)) => return Some(Ok(g.round)),
                _ => continue,
            },
            Ok(Ok(None)) => return Some(Err(tonic::Status::unavailable("closed"))),
            Ok(Err(status)) => return Some(Err(status)),
        }
    }
}

/// The session's end within `limit` (its error, or "closed").
async fn session_end(
    inbound: &mut tonic::Streaming<tessera_proto::v1::CoordinatorMessage>,
    limit: Duration,
) -> tonic::Status {
    let end = tokio::time::timeout(limit, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return tonic::Status::unavailable("closed"),
                Err(status) => return status,
            }
        }
    })
    .await;
    end.expect("the session ends in time")
}

/// Input goes by grant: of three sites asking at once, `UPLOADS_AT_ONCE`
/// (two) are granted; the third waits, holding its bytes, and is granted
/// as soon as one of the others has sent its last chunk.
#[test]
fn uploads_are_granted_a_few_at_a_time() {
    use tessera_coordinator::service::UPLOADS_AT_ONCE;
    assert_eq!(UPLOADS_AT_ONCE, 2);
    runtime().block_on(async {
        let c = start(AcceptLimits::default()).await;
        let (tx_a, mut a) = session(&c, "a").await;
        let (tx_b, mut b) = session(&c, "b").await;
        let (tx_c, mut c3) = session(&c, "c").await;
        for tx in [&tx_a, &tx_b] {
            tx.send(upload_request(1, 80)).await.unwrap();
        }
        let second = Duration::from_secs(5);
        assert_eq!(next_grant(&mut a, second).await.unwrap().unwrap(), 1);
        assert_eq!(next_grant(&mut b, second).await.unwrap().unwrap(), 1);
        tx_c.send(upload_request(1, 80)).await.unwrap();
        assert!(
            next_grant(&mut c3, Duration::from_millis(500))
                .await
                .is_none(),
            "a third upload waits for a place"
        );
        // a sends its whole (small) vector: its place goes to c.
        tx_a.send(input_chunk(1, 0, 10, 20)).await.unwrap();
        tx_a.send(input_chunk(1, 10, 10, 20)).await.unwrap();
        assert_eq!(next_grant(&mut c3, second).await.unwrap().unwrap(), 1);
    });
}

/// Input chunks sent without a grant end the session at once with an
/// error that says so (an honest participant never sends them); another
/// site is untouched.
#[test]
fn input_without_a_grant_is_refused() {
    runtime().block_on(async {
        let c = start(AcceptLimits::default()).await;
        let (tx_a, mut a) = session(&c, "a").await;
        let (_tx_b, mut b) = session(&c, "b").await;
        let t = Instant::now();
        tx_a.send(input_chunk(1, 0, 100, 400)).await.unwrap();
        let status = session_end(&mut a, Duration::from_secs(5)).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("without an upload grant"),
            "{status:?}"
        );
        assert!(t.elapsed() < tessera_coordinator::service::UPLOAD_STALL);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), b.message())
                .await
                .is_err(),
            "b's session is untouched"
        );
    });
}

/// An authenticated site that holds a grant and sends nothing, or starts
/// its upload and then stops, cannot keep its place (only a few uploads
/// are read at once, to bound memory): its session is closed once it has
/// made no progress for `UPLOAD_STALL`, and its place goes to the next
/// site; a site that is idle without a grant keeps its session.
#[test]
fn a_stalled_upload_loses_its_session() {
    use tessera_coordinator::service::UPLOAD_STALL;
    runtime().block_on(async {
        let c = start(AcceptLimits::default()).await;
        let (tx_a, mut a) = session(&c, "a").await;
        let (tx_b, mut b) = session(&c, "b").await;
        let (tx_c, mut c3) = session(&c, "c").await;
        let second = Duration::from_secs(5);
        // a: granted, then the first quarter of its input, then nothing.
        tx_a.send(upload_request(1, 1600)).await.unwrap();
        assert_eq!(next_grant(&mut a, second).await.unwrap().unwrap(), 1);
        tx_a.send(input_chunk(1, 0, 100, 400)).await.unwrap();
        // b: granted, and never uses it.
        tx_b.send(upload_request(1, 1600)).await.unwrap();
        assert_eq!(next_grant(&mut b, second).await.unwrap().unwrap(), 1);
        let t = Instant::now();
        // c waits for a place and keeps its session meanwhile.
        tx_c.send(upload_request(1, 1600)).await.unwrap();
        for (who, inbound) in [("a", &mut a), ("b", &mut b)] {
            let status = session_end(inbound, UPLOAD_STALL + second).await;
            assert_eq!(
                status.code(),
                tonic::Code::DeadlineExceeded,
                "{who}: {status:?}"
            );
            assert!(
                status.message().contains("no progress"),
                "{who}: {status:?}"
            );
            assert!(
                t.elapsed() >= UPLOAD_STALL - Duration::from_secs(1),
                "{who}"
            );
        }
        assert_eq!(
            next_grant(&mut c3, second).await.unwrap().unwrap(),
            1,
            "the stalled sites' place goes to the next"
        );
    });
}
