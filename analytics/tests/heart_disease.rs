//! Acceptance of the analytics mechanisms on the four heart-disease
//! hospitals: over many seeded repetitions, the errors of count, mean and
//! histogram releases against the exact pooled answer follow the announced
//! noise (chi-square and Kolmogorov–Smirnov tests at a false-alarm rate of
//! 0.001), `most common` picks each value with the exponential mechanism's
//! closed-form probability, the ledger's ε is the accountant's, and a site
//! that does not allow a column is left out while the others are answered.

mod common;

use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tessera_analytics::release::{Answer, discrete_laplace_variance, release};
use tessera_analytics::site::{contribution, exact_answer};
use tessera_analytics::{
    KindName, PlanError, QueryNoise, QueryPlan, RefusalCode, SitePolicy, Table,
};
use tessera_privacy::noise::DiscreteLaplace;
use tessera_privacy::{AccountantKind, PrivacyEvent, epsilon};

const REPS: usize = 3000;

fn pooled(sites: &[Table]) -> Table {
    Table::concat(sites).expect("the hospitals share their columns")
}

fn site_sum(plan: &QueryPlan, sites: &[Table]) -> Vec<u64> {
    let vectors: Vec<Vec<u64>> = sites
        .iter()
        .map(|t| contribution(plan, t).expect("a contribution"))
        .collect();
    plain_sum(&vectors)
}

fn open(
    plan: &QueryPlan,
    sum: &[u64],
    n: usize,
    rng: &mut ChaCha20Rng,
) -> tessera_analytics::Release {
    release(plan, sum, n, 1e-5, rng)
        .expect("a release")
        .open_after(|_| Ok::<_, ()>(()))
        .expect("recorded")
}

#[test]
fn count_errors_follow_the_discrete_laplace() {
    let sites = hospitals();
    let plan = plan("count where age > 65 and cp = 4", QueryNoise::Epsilon(0.5));
    let truth = exact_answer(&plan, &pooled(&sites)).unwrap()[0];
    assert!(truth > 20.0, "a count worth testing: {truth}");
    let sum = site_sum(&plan, &sites);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let scale = plan.parts()[0].scale_units;
    assert_eq!(scale, 400.0 / 0.5);
    let errors: Vec<i64> = (0..REPS)
        .map(|_| match open(&plan, &sum, 4, &mut rng).answer {
            Answer::Count { value } => (value - truth) as i64,
            other => panic!("{other:?}"),
        })
        .collect();
    let (stat, critical) = chi_square_cdf(&errors, discrete_laplace_cdf(scale), 20);
    assert!(stat < critical, "chi2 {stat} ≥ {critical}");
    // The same test rejects noise of the wrong scale.
    let (wrong, _) = chi_square_cdf(&errors, discrete_laplace_cdf(scale * 1.3), 20);
    assert!(wrong > critical, "a 30% wrong scale passed: {wrong}");
}

#[test]
fn sum_errors_follow_the_discrete_laplace_in_fixed_point() {
    let sites = hospitals();
    let plan = plan(
        "sum trestbps in [80, 200] where sex = 1",
        QueryNoise::Epsilon(2.0),
    );
    let sum = site_sum(&plan, &sites);
    let part = &plan.parts()[0];
    let exact = sum[0] as i64;
    // The exact clamped sum in fixed point equals the pooled one to the
    // encoding's resolution (each value rounded to 1/units).
    let pooled_truth = exact_answer(&plan, &pooled(&sites)).unwrap()[0];
    let rows = pooled(&sites).rows.len() as f64;
    assert!((exact as f64 / part.units - pooled_truth).abs() <= rows / part.units);
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let errors: Vec<i64> = (0..REPS)
        .map(|_| match open(&plan, &sum, 4, &mut rng).answer {
            Answer::Sum { value } => (value * part.units).round() as i64 - exact,
            other => panic!("{other:?}"),
        })
        .collect();
    let (stat, critical) = chi_square_cdf(&errors, discrete_laplace_cdf(part.scale_units), 20);
    assert!(stat < critical, "chi2 {stat} ≥ {critical}");
    assert_eq!(part.scale_units, part.sensitivity_units / 2.0);
}

#[test]
fn mean_errors_match_the_noise_and_its_error_bar() {
    let sites = hospitals();
    // ε large enough that the noised count stays far from 0 (scale 16 on
    // ~740 rows), so that the delta method's error bar is meant to hold.
    let plan = plan(
        "mean chol in [100, 600] where chol > 0",
        QueryNoise::Epsilon(50.0),
    );
    let pooled = pooled(&sites);
    let truth = exact_answer(&plan, &pooled).unwrap()[0];
    let sum = site_sum(&plan, &sites);
    let exact_sum = sum[0] as i64;
    let exact_count = sum[1] as i64;
    let parts = plan.parts();
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let (mut sum_err, mut count_err, mut z, mut ses) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPS {
        let r = open(&plan, &sum, 4, &mut rng);
        let Answer::Mean {
            value: Some(m),
            std_error: Some(se),
            sum: s,
            count: c,
        } = r.answer
        else {
            panic!("no mean: {:?}", r.answer);
        };
        sum_err.push((s * parts[0].units).round() as i64 - exact_sum);
        count_err.push(c as i64 - exact_count);
        z.push((m - truth) / se);
        ses.push(se);
    }
    for (errors, part) in [(&sum_err, &parts[0]), (&count_err, &parts[1])] {
        let (stat, critical) = chi_square_cdf(errors, discrete_laplace_cdf(part.scale_units), 20);
        assert!(stat < critical, "{}: chi2 {stat} ≥ {critical}", part.name);
    }
    // The mean's errors have the distribution the announced scales imply:
    // a two-sample KS test against (S + a)/(N + b) − S/N with a, b drawn
    // independently from discrete Laplace samplers of those scales.
    let reference_rng = &mut ChaCha20Rng::seed_from_u64(99);
    let la = DiscreteLaplace::new(parts[0].scale_units).unwrap();
    let lb = DiscreteLaplace::new(parts[1].scale_units).unwrap();
    let (s0, n0) = (exact_sum as f64 / parts[0].units, exact_count as f64);
    let reference: Vec<f64> = (0..REPS)
        .map(|_| {
            let a = la.sample(reference_rng) as f64 / parts[0].units;
            let b = lb.sample(reference_rng) as f64;
            (s0 + a) / (n0 + b) - s0 / n0
        })
        .collect();
    let errors: Vec<f64> = z.iter().zip(&ses).map(|(z, se)| z * se).collect();
    let (d, critical) = ks_two_sample(&errors, &reference);
    assert!(d < critical, "KS {d} ≥ {critical}");
    // The error bar is their standard deviation: the sample variance of the
    // errors against the delta method's se² at the true sum and count
    // (large-sample test with the empirical fourth moment, the errors being
    // heavy-tailed), and the reported error bars are that figure give or
    // take the noise in the count they are divided by.
    let var_s = discrete_laplace_variance(parts[0].scale_units) / parts[0].units.powi(2);
    let var_c = discrete_laplace_variance(parts[1].scale_units);
    let expected_se = (var_s + truth * truth * var_c).sqrt() / n0;
    let n = errors.len() as f64;
    let m2 = errors.iter().map(|e| e * e).sum::<f64>() / n;
    let m4 = errors.iter().map(|e| e.powi(4)).sum::<f64>() / n;
    let se2 = expected_se * expected_se;
    let t = (m2 - se2) / ((m4 - m2 * m2) / n).sqrt();
    assert!(t.abs() < 3.29, "variance {m2} vs se² {se2}: t = {t}");
    let mean_se = ses.iter().sum::<f64>() / n;
    assert!(
        (mean_se / expected_se - 1.0).abs() < 0.01,
        "{mean_se} vs {expected_se}"
    );
}

#[test]
fn histogram_errors_follow_the_discrete_gaussian() {
    let sites = hospitals();
    let plan = plan(
        "histogram age edges [20, 30, 40, 50, 60, 70, 80]",
        QueryNoise::NoiseMultiplier(0.5),
    );
    let truth = exact_answer(&plan, &pooled(&sites)).unwrap();
    assert_eq!(truth.iter().sum::<f64>(), 920.0, "every age is in a bin");
    let sum = site_sum(&plan, &sites);
    let part = &plan.parts()[0];
    let sigma = part.scale_units;
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let mut z = Vec::new();
    for _ in 0..REPS / 3 {
        let Answer::Histogram { counts, .. } = open(&plan, &sum, 4, &mut rng).answer else {
            panic!()
        };
        for (c, t) in counts.iter().zip(&truth) {
            // Integer noise in fixed-point units, standardised with a
            // continuity correction (σ ≥ 4096 units: the discrete Gaussian's
            // CDF is within 1e-4 of the normal's).
            z.push(((c - t) * part.units).round() / sigma);
        }
    }
    let (d, critical) = ks(&z, normal_cdf);
    assert!(d < critical, "KS {d} ≥ {critical}");
    let (wrong, _) = ks(&z, |x| normal_cdf(x / 1.1));
    assert!(wrong > critical, "a 10% wrong σ passed: {wrong}");
}

#[test]
fn most_common_follows_the_exponential_mechanism() {
    let sites = hospitals();
    let candidates = [1.0, 2.0, 3.0, 4.0];
    let eps = 1.0;
    let plan = plan(
        "most common cp among [1, 2, 3, 4]",
        QueryNoise::Epsilon(eps),
    );
    let counts = exact_answer(&plan, &pooled(&sites)).unwrap();
    // P(i) = exp(ε c_i / 2Δ) / Σ_j exp(ε c_j / 2Δ) with Δ = max_rows
    // (McSherry & Talwar 2007).
    let delta_u = plan.max_rows as f64;
    let w: Vec<f64> = counts
        .iter()
        .map(|c| (eps * c / (2.0 * delta_u)).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let probs: Vec<f64> = w.iter().map(|x| x / total).collect();
    let mode = (0..4)
        .max_by(|&a, &b| counts[a].total_cmp(&counts[b]))
        .unwrap();
    assert_eq!(candidates[mode], 4.0, "asymptomatic chest pain is the mode");
    let sum = site_sum(&plan, &sites);
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let n = 4000;
    let mut observed = [0u64; 4];
    for _ in 0..n {
        let Answer::TopK { chosen } = open(&plan, &sum, 4, &mut rng).answer else {
            panic!()
        };
        let i = candidates.iter().position(|&c| c == chosen[0]).unwrap();
        observed[i] += 1;
    }
    let expected: Vec<f64> = probs.iter().map(|p| p * n as f64).collect();
    let stat = chi_square(&observed, &expected);
    assert!(
        stat < chi_square_critical(3),
        "chi2 {stat}: {observed:?} vs {expected:?}"
    );
    // The mode in particular (binomial, two-sided at ALPHA).
    let p = probs[mode];
    let z = (observed[mode] as f64 / n as f64 - p) / (p * (1.0 - p) / n as f64).sqrt();
    assert!(
        z.abs() < 3.29,
        "mode chosen {} times, p = {p}",
        observed[mode]
    );
}

#[test]
fn top_two_follows_peeling() {
    let sites = hospitals();
    let plan = plan("top 2 cp among [1, 2, 3, 4]", QueryNoise::Epsilon(1.0));
    let counts = exact_answer(&plan, &pooled(&sites)).unwrap();
    let w: Vec<f64> = counts.iter().map(|c| (0.5 * c / 800.0).exp()).collect();
    let total: f64 = w.iter().sum();
    // P(first = i, second = j) = w_i/W · w_j/(W − w_i), each round at ε/2.
    let mut expected = vec![0.0; 16];
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                expected[i * 4 + j] = w[i] / total * w[j] / (total - w[i]);
            }
        }
    }
    let sum = site_sum(&plan, &sites);
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let n = 6000;
    let mut observed = [0u64; 16];
    for _ in 0..n {
        let Answer::TopK { chosen } = open(&plan, &sum, 4, &mut rng).answer else {
            panic!()
        };
        assert_eq!(chosen.len(), 2);
        assert_ne!(chosen[0], chosen[1]);
        observed[(chosen[0] as usize - 1) * 4 + chosen[1] as usize - 1] += 1;
    }
    let (obs, exp): (Vec<u64>, Vec<f64>) = observed
        .iter()
        .zip(&expected)
        .filter(|(_, e)| **e > 0.0)
        .map(|(&o, &e)| (o, e * n as f64))
        .unzip();
    let stat = chi_square(&obs, &exp);
    assert!(stat < chi_square_critical(obs.len() - 1), "chi2 {stat}");
}

#[test]
fn the_ledger_epsilon_is_the_accountants() {
    let sites = hospitals();
    let plans = [
        plan("count where age > 65 and cp = 4", QueryNoise::Epsilon(0.5)),
        plan("sum chol in [0, 600]", QueryNoise::Epsilon(0.25)),
        plan(
            "mean chol in [100, 600] where chol > 0",
            QueryNoise::Epsilon(1.0),
        ),
        plan("top 2 cp among [1, 2, 3, 4]", QueryNoise::Epsilon(0.5)),
    ];
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let mut ledger: Vec<PrivacyEvent> = Vec::new();
    let mut reported = 0.0;
    for p in &plans {
        let sealed = release(p, &site_sum(p, &sites), 4, 1e-5, &mut rng).unwrap();
        let r = sealed
            .open_after(|e| {
                ledger.push(e.clone());
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(&r.event, ledger.last().unwrap());
        reported += r.epsilon;
    }
    // The ledger holds exactly the announced mechanisms, in order...
    let announced = vec![
        PrivacyEvent::DiscreteLaplace {
            epsilon: 0.5,
            count: 1,
        },
        PrivacyEvent::DiscreteLaplace {
            epsilon: 0.25,
            count: 1,
        },
        PrivacyEvent::DiscreteLaplace {
            epsilon: 0.5,
            count: 2,
        },
        PrivacyEvent::Exponential {
            epsilon: 0.25,
            count: 2,
        },
    ];
    assert_eq!(ledger, announced);
    // ... so its ε is the accountant's for them, and never more than the
    // sum of the releases' own pure ε (basic composition).
    let accounted = epsilon(&ledger, 1e-5, AccountantKind::Best)
        .unwrap()
        .epsilon;
    let expected = epsilon(&announced, 1e-5, AccountantKind::Best)
        .unwrap()
        .epsilon;
    assert_eq!(accounted, expected);
    assert!((reported - 2.25).abs() < 1e-12, "{reported}");
    assert!(
        accounted <= reported + 1e-12 && accounted > 2.2,
        "{accounted}"
    );
    // A histogram's ε is the accountant's for its Gaussian event.
    let h = plan(
        "histogram age edges [20, 50, 80]",
        QueryNoise::NoiseMultiplier(2.0),
    );
    let sealed = release(&h, &site_sum(&h, &sites), 4, 1e-5, &mut rng).unwrap();
    let event = sealed.event().clone();
    let r = sealed.open_after(|_| Ok::<_, ()>(())).unwrap();
    let own = epsilon(&[event], 1e-5, AccountantKind::Best).unwrap();
    assert_eq!((r.epsilon, r.delta), (own.epsilon, 1e-5));
    // A failed ledger write keeps the answer sealed.
    let sealed = release(&h, &site_sum(&h, &sites), 4, 1e-5, &mut rng).unwrap();
    assert_eq!(
        sealed.open_after(|_| Err("disk full")).unwrap_err(),
        "disk full"
    );
}

#[test]
fn a_site_refusing_a_column_is_left_out_and_the_others_answered() {
    let sites = hospitals();
    let open_policy = SitePolicy {
        columns: ["age", "sex", "cp", "chol"].map(String::from).into(),
        ..SitePolicy::default()
    };
    let strict = SitePolicy {
        columns: ["age", "sex"].map(String::from).into(),
        min_noise_multiplier: [(KindName::Count, 1.0)].into(),
        ..SitePolicy::default()
    };
    let policies = [&open_policy, &strict, &open_policy, &open_policy];
    let plan = plan("count where age > 65 and cp = 4", QueryNoise::Epsilon(0.5));
    let mut vectors = Vec::new();
    let mut answered = Vec::new();
    for (i, (site, policy)) in sites.iter().zip(policies).enumerate() {
        match policy.check(&plan, &[]) {
            Ok(event) => {
                assert_eq!(event, plan.event());
                vectors.push(contribution(&plan, site).unwrap());
                answered.push(i);
            }
            Err(refusal) => {
                assert_eq!(i, 1);
                assert_eq!(refusal.code, RefusalCode::ColumnNotAllowed);
                assert_eq!(refusal.code.as_str(), "column_not_allowed");
            }
        }
    }
    assert_eq!(answered, [0, 2, 3]);
    let others: Vec<Table> = answered.iter().map(|&i| sites[i].clone()).collect();
    let truth = exact_answer(&plan, &pooled(&others)).unwrap()[0];
    let sum = plain_sum(&vectors);
    assert_eq!(sum[0] as f64, truth);
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let errors: Vec<i64> = (0..REPS)
        .map(|_| match open(&plan, &sum, 3, &mut rng).answer {
            Answer::Count { value } => (value - truth) as i64,
            other => panic!("{other:?}"),
        })
        .collect();
    let (stat, critical) = chi_square_cdf(&errors, discrete_laplace_cdf(800.0), 20);
    assert!(stat < critical, "chi2 {stat}");
    // The strict site also declines too little noise on its own columns.
    let weak = QueryPlan {
        noise: QueryNoise::Epsilon(2.0),
        ..common::plan("count where age > 65", QueryNoise::Epsilon(2.0))
    };
    assert_eq!(
        strict.check(&weak, &[]).unwrap_err().code,
        RefusalCode::NoiseBelowMinimum
    );
}

#[test]
fn bad_sums_are_refused() {
    let plan = plan("mean chol in [0, 600]", QueryNoise::Epsilon(1.0));
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    assert!(release(&plan, &[1], 4, 1e-5, &mut rng).is_err());
    assert!(release(&plan, &[1, 2, 3], 4, 1e-5, &mut rng).is_err());
    assert!(release(&plan, &[1, 2], 0, 1e-5, &mut rng).is_err());
    let bad = QueryPlan {
        noise: QueryNoise::Epsilon(f64::NAN),
        ..plan.clone()
    };
    assert!(matches!(
        release(&bad, &[1, 2], 4, 1e-5, &mut rng),
        Err(tessera_analytics::release::ReleaseError::Plan(
            PlanError::Epsilon(_)
        ))
    ));
    // A noised count below 1 gives no mean, but the noised parts are shown.
    let tiny = QueryPlan {
        noise: QueryNoise::Epsilon(0.001),
        ..plan
    };
    let mut none = 0;
    for _ in 0..50 {
        if let Answer::Mean {
            value: None,
            std_error: None,
            ..
        } = open(&tiny, &[0, 0], 1, &mut rng).answer
        {
            none += 1;
        }
    }
    assert!(none > 10, "{none}");
}
