//! A GGUF's `general.file_type`: llama.cpp's `llama_ftype`, the quantization a file was made with (its matrices'
//! main block type; `q4_k_m` mixes Q4_K, Q6_K and others). Names in lower case, as `llama-quantize` takes them.

/// The name of llama.cpp's `llama_ftype` `value` (include/llama.h), or `None` for a value it does not define.
pub fn file_type_name(value: u64) -> Option<&'static str> {
    Some(match value {
        0 => "f32",
        1 => "f16",
        2 => "q4_0",
        3 => "q4_1",
        7 => "q8_0",
        8 => "q5_0",
        9 => "q5_1",
        10 => "q2_k",
        11 => "q3_k_s",
        12 => "q3_k_m",
        13 => "q3_k_l",
        14 => "q4_k_s",
        15 => "q4_k_m",
        16 => "q5_k_s",
        17 => "q5_k_m",
        18 => "q6_k",
        19 => "iq2_xxs",
        20 => "iq2_xs",
        21 => "q2_k_s",
        22 => "iq3_xs",
        23 => "iq3_xxs",
        24 => "iq1_s",
        25 => "iq4_nl",
        26 => "iq3_s",
        27 => "iq3_m",
        28 => "iq2_s",
        29 => "iq2_m",
        30 => "iq4_xs",
        31 => "iq1_m",
        32 => "bf16",
        36 => "tq1_0",
        37 => "tq2_0",
        38 => "mxfp4_moe",
        _ => return None,
    })
}

impl super::GgufFile {
    /// What the file says it was quantized to: its `general.file_type` name (`q4_k_m`), `gguf file_type N` for a
    /// value llama.cpp does not define, `gguf` when the key is missing (the file is then described by its tensors).
    pub fn file_type(&self) -> String {
        match self.get("general.file_type").and_then(super::GgufValue::as_u64) {
            Some(v) => file_type_name(v).map_or_else(|| format!("gguf file_type {v}"), str::to_owned),
            None => "gguf".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file_type_name;

    #[test]
    fn names_llama_cpp_file_types() {
        assert_eq!(file_type_name(0), Some("f32"));
        assert_eq!(file_type_name(3), Some("q4_1"));
        assert_eq!(file_type_name(15), Some("q4_k_m"));
        assert_eq!(file_type_name(18), Some("q6_k"));
        assert_eq!(file_type_name(32), Some("bf16"));
        // Removed from llama.cpp (Q4_1_SOME_F16, Q4_2, Q4_3, the Q4_0_N_M repacks).
        for gone in [4, 5, 6, 33, 34, 35] {
            assert_eq!(file_type_name(gone), None);
        }
    }
}
