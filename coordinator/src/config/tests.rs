//! Tests of loading, checking and planning coordinator configurations.

use std::path::Path;

use super::*;
use crate::settings::Settings;

fn example() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/coordinator.toml");
    std::fs::read_to_string(p).unwrap()
}

fn load_str(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    Settings::load(&path)
}

#[test]
fn the_example_configuration_is_valid() {
    let s = load_str(&example()).unwrap();
    assert!(s.config.privacy.enabled);
    assert!(s.noise_multiplier > 0.0);
    assert_eq!(s.max_epsilon, Some(8.0));
    assert_eq!(s.task.features.len(), 13);
    assert_eq!(s.statistics_bounds.as_ref().unwrap().lo.len(), 13);
    // Its monotone constraints: thalach (index 7) decreasing, cp (2) free.
    let mut params = vec![-1.0f32; 14];
    assert_eq!(s.monotone.project(&mut params), 11);
    assert_eq!(params[2], -1.0);
    assert_eq!(params[7], -1.0);
    assert_eq!(params[0], 0.0);
}

fn invalid_key(text: &str) -> &'static str {
    match load_str(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn errors_name_the_key() {
    let e = example();
    assert_eq!(
        invalid_key(&e.replace("delta = 1e-5", "delta = 2.0")),
        "privacy.delta"
    );
    assert_eq!(
        invalid_key(&e.replace(
            "target_epsilon = 8.0",
            "target_epsilon = 8.0\nnoise_multiplier = 1.0"
        )),
        "privacy.noise_multiplier"
    );
    assert_eq!(
        invalid_key(&e.replace("clip_norm = 0.25", "clip_norm = -1")),
        "training.clip_norm"
    );
    assert_eq!(
        invalid_key(&e.replace("min_participants = 3", "min_participants = 2")),
        "federation.min_participants"
    );
    assert_eq!(
        invalid_key(&e.replace("thal = [3, 7]", "")),
        "statistics.ranges"
    );
    assert_eq!(
        invalid_key(&e.replace("positive = \"> 0\"", "positive = \"\"")),
        "task.positive"
    );
}

#[test]
fn adaptive_clipping_settings_are_validated() {
    let e = example();
    let adaptive = |training: &str, privacy: &str| {
        e.replace("clip_norm = 0.25", &format!("clip_norm = 0.25\n{training}"))
            .replace(
                "statistics_noise_multiplier = 20.0",
                &format!("statistics_noise_multiplier = 20.0\n{privacy}"),
            )
    };
    // σ_eff is calibrated as without adaptive clipping; σ_Δ follows.
    let fixed = load_str(&e).unwrap();
    let s = load_str(&adaptive(
        "adaptive_clipping = true",
        "clip_count_noise_multiplier = 10.0",
    ))
    .unwrap();
    assert_eq!(s.noise_multiplier, fixed.noise_multiplier);
    assert!(s.update_noise_multiplier > s.noise_multiplier);
    assert_eq!(s.clip_count_noise_multiplier, 10.0);
    let back = crate::budget::effective_noise_multiplier(
        s.update_noise_multiplier,
        s.clip_count_noise_multiplier,
    );
    assert!(back >= s.noise_multiplier && back < s.noise_multiplier * (1.0 + 1e-9));
    assert_eq!(s.config.training.target_quantile(), 0.5);
    assert_eq!(s.config.training.clip_learning_rate(), 0.2);
    // Without adaptive clipping, σ_Δ = σ and no bit noise.
    assert_eq!(fixed.update_noise_multiplier, fixed.noise_multiplier);
    assert_eq!(fixed.clip_count_noise_multiplier, 0.0);
    // The paper's default σ_b (4 sites / 20 = 0.2) leaves no room at this ε.
    assert_eq!(
        invalid_key(&adaptive("adaptive_clipping = true", "")),
        "privacy.clip_count_noise_multiplier"
    );
    assert_eq!(
        invalid_key(&adaptive(
            "adaptive_clipping = true",
            "clip_count_noise_multiplier = -1.0"
        )),
        "privacy.clip_count_noise_multiplier"
    );
    assert_eq!(
        invalid_key(&adaptive("", "clip_count_noise_multiplier = 10.0")),
        "privacy.clip_count_noise_multiplier"
    );
    for (line, key) in [
        ("target_quantile = 1.0", "training.target_quantile"),
        ("target_quantile = 0.0", "training.target_quantile"),
        ("clip_learning_rate = 0.0", "training.clip_learning_rate"),
        ("clip_learning_rate = nan", "training.clip_learning_rate"),
    ] {
        let text = adaptive(
            &format!("adaptive_clipping = true\n{line}"),
            "clip_count_noise_multiplier = 10.0",
        );
        assert_eq!(invalid_key(&text), key, "{line}");
    }
    // Adaptive-only keys without adaptive clipping.
    assert_eq!(
        invalid_key(&adaptive("target_quantile = 0.3", "")),
        "training.target_quantile"
    );
    assert_eq!(
        invalid_key(&adaptive("clip_learning_rate = 0.3", "")),
        "training.clip_learning_rate"
    );
    // Without DP adaptive clipping is allowed, with no bit noise.
    let plain = e
        .replace(
            "clip_norm = 0.25",
            "clip_norm = 0.25\nadaptive_clipping = true",
        )
        .replace("enabled = true\ntarget_epsilon = 8.0", "enabled = false");
    assert!(plain.contains("enabled = false"));
    let s = load_str(&plain).unwrap();
    assert!(s.config.training.adaptive_clipping);
    assert_eq!(s.clip_count_noise_multiplier, 0.0);
}

#[test]
fn unknown_keys_and_bad_types_are_parse_errors() {
    let e = example();
    let err = load_str(&e.replace("rounds = 8", "rounds = 8\nroundz = 9")).unwrap_err();
    assert!(err.to_string().contains("roundz"), "{err}");
    let err = load_str(&e.replace("rounds = 8", "rounds = \"eight\"")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
}

#[test]
fn relative_paths_follow_the_file() {
    let s = load_str(&example()).unwrap();
    assert!(s.config.tls.ca.is_absolute());
    assert!(s.store.ends_with("coordinator.sqlite"));
}

#[test]
fn noise_placements_are_planned_and_checked() {
    let e = example();
    let with = |placement: &str| {
        e.replace(
            "statistics_noise_multiplier = 20.0",
            &format!("statistics_noise_multiplier = 20.0\nplacement = \"{placement}\""),
        )
    };
    let central = load_str(&e).unwrap();
    let distributed = load_str(&with("distributed")).unwrap();
    let local = load_str(&with("local")).unwrap();
    assert_eq!(
        central.policy().privacy.unwrap().placement,
        tessera_model::Placement::Central
    );
    assert_eq!(
        distributed.policy().privacy.unwrap().placement,
        tessera_model::Placement::Distributed
    );
    // Distributed noise is accounted without amplification by sampling: at
    // least the noise of central noise for the same target ε.
    assert!(distributed.noise_multiplier >= central.noise_multiplier);
    // Local noise reaches the target with each site's own noise alone (the
    // training rounds only): it needs no less than distributed.
    assert!(local.noise_multiplier > 0.0);
    assert!(load_str(&with("everywhere")).is_err());
    let no_secagg =
        with("distributed").replace("[secagg]\nenabled = true", "[secagg]\nenabled = false");
    assert_ne!(
        no_secagg,
        with("distributed"),
        "the example enables secure aggregation"
    );
    assert_eq!(invalid_key(&no_secagg), "privacy.placement");
    assert!(load_str(&no_secagg.replace("\"distributed\"", "\"local\"")).is_ok());
    let adaptive =
        with("distributed").replace("[training]", "[training]\nadaptive_clipping = true");
    assert_eq!(invalid_key(&adaptive), "privacy.placement");
    let off = with("local").replace(
        "enabled = true\ntarget_epsilon = 8.0\n",
        "enabled = false\n",
    );
    assert_eq!(invalid_key(&off), "privacy.placement");
}

#[test]
fn configured_queries_are_part_of_the_budget_and_need_central_noise() {
    let without = example();
    let with = format!(
        "{without}\n[[analytics]]\nquery = \"count where age > 65 and cp = 4\"\nepsilon = 0.5\nmax_rows = 400\n"
    );
    let s_with = load_str(&with).unwrap();
    let s_without = load_str(&without).unwrap();
    assert_eq!(s_with.config.analytics.len(), 1);
    // The same target ε with a query to pay for leaves less to training.
    assert!(
        s_with.noise_multiplier > s_without.noise_multiplier,
        "{} vs {}",
        s_with.noise_multiplier,
        s_without.noise_multiplier
    );
    let distributed = with.replace(
        "# placement = \"distributed\"",
        "placement = \"distributed\"",
    );
    assert_ne!(distributed, with);
    assert_eq!(invalid_key(&distributed), "analytics");
    assert!(
        load_str(&without.replace(
            "# placement = \"distributed\"",
            "placement = \"distributed\""
        ))
        .is_ok()
    );
    // An analytics-only federation trains nothing.
    let only = with.replace("rounds = 8", "rounds = 0");
    assert_eq!(load_str(&only).unwrap().config.federation.rounds, 0);
}
