//! The compute threads of every served model. Each worker is a small rayon
//! pool (`threads` threads) running its model's batcher loop on one of its
//! threads: candle's parallel kernels (softmax, large matrix multiplies) then
//! run on the worker itself and its pool, instead of handing every operation
//! to rayon's global pool and waiting for it. Compute runs on these threads
//! only, never on tokio's reactor threads.

use crate::core::registry::ServedModel;
use std::sync::Arc;

/// The running workers. Dropping this closes the models' queues: the workers
/// finish what is queued, then their threads exit.
pub struct Workers {
    models: Vec<Arc<ServedModel>>,
    _pools: Vec<rayon::ThreadPool>,
}

impl Workers {
    /// Starts `per_model` workers of `threads` threads for each of `models`.
    pub fn start<'a>(
        models: impl Iterator<Item = &'a Arc<ServedModel>>,
        per_model: usize,
        threads: usize,
    ) -> Result<Workers, rayon::ThreadPoolBuildError> {
        let models: Vec<Arc<ServedModel>> = models.cloned().collect();
        let mut pools = Vec::new();
        for model in &models {
            for index in 0..per_model.max(1) {
                let name = format!("compute-{}-{}-{index}", model.segment, model.version);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.max(1))
                    .thread_name(move |thread| format!("{name}.{thread}"))
                    .build()?;
                let model = model.clone();
                pool.spawn(move || model.batcher.work(&model.loaded, &model.stats));
                pools.push(pool);
            }
        }
        Ok(Workers { models, _pools: pools })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for model in &self.models {
            model.batcher.close();
        }
    }
}
