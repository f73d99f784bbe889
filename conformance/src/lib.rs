//! Conformance: does a runtime compute what the reference model computes, under the real engine?
//!
//! [`run_reference`] drives a runtime through [`nano_vllm_engine::LlmEngine`] on a bundle's reference prompts in a
//! chosen [`Situation`] (alone, batched with others, served partly from the prefix cache, preempted and recomputed),
//! greedy, keeping the logits at every computed position; [`compare`] measures them against the reference
//! ([`ParityFigures`]: max and mean absolute difference, NMSE, argmax agreement, KL divergence, greedy match).
//! Runtime crates' parity tests and the harness's `parity` command both use it.

mod check;
mod figures;
mod run;
mod teacher;

pub use check::{SituationChecks, check_situations};
pub use figures::{ParityFigures, ToleranceFailure, compare, kl_divergence};
pub use run::{PromptRun, Situation, SituationRun, run_reference};
pub use teacher::{TeacherForcedFigures, compare_runs, compare_teacher_forced, run_teacher_forced};
