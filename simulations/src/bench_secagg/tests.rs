//! Tests of the secure-aggregation benchmark (`bench_secagg.rs`).

use super::*;

#[test]
fn small_rounds_are_correct() {
    for dropout in [0.0, 0.2] {
        let args = SecAggBenchArgs {
            participants: 12,
            dim: 1000,
            dropout,
            json: true,
            seed: 3,
            modulus_bits: 32,
            neighbours: None,
            threshold: None,
            signed_keys: false,
        };
        let r = run(&args).unwrap();
        assert!(r.correct, "{r:?}");
        assert_eq!(r.dropped, (12.0 * dropout).round() as usize);
        assert_eq!(r.contributors, 12 - r.dropped);
        assert!(r.masks_expanded >= r.contributors as u64 * 2);
        assert!(r.total_seconds > 0.0 && r.prg_lower_bound_seconds > 0.0);
        assert_eq!(r.participant_stage_seconds.consistency_check, 0.0);
        // With signed keys, the consistency check is a stage of its own
        // and the round still sums correctly.
        let signed = run(&SecAggBenchArgs {
            signed_keys: true,
            ..args.clone()
        })
        .unwrap();
        assert!(signed.correct, "{signed:?}");
        assert_eq!(signed.contributors, r.contributors);
        assert!(signed.participant_stage_seconds.consistency_check > 0.0);
        assert!(signed.coordinator_stage_seconds.consistency_check > 0.0);
        assert!(signed.bytes_per_participant > r.bytes_per_participant);
    }
    let bad = SecAggBenchArgs {
        participants: 2,
        dim: 10,
        dropout: 0.0,
        json: false,
        seed: 1,
        modulus_bits: 32,
        neighbours: None,
        threshold: None,
        signed_keys: false,
    };
    assert!(run(&bad).is_err());
}

#[test]
fn neighbours_and_threshold_can_be_set() {
    let args = SecAggBenchArgs {
        participants: 40,
        dim: 500,
        // Four neighbours cannot afford dropouts (a neighbourhood
        // losing two of its four fails the round).
        dropout: 0.0,
        json: true,
        seed: 2,
        modulus_bits: 32,
        neighbours: Some(4),
        threshold: None,
        signed_keys: false,
    };
    let r = run(&args).unwrap();
    assert!(r.correct, "{r:?}");
    assert_eq!((r.neighbours, r.threshold), (4, 3));
    assert!(!r.recommended);
    // Four neighbours are far from the targets the default keeps.
    assert!(!r.meets_targets, "{}", r.assessment);
    let t = run(&SecAggBenchArgs {
        threshold: Some(4),
        ..args.clone()
    })
    .unwrap();
    assert_eq!(t.threshold, 4);
    let default = run(&SecAggBenchArgs {
        neighbours: None,
        ..args.clone()
    })
    .unwrap();
    assert!(default.recommended && default.neighbours > 4);
    assert!(default.meets_targets, "{}", default.assessment);
    for (k, t) in [(5, None), (4, Some(2)), (4, Some(5)), (40, None)] {
        let bad = SecAggBenchArgs {
            neighbours: Some(k),
            threshold: t,
            ..args.clone()
        };
        assert!(run(&bad).is_err(), "k = {k}, t = {t:?}");
    }
}
