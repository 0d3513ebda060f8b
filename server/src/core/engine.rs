//! The core's one door for a scoring request, whichever front it came
//! through: route it (a pinned version, or the rollout's draw), decode its
//! rows with the model it was routed to (the front's decoder: only the front
//! knows its wire format), validate and score them, keep the answer for
//! `Feedback`, and offer the rows to the segment's shadow. A front only
//! translates its request into an `Inference` and the `Answer` back, and
//! records its transport's metrics and span through `Progress`. A stream
//! that answers one request in parts opens `Chunks` instead.

use crate::core::batching::Timing;
use crate::core::error::ServeError;
use crate::core::explaining::{self, ExplainLimits, Explanation};
use crate::core::live::LiveRepository;
use crate::core::outcomes::{AnswerKey, Outcomes};
use crate::core::registry::Registry;
use crate::core::rollout::Route;
use crate::core::scores::Scores;
use crate::core::scoring::{self, Deadline, Rows, Scored};
use crate::core::served::ServedModel;
use crate::model::LoadedModel;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The answer while no models are loaded yet.
fn still_loading() -> ServeError {
    ServeError::Unavailable("the server is still loading its models; retry shortly".into())
}

/// The served models and the answers kept for outcomes: what every request needs.
pub struct Engine {
    repository: OnceLock<Arc<LiveRepository>>,
    /// Answers kept for `Feedback`, and each version's live quality.
    pub outcomes: Arc<Outcomes>,
    /// Requests being scored now by models that may compute inline (CPU
    /// models without a batching window, unless --inline-lone-requests off):
    /// a lone one may be computed where it is, without the hand-off to a
    /// compute thread. Other requests are not counted.
    inlining: AtomicUsize,
    /// What a request may ask to have explained.
    explain: ExplainLimits,
}

/// One scoring request, as the core takes it from any front.
#[derive(Debug, Clone, Copy)]
pub struct Inference<'a> {
    /// The segment ("" = the default) and version (0 = the served one) asked for.
    pub segment: &'a str,
    pub version: u64,
    /// What draws the request's side of a canary split.
    pub routing_key: &'a str,
    pub deadline: Deadline,
    /// The id its answers are kept under for `Feedback`; none: not kept.
    pub answer_id: Option<&'a str>,
    /// Reasons asked for per row (`explain`); 0: no explanation.
    pub explain: usize,
}

/// What the front records as a request goes through the core: its
/// transport's metrics and span are labelled by the model it was routed to.
pub trait Progress: Sync {
    /// The request was routed to `model`.
    fn routed(&self, model: &LoadedModel);
    /// `rows` rows were scored, their time spent as `timing` says.
    fn scored(&self, rows: usize, timing: &Timing);
}

/// A request's answer, and the model that gave it.
pub struct Answer {
    pub model: Arc<ServedModel>,
    pub scores: Scores,
    /// Why, when the request asked.
    pub explanation: Option<Explanation>,
}

impl Engine {
    /// The engine keeping answers in `outcomes`, explaining within `explain`.
    pub fn new(outcomes: Arc<Outcomes>, explain: ExplainLimits) -> Engine {
        Engine { repository: OnceLock::new(), outcomes, inlining: AtomicUsize::new(0), explain }
    }

    /// Serves the live repository once it has started (its first models warm).
    pub fn publish(&self, repository: Arc<LiveRepository>) {
        if self.repository.set(repository).is_err() {
            panic!("the repository was published twice; this is a bug");
        }
    }

    /// The live repository, once started.
    pub fn repository(&self) -> Result<&Arc<LiveRepository>, ServeError> {
        self.repository.get().ok_or_else(still_loading)
    }

    /// A snapshot of the served models (one atomic load; a request reads
    /// only this snapshot), or UNAVAILABLE while they are still loading.
    pub fn models(&self) -> Result<Arc<Registry>, ServeError> {
        self.repository()?.current().ok_or_else(still_loading)
    }

    /// Where `request` goes (see `Registry::route`).
    fn route(&self, request: &Inference) -> Result<Route, ServeError> {
        self.repository()?.route(request.segment, request.version, request.routing_key)?.ok_or_else(still_loading)
    }

    /// Answers `request`: routes it, decodes its rows with the model it was
    /// routed to (`decode`), validates and scores them, keeps the answer and
    /// offers the rows to the shadow. Every request that reaches a model is
    /// counted in its statistics once, a refused one included.
    pub async fn infer(
        &self,
        request: &Inference<'_>,
        progress: &dyn Progress,
        decode: impl FnOnce(&LoadedModel) -> Result<Rows, ServeError>,
    ) -> Result<Answer, ServeError> {
        self.explain.check_reasons(request.explain)?;
        let route = self.route(request)?;
        let model = &route.model;
        progress.routed(model);
        let explainable = |rows: Rows| self.explain.check_request(request.explain, model, &rows).map(|_| rows);
        let rows = match decode(model).and_then(explainable) {
            Ok(rows) => rows,
            Err(error) => return scoring::recorded(model, request.deadline, Err(error)),
        };
        let (shadowed, width) = (route.shadow.as_ref().map(|_| rows.values.clone()), rows.width);
        let explained = (request.explain > 0).then(|| rows.values.clone());
        let counted = model.batcher.inlines().then(|| Counted::enter(&self.inlining));
        let lone = counted.as_ref().is_some_and(|counted| counted.lone);
        let scored = scoring::serve(model, rows, request.deadline, lone).await;
        drop(counted);
        let scored = scored?;
        let explanation = match explained {
            Some(values) => {
                Some(explaining::explain(model, values, &scored.scores, request.explain, request.deadline).await?)
            }
            None => None,
        };
        settle(&route, shadowed, width, self.answer_key(request), progress, &scored);
        Ok(Answer { model: route.model, scores: scored.scores, explanation })
    }

    /// Opens `request` to be answered in parts of `chunk_rows` rows: routes
    /// it, decodes and validates all its rows first, so that a bad row
    /// refuses the request before any part is answered.
    pub fn open(
        &self,
        request: &Inference<'_>,
        progress: &dyn Progress,
        chunk_rows: usize,
        decode: impl FnOnce(&LoadedModel) -> Result<Rows, ServeError>,
    ) -> Result<Chunks, ServeError> {
        self.explain.check_reasons(request.explain)?;
        let route = self.route(request)?;
        let model = &route.model;
        progress.routed(model);
        let checked = |rows: Rows| {
            scoring::check(model, &rows)?;
            self.explain.check_request(request.explain, model, &rows)?;
            Ok(rows)
        };
        let rows = match decode(model).and_then(checked) {
            Ok(rows) => rows,
            Err(error) => return scoring::recorded(model, request.deadline, Err(error)),
        };
        Ok(Chunks {
            key: self.answer_key(request),
            deadline: request.deadline,
            chunk_values: chunk_rows.max(1) * model.scorer.inputs(),
            next: 0,
            explain: request.explain,
            rows,
            route,
        })
    }

    /// Where `request`'s answer (its rows from the first on) is kept, if anywhere.
    fn answer_key(&self, request: &Inference) -> Option<AnswerKey> {
        request.answer_id.map(|id| AnswerKey { store: self.outcomes.clone(), request_id: id.to_string(), first_row: 0 })
    }
}

/// What follows a scored request or part: the front learns where the time
/// went, the answer is kept under `key` (the part's first row in it), and
/// the rows (`shadowed`, when drawn for the shadow; `width` per row) are
/// offered to the segment's shadow.
fn settle(
    route: &Route,
    shadowed: Option<Vec<f32>>,
    width: usize,
    key: Option<AnswerKey>,
    progress: &dyn Progress,
    scored: &Scored,
) {
    progress.scored(scored.scores.rows().len(), &scored.timing);
    if let Some(key) = &key {
        key.keep(&route.model, &scored.scores);
    }
    if let (Some(shadow), Some(values)) = (&route.shadow, shadowed) {
        shadow.offer(values, width, &scored.scores, key);
    }
}

/// A validated request answered in parts, each scored, kept and shadowed
/// as a whole request is.
pub struct Chunks {
    route: Route,
    rows: Rows,
    deadline: Deadline,
    /// Values per part: the rows of one part times the model's inputs.
    chunk_values: usize,
    /// The first value of the next part.
    next: usize,
    key: Option<AnswerKey>,
    /// Reasons asked for per row; 0: none.
    explain: usize,
}

/// One part of a request's answer: its rows from `first_row` on.
pub struct Chunk {
    pub first_row: u64,
    pub scores: Scores,
    /// Why, when the request asked.
    pub explanation: Option<Explanation>,
}

impl Chunks {
    /// The model answering.
    pub fn model(&self) -> &Arc<ServedModel> {
        &self.route.model
    }

    /// How many parts the answer has.
    pub fn parts(&self) -> usize {
        self.rows.values.len().div_ceil(self.chunk_values).max(1)
    }

    /// Scores the next part, or `None` once all are answered.
    pub async fn next(&mut self, progress: &dyn Progress) -> Option<Result<Chunk, ServeError>> {
        let total = self.rows.values.len();
        if self.next >= total {
            return None;
        }
        let end = (self.next + self.chunk_values).min(total);
        let values = self.rows.values[self.next..end].to_vec();
        let first_row = self.next / self.rows.width;
        self.next = end;
        let shadowed = self.route.shadow.as_ref().map(|_| values.clone());
        let explained = (self.explain > 0).then(|| values.clone());
        let scored =
            match scoring::score(&self.route.model, values, self.rows.fields, first_row, false, self.deadline).await {
                Ok(scored) => scored,
                Err(error) => return Some(Err(error)),
            };
        let explanation = match explained {
            Some(values) => {
                match explaining::explain(&self.route.model, values, &scored.scores, self.explain, self.deadline).await
                {
                    Ok(explanation) => Some(explanation),
                    Err(error) => return Some(Err(error)),
                }
            }
            None => None,
        };
        let key = self.key.as_ref().map(|key| AnswerKey { first_row: first_row as u64, ..key.clone() });
        settle(&self.route, shadowed, self.rows.width, key, progress, &scored);
        Some(Ok(Chunk { first_row: first_row as u64, scores: scored.scores, explanation }))
    }

    /// Counts the whole request's `result` in the model's statistics, once, and returns it.
    pub fn finish<T>(&self, result: Result<T, ServeError>) -> Result<T, ServeError> {
        scoring::recorded(&self.route.model, self.deadline, result)
    }
}

/// One request being scored, counted in the engine's `inlining` while it is.
struct Counted<'a> {
    count: &'a AtomicUsize,
    /// Whether it was the only one when it began.
    lone: bool,
}

impl<'a> Counted<'a> {
    fn enter(count: &'a AtomicUsize) -> Counted<'a> {
        let lone = count.fetch_add(1, Ordering::AcqRel) == 0;
        Counted { count, lone }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}
