//! CSV loading: any bytes as a site's data file for a fixed task.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_model::TaskSpec;
use tessera_model::data::load_csv_from_reader;

fuzz_target!(|data: &[u8]| {
    let Ok(task) = toml::from_str::<TaskSpec>(
        "model = \"logistic\"\nfeatures = [\"a\", \"b\"]\nlabel = \"y\"\npositive = \"> 0\"\n",
    ) else {
        return;
    };
    let _ = load_csv_from_reader(data, std::path::Path::new("fuzz.csv"), &task);
});
