//! Configuration files: any text parsed as the coordinator's and the
//! participant's TOML configuration (types, unknown keys, validation).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = toml::from_str::<tessera_coordinator::config::CoordinatorConfig>(text);
    let _ = toml::from_str::<tessera_participant::config::ParticipantConfig>(text);
});
