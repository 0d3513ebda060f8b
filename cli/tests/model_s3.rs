//! `candela model publish` into an S3-compatible store (moto): two
//! versions uploaded (files first, model.json last), then a server reading
//! the bucket serves the newest as the library answered. A test binary of
//! its own: the server in this process reads the store's settings from the
//! environment, which it sets.

mod common;

use candela_client::Client;
use candela_server::testing::{Moto, TestServer, settings};
use common::{candela, first_row, text, trained};
use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn publish_uploads_into_an_s3_prefix_that_a_server_then_serves() {
    let moto = Moto::start();
    moto.s3(&["create", "models"]);
    let work = tempfile::tempdir().unwrap();
    let (file, _) = trained(work.path());
    let init = candela(&["model", "init", file.to_str().unwrap(), "--labels", "legit,fraud"], &[]).await;
    assert!(init.status.success(), "{}", text(&init));
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let dir = file.parent().unwrap().to_str().unwrap();
    for version in [1, 2] {
        let published = candela(&["model", "publish", dir, "s3://models/prod", "--segment", "fraud"], &env).await;
        assert!(published.status.success(), "{}", text(&published));
        assert!(text(&published).contains(&format!("s3://models/prod/fraud/{version}")), "{}", text(&published));
    }
    // The server reads the bucket with the same settings (this test binary's only test that does).
    for (key, value) in env {
        // SAFETY: this binary's only test, and nothing else runs yet.
        unsafe { std::env::set_var(key, value) };
    }
    let cache = work.path().join("cache");
    let settings = settings(Path::new("s3://models/prod"), &["--model-cache", cache.to_str().unwrap()]);
    let server = TestServer::start_with(settings).await;
    let mut client = Client::connect(&server.url, Duration::from_secs(5)).await.unwrap();
    let (row, want) = first_row(&mut client, "fraud").await;
    let answer = client.predict("fraud", row).await.unwrap();
    assert_eq!(answer.model.unwrap().version, 2);
    assert!((f64::from(answer.prediction.unwrap().probabilities[1]) - want).abs() <= 1e-5);
    server.stop().await.unwrap();
}
