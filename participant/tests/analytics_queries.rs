//! A site's side of analytics rounds, driven without a network: the site
//! next to the planted CSV (see `common`) with an `[analytics]` policy.
//!
//! - a sane count is answered: accepted, its exact bounded count sent as
//!   the 64-bit integer input, and its discrete-Laplace event in the site's
//!   ledger before the input left;
//! - hostile or malformed query terms — text that does not parse, a text
//!   past the parser's bound, deep nesting, NaN / infinite / negative / both
//!   noises, a zero or huge row cap, a wrong dimension, another encoding, an
//!   announced noise that is not the query's, no secure aggregation — are
//!   each declined with their code and fixed text, never a panic, and
//!   nothing of the data, no input and no ledger row follows;
//! - a column the policy does not allow, noise below the site's floor for
//!   the kind, a row cap above the site's, a column the data lacks, and a
//!   query past the site's own budget are declined likewise;
//! - the same round number replayed after an answer is not answered twice
//!   (the ledger refuses a second row for it).

mod common;

use common::*;
use tessera_participant::ledger::LedgerStore;
use tessera_participant::site::Site;
use tessera_proto::v1::{self, DeclineCode, coordinator_message::Body as In};

const POLICY: &str = "[analytics]\nallowed_columns = [\"x1\", \"x3\", \"y\"]\n\
                      min_noise_multiplier = { count = 0.5, histogram = 1.0 }\nmax_rows = 2000\n";

/// A sane count announcement with the query's own terms.
fn query(round: u64, text: &str, max_rows: u64, epsilon: f64) -> v1::RoundAnnounce {
    v1::RoundAnnounce {
        round,
        kind: v1::AggregationKind::Analytics as i32,
        dimension: 1,
        privacy: Some(v1::PrivacyTerms {
            enabled: true,
            noise_multiplier: 1.0 / epsilon,
            clip_norm: max_rows as f64,
            sampling_rate: 1.0,
            delta: 1e-5,
            ..Default::default()
        }),
        secagg: None,
        encoding: Some(v1::Encoding {
            scale_bits: 0,
            modulus_bits: 64,
        }),
        analytics: Some(v1::AnalyticsQuery {
            query: text.into(),
            max_rows,
            epsilon,
            noise_multiplier: 0.0,
        }),
        ..Default::default()
    }
}

fn site(dir: &SiteDir, rest: &str) -> Site {
    // Plain sums, so that the input can be read back here.
    dir.joined(
        "",
        &format!("{rest}[privacy]\nrequire_secure_aggregation = false\n"),
    )
}

fn announce(site: &mut Site, out: &mut Outbox, a: v1::RoundAnnounce) {
    out.handle(site, message(In::Announce(a)));
}

#[test]
fn a_count_is_answered_and_recorded_before_its_input_leaves() {
    let dir = SiteDir::new();
    let mut s = site(&dir, POLICY);
    let mut out = Outbox::default();
    announce(&mut s, &mut out, query(1, "count where x3 > 30", 1500, 1.0));
    assert!(out.reply(1).expect("a reply").accept);
    let input = plain_input(
        &out,
        1,
        v1::Encoding {
            scale_bits: 0,
            modulus_bits: 64,
        },
    );
    let exact = (0..ROWS).filter(|i| (i * 7 % 40) > 30).count() as f64;
    assert_eq!(input, vec![exact]);
    let rows = dir.ledger().contributions().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, "analytics");
    assert_eq!(
        rows[0].event,
        Some(tessera_privacy::PrivacyEvent::DiscreteLaplace {
            epsilon: 1.0,
            count: 1
        })
    );
    // The row cap bounds the rows used: a cap of 10 counts 10.
    announce(&mut s, &mut out, query(2, "count where x3 > 30", 10, 1.0));
    let capped = plain_input(
        &out,
        2,
        v1::Encoding {
            scale_bits: 0,
            modulus_bits: 64,
        },
    );
    assert_eq!(capped, vec![10.0]);
    // The same round replayed: no second answer, no second row.
    let before = out.input_chunks(2).len();
    announce(&mut s, &mut out, query(2, "count where x3 > 30", 10, 1.0));
    assert_eq!(out.input_chunks(2).len(), before);
    assert_eq!(dir.ledger().contributions().unwrap().len(), 2);
}

#[test]
fn hostile_and_refused_queries_are_declined_with_their_code() {
    let dir = SiteDir::new();
    let mut s = site(&dir, POLICY);
    let mut out = Outbox::default();
    let mut cases: Vec<(v1::RoundAnnounce, DeclineCode)> = Vec::new();
    let base = |r| query(r, "count where x3 > 30", 100, 1.0);
    let with_query = |r, text: &str| query(r, text, 100, 1.0);
    for text in [
        "",
        "count wher x3 > 30",
        "count where x3 >",
        "drop table patients",
        "count where x3 > 1e999",
        "mean x1 in [5, 1]",
        "histogram x1 edges [3, 2, 1]",
        "top 3 x1 among [1, 2]",
        "count where x3 > 30 \u{0}",
    ] {
        cases.push((
            with_query(cases.len() as u64 + 1, text),
            DeclineCode::InvalidQuery,
        ));
    }
    let long = format!("count where {}", "x3 > 1 and ".repeat(1000) + "x3 > 1");
    cases.push((
        with_query(cases.len() as u64 + 1, &long),
        DeclineCode::InvalidQuery,
    ));
    let deep = format!("count where {}x3 > 1{}", "(".repeat(200), ")".repeat(200));
    cases.push((
        with_query(cases.len() as u64 + 1, &deep),
        DeclineCode::InvalidQuery,
    ));
    for (eps, sigma) in [
        (f64::NAN, 0.0),
        (f64::INFINITY, 0.0),
        (-1.0, 0.0),
        (0.0, 0.0),
        (1.0, 1.0),
        (1e9, 0.0),
    ] {
        let mut a = base(cases.len() as u64 + 1);
        let q = a.analytics.as_mut().unwrap();
        q.epsilon = eps;
        q.noise_multiplier = sigma;
        cases.push((a, DeclineCode::InvalidQuery));
    }
    for rows in [0, u64::MAX] {
        let mut a = base(cases.len() as u64 + 1);
        a.analytics.as_mut().unwrap().max_rows = rows;
        cases.push((a, DeclineCode::InvalidQuery));
    }
    let mut a = base(cases.len() as u64 + 1);
    a.dimension = 7;
    cases.push((a, DeclineCode::InvalidTerms));
    let mut a = base(cases.len() as u64 + 1);
    a.encoding = Some(v1::Encoding {
        scale_bits: 16,
        modulus_bits: 32,
    });
    cases.push((a, DeclineCode::InvalidEncoding));
    // The noise announced for the ledger is not the query's own.
    let mut a = base(cases.len() as u64 + 1);
    a.privacy.as_mut().unwrap().noise_multiplier = 100.0;
    cases.push((a, DeclineCode::InvalidTerms));
    let mut a = base(cases.len() as u64 + 1);
    a.analytics = None;
    cases.push((a, DeclineCode::InvalidTerms));
    // The site's own policy.
    cases.push((
        with_query(cases.len() as u64 + 1, "count where x2 > 0.5"),
        DeclineCode::ColumnNotAllowed,
    ));
    cases.push((
        with_query(cases.len() as u64 + 1, "mean x2 in [0, 1]"),
        DeclineCode::ColumnNotAllowed,
    ));
    // Floor 0.5 for counts: ε = 4 is a multiplier of 0.25.
    cases.push((
        query(cases.len() as u64 + 1, "count", 100, 4.0),
        DeclineCode::NoiseBelowMinimum,
    ));
    let mut h = query(
        cases.len() as u64 + 1,
        "histogram x1 edges [0, 50, 100]",
        100,
        1.0,
    );
    h.dimension = 2;
    let q = h.analytics.as_mut().unwrap();
    q.epsilon = 0.0;
    q.noise_multiplier = 0.5;
    h.privacy.as_mut().unwrap().noise_multiplier = 0.5;
    cases.push((h, DeclineCode::NoiseBelowMinimum));
    cases.push((
        query(cases.len() as u64 + 1, "count", 5000, 1.0),
        DeclineCode::LimitsExceeded,
    ));
    for (a, want) in cases {
        let round = a.round;
        let text = a
            .analytics
            .as_ref()
            .map(|q| q.query.chars().take(60).collect::<String>());
        announce(&mut s, &mut out, a);
        let reply = out
            .reply(round)
            .unwrap_or_else(|| panic!("no reply to {text:?}"));
        assert_eq!(declined(reply), want, "{text:?}");
        assert!(out.input_chunks(round).is_empty(), "{text:?}");
    }
    assert!(dir.ledger().contributions().unwrap().is_empty());
    assert!(out.exits.is_empty(), "{:?}", out.exits);
    // Still answering after all that.
    announce(&mut s, &mut out, query(1000, "count where y = 1", 100, 1.0));
    assert!(out.reply(1000).unwrap().accept);
}

#[test]
fn missing_columns_secure_aggregation_and_the_budget_are_the_sites_call() {
    let dir = SiteDir::new();
    let policy = "[analytics]\nallowed_columns = [\"x1\", \"weight\"]\n";
    // A column the data does not have: declined on the header.
    let mut s = site(&dir, policy);
    let mut out = Outbox::default();
    announce(
        &mut s,
        &mut out,
        query(1, "count where weight > 1", 100, 1.0),
    );
    assert_eq!(declined(out.reply(1).unwrap()), DeclineCode::ColumnMissing);
    // No `[analytics]` at all: every query declined.
    let dir = SiteDir::new();
    let mut s = site(&dir, "");
    announce(&mut s, &mut out, query(2, "count", 100, 1.0));
    assert_eq!(
        declined(out.reply(2).unwrap()),
        DeclineCode::ColumnNotAllowed
    );
    // Secure aggregation required by default for a private release.
    let dir = SiteDir::new();
    let mut s = dir.joined("", policy);
    announce(&mut s, &mut out, query(3, "count where x1 > 1", 100, 1.0));
    assert_eq!(
        declined(out.reply(3).unwrap()),
        DeclineCode::SecureAggregationRequired
    );
    // The site's own budget: ε = 1 per count, at most 2.5 in all.
    let dir = SiteDir::new();
    let mut s = dir.joined(
        "",
        &format!("{policy}[privacy]\nmax_epsilon = 2.5\nrequire_secure_aggregation = false\n"),
    );
    for r in 10..12 {
        announce(&mut s, &mut out, query(r, "count where x1 > 1", 100, 1.0));
        assert!(out.reply(r).unwrap().accept);
    }
    announce(&mut s, &mut out, query(12, "count where x1 > 1", 100, 1.0));
    assert_eq!(
        declined(out.reply(12).unwrap()),
        DeclineCode::BudgetExceeded
    );
    assert_eq!(dir.ledger().contributions().unwrap().len(), 2);
}
