//! Tests of loading site CSV files (`data.rs`).

use super::*;
use crate::task::ModelKind;

fn task(features: &[&str], label: &str, positive: &str) -> TaskSpec {
    TaskSpec::binary(
        ModelKind::Logistic,
        features.iter().map(|s| s.to_string()).collect(),
        label,
        positive.parse().unwrap(),
    )
}

fn load(text: &str, t: &TaskSpec) -> Result<Dataset, DataError> {
    load_csv_from_reader(text.as_bytes(), Path::new("site.csv"), t)
}

#[test]
fn markers_and_number_forms() {
    let t = task(&["b", "a"], "y", "> 0");
    let ds = load("a,b,y\n1,.7,2\n?, NA ,0\nnan,,1\nNULL,-1e1,?\n", &t).unwrap();
    assert_eq!(ds.n_rows(), 3);
    assert_eq!(ds.skipped_rows, 1);
    assert_eq!(ds.x[[0, 0]], 0.7);
    assert_eq!(ds.x[[0, 1]], 1.0);
    assert!(ds.x[[1, 0]].is_nan() && ds.x[[1, 1]].is_nan());
    assert!(ds.x[[2, 0]].is_nan() && ds.x[[2, 1]].is_nan());
    assert_eq!(ds.y.to_vec(), vec![1.0, 0.0, 1.0]);
}

#[test]
fn not_numeric_names_column_line_value() {
    let t = task(&["a"], "y", "> 0");
    let err = load("a,y\n1,0\nabc,1\n", &t).unwrap_err();
    match &err {
        DataError::NotNumeric {
            column, row, value, ..
        } => {
            assert_eq!((column.as_str(), *row, value.as_str()), ("a", 3, "abc"));
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains("line 3"), "{err}");
    assert!(matches!(
        load("a,y\ninf,0\n", &t),
        Err(DataError::NotNumeric { .. })
    ));
    // A threshold rule needs a numeric label.
    assert!(
        matches!(load("a,y\n1,M\n", &t), Err(DataError::NotNumeric { column, .. }) if column == "y")
    );
}

#[test]
fn structural_errors() {
    let t = task(&["a", "c"], "y", "> 0");
    let e = load("a,b,y\n1,2,0\n", &t).unwrap_err();
    assert!(matches!(&e, DataError::MissingColumn { column, .. } if column == "c"));
    assert!(e.to_string().contains("\"c\""), "{e}");
    let t = task(&["a"], "y", "> 0");
    assert!(matches!(load("a,y\n", &t), Err(DataError::Empty { .. })));
    assert!(matches!(
        load("a,y\n1,?\n", &t),
        Err(DataError::Empty { .. })
    ));
    assert!(matches!(load("", &t), Err(DataError::Empty { .. })));
    assert!(matches!(
        load("a,y\n1,0,5\n", &t),
        Err(DataError::Malformed { line: 2, .. })
    ));
    assert!(matches!(
        load("a,a,y\n1,2,0\n", &t),
        Err(DataError::DuplicateColumn { .. })
    ));
}

#[test]
fn equality_rule_must_be_binary() {
    let t = task(&["a"], "d", "M");
    let ds = load("d,a\nM,1\nB,2\n B ,3\n", &t).unwrap();
    assert_eq!(ds.y.to_vec(), vec![1.0, 0.0, 0.0]);
    // One class only at this site is allowed.
    assert_eq!(load("d,a\nB,1\n", &t).unwrap().positives(), 0);
    assert!(matches!(
        load("d,a\nM,1\nB,2\nX,3\n", &t),
        Err(DataError::LabelNotBinary { .. })
    ));
    let e = load("d,a\nmalignant,1\nbenign,2\n", &t).unwrap_err();
    assert!(e.to_string().contains("the positive class is \"M\""), "{e}");
}

#[test]
fn multiclass_and_regression_labels() {
    let mut t = task(&["a"], "y", "> 0");
    t.model = ModelKind::Softmax;
    t.kind = TaskKind::Multiclass {
        classes: vec!["setosa".into(), "virginica".into(), "2".into()],
    };
    let ds = load("a,y\n1,virginica\n2, setosa\n3,2.0\n4,?\n", &t).unwrap();
    assert_eq!(ds.y.to_vec(), vec![1.0, 0.0, 2.0]);
    assert_eq!(ds.skipped_rows, 1);
    let e = load("a,y\n1,setosa\n2,versicolor\n", &t).unwrap_err();
    match &e {
        DataError::UnknownClass { row, value, .. } => {
            assert_eq!((*row, value.as_str()), (3, "versicolor"));
        }
        e => panic!("unexpected {e:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("site.csv") && text.contains("line 3") && text.contains("versicolor"),
        "{text}"
    );
    t.model = ModelKind::Linear;
    t.kind = TaskKind::Regression { standardize: true };
    let ds = load("a,y\n1,151.5\n2,-3\n", &t).unwrap();
    assert_eq!(ds.y.to_vec(), vec![151.5, -3.0]);
    assert!(matches!(
        load("a,y\n1,high\n", &t),
        Err(DataError::NotNumeric { row: 2, .. })
    ));
    assert!(matches!(
        load("a,y\n1,inf\n", &t),
        Err(DataError::NotNumeric { .. })
    ));
}

#[test]
fn raw_round_trip_keeps_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.csv");
    let header = vec!["a".to_string(), "b".to_string()];
    let rows = vec![
        vec!["?".to_string(), ".7".to_string()],
        vec!["x,y".to_string(), "".to_string()],
    ];
    write_raw_csv(&p, &header, &rows).unwrap();
    let t = read_raw_csv(&p).unwrap();
    assert_eq!(t.header, header);
    assert_eq!(t.rows, rows);
    assert_eq!(read_header(&p).unwrap(), header);
    assert!(matches!(
        read_header(&dir.path().join("nope.csv")),
        Err(DataError::Io { .. })
    ));
}
