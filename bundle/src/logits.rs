//! A row-major `[rows][vocab]` matrix of f32 logits.

/// Logits of consecutive positions, one row of `vocab` values per position.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    vocab: usize,
    data: Vec<f32>,
}

impl Logits {
    /// Wrap `data` as rows of `vocab` values; `None` if `vocab` is 0 or does not divide `data.len()`.
    pub fn new(vocab: usize, data: Vec<f32>) -> Option<Self> {
        (vocab > 0 && data.len().is_multiple_of(vocab)).then_some(Self { vocab, data })
    }

    /// Number of rows (positions).
    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab
    }

    /// Values per row.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Row `i`. Panics if `i >= rows()`, like slice indexing; see [`Logits::get`].
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Row `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        (i < self.rows()).then(|| self.row(i))
    }

    /// Rows in order.
    pub fn iter_rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.vocab)
    }

    /// The token with the largest logit in row `i` (the first one on ties). Panics if `i >= rows()`.
    pub fn argmax(&self, i: usize) -> u32 {
        argmax(self.row(i))
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

/// Index of the largest value (the first one on ties; NaN never wins). 0 for an empty slice.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_argmax() {
        let l = Logits::new(3, vec![0.0, 2.0, 1.0, 5.0, -1.0, 5.0]).unwrap();
        assert_eq!(l.rows(), 2);
        assert_eq!(l.row(1), &[5.0, -1.0, 5.0]);
        assert_eq!(l.argmax(0), 1);
        assert_eq!(l.argmax(1), 0, "first index wins a tie");
        assert_eq!(l.get(2), None);
        assert_eq!(l.iter_rows().count(), 2);
    }

    #[test]
    fn rejects_ragged_data() {
        assert!(Logits::new(3, vec![0.0; 4]).is_none());
        assert!(Logits::new(0, vec![]).is_none());
    }

    #[test]
    fn nan_never_wins() {
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.5]), 1);
    }
}
