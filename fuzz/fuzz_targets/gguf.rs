//! A GGUF file: the header, metadata and tensor table parse (and the HF config derived from them) or fail with an
//! error, never a panic; tensors that parse dequantize (bounded: their data lies inside the file); and a file whose
//! model config derives goes on into the native runtime's loader (every tensor it reads, as stored: norms, biases,
//! quantized matrices), which must load it or say why.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The reader maps a file: write the input to one of this process's own, in ci/fuzz.sh's run directory (else the
    // temporary directory), removed after each input.
    let dir = std::env::var_os("NANO_VLLM_FUZZ_SCRATCH").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let path = dir.join(format!("nano-vllm-fuzz-{}.gguf", std::process::id()));
    std::fs::File::create(&path).and_then(|mut f| f.write_all(data)).expect("scratch file");
    if let Ok(file) = nano_vllm_bundle::gguf::GgufFile::open(&path) {
        let names: Vec<String> = file.tensors().iter().take(4).map(|t| t.name.clone()).collect();
        for name in names {
            let _ = file.dequantize(&name);
        }
    }
    if nano_vllm_bundle::gguf::GgufModel::open(&path).is_ok() {
        let options = nano_vllm_native::NativeOptions { threads: 1, ..Default::default() };
        let _ = nano_vllm_native::NativeRuntime::load(&path, &options);
    }
    let _ = std::fs::remove_file(&path);
});
