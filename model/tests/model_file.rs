//! Model files: readable by the documented layout, and refused clearly when damaged.

use tessera_model::model::ModelError;
use tessera_model::{
    LabelRule, ModelFile, ModelKind, Preprocessor, TaskSpec, read_model, write_model,
};

fn small() -> ModelFile {
    ModelFile {
        task: TaskSpec {
            model: ModelKind::Logistic,
            features: vec!["a".into(), "b".into()],
            label: "y".into(),
            positive: LabelRule::Equals("M".into()),
        },
        params: vec![0.5, -1.25, 2.0, 0.125],
        preprocessor: Preprocessor {
            mean: vec![1.0, 2.0],
            std: vec![0.5, 3.0],
            indicator: vec![false, true],
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
    assert_eq!(names, ["params", "pre.indicator", "pre.mean", "pre.std"]);
    assert_eq!(
        st.tensor("params").unwrap().dtype(),
        safetensors::Dtype::F32
    );
    assert_eq!(st.tensor("pre.indicator").unwrap().data(), &[0, 1]);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["round"], "3");
    assert_eq!(meta["format"], "tessera-model/1");
    assert!(meta["task"].contains(r#""positive":"M""#));
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
