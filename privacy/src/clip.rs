//! L2 clipping of a model update.
//!
//! Clipping bounds each participant's contribution to the sum to norm C,
//! which is what makes the sensitivity of the sum C (the privacy contract).
//! Non-finite values are an error: a NaN would otherwise pass through the
//! norm computation unclipped.

use crate::Error;

/// What [`clip_l2`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipOutcome {
    /// The L2 norm of the update before clipping.
    pub norm_before: f64,
    /// Whether the update was scaled down.
    pub scaled: bool,
}

fn check_norm(max_norm: f64) -> Result<(), Error> {
    if max_norm.is_finite() && max_norm > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidClipNorm(max_norm))
    }
}

/// Norm of a slice, computed with scaling so that it neither overflows nor
/// underflows for finite inputs.
fn l2_norm(values: impl Iterator<Item = f64> + Clone) -> Result<f64, Error> {
    let mut max = 0.0f64;
    for v in values.clone() {
        if !v.is_finite() {
            return Err(Error::NonFinite);
        }
        max = max.max(v.abs());
    }
    if max == 0.0 {
        return Ok(0.0);
    }
    let s: f64 = values.map(|v| (v / max) * (v / max)).sum();
    Ok(max * s.sqrt())
}

/// Scales `update` in place so that its L2 norm is at most `max_norm`.
///
/// Errors: `NonFinite` if any value is NaN or infinite (the update is then
/// left untouched); `InvalidClipNorm` for a norm that is not finite and > 0.
/// A zero vector is returned unchanged.
pub fn clip_l2(update: &mut [f64], max_norm: f64) -> Result<ClipOutcome, Error> {
    check_norm(max_norm)?;
    let norm = l2_norm(update.iter().copied())?;
    if norm <= max_norm {
        return Ok(ClipOutcome {
            norm_before: norm,
            scaled: false,
        });
    }
    let f = max_norm / norm;
    update.iter_mut().for_each(|v| *v *= f);
    // Rounding can leave the norm a hair above the bound: shrink by ulps.
    let mut after = l2_norm(update.iter().copied())?;
    while after > max_norm {
        update.iter_mut().for_each(|v| *v *= 1.0 - f64::EPSILON);
        after = l2_norm(update.iter().copied())?;
    }
    Ok(ClipOutcome {
        norm_before: norm,
        scaled: true,
    })
}

/// [`clip_l2`] for `f32` updates; the norm is computed in `f64`.
pub fn clip_l2_f32(update: &mut [f32], max_norm: f64) -> Result<ClipOutcome, Error> {
    check_norm(max_norm)?;
    let norm = l2_norm(update.iter().map(|&v| f64::from(v)))?;
    if norm <= max_norm {
        return Ok(ClipOutcome {
            norm_before: norm,
            scaled: false,
        });
    }
    let f = max_norm / norm;
    update
        .iter_mut()
        .for_each(|v| *v = (f64::from(*v) * f) as f32);
    let mut after = l2_norm(update.iter().map(|&v| f64::from(v)))?;
    while after > max_norm {
        update.iter_mut().for_each(|v| *v *= 1.0 - f32::EPSILON);
        after = l2_norm(update.iter().map(|&v| f64::from(v)))?;
    }
    Ok(ClipOutcome {
        norm_before: norm,
        scaled: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_to_norm_and_keeps_small_updates() {
        let mut v = vec![3.0, 4.0];
        let o = clip_l2(&mut v, 1.0).unwrap();
        assert_eq!(
            o,
            ClipOutcome {
                norm_before: 5.0,
                scaled: true
            }
        );
        assert!((v[0] - 0.6).abs() < 1e-15 && (v[1] - 0.8).abs() < 1e-15);
        assert!(v.iter().map(|x| x * x).sum::<f64>().sqrt() <= 1.0);
        let mut w = vec![0.1, 0.2];
        assert!(!clip_l2(&mut w, 1.0).unwrap().scaled);
        assert_eq!(w, vec![0.1, 0.2]);
    }

    #[test]
    fn zero_vector_and_bad_input() {
        let mut z = vec![0.0; 4];
        assert_eq!(clip_l2(&mut z, 1.0).unwrap().norm_before, 0.0);
        let mut e: Vec<f64> = vec![];
        assert!(!clip_l2(&mut e, 1.0).unwrap().scaled);
        let mut n = vec![1.0, f64::NAN];
        assert_eq!(clip_l2(&mut n, 1.0), Err(Error::NonFinite));
        assert_eq!(n[0], 1.0);
        let mut i = vec![f32::INFINITY];
        assert_eq!(clip_l2_f32(&mut i, 1.0), Err(Error::NonFinite));
        assert!(matches!(
            clip_l2(&mut [1.0], 0.0),
            Err(Error::InvalidClipNorm(_))
        ));
        assert!(matches!(
            clip_l2(&mut [1.0], f64::NAN),
            Err(Error::InvalidClipNorm(_))
        ));
    }

    #[test]
    fn huge_values_do_not_overflow_the_norm() {
        let mut v = vec![1e300, 1e300];
        let o = clip_l2(&mut v, 1.0).unwrap();
        assert!(o.scaled && o.norm_before.is_finite());
        assert!(v.iter().map(|x| x * x).sum::<f64>().sqrt() <= 1.0);
        let mut f = vec![3.0f32, 4.0];
        clip_l2_f32(&mut f, 2.5).unwrap();
        assert!(f.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt() <= 2.5);
    }
}
