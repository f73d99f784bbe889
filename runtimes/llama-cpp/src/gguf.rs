//! A GGUF file's header, checked before llama.cpp sees the file.
//!
//! llama.cpp returns null for any file it cannot load; checking that the file exists and starts with the GGUF magic
//! and a version llama.cpp reads first turns the commonest mistakes into precise errors.

use std::io::Read;
use std::path::Path;

use crate::error::LoadError;

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// GGUF versions llama.cpp reads (version 1 was dropped in 2023).
pub const GGUF_VERSIONS: [u32; 2] = [2, 3];

/// Checks that `path` is a readable file with a GGUF header of a supported version; returns the version.
pub fn check_header(path: &Path) -> Result<u32, LoadError> {
    let unreadable = |reason: String| LoadError::Unreadable { path: path.to_path_buf(), reason };
    let not_gguf = |reason: String| LoadError::NotGguf { path: path.to_path_buf(), reason };
    if !path.exists() {
        return Err(LoadError::NotFound { path: path.to_path_buf() });
    }
    if !path.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    let mut header = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut header))
        .map_err(|e| unreadable(e.to_string()))?;
    if header.len() < 8 {
        return Err(not_gguf(format!("only {} bytes long; a GGUF header has at least 8", header.len())));
    }
    if header[..4] != GGUF_MAGIC {
        return Err(not_gguf(format!("it starts with {:02x?} instead of the magic \"GGUF\"", &header[..4])));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !GGUF_VERSIONS.contains(&version) {
        return Err(not_gguf(format!("GGUF version {version}; llama.cpp reads versions {GGUF_VERSIONS:?}")));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_and_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let missing = dir.path().join("missing.gguf");
        assert_eq!(check_header(&missing), Err(LoadError::NotFound { path: missing.clone() }));
        assert!(matches!(check_header(dir.path()), Err(LoadError::Unreadable { .. })));
        let short = write("short.gguf", b"GGU");
        assert!(check_header(&short).unwrap_err().to_string().contains("only 3 bytes long"));
        let onnx = write("model.onnx", b"\x08\x07\x12\x07pytorch");
        let err = check_header(&onnx).unwrap_err().to_string();
        assert!(err.contains("model.onnx is not a GGUF file") && err.contains("instead of the magic"), "{err}");
        let v1 = write("v1.gguf", b"GGUF\x01\x00\x00\x00rest");
        assert!(check_header(&v1).unwrap_err().to_string().contains("GGUF version 1"));
        let v3 = write("v3.gguf", b"GGUF\x03\x00\x00\x00rest");
        assert_eq!(check_header(&v3), Ok(3));
    }
}
