//! Parsing a GGUF file (versions 2 and 3): the header, the metadata key/value pairs, the tensor infos, and the data
//! section, memory-mapped. Every count, length and offset read from the file is checked against the file's size
//! before it is used, so a truncated or corrupt file is an error naming what is wrong, never a panic or a huge
//! allocation.
//!
//! Layout: `"GGUF"`, u32 version, u64 tensor count, u64 metadata count; each metadata pair is a string key, a u32
//! value type and the value (strings are a u64 length and UTF-8 bytes; arrays a u32 element type, a u64 count and
//! the elements); each tensor info is a string name, u32 dimension count, u64 dimensions (`ne[0]`, the row length,
//! first), u32 ggml type and u64 offset into the data section, which starts at the next multiple of
//! `general.alignment` (default 32).

use std::collections::BTreeMap;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::dequantize::dequantize;
use super::error::GgufError;
use super::ggml_type::GgmlType;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// An integer value of any width, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (contiguous), then rows, ...
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset of its data in the file.
    pub offset: usize,
    /// Byte length of its data.
    pub len: usize,
}

impl GgufTensor {
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// The shape row-major (outermost first), as Hugging Face and numpy write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A range of a mapped GGUF file that keeps the mapping alive; derefs to the bytes.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedBytes({} bytes at {})", self.range.len(), self.range.start)
    }
}

/// An opened GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensor>,
    /// Tensor name -> index into `tensors`.
    index: BTreeMap<String, usize>,
}

/// A cursor over the file's bytes that checks every read against the end.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    /// Metadata values parsed so far (see [`MAX_METADATA_VALUES`]).
    values: usize,
}

impl<'a> Cursor<'a> {
    fn corrupt(&self, what: impl Into<String>) -> GgufError {
        GgufError::Corrupt { path: self.path.into(), offset: self.pos, what: what.into() }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| GgufError::Truncated {
            path: self.path.into(),
            offset: self.pos,
            what: what.into(),
            needed: n,
            file_len: self.bytes.len(),
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    /// A count of items of at least `min_size` bytes each that must fit in the rest of the file.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, GgufError> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            self.pos = at;
            return Err(self.corrupt(format!("{what} is {n}, more than the {left} bytes left can hold")));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.count(1, &format!("length of {what}"))?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            self.pos = at;
            self.corrupt(format!("{what} is not UTF-8"))
        })
    }
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue, GgufError> {
        self.values += 1;
        if self.values > MAX_METADATA_VALUES {
            return Err(
                self.corrupt(format!("metadata `{key}`: more than {MAX_METADATA_VALUES} metadata values in the file"))
            );
        }
        Ok(match ty {
            0 => GgufValue::U8(self.u8(key)?),
            1 => GgufValue::I8(self.u8(key)? as i8),
            2 => GgufValue::U16(self.u16(key)?),
            3 => GgufValue::I16(self.u16(key)? as i16),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(self.u32(key)? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.corrupt(format!("metadata `{key}`: boolean byte {b}"))),
            },
            8 => GgufValue::String(self.string(&format!("metadata `{key}`"))?),
            9 if depth == 0 => {
                let elem = self.u32(key)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => return Err(self.corrupt(format!("metadata `{key}`: unknown array element type {other}"))),
                };
                let n = self.count(min, &format!("element count of metadata `{key}`"))?;
                if n > MAX_METADATA_VALUES - self.values {
                    return Err(self.corrupt(format!(
                        "metadata `{key}`: {n} elements, more than the {MAX_METADATA_VALUES} values a file may hold"
                    )));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            9 => return Err(self.corrupt(format!("metadata `{key}`: nested arrays are not supported"))),
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(self.u64(key)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(key)?)),
            other => return Err(self.corrupt(format!("metadata `{key}`: unknown value type {other}"))),
        })
    }
}

/// GGUF versions this reader (and llama.cpp) reads.
pub const GGUF_VERSIONS: [u32; 2] = [2, 3];

/// Most metadata values (array elements included) a file may hold: real models hold well under a million (a
/// 256k-token vocabulary with its merges and types). A corrupt count beyond it is an error, not an allocation.
const MAX_METADATA_VALUES: usize = 1 << 22;
/// Most tensors a file may describe (real models: thousands).
const MAX_TENSORS: usize = 1 << 20;

impl GgufFile {
    /// Opens and parses `path` (memory-mapped; tensor data is read on demand).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io { path: path.into(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(GgufError::Corrupt { path: path.into(), offset: 0, what: "not a regular file".into() });
        }
        // SAFETY: read-only and private; like every mmap reader it assumes nobody truncates the file while it is
        // open (tensors are copied out when dequantized).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (version, metadata, tensors) = Self::parse(path, &map)?;
        let index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(Self { path: path.into(), map: Arc::new(map), version, metadata, tensors, index })
    }

    #[allow(clippy::type_complexity)]
    fn parse(path: &Path, bytes: &[u8]) -> Result<(u32, BTreeMap<String, GgufValue>, Vec<GgufTensor>), GgufError> {
        let mut c = Cursor { path, bytes, pos: 0, values: 0 };
        let magic = c.take(4, "the magic")?;
        if magic != b"GGUF" {
            return Err(GgufError::NotGguf { path: path.into(), found: magic.to_vec() });
        }
        let version = c.u32("the version")?;
        if !GGUF_VERSIONS.contains(&version) {
            return Err(GgufError::UnsupportedVersion { path: path.into(), version });
        }
        // A tensor info is at least 4 + 8 + 4 + 8 + 8 bytes, a metadata pair 8 + 4 + 1.
        let n_tensors = c.count(32, "the tensor count")?;
        if n_tensors > MAX_TENSORS {
            return Err(c.corrupt(format!("{n_tensors} tensors, more than the {MAX_TENSORS} a file may hold")));
        }
        let n_kv = c.count(13, "the metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("a metadata key")?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.corrupt(format!("metadata `{key}` appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(c.corrupt(format!("general.alignment {v:?} is not a power of two up to 1 MiB"))),
            },
        };
        let mut infos = Vec::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("the name of tensor {i}"))?;
            let n_dims = c.u32(&name)?;
            if !(1..=4).contains(&n_dims) {
                return Err(c.corrupt(format!("tensor `{name}` has {n_dims} dimensions (1 to 4 are valid)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let type_id = c.u32(&name)?;
            let ggml_type = GgmlType::from_id(type_id)
                .ok_or_else(|| c.corrupt(format!("tensor `{name}` has unknown ggml type {type_id}")))?;
            let offset = c.u64(&name)?;
            infos.push((name, dims, ggml_type, offset));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (name, dims, ggml_type, offset) in infos {
            let bad = |what: String| GgufError::Corrupt { path: path.into(), offset: data_start, what };
            if !names.insert(name.clone()) {
                return Err(bad(format!("tensor `{name}` appears twice")));
            }
            let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let Some(elements) = elements.filter(|&e| e > 0) else {
                return Err(bad(format!("tensor `{name}` has dimensions {dims:?}")));
            };
            let block = ggml_type.block_size() as u64;
            if dims[0] % block != 0 {
                return Err(bad(format!(
                    "tensor `{name}` ({ggml_type}) has rows of {} elements, not a multiple of its block of {block}",
                    dims[0]
                )));
            }
            if offset % alignment as u64 != 0 {
                return Err(bad(format!(
                    "tensor `{name}` starts at data offset {offset}, not a multiple of the alignment {alignment}"
                )));
            }
            let len = (elements / block).checked_mul(ggml_type.block_bytes() as u64);
            let start = (data_start as u64).checked_add(offset);
            let end = start.zip(len).and_then(|(s, l)| s.checked_add(l));
            match (start, len, end) {
                (Some(s), Some(l), Some(e)) if e <= bytes.len() as u64 => {
                    tensors.push(GgufTensor { name, dims, ggml_type, offset: s as usize, len: l as usize });
                }
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        path: path.into(),
                        name,
                        offset,
                        len: len.unwrap_or(u64::MAX),
                        file_len: bytes.len(),
                    });
                }
            }
        }
        Ok((version, metadata, tensors))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }
    /// A string value, or an error naming the key.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key).and_then(GgufValue::as_str).ok_or_else(|| self.missing(key, "a string"))
    }
    /// An unsigned integer value, or an error naming the key.
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key).and_then(GgufValue::as_u64).ok_or_else(|| self.missing(key, "an unsigned integer"))
    }
    /// A number, or an error naming the key.
    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key).and_then(GgufValue::as_f64).ok_or_else(|| self.missing(key, "a number"))
    }
    fn missing(&self, key: &str, expected: &str) -> GgufError {
        GgufError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            reason: match self.get(key) {
                None => "missing".into(),
                Some(v) => format!("expected {expected}, got {v:?}"),
            },
        }
    }
    pub fn tensors(&self) -> &[GgufTensor] {
        &self.tensors
    }
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
    /// A tensor's raw bytes (its blocks), in the mapped file.
    pub fn data(&self, t: &GgufTensor) -> &[u8] {
        &self.map[t.offset..t.offset + t.len]
    }
    /// A tensor's raw bytes as a handle that keeps the file mapped, for runtimes that compute on the blocks as stored
    /// (no copy).
    pub fn mapped(&self, t: &GgufTensor) -> MappedBytes {
        MappedBytes { map: Arc::clone(&self.map), range: t.offset..t.offset + t.len }
    }
    /// A tensor's values as f32, in ggml order (row-major with `dims[0]` contiguous).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let t =
            self.tensor(name).ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), name: name.into() })?;
        if !t.ggml_type.can_dequantize() {
            return Err(GgufError::UnsupportedType {
                path: self.path.clone(),
                name: name.into(),
                ggml_type: t.ggml_type,
            });
        }
        let mut out = Vec::new();
        dequantize(t.ggml_type, self.data(t), &mut out);
        Ok(out)
    }
}
