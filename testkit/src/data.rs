//! The bundled data sets as tests use them: their paths, their tasks, the
//! loaded datasets, stratified holdouts and IID deals, and the preprocessor
//! the sites derive from their pooled statistics.

use std::path::{Path, PathBuf};

use tessera_model::split::{deal_stratified, stratified_holdout};
use tessera_model::{
    Dataset, LabelRule, LocalStats, ModelKind, Preprocessor, TaskSpec, load_csv, read_header,
};

/// The four hospitals of the UCI heart-disease data, in file order.
pub const HOSPITALS: [&str; 4] = ["cleveland", "hungary", "switzerland", "va_long_beach"];

/// The bundled data directory (`data/` at the root of the repository).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// The CSV of one heart-disease hospital.
pub fn hospital_path(name: &str) -> PathBuf {
    data_dir().join("heart_disease").join(format!("{name}.csv"))
}

/// The bundled breast-cancer CSV.
pub fn breast_cancer_path() -> PathBuf {
    data_dir().join("breast_cancer_wisconsin.csv")
}

/// A logistic task on every column of `path` but `label`, in file order.
///
/// # Panics
/// If the file cannot be read or `positive` is not a label rule.
pub fn task_for(path: &Path, label: &str, positive: &str) -> TaskSpec {
    let header = read_header(path).expect("reading a bundled data set");
    TaskSpec::binary(
        ModelKind::Logistic,
        header.into_iter().filter(|h| h != label).collect(),
        label,
        positive.parse::<LabelRule>().expect("a label rule"),
    )
}

/// The heart-disease task: every column but `num`, disease (`num > 0`) positive.
pub fn heart_task() -> TaskSpec {
    task_for(&hospital_path("cleveland"), "num", "> 0")
}

/// The breast-cancer task: every column but `diagnosis`, malignant (`M`) positive.
pub fn breast_cancer_task() -> TaskSpec {
    task_for(&breast_cancer_path(), "diagnosis", "M")
}

/// The four hospitals' datasets, in [`HOSPITALS`] order.
pub fn heart_sites() -> Vec<Dataset> {
    let task = heart_task();
    HOSPITALS
        .iter()
        .map(|h| load_csv(&hospital_path(h), &task).expect("loading a hospital"))
        .collect()
}

/// The breast-cancer dataset.
pub fn breast_cancer() -> Dataset {
    load_csv(&breast_cancer_path(), &breast_cancer_task()).expect("loading the breast-cancer data")
}

/// A 20% holdout of one site, stratified by class: (train, test).
pub fn holdout(ds: &Dataset, seed: u64) -> (Dataset, Dataset) {
    let keys: Vec<u8> = ds.y.iter().map(|v| u8::from(*v > 0.5)).collect();
    let (train, test) = stratified_holdout(&keys, 0.2, seed);
    (ds.select(&train), ds.select(&test))
}

/// Splits every site 80/20 (site `i` seeded by `seed + i`); returns the
/// training sites and the pooled test set.
pub fn split_sites(sites: &[Dataset], seed: u64) -> (Vec<Dataset>, Dataset) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        let (tr, te) = holdout(s, seed.wrapping_add(i as u64));
        train.push(tr);
        test.push(te);
    }
    let test = Dataset::concat(&test.iter().collect::<Vec<_>>()).expect("pooling the test sets");
    (train, test)
}

/// Deals a dataset IID (stratified by class) over `n` sites.
pub fn deal(ds: &Dataset, n: usize, seed: u64) -> Vec<Dataset> {
    let keys: Vec<u8> = ds.y.iter().map(|v| u8::from(*v > 0.5)).collect();
    deal_stratified(&keys, n, seed)
        .iter()
        .map(|idx| ds.select(idx))
        .collect()
}

/// The preprocessor every site derives from the sum of the sites' statistics.
pub fn pooled_preprocessor(sites: &[Dataset]) -> Preprocessor {
    let d = sites[0].n_features();
    let mut pooled = LocalStats::zeros(d);
    for s in sites {
        pooled.add(&LocalStats::compute(s));
    }
    Preprocessor::from_pooled(&pooled).expect("a preprocessor from the pooled statistics")
}
