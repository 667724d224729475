//! The live status `tessera-coordinator status` and the web page read: what
//! the driver writes, and when.
//!
//! The status lists every connected site's declared terms, so building it is
//! O(sites). Rebuilding it after every inbound message made a round O(sites²)
//! in the driver (a thousand sites spent a tenth of the coordinator's time
//! here). It is therefore rebuilt at once only when its headline (round and
//! stage) moves, and otherwise at most every [`REFRESH`]; the driver wakes up
//! for a deferred refresh ([`LiveStatusWriter::refresh_at`]), so what the
//! page shows is never older than that. It is written only when it differs
//! from the last write (its time stamp aside): a site sending a flood of
//! messages that change nothing costs no store write.

use std::time::{Duration, Instant};

use tracing::error;

use super::Driver;
use crate::store::{LiveStatus, SiteBudgetStatus};
use tessera_common::time::now_ms;

/// The longest a change other than the round or stage (connections, the
/// sites' terms) waits before the status shows it.
pub(super) const REFRESH: Duration = Duration::from_millis(500);

/// The round and stage a status shows (a change is written at once).
type Headline = (Option<u64>, Option<u32>, String);

/// Decides when the live status is rebuilt and written.
#[derive(Debug, Default)]
pub(super) struct LiveStatusWriter {
    /// The last status written, time stamp zeroed.
    last: Option<LiveStatus>,
    /// When the status was last rebuilt.
    built_at: Option<Instant>,
    /// A rebuild was skipped since the last one (something may have changed).
    deferred: bool,
    writes: u64,
}

impl LiveStatusWriter {
    /// Whether to rebuild the status now: its headline moved, or the last
    /// rebuild is at least [`REFRESH`] old. A skipped rebuild is remembered
    /// (see [`Self::refresh_at`]).
    fn due(&mut self, headline: &Headline, now: Instant) -> bool {
        let moved = self.last.as_ref().is_none_or(|l| {
            (l.current_round, l.training_round, &l.stage) != (headline.0, headline.1, &headline.2)
        });
        let stale = self.built_at.is_none_or(|at| now >= at + REFRESH);
        let due = moved || stale;
        self.deferred = !due;
        if due {
            self.built_at = Some(now);
        }
        due
    }

    /// When a deferred rebuild is due (`None` when none is pending).
    pub(super) fn refresh_at(&self) -> Option<Instant> {
        match (self.deferred, self.built_at) {
            (true, Some(at)) => Some(at + REFRESH),
            _ => None,
        }
    }

    /// Whether `status` differs from the last one written (the time stamp
    /// aside); records it as written when it does.
    fn should_write(&mut self, status: &LiveStatus) -> bool {
        let mut shown = status.clone();
        shown.updated_at_ms = 0;
        if self.last.as_ref() == Some(&shown) {
            return false;
        }
        self.last = Some(shown);
        self.writes += 1;
        true
    }

    /// Writes so far.
    #[cfg(test)]
    fn writes(&self) -> u64 {
        self.writes
    }
}

impl Driver {
    /// Writes the live status if it is due and what it shows changed since
    /// the last write.
    pub(super) fn write_live_status(&mut self) {
        let current = self.machine.current_round();
        let headline = (
            current.map(|c| c.0),
            current.and_then(|c| c.1),
            match current {
                Some((_, _, stage)) => stage.to_owned(),
                None => self.machine.describe(),
            },
        );
        if !self.live.due(&headline, Instant::now()) {
            return;
        }
        let (current_round, training_round, stage) = headline;
        let status = LiveStatus {
            current_round,
            training_round,
            stage,
            connected: self.outboxes.len() as u32,
            pid: std::process::id(),
            updated_at_ms: now_ms(),
            site_budgets: self
                .machine
                .site_budgets()
                .into_iter()
                .map(|(name, b, exhausted)| SiteBudgetStatus {
                    name,
                    max_epsilon: b.max_epsilon,
                    delta: b.delta,
                    min_noise_multiplier: b.min_noise_multiplier,
                    epsilon_spent: b.epsilon_spent,
                    exhausted,
                })
                .collect(),
        };
        if !self.live.should_write(&status) {
            return;
        }
        if let Err(e) = self.store.set_live_status(&status) {
            error!(error = %e, "cannot write live status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(stage: &str, connected: u32, at: i64) -> LiveStatus {
        LiveStatus {
            current_round: Some(3),
            training_round: Some(2),
            stage: stage.to_owned(),
            connected,
            pid: 1,
            updated_at_ms: at,
            site_budgets: Vec::new(),
        }
    }

    fn headline(stage: &str) -> Headline {
        (Some(3), Some(2), stage.to_owned())
    }

    /// A flood of messages that change nothing costs no store write.
    #[test]
    fn unchanged_status_is_not_rewritten() {
        let mut w = LiveStatusWriter::default();
        assert!(w.should_write(&status("keys", 5, 0)));
        for at in 1..10_000 {
            assert!(!w.should_write(&status("keys", 5, at)));
        }
        assert!(w.should_write(&status("shares", 5, 10_001)));
        assert!(w.should_write(&status("shares", 4, 10_002)));
        assert_eq!(w.writes(), 3);
    }

    /// A new stage is rebuilt at once; other changes wait at most REFRESH,
    /// and the driver is told when to come back for them.
    #[test]
    fn stage_changes_are_immediate_and_the_rest_waits_at_most_refresh() {
        let t0 = Instant::now();
        let mut w = LiveStatusWriter::default();
        assert!(w.due(&headline("keys"), t0), "the first status is due");
        assert!(w.should_write(&status("keys", 5, 0)));
        assert_eq!(w.refresh_at(), None, "nothing deferred yet");

        // Messages of the same stage within REFRESH: deferred, with a wake-up.
        let soon = t0 + REFRESH / 4;
        assert!(!w.due(&headline("keys"), soon));
        assert_eq!(w.refresh_at(), Some(t0 + REFRESH));

        // The wake-up: due again, and nothing is pending after it.
        assert!(w.due(&headline("keys"), t0 + REFRESH));
        assert_eq!(w.refresh_at(), None);

        // A stage change right after a rebuild is not deferred.
        assert!(w.due(&headline("shares"), t0 + REFRESH + Duration::from_millis(1)));
    }
}
