//! Model files: any bytes read as a safetensors model file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) =
        tessera_model::ModelFile::from_bytes(data, std::path::Path::new("fuzz.safetensors"))
    {
        let _ = m.validate();
    }
});
