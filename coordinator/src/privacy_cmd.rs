//! `tessera-coordinator privacy …`: budget planning from the command line.
//!
//! * `privacy epsilon --noise-multiplier S --sampling-rate Q --rounds T --delta D [--accountant A] [--json]`:
//!   epsilon spent by T rounds of the Gaussian mechanism.
//! * `privacy calibrate --target-epsilon E --delta D --sampling-rate Q --rounds T [--accountant A] [--json]`:
//!   the smallest noise multiplier that keeps (E, D) over T rounds.
//!
//! The accountant defaults to `best`. Invalid input and an accountant that
//! does not apply are reported on stderr with exit code 2.

use std::process::ExitCode;

use serde_json::json;
use tessera_privacy::{
    AccountantKind, EpsilonReport, PrivacyEvent, calibrate_noise_multiplier, epsilon,
};

/// Privacy planning commands.
#[derive(clap::Subcommand, Debug)]
pub enum PrivacyCommand {
    /// Epsilon spent by T rounds of noise multiplier S at sampling rate Q.
    Epsilon(EpsilonArgs),
    /// Smallest noise multiplier that keeps a target epsilon over T rounds.
    Calibrate(CalibrateArgs),
}

/// Arguments of `privacy epsilon`.
#[derive(clap::Args, Debug)]
pub struct EpsilonArgs {
    /// Noise multiplier sigma (noise std / clipping norm).
    #[arg(long, allow_negative_numbers = true)]
    pub noise_multiplier: f64,
    /// Poisson sampling rate q in (0, 1]; 1 = every participant every round.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub sampling_rate: f64,
    /// Number of rounds T.
    #[arg(long)]
    pub rounds: u32,
    /// Target delta in (0, 1).
    #[arg(long, allow_negative_numbers = true)]
    pub delta: f64,
    /// Accountant: exact, rdp, pld or best.
    #[arg(long, default_value_t = AccountantKind::Best)]
    pub accountant: AccountantKind,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `privacy calibrate`.
#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// Target epsilon (> 0).
    #[arg(long, allow_negative_numbers = true)]
    pub target_epsilon: f64,
    /// Target delta in (0, 1).
    #[arg(long, allow_negative_numbers = true)]
    pub delta: f64,
    /// Poisson sampling rate q in (0, 1]; 1 = every participant every round.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub sampling_rate: f64,
    /// Number of rounds T.
    #[arg(long)]
    pub rounds: u32,
    /// Accountant: exact, rdp, pld or best.
    #[arg(long, default_value_t = AccountantKind::Best)]
    pub accountant: AccountantKind,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a privacy command: 0 on success, 2 on invalid input or an
/// accountant that does not apply.
pub fn run(cmd: PrivacyCommand) -> ExitCode {
    let out = match cmd {
        PrivacyCommand::Epsilon(a) => run_epsilon(&a),
        PrivacyCommand::Calibrate(a) => run_calibrate(&a),
    };
    match out {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_epsilon(a: &EpsilonArgs) -> Result<String, tessera_privacy::Error> {
    if a.rounds == 0 {
        return Err(tessera_privacy::Error::ZeroRounds);
    }
    let ledger = [PrivacyEvent::gaussian(
        a.noise_multiplier,
        a.sampling_rate,
        a.rounds,
    )];
    let r = epsilon(&ledger, a.delta, a.accountant)?;
    if a.json {
        let v = json!({
            "epsilon": r.epsilon,
            "delta": r.delta,
            "accountant": r.accountant,
            "requested_accountant": a.accountant,
            "noise_multiplier": a.noise_multiplier,
            "sampling_rate": a.sampling_rate,
            "rounds": a.rounds,
            "rdp_order": r.rdp_order,
            "candidates": r.candidates,
        });
        return Ok(v.to_string());
    }
    let mut s = String::new();
    s += &format!("noise multiplier  {}\n", a.noise_multiplier);
    s += &format!("sampling rate     {}\n", a.sampling_rate);
    s += &format!("rounds            {}\n", a.rounds);
    s += &format!("delta             {:e}\n", r.delta);
    s += &accountant_line(a.accountant, &r);
    s += &format!("epsilon           {:.6}", r.epsilon);
    s += &candidates_table(&r);
    Ok(s)
}

fn run_calibrate(a: &CalibrateArgs) -> Result<String, tessera_privacy::Error> {
    let sigma = calibrate_noise_multiplier(
        a.target_epsilon,
        a.delta,
        a.sampling_rate,
        a.rounds,
        a.accountant,
    )?;
    // The epsilon actually certified at that sigma, and by which accountant.
    let ledger = [PrivacyEvent::gaussian(sigma, a.sampling_rate, a.rounds)];
    let r = epsilon(&ledger, a.delta, a.accountant)?;
    if a.json {
        let v = json!({
            "noise_multiplier": sigma,
            "target_epsilon": a.target_epsilon,
            "epsilon": r.epsilon,
            "delta": a.delta,
            "accountant": r.accountant,
            "requested_accountant": a.accountant,
            "sampling_rate": a.sampling_rate,
            "rounds": a.rounds,
        });
        return Ok(v.to_string());
    }
    let mut s = String::new();
    s += &format!("target epsilon    {}\n", a.target_epsilon);
    s += &format!("delta             {:e}\n", a.delta);
    s += &format!("sampling rate     {}\n", a.sampling_rate);
    s += &format!("rounds            {}\n", a.rounds);
    s += &accountant_line(a.accountant, &r);
    s += &format!(
        "noise multiplier  {sigma:.6}  (epsilon {:.6} at this sigma)",
        r.epsilon
    );
    Ok(s)
}

fn accountant_line(requested: AccountantKind, r: &EpsilonReport) -> String {
    if requested == r.accountant {
        format!("accountant        {}\n", r.accountant)
    } else {
        format!("accountant        {requested} -> {}\n", r.accountant)
    }
}

fn candidates_table(r: &EpsilonReport) -> String {
    if r.candidates.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n\n  accountant  epsilon");
    for c in &r.candidates {
        match (c.epsilon, &c.reason) {
            (Some(e), _) => s += &format!("\n  {:<10}  {e:.6}", c.accountant),
            (None, Some(why)) => s += &format!("\n  {:<10}  n/a: {why}", c.accountant),
            (None, None) => s += &format!("\n  {:<10}  n/a", c.accountant),
        }
    }
    s
}
