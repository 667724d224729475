//! The phases of a round that are timed, one enum for the machine, the
//! store's round records and the metrics.

/// A phase of a round, timed for the metrics (the label of
/// `tessera_round_stage_duration_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Federated statistics (pooled feature moments).
    Statistics,
    /// Public-key advertisement.
    Keys,
    /// Exchange of encrypted mask-seed shares.
    Shares,
    /// Collection of masked inputs.
    MaskedInput,
    /// Unmasking (share collection and mask removal).
    Unmask,
    /// Noise addition, decoding and the server optimizer step.
    Noise,
    /// The privacy-ledger commit.
    Ledger,
    /// Checkpoint and model release.
    Release,
}

impl Phase {
    /// Every stage, in round order.
    pub const ALL: [Phase; 8] = [
        Phase::Statistics,
        Phase::Keys,
        Phase::Shares,
        Phase::MaskedInput,
        Phase::Unmask,
        Phase::Noise,
        Phase::Ledger,
        Phase::Release,
    ];

    /// The label value of this stage.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Statistics => "statistics",
            Phase::Keys => "keys",
            Phase::Shares => "shares",
            Phase::MaskedInput => "masked_input",
            Phase::Unmask => "unmask",
            Phase::Noise => "noise",
            Phase::Ledger => "ledger",
            Phase::Release => "release",
        }
    }

    /// Position in [`Phase::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| format!("unknown round stage {s:?}"))
    }
}
