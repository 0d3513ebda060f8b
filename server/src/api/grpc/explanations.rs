//! candela.v1's `Explanation` messages from the core's explanations: the
//! contributions as computed, and each reason named by its feature (a
//! category feature's value also by its category).

use crate::core::explaining::Explanation;
use crate::model::LoadedModel;
use candela::v1;

/// Row `row`'s explanation as candela.v1 carries it.
pub fn message(model: &LoadedModel, explanation: &Explanation, row: usize) -> v1::Explanation {
    let reasons = explanation.reasons[row].iter().map(|reason| v1::Reason {
        feature: model.manifest.features[reason.feature].clone(),
        contribution: reason.contribution,
        value: reason.value,
        category: model
            .scorer
            .categories(reason.feature)
            .and_then(|categories| categories.name(reason.value))
            .unwrap_or_default()
            .to_string(),
    });
    v1::Explanation {
        contributions: explanation.row(row).to_vec(),
        reasons: reasons.collect(),
        method: explanation.method.label().to_string(),
    }
}

/// Every row's explanation, in row order (none when not asked).
pub fn messages(model: &LoadedModel, explanation: Option<&Explanation>) -> Vec<v1::Explanation> {
    explanation.map_or_else(Vec::new, |e| (0..e.reasons.len()).map(|row| message(model, e, row)).collect())
}
