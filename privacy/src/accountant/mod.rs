//! Privacy accountants: turn a ledger of [`PrivacyEvent`]s into (epsilon, delta).
//!
//! | accountant | applies to | what it gives |
//! | --- | --- | --- |
//! | [`AccountantKind::Exact`] | Gaussian rounds with full participation only | the true epsilon (analytic Gaussian, Balle & Wang 2018) |
//! | [`AccountantKind::Rdp`] | every ledger | Rényi-DP bound (Mironov, Talwar & Zhang 2019), dp_accounting's orders and conversion |
//! | [`AccountantKind::Pld`] | every ledger | pessimistic PLD with FFT composition (Doroshenko et al. 2022; Koskela et al. 2020) |
//! | [`AccountantKind::Best`] | every ledger | the smallest of the valid bounds above |
//!
//! For ledgers of pure-DP events only, RDP and PLD also take the basic
//! composition bound (sum of epsilons, delta 0) when it is smaller.
//!
//! All of them are upper bounds on the privacy actually spent: they may
//! overstate it, never understate it.

pub mod exact;
pub mod pld;
pub mod rdp;

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::event::{Grouped, PrivacyEvent};
use crate::loss::{Delta, Epsilon};

pub use crate::calibrate::calibrate_noise_multiplier;

/// Which accountant to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountantKind {
    /// Exact composition of full-participation Gaussian rounds.
    Exact,
    /// Rényi differential privacy.
    Rdp,
    /// Privacy loss distributions.
    Pld,
    /// The smallest valid bound among the accountants that apply.
    Best,
}

impl AccountantKind {
    /// The concrete accountants `Best` chooses from, tightest first.
    pub const CONCRETE: [AccountantKind; 3] = [
        AccountantKind::Exact,
        AccountantKind::Pld,
        AccountantKind::Rdp,
    ];

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Rdp => "rdp",
            Self::Pld => "pld",
            Self::Best => "best",
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Error of parsing an [`AccountantKind`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown accountant {0:?}: expected exact, rdp, pld or best")]
pub struct ParseAccountantError(pub String);

impl FromStr for AccountantKind {
    type Err = ParseAccountantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "exact" => Ok(Self::Exact),
            "rdp" => Ok(Self::Rdp),
            "pld" => Ok(Self::Pld),
            "best" => Ok(Self::Best),
            _ => Err(ParseAccountantError(s.to_owned())),
        }
    }
}

/// The value one accountant gave (or why it did not apply), as listed by `Best`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// The accountant.
    pub accountant: AccountantKind,
    /// Its epsilon, if it applied.
    pub epsilon: Option<f64>,
    /// Why it did not apply, if it did not.
    pub reason: Option<String>,
}

/// Result of an epsilon query.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpsilonReport {
    /// The epsilon bound.
    pub epsilon: f64,
    /// The delta it holds at.
    pub delta: f64,
    /// The accountant that produced `epsilon` (for `Best`: the winner).
    pub accountant: AccountantKind,
    /// The RDP order that achieved the bound, when the RDP accountant produced it.
    pub rdp_order: Option<f64>,
    /// For `Best`: every concrete accountant's answer.
    pub candidates: Vec<Candidate>,
}

/// Epsilon of a ledger at `delta`, by accountant `kind`.
///
/// Errors: invalid events or delta; `NotApplicable` when the accountant
/// cannot bound this ledger (e.g. `Exact` with a sampling rate below 1).
pub fn epsilon(
    events: &[PrivacyEvent],
    delta: f64,
    kind: AccountantKind,
) -> Result<EpsilonReport, Error> {
    let d = Delta::new(delta)?.get();
    let g = Grouped::new(events)?;
    epsilon_with_slack(&g, d, kind)
}

/// Epsilon at `delta` of a ledger whose releases are within total variation
/// τ of the Gaussian mechanisms accounted (τ = [`Grouped::tv_slack_for`] the
/// accountant): the least ε (up to a relative margin of 1e-6) with
/// δ_acc(ε) + (1 + e^ε)·τ ≤ δ, where δ_acc is the accountant's bound for
/// the exact mechanisms. `Best` is the smallest of the concrete accountants'
/// answers, each with its own slack.
///
/// Why: if M is (ε, δ_acc)-DP and M' is within total variation τ of M on
/// every input, then for every event S, P[M'(x) ∈ S] ≤ P[M(x) ∈ S] + τ ≤
/// e^ε P[M(x') ∈ S] + δ_acc + τ ≤ e^ε P[M'(x') ∈ S] + δ_acc + (1 + e^ε)τ.
/// The total variation of an adaptive composition is at most the sum of
/// its parts (a hybrid argument), which is what the ledger records.
///
/// The iteration ε_{k+1} = ε_acc(δ − (1 + e^{ε_k + m})τ) only grows; once
/// ε_{k+1} ≤ ε_k + m, δ_acc(ε_{k+1}) ≤ δ − (1 + e^{ε_{k+1}})τ, so ε_{k+1}
/// is a valid answer. With the slacks Tessera records it stops at k = 1. At
/// a large ε the factor e^ε can leave no room at all; that accountant then
/// does not apply (another may: RDP needs no slack for full participation).
fn epsilon_with_slack(
    g: &Grouped,
    delta: f64,
    kind: AccountantKind,
) -> Result<EpsilonReport, Error> {
    if kind == AccountantKind::Best && g.has_slack() {
        return best_with_slack(g, delta);
    }
    let tau = g.tv_slack_for(kind);
    if tau == 0.0 {
        return epsilon_grouped(g, delta, kind);
    }
    let too_much = |accountant| Error::NotApplicable {
        accountant,
        reason: format!(
            "the ledger's total-variation slack {tau:e} leaves no room in delta = {delta:e}"
        ),
    };
    let mut eps = epsilon_grouped(g, delta, kind)?.epsilon;
    for _ in 0..64 {
        let target = eps + 1e-6 * eps.max(1.0);
        let rest = delta - (1.0 + target.exp()) * tau;
        // NaN counts as no room.
        if rest.is_nan() || rest <= 0.0 {
            return Err(too_much(kind));
        }
        let mut r = epsilon_grouped(g, rest, kind)?;
        if r.epsilon <= target {
            r.delta = delta;
            return Ok(r);
        }
        eps = r.epsilon;
    }
    Err(too_much(kind))
}

/// `Best` over a ledger with slack: every concrete accountant with its own
/// slack, the smallest answer.
fn best_with_slack(g: &Grouped, delta: f64) -> Result<EpsilonReport, Error> {
    let mut candidates = Vec::new();
    let mut best: Option<EpsilonReport> = None;
    for k in AccountantKind::CONCRETE {
        match epsilon_with_slack(g, delta, k) {
            Ok(r) => {
                candidates.push(Candidate {
                    accountant: k,
                    epsilon: Some(r.epsilon),
                    reason: None,
                });
                if best.as_ref().is_none_or(|b| r.epsilon < b.epsilon) {
                    best = Some(r);
                }
            }
            Err(Error::NotApplicable { reason, .. }) => candidates.push(Candidate {
                accountant: k,
                epsilon: None,
                reason: Some(reason),
            }),
            Err(e) => return Err(e),
        }
    }
    let mut b = best.ok_or_else(|| Error::NotApplicable {
        accountant: AccountantKind::Best,
        reason: "no accountant applies".into(),
    })?;
    b.candidates = candidates;
    Ok(b)
}

pub(crate) fn epsilon_grouped(
    g: &Grouped,
    delta: f64,
    kind: AccountantKind,
) -> Result<EpsilonReport, Error> {
    let r = epsilon_grouped_inner(g, delta, kind)?;
    if r.epsilon.is_finite() {
        Ok(r)
    } else {
        Err(Error::NotApplicable {
            accountant: kind,
            reason: "the epsilon bound is not finite (too little noise for this ledger)".into(),
        })
    }
}

fn epsilon_grouped_inner(
    g: &Grouped,
    delta: f64,
    kind: AccountantKind,
) -> Result<EpsilonReport, Error> {
    let report = |epsilon, accountant, rdp_order| EpsilonReport {
        epsilon,
        delta,
        accountant,
        rdp_order,
        candidates: Vec::new(),
    };
    match kind {
        AccountantKind::Exact => {
            let mu = exact::ledger_mu(g)?;
            Ok(report(exact::gaussian_epsilon(mu, delta), kind, None))
        }
        AccountantKind::Rdp => {
            let (e, a) = rdp::RdpCurve::from_grouped(g).epsilon(delta)?;
            match g.pure_epsilon_sum() {
                Some(sum) if sum <= e => Ok(report(sum, kind, None)),
                _ => Ok(report(e, kind, Some(a))),
            }
        }
        AccountantKind::Pld => {
            let e =
                pld::ComposedPld::from_grouped(g, pld::PldOptions::default())?.epsilon(delta)?;
            Ok(report(
                g.pure_epsilon_sum().map_or(e, |s| s.min(e)),
                kind,
                None,
            ))
        }
        AccountantKind::Best => {
            let mut candidates = Vec::new();
            let mut best: Option<EpsilonReport> = None;
            for k in AccountantKind::CONCRETE {
                // Exact is the true value: nothing can beat it, skip the rest.
                if best
                    .as_ref()
                    .is_some_and(|b| b.accountant == AccountantKind::Exact)
                {
                    break;
                }
                match epsilon_grouped(g, delta, k) {
                    Ok(r) => {
                        candidates.push(Candidate {
                            accountant: k,
                            epsilon: Some(r.epsilon),
                            reason: None,
                        });
                        if best.as_ref().is_none_or(|b| r.epsilon < b.epsilon) {
                            best = Some(r);
                        }
                    }
                    Err(Error::NotApplicable { reason, .. }) => {
                        candidates.push(Candidate {
                            accountant: k,
                            epsilon: None,
                            reason: Some(reason),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut b = best.ok_or_else(|| Error::NotApplicable {
                accountant: AccountantKind::Best,
                reason: "no accountant applies".into(),
            })?;
            b.candidates = candidates;
            Ok(b)
        }
    }
}

/// Delta of a ledger at `epsilon`, by accountant `kind` (for `Best`: the
/// smallest valid delta).
pub fn delta(events: &[PrivacyEvent], epsilon: f64, kind: AccountantKind) -> Result<f64, Error> {
    let e = Epsilon::new(epsilon)?.get();
    let g = Grouped::new(events)?;
    // Releases within total variation τ of the accounted mechanisms: see
    // `epsilon_with_slack`. Each accountant adds its own slack; `Best` is
    // the smallest valid answer.
    let with_slack = |k: AccountantKind| -> Result<f64, Error> {
        let d = delta_exact_mechanisms(&g, e, k)?;
        Ok((d + (1.0 + e.exp()) * g.tv_slack_for(k)).min(1.0))
    };
    if kind != AccountantKind::Best || !g.has_slack() {
        return with_slack(kind);
    }
    let mut best: Option<f64> = None;
    for k in AccountantKind::CONCRETE {
        match with_slack(k) {
            Ok(d) => best = Some(best.map_or(d, |b| b.min(d))),
            Err(Error::NotApplicable { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    best.ok_or_else(|| Error::NotApplicable {
        accountant: AccountantKind::Best,
        reason: "no accountant applies".into(),
    })
}

fn delta_exact_mechanisms(g: &Grouped, e: f64, kind: AccountantKind) -> Result<f64, Error> {
    // Basic composition: a pure-DP ledger is (sum of epsilons, 0)-DP.
    if kind != AccountantKind::Exact && g.pure_epsilon_sum().is_some_and(|s| e >= s) {
        return Ok(0.0);
    }
    match kind {
        AccountantKind::Exact => Ok(exact::gaussian_delta(exact::ledger_mu(g)?, e)),
        AccountantKind::Rdp => Ok(rdp::RdpCurve::from_grouped(g).delta(e).0),
        AccountantKind::Pld => {
            Ok(pld::ComposedPld::from_grouped(g, pld::PldOptions::default())?.delta(e))
        }
        AccountantKind::Best => {
            if let Ok(mu) = exact::ledger_mu(g) {
                return Ok(exact::gaussian_delta(mu, e));
            }
            let r = rdp::RdpCurve::from_grouped(g).delta(e).0;
            let p = pld::ComposedPld::from_grouped(g, pld::PldOptions::default())?.delta(e);
            Ok(r.min(p))
        }
    }
}
