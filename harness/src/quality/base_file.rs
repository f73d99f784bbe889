//! The base's logits in a file: written by the base runtime while it runs, read back a row at a time by every other
//! runtime, and kept with `--save-base FILE` to be reused by later runs (`--base-file FILE`), as llama-perplexity's
//! `--kl-divergence-base` is: the float32 model scored once, each quantized file compared with it later.
//!
//! ```text
//! rows:    f32 little-endian, vocab_size per row, the scored positions of each chunk in corpus order
//! trailer: JSON (BaseTrailer), then its length as u64 little-endian, then the magic b"NVQBASE1"
//! ```
//!
//! The rows are raw f32 logits as the runtime returned them (not rounded, unlike llama.cpp's 16-bit log-probs): a
//! float32 runtime compared with a float32 base is compared exactly. The trailer goes last because the base's
//! perplexity is known only after its rows are written. A reader checks the tokens, not the model: a base made from
//! the float32 model is meant for its quantized files, which tokenize the corpus the same way.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Corpus;
use super::report::CorpusMeta;
use super::score::Perplexity;

const MAGIC: &[u8; 8] = b"NVQBASE1";

/// What a base file says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseTrailer {
    /// The runtime that made the rows.
    pub base: String,
    /// The model it ran, and its files' digest when it has one.
    pub model: String,
    pub model_sha256: Option<String>,
    pub corpus: CorpusMeta,
    /// Per chunk, the xxh64 of its token ids (little-endian u32): a run may reuse the file only on the same tokens.
    pub chunk_xxh64: Vec<String>,
    pub vocab_size: usize,
    /// The base's NLL of every scored token (its perplexity over any first chunks of the file).
    pub nll: Vec<f64>,
}

impl BaseTrailer {
    /// The base's perplexity over the first `corpus.chunks` chunks.
    pub fn perplexity(&self, corpus: &Corpus) -> Perplexity {
        Perplexity::of(&self.nll[..corpus.scored_tokens().min(self.nll.len())])
    }
}

/// The xxh64 of a chunk's token ids, as hex.
pub fn chunk_digest(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
    format!("{:016x}", xxhash_rust::xxh64::xxh64(&bytes, 0))
}

/// Writes a base file: rows, then [`BaseWriter::finish`] with the trailer. Written to `<path>.partial` and renamed:
/// a run that stops halfway leaves no file that looks whole.
pub struct BaseWriter {
    file: BufWriter<File>,
    partial: PathBuf,
    path: PathBuf,
    rows: usize,
    vocab_size: Option<usize>,
}

impl BaseWriter {
    pub fn create(path: &Path) -> Result<Self, String> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file =
            File::create(&partial).map_err(|e| format!("writing the base's logits {}: {e}", partial.display()))?;
        Ok(Self { file: BufWriter::new(file), partial, path: path.to_owned(), rows: 0, vocab_size: None })
    }

    pub fn push_row(&mut self, row: &[f32]) -> Result<(), String> {
        match self.vocab_size {
            Some(v) if v != row.len() => {
                return Err(format!("the base returned rows of {} and of {v} logits", row.len()));
            }
            _ => self.vocab_size = Some(row.len()),
        }
        self.rows += 1;
        self.file.write_all(f32_bytes(row)).map_err(|e| self.io(e))
    }

    /// Appends the trailer (its `vocab_size` is the rows') and puts the file in place.
    pub fn finish(mut self, mut trailer: BaseTrailer) -> Result<PathBuf, String> {
        trailer.vocab_size = self.vocab_size.unwrap_or(0);
        let expected = trailer.corpus.scored_tokens;
        if self.rows != expected {
            return Err(format!("the base wrote {} rows, the corpus scores {expected}", self.rows));
        }
        let json = serde_json::to_vec(&trailer).map_err(|e| e.to_string())?;
        let write = |f: &mut BufWriter<File>| -> std::io::Result<()> {
            f.write_all(&json)?;
            f.write_all(&(json.len() as u64).to_le_bytes())?;
            f.write_all(MAGIC)?;
            f.flush()
        };
        write(&mut self.file).map_err(|e| self.io(e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(self.path.clone())
    }

    fn io(&self, e: std::io::Error) -> String {
        format!("writing the base's logits {}: {e}", self.partial.display())
    }
}

impl Drop for BaseWriter {
    fn drop(&mut self) {
        // After `finish` the partial file was renamed and this finds nothing.
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// Reads a base file's rows in order.
#[derive(Debug)]
pub struct BaseReader {
    file: BufReader<File>,
    path: PathBuf,
    raw: Vec<u8>,
    pub trailer: BaseTrailer,
}

impl BaseReader {
    /// Opens `path` and checks it covers `corpus`: the same ctx and first scored position, at least as many chunks,
    /// and the same tokens in each of them.
    pub fn open(path: &Path, corpus: &Corpus) -> Result<Self, String> {
        let name = path.display();
        let not_base = |why: &str| format!("{name}: not a base file of `nano-vllm quality --save-base` ({why})");
        let mut file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
        let len = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
        if len < 16 {
            return Err(not_base(&format!("{len} bytes")));
        }
        let mut tail = [0u8; 16];
        file.seek(SeekFrom::End(-16)).and_then(|_| file.read_exact(&mut tail)).map_err(|e| format!("{name}: {e}"))?;
        if &tail[8..] != MAGIC {
            return Err(not_base("no NVQBASE1 at its end"));
        }
        let trailer_len = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
        if trailer_len > len - 16 || trailer_len > 1 << 30 {
            return Err(not_base(&format!("a trailer of {trailer_len} bytes in a file of {len}")));
        }
        let rows_len = len - 16 - trailer_len;
        let mut json = vec![0u8; trailer_len as usize];
        file.seek(SeekFrom::Start(rows_len))
            .and_then(|_| file.read_exact(&mut json))
            .map_err(|e| format!("{name}: {e}"))?;
        let trailer: BaseTrailer =
            serde_json::from_slice(&json).map_err(|e| not_base(&format!("its trailer does not parse: {e}")))?;
        let row_bytes = 4 * trailer.vocab_size as u64;
        if trailer.vocab_size == 0
            || rows_len != row_bytes * trailer.corpus.scored_tokens as u64
            || trailer.nll.len() != trailer.corpus.scored_tokens
        {
            return Err(not_base(&format!(
                "{rows_len} bytes of rows for {} rows of {} logits: truncated or damaged",
                trailer.corpus.scored_tokens, trailer.vocab_size
            )));
        }
        let saved = &trailer.corpus;
        let differs = |what: String| {
            format!(
                "{name} holds {} on {} chunks of {} tokens of {} ({}); this run scores {} chunks of {} of {}: {what}",
                trailer.base,
                saved.chunks,
                saved.ctx,
                saved.name,
                trailer.model,
                corpus.chunks.len(),
                corpus.ctx,
                corpus.name
            )
        };
        if (saved.ctx, saved.first_scored) != (corpus.ctx, corpus.first_scored) {
            return Err(differs("another --ctx".into()));
        }
        if corpus.chunks.len() > saved.chunks || trailer.chunk_xxh64.len() != saved.chunks {
            return Err(differs("more chunks than it saved (pass --chunks)".into()));
        }
        if let Some(k) = corpus.chunks.iter().zip(&trailer.chunk_xxh64).position(|(ids, d)| chunk_digest(ids) != *d) {
            return Err(differs(format!(
                "chunk {k} has other tokens (another corpus, or a model with another tokenizer)"
            )));
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| format!("{name}: {e}"))?;
        Ok(Self { file: BufReader::new(file), path: path.to_owned(), raw: Vec::new(), trailer })
    }

    /// The next row into `out` (the file's vocabulary size: a runtime with another one cannot be compared).
    pub fn read_row(&mut self, out: &mut Vec<f32>) -> Result<(), String> {
        let vocab = self.trailer.vocab_size;
        self.raw.resize(4 * vocab, 0);
        self.file
            .read_exact(&mut self.raw)
            .map_err(|e| format!("reading the base's logits {}: {e}", self.path.display()))?;
        out.clear();
        out.extend(self.raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        Ok(())
    }
}

/// A row of f32 as little-endian bytes (this crate's targets are little-endian, checked at compile time).
fn f32_bytes(row: &[f32]) -> &[u8] {
    const _: () = assert!(cfg!(target_endian = "little"), "the base file is little-endian f32");
    // SAFETY: any f32 is 4 initialized bytes; the slice covers exactly the row's memory, u8 has no alignment needs.
    unsafe { std::slice::from_raw_parts(row.as_ptr().cast::<u8>(), std::mem::size_of_val(row)) }
}
