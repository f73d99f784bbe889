//! The sliding attention window of a Hugging Face config, decided as transformers decides it (Mistral, Qwen2's
//! `use_sliding_window` / `max_window_layers`, `layer_types`), layer by layer.

use super::{HfArchitecture, Reader};
use crate::error::BundleError;

/// The attention window and the layers that apply it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Window {
    /// The window, when at least one layer applies it.
    pub size: Option<usize>,
    /// Layers with full attention although `size` is set (Qwen2 below `max_window_layers`, `full_attention` in
    /// `layer_types`), ascending.
    pub full_layers: Vec<usize>,
}

/// The attention window, as transformers decides it. Mistral: `sliding_window` (absent: 4096, MistralConfig's
/// default; null: none) in every layer. Qwen2: only with `use_sliding_window` (default false; off,
/// `sliding_window` is ignored), absent `sliding_window` 4096, and only from layer `max_window_layers` (default 28)
/// on: full attention below it (Qwen3 alike). Gemma 3: `sliding_window` (absent: 4096) in every layer but each
/// `sliding_window_pattern`-th (default 6: layers 5, 11, 17, ...). Any: a `layer_types` list, when present, says which
/// layers are windowed. Llama has no window.
pub(super) fn sliding_window(
    r: &Reader<'_>,
    architecture: HfArchitecture,
    num_layers: usize,
) -> Result<Window, BundleError> {
    let enabled = match architecture {
        HfArchitecture::Mistral => true,
        HfArchitecture::Qwen2 | HfArchitecture::Qwen3 => r.bool_or("use_sliding_window", false)?,
        HfArchitecture::Gemma3 | HfArchitecture::Phi3 => true,
        _ => return Ok(Window::default()),
    };
    let window = match r.v.get("sliding_window") {
        _ if !enabled => None,
        // Phi3Config's default is no window.
        None if architecture == HfArchitecture::Phi3 => None,
        None => Some(4096),
        Some(_) => r.opt_usize("sliding_window")?,
    };
    let layer_types = r.v.get("layer_types").filter(|t| !t.is_null());
    let windowed: Vec<bool> = if let Some(types) = layer_types {
        let types = types.as_array().ok_or_else(|| r.err("layer_types", "expected a list of layer types"))?;
        if types.len() != num_layers {
            return Err(
                r.err("layer_types", format!("{} entries for {num_layers} layers (num_hidden_layers)", types.len()))
            );
        }
        let windowed = types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(r.err(
                    &format!("layer_types[{i}]"),
                    format!("{t} is not supported (full_attention, sliding_attention)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if windowed.contains(&true) && window.is_none() {
            return Err(r.err(
                "layer_types",
                "sliding_attention layers without a sliding_window (or with use_sliding_window false)",
            ));
        }
        windowed
    } else if architecture == HfArchitecture::Gemma3 {
        let pattern = match r.opt_usize("sliding_window_pattern")? {
            Some(p) => p,
            None => r.opt_usize("_sliding_window_pattern")?.unwrap_or(6),
        };
        if pattern == 0 {
            return Err(r.err("sliding_window_pattern", "must be at least 1"));
        }
        (0..num_layers).map(|i| (i + 1) % pattern != 0).collect()
    } else if matches!(architecture, HfArchitecture::Qwen2 | HfArchitecture::Qwen3) && enabled {
        let first = r.opt_usize("max_window_layers")?.unwrap_or(28);
        (0..num_layers).map(|i| i >= first).collect()
    } else {
        vec![enabled; num_layers]
    };
    match window {
        _ if !windowed.contains(&true) => Ok(Window::default()),
        None => Ok(Window::default()),
        Some(0) => Err(r.err("sliding_window", "0 would hide every key, the token's own too")),
        Some(w) => Ok(Window {
            size: Some(w),
            full_layers: windowed.iter().enumerate().filter(|(_, w)| !**w).map(|(i, _)| i).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{BundleError, HfConfig};

    fn parse(json: &str) -> Result<HfConfig, BundleError> {
        HfConfig::from_json(Path::new("config.json"), &serde_json::from_str(json).unwrap())
    }

    const QWEN2: &str = r#"{"model_type":"qwen2","vocab_size":512,"hidden_size":64,"num_hidden_layers":4,
        "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"max_position_embeddings":256,
        "rope_theta":10000.0,"eos_token_id":1,"sliding_window":32"#;

    #[test]
    fn qwen2_sliding_window_follows_use_sliding_window_and_max_window_layers() {
        let qwen2 = |extra: &str| parse(&format!("{QWEN2}{extra}}}"));
        // transformers: use_sliding_window defaults to false, and then no layer has a window.
        assert_eq!(qwen2("").unwrap().sliding_window, None);
        assert_eq!(qwen2(r#","use_sliding_window":false,"max_window_layers":0"#).unwrap().sliding_window, None);
        // On: layers from max_window_layers (default 28) on are windowed.
        assert_eq!(qwen2(r#","use_sliding_window":true"#).unwrap().sliding_window, None);
        assert_eq!(qwen2(r#","use_sliding_window":true,"max_window_layers":4"#).unwrap().sliding_window, None);
        assert_eq!(qwen2(r#","use_sliding_window":true,"max_window_layers":0"#).unwrap().sliding_window, Some(32));
        let below = qwen2(r#","use_sliding_window":true,"max_window_layers":2"#).unwrap();
        assert_eq!((below.sliding_window, below.full_attention_layers.as_slice()), (Some(32), &[0, 1][..]));
        assert_eq!((below.window(1), below.window(2), below.window(3)), (None, Some(32), Some(32)));
        // Off, sliding_window is ignored; on without one, transformers' default 4096.
        let no_key = QWEN2.replace(r#","sliding_window":32"#, "");
        let on = |extra: &str| parse(&format!("{no_key}{extra}}}"));
        assert_eq!(on(r#","use_sliding_window":true,"max_window_layers":0"#).unwrap().sliding_window, Some(4096));
        // layer_types decides when present.
        let all_sliding =
            r#","layer_types":["sliding_attention","sliding_attention","sliding_attention","sliding_attention"]"#;
        let all = format!(r#","use_sliding_window":true{all_sliding}"#);
        assert_eq!(qwen2(&all).unwrap().sliding_window, Some(32));
        // Sliding layers with the window off: transformers has no window to apply either.
        let err = qwen2(all_sliding).unwrap_err().to_string();
        assert!(err.contains("layer_types") && err.contains("without a sliding_window"), "{err}");
        let mixed = r#","use_sliding_window":true,"layer_types":["full_attention","sliding_attention","full_attention","sliding_attention"]"#;
        let mixed = qwen2(mixed).unwrap();
        assert_eq!((mixed.sliding_window, mixed.full_attention_layers.as_slice()), (Some(32), &[0, 2][..]));
        let err = qwen2(r#","layer_types":["full_attention"]"#).unwrap_err().to_string();
        assert!(err.contains("1 entries for 4 layers"), "{err}");
        let err = qwen2(r#","layer_types":["chunked_attention","full_attention","full_attention","full_attention"]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer_types[0]") && err.contains("chunked_attention"), "{err}");
        // Mistral: every layer, whenever sliding_window is set (null: none; absent: 4096).
        let mistral = QWEN2.replace("qwen2", "mistral") + "}";
        assert_eq!(parse(&mistral).unwrap().sliding_window, Some(32));
        let null = mistral.replace(r#""sliding_window":32"#, r#""sliding_window":null"#);
        assert_eq!(parse(&null).unwrap().sliding_window, None);
        let absent = mistral.replace(r#","sliding_window":32"#, "");
        assert_eq!(parse(&absent).unwrap().sliding_window, Some(4096));
        // Llama has no window, whatever the config carries.
        let llama = QWEN2.replace("qwen2", "llama") + r#","layer_types":["sliding_attention"]}"#;
        assert_eq!(parse(&llama).unwrap().sliding_window, None);
        let err = parse(&mistral.replace(r#""sliding_window":32"#, r#""sliding_window":0"#)).unwrap_err().to_string();
        assert!(err.contains("sliding_window") && err.contains("0 would hide"), "{err}");
    }
}
