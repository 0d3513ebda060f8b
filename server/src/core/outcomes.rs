//! Ground truth fed back: the server keeps, for each answered row, only what
//! joining its true label needs (a digest of the request id, the row, which
//! version answered, the probabilities; never the features), in a store
//! bounded in records (oldest dropped first, counted) and in time (records
//! older than the retention expire). An outcome `{request id, row, label}`
//! (a regressor's label: the true value, as a decimal number) is joined to every version that answered that row (the serving one, and a
//! shadow's) and added to that version's live quality window (`quality`).
//! Outcomes that join nothing are counted by reason.

use crate::core::quality::{Quality, Summary};
use crate::core::scores::Scores;
use crate::model::LoadedModel;
use crate::model::scorer::predicted_class;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The store's bounds and the quality window.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeSettings {
    /// How long a prediction waits for its outcome.
    pub retention: Duration,
    /// The most answered rows kept; the oldest are dropped for new ones.
    pub max_records: usize,
    /// The span of joined outcomes each version's quality is measured over.
    pub quality_window: Duration,
    /// Joined outcomes a version needs in its window before its quality counts.
    pub min_outcomes: u64,
}

/// The most answers kept under one request id: a stream's chunks and a
/// shadow's answers need a few; a caller that sends the same `x-request-id`
/// with every call must not make one outcome's join walk the whole store.
pub const MAX_PER_REQUEST: usize = 64;

/// Where one answer is kept for outcomes: the store, the request id, and
/// the first of the request's rows it answers.
#[derive(Clone)]
pub struct AnswerKey {
    pub store: Arc<Outcomes>,
    pub request_id: String,
    pub first_row: u64,
}

impl AnswerKey {
    /// Keeps `model`'s answer `scores` to the rows from `first_row` on.
    pub fn keep(&self, model: &LoadedModel, scores: &Scores) {
        let about = (model.segment.as_str(), model.version, model.manifest.labels.as_slice());
        self.store.record(&self.request_id, self.first_row, about, scores);
    }
}

/// One outcome as a caller reports it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub request_id: String,
    pub row: u64,
    pub label: String,
}

/// How a batch of outcomes was taken (serialized as the HTTP front answers it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Joined {
    /// Joined to at least one answered row.
    pub matched: u64,
    /// No answer with this request id is kept (never seen, expired or dropped for room).
    pub unknown_request: u64,
    /// The request had fewer rows.
    pub row_out_of_range: u64,
    /// The label is not one of the answering model's labels (a regressor's:
    /// not a finite number).
    pub unknown_label: u64,
    /// The row's outcome was already joined; counted once.
    pub duplicate: u64,
}

impl Joined {
    /// Each count with the name metrics give its result.
    pub fn by_result(&self) -> [(&'static str, u64); 5] {
        [
            ("matched", self.matched),
            ("unknown_request", self.unknown_request),
            ("row_out_of_range", self.row_out_of_range),
            ("unknown_label", self.unknown_label),
            ("duplicate", self.duplicate),
        ]
    }
}

impl std::ops::AddAssign for Joined {
    fn add_assign(&mut self, more: Joined) {
        self.matched += more.matched;
        self.unknown_request += more.unknown_request;
        self.row_out_of_range += more.row_out_of_range;
        self.unknown_label += more.unknown_label;
        self.duplicate += more.duplicate;
    }
}

/// Which model answered: its segment, version and labels (none: a
/// regressor), shared by its records.
struct Source {
    segment: String,
    version: u64,
    labels: Vec<String>,
}

impl Source {
    /// Numbers per answered row: a probability per label, or one value.
    fn width(&self) -> usize {
        self.labels.len().max(1)
    }
}

/// An outcome's label as the answering model reads it.
enum Truth {
    /// The index of a classifier's label.
    Class(usize),
    /// A regressor's true value.
    Value(f64),
}

/// The answer to one request by one version.
struct Record {
    key: u64,
    /// The request's row this record's first row is (chunks of a streamed answer start later).
    first_row: u64,
    source: Arc<Source>,
    at: Instant,
    /// Row-major, `source.width()` per row.
    probabilities: Box<[f32]>,
    /// One bit per row: its outcome was joined.
    joined: Box<[u64]>,
}

impl Record {
    fn rows(&self) -> usize {
        self.probabilities.len() / self.source.width()
    }
}

/// A version that answered: what its records share, and its live quality
/// once an outcome joined one of them.
struct Version {
    source: Arc<Source>,
    quality: Option<Quality>,
}

/// The records, oldest first, and the index from request id digests to them.
struct Store {
    records: VecDeque<Record>,
    /// The sequence number of `records[0]`; a record's number never changes.
    first: u64,
    by_key: HashMap<u64, Vec<u64>>,
    rows: usize,
    /// By segment, then version (looked up by `&str`: nothing allocated per
    /// record or outcome).
    versions: HashMap<String, HashMap<u64, Version>>,
    dropped_rows: u64,
    expired_rows: u64,
    /// Rows not kept: their request id already had `MAX_PER_REQUEST` answers.
    reused_rows: u64,
}

/// The prediction records and each version's live quality.
pub struct Outcomes {
    settings: OutcomeSettings,
    hasher: RandomState,
    store: Mutex<Store>,
}

/// The store's size and what it let go, as `Outcomes::held` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub rows: usize,
    pub dropped: u64,
    pub expired: u64,
    pub reused: u64,
}

/// One version's live quality, as `Outcomes::quality` reports it.
#[derive(Debug, Clone)]
pub struct VersionQuality {
    pub segment: String,
    pub version: u64,
    pub summary: Summary,
    /// Whether the window holds at least `min_outcomes` joined outcomes.
    pub enough: bool,
}

impl Outcomes {
    pub fn new(settings: OutcomeSettings) -> Outcomes {
        Outcomes {
            settings,
            hasher: RandomState::new(),
            store: Mutex::new(Store {
                records: VecDeque::new(),
                first: 0,
                by_key: HashMap::new(),
                rows: 0,
                versions: HashMap::new(),
                dropped_rows: 0,
                expired_rows: 0,
                reused_rows: 0,
            }),
        }
    }

    /// Keeps what joining outcomes to `scores` needs: the answer of
    /// `segment` version `version` (whose labels are `labels`; none for a regressor) to rows
    /// `first_row`… of request `request_id`. Makes room by dropping the
    /// oldest records.
    pub fn record(&self, request_id: &str, first_row: u64, model: (&str, u64, &[String]), scores: &Scores) {
        let (segment, version, labels) = model;
        let rows = scores.rows().len();
        if rows == 0 || labels.len().max(1) != scores.classes || self.settings.max_records == 0 {
            return;
        }
        let key = self.hasher.hash_one(request_id);
        let now = Instant::now();
        let mut store = self.store.lock().expect("the outcome store's lock is never poisoned");
        store.expire(now, self.settings.retention);
        if store.by_key.get(&key).is_some_and(|numbers| numbers.len() >= MAX_PER_REQUEST) {
            store.reused_rows += rows as u64;
            return;
        }
        while store.rows + rows > self.settings.max_records && !store.records.is_empty() {
            let dropped = store.pop_oldest();
            store.dropped_rows += dropped as u64;
        }
        if rows > self.settings.max_records {
            store.dropped_rows += rows as u64;
            return;
        }
        let known = store.versions.get(segment).and_then(|versions| versions.get(&version));
        let source = match known {
            Some(known) => known.source.clone(),
            None => {
                let source = Arc::new(Source { segment: segment.to_string(), version, labels: labels.to_vec() });
                let versions = store.versions.entry(segment.to_string()).or_default();
                versions.insert(version, Version { source: source.clone(), quality: None });
                source
            }
        };
        let number = store.first + store.records.len() as u64;
        store.records.push_back(Record {
            key,
            first_row,
            source,
            at: now,
            probabilities: scores.probabilities.clone().into_boxed_slice(),
            joined: vec![0; rows.div_ceil(64)].into_boxed_slice(),
        });
        store.by_key.entry(key).or_default().push(number);
        store.rows += rows;
    }

    /// Joins `outcomes` to the records and adds each joined row to its
    /// version's quality window.
    pub fn join(&self, outcomes: &[Outcome]) -> Joined {
        let now = Instant::now();
        let mut joined = Joined::default();
        let mut store = self.store.lock().expect("the outcome store's lock is never poisoned");
        store.expire(now, self.settings.retention);
        let Store { records, first, by_key, versions, .. } = &mut *store;
        for outcome in outcomes {
            let Some(numbers) = by_key.get(&self.hasher.hash_one(&outcome.request_id)) else {
                joined.unknown_request += 1;
                continue;
            };
            // The verdict for the outcome: the best over the versions that answered it.
            let (mut in_range, mut labelled, mut fresh) = (false, false, false);
            for number in numbers {
                let record = &mut records[(number - *first) as usize];
                let Some(row) = outcome.row.checked_sub(record.first_row).and_then(|r| usize::try_from(r).ok()) else {
                    continue;
                };
                if row >= record.rows() {
                    continue;
                }
                in_range = true;
                let labels = &record.source.labels;
                let truth = match labels.is_empty() {
                    true => outcome.label.trim().parse::<f64>().ok().filter(|v| v.is_finite()).map(Truth::Value),
                    false => labels.iter().position(|l| *l == outcome.label).map(Truth::Class),
                };
                let Some(truth) = truth else { continue };
                labelled = true;
                let (word, bit) = (row / 64, 1u64 << (row % 64));
                if record.joined[word] & bit != 0 {
                    continue;
                }
                record.joined[word] |= bit;
                fresh = true;
                let classes = record.source.width();
                let probabilities = &record.probabilities[row * classes..][..classes];
                let source = &record.source;
                let version = versions
                    .get_mut(&source.segment)
                    .and_then(|versions| versions.get_mut(&source.version))
                    .expect("a record's version is kept while the record is");
                let quality =
                    version.quality.get_or_insert_with(|| Quality::new(classes, self.settings.quality_window, now));
                match truth {
                    Truth::Class(truth) => quality.add(probabilities, truth, predicted_class(probabilities), now),
                    Truth::Value(truth) => quality.add_value(probabilities[0], truth, now),
                }
            }
            match (in_range, labelled, fresh) {
                (false, _, _) => joined.row_out_of_range += 1,
                (true, false, _) => joined.unknown_label += 1,
                (true, true, false) => joined.duplicate += 1,
                (true, true, true) => joined.matched += 1,
            }
        }
        joined
    }

    /// Every version's quality over its window, as of now.
    pub fn quality(&self) -> Vec<VersionQuality> {
        let now = Instant::now();
        let mut store = self.store.lock().expect("the outcome store's lock is never poisoned");
        let mut all: Vec<VersionQuality> = store
            .versions
            .values_mut()
            .flat_map(HashMap::values_mut)
            .filter_map(|version| {
                let summary = version.quality.as_mut()?.summary(now);
                let enough = summary.outcomes >= self.settings.min_outcomes;
                Some(VersionQuality {
                    segment: version.source.segment.clone(),
                    version: version.source.version,
                    summary,
                    enough,
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.segment, a.version).cmp(&(&b.segment, b.version)));
        all
    }

    /// One version's quality over its window, as of `now`; None before its first joined outcome.
    pub fn summary(&self, segment: &str, version: u64, now: Instant) -> Option<Summary> {
        let mut store = self.store.lock().expect("the outcome store's lock is never poisoned");
        let known = store.versions.get_mut(segment).and_then(|versions| versions.get_mut(&version));
        known.and_then(|version| version.quality.as_mut()).map(|quality| quality.summary(now))
    }

    /// Rows held, and rows let go so far: dropped for room, expired, and
    /// never kept for a reused request id; after dropping those older than
    /// the retention.
    pub fn held(&self) -> Held {
        let mut store = self.store.lock().expect("the outcome store's lock is never poisoned");
        store.expire(Instant::now(), self.settings.retention);
        Held { rows: store.rows, dropped: store.dropped_rows, expired: store.expired_rows, reused: store.reused_rows }
    }
}

impl Store {
    /// Drops the oldest record; returns its rows.
    fn pop_oldest(&mut self) -> usize {
        let Some(record) = self.records.pop_front() else { return 0 };
        let number = self.first;
        self.first += 1;
        if let Some(numbers) = self.by_key.get_mut(&record.key) {
            numbers.retain(|n| *n != number);
            if numbers.is_empty() {
                self.by_key.remove(&record.key);
            }
        }
        let rows = record.rows();
        self.rows -= rows;
        rows
    }

    /// Drops the records older than `retention`.
    fn expire(&mut self, now: Instant, retention: Duration) {
        while self.records.front().is_some_and(|r| now.saturating_duration_since(r.at) > retention) {
            let rows = self.pop_oldest();
            self.expired_rows += rows as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_records: usize, retention: Duration) -> Outcomes {
        Outcomes::new(OutcomeSettings {
            retention,
            max_records,
            quality_window: Duration::from_secs(3600),
            min_outcomes: 1,
        })
    }

    fn labels() -> Vec<String> {
        vec!["legit".to_string(), "fraud".to_string()]
    }

    fn scores(rows: &[f32]) -> Scores {
        Scores { probabilities: rows.iter().flat_map(|p| [1.0 - p, *p]).collect(), classes: 2 }
    }

    fn outcome(id: &str, row: u64, label: &str) -> Outcome {
        Outcome { request_id: id.to_string(), row, label: label.to_string() }
    }

    #[test]
    fn outcomes_join_the_rows_they_name_and_the_rest_are_counted_by_reason() {
        let outcomes = store(1000, Duration::from_secs(60));
        outcomes.record("a", 0, ("retail", 1, &labels()), &scores(&[0.9, 0.2]));
        let joined = outcomes.join(&[
            outcome("a", 0, "fraud"),
            outcome("a", 1, "legit"),
            outcome("a", 1, "legit"),
            outcome("a", 2, "legit"),
            outcome("a", 0, "maybe"),
            outcome("b", 0, "fraud"),
        ]);
        assert_eq!(
            joined,
            Joined { matched: 2, unknown_request: 1, row_out_of_range: 1, unknown_label: 1, duplicate: 1 }
        );
        let quality = outcomes.quality();
        assert_eq!(quality.len(), 1);
        assert_eq!((quality[0].segment.as_str(), quality[0].version), ("retail", 1));
        assert_eq!(quality[0].summary.outcomes, 2);
        assert_eq!(quality[0].summary.auc, Some(1.0));
    }

    #[test]
    fn a_regressors_outcome_is_a_number_and_its_quality_its_errors() {
        let outcomes = store(1000, Duration::from_secs(60));
        let values = Scores { probabilities: vec![10.0, 20.0], classes: 1 };
        outcomes.record("v", 0, ("prices", 1, &[]), &values);
        let joined = outcomes.join(&[
            outcome("v", 0, "12.5"),
            outcome("v", 1, " 18 "),
            outcome("v", 1, "19"),
            outcome("v", 0, "fraud"),
            outcome("v", 0, "NaN"),
        ]);
        assert_eq!(joined, Joined { matched: 2, unknown_label: 2, duplicate: 1, ..Joined::default() });
        let summary = &outcomes.quality()[0].summary;
        assert_eq!(summary.mean_absolute_error, Some(2.25));
        assert_eq!(summary.rmse, Some(5.125f64.sqrt()));
        assert_eq!(summary.auc, None);
    }

    #[test]
    fn a_shadow_answer_to_the_same_request_gets_the_outcome_too() {
        let outcomes = store(1000, Duration::from_secs(60));
        outcomes.record("a", 0, ("retail", 1, &labels()), &scores(&[0.9]));
        outcomes.record("a", 1, ("retail", 1, &labels()), &scores(&[0.1]));
        outcomes.record("a", 0, ("retail", 2, &labels()), &scores(&[0.4]));
        assert_eq!(outcomes.join(&[outcome("a", 0, "fraud"), outcome("a", 1, "legit")]).matched, 2);
        let versions: Vec<(u64, u64)> = outcomes.quality().iter().map(|q| (q.version, q.summary.outcomes)).collect();
        assert_eq!(versions, [(1, 2), (2, 1)], "the second row (a later chunk) was answered by version 1 only");
    }

    #[test]
    fn one_request_id_keeps_a_bounded_number_of_answers() {
        let outcomes = store(10_000, Duration::from_secs(60));
        for _ in 0..MAX_PER_REQUEST + 5 {
            outcomes.record("same", 0, ("retail", 1, &labels()), &scores(&[0.5]));
        }
        let held = outcomes.held();
        assert_eq!((held.rows, held.reused), (MAX_PER_REQUEST, 5));
    }

    #[test]
    fn the_store_keeps_at_most_its_bound_dropping_the_oldest_and_expires_old_records() {
        let outcomes = store(10, Duration::from_secs(60));
        for i in 0..8 {
            outcomes.record(&format!("r{i}"), 0, ("retail", 1, &labels()), &scores(&[0.5, 0.5]));
        }
        let held = outcomes.held();
        assert_eq!((held.rows, held.dropped), (10, 6), "5 requests of 2 rows fit; the first 3 were dropped");
        let joined = outcomes.join(&[outcome("r0", 0, "fraud"), outcome("r7", 1, "fraud")]);
        assert_eq!((joined.unknown_request, joined.matched), (1, 1));
        // A request larger than the whole store is not kept.
        outcomes.record("big", 0, ("retail", 1, &labels()), &scores(&[0.5; 11]));
        assert_eq!(outcomes.join(&[outcome("big", 0, "fraud")]).unknown_request, 1);

        let short = store(100, Duration::from_millis(50));
        short.record("old", 0, ("retail", 1, &labels()), &scores(&[0.5]));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(short.join(&[outcome("old", 0, "fraud")]).unknown_request, 1);
        assert_eq!(short.held(), Held { rows: 0, dropped: 0, expired: 1, reused: 0 });
    }
}
