//! A bundle's reference.safetensors, checked against the committed tiny-llama manifest: any bytes give reference
//! logits or an error naming the tensor, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nano_vllm_bundle::{Manifest, Reference};

fn manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-llama/manifest.json");
        Manifest::parse(path.as_ref(), &std::fs::read(path).expect("tiny-llama's manifest")).expect("a manifest")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = Reference::parse(std::path::Path::new("reference.safetensors"), data, manifest());
});
