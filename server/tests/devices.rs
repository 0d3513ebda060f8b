//! The same model on another device or in another dtype gives the same
//! answers, within what the arithmetic allows. Runs on the device named by
//! `CANDELA_TEST_DEVICE` (`cpu` by default; `cuda:0` on a GPU host, from a
//! `--features cuda` build, as bench/gpu-check.sh does), over the demo models
//! (`CANDELA_DEMO_MODELS` where the binary runs away from its checkout) and,
//! when `CANDELA_LARGE_MODEL` names one, a larger model directory:
//! - f16 and bf16 against f32 on fresh demo rows: the differences are printed
//!   (bench/RESULTS.md records them) and bounded;
//! - with the `cuda` feature, the CPU and the GPU scoring the same rows in
//!   passes of 1, 64 and 1000 rows agree within 1e-4.

use candela_server::model::device::DeviceSpec;
use candela_server::model::manifest::{DTypeName, Manifest};
use candela_server::model::repository;
use candela_server::model::scorer::Scorer;
use candela_server::train::synthetic::Segment;
use candela_server::train::training;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Fresh rows per model: never seen in training.
const ROWS: usize = 10_000;

fn test_device() -> Device {
    let spec = std::env::var("CANDELA_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let spec: DeviceSpec = spec.parse().unwrap();
    candela_server::model::device::open(spec).expect("CANDELA_TEST_DEVICE names a device this build can open").0
}

/// Each model directory under test, with the segment whose data it scores.
fn models() -> Vec<(PathBuf, Segment)> {
    let demo = std::env::var_os("CANDELA_DEMO_MODELS").map_or_else(candela_server::testing::demo_models, PathBuf::from);
    let mut models: Vec<(PathBuf, Segment)> =
        Segment::ALL.into_iter().map(|segment| (demo.join(segment.name()).join("1"), segment)).collect();
    if let Ok(large) = std::env::var("CANDELA_LARGE_MODEL") {
        // bench/gpu-check.sh trains it on retail's data.
        models.push((PathBuf::from(large), Segment::Retail));
    }
    models
}

/// The model in `dir` built for `device` in `dtype`, whatever its model.json says.
fn network(dir: &Path, dtype: DTypeName, device: &Device) -> Box<dyn Scorer> {
    let manifest = repository::read_manifest(&dir.join(candela_server::model::MANIFEST_FILE)).unwrap();
    repository::build_scorer(dir, &mut Manifest { dtype, ..manifest }, device, repository::DEFAULT_MAX_MODEL_BYTES)
        .unwrap_or_else(|e| panic!("{}: {e}", label(dir)))
}

/// Fresh rows of `segment`, widened to what `network` reads, with labels.
fn rows(network: &dyn Scorer, segment: Segment) -> (Vec<f32>, Vec<u32>) {
    let data = training::fresh_rows(segment, ROWS).widen(network.inputs());
    (data.values, data.labels)
}

/// Scores `values` in passes of at most `pass` rows.
fn score(network: &dyn Scorer, values: &[f32], pass: usize) -> Vec<f32> {
    values.chunks(pass * network.inputs()).flat_map(|chunk| network.forward(chunk).unwrap().probabilities).collect()
}

/// How the tables name a model directory: `<name>/<version>`.
fn label(dir: &Path) -> String {
    let name = |p: Option<&Path>| p.and_then(Path::file_name).map_or("?".into(), |n| n.to_string_lossy().into_owned());
    format!("{}/{}", name(dir.parent()), name(Some(dir)))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn reduced_precision_stays_close_to_f32_on_the_demo_data() {
    let device = test_device();
    println!("dtype accuracy against f32 on {device:?}, {ROWS} fresh rows per model, passes of 1000 rows");
    println!("| model | dtype | max abs Δp | mean abs Δp | decisions changed | AUC f32 → dtype |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (dir, segment) in models() {
        let reference = network(&dir, DTypeName::F32, &device);
        let (values, labels) = rows(reference.as_ref(), segment);
        let exact = score(reference.as_ref(), &values, 1000);
        let fraud = |p: &[f32]| p.chunks(2).map(|row| row[1]).collect::<Vec<f32>>();
        let auc_f32 = training::auc(&fraud(&exact), &labels);
        // f16 keeps 11 significant bits, bf16 8: their bounds differ accordingly.
        for (dtype, max_bound, changed_bound) in [(DTypeName::F16, 1e-2, 0.002), (DTypeName::Bf16, 5e-2, 0.01)] {
            let reduced = score(network(&dir, dtype, &device).as_ref(), &values, 1000);
            let max = max_difference(&reduced, &exact);
            let mean = reduced.iter().zip(&exact).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / exact.len() as f64;
            let changed = fraud(&reduced).iter().zip(fraud(&exact)).filter(|(a, b)| (**a > 0.5) != (*b > 0.5)).count();
            let auc = training::auc(&fraud(&reduced), &labels);
            println!(
                "| {} | {} | {max:.2e} | {mean:.2e} | {changed} of {ROWS} | {auc_f32:.4} → {auc:.4} |",
                label(&dir),
                dtype.as_str()
            );
            assert!(max < max_bound, "{}: {} differs from f32 by up to {max}", label(&dir), dtype.as_str());
            assert!(
                (changed as f64) < changed_bound * ROWS as f64,
                "{}: {} changes {changed} decisions",
                label(&dir),
                dtype.as_str()
            );
            assert!((auc - auc_f32).abs() < 2e-3, "{}: {} AUC {auc} vs {auc_f32}", label(&dir), dtype.as_str());
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn the_gpu_scores_what_the_cpu_scores() {
    let gpu = Device::new_cuda(0).expect("this test needs a usable GPU (cuda:0): run it on the GPU host");
    for (dir, segment) in models() {
        let cpu_network = network(&dir, DTypeName::F32, &Device::Cpu);
        let gpu_network = network(&dir, DTypeName::F32, &gpu);
        let (values, _) = rows(cpu_network.as_ref(), segment);
        let expected = score(cpu_network.as_ref(), &values, 1000);
        for pass in [1, 64, 1000] {
            // Single-row passes over the first 500 rows keep the test quick.
            let take = if pass == 1 { 500 } else { ROWS };
            let got = score(gpu_network.as_ref(), &values[..take * cpu_network.inputs()], pass);
            let difference = max_difference(&got, &expected[..got.len()]);
            println!("{}: cuda vs cpu, passes of {pass} rows: max abs Δp {difference:.2e}", label(&dir));
            assert!(difference <= 1e-4, "{}: passes of {pass}: cuda differs from cpu by {difference}", label(&dir));
        }
    }
}
