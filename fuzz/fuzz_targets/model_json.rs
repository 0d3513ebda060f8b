//! Arbitrary text as a model.json: parsing and checking must refuse it with a
//! message or accept it, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = candela_server::model::repository::parse_manifest(text);
    }
});
