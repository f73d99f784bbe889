//! The model's inputs and outputs, read from the graph and checked: a causal LM with a KV cache, as
//! `fixtures/nvfix/onnx_export.py` (and optimum's `text-generation-with-past`) export it.
//!
//! | role | name | dtype | shape |
//! | --- | --- | --- | --- |
//! | input | `input_ids` | int64 | `[batch, seq]` |
//! | input | `attention_mask` | int64 | `[batch, past + seq]` |
//! | input | `position_ids` | int64 | `[batch, seq]` |
//! | input | `past_key_values.{N}.key` / `.value` (or `past.{N}...`) | float32 | `[batch, kv_heads, past, head_dim]` |
//! | output | `logits` | float32 | `[batch, seq, vocab]` |
//! | output | `present.{N}.key` / `.value` | float32 | `[batch, kv_heads, past + seq, head_dim]` |
//!
//! The layer count is the number of `N`s (they must run 0..L with both key and value, in inputs and outputs);
//! `kv_heads`, `head_dim` and `vocab` must be fixed in the graph. Everything here is plain data, so it is tested
//! without ONNX Runtime.

/// An element type, as far as this runtime cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemType {
    F32,
    I64,
    /// Anything else, with ONNX Runtime's name for it.
    Other(String),
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F32 => f.write_str("float32"),
            Self::I64 => f.write_str("int64"),
            Self::Other(name) => f.write_str(name),
        }
    }
}

/// One graph input or output: name, element type (None if not a tensor) and shape (-1 = dynamic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    pub elem: Option<ElemType>,
    pub shape: Vec<i64>,
}

impl TensorDesc {
    pub fn new(name: &str, elem: ElemType, shape: &[i64]) -> Self {
        Self { name: name.into(), elem: Some(elem), shape: shape.to_vec() }
    }
}

/// The names and sizes this runtime feeds and reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIo {
    pub input_ids: String,
    pub attention_mask: String,
    pub position_ids: String,
    /// Per layer: (key, value) input names.
    pub past: Vec<(String, String)>,
    pub logits: String,
    /// Per layer: (key, value) output names.
    pub present: Vec<(String, String)>,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
}

impl ModelIo {
    pub fn num_layers(&self) -> usize {
        self.past.len()
    }
    /// Bytes of keys and values per token, over all layers (f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.num_layers() * self.kv_heads * self.head_dim * size_of::<f32>()
    }

    /// Reads and checks the graph's inputs and outputs. The error is a sentence naming the input or output.
    pub fn from_graph(inputs: &[TensorDesc], outputs: &[TensorDesc]) -> Result<Self, String> {
        let names = |list: &[TensorDesc]| list.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
        find(inputs, "input_ids", "input", ElemType::I64, 2)?;
        find(inputs, "attention_mask", "input", ElemType::I64, 2)?;
        find(inputs, "position_ids", "input", ElemType::I64, 2)?;
        let logits = find(outputs, "logits", "output", ElemType::F32, 3)?;
        let vocab_size = fixed(logits, 2, "vocab")?;

        let past = layers(inputs, &["past_key_values.", "past."], "input")?;
        let present = layers(outputs, &["present."], "output")?;
        if past.is_empty() {
            return Err(format!(
                "the graph has no past key/value inputs (`past_key_values.N.key` / `.value`): it was exported without \
                 a KV cache; its inputs are: {}",
                names(inputs)
            ));
        }
        if present.len() != past.len() {
            return Err(format!(
                "the graph has past keys/values for {} layers but present outputs for {}",
                past.len(),
                present.len()
            ));
        }
        let mut kv: Option<(usize, usize)> = None;
        for (list, kind, pairs) in [(inputs, "input", &past), (outputs, "output", &present)] {
            for (k, v) in pairs {
                for name in [k, v] {
                    let t = find(list, name, kind, ElemType::F32, 4)?;
                    let dims = (fixed(t, 1, "kv_heads")?, fixed(t, 3, "head_dim")?);
                    if *kv.get_or_insert(dims) != dims {
                        return Err(format!(
                            "{kind} `{name}` has {} KV heads x head dim {}, other layers {} x {}",
                            dims.0,
                            dims.1,
                            kv.unwrap_or_default().0,
                            kv.unwrap_or_default().1
                        ));
                    }
                }
            }
        }
        let (kv_heads, head_dim) = kv.unwrap_or_default();
        Ok(Self {
            input_ids: "input_ids".into(),
            attention_mask: "attention_mask".into(),
            position_ids: "position_ids".into(),
            past,
            logits: logits.name.clone(),
            present,
            kv_heads,
            head_dim,
            vocab_size,
        })
    }
}

/// The tensor `name` of `list` (inputs or outputs, as `kind` says), checked for element type and rank.
fn find<'a>(
    list: &'a [TensorDesc],
    name: &str,
    kind: &str,
    elem: ElemType,
    rank: usize,
) -> Result<&'a TensorDesc, String> {
    let t = list.iter().find(|t| t.name == name).ok_or_else(|| {
        let names = list.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
        format!("the graph has no {kind} `{name}` (a causal LM with KV cache needs it); its {kind}s are: {names}")
    })?;
    check(t, kind, elem, rank).map(|()| t)
}

fn check(t: &TensorDesc, kind: &str, elem: ElemType, rank: usize) -> Result<(), String> {
    match &t.elem {
        Some(e) if *e == elem => {}
        Some(e) => return Err(format!("{kind} `{}` is {e}, expected {elem}", t.name)),
        None => return Err(format!("{kind} `{}` is not a tensor", t.name)),
    }
    if t.shape.len() != rank {
        return Err(format!("{kind} `{}` has rank {} ({:?}), expected {rank}", t.name, t.shape.len(), t.shape));
    }
    Ok(())
}

/// Dimension `axis` of `t`, which must be fixed in the graph.
fn fixed(t: &TensorDesc, axis: usize, what: &str) -> Result<usize, String> {
    match t.shape.get(axis) {
        Some(&d) if d > 0 => Ok(d as usize),
        _ => Err(format!("`{}` has a dynamic or missing {what} dimension (axis {axis} of {:?})", t.name, t.shape)),
    }
}

/// `{prefix}{N}.key` / `{prefix}{N}.value` names, as (key, value) per layer 0..L; every layer needs both.
fn layers(list: &[TensorDesc], prefixes: &[&str], kind: &str) -> Result<Vec<(String, String)>, String> {
    let mut found: Vec<(usize, bool, &str)> = Vec::new();
    for t in list {
        for prefix in prefixes {
            let Some(rest) = t.name.strip_prefix(prefix) else { continue };
            let parsed = rest.split_once('.').and_then(|(n, kv)| Some((n.parse::<usize>().ok()?, kv)));
            match parsed {
                Some((layer, "key")) => found.push((layer, true, &t.name)),
                Some((layer, "value")) => found.push((layer, false, &t.name)),
                _ => {}
            }
        }
    }
    let num_layers = found.iter().map(|f| f.0 + 1).max().unwrap_or(0);
    (0..num_layers)
        .map(|layer| {
            let get = |is_key: bool| {
                found.iter().find(|f| f.0 == layer && f.1 == is_key).map(|f| f.2.to_string()).ok_or_else(|| {
                    let which = if is_key { "key" } else { "value" };
                    format!(
                        "the graph has no {kind} for the {which} of layer {layer} (`{}{layer}.{which}`)",
                        prefixes[0]
                    )
                })
            };
            Ok((get(true)?, get(false)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ElemType::{F32, I64};

    fn graph(layers: usize) -> (Vec<TensorDesc>, Vec<TensorDesc>) {
        let mut inputs = vec![
            TensorDesc::new("input_ids", I64, &[-1, -1]),
            TensorDesc::new("attention_mask", I64, &[-1, -1]),
            TensorDesc::new("position_ids", I64, &[-1, -1]),
        ];
        let mut outputs = vec![TensorDesc::new("logits", F32, &[-1, -1, 512])];
        for l in 0..layers {
            for kv in ["key", "value"] {
                inputs.push(TensorDesc::new(&format!("past_key_values.{l}.{kv}"), F32, &[-1, 2, -1, 16]));
                outputs.push(TensorDesc::new(&format!("present.{l}.{kv}"), F32, &[-1, 2, -1, 16]));
            }
        }
        (inputs, outputs)
    }

    #[test]
    fn reads_layers_and_sizes_from_the_graph() {
        let (inputs, outputs) = graph(3);
        let io = ModelIo::from_graph(&inputs, &outputs).unwrap();
        assert_eq!(io.num_layers(), 3);
        assert_eq!((io.kv_heads, io.head_dim, io.vocab_size), (2, 16, 512));
        assert_eq!(io.past[2], ("past_key_values.2.key".to_string(), "past_key_values.2.value".to_string()));
        assert_eq!(io.present[0].1, "present.0.value");
        assert_eq!(io.kv_bytes_per_token(), 2 * 3 * 2 * 16 * 4);
    }

    #[test]
    fn a_missing_input_is_named_with_what_the_graph_has() {
        let (mut inputs, outputs) = graph(2);
        inputs.retain(|t| t.name != "position_ids");
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert!(err.contains("no input `position_ids`") && err.contains("attention_mask"), "{err}");
    }

    #[test]
    fn a_graph_without_kv_cache_is_refused() {
        let (inputs, outputs) = graph(0);
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert!(err.contains("without a KV cache"), "{err}");
    }

    #[test]
    fn a_missing_layer_value_or_present_is_named() {
        let (mut inputs, outputs) = graph(2);
        inputs.retain(|t| t.name != "past_key_values.1.value");
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert!(err.contains("value of layer 1") && err.contains("past_key_values.1.value"), "{err}");

        let (inputs, mut outputs) = graph(2);
        outputs.retain(|t| !t.name.starts_with("present.1"));
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert!(err.contains("2 layers but present outputs for 1"), "{err}");
    }

    #[test]
    fn wrong_types_ranks_and_dynamic_sizes_are_named() {
        let (mut inputs, outputs) = graph(1);
        inputs[0].elem = Some(ElemType::Other("int32".into()));
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert_eq!(err, "input `input_ids` is int32, expected int64");

        let (inputs, mut outputs) = graph(1);
        outputs[0].shape = vec![-1, -1, -1];
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert!(err.contains("`logits` has a dynamic or missing vocab dimension"), "{err}");

        let (mut inputs, outputs) = graph(1);
        inputs[3].shape = vec![-1, 2, -1];
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert!(err.contains("`past_key_values.0.key` has rank 3"), "{err}");

        let (inputs, mut outputs) = graph(2);
        outputs[3].shape = vec![-1, 4, -1, 16];
        let err = ModelIo::from_graph(&inputs, &outputs).unwrap_err();
        assert!(err.contains("`present.1.key` has 4 KV heads"), "{err}");
    }

    #[test]
    fn the_short_past_prefix_is_accepted() {
        let (mut inputs, outputs) = graph(1);
        for t in &mut inputs {
            t.name = t.name.replace("past_key_values.", "past.");
        }
        let io = ModelIo::from_graph(&inputs, &outputs).unwrap();
        assert_eq!(io.past[0].0, "past.0.key");
    }
}
