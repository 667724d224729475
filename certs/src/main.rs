//! `tessera-certs`: make a development PKI for a Tessera federation.
//!
//! ```text
//! tessera-certs init  --out DIR --participants a,b,c [--coordinator-names localhost,127.0.0.1] [--force]
//! tessera-certs issue --out DIR --participant NAME [--force]
//! tessera-certs revoke NAME --out DIR
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera_certs::{DEFAULT_COORDINATOR_NAMES, Overwrite};

/// Make and extend a development PKI for a Tessera federation: a CA, a
/// coordinator certificate and one certificate per participant (PEM,
/// private keys mode 0600).
#[derive(Debug, Parser)]
#[command(name = "tessera-certs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new CA, the coordinator's certificate and one certificate per
    /// participant.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Participant names, comma-separated (letters, digits, '.', '_', '-').
        #[arg(long, value_name = "NAMES", value_delimiter = ',', required = true)]
        participants: Vec<String>,
        /// Names participants dial the coordinator by: DNS names and/or IP
        /// addresses, comma-separated.
        #[arg(
            long,
            value_name = "NAMES",
            value_delimiter = ',',
            default_values_t = DEFAULT_COORDINATOR_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        )]
        coordinator_names: Vec<String>,
        /// Replace an existing CA and keys in DIR (every certificate issued
        /// by the old CA stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue one more participant certificate with the CA in DIR.
    Issue {
        /// The PKI directory holding ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The new participant's name.
        #[arg(long, value_name = "NAME")]
        participant: String,
        /// Replace this participant's existing certificate and key
        /// (re-issue, e.g. before it expires).
        #[arg(long)]
        force: bool,
    },
    /// Revoke participant NAME's certificate: add it to DIR/crl.pem, the
    /// CA's revocation list (created on the first revocation). A coordinator
    /// with `[tls] crl = "DIR/crl.pem"` refuses it from then on and drops it
    /// if connected (on SIGHUP or when it sees the file change).
    Revoke {
        /// The participant whose certificate (DIR/NAME.crt) is revoked.
        #[arg(value_name = "NAME")]
        participant: String,
        /// The PKI directory holding ca.crt, ca.key and NAME.crt.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn overwrite(force: bool) -> Overwrite {
    if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    }
}

fn print_written(dir: &Path, files: &[PathBuf]) {
    println!("wrote {} files in {}:", files.len(), dir.display());
    for file in files {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let note = if name.ends_with(".key") {
            "  (private key, mode 0600)"
        } else {
            ""
        };
        println!("  {name}{note}");
    }
}

fn run(cli: Cli) -> Result<(), tessera_certs::Error> {
    match cli.command {
        Command::Init {
            out,
            participants,
            coordinator_names,
            force,
        } => {
            let files = tessera_certs::init_with(
                &out,
                &participants,
                &coordinator_names,
                overwrite(force),
            )?;
            print_written(&out, &files);
            println!(
                "coordinator certificate valid for: {}",
                coordinator_names.join(", ")
            );
            println!(
                "give each participant ca.crt, NAME.crt and NAME.key; keep ca.key off the nodes"
            );
        }
        Command::Issue {
            out,
            participant,
            force,
        } => {
            let files = tessera_certs::issue_with(&out, &participant, overwrite(force))?;
            print_written(&out, &files);
        }
        Command::Revoke { participant, out } => {
            let r = tessera_certs::revoke(&out, &participant)?;
            if r.already {
                println!("{participant} was already revoked");
            } else {
                println!("revoked {participant}");
            }
            println!(
                "{} now lists {} revoked certificate(s); reload the coordinator (SIGHUP) or let it notice the change",
                r.crl.display(),
                r.entries
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-certs: error: {e}");
            ExitCode::FAILURE
        }
    }
}
