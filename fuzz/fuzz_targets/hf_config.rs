//! A Hugging Face config.json: any JSON gives a config or an error naming the field, never a panic; a config that
//! parses answers its derived questions (KV bytes, RoPE frequencies) without overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(c) = nano_vllm_bundle::HfConfig::from_json(std::path::Path::new("config.json"), &v) {
        let _ = c.group_size();
        let _ = c.kv_bytes_per_token_f32();
        let _ = c.rope_inv_freq();
    }
});
