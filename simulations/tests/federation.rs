//! End-to-end tests of a real federation: separate `tessera-coordinator` and
//! `tessera-participant` processes talking gRPC over loopback mutual TLS
//! (TLS 1.3, certificates of a fresh development PKI), with secure
//! aggregation, on the bundled breast-cancer data dealt IID over the sites
//! with a pooled held-out test split (see `tessera_testkit::bins` for how
//! the binaries are found).
//!
//! What each test proves:
//! - `rounds_complete_and_the_model_loads`: a coordinator and three
//!   participants complete every planned round; exit codes, `rounds.csv`
//!   and the store agree; the final `model.safetensors` loads, has one
//!   parameter per feature plus the bias, is the last checkpoint, and
//!   classifies the held-out split well (far better than the initial model).
//! - `no_client_certificate_is_refused`: a TLS client that trusts the CA
//!   but presents no certificate cannot open a session; the coordinator logs
//!   why and keeps serving the participants already connected and the one
//!   that joins afterwards.
//! - `certificate_of_another_ca_is_refused`: a participant process whose
//!   certificate (for an allow-listed name) comes from another CA exits with
//!   the "refused" code and says why; the coordinator logs the unknown CA;
//!   the genuine sites complete the federation.
//! - `name_not_on_the_allow_list_is_refused`: a certificate of the right
//!   CA for a name missing from `allow` is refused (exit code, both logs);
//!   the others complete.
//! - `participant_killed_mid_round_is_dropped`: of five sites, one is
//!   frozen (SIGSTOP) so that it is certainly in the cohort of the next
//!   round and certainly silent, then killed (SIGKILL) while that round is
//!   in progress: the round is released with the other four (`rounds.csv`:
//!   cohort 5, 4 contributors, 1 dropped; the store names the victim as
//!   dropped) and the remaining rounds complete without it.
//! - `data_missing_a_feature_column_is_rejected`: of five sites, one has a
//!   CSV without a feature column: it exits with the task-rejected code and
//!   its log names the column; the coordinator logs the rejection and every
//!   round is released with the other four.
//! - `sim_run_breast_cancer_iid` and `sim_demo_without_privacy`: the
//!   researcher's `tessera-sim run` (10 IID sites, 30 rounds) and the demo
//!   (four hospitals) reach their accuracy targets and write `summary.json`.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tessera_coordinator::store::RoundStatus;
use tessera_participant::client::EXIT_REFUSED;
use tessera_participant::site::EXIT_TASK_REJECTED;
use tessera_simulations::launch::SitePlan;
use tessera_testkit::bins::BinDir;
use tessera_testkit::command::sim_summary;
use tessera_testkit::data::breast_cancer_path;
use tessera_testkit::federation::{self, Federation, Setup};
use tessera_testkit::process::{PATIENCE, signal};

/// The `tessera-sim` binary built for these tests; the stand-alone
/// coordinator and participant binaries are looked for next to it.
const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

const GOOD: [&str; 3] = ["site-1", "site-2", "site-3"];
const FOUR: [&str; 4] = ["site-1", "site-2", "site-3", "site-4"];

/// Starts the coordinator of a federation of the stand-alone
/// `tessera-coordinator` and `tessera-participant` binaries.
fn start(setup: &Setup) -> Federation {
    Federation::start(setup, federation::standalone(&BinDir::containing(SIM)))
}

/// Short deadlines, so that a participant that stops answering is noticed quickly.
fn fault_setup(sites: usize, rounds: u32) -> Setup {
    Setup {
        min_participants: 3,
        stage_seconds: 5.0,
        training_seconds: 8.0,
        ..Setup::new(sites, rounds)
    }
}

/// Starts two good sites and waits until both hold sessions, so that the
/// refusal that follows happens while the coordinator is serving them.
fn two_good_joined(fed: &mut Federation) {
    fed.start_site("site-1");
    fed.start_site("site-2");
    fed.wait_joined(&["site-1", "site-2"]);
}

/// A site plan for an extra participant `name` (certificate `pki/NAME.crt`)
/// that uses site-1's data.
fn extra_site(fed: &Federation, name: &str) -> SitePlan {
    SitePlan {
        name: name.into(),
        ..fed.site("site-1")
    }
}

#[test]
fn rounds_complete_and_the_model_loads() {
    let mut fed = start(&Setup::new(3, 5));
    for name in GOOD {
        fed.start_site(name);
    }
    fed.assert_completed_with(&GOOD, &[]);

    assert!(
        fed.coordinator_log()
            .contains("coordinator listening (TLS 1.3, client certificates required)")
    );

    // rounds.csv: the statistics round, then one row per training round,
    // everyone contributing, nothing aborted.
    let csv = fed.rounds_csv();
    assert_eq!(csv.len(), 6, "{csv:?}");
    assert_eq!(csv[0].kind, "statistics");
    assert_eq!(csv[0].training_round, None);
    for (i, row) in csv.iter().enumerate() {
        assert_eq!(row.status, "released", "{row:?}");
        assert_eq!(
            (row.cohort, row.contributors, row.dropped),
            (3, 3, 0),
            "{row:?}"
        );
        if i > 0 {
            assert_eq!(row.kind, "training");
            assert_eq!(row.training_round, Some(i as u32));
        }
    }
    // The store agrees.
    let rounds = fed.store_rounds();
    assert_eq!(rounds.len(), 6);
    for r in &rounds {
        assert_eq!(r.status, RoundStatus::Released, "{r:?}");
        let mut who = r.contributors.clone();
        who.sort();
        assert_eq!(who, GOOD, "{r:?}");
        assert!(r.dropped.is_empty(), "{r:?}");
    }

    // The final model: loads, fits the task, is the last checkpoint, works.
    let model = tessera_model::read_model(&fed.model_path()).expect("reading the final model");
    assert_eq!(model.round, 5);
    assert_eq!(model.task, fed.plan.task);
    let features = fed.plan.task.features.len();
    assert_eq!(features, 30);
    // No missing values in this data, so no indicator inputs: weights + bias.
    assert_eq!(model.preprocessor.output_dim(), features);
    assert_eq!(model.params.len(), features + 1);
    assert_eq!(
        model.params.len(),
        model.task.num_params(model.preprocessor.output_dim())
    );
    assert!(model.params.iter().all(|p| p.is_finite()));
    let last = fed
        .layout
        .coordinator_out
        .join("checkpoints")
        .join(tessera_coordinator::store::checkpoint_file_name(5));
    assert!(
        tessera_model::read_model(&last).expect("reading the last checkpoint") == model,
        "the final model is not the last checkpoint"
    );
    let test = tessera_model::load_csv(fed.test_csv(), &fed.plan.task).expect("test split");
    assert!(test.n_rows() >= 100, "held-out rows: {}", test.n_rows());
    let trained = tessera_model::evaluate(&model, &test).unwrap();
    let initial = tessera_model::read_model(
        &fed.layout
            .coordinator_out
            .join("checkpoints")
            .join(tessera_coordinator::store::checkpoint_file_name(0)),
    )
    .expect("reading the initial model");
    let untrained = tessera_model::evaluate(&initial, &test).unwrap();
    assert!(
        trained.accuracy >= 0.9,
        "held-out accuracy {} after 5 rounds",
        trained.accuracy
    );
    assert!(
        trained.accuracy > untrained.accuracy + 0.2 && trained.loss < untrained.loss,
        "training did not help: {trained:?} vs initial {untrained:?}"
    );
}

#[test]
fn no_client_certificate_is_refused() {
    let mut fed = start(&Setup::new(3, 3));
    two_good_joined(&mut fed);

    let outcome = anonymous_session(&fed.layout.pki.join("ca.crt"), &fed.address);
    let error = match outcome {
        Ok(reply) => panic!("a client without a certificate got a session: {reply}"),
        Err(e) => e,
    };
    eprintln!("the anonymous client was refused: {error}");
    fed.wait_for("the coordinator to log the refused handshake", |f| {
        f.coordinator_log()
            .lines()
            .any(|l| l.contains("TLS handshake refused") && l.contains("presented no certificate"))
            .then_some(())
    });

    fed.start_site("site-3");
    fed.assert_completed_with(&GOOD, &[]);
}

/// Opens a `Session` RPC with a client that trusts the federation CA but
/// presents no certificate. `Ok` with the first reply if the coordinator
/// served it, else the error.
fn anonymous_session(ca: &Path, address: &str) -> Result<String, String> {
    use tessera_proto::v1::federation_client::FederationClient;
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    tessera_certs::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let ca_pem = std::fs::read(ca).expect("reading ca.crt");
    let attempt = async move {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("127.0.0.1");
        let endpoint = Endpoint::from_shared(format!("https://{address}"))
            .expect("an endpoint URL")
            .tls_config(tls)
            .expect("a TLS configuration")
            .connect_timeout(Duration::from_secs(20));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {}", tessera_certs::describe_tls_error(&e)))?;
        let mut client = FederationClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(tessera_participant::site::Site::hello())
            .await
            .expect("queueing a hello");
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(|s| {
                format!(
                    "session: {:?}: {} ({})",
                    s.code(),
                    s.message(),
                    tessera_certs::describe_tls_error(&s)
                )
            })?
            .into_inner();
        match inbound.message().await {
            Ok(Some(m)) => Ok(format!("{m:?}")),
            Ok(None) => Err("the session closed without a message".to_owned()),
            Err(s) => Err(format!("stream: {:?}: {}", s.code(), s.message())),
        }
    };
    runtime.block_on(async {
        tokio::time::timeout(PATIENCE, attempt)
            .await
            .unwrap_or_else(|_| panic!("the anonymous session neither failed nor succeeded"))
    })
}

#[test]
fn certificate_of_another_ca_is_refused() {
    let mut fed = start(&Setup::new(3, 3));
    two_good_joined(&mut fed);

    // Another CA issues a certificate for an allow-listed name; the impostor
    // trusts the federation CA (so it can verify the coordinator) and
    // presents that certificate.
    let other = fed.root().join("other-pki");
    tessera_certs::init(&other, &["site-3".to_owned()], &[]).expect("a second PKI");
    for ext in ["crt", "key"] {
        std::fs::copy(
            other.join(format!("site-3.{ext}")),
            fed.layout.pki.join(format!("impostor.{ext}")),
        )
        .expect("copying the foreign certificate");
    }
    let impostor = extra_site(&fed, "impostor");
    fed.start_participant(&impostor);
    let status = fed.wait_participant("impostor");
    let log = fed.log("impostor");
    assert_eq!(
        status.code(),
        Some(i32::from(EXIT_REFUSED)),
        "the impostor exited with {status}; its log:\n{log}"
    );
    assert!(
        log.contains("the coordinator refused this participant"),
        "the impostor's log does not say it was refused:\n{log}"
    );
    fed.wait_for("the coordinator to log the unknown CA", |f| {
        f.coordinator_log()
            .lines()
            .any(|l| l.contains("TLS handshake refused") && l.contains("unknown CA"))
            .then_some(())
    });
    assert!(
        !fed.coordinator_log()
            .contains("participant joined participant=site-3"),
        "the impostor was admitted as site-3:\n{}",
        fed.coordinator_log()
    );

    fed.start_site("site-3");
    fed.assert_completed_with(&GOOD, &[]);
}

#[test]
fn name_not_on_the_allow_list_is_refused() {
    let mut fed = start(&Setup::new(3, 3));
    two_good_joined(&mut fed);

    tessera_certs::issue(&fed.layout.pki, "stranger").expect("issuing a certificate");
    let stranger = extra_site(&fed, "stranger");
    fed.start_participant(&stranger);
    let status = fed.wait_participant("stranger");
    let log = fed.log("stranger");
    assert_eq!(
        status.code(),
        Some(i32::from(EXIT_REFUSED)),
        "the stranger exited with {status}; its log:\n{log}"
    );
    assert!(
        log.contains("the coordinator refused this participant")
            && log.contains("`stranger` is not on this federation's allow-list"),
        "the stranger's log does not say why it was refused:\n{log}"
    );
    let coordinator = fed.coordinator_log();
    assert!(
        coordinator
            .lines()
            .any(|l| l.contains("session refused: not on the allow-list")
                && l.contains("participant=stranger")),
        "no refusal in the coordinator's log:\n{coordinator}"
    );

    fed.start_site("site-3");
    fed.assert_completed_with(&GOOD, &[]);
    for r in fed.store_rounds() {
        assert!(!r.contributors.iter().any(|c| c == "stranger"), "{r:?}");
    }
}

#[test]
fn participant_killed_mid_round_is_dropped() {
    const VICTIM: &str = "site-5";
    // Rounds take milliseconds: if all of them were over before the victim
    // could be frozen, there is no round left to kill it in; start over.
    let (mut fed, target) = (1..=3)
        .find_map(|_| kill_victim_mid_round(VICTIM))
        .expect("three federations in a row ended before the victim could be frozen");
    fed.assert_completed_with(&FOUR, &[VICTIM]);

    let rounds = fed.store_rounds();
    let r = rounds
        .iter()
        .find(|r| r.round == target)
        .expect("the round of the kill");
    assert_eq!(r.status, RoundStatus::Released, "{r:?}");
    assert_eq!(r.dropped, [VICTIM], "{r:?}");
    let mut who = r.contributors.clone();
    who.sort();
    assert_eq!(who, FOUR, "{r:?}");
    for later in rounds.iter().filter(|x| x.round > target) {
        assert!(!later.contributors.iter().any(|c| c == VICTIM), "{later:?}");
    }
    let csv = fed.rounds_csv();
    let row = csv
        .iter()
        .find(|x| x.round == target)
        .expect("the round of the kill in rounds.csv");
    assert_eq!(row.status, "released", "{row:?}");
    assert_eq!(
        (row.cohort, row.contributors, row.dropped),
        (5, 4, 1),
        "{row:?}"
    );
    let coordinator = fed.coordinator_log();
    assert!(
        coordinator
            .lines()
            .any(|l| l.contains("participant dropped from the round") && l.contains(VICTIM)),
        "the coordinator's log does not mention the dropped participant:\n{coordinator}"
    );
}

/// Starts four sites; once `victim` has contributed to a released round,
/// freezes it (SIGSTOP): still connected, it is in the cohort of every round
/// that starts from then on and cannot contribute to any of them. When such
/// a training round has started, kills the victim (SIGKILL) while that round
/// is in progress and returns the federation and the round. `None` if the
/// federation ended before a round started after the freeze.
fn kill_victim_mid_round(victim: &str) -> Option<(Federation, u64)> {
    // Rounds follow each other without pause and take milliseconds: plan
    // enough of them that the federation is still running when the victim
    // is frozen.
    let mut fed = start(&fault_setup(5, 40));
    for name in ["site-1", "site-2", "site-3", "site-4", victim] {
        fed.start_site(name);
    }
    fed.wait_for("a round with the victim released", |f| {
        f.try_store_rounds()
            .iter()
            .any(|r| {
                r.status == RoundStatus::Released && r.contributors.iter().any(|c| c == victim)
            })
            .then_some(())
    });
    let pid = fed.participant_pid(victim);
    signal(pid, "STOP");
    std::thread::sleep(Duration::from_millis(200));
    let frozen_at = fed.store_rounds().iter().map(|r| r.round).max().unwrap();
    let target = fed.wait_for_while_running("a training round started after the freeze", |f| {
        f.try_store_rounds()
            .iter()
            .find(|r| r.round > frozen_at && r.training_round.is_some())
            .map(|r| r.round)
    });
    let killed = fed.kill_participant(victim);
    assert_eq!(killed.code(), None, "the victim was killed by a signal");
    match target {
        Some(round) => Some((fed, round)),
        None => {
            eprintln!("the federation ended before the victim was frozen; starting over");
            None
        }
    }
}

#[test]
fn data_missing_a_feature_column_is_rejected() {
    const BAD: &str = "site-5";
    const COLUMN: &str = "texture_mean";
    let mut fed = start(&fault_setup(5, 3));
    // Site 5 exports its data without one of the task's feature columns.
    let path = fed.data[BAD].clone();
    let table = tessera_model::data::read_raw_csv(&path).expect("reading site 5's data");
    let drop = table.column(COLUMN, &path).expect("the column exists");
    let header: Vec<String> = without(&table.header, drop);
    let rows: Vec<Vec<String>> = table.rows.iter().map(|r| without(r, drop)).collect();
    tessera_model::data::write_raw_csv(&path, &header, &rows).expect("rewriting site 5's data");

    for name in FOUR.into_iter().chain([BAD]) {
        fed.start_site(name);
    }
    let status = fed.wait_participant(BAD);
    let log = fed.log(BAD);
    assert_eq!(
        status.code(),
        Some(i32::from(EXIT_TASK_REJECTED)),
        "site 5 exited with {status}; its log:\n{log}"
    );
    assert!(
        log.contains(&format!("column \"{COLUMN}\" not found")),
        "site 5's log does not name the missing column:\n{log}"
    );
    fed.assert_completed_with(&FOUR, &[]);
    let coordinator = fed.coordinator_log();
    assert!(
        coordinator
            .lines()
            .any(|l| l.contains("participant cannot serve the task")
                && l.contains(BAD)
                && l.contains("REJECT_CODE_DATA_DOES_NOT_FIT")),
        "the coordinator's log does not record the rejection:\n{coordinator}"
    );
    for row in fed.rounds_csv() {
        assert_eq!(
            (row.status.as_str(), row.contributors),
            ("released", 4),
            "{row:?}"
        );
    }
}

fn without(cells: &[String], index: usize) -> Vec<String> {
    cells
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, c)| c.clone())
        .collect()
}

#[test]
fn sim_run_breast_cancer_iid() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("run");
    let data = breast_cancer_path();
    let summary = sim_summary(
        Path::new(SIM),
        &[
            "run",
            "--data",
            data.to_str().unwrap(),
            "--label",
            "diagnosis",
            "--participants",
            "10",
            "--partition",
            "iid",
            "--rounds",
            "30",
            "--model",
            "logistic",
            "--seed",
            "1",
        ],
        &out,
        PATIENCE,
    );
    let accuracy = summary["final_accuracy"].as_f64().expect("final_accuracy");
    assert!(accuracy >= 0.95, "final accuracy {accuracy}: {summary:#}");
    assert_eq!(summary["rounds"], 30, "{summary:#}");
    assert_eq!(summary["participants"], 10, "{summary:#}");
    assert!(summary["epsilon"].is_null(), "{summary:#}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).expect("metrics.csv");
    assert_eq!(metrics.lines().count(), 31, "metrics.csv:\n{metrics}");
}

#[test]
fn sim_demo_without_privacy() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("demo");
    let rounds = demo_default_rounds();
    let summary = sim_summary(Path::new(SIM), &["demo", "--no-privacy"], &out, PATIENCE);
    let accuracy = summary["final_accuracy"].as_f64().expect("final_accuracy");
    assert!(accuracy >= 0.75, "final accuracy {accuracy}: {summary:#}");
    assert_eq!(summary["rounds"], rounds, "{summary:#}");
    assert_eq!(summary["participants"], 4, "{summary:#}");
    assert!(summary["epsilon"].is_null(), "{summary:#}");
    assert!(out.join("coordinator").join("model.safetensors").is_file());
}

/// The demo's default number of rounds, as `tessera-sim demo --help` states it.
fn demo_default_rounds() -> u64 {
    let help = Command::new(SIM)
        .args(["demo", "--help"])
        .output()
        .expect("running tessera-sim demo --help");
    let text = String::from_utf8_lossy(&help.stdout);
    // `--help` puts an option's description, with its default, on the line
    // after the option (or on the same line in the short form).
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("--rounds"))
        .unwrap_or_else(|| panic!("no --rounds in:\n{text}"));
    let line = lines[at..lines.len().min(at + 2)]
        .iter()
        .find(|l| l.contains("[default:"))
        .unwrap_or_else(|| panic!("no default for --rounds in:\n{text}"));
    let value = line
        .split("[default: ")
        .nth(1)
        .and_then(|v| v.split(']').next());
    value
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read the default rounds from {line:?}"))
}
