//! The fixed texts of the codes a participant sends when it declines a
//! round or rejects the task.
//!
//! A site never puts anything derived from its data (values, counts, file
//! names, error messages of its CSV reader) on the wire: it sends a code,
//! and the `reason` field carries exactly the text below. Both sides use
//! these texts, so a coordinator's log reads the same whichever site wrote it.

use crate::v1::{DeclineCode, RejectCode};

/// The fixed text of a decline code.
pub fn decline_text(code: DeclineCode) -> &'static str {
    match code {
        DeclineCode::Unspecified => "declined",
        DeclineCode::NotReady => "no task or data loaded",
        DeclineCode::PrivacyRequired => {
            "the round is not differentially private and this site requires privacy"
        }
        DeclineCode::NoiseBelowMinimum => {
            "the announced noise multiplier is below this site's minimum"
        }
        DeclineCode::BudgetExceeded => "the round would take this site past its privacy budget",
        DeclineCode::SecureAggregationRequired => {
            "the round has secure aggregation off and this site requires it"
        }
        DeclineCode::InvalidTerms => "the announced privacy terms are invalid or inconsistent",
        DeclineCode::InvalidEncoding => {
            "the announced fixed-point encoding cannot carry this site's contribution"
        }
        DeclineCode::LimitsExceeded => {
            "the announcement exceeds this site's limits or does not match the task"
        }
        DeclineCode::InvalidSecureAggregation => {
            "the secure-aggregation setup is invalid or cannot be checked"
        }
        DeclineCode::LedgerUnavailable => "this site cannot account or record the round",
        DeclineCode::ColumnNotAllowed => "the query reads a column this site does not allow",
        DeclineCode::InvalidQuery => "the announced query does not parse or its plan is invalid",
        DeclineCode::ColumnMissing => "the query reads a column this site's data does not have",
    }
}

/// The fixed text of a task-rejection code.
pub fn reject_text(code: RejectCode) -> &'static str {
    match code {
        RejectCode::Unspecified => "task rejected",
        RejectCode::InvalidTask => "the task is invalid or names an unknown model",
        RejectCode::ColumnNotAllowed => "the task names a column this site does not allow",
        RejectCode::DataDoesNotFit => "the site's data cannot be read or does not fit the task",
    }
}

/// The code of a received decline, and its fixed text (an unknown code
/// from a newer participant reads as unspecified).
pub fn decline_of(reply: &crate::v1::RoundReply) -> (DeclineCode, &'static str) {
    let code = DeclineCode::try_from(reply.code).unwrap_or(DeclineCode::Unspecified);
    (code, decline_text(code))
}

/// The code of a received task rejection, and its fixed text.
pub fn reject_of(r: &crate::v1::TaskRejected) -> (RejectCode, &'static str) {
    let code = RejectCode::try_from(r.code).unwrap_or(RejectCode::Unspecified);
    (code, reject_text(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_text() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..=13 {
            let code = DeclineCode::try_from(i).expect("declared");
            assert!(seen.insert(decline_text(code)), "{code:?}");
        }
        assert!(
            DeclineCode::try_from(14).is_err(),
            "a new code needs a text here"
        );
        for i in 0..=3 {
            let code = RejectCode::try_from(i).expect("declared");
            assert!(seen.insert(reject_text(code)), "{code:?}");
        }
        assert!(
            RejectCode::try_from(4).is_err(),
            "a new code needs a text here"
        );
    }
}
