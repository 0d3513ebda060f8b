//! The bundled demo models (three networks and a LightGBM model of retail):
//! they separate fraud from legit on fresh synthetic rows scored through the
//! gRPC API, and `candela-train` reproduces the networks; a
//! wider model (pairwise feature products) trains and serves the same way.

mod common;

use candela_server::testing::{FEATURES, TestServer, demo_models, rows, settings};
use candela_server::train::synthetic::Segment;
use candela_server::train::training::{self, TrainConfig};
use common::wait_for;

#[tokio::test]
async fn every_demo_model_scores_auc_of_at_least_0_90_on_fresh_rows() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    // retail-gbt is a LightGBM model of retail's rows (models/train_trees.py).
    for (segment, data) in ["retail", "corporate", "sme", "retail-gbt"].map(|s| (s, s.trim_end_matches("-gbt"))) {
        let data = rows(data, 5000);
        let mut scores = Vec::with_capacity(data.rows());
        for chunk in data.values.chunks(1000 * FEATURES) {
            let response = client.batch_predict(segment, FEATURES, chunk.to_vec()).await.unwrap();
            scores.extend(response.predictions.iter().map(|p| p.probabilities[1]));
        }
        let auc = training::auc(&scores, &data.labels);
        println!("{segment}: AUC {auc:.4} on {} fresh rows", data.rows());
        assert!(auc >= 0.90, "{segment}: AUC {auc:.4} < 0.90");
    }
}

#[test]
fn the_auc_helper_is_right_on_known_cases() {
    assert_eq!(training::auc(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]), 1.0);
    assert_eq!(training::auc(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]), 0.0);
    assert_eq!(training::auc(&[0.5, 0.5, 0.5, 0.5], &[0, 1, 0, 1]), 0.5);
    assert_eq!(training::auc(&[0.1, 0.6, 0.4, 0.9], &[0, 0, 1, 1]), 0.75);
}

/// Retraining gives the committed weights. Training is seeded and single-path,
/// so on one machine it is bit-for-bit; across CPUs the SIMD kernels may round
/// differently, hence the small tolerance.
#[test]
fn training_reproduces_the_committed_models() {
    let out = tempfile::tempdir().unwrap();
    for segment in Segment::ALL {
        let trained = training::train(segment, &TrainConfig::default()).unwrap();
        let dir = out.path().join(segment.name());
        training::write(&trained, &dir).unwrap();
        let committed = demo_models().join(segment.name()).join("1");
        let ours = candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
        let theirs =
            candle_core::safetensors::load(committed.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
        let mut names: Vec<&String> = ours.keys().collect();
        names.sort();
        assert_eq!(names, {
            let mut n: Vec<&String> = theirs.keys().collect();
            n.sort();
            n
        });
        for name in names {
            let a = ours[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = theirs[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-4, "{}: `{name}` differs from the committed weights by {worst}", segment.name());
        }
        let committed_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(committed.join("model.json")).unwrap()).unwrap();
        let recorded = committed_json["provenance"]["metrics"]["held_out_auc"].as_f64().unwrap();
        assert!(
            (recorded - trained.held_out_auc).abs() < 1e-3,
            "{}: recorded AUC {recorded}, retrained {}",
            segment.name(),
            trained.held_out_auc
        );
    }
}

#[tokio::test]
async fn a_wider_model_trains_on_feature_products_and_serves() {
    let config =
        TrainConfig { features: 64, hidden: [32, 16], epochs: 3, train_rows: 10_000, ..TrainConfig::default() };
    let trained = training::train(Segment::Sme, &config).unwrap();
    let names = &trained.manifest.features;
    assert_eq!(names.len(), 64);
    assert_eq!(&names[..FEATURES], candela_server::train::synthetic::FEATURES.map(String::from).as_slice());
    assert!(names[FEATURES..].iter().all(|n| n.contains("_x_")), "{names:?}");
    let repo = tempfile::tempdir().unwrap();
    training::write(&trained, &repo.path().join("wide").join("1")).unwrap();

    let server = TestServer::start_with(settings(repo.path(), &["--max-rows", "3000"])).await;
    let mut client = common::client(&server).await;
    wait_for(&mut client, "", tonic_health::pb::health_check_response::ServingStatus::Serving).await;
    let data = training::fresh_rows(Segment::Sme, 3000).widen(64);
    let response = client.batch_predict("wide", 64, data.values.clone()).await.unwrap();
    let scores: Vec<f32> = response.predictions.iter().map(|p| p.probabilities[1]).collect();
    let auc = training::auc(&scores, &data.labels);
    assert!(auc >= 0.9, "64-feature model: AUC {auc} on fresh rows");
    let error = training::train(Segment::Sme, &TrainConfig { features: 500, ..config }).err().unwrap();
    assert!(error.to_string().contains("up to 465 with pairwise products"), "{error}");
}
