//! Each model's statistics in the protocol's form (the statistics extension).

use super::resolve;
use crate::core::error::ServeError;
use crate::core::registry::Registry;
use crate::core::served::ServedModel;
use candela::inference as oip;
use std::sync::Arc;

/// The statistics of model `name` version `version` ("" for all of its
/// versions; an empty name: every model).
pub fn statistics(map: &Registry, name: &str, version: &str) -> Result<Vec<oip::ModelStatistics>, ServeError> {
    let models: Vec<&Arc<ServedModel>> = match (name, version) {
        ("", _) => map.models().collect(),
        (name, "") => {
            let segment = &resolve(map, name, "")?.segment;
            map.models().filter(|m| &m.segment == segment).collect()
        }
        (name, version) => vec![resolve(map, name, version)?],
    };
    Ok(models.into_iter().map(|m| of(m)).collect())
}

/// A model's statistics in the protocol's form.
fn of(model: &ServedModel) -> oip::ModelStatistics {
    let stats = &model.stats;
    let duration = |(count, ns): (u64, u64)| Some(oip::StatisticDuration { count, ns });
    let batch_stats = stats
        .by_batch_size()
        .into_iter()
        .map(|(size, c)| oip::InferBatchStatistics {
            batch_size: size,
            compute_input: duration((c.executions, c.input_ns)),
            compute_infer: duration((c.executions, c.infer_ns)),
            compute_output: duration((c.executions, c.output_ns)),
        })
        .collect();
    oip::ModelStatistics {
        name: model.segment.clone(),
        version: model.version.to_string(),
        last_inference: stats.last_inference_ms(),
        inference_count: stats.rows(),
        execution_count: stats.executions(),
        inference_stats: Some(oip::InferStatistics {
            success: duration(stats.success.get()),
            fail: duration(stats.fail.get()),
            queue: duration(stats.queue.get()),
            compute_input: duration(stats.compute_input.get()),
            compute_infer: duration(stats.compute_infer.get()),
            compute_output: duration(stats.compute_output.get()),
            cache_hit: None,
            cache_miss: None,
        }),
        batch_stats,
        memory_usage: Vec::new(),
    }
}
