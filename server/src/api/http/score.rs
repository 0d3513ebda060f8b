//! The scoring contract teams already call over HTTP: `POST /score` with
//! `{"segment": "retail", "version": 2, "features": [[…], …]}` (segment and
//! version optional: the default segment, the served version; a row may also
//! be an object of feature name → value: a number, a category's name, `null`
//! for missing), answered
//! `{"prediction": [class index, …], "labels": […], "probability": [[…], …],
//! "segment": …, "version": …, "request_id": …}` (a regressor's:
//! `{"prediction": [value, …], "segment": …, …}`); with `"explain": k`, also
//! per row `contributions` (feature → value), `base` and `reasons` (the k
//! features pushing the row most toward its answer); and `POST /feedback` with
//! `{"outcomes": [{"request_id", "row", "label"}, …]}`, the outcomes of
//! answered rows, answered with the counts `candela.v1.Inference/Feedback`
//! gives.

use super::super::feedback;
use super::answer;
use super::{Front, body};
use crate::core::cells::{self, Cell};
use crate::core::engine::Answer;
use crate::core::error::{ServeError, echo};
use crate::core::explaining::Explanation;
use crate::core::scoring::{Fields, Rows};
use crate::model::LoadedModel;
use crate::model::manifest::Task;
use crate::model::scorer::predicted_class;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use candela::v1;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The contract's routes.
pub fn routes() -> Router<Arc<Front>> {
    Router::new().route("/score", post(score)).route("/feedback", post(feedback))
}

/// A `/score` request's JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    #[serde(default)]
    pub segment: String,
    #[serde(default)]
    pub version: u64,
    pub features: Vec<Row>,
    /// The reasons wanted per row (checked here, so a bad one is named).
    #[serde(default)]
    pub explain: Option<serde_json::Value>,
}

impl ScoreRequest {
    /// The reasons asked for per row: a whole number of at least 0.
    fn explain(&self) -> Result<u32, ServeError> {
        match &self.explain {
            None => Ok(0),
            Some(value) => value.as_u64().and_then(|k| u32::try_from(k).ok()).ok_or_else(|| {
                ServeError::invalid(
                    "explain",
                    format!("is {value}; send the number of reasons wanted per row, a whole number of at least 0"),
                )
            }),
        }
    }
}

/// One row of features: numbers in the model's feature order (`null` for
/// missing), or values by name (numbers, category strings, `null` for missing).
pub enum Row {
    Values(Vec<f64>),
    Named(Vec<(String, Value)>),
}

/// A feature's value in a row sent by name.
pub enum Value {
    Number(f64),
    Text(String),
    Missing,
}

impl Value {
    fn cell(&self) -> Cell<'_> {
        match self {
            Value::Number(v) => Cell::Number(*v),
            Value::Text(s) => Cell::Text(s),
            Value::Missing => Cell::Missing,
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl Visitor<'_> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a feature value: a number, a category's name (a string), or null for missing")
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::Number(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value as f64))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value as f64))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::Text(value.to_string()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Missing)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Missing)
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Row, D::Error> {
        deserializer.deserialize_any(RowVisitor)
    }
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Row;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "a row: a list of numbers in the model's feature order, or an object of feature name → value \
             (a number, a category's name, null)",
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Row, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        // null is a missing value (NaN), as in a row sent by name.
        while let Some(value) = seq.next_element::<Option<f64>>()? {
            values.push(value.unwrap_or(f64::NAN));
        }
        Ok(Row::Values(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut values = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(pair) = map.next_entry::<String, Value>()? {
            values.push(pair);
        }
        Ok(Row::Named(values))
    }
}

/// The contract's answer; the keys in this order (a regressor's: its
/// values as `prediction`, no labels or probabilities).
#[derive(Serialize)]
struct ScoreResponse<'a> {
    prediction: Predicted<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<Vec<&'a [f32]>>,
    segment: &'a str,
    version: u64,
    request_id: &'a str,
    /// Per row, each feature's contribution to the explained output, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    contributions: Option<Vec<BTreeMap<&'a str, f32>>>,
    /// Per row, the base the contributions start from.
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<Vec<Vec<ReasonJson<'a>>>>,
}

/// One reason: the feature, its contribution, the row's value (a category's
/// name; null when missing).
#[derive(Serialize)]
struct ReasonJson<'a> {
    feature: &'a str,
    contribution: f32,
    value: serde_json::Value,
}

/// The explanation's parts of the answer: contributions, base and reasons per row.
type Explained<'a> = (Vec<BTreeMap<&'a str, f32>>, Vec<f32>, Vec<Vec<ReasonJson<'a>>>);

/// `explanation` as the answer carries it, for the output each row's reasons are about.
fn explained<'a>(model: &'a LoadedModel, explanation: &Explanation) -> Explained<'a> {
    let features = &model.manifest.features;
    let rows = 0..explanation.reasons.len();
    let contributions = rows
        .clone()
        .map(|row| features.iter().map(String::as_str).zip(explanation.about(row).iter().copied()).collect())
        .collect();
    let base = rows.clone().map(|row| explanation.about(row)[features.len()]).collect();
    let reasons = rows
        .map(|row| {
            explanation.reasons[row]
                .iter()
                .map(|reason| {
                    let category = model.scorer.categories(reason.feature).map(|c| c.name(reason.value));
                    let value = match category {
                        Some(name) => name.map_or(serde_json::Value::Null, serde_json::Value::from),
                        None if reason.value.is_nan() => serde_json::Value::Null,
                        None => serde_json::Value::from(reason.value),
                    };
                    ReasonJson { feature: &features[reason.feature], contribution: reason.contribution, value }
                })
                .collect()
        })
        .collect();
    (contributions, base, reasons)
}

/// Each row's prediction: a classifier's class index, a regressor's value.
#[derive(Serialize)]
#[serde(untagged)]
enum Predicted<'a> {
    Classes(Vec<usize>),
    Values(&'a [f32]),
}

/// `POST /score`.
async fn score(State(front): State<Arc<Front>>, headers: HeaderMap, body: Body) -> Response {
    let serving = front.serving.clone();
    front
        .answer("score", &headers, body, |bytes, call| {
            Box::pin(async move {
                let request: ScoreRequest = body::parse(&bytes)?;
                let max_rows = serving.limits.max_rows;
                if request.features.len() > max_rows {
                    return Err(ServeError::invalid(
                        "features",
                        format!(
                            "has {} rows; this server scores at most {max_rows} per request (--max-rows): split the batch",
                            request.features.len()
                        ),
                    )
                    .into());
                }
                let inference = call.inference(&request.segment, request.version, request.explain()?);
                let decode = |model: &LoadedModel| rows(model, request.features, max_rows);
                let Answer { model, scores, explanation } = serving.engine.infer(&inference, call, decode).await?;
                let classifier = model.manifest.task() == Task::Classification;
                let (contributions, base, reasons) = match explanation.as_ref().map(|e| explained(&model, e)) {
                    Some((contributions, base, reasons)) => (Some(contributions), Some(base), Some(reasons)),
                    None => (None, None, None),
                };
                let answer = ScoreResponse {
                    prediction: match classifier {
                        true => Predicted::Classes(scores.rows().map(predicted_class).collect()),
                        false => Predicted::Values(&scores.probabilities),
                    },
                    labels: classifier.then_some(model.manifest.labels.as_slice()),
                    probability: classifier.then(|| scores.rows().collect()),
                    segment: &model.segment,
                    version: model.version,
                    request_id: &call.request_id,
                    contributions,
                    base,
                    reasons,
                };
                Ok(answer::json(StatusCode::OK, &answer))
            })
        })
        .await
}

/// The rows for `model`: each row's values in the model's feature order
/// (rows sent by name encoded by the core: categories become codes).
/// Public for the fuzz targets in `fuzz/`.
pub fn rows(model: &LoadedModel, rows: Vec<Row>, max_rows: usize) -> Result<Rows, ServeError> {
    let (features, segment) = (&model.manifest.features, &model.segment);
    let width = features.len();
    let mut values = Vec::with_capacity(rows.len() * width);
    let mut index: Option<HashMap<&str, usize>> = None;
    for (r, row) in rows.into_iter().enumerate() {
        match row {
            Row::Values(row) => {
                if row.len() != width {
                    return Err(ServeError::invalid(
                        format!("features[{r}]"),
                        format!("has {} values; model `{segment}` takes {width} (its features, in order)", row.len()),
                    ));
                }
                values.extend(row.into_iter().map(|v| v as f32));
            }
            Row::Named(pairs) => {
                let index =
                    index.get_or_insert_with(|| features.iter().enumerate().map(|(i, f)| (f.as_str(), i)).collect());
                let start = values.len();
                values.resize(start + width, f32::NAN);
                let mut seen = vec![false; width];
                for (name, value) in pairs {
                    let Some(&column) = index.get(name.as_str()) else {
                        return Err(ServeError::invalid(
                            format!("features[{r}].{}", echo(&name)),
                            format!("is not a feature of model `{segment}`"),
                        ));
                    };
                    if std::mem::replace(&mut seen[column], true) {
                        return Err(ServeError::invalid(format!("features[{r}].{name}"), "is given twice"));
                    }
                    values[start + column] = cells::encode(model, column, value.cell())
                        .map_err(|why| ServeError::invalid(format!("features[{r}].{name}"), why))?;
                }
                if let Some(missing) = seen.iter().position(|seen| !seen) {
                    let count = seen.iter().filter(|seen| !**seen).count();
                    return Err(ServeError::invalid(
                        format!("features[{r}].{}", features[missing]),
                        format!("is missing ({count} of model `{segment}`'s {width} features are)"),
                    ));
                }
            }
        }
    }
    Ok(Rows { fields: &ScoreFields, width, values, max_rows })
}

/// How the contract names the parts of `features`, in violations.
struct ScoreFields;

impl Fields for ScoreFields {
    fn width(&self, declared: usize) -> (&'static str, String) {
        ("features", format!("rows have {declared} values"))
    }

    fn values(&self) -> &'static str {
        "features"
    }

    fn row(&self, row: usize) -> String {
        format!("features[{row}]")
    }

    fn cell(&self, row: usize, col: usize) -> String {
        format!("features[{row}][{col}]")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    outcomes: Vec<OutcomeJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeJson {
    request_id: String,
    #[serde(default)]
    row: u64,
    label: String,
}

/// `POST /feedback`: outcomes joined to the answers they belong to.
async fn feedback(State(front): State<Arc<Front>>, headers: HeaderMap, body: Body) -> Response {
    let serving = front.serving.clone();
    front
        .answer("feedback", &headers, body, |bytes, _call| {
            Box::pin(async move {
                let request: FeedbackRequest = body::parse(&bytes)?;
                let outcomes = request
                    .outcomes
                    .into_iter()
                    .map(|o| v1::Outcome { request_id: o.request_id, row: o.row, label: o.label })
                    .collect();
                let joined = feedback::take(&serving, v1::FeedbackRequest { outcomes })?;
                Ok(answer::json(StatusCode::OK, &joined))
            })
        })
        .await
}
