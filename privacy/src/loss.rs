//! Privacy-loss units as types.
//!
//! Following the typed-measure design of OpenDP (`measures`), an epsilon and
//! a delta are different things and cannot be mixed up by accident. The
//! public entry points keep plain `f64` for callers; these newtypes are what
//! the accountants use internally and what validation produces.

use crate::Error;

/// A privacy-loss bound epsilon (natural log units), finite and >= 0.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Epsilon(f64);

impl Epsilon {
    /// Validates an epsilon: finite and >= 0.
    pub fn new(value: f64) -> Result<Self, Error> {
        if value.is_finite() && value >= 0.0 {
            Ok(Self(value))
        } else {
            Err(Error::InvalidEpsilon(value))
        }
    }

    /// Validates an epsilon that must be strictly positive (a mechanism
    /// parameter or a calibration target).
    pub fn positive(value: f64) -> Result<Self, Error> {
        if value.is_finite() && value > 0.0 {
            Ok(Self(value))
        } else {
            Err(Error::InvalidEpsilon(value))
        }
    }

    /// The value in nats.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A failure probability delta in (0, 1).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Delta(f64);

impl Delta {
    /// Validates a delta: strictly between 0 and 1.
    pub fn new(value: f64) -> Result<Self, Error> {
        if value > 0.0 && value < 1.0 {
            Ok(Self(value))
        } else {
            Err(Error::InvalidDelta(value))
        }
    }

    /// The probability.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A noise multiplier sigma: noise standard deviation divided by the L2
/// sensitivity. Finite and > 0.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct NoiseMultiplier(f64);

impl NoiseMultiplier {
    /// Validates a noise multiplier.
    pub fn new(value: f64) -> Result<Self, Error> {
        if value.is_finite() && value > 0.0 {
            Ok(Self(value))
        } else {
            Err(Error::InvalidNoiseMultiplier(value))
        }
    }

    /// The multiplier.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A Poisson sampling rate q in (0, 1]; 1 means full participation.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SamplingRate(f64);

impl SamplingRate {
    /// Validates a sampling rate.
    pub fn new(value: f64) -> Result<Self, Error> {
        if value > 0.0 && value <= 1.0 {
            Ok(Self(value))
        } else {
            Err(Error::InvalidSamplingRate(value))
        }
    }

    /// The rate.
    pub fn get(self) -> f64 {
        self.0
    }
}
