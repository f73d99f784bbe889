//! A bundle's manifest.json: any bytes parse to a manifest or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nano_vllm_bundle::Manifest::parse(std::path::Path::new("manifest.json"), data);
});
