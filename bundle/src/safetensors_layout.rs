//! Why a safetensors file does not deserialize, in terms of its tensors: the `safetensors` crate names a tensor only
//! for some layout errors (and then the first tensor whose start no longer lines up, not the one whose end is wrong),
//! and none when the data section is shorter than the offsets say. Readers call [`diagnose`] after a failure to say
//! which tensor's `data_offsets` are wrong.

use std::collections::BTreeMap;

/// A sentence naming the tensor whose `data_offsets` do not fit the file (`bytes` is the whole file), or `None`
/// when the header is unreadable or every tensor fits (the failure was something else).
pub fn diagnose(bytes: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_len = bytes.len() - 8 - n;
    let mut spans: Vec<(u64, u64, &str)> = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(name, info)| {
            let offsets = info.get("data_offsets")?.as_array()?;
            Some((offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?, name.as_str()))
        })
        .collect();
    spans.sort();
    if let Some(&(start, end, name)) = spans.iter().find(|&&(start, end, _)| end < start || end > data_len as u64) {
        return Some(format!(
            "tensor `{name}` has data_offsets [{start}, {end}], beyond the data section of {data_len} bytes"
        ));
    }
    let mut at = 0;
    for &(start, end, name) in &spans {
        if start != at {
            return Some(format!(
                "tensor `{name}` has data_offsets [{start}, {end}], where the tensor before it ends at {at} (tensors \
                 must be contiguous)"
            ));
        }
        at = end;
    }
    (at != data_len as u64).then(|| format!("the tensors end at byte {at} of a data section of {data_len} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    #[test]
    fn the_tensor_whose_offsets_do_not_fit_is_named() {
        let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        assert_eq!(diagnose(&file(ok, 12)), None);
        let past = ok.replace("[8,12]", "[8,1000000012]");
        assert_eq!(
            diagnose(&file(&past, 12)).unwrap(),
            "tensor `b` has data_offsets [8, 1000000012], beyond the data section of 12 bytes"
        );
        let gap = ok.replace("[8,12]", "[9,12]");
        assert!(diagnose(&file(&gap, 12)).unwrap().starts_with("tensor `b` has data_offsets [9, 12], where"));
        assert_eq!(diagnose(&file(ok, 20)).unwrap(), "the tensors end at byte 12 of a data section of 20 bytes");
        assert_eq!(diagnose(b"short"), None);
        assert_eq!(diagnose(&file("{oops", 0)), None);
    }
}
