//! `config.json` parsing, as transformers reads each family, and what a GGUF cannot carry.
use super::*;

fn parse(json: &str) -> Result<HfConfig, BundleError> {
    HfConfig::from_json(Path::new("config.json"), &serde_json::from_str(json).unwrap())
}

const LLAMA: &str = r#"{"model_type":"llama","vocab_size":512,"hidden_size":64,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"max_position_embeddings":256,
    "rms_norm_eps":1e-5,"rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"eos_token_id":1}"#;

#[test]
fn llama_with_transformers5_rope_parameters() {
    let c = parse(LLAMA).unwrap();
    assert_eq!((c.architecture, c.head_dim, c.group_size(), c.rope_theta), (HfArchitecture::Llama, 16, 2, Some(1e4)));
    assert_eq!(c.eos_token_ids, [1]);
    assert_eq!(c.kv_bytes_per_token_f32(), 2 * 2 * 2 * 16 * 4);
    let inv = c.rope_inv_freq().unwrap();
    assert_eq!(inv.len(), 8);
    assert!((inv[1] - 1e4f64.powf(-2.0 / 16.0)).abs() < 1e-15);
}

#[test]
fn top_level_rope_theta_is_read_and_missing_theta_is_an_error() {
    let old =
        LLAMA.replace(r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"default"}"#, r#""rope_theta":500000.0"#);
    assert_eq!(parse(&old).unwrap().rope_theta, Some(5e5));
    let none = LLAMA.replace(r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"#, "");
    let err = parse(&none).unwrap_err().to_string();
    assert!(err.contains("rope_theta") && err.contains("missing"), "{err}");
}

/// Found by ci/fuzz.sh (fuzz/regressions/hf_config/): a head of 1.6e18 dimensions overflowed the KV size.
#[test]
fn a_head_beyond_any_model_is_refused_and_kv_sizes_saturate() {
    let err = parse(&LLAMA.replace(r#""vocab_size":512"#, r#""vocab_size":512,"head_dim":1642000000001157258"#))
        .unwrap_err()
        .to_string();
    assert!(err.contains("head_dim") && err.contains("beyond any model"), "{err}");
    let layers = parse(&LLAMA.replace(r#""num_hidden_layers":2"#, r#""num_hidden_layers":4000000000"#));
    assert!(layers.unwrap_err().to_string().contains("beyond any model"));
    let c = HfConfig { num_layers: usize::MAX / 4, ..parse(LLAMA).unwrap() };
    assert_eq!(c.kv_bytes_per_token_f32(), usize::MAX);
}

#[test]
fn a_vocabulary_beyond_32_bit_ids_is_refused() {
    let err = parse(&LLAMA.replace(r#""vocab_size":512"#, r#""vocab_size":1099511627776"#)).unwrap_err().to_string();
    assert!(err.contains("vocab_size") && err.contains("exceeds 2^32"), "{err}");
}

#[test]
fn gpt2_attention_scale_follows_scale_attn_weights_and_other_variants_are_refused_by_name() {
    let gpt2 = |extra: &str| {
        parse(&format!(
            r#"{{"model_type":"gpt2","vocab_size":512,"n_embd":64,"n_head":4,"n_layer":2,"n_positions":256{extra}}}"#
        ))
    };
    assert_eq!(gpt2("").unwrap().attention_scale, 0.25);
    assert_eq!(gpt2(r#","scale_attn_weights":true"#).unwrap().attention_scale, 0.25);
    assert_eq!(gpt2(r#","scale_attn_weights":false"#).unwrap().attention_scale, 1.0);
    let err = gpt2(r#","reorder_and_upcast_attn":true"#).unwrap_err().to_string();
    assert!(err.contains("reorder_and_upcast_attn"), "{err}");
}

#[test]
fn what_a_gguf_cannot_carry_is_named() {
    assert_eq!(parse(LLAMA).unwrap().beyond_gguf(256), None);
    let mistral = parse(
        &LLAMA
            .replace(r#""llama""#, r#""mistral""#)
            .replace(r#""eos_token_id":1"#, r#""eos_token_id":1,"sliding_window":32"#),
    )
    .unwrap();
    let why = mistral.beyond_gguf(256).unwrap();
    assert!(why.contains("`sliding_window`: 32 (in 2 of 2 layers)") && why.contains("context of 256"), "{why}");
    // A context within the window never reaches it.
    assert_eq!(mistral.beyond_gguf(32), None);
    let gpt2 = parse(r#"{"model_type":"gpt2","vocab_size":512,"n_embd":64,"n_head":4,"n_layer":2,"n_positions":256,"scale_attn_weights":false}"#).unwrap();
    assert!(gpt2.beyond_gguf(16).unwrap().contains("`scale_attn_weights`"));
    let llama3 = LLAMA.replace(
        r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"default"}"#,
        r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}"#,
    );
    assert_eq!(parse(&llama3).unwrap().beyond_gguf(256), None);
    let qwen2 = parse(&llama3.replace(r#""llama""#, r#""qwen2""#)).unwrap();
    assert!(qwen2.beyond_gguf(256).unwrap().contains("`rope_scaling`"));
}

#[test]
fn phi3_reads_as_the_llama_layer_and_refuses_what_it_cannot_run_by_field() {
    let phi3 = LLAMA.replace(r#""llama""#, r#""phi3""#);
    let c = parse(&phi3).unwrap();
    assert_eq!((c.architecture, c.sliding_window, c.extras), (HfArchitecture::Phi3, None, LayerExtras::default()));
    let windowed = parse(&phi3.replace(r#""eos_token_id":1"#, r#""eos_token_id":1,"sliding_window":32"#)).unwrap();
    assert_eq!(windowed.sliding_window, Some(32));
    assert!(windowed.beyond_gguf(256).unwrap().contains("`sliding_window`: 32"));
    let partial = parse(&phi3.replace(r#""eos_token_id":1"#, r#""eos_token_id":1,"partial_rotary_factor":0.75"#));
    assert!(partial.unwrap_err().to_string().contains("partial_rotary_factor"));
    let long = phi3.replace(r#""rope_type":"default""#, r#""rope_type":"longrope""#);
    assert!(parse(&long).unwrap_err().to_string().contains("'longrope' is not supported"));
}

#[test]
fn gemma3_text_reads_its_extras_and_refuses_soft_capping() {
    let gemma = r#"{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"num_hidden_layers":12,
        "num_attention_heads":4,"num_key_value_heads":1,"head_dim":16,"intermediate_size":128,
        "max_position_embeddings":256,"sliding_window":48,"query_pre_attn_scalar":16,
        "rope_parameters":{"sliding_attention":{"rope_type":"default","rope_theta":10000.0},
                           "full_attention":{"rope_type":"default","rope_theta":1000000.0}}}"#;
    let c = parse(gemma).unwrap();
    assert_eq!(c.full_attention_layers, [5, 11]);
    assert_eq!((c.rope_theta, c.extras.rope_local_theta), (Some(1e6), Some(1e4)));
    assert_eq!((c.activation, c.attention_scale, c.tie_word_embeddings), (Activation::GeluTanh, 0.25, true));
    assert_eq!(c.rope_local_inv_freq().unwrap()[1], 1e4f64.powf(-2.0 / 16.0));
    let capped = gemma.replace(r#""sliding_window":48"#, r#""sliding_window":48,"final_logit_softcapping":30.0"#);
    assert!(parse(&capped).unwrap_err().to_string().contains("final_logit_softcapping"));
    let multimodal = gemma.replace("gemma3_text", "gemma3");
    assert!(parse(&multimodal).unwrap_err().to_string().contains("gemma3_text"));
    // llama.cpp's fixed pattern (every 6th layer global) and local base are what this config has; another
    // pattern is named.
    assert_eq!(c.beyond_gguf(256), None);
    let pattern = gemma.replace(r#""sliding_window":48"#, r#""sliding_window":48,"sliding_window_pattern":4"#);
    assert!(parse(&pattern).unwrap().beyond_gguf(256).unwrap().contains("layer_types"));
}

#[test]
fn unsupported_architecture_is_named() {
    let err = parse(r#"{"model_type":"falcon"}"#).unwrap_err().to_string();
    assert!(err.contains("'falcon' is not supported"), "{err}");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    let j = LLAMA.replace(
        r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"default"}"#,
        r#""rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"#,
    );
    let c = parse(&j).unwrap();
    let inv = c.rope_inv_freq().unwrap();
    // Highest frequency (wavelength 2*pi < 2048) unchanged; lowest divided by the factor.
    assert_eq!(inv[0], 1.0);
    let lowest = 500000f64.powf(-14.0 / 16.0);
    assert!((inv[7] - lowest / 8.0).abs() < 1e-18);
}

#[test]
fn committed_bundles_parse() {
    for name in crate::COMMITTED_BUNDLES {
        let c = HfConfig::from_dir(crate::fixtures_dir().join(name)).unwrap();
        assert_eq!(c.vocab_size, 512, "{name}");
        assert_eq!(c.hidden_size, 64, "{name}");
    }
    let q = HfConfig::from_dir(crate::fixtures_dir().join("tiny-qwen2")).unwrap();
    assert!(q.qkv_bias && q.tie_word_embeddings && !q.o_bias);
    let g = HfConfig::from_dir(crate::fixtures_dir().join("tiny-gpt2")).unwrap();
    assert_eq!((g.activation, g.intermediate_size, g.rope_theta), (Activation::GeluTanh, 128, None));
}
