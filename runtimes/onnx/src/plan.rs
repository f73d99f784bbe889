//! How a step's sequences become ONNX Runtime runs, and the padded inputs of one run.
//!
//! The graph takes rectangular tensors, `[rows, query]` tokens and `[rows, kv_heads, past, head_dim]` past, so the
//! sequences of one run are padded to the longest query and the longest past:
//!
//! - **past, left-padded**: row `b` holds its `p_b` past tokens at `past - p_b .. past`, zeros before, with
//!   `attention_mask` 0 there;
//! - **query, right-padded**: its `q_b` new tokens at `0 .. q_b` (so at `past .. past + q_b` of the total, right after
//!   its past), padding after them with `attention_mask` 0, token id 0 and the last real position repeated (always a
//!   valid position, also for learned position tables). Causal attention never lets a real token see the query
//!   padding behind it, and padding rows' outputs are dropped.
//!
//! Grouping ([`StepGrouping::Auto`], the default): every sequence with one new token (decodes, and one-token prompts)
//! in one run, padded only in the past; sequences with several new tokens (prompts, prefill chunks) grouped,
//! longest first, while a group's padded query tokens exceed its real ones by at most [`MAX_QUERY_PADDING`]; so a
//! decode never pays for a prefill's query length. `OneRun` (everything in one run) and `PerSequence` (no padding at
//! all) exist to measure what padding does to logits (`tests/padding.rs`).

/// How a step's sequences are grouped into runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepGrouping {
    /// One run for all single-token sequences; multi-token ones grouped with at most 25% query padding.
    #[default]
    Auto,
    /// The whole step in one run, padded to the longest query and past.
    OneRun,
    /// One run per sequence: no padding.
    PerSequence,
}

impl StepGrouping {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto (single-token sequences in one run; prefills grouped with <= 25% query padding)",
            Self::OneRun => "one-run",
            Self::PerSequence => "per-sequence",
        }
    }
}

/// Most extra (padding) query tokens a prefill group may carry, as a fraction of its real tokens.
pub const MAX_QUERY_PADDING: f64 = 0.25;

/// Groups sequences (given by their query lengths) into runs; each run lists indices into `query_lens`.
pub fn plan_runs(query_lens: &[usize], grouping: StepGrouping) -> Vec<Vec<usize>> {
    match grouping {
        StepGrouping::OneRun if query_lens.is_empty() => Vec::new(),
        StepGrouping::OneRun => vec![(0..query_lens.len()).collect()],
        StepGrouping::PerSequence => (0..query_lens.len()).map(|i| vec![i]).collect(),
        StepGrouping::Auto => {
            let mut runs = Vec::new();
            let singles: Vec<usize> = (0..query_lens.len()).filter(|&i| query_lens[i] <= 1).collect();
            if !singles.is_empty() {
                runs.push(singles);
            }
            let mut multi: Vec<usize> = (0..query_lens.len()).filter(|&i| query_lens[i] > 1).collect();
            multi.sort_by_key(|&i| std::cmp::Reverse(query_lens[i]));
            let mut group: Vec<usize> = Vec::new();
            let mut real = 0usize;
            for i in multi {
                // Longest first: the group's query length is its first member's.
                let longest = group.first().map_or(query_lens[i], |&g| query_lens[g]);
                let padded = (group.len() + 1) * longest;
                if !group.is_empty() && padded as f64 > (1.0 + MAX_QUERY_PADDING) * (real + query_lens[i]) as f64 {
                    runs.push(std::mem::take(&mut group));
                    real = 0;
                }
                group.push(i);
                real += query_lens[i];
            }
            if !group.is_empty() {
                runs.push(group);
            }
            runs
        }
    }
}

/// One row of a run: how much past it has, and its new tokens and their positions.
#[derive(Debug, Clone, Copy)]
pub struct RowSpec<'a> {
    pub past_len: usize,
    pub tokens: &'a [u32],
    pub positions: &'a [u32],
}

/// The integer inputs of one run, padded as the module docs say. Buffers are reused between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInputs {
    pub rows: usize,
    /// Longest query.
    pub query: usize,
    /// Longest past.
    pub past: usize,
    /// `[rows, query]`
    pub input_ids: Vec<i64>,
    /// `[rows, past + query]`
    pub attention_mask: Vec<i64>,
    /// `[rows, query]`
    pub position_ids: Vec<i64>,
}

impl RunInputs {
    /// Fills the buffers for `rows` (each with at least one token).
    pub fn fill(&mut self, rows: &[RowSpec<'_>]) {
        self.rows = rows.len();
        self.query = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        self.past = rows.iter().map(|r| r.past_len).max().unwrap_or(0);
        let (s, p) = (self.query, self.past);
        self.input_ids.clear();
        self.position_ids.clear();
        self.attention_mask.clear();
        for r in rows {
            let q = r.tokens.len();
            let last = r.positions.last().copied().unwrap_or(0) as i64;
            self.input_ids.extend(r.tokens.iter().map(|&t| t as i64));
            self.input_ids.extend(std::iter::repeat_n(0, s - q));
            self.position_ids.extend(r.positions.iter().map(|&x| x as i64));
            self.position_ids.extend(std::iter::repeat_n(last, s - q));
            self.attention_mask.extend(std::iter::repeat_n(0, p - r.past_len));
            self.attention_mask.extend(std::iter::repeat_n(1, r.past_len + q));
            self.attention_mask.extend(std::iter::repeat_n(0, s - q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_puts_single_tokens_together_and_groups_prefills_by_padding() {
        // Decodes 0, 2, 5; prefills 1 (30), 3 (28), 4 (10), 6 (8), 7 (26).
        let lens = [1, 30, 1, 28, 10, 1, 8, 26];
        let runs = plan_runs(&lens, StepGrouping::Auto);
        // 30, 28, 26 -> 3 x 30 = 90 <= 1.25 x 84; adding 10 -> 120 > 1.25 x 94. Then 10, 8 -> 20 <= 22.5.
        assert_eq!(runs, vec![vec![0, 2, 5], vec![1, 3, 7], vec![4, 6]]);
        // Every sequence exactly once.
        let mut all: Vec<usize> = runs.concat();
        all.sort();
        assert_eq!(all, (0..lens.len()).collect::<Vec<_>>());
    }

    #[test]
    fn other_groupings_and_empty_steps() {
        let lens = [3, 1, 7];
        assert_eq!(plan_runs(&lens, StepGrouping::OneRun), vec![vec![0, 1, 2]]);
        assert_eq!(plan_runs(&lens, StepGrouping::PerSequence), vec![vec![0], vec![1], vec![2]]);
        for g in [StepGrouping::Auto, StepGrouping::OneRun, StepGrouping::PerSequence] {
            assert!(plan_runs(&[], g).is_empty());
        }
        assert_eq!(plan_runs(&[5], StepGrouping::Auto), vec![vec![0]]);
    }

    #[test]
    fn inputs_pad_the_past_left_and_the_query_right() {
        let mut inputs = RunInputs::default();
        inputs.fill(&[
            RowSpec { past_len: 2, tokens: &[7], positions: &[2] },
            RowSpec { past_len: 0, tokens: &[4, 5, 6], positions: &[0, 1, 2] },
            RowSpec { past_len: 4, tokens: &[9, 8], positions: &[4, 5] },
        ]);
        assert_eq!((inputs.rows, inputs.query, inputs.past), (3, 3, 4));
        assert_eq!(inputs.input_ids, [7, 0, 0, 4, 5, 6, 9, 8, 0]);
        assert_eq!(inputs.position_ids, [2, 2, 2, 0, 1, 2, 4, 5, 5]);
        #[rustfmt::skip]
        assert_eq!(inputs.attention_mask, [
            0, 0, 1, 1, 1, 0, 0,
            0, 0, 0, 0, 1, 1, 1,
            1, 1, 1, 1, 1, 1, 0,
        ]);
    }
}
