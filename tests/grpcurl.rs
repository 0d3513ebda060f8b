//! The real grpcurl (installed by `scripts/install-test-tools`) against the
//! real server: the commands of the README and docs/api.md, through reflection only, no proto files.

mod common;

use candela_server::testing::{TestServer, rows, tool};
use std::process::Command;

/// Runs grpcurl with `args` off the runtime (the server shares it); returns
/// (success, stdout, stderr).
async fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(tool("grpcurl"));
    command.args(args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("grpcurl runs")).await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_predict_with_json() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr.to_string();
    let (ok, out, err) = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(ok, "{err}");
    for service in ["candela.v1.Inference", "inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(out.lines().any(|l| l == service), "{service} missing from:\n{out}");
    }

    let (ok, out, err) = grpcurl(&["-plaintext", &addr, "describe", "candela.v1.Inference"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("rpc StreamPredict ( stream .candela.v1.StreamPredictRequest ) returns ( stream .candela.v1.StreamPredictResponse );"), "{out}");

    let (ok, out, err) = grpcurl(&["-plaintext", &addr, "describe", "candela.v1.PredictRequest"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("repeated float features = 3;"), "{out}");

    let features: Vec<String> = rows("retail", 1).values.iter().map(|v| v.to_string()).collect();
    let body = format!(r#"{{"segment": "retail", "features": [{}]}}"#, features.join(", "));
    let (ok, out, err) =
        grpcurl(&["-plaintext", "-H", "x-request-id: grpcurl-1", "-d", &body, &addr, "candela.v1.Inference/Predict"])
            .await;
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["model"]["segment"], "retail");
    assert_eq!(json["requestId"], "grpcurl-1");
    let probabilities = json["prediction"]["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), 2);
    // The same row through the Rust client gives the same answer.
    let mut client = common::client(&server).await;
    let expected = client.predict("retail", rows("retail", 1).values).await.unwrap().prediction.unwrap();
    for (got, want) in probabilities.iter().zip(&expected.probabilities) {
        assert!((got.as_f64().unwrap() as f32 - want).abs() < 1e-6);
    }
}

#[tokio::test]
async fn grpcurl_checks_health_and_sees_error_details() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr.to_string();
    for service in ["", "candela.v1.Inference", "inference.GRPCInferenceService"] {
        let body = format!(r#"{{"service": "{service}"}}"#);
        let (ok, out, err) = grpcurl(&["-plaintext", "-d", &body, &addr, "grpc.health.v1.Health/Check"]).await;
        assert!(ok, "{err}");
        assert!(out.contains(r#""status": "SERVING""#), "{out}");
    }
    let (ok, _, err) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"segment": "retail", "features": [1, 2]}"#,
        &addr,
        "candela.v1.Inference/Predict",
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("Code: InvalidArgument"), "{err}");
    assert!(err.contains("type.googleapis.com/google.rpc.BadRequest"), "{err}");
    assert!(err.contains(r#""field":"features""#), "BadRequest decoded through reflection: {err}");
    let (ok, _, err) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"segment": "wholesale", "features": [1]}"#,
        &addr,
        "candela.v1.Inference/Predict",
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("Code: NotFound"), "{err}");
}
