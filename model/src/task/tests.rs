//! Tests of task descriptions (`task.rs`).

use super::*;

#[test]
fn label_rule_text_round_trips() {
    for (text, rule) in [
        ("> 0", LabelRule::GreaterThan(0.0)),
        ("> 2.5", LabelRule::GreaterThan(2.5)),
        ("> -1", LabelRule::GreaterThan(-1.0)),
        ("M", LabelRule::Equals("M".into())),
        ("= >x", LabelRule::Equals(">x".into())),
    ] {
        assert_eq!(text.parse::<LabelRule>().unwrap(), rule);
        assert_eq!(rule.to_string(), text);
    }
    assert_eq!(
        ">0".parse::<LabelRule>().unwrap(),
        LabelRule::GreaterThan(0.0)
    );
    assert_eq!(
        "== B".parse::<LabelRule>().unwrap(),
        LabelRule::Equals("B".into())
    );
    assert!("> x".parse::<LabelRule>().is_err());
    assert!("".parse::<LabelRule>().is_err());
    assert!("=".parse::<LabelRule>().is_err());
}

#[test]
fn label_rule_matches() {
    let gt = LabelRule::GreaterThan(0.0);
    assert_eq!(gt.is_positive("2"), Some(true));
    assert_eq!(gt.is_positive(" 0 "), Some(false));
    assert_eq!(gt.is_positive("M"), None);
    let eq = LabelRule::Equals("1".into());
    assert_eq!(eq.is_positive("1.0"), Some(true));
    assert_eq!(eq.is_positive("0"), Some(false));
    let m = LabelRule::Equals("M".into());
    assert_eq!(m.is_positive(" M"), Some(true));
    assert_eq!(m.is_positive("B"), Some(false));
}

#[test]
fn task_serde_keeps_the_binary_form_and_names_other_kinds() {
    let task = TaskSpec::binary(
        ModelKind::Logistic,
        vec!["a".into(), "b".into()],
        "y",
        LabelRule::GreaterThan(0.0),
    );
    let json = serde_json::to_string(&task).unwrap();
    assert_eq!(
        json,
        r#"{"model":"logistic","features":["a","b"],"label":"y","positive":"> 0"}"#
    );
    assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), task);
    assert!(serde_json::from_str::<TaskSpec>(&json.replace("> 0", "> zero")).is_err());
    let multi = TaskSpec {
        model: ModelKind::Softmax,
        kind: TaskKind::Multiclass {
            classes: vec!["setosa".into(), "versicolor".into()],
        },
        ..task.clone()
    };
    let json = serde_json::to_string(&multi).unwrap();
    assert!(
        json.contains(r#""kind":"multiclass","classes":["setosa","versicolor"]"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), multi);
    let reg = TaskSpec {
        model: ModelKind::Linear,
        kind: TaskKind::Regression { standardize: true },
        ..task.clone()
    };
    let json = serde_json::to_string(&reg).unwrap();
    assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), reg);
    // Parts of another kind are refused, not ignored.
    for bad in [
        r#"{"model":"linear","features":["a"],"label":"y","kind":"regression","positive":"> 0"}"#,
        r#"{"model":"logistic","features":["a"],"label":"y","classes":["a","b"]}"#,
        r#"{"model":"softmax","features":["a"],"label":"y","kind":"multiclass"}"#,
        r#"{"model":"softmax","features":["a"],"label":"y","kind":"ordinal"}"#,
    ] {
        assert!(serde_json::from_str::<TaskSpec>(bad).is_err(), "{bad}");
    }
}

#[test]
fn validate_catches_mistakes() {
    let mut task = TaskSpec::binary(
        ModelKind::Logistic,
        vec!["a".into(), "b".into()],
        "y",
        LabelRule::GreaterThan(0.0),
    );
    assert!(task.validate().is_ok());
    task.features.push("a".into());
    assert_eq!(
        task.validate(),
        Err(TaskError::DuplicateFeature("a".into()))
    );
    task.features = vec!["y".into()];
    assert_eq!(task.validate(), Err(TaskError::LabelIsFeature("y".into())));
    task.features.clear();
    assert_eq!(task.validate(), Err(TaskError::NoFeatures));
    task.features = vec!["a".into()];
    task.model = ModelKind::Softmax;
    assert!(matches!(
        task.validate(),
        Err(TaskError::ModelDoesNotFit { .. })
    ));
    task.kind = TaskKind::Multiclass {
        classes: vec!["1".into(), "1.0".into()],
    };
    assert!(matches!(task.validate(), Err(TaskError::Classes(_))));
    task.kind = TaskKind::Multiclass {
        classes: vec!["x".into()],
    };
    assert!(matches!(task.validate(), Err(TaskError::Classes(_))));
    task.kind = TaskKind::Multiclass {
        classes: vec!["x".into(), " y".into()],
    };
    assert_eq!(task.validate(), Ok(()));
    assert_eq!(task.class_index("y"), Some(1));
    assert_eq!(task.class_index("z"), None);
    task.model = ModelKind::External;
    assert!(matches!(task.validate(), Err(TaskError::Tensors(_))));
    task.tensors = vec![TensorSpec::new("w", &[2, 1])];
    assert_eq!(task.validate(), Ok(()));
    task.model = ModelKind::mlp1(3);
    assert!(matches!(task.validate(), Err(TaskError::Tensors(_))));
}
