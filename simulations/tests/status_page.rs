//! The coordinator's status page of a real multi-process federation, in
//! headless Chromium: four sites over loopback mutual TLS with differential
//! privacy, one of them holding a certificate (of the federation CA) whose
//! name is markup. While the federation runs, the page loads without a
//! console message, shows the rounds, the sites in them, ε from the ledger
//! and the evaluation of the released models, and shows the markup name as
//! text. A screenshot is kept under the target directory.
//!
//! Chromium is Debian's `chromium` (or `$TESSERA_CHROMIUM`). Where it is
//! missing the test says so and passes, unless `TESSERA_REQUIRE_CHROMIUM=1`
//! (as in CI), where a missing browser fails it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use tessera_coordinator::store::RoundStatus;
use tessera_simulations::experiment::PrivacyArgs;
use tessera_simulations::launch;
use tessera_testkit::command::output_within;
use tessera_testkit::data::breast_cancer_task;
use tessera_testkit::federation::{Federation, Setup, sim_entry_points};

/// A participant name that is markup.
const HOSTILE: &str = "<script>alert(\"tile\")</script>";
/// The site frozen to hold the federation while the page is looked at.
const HELD: &str = "site-2";

/// The Chromium binary, or None where it is not installed.
fn chromium() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("TESSERA_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["chromium", "chromium-browser"].map(PathBuf::from))
        .collect();
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs headless Chromium on `url` with `args` (the flags that keep it off
/// the network and quiet), logging to stderr.
fn browse(chromium: &Path, profile: &Path, args: &[&str], url: &str) -> Output {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url);
    output_within(cmd, Duration::from_secs(120))
}

/// Issues a client certificate named `name` from the federation CA in
/// `pki` as `<stem>.crt` and `<stem>.key`.
fn issue_hostile(pki: &Path, stem: &str, name: &str) {
    let ca_cert = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(pki.join(format!("{stem}.crt")), cert.pem()).unwrap();
    std::fs::write(pki.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}

/// Kills a child process when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Evaluates every checkpoint on the pooled test split into `out`
/// (`round,accuracy,loss`), as `tessera-sim run` does for `metrics.csv`.
fn write_evaluation(checkpoints: &Path, test_csv: &Path, out: &Path) -> usize {
    let test = tessera_model::load_csv(test_csv, &breast_cancer_task()).unwrap();
    let mut rows: Vec<(u32, f64, f64)> = std::fs::read_dir(checkpoints)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            let round: u32 = name
                .strip_prefix("model-round-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            let m = tessera_model::read_model(&path).ok()?;
            let e = tessera_model::evaluate(&m, &test).ok()?;
            (round > 0).then_some((round, e.accuracy, e.loss))
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    let mut csv = String::from("round,accuracy,loss\n");
    for (r, a, l) in &rows {
        csv.push_str(&format!("{r},{a:.6},{l:.6}\n"));
    }
    std::fs::write(out, csv).unwrap();
    rows.len()
}

#[test]
fn the_status_page_of_a_real_federation_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("TESSERA_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "TESSERA_REQUIRE_CHROMIUM=1 but no Chromium was found (install Debian's `chromium`)"
        );
        eprintln!("SKIPPED: headless Chromium not found (install Debian's `chromium`)");
        return;
    };
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut setup = Setup::new(4, 30);
    setup.dir = Some(target.join("status-page-federation"));
    setup.privacy = PrivacyArgs {
        noise_multiplier: Some(1.5),
        ..PrivacyArgs::default()
    };
    setup.stage_seconds = 60.0;
    setup.training_seconds = 60.0;
    let mut fed = Federation::prepare(&setup, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")));

    // The fourth site's data, with a certificate named in markup.
    issue_hostile(&fed.layout.pki, "hostile", HOSTILE);
    let evaluation = fed.root().join("evaluation.csv");
    let config_path = fed.layout.coordinator_config.clone();
    let mut config: toml::Table = std::fs::read_to_string(&config_path)
        .unwrap()
        .parse()
        .unwrap();
    let allow = config["federation"]["allow"].as_array().unwrap().clone();
    let mut allow: Vec<toml::Value> = allow
        .into_iter()
        .filter(|v| v.as_str() != Some("site-4"))
        .collect();
    allow.push(HOSTILE.into());
    let federation = config["federation"].as_table_mut().unwrap();
    federation.insert("allow".into(), toml::Value::Array(allow));
    let mut web = toml::Table::new();
    web.insert("listen".into(), "127.0.0.1:0".into());
    web.insert("refresh_seconds".into(), 5.into());
    web.insert(
        "evaluation".into(),
        evaluation.to_string_lossy().into_owned().into(),
    );
    config.insert("web".into(), toml::Value::Table(web));
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    fed.start_coordinator();
    let web_address = fed.wait_for("the page's address", |f| {
        std::fs::read_to_string(f.layout.coordinator_out.join("web_address"))
            .ok()
            .filter(|a| a.ends_with('\n'))
    });
    let url = format!("http://{}/", web_address.trim());
    for site in ["site-1", HELD, "site-3"] {
        fed.start_site(site);
    }
    let site4 = fed.write_participant_config(&fed.site("site-4"));
    let hostile_config = fed.root().join("hostile.toml");
    let text = std::fs::read_to_string(&site4).unwrap();
    assert!(text.contains("site-4.crt") && text.contains("site-4.key"));
    std::fs::write(
        &hostile_config,
        text.replace("site-4.crt", "hostile.crt")
            .replace("site-4.key", "hostile.key"),
    )
    .unwrap();
    let _hostile = Guard(
        launch::spawn(
            &fed.bins.participant,
            &["run", "--config", &hostile_config.to_string_lossy()],
            &fed.layout.logs.join("hostile.log"),
        )
        .unwrap(),
    );

    // Let a few training rounds be released, then hold the federation.
    fed.wait_for("three released training rounds", |f| {
        (f.try_store_rounds()
            .iter()
            .filter(|r| r.status == RoundStatus::Released && r.training_round.is_some())
            .count()
            >= 3)
            .then_some(())
    });
    signal(fed.participant_pid(HELD), "STOP");
    std::thread::sleep(Duration::from_millis(800));
    let evaluated = write_evaluation(
        &fed.layout.coordinator_out.join("checkpoints"),
        fed.test_csv(),
        &evaluation,
    );
    assert!(evaluated >= 3);
    let store = fed.store();
    let ledger = tessera_coordinator::store::ledger_report(&store, 1e-5).unwrap();
    let rounds = store.rounds().unwrap();
    assert!(
        rounds
            .iter()
            .any(|r| r.contributors.iter().any(|c| c == HOSTILE)),
        "the markup-named site never contributed"
    );

    let profile = tempfile::tempdir().unwrap();
    let dump = browse(&chromium, profile.path(), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dump.stdout).into_owned();
    let log = String::from_utf8_lossy(&dump.stderr).into_owned();
    assert!(dump.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Refused to"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("Federation tessera-sim"), "{dom}");
    // The markup name is text, not an element.
    assert!(
        dom.contains("&lt;script&gt;alert(\"tile\")&lt;/script&gt;"),
        "the markup name is not shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("<script"),
        "a script element reached the page"
    );
    for needle in [
        format!("{:.4}", ledger.rows.last().unwrap().cumulative_epsilon),
        "site-1".to_owned(),
        "id=\"privacy-report\"".to_owned(),
        "What ε = ".to_owned(),
        "<svg".to_owned(),
        "released".to_owned(),
        "participants connected".to_owned(),
    ] {
        assert!(dom.contains(&needle), "{needle:?} is not on the page");
    }
    // Every released training round is listed, and the evaluation is shown.
    assert!(dom.matches("class=\"released\"").count() >= 4);
    assert!(dom.contains("No evaluation metrics recorded") == (evaluated == 0));

    let artifacts = target.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse(
        &chromium,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2200",
            "--hide-scrollbars",
        ],
        &url,
    );
    assert!(
        out.status.success() && shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("status page screenshot: {}", shot.display());
    eprintln!("status page screenshot: {}", shot.display());

    signal(fed.participant_pid(HELD), "CONT");
    let status = fed.wait_coordinator();
    assert!(status.success(), "{}", fed.coordinator_log());
}
