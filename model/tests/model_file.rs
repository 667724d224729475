//! Model files: readable by the documented layout, and refused clearly when damaged.

use std::collections::HashMap;

use tessera_model::model::ModelError;
use tessera_model::{
    LabelRule, ModelFile, ModelKind, Preprocessor, TargetScale, TaskKind, TaskSpec, read_model,
    write_model,
};

fn small() -> ModelFile {
    ModelFile {
        task: TaskSpec::binary(
            ModelKind::Logistic,
            vec!["a".into(), "b".into()],
            "y",
            LabelRule::Equals("M".into()),
        ),
        params: vec![0.5, -1.25, 2.0, 0.125],
        preprocessor: Preprocessor {
            mean: vec![1.0, 2.0],
            std: vec![0.5, 3.0],
            indicator: vec![false, true],
            target: None,
        },
        round: 3,
    }
}

#[test]
fn layout_is_plain_safetensors() {
    let bytes = small().to_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        ["bias", "pre.indicator", "pre.mean", "pre.std", "weight"]
    );
    let w = st.tensor("weight").unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::F32);
    // One output row of three inputs (two features and one indicator).
    assert_eq!(w.shape(), [1, 3]);
    assert_eq!(st.tensor("bias").unwrap().data(), 0.125f32.to_le_bytes());
    assert_eq!(st.tensor("pre.indicator").unwrap().data(), &[0, 1]);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["round"], "3");
    assert_eq!(meta["format"], "tessera-model/2");
    assert!(meta["task"].contains(r#""positive":"M""#));
}

#[test]
fn regression_targets_and_multiclass_layouts_round_trip() {
    let mut m = small();
    m.task.model = "mlp:2".parse().unwrap();
    m.task.kind = TaskKind::Regression { standardize: true };
    m.preprocessor.target = Some(TargetScale {
        mean: 150.0,
        std: 75.0,
    });
    m.params = (0..m.task.num_params(3)).map(|i| i as f32 / 10.0).collect();
    let back = ModelFile::from_bytes(&m.to_bytes().unwrap(), std::path::Path::new("m")).unwrap();
    assert_eq!(back, m);
    m.task.model = ModelKind::Softmax;
    m.task.kind = TaskKind::Multiclass {
        classes: vec!["a".into(), "b".into(), "c".into()],
    };
    m.preprocessor.target = None;
    m.params = vec![0.25; 12];
    let back = ModelFile::from_bytes(&m.to_bytes().unwrap(), std::path::Path::new("m")).unwrap();
    assert_eq!(back, m);
}

/// Files of the first format (one flat `params` tensor) are still read.
#[test]
fn first_format_files_are_read() {
    let m = small();
    let f64s = |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let params: Vec<u8> = m.params.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (mean, std) = (f64s(&m.preprocessor.mean), f64s(&m.preprocessor.std));
    let ind = [0u8, 1];
    use safetensors::tensor::{Dtype, TensorView};
    let tensors = vec![
        (
            "params",
            TensorView::new(Dtype::F32, vec![4], &params[..]).unwrap(),
        ),
        (
            "pre.mean",
            TensorView::new(Dtype::F64, vec![2], &mean[..]).unwrap(),
        ),
        (
            "pre.std",
            TensorView::new(Dtype::F64, vec![2], &std[..]).unwrap(),
        ),
        (
            "pre.indicator",
            TensorView::new(Dtype::U8, vec![2], &ind[..]).unwrap(),
        ),
    ];
    let meta = HashMap::from([
        ("format".to_string(), "tessera-model/1".to_string()),
        ("task".to_string(), serde_json::to_string(&m.task).unwrap()),
        ("round".to_string(), "3".to_string()),
    ]);
    let bytes = safetensors::serialize(tensors, Some(meta)).unwrap();
    assert_eq!(
        ModelFile::from_bytes(&bytes, std::path::Path::new("old")).unwrap(),
        m
    );
}

#[test]
fn inconsistent_or_damaged_files_are_refused() {
    let mut m = small();
    m.params.pop();
    assert!(matches!(
        m.to_bytes(),
        Err(ModelError::ParamLength {
            expected: 4,
            got: 3
        })
    ));
    let mut m = small();
    m.params[1] = f32::INFINITY;
    assert!(matches!(
        m.to_bytes(),
        Err(ModelError::NonFinite { index: 1 })
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    write_model(&path, &small()).unwrap();
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    let err = read_model(&path).unwrap_err();
    assert!(matches!(err, ModelError::Format { .. }), "{err}");
    assert!(err.to_string().contains("m.safetensors"), "{err}");
    std::fs::write(&path, b"not a model").unwrap();
    assert!(matches!(read_model(&path), Err(ModelError::Format { .. })));
    assert!(matches!(
        read_model(&dir.path().join("absent")),
        Err(ModelError::Io { .. })
    ));
    // Writing into a missing directory fails cleanly and leaves nothing behind.
    assert!(matches!(
        write_model(&dir.path().join("no/such/m.safetensors"), &small()),
        Err(ModelError::Io { .. })
    ));
}
