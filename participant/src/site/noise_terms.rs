//! The noise and encoding terms of a round, checked before the site reads
//! its data: the noise multiplier against the site's minimum (and σ_eff of
//! adaptive clipping against its parts), the share of the noise the site
//! adds itself under distributed or local placement, and the fixed-point
//! encoding's room for the clipped contribution, its rounding slack and
//! the noise in integer units (see [`super::terms`] for the whole check).

use tessera_model::round::AdaptiveTerms;
use tessera_model::{Announcement, PrivacyTerms, RoundKind};
use tessera_privacy::MIN_NOISE_UNITS;
use tessera_proto::v1::DeclineCode;
use tessera_secagg::FixedPoint;

use super::SitePolicy;
use super::terms::{Decline, decline, positive, same};

/// The noise a private round asks this site to add itself, checked against
/// everything else announced (None for central noise):
/// - every kind of round may have it (training updates, statistics,
///   evaluation sums), with the kind's own sensitivity as `clip_norm` (C,
///   or the bounds' or evaluation terms' sensitivity, checked above), but
///   not adaptive clipping (see the configuration check: its clipping bit
///   needs a noise scale of its own);
/// - distributed noise needs secure aggregation (the coordinator would
///   otherwise see this update with only its share of the noise), and its
///   summands are the cohort's size;
/// - the shares add up to the announced σ on the sum: √n·s = σ·Δ₂·2^f
///   (local noise: s = σ·C·2^f / √n with n the cohort, i.e. every site adds
///   the whole noise of one release);
/// - each share is at least `MIN_SITE_NOISE_UNITS`, where the distributed
///   discrete Gaussian's bound is the Gaussian's;
/// - the encoding leaves room for the cohort's clipped updates, their
///   rounding and every site's noise at its tail (12 standard deviations of
///   the summed noise, as the coordinator plans), so the sum cannot wrap.
pub(super) fn site_noise(
    a: &Announcement,
    kind: RoundKind,
    adaptive: bool,
    encoding: FixedPoint,
    clip_norm: f64,
    dimension: usize,
) -> Result<Option<f64>, Decline> {
    use DeclineCode as D;
    use tessera_model::Placement;
    let terms = &a.privacy;
    if terms.placement == Placement::Central {
        return Ok(None);
    }
    if adaptive {
        return decline(
            D::InvalidTerms,
            format!(
                "{} noise announced for a {} round with adaptive clipping",
                terms.placement,
                kind.as_str()
            ),
        );
    }
    let n = terms.noise_summands;
    let s = terms.site_noise_units;
    match (&a.secagg, terms.placement) {
        (None, Placement::Distributed) => {
            return decline(
                D::SecureAggregationRequired,
                "distributed noise without secure aggregation",
            );
        }
        (Some(sa), _) if sa.cohort.len() as u64 != u64::from(n) => {
            return decline(
                D::InvalidTerms,
                format!(
                    "noise of {n} sites announced for a cohort of {}",
                    sa.cohort.len()
                ),
            );
        }
        _ => {}
    }
    if n == 0 || !(s.is_finite() && s >= tessera_privacy::distributed::MIN_SITE_NOISE_UNITS) {
        return decline(
            D::InvalidTerms,
            format!(
                "site noise of {s} units over {n} sites (at least {} units each)",
                tessera_privacy::distributed::MIN_SITE_NOISE_UNITS
            ),
        );
    }
    let scale = f64::from(encoding.scale_bits).exp2();
    let l2 = clip_norm * scale;
    let sum_std = f64::from(n).sqrt() * s;
    let expected = match terms.placement {
        Placement::Local => s,
        _ => sum_std,
    };
    let announced = match terms.placement {
        Placement::Local => terms.noise_multiplier * l2 / f64::from(n).sqrt(),
        _ => terms.noise_multiplier * l2,
    };
    if !same(expected, announced) {
        return decline(
            D::InvalidTerms,
            format!(
                "site noise of {s} units over {n} sites does not make the announced σ = {} \
                 on the sum",
                terms.noise_multiplier
            ),
        );
    }
    let needed = f64::from(n) * (l2 + (dimension as f64).sqrt()) + 12.0 * sum_std;
    let limit = f64::from(encoding.modulus_bits - 1).exp2();
    if needed.is_nan() || needed >= limit {
        return decline(
            D::InvalidEncoding,
            format!(
                "the sum of {n} clipped updates and their noise needs {needed:.3e} units, \
                 more than 2^{} − 1",
                encoding.modulus_bits - 1
            ),
        );
    }
    if tessera_privacy::DiscreteGaussian::new(s).is_err() {
        return decline(D::InvalidTerms, format!("site noise of {s} units"));
    }
    Ok(Some(s))
}

/// Noise multipliers of a private round: positive, at least the site's
/// minimum, and with adaptive clipping σ_eff consistent with its parts.
pub(super) fn check_noise(
    policy: &SitePolicy,
    terms: &PrivacyTerms,
    adaptive: bool,
) -> Result<(), Decline> {
    use DeclineCode as D;
    let sigma = terms.noise_multiplier;
    if !positive(sigma) {
        return decline(
            D::InvalidTerms,
            format!("announced noise multiplier {sigma} is not positive"),
        );
    }
    if let Some(min) = policy.privacy.min_noise_multiplier
        && sigma < min
    {
        return decline(
            D::NoiseBelowMinimum,
            format!("announced noise multiplier {sigma} is below this site's minimum {min}"),
        );
    }
    if let (
        true,
        Some(AdaptiveTerms {
            update_noise_multiplier: update,
            clip_count_noise_multiplier: bit,
        }),
    ) = (adaptive, terms.adaptive)
    {
        if !(positive(update) && positive(bit)) {
            return decline(
                D::InvalidTerms,
                format!("adaptive clipping with noise multipliers σ_Δ = {update}, σ_b = {bit}"),
            );
        }
        let effective = tessera_privacy::calibrate::effective_noise_multiplier(update, bit);
        if !same(sigma, effective) {
            return decline(
                D::InvalidTerms,
                format!(
                    "announced σ_eff {sigma} differs from {effective}, that of σ_Δ = {update} and σ_b = {bit}"
                ),
            );
        }
    }
    Ok(())
}

pub(super) fn encoding_of(a: &Announcement) -> Result<FixedPoint, Decline> {
    let e = a.encoding;
    FixedPoint::new(e.scale_bits, e.modulus_bits)
        .map_err(|err| Decline::new(DeclineCode::InvalidEncoding, err.to_string()))
}

/// Checks that the encoding carries the site's clipped contribution — no
/// element larger than `largest` (when the site can know it before reading its
/// data) — and returns the norm to clip the first `clipped_len` elements to:
/// the clip norm less the rounding slack (None: not clipped).
pub(super) fn check_encoding(
    encoding: FixedPoint,
    adaptive: bool,
    clip_norm: f64,
    largest: Option<f64>,
    clipped_len: Option<usize>,
) -> Result<Option<f64>, Decline> {
    use DeclineCode as D;
    let scale = f64::from(encoding.scale_bits).exp2();
    let limit = f64::from(encoding.modulus_bits - 1).exp2();
    // The largest |element| the site can send: every coordinate of a clipped
    // update is at most C, the clipping bit is ±1/2, and every element of a
    // bounded statistics or evaluation vector is at most max_rows (counts
    // are at most the total weight, and the other sums of values in [−1, 1]
    // at most the count). Exact statistics have no bound the site could
    // check before reading its data.
    if let Some(x) = largest
        && let units = x * scale + 1.0
        && (units.is_nan() || units >= limit)
    {
        return decline(
            D::InvalidEncoding,
            format!(
                "values up to {x} do not fit {} fractional bits modulo 2^{}",
                encoding.scale_bits, encoding.modulus_bits
            ),
        );
    }
    if adaptive && encoding.scale_bits == 0 {
        return decline(
            D::InvalidEncoding,
            "the encoding cannot carry the clipping bit exactly",
        );
    }
    let Some(clipped_len) = clipped_len else {
        return Ok(None);
    };
    let clip_to = clip_norm - encoding.max_rounding_norm(clipped_len);
    if clip_to.is_nan() || clip_to <= 0.0 {
        return decline(
            D::InvalidEncoding,
            format!("clip norm {clip_norm} leaves nothing after the encoding's rounding slack"),
        );
    }
    Ok(Some(clip_to))
}

/// Checks the noise in integer units and returns the total-variation slack
/// of its discretisation over the released coordinates.
pub(super) fn noise_slack(
    encoding: FixedPoint,
    terms: &PrivacyTerms,
    adaptive: bool,
    clip_norm: f64,
    dimension: usize,
) -> Result<f64, Decline> {
    let scale = f64::from(encoding.scale_bits).exp2();
    // (σ in integer units, coordinates) of each noised part.
    let parts = if let (true, Some(ad)) = (adaptive, terms.adaptive) {
        vec![
            (
                ad.update_noise_multiplier * clip_norm * scale,
                dimension as u64 - 1,
            ),
            (ad.clip_count_noise_multiplier * scale, 1),
        ]
    } else {
        vec![(terms.noise_multiplier * clip_norm * scale, dimension as u64)]
    };
    let mut slack = 0.0;
    for (units, coordinates) in parts {
        if units.is_nan() || units < MIN_NOISE_UNITS {
            return decline(
                DeclineCode::InvalidEncoding,
                format!("noise of {units} integer units, below the minimum {MIN_NOISE_UNITS}"),
            );
        }
        slack += tessera_privacy::release_tv(units, coordinates).map_err(|e| {
            Decline::new(
                DeclineCode::InvalidTerms,
                format!("noise of {units} integer units: {e}"),
            )
        })?;
    }
    if !(slack.is_finite() && slack < 1.0) {
        return decline(
            DeclineCode::InvalidTerms,
            format!("total-variation slack {slack} of the round's noise"),
        );
    }
    Ok(slack)
}
