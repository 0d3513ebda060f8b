//! `Feedback` and `FeedbackStream`: outcomes from the wire to the core's
//! join (`core::outcomes`), and how they were taken to the metrics (each
//! version's live quality is published by the repository's supervisor).

use super::serving::Serving;
use crate::core::error::ServeError;
use crate::core::outcomes::{Joined, Outcome};
use candela::v1;

/// The most outcomes one message may carry: the join holds the store's
/// lock while it works through them, and answers are recorded under it.
pub const MAX_OUTCOMES: usize = 10_000;

/// Joins one message's outcomes.
pub fn take(serving: &Serving, request: v1::FeedbackRequest) -> Result<Joined, ServeError> {
    if request.outcomes.len() > MAX_OUTCOMES {
        return Err(ServeError::invalid(
            "outcomes",
            format!("has {} outcomes; send at most {MAX_OUTCOMES} per message", request.outcomes.len()),
        ));
    }
    let outcomes: Vec<Outcome> = request
        .outcomes
        .into_iter()
        .map(|o| Outcome { request_id: o.request_id, row: o.row, label: o.label })
        .collect();
    let joined = serving.engine.outcomes.join(&outcomes);
    for (result, count) in joined.by_result() {
        if count > 0 {
            serving.metrics.quality.fed_back(result, count);
        }
    }
    Ok(joined)
}

/// The answer to a feedback call.
pub fn response(joined: Joined) -> v1::FeedbackResponse {
    v1::FeedbackResponse {
        matched: joined.matched,
        unknown_request: joined.unknown_request,
        row_out_of_range: joined.row_out_of_range,
        unknown_label: joined.unknown_label,
        duplicate: joined.duplicate,
    }
}
