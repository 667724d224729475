//! The `tessera-certs` binary, run as a user would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use x509_parser::pem::parse_x509_pem;

fn tessera_certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-certs"))
        .args(args)
        .output()
        .expect("run tessera-certs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether the certificate file `leaf` is signed by the CA certificate file `ca`.
fn verifies_against(leaf: &Path, ca: &Path) -> bool {
    let leaf_pem = fs::read(leaf).unwrap();
    let ca_pem = fs::read(ca).unwrap();
    let (_, leaf_pem) = parse_x509_pem(&leaf_pem).unwrap();
    let (_, ca_pem) = parse_x509_pem(&ca_pem).unwrap();
    let leaf = leaf_pem.parse_x509().unwrap();
    let ca = ca_pem.parse_x509().unwrap();
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn init_writes_every_file_and_keys_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pki");
    let o = tessera_certs(&["init", "--out", dir_str(&out), "--participants", "a,b,c"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    for holder in ["ca", "coordinator", "a", "b", "c"] {
        let crt = out.join(format!("{holder}.crt"));
        let key = out.join(format!("{holder}.key"));
        assert!(crt.is_file() && key.is_file(), "{holder} files missing");
        assert_eq!(mode(&key), 0o600, "{holder}.key");
        assert!(printed.contains(&format!("{holder}.crt")), "{printed}");
        assert!(printed.contains(&format!("{holder}.key")), "{printed}");
        if holder != "ca" {
            assert!(verifies_against(&crt, &out.join("ca.crt")), "{holder}");
        }
    }
    assert!(printed.contains("localhost, 127.0.0.1"), "{printed}");
    // The files make working TLS configurations.
    let coordinator = tessera_certs::TlsFiles::in_dir(&out, "coordinator")
        .load()
        .unwrap();
    tessera_certs::server_config(&coordinator).unwrap();
    let a = tessera_certs::TlsFiles::in_dir(&out, "a").load().unwrap();
    tessera_certs::client_config(&a).unwrap();
}

#[test]
fn issue_adds_a_participant_signed_by_the_same_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let o = tessera_certs(&["init", "--out", dir_str(out), "--participants", "a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ca_before = fs::read(out.join("ca.crt")).unwrap();

    let o = tessera_certs(&["issue", "--out", dir_str(out), "--participant", "d"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("d.crt") && stdout(&o).contains("d.key"));
    assert_eq!(mode(&out.join("d.key")), 0o600);
    assert!(verifies_against(&out.join("d.crt"), &out.join("ca.crt")));
    assert_eq!(fs::read(out.join("ca.crt")).unwrap(), ca_before);

    // Issuing the same name again is refused, and --force re-issues it.
    let key_before = fs::read(out.join("d.key")).unwrap();
    let o = tessera_certs(&["issue", "--out", dir_str(out), "--participant", "d"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(out.join("d.key")).unwrap(), key_before);
    let o = tessera_certs(&[
        "issue",
        "--out",
        dir_str(out),
        "--participant",
        "d",
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(fs::read(out.join("d.key")).unwrap(), key_before);
    assert!(verifies_against(&out.join("d.crt"), &out.join("ca.crt")));
}

#[test]
fn init_refuses_to_overwrite_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let args = ["init", "--out", dir_str(out), "--participants", "a"];
    assert!(tessera_certs(&args).status.success());
    let ca_before = fs::read(out.join("ca.crt")).unwrap();

    let o = tessera_certs(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("refusing to overwrite") && err.contains("ca.key"),
        "{err}"
    );
    assert_eq!(fs::read(out.join("ca.crt")).unwrap(), ca_before);

    let mut forced = args.to_vec();
    forced.push("--force");
    let o = tessera_certs(&forced);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(fs::read(out.join("ca.crt")).unwrap(), ca_before);
    assert_eq!(mode(&out.join("ca.key")), 0o600);
}

#[test]
fn coordinator_names_are_configurable() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let o = tessera_certs(&[
        "init",
        "--out",
        dir_str(out),
        "--participants",
        "a",
        "--coordinator-names",
        "fl.example.org,10.0.0.5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pem = fs::read(out.join("coordinator.crt")).unwrap();
    let (_, pem) = parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let rendered: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    // x509-parser renders an IP SAN as hex octets: 10.0.0.5 = 0a:00:00:05.
    assert_eq!(rendered.len(), 2, "{rendered:?}");
    assert!(rendered[0].contains("fl.example.org"), "{rendered:?}");
    assert!(rendered[1].contains("0a:00:00:05"), "{rendered:?}");
}

#[test]
fn bad_input_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pki");

    let o = tessera_certs(&["init", "--out", dir_str(&out), "--participants", "a,../b"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid participant name \"../b\""),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing may be written on bad input");

    let o = tessera_certs(&["init", "--out", dir_str(&out), "--participants", "a,a"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("more than once"), "{}", stderr(&o));

    let o = tessera_certs(&["issue", "--out", dir_str(&out), "--participant", "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ca.crt"), "{}", stderr(&o));

    let o = tessera_certs(&["init", "--out", dir_str(&out)]);
    assert!(!o.status.success(), "--participants is required");
}
