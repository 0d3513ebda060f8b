//! `Feedback` and `FeedbackStream`: outcomes from the wire to the core's
//! join (`core::outcomes`), then each version's live quality to the metrics.

use super::serving::Serving;
use crate::core::error::ServeError;
use crate::core::outcomes::{Joined, Outcome};
use crate::observe::quality::Measured;
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
    let joined = serving.outcomes.join(&outcomes);
    let metrics = &serving.metrics.quality;
    for (result, count) in [
        ("matched", joined.matched),
        ("unknown_request", joined.unknown_request),
        ("row_out_of_range", joined.row_out_of_range),
        ("unknown_label", joined.unknown_label),
        ("duplicate", joined.duplicate),
    ] {
        if count > 0 {
            metrics.fed_back(result, count);
        }
    }
    if joined.matched > 0 {
        for version in serving.outcomes.quality() {
            let s = &version.summary;
            let measured = Measured {
                outcomes: s.outcomes,
                auc: s.auc,
                log_loss: s.log_loss,
                precision: s.precision,
                recall: s.recall,
            };
            metrics.measured(&version.segment, version.version, version.enough, &measured);
        }
    }
    Ok(joined)
}

/// Adds `more` to `total`.
pub fn add(total: &mut Joined, more: Joined) {
    total.matched += more.matched;
    total.unknown_request += more.unknown_request;
    total.row_out_of_range += more.row_out_of_range;
    total.unknown_label += more.unknown_label;
    total.duplicate += more.duplicate;
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
