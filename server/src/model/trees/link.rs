//! How a forest's summed margins become its answer: class probabilities
//! (a library's sigmoid or softmax, a random forest's votes) or a
//! regressor's value (the margin itself, or through the objective's inverse
//! link: the logistic of `reg:logistic`, the exponential of the log-link
//! objectives, poisson, gamma and tweedie).

/// How summed margins become probabilities, or a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// One margin per row: P(labels[1]) = 1 / (1 + e^(−scale·margin)).
    Sigmoid { scale: f64 },
    /// One margin per class: softmax.
    Softmax,
    /// One sum per class, already a probability (a random forest's averaged
    /// votes, ONNX's post_transform NONE), or a regressor's one value.
    Identity,
    /// One sum per row, already P(labels[1]): answers `[1 − s, s]` (a binary
    /// random forest's averaged votes as skl2onnx writes them).
    Complement,
    /// A regressor's value 1 / (1 + e^(−margin)) (`reg:logistic`, `cross_entropy`).
    Logistic,
    /// A regressor's value e^margin (poisson, gamma, tweedie).
    Exp,
}

impl Link {
    /// How many class probabilities `groups` margins per row become.
    pub fn classes(self, groups: usize) -> usize {
        match self {
            Link::Sigmoid { .. } | Link::Complement => 2,
            Link::Softmax | Link::Identity | Link::Logistic | Link::Exp => groups,
        }
    }

    /// Whether one margin per row can be a regressor's value through this link.
    pub fn answers_value(self) -> bool {
        matches!(self, Link::Identity | Link::Logistic | Link::Exp)
    }

    /// Turns `margins` (`groups` per row) into `out` (`classes(groups)` per row).
    pub(super) fn apply(self, margins: &[f64], groups: usize, out: &mut [f32]) {
        match self {
            Link::Sigmoid { scale } => {
                for (margin, out) in margins.iter().zip(out.chunks_exact_mut(2)) {
                    let p = 1.0 / (1.0 + (-scale * margin).exp());
                    out[0] = (1.0 - p) as f32;
                    out[1] = p as f32;
                }
            }
            Link::Complement => {
                for (margin, out) in margins.iter().zip(out.chunks_exact_mut(2)) {
                    out[0] = (1.0 - margin) as f32;
                    out[1] = *margin as f32;
                }
            }
            Link::Identity => {
                for (margin, out) in margins.iter().zip(out) {
                    *out = *margin as f32;
                }
            }
            Link::Logistic => {
                for (margin, out) in margins.iter().zip(out) {
                    *out = (1.0 / (1.0 + (-margin).exp())) as f32;
                }
            }
            Link::Exp => {
                for (margin, out) in margins.iter().zip(out) {
                    *out = margin.exp() as f32;
                }
            }
            Link::Softmax => {
                for (margin, out) in margins.chunks_exact(groups).zip(out.chunks_exact_mut(groups)) {
                    let top = margin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = margin.iter().map(|m| (m - top).exp()).sum();
                    for (m, p) in margin.iter().zip(out) {
                        *p = ((m - top).exp() / total) as f32;
                    }
                }
            }
        }
    }
}
