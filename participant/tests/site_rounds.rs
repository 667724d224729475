//! A site's rounds against a coordinator it does not trust: fixed codes
//! only, announced terms checked before the data is touched, no dropout
//! that depends on the data, and its own ledger recording the noise slack.

mod common;

use common::*;
use tessera_participant::ledger::LedgerStore;
use tessera_proto::reasons::reject_text;
use tessera_proto::v1::{
    self, DeclineCode, RejectCode, coordinator_message::Body as In,
    participant_message::Body as Out,
};

/// Sends `a` and returns the site's reply.
fn announce(
    site: &mut tessera_participant::site::Site,
    out: &mut Outbox,
    a: &v1::RoundAnnounce,
) -> v1::RoundReply {
    out.handle(site, message(In::Announce(a.clone())));
    out.reply(a.round).expect("a reply").clone()
}

fn no_secagg_required() -> &'static str {
    "[privacy]\nrequire_secure_aggregation = false\n"
}

// ---- 1. Fixed codes only -------------------------------------------------

#[test]
fn task_rejections_carry_only_their_fixed_code() {
    let dir = SiteDir::new();
    for (task, code) in [
        (
            task(&["x1", "probe"], "y", "> 0"),
            RejectCode::DataDoesNotFit,
        ),
        (
            task(&["x1"], "diagnosis", "> 0"),
            RejectCode::DataDoesNotFit,
        ),
        (
            task(&["x1", "nowhere"], "y", "> 0"),
            RejectCode::DataDoesNotFit,
        ),
        (
            v1::TaskSpec {
                model: "forest".into(),
                ..task(&["x1"], "y", "> 0")
            },
            RejectCode::InvalidTask,
        ),
    ] {
        let mut site = dir.site("", "");
        let mut out = Outbox::default();
        out.handle(&mut site, welcome(task));
        let [m] = &out.sent[..] else {
            panic!("{:?}", out.sent)
        };
        let Some(Out::TaskRejected(r)) = &m.body else {
            panic!("{m:?}")
        };
        assert_eq!(r.code, code as i32);
        assert_eq!(r.reason, reject_text(code));
        // The process exits with the same code as before, and the detail
        // (local only) is its reason.
        let (exit, reason) = &out.exits[0];
        assert_eq!(*exit, tessera_participant::site::EXIT_TASK_REJECTED);
        assert_ne!(reason, reject_text(code));
    }
}

#[test]
fn columns_outside_the_allow_list_are_refused_before_the_data_is_read() {
    let dir = SiteDir::new();
    let allow = r#"allowed_columns = ["x1", "x2", "x3", " y "]"#;
    let text = std::fs::read(&dir.csv).unwrap();
    // No data at all: a column off the list is refused before the site
    // parses anything, a listed one only because the data cannot serve it.
    std::fs::remove_file(&dir.csv).unwrap();
    for (task, code) in [
        (
            task(&["x1", "probe"], "y", "> 0"),
            RejectCode::ColumnNotAllowed,
        ),
        (
            task(&["x1"], "diagnosis", "> 0"),
            RejectCode::ColumnNotAllowed,
        ),
        (task(&["x1", "x2"], "y", "> 0"), RejectCode::DataDoesNotFit),
    ] {
        let mut site = dir.site(allow, "");
        let mut out = Outbox::default();
        out.handle(&mut site, welcome(task));
        assert!(
            matches!(&out.sent[0].body, Some(Out::TaskRejected(r))
                if r.code == code as i32 && r.reason == reject_text(code)),
            "{:?}",
            out.sent
        );
    }
    std::fs::write(&dir.csv, text).unwrap();
    let mut site = dir.site(allow, "");
    assert!(site.step(welcome(task(&FEATURES, "y", "> 0"))).is_empty());
}

#[test]
fn encoding_and_budget_declines_carry_only_their_fixed_code() {
    let dir = SiteDir::new();
    let mut site = dir.joined("", "[privacy]\nmax_epsilon = 0.01\n");
    let mut out = Outbox::default();
    let mut a = private_statistics(1);
    a.encoding = Some(v1::Encoding {
        scale_bits: 30,
        modulus_bits: 24,
    });
    assert_eq!(
        declined(&announce(&mut site, &mut out, &a)),
        DeclineCode::InvalidEncoding
    );
    assert_eq!(
        declined(&announce(&mut site, &mut out, &private_statistics(2))),
        DeclineCode::BudgetExceeded
    );
    assert!(out.input_chunks(1).is_empty() && out.input_chunks(2).is_empty());
}

// ---- 2. No data-dependent dropouts ---------------------------------------

#[test]
fn a_non_finite_update_is_sent_as_zeros_with_the_clipped_bit() {
    let dir = SiteDir::new();
    let mut site = dir.joined("", no_secagg_required());
    let mut out = Outbox::default();
    let mut a = private_training(3);
    a.secagg = None;
    // A tiny (positive) standard deviation makes the site's own standardised
    // values overflow in training: the update is not finite.
    a.preprocessing.as_mut().unwrap().std[0] = 1e-300;
    assert!(announce(&mut site, &mut out, &a).accept);
    for m in model(3, &[0.0; 4]) {
        out.handle(&mut site, m);
    }
    let v = plain_input(&out, 3, a.encoding.unwrap());
    assert_eq!(v, [0.0, 0.0, 0.0, 0.0, -0.5]);
    // It stays in the round: the ledger counts the contribution.
    assert_eq!(dir.ledger().contributions().unwrap().len(), 1);
}

#[test]
fn a_global_model_that_does_not_load_is_answered_with_zeros() {
    let dir = SiteDir::new();
    let mut site = dir.joined("", no_secagg_required());
    let mut out = Outbox::default();
    let mut a = private_training(4);
    a.secagg = None;
    let p = a.privacy.as_mut().unwrap();
    p.adaptive_clipping = false;
    p.noise_multiplier = 1.0;
    a.dimension = 4;
    assert!(announce(&mut site, &mut out, &a).accept);
    for m in model(4, &[f32::NAN, 0.0, 0.0, 0.0]) {
        out.handle(&mut site, m);
    }
    assert_eq!(plain_input(&out, 4, a.encoding.unwrap()), [0.0; 4]);
}

// ---- 3. Announced terms checked before the data is touched ---------------

#[test]
fn noise_placed_at_the_sites_is_checked_added_and_recorded() {
    use DeclineCode as D;
    let d = distributed_training;
    let local = |round| {
        with(d(round), |a| {
            let p = terms(a);
            p.placement = v1::NoisePlacement::Local as i32;
            // Every site the whole noise: the sum carries √3 σ.
            p.site_noise_units *= 3f64.sqrt();
            p.noise_multiplier = 3f64.sqrt();
        })
    };
    let cases: Vec<(&str, v1::RoundAnnounce, D)> = vec![
        (
            "shares that do not make σ",
            with(d(1), |a| terms(a).site_noise_units *= 0.99),
            D::InvalidTerms,
        ),
        (
            "NaN share",
            with(d(1), |a| terms(a).site_noise_units = f64::NAN),
            D::InvalidTerms,
        ),
        (
            "negative share",
            with(d(1), |a| terms(a).site_noise_units = -4096.0),
            D::InvalidTerms,
        ),
        (
            "a share of a few units",
            with(d(1), |a| {
                let p = terms(a);
                p.site_noise_units = 2.0;
                p.noise_multiplier = 2.0 * 3f64.sqrt() / 65536.0;
            }),
            D::InvalidTerms,
        ),
        (
            "summands other than the cohort",
            with(d(1), |a| {
                let p = terms(a);
                p.noise_summands = 4;
                p.site_noise_units = 65536.0 / 2.0;
            }),
            D::InvalidTerms,
        ),
        (
            "no summands",
            with(d(1), |a| terms(a).noise_summands = 0),
            D::InvalidTerms,
        ),
        (
            "distributed noise without secure aggregation",
            with(d(1), |a| a.secagg = None),
            D::SecureAggregationRequired,
        ),
        (
            "site noise with adaptive clipping",
            with(private_training(1), |a| {
                let p = terms(a);
                p.placement = v1::NoisePlacement::Distributed as i32;
                p.noise_summands = 3;
                p.site_noise_units = 65536.0;
            }),
            D::InvalidTerms,
        ),
        (
            "statistics shares that do not make the statistics σ",
            with(local_statistics(1), |a| terms(a).site_noise_units *= 0.99),
            D::InvalidTerms,
        ),
        (
            "unknown placement",
            with(d(1), |a| terms(a).placement = 9),
            D::InvalidTerms,
        ),
        (
            "no room for the noise in the modulus",
            with(d(1), |a| {
                // 2^16 units of C, 3 sites, and 12 σ of noise need 2^19.
                a.encoding.as_mut().unwrap().modulus_bits = 19;
            }),
            D::InvalidEncoding,
        ),
    ];
    let dir = SiteDir::new();
    let mut site = dir.joined("", "");
    for (what, a, code) in cases {
        let mut out = Outbox::default();
        let reply = announce(&mut site, &mut out, &a);
        assert!(!reply.accept, "{what}: accepted");
        assert_eq!(reply.code, code as i32, "{what}: {}", reply.reason);
    }
    assert!(dir.ledger().contributions().unwrap().is_empty());
    // A sane distributed round is accepted.
    assert!(announce(&mut site, &mut Outbox::default(), &d(2)).accept);

    // Statistics get the sites' noise too: accepted with shares of the
    // statistics' own σ and sensitivity, and recorded as site noise.
    let dir = SiteDir::new();
    let mut site = dir.joined("", no_secagg_required());
    let a = with(local_statistics(5), |a| a.secagg = None);
    assert!(announce(&mut site, &mut Outbox::default(), &a).accept);
    let rows = dir.ledger().contributions().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, "statistics");
    assert_eq!(rows[0].site_noise.expect("site noise").summands, 3);

    // Local noise without secure aggregation: the plain input carries the
    // site's whole noise, even on the zero vector a failed update becomes.
    let dir = SiteDir::new();
    let mut site = dir.joined("", no_secagg_required());
    let mut out = Outbox::default();
    let a = with(local(3), |a| a.secagg = None);
    assert!(announce(&mut site, &mut out, &a).accept);
    for m in model(3, &[f32::NAN, 0.0, 0.0, 0.0]) {
        out.handle(&mut site, m);
    }
    let v = plain_input(&out, 3, a.encoding.unwrap());
    // σ·C = 1 per coordinate: four zeros would be a 1e-19 event.
    assert!(v.iter().any(|x| x.abs() > 1e-3), "{v:?}");
    assert!(v.iter().all(|x| x.abs() < 12.0), "{v:?}");
    // The zero vector does not depend on the data: not counted (see input.rs).
    assert!(dir.ledger().contributions().unwrap().is_empty());
    let a = with(local(4), |a| a.secagg = None);
    assert!(announce(&mut site, &mut out, &a).accept);
    for m in model(4, &[0.0; 4]) {
        out.handle(&mut site, m);
    }
    assert_eq!(plain_input(&out, 4, a.encoding.unwrap()).len(), 4);
    let rows = dir.ledger().contributions().unwrap();
    assert_eq!(rows.len(), 1);
    let noise = rows[0].site_noise.expect("a distributed row");
    assert_eq!(noise.summands, 3);
    assert_eq!(noise.l2_units, 65536.0);
    assert!(matches!(
        rows[0].event(),
        tessera_privacy::PrivacyEvent::DistributedDiscreteGaussian { summands: 3, .. }
    ));
}

fn with(a: v1::RoundAnnounce, f: impl FnOnce(&mut v1::RoundAnnounce)) -> v1::RoundAnnounce {
    let mut a = a;
    f(&mut a);
    a
}

/// A private statistics round with local noise for a cohort of three:
/// each site's share is the statistics' whole σ·Δ·2^f.
fn local_statistics(round: u64) -> v1::RoundAnnounce {
    with(private_statistics(round), |a| {
        let scale = f64::from(a.encoding.unwrap().scale_bits).exp2();
        let p = terms(a);
        p.placement = v1::NoisePlacement::Local as i32;
        p.noise_summands = 3;
        p.site_noise_units = p.noise_multiplier * p.clip_norm * scale;
        // The release carries √3 shares: the announced σ on the sum.
        p.noise_multiplier *= 3f64.sqrt();
    })
}

fn terms(a: &mut v1::RoundAnnounce) -> &mut v1::PrivacyTerms {
    a.privacy.as_mut().unwrap()
}

#[test]
fn hostile_terms_are_declined_with_their_codes() {
    use DeclineCode as D;
    let s = private_statistics;
    let t = private_training;
    let cases: Vec<(&str, v1::RoundAnnounce, D)> = vec![
        (
            "no bounds",
            with(s(1), |a| a.statistics_bounds = None),
            D::InvalidTerms,
        ),
        (
            "bounds for two features",
            with(s(1), |a| {
                let b = a.statistics_bounds.as_mut().unwrap();
                b.lo.pop();
                b.hi.pop();
            }),
            D::InvalidTerms,
        ),
        (
            "lo = hi",
            with(s(1), |a| a.statistics_bounds.as_mut().unwrap().hi[1] = 0.0),
            D::InvalidTerms,
        ),
        (
            "NaN bound",
            with(s(1), |a| {
                a.statistics_bounds.as_mut().unwrap().lo[2] = f64::NAN
            }),
            D::InvalidTerms,
        ),
        (
            "max_rows below 1",
            with(s(1), |a| {
                a.statistics_bounds.as_mut().unwrap().max_rows = 0.5
            }),
            D::InvalidTerms,
        ),
        (
            "sensitivity off by 1e-6",
            with(s(1), |a| terms(a).clip_norm *= 1.0 + 1e-6),
            D::InvalidTerms,
        ),
        (
            "statistics overflow the modulus",
            with(s(1), |a| a.encoding.as_mut().unwrap().modulus_bits = 28),
            D::InvalidEncoding,
        ),
        (
            "statistics noise below the minimum units",
            with(s(1), |a| a.encoding.as_mut().unwrap().scale_bits = 0),
            D::InvalidEncoding,
        ),
        (
            "update noise below the minimum units",
            with(t(1), |a| a.encoding.as_mut().unwrap().scale_bits = 11),
            D::InvalidEncoding,
        ),
        (
            "clipping-bit noise below the minimum units",
            with(t(1), |a| {
                let p = terms(a);
                p.clip_count_noise_multiplier = 0.05;
                p.noise_multiplier = tessera_privacy::calibrate::effective_noise_multiplier(
                    p.update_noise_multiplier,
                    0.05,
                );
            }),
            D::InvalidEncoding,
        ),
        (
            "clip norm overflows the modulus",
            with(t(1), |a| terms(a).clip_norm = 1e5),
            D::InvalidEncoding,
        ),
        (
            "clip norm within the rounding slack",
            with(t(1), |a| {
                a.encoding.as_mut().unwrap().scale_bits = 30;
                terms(a).clip_norm = 1e-9;
            }),
            D::InvalidEncoding,
        ),
        (
            "no encoding",
            with(s(1), |a| a.encoding = None),
            D::InvalidEncoding,
        ),
        (
            "modulus of 65 bits",
            with(s(1), |a| a.encoding.as_mut().unwrap().modulus_bits = 65),
            D::InvalidEncoding,
        ),
        (
            "wrong σ_eff",
            with(t(1), |a| terms(a).noise_multiplier *= 1.001),
            D::InvalidTerms,
        ),
        (
            "σ_b of zero",
            with(t(1), |a| terms(a).clip_count_noise_multiplier = 0.0),
            D::InvalidTerms,
        ),
        (
            "σ_Δ not a number",
            with(t(1), |a| terms(a).update_noise_multiplier = f64::NAN),
            D::InvalidTerms,
        ),
        (
            "σ of zero",
            with(s(1), |a| terms(a).noise_multiplier = 0.0),
            D::InvalidTerms,
        ),
        (
            "unknown aggregation kind",
            with(s(1), |a| a.kind = 9),
            D::InvalidTerms,
        ),
        (
            "secure aggregation off",
            with(t(1), |a| a.secagg = None),
            D::SecureAggregationRequired,
        ),
        (
            "huge dimension",
            with(t(1), |a| a.dimension = u64::MAX),
            D::LimitsExceeded,
        ),
        (
            "dimension beyond the default limit",
            with(t(1), |a| a.dimension = 50_000_001),
            D::LimitsExceeded,
        ),
        (
            "training dimension the task does not imply",
            with(t(1), |a| a.dimension = 6),
            D::LimitsExceeded,
        ),
        (
            "statistics dimension the task does not imply",
            with(s(1), |a| a.dimension = 14),
            D::LimitsExceeded,
        ),
        (
            "no preprocessing",
            with(t(1), |a| a.preprocessing = None),
            D::LimitsExceeded,
        ),
        (
            "preprocessing lengths differ",
            with(t(1), |a| {
                a.preprocessing.as_mut().unwrap().indicator.push(true)
            }),
            D::LimitsExceeded,
        ),
        (
            "preprocessing for another feature count",
            with(t(1), |a| {
                let p = a.preprocessing.as_mut().unwrap();
                p.mean.pop();
                p.std.pop();
                p.indicator.pop();
            }),
            D::LimitsExceeded,
        ),
        (
            "a mean that is not finite",
            with(t(1), |a| {
                a.preprocessing.as_mut().unwrap().mean[0] = f64::INFINITY
            }),
            D::LimitsExceeded,
        ),
        (
            "a standard deviation of zero",
            with(t(1), |a| a.preprocessing.as_mut().unwrap().std[2] = 0.0),
            D::LimitsExceeded,
        ),
        (
            "a negative standard deviation",
            with(t(1), |a| a.preprocessing.as_mut().unwrap().std[1] = -1.0),
            D::LimitsExceeded,
        ),
        (
            "a cohort beyond the default limit",
            with(s(1), |a| {
                let setup = a.secagg.as_mut().unwrap();
                setup.cohort = (1..=10_001)
                    .map(|i| v1::CohortMember {
                        index: i,
                        name: String::new(),
                        certificate: Vec::new(),
                    })
                    .collect();
            }),
            D::LimitsExceeded,
        ),
    ];
    let dir = SiteDir::new();
    let mut site = dir.joined("", "");
    for (what, a, code) in cases {
        let mut out = Outbox::default();
        let reply = announce(&mut site, &mut out, &a);
        assert_eq!(declined(&reply), code, "{what}");
        assert!(
            out.sent
                .iter()
                .all(|m| matches!(m.body, Some(Out::RoundReply(_)))),
            "{what}: {:?}",
            out.sent
        );
    }
    // The sane terms, and a sensitivity within the tolerance, are accepted.
    for a in [
        private_statistics(2),
        with(s(3), |a| terms(a).clip_norm *= 1.0 + 1e-12),
        private_training(4),
    ] {
        let mut out = Outbox::default();
        assert!(announce(&mut site, &mut out, &a).accept, "{a:?}");
    }
}

#[test]
fn secure_aggregation_requirement_follows_the_site_option() {
    let dir = SiteDir::new();
    let private = with(private_statistics(1), |a| a.secagg = None);
    let plain = with(private.clone(), |a| {
        a.privacy = None;
        a.statistics_bounds = None;
    });
    for (option, private_ok, plain_ok) in [
        ("", false, true),
        (
            "[privacy]\nrequire_secure_aggregation = true\n",
            false,
            false,
        ),
        (
            "[privacy]\nrequire_secure_aggregation = false\n",
            true,
            true,
        ),
    ] {
        let mut site = dir.joined("", option);
        for (a, ok) in [(&private, private_ok), (&plain, plain_ok)] {
            let mut out = Outbox::default();
            let reply = announce(&mut site, &mut out, a);
            if ok {
                assert!(reply.accept, "{option}: {reply:?}");
                assert!(!out.input_chunks(1).is_empty());
            } else {
                assert_eq!(declined(&reply), DeclineCode::SecureAggregationRequired);
            }
        }
    }
}

#[test]
fn seeded_noise_is_not_private() {
    let dir = SiteDir::new();
    let seeded = with(private_statistics(1), |a| terms(a).not_private = true);
    for option in [
        "[privacy]\nrequire_privacy = true\n",
        "[privacy]\nmax_epsilon = 100.0\n",
    ] {
        let mut site = dir.joined("", option);
        let mut out = Outbox::default();
        assert_eq!(
            declined(&announce(&mut site, &mut out, &seeded)),
            DeclineCode::PrivacyRequired,
            "{option}"
        );
    }
    // A site that does not require privacy takes part, and records it.
    let mut site = dir.joined("", "");
    let mut out = Outbox::default();
    assert!(announce(&mut site, &mut out, &seeded).accept);
    Peers::new(&seeded).run(&mut site, &mut out);
    let rows = dir.ledger().contributions().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].not_private);
}

#[test]
fn limits_are_the_sites_own() {
    let dir = SiteDir::new();
    for (limit, a) in [
        ("max_features = 2", private_statistics(1)),
        ("max_dimension = 4", private_training(1)),
        ("max_cohort_size = 2", private_statistics(1)),
    ] {
        let mut site = dir.joined("", &format!("[limits]\n{limit}\n"));
        let mut out = Outbox::default();
        assert_eq!(
            declined(&announce(&mut site, &mut out, &a)),
            DeclineCode::LimitsExceeded,
            "{limit}"
        );
    }
}

#[test]
fn a_model_of_any_announced_length_is_never_allocated() {
    let dir = SiteDir::new();
    let mut site = dir.joined("", no_secagg_required());
    // A dimension the task does not imply, and a model of that length: the
    // round is declined and the model's chunks ignored, so nothing of the
    // announced size is ever reserved.
    for dimension in [(1u64 << 62) + 1, (1 << 33) + 1, 6] {
        let mut out = Outbox::default();
        let a = with(private_training(9), |a| {
            a.secagg = None;
            a.dimension = dimension;
        });
        assert_eq!(
            declined(&announce(&mut site, &mut out, &a)),
            DeclineCode::LimitsExceeded
        );
        let mut chunk = tessera_proto::chunk::split(9, v1::ChunkPurpose::Model, &[0.5f32; 3]);
        chunk[0].total = dimension - 1;
        assert!(
            out.handle(&mut site, message(In::Chunk(chunk.remove(0))))
                .is_empty()
        );
    }
    // An accepted round whose model comes at another length ends there,
    // before the data is touched.
    let a = with(private_training(1), |a| a.secagg = None);
    for total in [u64::MAX, 1 << 40, 3, 5] {
        let mut out = Outbox::default();
        assert!(announce(&mut site, &mut out, &a).accept);
        let mut chunk = tessera_proto::chunk::split(1, v1::ChunkPurpose::Model, &[0.5f32; 3]);
        chunk[0].total = total;
        assert!(
            out.handle(&mut site, message(In::Chunk(chunk.remove(0))))
                .is_empty()
        );
        // The round is over for this site: the right model changes nothing.
        for m in model(1, &[0.0; 4]) {
            assert!(out.handle(&mut site, m).is_empty(), "total {total}");
        }
    }
    assert!(dir.ledger().contributions().unwrap().is_empty());
}

#[test]
fn private_statistics_stay_within_the_sensitivity_after_rounding() {
    // Every value at the top of its range and more rows than the cap: the
    // bounded statistics have exactly the sensitivity as their norm, so only
    // the clip below it keeps stochastic rounding from pushing them past.
    let dir = SiteDir::new();
    let mut text = String::from("x1,x2,x3,y\n");
    for i in 0..ROWS {
        text.push_str(&format!("100,1,50,{}\n", i % 2));
    }
    std::fs::write(&dir.csv, text).unwrap();
    let mut site = dir.joined("", no_secagg_required());
    let max_rows = 500.3;
    let sensitivity = max_rows * 10f64.sqrt();
    for round in 1..=20 {
        let a = with(private_statistics(round), |a| {
            a.secagg = None;
            a.encoding.as_mut().unwrap().scale_bits = 4;
            a.statistics_bounds.as_mut().unwrap().max_rows = max_rows;
            terms(a).clip_norm = sensitivity;
        });
        let mut out = Outbox::default();
        assert!(announce(&mut site, &mut out, &a).accept);
        let v = plain_input(&out, round, a.encoding.unwrap());
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= sensitivity, "round {round}: {norm} > {sensitivity}");
        assert!(v.iter().all(|x| x.abs() <= max_rows), "{v:?}");
        assert!(norm > 0.99 * sensitivity, "{norm}");
    }
}

// ---- 4. The site's own ledger never undercounts --------------------------

#[test]
fn the_site_ledger_records_the_announced_noise_slack() {
    let dir = SiteDir::new();
    let mut site = dir.joined("", "");
    let mut out = Outbox::default();
    let stats = private_statistics(1);
    assert!(announce(&mut site, &mut out, &stats).accept);
    Peers::new(&stats).run(&mut site, &mut out);
    let training = private_training(2);
    assert!(announce(&mut site, &mut out, &training).accept);
    for m in model(2, &[0.0; 4]) {
        out.handle(&mut site, m);
    }
    Peers::new(&training).run(&mut site, &mut out);
    assert!(!out.input_chunks(2).is_empty());

    let tv = tessera_privacy::release_tv;
    let stats_tv = tv(STATS_SIGMA * sensitivity() * 2f64.powi(20), 13).unwrap();
    let units = 2f64.powi(16);
    let training_tv =
        tv(SIGMA_UPDATE * CLIP * units, 4).unwrap() + tv(SIGMA_BIT * units, 1).unwrap();
    let rows = dir.ledger().contributions().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].tv_slack, stats_tv);
    assert_eq!(rows[1].tv_slack, training_tv);
    assert!(rows[0].tv_slack > 0.0 && rows[1].tv_slack > 0.0);
    assert!(!rows[0].not_private && !rows[1].not_private);
    let slack: f64 = dir
        .ledger()
        .events()
        .unwrap()
        .iter()
        .map(|e| e.tv_slack())
        .sum();
    assert!((slack - (stats_tv + training_tv)).abs() <= 1e-12 * slack);
}
