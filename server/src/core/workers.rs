//! The compute threads of one served model. Each worker is a small rayon
//! pool (`threads` threads) running the model's batcher loop on one of its
//! threads: candle's parallel kernels (softmax, large matrix multiplies) then
//! run on the worker itself and its pool, instead of handing every operation
//! to rayon's global pool and waiting for it. Compute runs on these threads,
//! except a lone request's small, quick pass, which runs where the request
//! is (see `Batcher::run_inline`; `--inline-lone-requests off` stops it).

use crate::core::batching::Batcher;
use crate::core::stats::ModelStats;
use crate::model::LoadedModel;
use std::sync::Arc;

/// A model's running workers. They exit once its batcher is closed and
/// drained (see `ServedModel`'s drop).
pub struct Workers {
    _pools: Vec<rayon::ThreadPool>,
}

impl Workers {
    /// Starts `count` workers of `threads` threads taking `model`'s batches from `batcher`.
    pub fn start(
        model: &Arc<LoadedModel>,
        batcher: &Arc<Batcher>,
        stats: &Arc<ModelStats>,
        count: usize,
        threads: usize,
    ) -> Result<Workers, rayon::ThreadPoolBuildError> {
        let mut pools = Vec::new();
        for index in 0..count.max(1) {
            let name = format!("compute-{}-{}-{index}", model.segment, model.version);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads.max(1))
                .thread_name(move |thread| format!("{name}.{thread}"))
                .build()?;
            let (model, batcher, stats) = (model.clone(), batcher.clone(), stats.clone());
            pool.spawn(move || batcher.work(&model, &stats));
            pools.push(pool);
        }
        Ok(Workers { _pools: pools })
    }
}
