//! Who may hold a session: the driver's admission policy for a verified
//! participant opening a session.
//!
//! - **Revoked** certificates (serial on the federation CA's CRL, as last
//!   loaded) are refused, and a session already open under one is closed:
//!   the TLS layer refuses them at the handshake after a reload, this also
//!   covers connections made before it.
//! - **Excluded** participants (named by secure aggregation for revealing a
//!   share that disagrees with every other holder's) are refused for the
//!   rest of this coordinator's run.
//! - **A second session under the same name** never knocks a site out of
//!   the round in progress: while the first session is open and the name
//!   is in that round's cohort, the newcomer waits (deferred) and replaces
//!   the first only when the round ends or the first session closes.
//!   Between rounds the newer session replaces the older one at once (a
//!   restarted participant whose old connection has not timed out yet gets
//!   in without waiting).

use std::collections::{HashMap, HashSet};

use tonic::Status;

/// What to do with a new session.
#[derive(Debug)]
pub enum Admit {
    /// Let it in (replacing any earlier session under its name).
    Accept,
    /// Let it wait until the round in progress ends (another session under
    /// its name takes part in it).
    Defer,
    /// Refuse it with this status.
    Refuse(Status),
}

/// The admission state.
#[derive(Debug, Default)]
pub struct Admission {
    excluded: HashMap<String, String>,
    revoked: HashSet<Vec<u8>>,
}

/// A certificate's serial number, as compared with the CRL's (leading zero
/// bytes stripped); empty if the certificate cannot be parsed.
pub fn serial_of(certificate: &[u8]) -> Vec<u8> {
    tessera_certs::serial_of(certificate).unwrap_or_default()
}

impl Admission {
    /// Decides on a session of `name` presenting `certificate`.
    /// `open_elsewhere`: another session under the name is open;
    /// `in_round`: the name is in the cohort of the round in progress.
    pub fn decide(
        &self,
        name: &str,
        certificate: &[u8],
        open_elsewhere: bool,
        in_round: bool,
    ) -> Admit {
        if self.is_revoked(certificate) {
            return Admit::Refuse(Status::permission_denied(format!(
                "the certificate of `{name}` is revoked by the federation CA"
            )));
        }
        if let Some(why) = self.excluded.get(name) {
            return Admit::Refuse(Status::permission_denied(format!(
                "participant `{name}` is excluded from this federation: {why}"
            )));
        }
        if open_elsewhere && in_round {
            return Admit::Defer;
        }
        Admit::Accept
    }

    /// Refuses `name` from now on, for `why`.
    pub fn exclude(&mut self, name: &str, why: &str) {
        self.excluded.insert(name.to_owned(), why.to_owned());
    }

    /// Replaces the revoked serial numbers (from a freshly loaded CRL).
    pub fn set_revoked(&mut self, serials: HashSet<Vec<u8>>) {
        self.revoked = serials;
    }

    /// Whether `certificate`'s serial is on the CRL.
    pub fn is_revoked(&self, certificate: &[u8]) -> bool {
        !self.revoked.is_empty() && self.revoked.contains(&serial_of(certificate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(a: Admit) -> Status {
        match a {
            Admit::Refuse(s) => s,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_second_session_waits_only_during_its_round() {
        let a = Admission::default();
        assert!(matches!(a.decide("x", b"", false, true), Admit::Accept));
        assert!(matches!(a.decide("x", b"", true, false), Admit::Accept));
        assert!(matches!(a.decide("x", b"", true, true), Admit::Defer));
    }

    #[test]
    fn excluded_participants_are_refused() {
        let mut a = Admission::default();
        a.exclude("liar", "revealed an inconsistent share");
        let s = refused(a.decide("liar", b"", false, false));
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("inconsistent share"));
        assert!(matches!(
            a.decide("other", b"", false, false),
            Admit::Accept
        ));
    }
}
