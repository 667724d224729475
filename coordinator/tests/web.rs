//! The web endpoint through a real HTTP client: `/metrics` in the
//! OpenMetrics format with its limits, the status page over a real store
//! (names escaped, no script, strict headers), and mutual TLS with the
//! operator list off loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tessera_coordinator::metrics::{Metrics, Stage, serve};
use tessera_coordinator::store::{
    LiveStatus, NewLedgerRow, RoundRecord, RoundStatus, Store, ledger_report,
};
use tessera_coordinator::web::{self, OperatorTls, PageSource, WebState};
use tessera_model::RoundKind;
use tessera_privacy::PrivacyEvent;

/// A response: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request with hyper's HTTP/1.1 client over `io`.
async fn request<I>(io: I, method: &str, path: &str) -> Answer
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    request(stream, method, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_exposition() {
    let metrics = Arc::new(Metrics::new());
    metrics.round_completed();
    metrics.round_completed();
    metrics.round_aborted();
    metrics.set_participants_connected(9);
    metrics.participants_dropped(2);
    metrics.set_epsilon_spent(1.25);
    metrics.add_bytes_received(4096);
    metrics.add_bytes_sent(1024);
    metrics.observe_stage(Stage::MaskedInput, Duration::from_millis(30));
    metrics.observe_stage(Stage::Ledger, Duration::from_millis(2));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::clone(&metrics), async {
        let _ = stopped.await;
    }));

    let ok = get(addr, "GET", "/metrics").await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("content-type"),
        Some(tessera_coordinator::metrics::CONTENT_TYPE)
    );
    for line in [
        "# TYPE tessera_rounds_completed counter",
        "tessera_rounds_completed_total 2",
        "tessera_rounds_aborted_total 1",
        "# TYPE tessera_participants_connected gauge",
        "tessera_participants_connected 9",
        "tessera_participants_dropped_total 2",
        "tessera_epsilon_spent 1.25",
        "tessera_bytes_received_total 4096",
        "tessera_bytes_sent_total 1024",
        "# TYPE tessera_round_stage_duration_seconds histogram",
        "tessera_round_stage_duration_seconds_count{stage=\"masked_input\"} 1",
        "tessera_round_stage_duration_seconds_count{stage=\"release\"} 0",
        "# EOF",
    ] {
        assert!(
            ok.body.lines().any(|l| l == line),
            "{line:?} missing in\n{}",
            ok.body
        );
    }
    assert!(ok.body.lines().any(
        |l| l.starts_with("tessera_round_stage_duration_seconds_bucket{")
            && l.contains("le=\"0.005\"")
            && l.contains("stage=\"ledger\"")
            && l.ends_with(" 1")
    ));
    for stage in Stage::ALL {
        assert!(ok.body.contains(&format!("stage=\"{stage}\"")));
    }
    assert_eq!(get(addr, "GET", "/other").await.status, 404);
    assert_eq!(get(addr, "POST", "/metrics").await.status, 405);
    assert_eq!(get(addr, "GET", "/metrics?x=1").await.status, 200);
    // No page on a metrics-only endpoint.
    assert_eq!(get(addr, "GET", "/").await.status, 404);

    // An oversized request head: 431 or a closed connection.
    let big = tokio::task::spawn_blocking(move || {
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 20_000));
        req.extend(b"\r\n\r\n");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&req);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(
        big.is_empty() || big.starts_with("HTTP/1.1 431"),
        "oversized request answered with {big:?}"
    );

    // A connection that never sends a request does not stop others from
    // being served, and shutdown ends the server even while it is open.
    let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(get(addr, "GET", "/metrics").await.status, 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server did not stop")
        .unwrap();
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_after_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        Arc::new(Metrics::new()),
        std::future::pending(),
    ));
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed < web::CONNECTION_TIMEOUT + Duration::from_secs(5),
        "{closed:?}"
    );
}

/// A participant name that is markup.
const HOSTILE: &str = "<script>alert(\"x&y\")</script>";

fn store_with_rounds(path: &Path) {
    let mut s = Store::open(path).unwrap();
    for round in 0..4u64 {
        let training = (round > 0).then_some(round as u32);
        s.append_ledger(&NewLedgerRow {
            round,
            training_round: training,
            kind: if round == 0 {
                RoundKind::Statistics
            } else {
                RoundKind::Training
            },
            event: PrivacyEvent::gaussian(1.5, 1.0, 1),
            cohort_size: 3,
            clip_norm: 0.25,
            noise_multiplier: 1.5,
            sampling_rate: 1.0,
            recorded_at_ms: 1_795_000_000_000,
            not_private: false,
        })
        .unwrap();
        s.record_round(&RoundRecord {
            round,
            training_round: training,
            kind: RoundKind::Training,
            status: RoundStatus::Released,
            contributors: vec!["site-1".into(), HOSTILE.into()],
            dropped: vec!["site-2".into()],
            reason: None,
            started_at_ms: 1_795_000_000_000,
            ended_at_ms: Some(1_795_000_001_500),
        })
        .unwrap();
    }
    s.set_live_status(&LiveStatus {
        current_round: Some(4),
        training_round: Some(4),
        stage: "masked_input".into(),
        connected: 3,
        pid: 1,
        updated_at_ms: 1_795_000_002_000,
        site_budgets: Vec::new(),
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_store_and_escapes_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.sqlite");
    store_with_rounds(&path);
    let eval = dir.path().join("metrics.csv");
    std::fs::write(
        &eval,
        "round,accuracy,loss,epsilon\n1,0.81,0.5,1\n2,0.9,0.4,2\n",
    )
    .unwrap();
    let page = PageSource::new(
        path.clone(),
        "fed <b>".into(),
        1e-5,
        Some(30.0),
        10,
        7,
        Some(eval),
    );
    let app = web::router(Arc::new(WebState::with_page(
        Arc::new(Metrics::new()),
        page,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(web::serve(listener, app, None, std::future::pending()));

    let a = get(addr, "GET", "/").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        a.header("content-security-policy"),
        Some(web::CONTENT_SECURITY_POLICY)
    );
    let html = &a.body;
    assert!(!html.contains("<script"), "a script element on the page");
    assert!(html.contains("&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;"));
    assert!(html.contains("fed &lt;b&gt;") && !html.contains("fed <b>"));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"7\">"));
    assert!(!html.contains("http://") || !html.contains("src=\"http"));
    let eps = ledger_report(&Store::open_read_only(&path).unwrap(), 1e-5)
        .unwrap()
        .epsilon;
    assert!(html.contains(&format!("{eps:.4}")), "ε {eps} not shown");
    for needle in [
        "masked_input",
        "site-2",
        "budget ε = 30",
        "<svg",
        "id=\"privacy-report\"",
        "0.8100",
        "id=\"ledger\"",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    let md = get(addr, "GET", "/report.md").await;
    assert_eq!(md.status, 200);
    assert!(md.body.starts_with("# Privacy report: fed <b>"));
    let json: serde_json::Value =
        serde_json::from_str(&get(addr, "GET", "/report.json").await.body).unwrap();
    assert!((json["epsilon"].as_f64().unwrap() - eps).abs() < 1e-12);
    assert_eq!(get(addr, "GET", "/metrics").await.status, 200);
}

fn client_tls(pki: &Path, name: Option<&str>) -> tokio_rustls::TlsConnector {
    tessera_certs::install_crypto_provider();
    let ca = std::fs::read(pki.join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match name {
        Some(name) => {
            let m = tessera_certs::TlsFiles::in_dir(pki, name).load().unwrap();
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&m.cert_pem)
                .map(Result::unwrap)
                .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&m.key_pem).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_only_listed_operators_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    tessera_certs::init(&pki, &["ops".into(), "site-1".into()], &[]).unwrap();
    let tls = OperatorTls::new(
        &tessera_certs::TlsFiles::in_dir(&pki, "coordinator"),
        vec!["ops".into()],
    )
    .unwrap();
    let app = web::router(Arc::new(WebState::metrics_only(Arc::new(Metrics::new()))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(web::serve(listener, app, Some(tls), std::future::pending()));
    let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    let connect = |name: Option<&'static str>| {
        let connector = client_tls(&pki, name);
        let server = server.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector.connect(server, tcp).await
        }
    };
    let ops = connect(Some("ops")).await.unwrap();
    let a = request(ops, "GET", "/metrics").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("tessera_rounds_completed_total 0"));

    let site = connect(Some("site-1")).await.unwrap();
    let a = request(site, "GET", "/metrics").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("operator list"));

    // Without a certificate: refused in the handshake (TLS 1.3 reports it
    // at the first read).
    match connect(None).await {
        Err(_) => {}
        Ok(mut s) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let r = s.read_to_end(&mut buf).await;
            assert!(r.is_err() || buf.is_empty(), "served without a certificate");
        }
    }
    // Plain HTTP on the TLS port gets nothing.
    let plain = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(!plain.contains("tessera_"), "{plain}");
}

#[test]
fn a_page_off_loopback_needs_operators() {
    let base = r#"
[federation]
name = "f"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 5
output_dir = "out"
[tls]
ca = "a"
cert = "b"
key = "c"
[task]
features = ["a"]
label = "y"
positive = "> 0"
"#;
    let dir = tempfile::tempdir().unwrap();
    let load = |extra: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, format!("{base}{extra}")).unwrap();
        tessera_coordinator::config::CoordinatorConfig::load(&p)
    };
    let c = load("[web]\n").unwrap();
    assert_eq!(c.web.unwrap().listen.to_string(), "127.0.0.1:8080");
    let e = load("[web]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
    assert!(e.to_string().contains("web.operators"), "{e}");
    assert!(load("[web]\nlisten = \"0.0.0.0:8080\"\noperators = [\"ops\"]\n").is_ok());
    let e = load("").map(|_| ()).and_then(|()| {
        let p = dir.path().join("m.toml");
        std::fs::write(
            &p,
            base.replace(
                "output_dir = \"out\"",
                "output_dir = \"out\"\nmetrics_listen = \"0.0.0.0:9464\"",
            ),
        )
        .unwrap();
        tessera_coordinator::config::CoordinatorConfig::load(&p).map(|_| ())
    });
    assert!(
        e.unwrap_err().to_string().contains("metrics_listen"),
        "a metrics endpoint off loopback without operators"
    );
}
