//! The numeric kernels: dense layers (f32 panels, the half-precision row kernel, the quantized products) and norms,
//! activations, RoPE and paged attention. All f32 with f32 accumulation.

/// Dispatches a run-time count to the kernel compiled for it (a const generic: its accumulators stay in registers),
/// for the counts listed; used by the x86 kernels of `attention` and `panels` (defined before them: textual scope).
#[cfg(target_arch = "x86_64")]
macro_rules! by_count {
    ($n:expr, $f:ident, [$($c:literal),*], $args:tt) => {
        match $n {
            $($c => $f::<$c> $args,)*
            _ => unreachable!("no kernel for a count of {}", $n),
        }
    };
}

pub mod attention;
pub mod gemv;
pub mod isa;
pub mod linear;
pub mod norm;
pub mod panels;
pub mod quant;
pub mod rope;
pub mod team;

/// A pointer to an output matrix shared by parallel tasks that each write their own, disjoint, elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every user has its tasks write disjoint elements, and the borrow the pointer came from outlives the
// parallel loop (see the SAFETY comments at the uses).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper rather than the raw pointer field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f(task)` for every task in `0..n`: on the [`team::Team`] installed on this thread (a runtime's step), else on
/// the current rayon pool, when `threads > 1`; else in order on this thread (one thread means no hand-off at all).
/// A task's own buffers are thread-locals of its kernel, kept for the thread's life.
pub(crate) fn for_each_task(n: usize, threads: usize, f: impl Fn(usize) + Sync + Send) {
    use rayon::prelude::*;
    if threads <= 1 {
        return (0..n).for_each(f);
    }
    team::Team::with_current(|team| match team {
        Some(team) => team.run(n, &f),
        None => (0..n).into_par_iter().for_each(f),
    })
}

/// SiLU(gate) * up, in place into `gate` (Llama-family MLP).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// GELU, tanh approximation (`gelu_new`), in place.
pub fn gelu_tanh(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// `gate = gelu_tanh(gate) * up` (Gemma's gated MLP), in place.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    gelu_tanh(gate);
    for (g, &u) in gate.iter_mut().zip(up) {
        *g *= u;
    }
}

/// GELU, exact, in place.
pub fn gelu_erf(x: &mut [f32]) {
    for v in x {
        let u = *v as f64;
        *v = (0.5 * u * (1.0 + erf(u / std::f64::consts::SQRT_2))) as f32;
    }
}

/// erf to about 1e-15 (Abramowitz-Stegun 7.1.26 is too coarse for parity; this is a Taylor/continued-fraction pair).
fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        // Taylor series: erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..80 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // erfc by continued fraction (Lentz), accurate for |x| >= 2.5.
        let z = x.abs();
        let mut f = z;
        let (mut c, mut d) = (z, 0.0);
        for n in 1..200 {
            let a = n as f64 / 2.0;
            d = 1.0 / (z + a * d);
            c = z + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
        (1.0 - erfc).copysign(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_known_values() {
        let mut g = [1.0f32, -2.0];
        silu_mul(&mut g, &[2.0, 1.0]);
        assert!((g[0] - 2.0 * 0.731_058_6).abs() < 1e-6 && (g[1] + 0.238_405_8).abs() < 1e-6);
        let mut x = [1.0f32, -0.5, 3.0];
        gelu_tanh(&mut x);
        // torch.nn.functional.gelu(t, approximate="tanh")
        assert!(
            (x[0] - 0.841_192).abs() < 1e-6 && (x[1] + 0.154_286).abs() < 1e-6 && (x[2] - 2.996_363_6).abs() < 1e-5
        );
        let mut e = [1.0f32, -0.5, 3.0];
        gelu_erf(&mut e);
        assert!(
            (e[0] - 0.841_344_7).abs() < 1e-6 && (e[1] + 0.154_268_7).abs() < 1e-6 && (e[2] - 2.995_950_5).abs() < 1e-5
        );
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
        assert!((erf(3.0) - 0.999_977_909_503_001_4).abs() < 1e-15);
    }
}
