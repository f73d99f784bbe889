//! RMSNorm (Llama family) and LayerNorm (GPT-2), row by row, computed as transformers does in f32.

#[derive(Debug, Clone)]
pub enum Norm {
    Rms { w: Vec<f32>, eps: f32 },
    Layer { w: Vec<f32>, b: Vec<f32>, eps: f32 },
}

impl Norm {
    /// Normalises each row of `x` (`rows` of `w.len()`) into `y`.
    pub fn forward(&self, x: &[f32], y: &mut [f32]) {
        match self {
            Self::Rms { w, eps } => {
                for (xr, yr) in x.chunks_exact(w.len()).zip(y.chunks_exact_mut(w.len())) {
                    let ms = xr.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                        *o = g * (v * inv);
                    }
                }
            }
            Self::Layer { w, b, eps } => {
                let n = w.len() as f32;
                for (xr, yr) in x.chunks_exact(w.len()).zip(y.chunks_exact_mut(w.len())) {
                    let mean = xr.iter().sum::<f32>() / n;
                    let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((o, &v), &g), &bb) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *o = (v - mean) * inv * g + bb;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_and_layer_norm() {
        let mut y = [0.0; 2];
        Norm::Rms { w: vec![1.0, 2.0], eps: 0.0 }.forward(&[3.0, 4.0], &mut y);
        let r = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
        Norm::Layer { w: vec![1.0, 1.0], b: vec![0.5, 0.0], eps: 0.0 }.forward(&[1.0, 3.0], &mut y);
        assert!((y[0] + 0.5).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6);
    }
}
