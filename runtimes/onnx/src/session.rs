//! One ONNX Runtime session on a model file, for the whole run: loading it, reading its inputs and outputs
//! ([`ModelIo`]), and running one padded batch ([`RunInputs`] plus past keys and values).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Outlet, TensorElementType, TensorRef};

use crate::error::OnnxError;
use crate::io::{ElemType, ModelIo, TensorDesc};
use crate::library::OrtLibrary;
use crate::plan::RunInputs;

/// A loaded model.
#[derive(Debug)]
pub struct OnnxSession {
    session: Session,
    io: ModelIo,
    path: PathBuf,
}

impl OnnxSession {
    /// Loads `path` with `intra_threads` threads within operators (0: ONNX Runtime's default, one per physical core)
    /// and one thread across operators, and checks its inputs and outputs.
    pub fn load(library: &OrtLibrary, path: &Path, intra_threads: usize) -> Result<Self, OnnxError> {
        if !path.is_file() {
            return Err(OnnxError::ModelNotFound { path: path.to_path_buf() });
        }
        let load_err = |source: ort::Error| OnnxError::ModelLoad { path: path.to_path_buf(), source };
        let session = Session::builder(library.environment())
            .map_err(load_err)?
            .with_intra_threads(intra_threads)
            .map_err(|e| load_err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| load_err(e.into()))?
            .commit_from_file(path)
            .map_err(load_err)?;
        let inputs: Vec<TensorDesc> = session.inputs().iter().map(describe).collect();
        let outputs: Vec<TensorDesc> = session.outputs().iter().map(describe).collect();
        let io = ModelIo::from_graph(&inputs, &outputs)
            .map_err(|problem| OnnxError::Graph { path: path.to_path_buf(), problem })?;
        Ok(Self { session, io, path: path.to_path_buf() })
    }

    pub fn io(&self) -> &ModelIo {
        &self.io
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs one padded batch. Past tensor `t` (layer `t / 2`, key then value) is `[rows, kv_heads, inputs.past,
    /// head_dim]`.
    pub fn run(&mut self, inputs: &RunInputs, past: Past<'_>) -> Result<RunOutputs<'_>, OnnxError> {
        let Self { session, io, .. } = self;
        let (b, s, p) = (inputs.rows, inputs.query, inputs.past);
        let run_err = |source: ort::Error| OnnxError::Run { rows: b, query: s, past: p, source };
        let mut feeds: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(3 + 2 * io.past.len());
        feeds.push((
            io.input_ids.as_str().into(),
            TensorRef::from_array_view(([b, s], &*inputs.input_ids)).map_err(run_err)?.into(),
        ));
        feeds.push((
            io.attention_mask.as_str().into(),
            TensorRef::from_array_view(([b, p + s], &*inputs.attention_mask)).map_err(run_err)?.into(),
        ));
        feeds.push((
            io.position_ids.as_str().into(),
            TensorRef::from_array_view(([b, s], &*inputs.position_ids)).map_err(run_err)?.into(),
        ));
        let past_shape = [b, io.kv_heads, p, io.head_dim];
        for t in 0..2 * io.past.len() {
            let name = if t % 2 == 0 { &io.past[t / 2].0 } else { &io.past[t / 2].1 };
            let value: SessionInputValue<'_> = match past {
                Past::Buffers(buffers) => {
                    TensorRef::from_array_view((past_shape, &*buffers[t])).map_err(run_err)?.into()
                }
                Past::Carried(values) => (&values[t]).into(),
            };
            feeds.push((name.as_str().into(), value));
        }
        let outputs = session.run(feeds).map_err(run_err)?;
        Ok(RunOutputs { outputs, io, rows: b, query: s, total: p + s })
    }
}

/// The past tensors of a run.
#[derive(Debug, Clone, Copy)]
pub enum Past<'a> {
    /// Written by this crate, one buffer per tensor.
    Buffers(&'a [Vec<f32>]),
    /// The previous run's present tensors, fed back as they are (their shape is the caller's to check).
    Carried(&'a [DynValue]),
}

/// A run's outputs, borrowed from the session until dropped.
#[derive(Debug)]
pub struct RunOutputs<'s> {
    outputs: SessionOutputs<'s>,
    io: &'s ModelIo,
    rows: usize,
    query: usize,
    total: usize,
}

impl RunOutputs<'_> {
    pub fn vocab_size(&self) -> usize {
        self.io.vocab_size
    }

    /// `[rows, query, vocab]`, row-major.
    pub fn logits(&self) -> Result<&[f32], OnnxError> {
        self.tensor(&self.io.logits, &[self.rows, self.query, self.io.vocab_size])
    }

    /// The present keys and values, tensor `t` = layer `t / 2`, key then value, each `[rows, kv_heads, past + query,
    /// head_dim]`.
    pub fn present(&self) -> Result<Vec<&[f32]>, OnnxError> {
        let shape = [self.rows, self.io.kv_heads, self.total, self.io.head_dim];
        let mut out = Vec::with_capacity(2 * self.io.present.len());
        for (k, v) in &self.io.present {
            out.push(self.tensor(k, &shape)?);
            out.push(self.tensor(v, &shape)?);
        }
        Ok(out)
    }

    /// Takes the present tensors out (same order as [`RunOutputs::present`]), to feed them back as a next past.
    pub fn into_present(mut self) -> Result<Vec<DynValue>, OnnxError> {
        let names: Vec<&String> = self.io.present.iter().flat_map(|(k, v)| [k, v]).collect();
        names
            .into_iter()
            .map(|name| {
                self.outputs.remove(name).ok_or_else(|| OnnxError::Output {
                    name: name.clone(),
                    problem: "missing from the run's outputs".into(),
                })
            })
            .collect()
    }

    fn tensor(&self, name: &str, expected: &[usize]) -> Result<&[f32], OnnxError> {
        let problem = |problem: String| OnnxError::Output { name: name.to_string(), problem };
        let value = self.outputs.get(name).ok_or_else(|| problem("missing from the run's outputs".into()))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| problem(e.to_string()))?;
        if shape.len() != expected.len() || shape.iter().zip(expected).any(|(&a, &b)| a != b as i64) {
            return Err(problem(format!("shape {shape:?}, expected {expected:?}")));
        }
        Ok(data)
    }
}

/// A graph input or output as [`ModelIo`] reads it.
fn describe(outlet: &Outlet) -> TensorDesc {
    let dtype = outlet.dtype();
    TensorDesc {
        name: outlet.name().to_string(),
        elem: dtype.tensor_type().map(|t| match t {
            TensorElementType::Float32 => ElemType::F32,
            TensorElementType::Int64 => ElemType::I64,
            other => ElemType::Other(other.to_string()),
        }),
        shape: dtype.tensor_shape().map(|s| s.to_vec()).unwrap_or_default(),
    }
}
