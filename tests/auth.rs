//! API keys: inference calls need a valid `authorization: Bearer <key>`;
//! health (and reflection, unless --auth-reflection) stay open; a wrong or
//! missing key says nothing about what exists; keys rotate by editing the
//! file, with no restart.

mod common;

use candela::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use candela_server::testing::{TestServer, demo_models, eventually, rows, settings};
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const KEY_A: &str = "ka-3f9d2c71e5b84a06";
const KEY_B: &str = "kb-81c0e4a77d2f3b95";
const KEY_C: &str = "kc-5e27b9d04c1a8f63";

async fn start(keys_file: &std::path::Path, extra: &[&str]) -> TestServer {
    let mut args = vec!["--api-keys-file", keys_file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = TestServer::start_with(settings(&demo_models(), &args)).await;
    common::wait_for(&mut common::client(&server).await, "", ServingStatus::Serving).await;
    server
}

fn write_keys(path: &std::path::Path, keys: &[&str]) {
    let mut text = String::from("# Candela API keys: one per line\n\n");
    for key in keys {
        text.push_str(key);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn inference_needs_a_key_and_a_wrong_one_reveals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    write_keys(&keys, &[KEY_A, KEY_B]);
    let server = start(&keys, &[]).await;
    let row = rows("retail", 1).values;

    let mut anonymous = common::client(&server).await;
    let status = anonymous.predict("retail", row.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("send metadata `authorization: Bearer <api key>`"), "{}", status.message());
    // An unknown segment without a key is UNAUTHENTICATED too, not NOT_FOUND.
    let status = anonymous.predict("no-such-segment", row.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("segment"), "{}", status.message());
    assert_eq!(anonymous.list_models().await.unwrap_err().code(), Code::Unauthenticated);

    let mut wrong = common::client(&server).await.with_api_key("ka-3f9d2c71e5b84a0").unwrap();
    let status = wrong.predict("retail", row.clone()).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "invalid API key"));
    assert!(!status.message().contains(KEY_A));

    for key in [KEY_A, KEY_B] {
        let mut client = common::client(&server).await.with_api_key(key).unwrap();
        assert!(client.predict("retail", row.clone()).await.is_ok());
    }

    // Health stays open for probes, and the Open Inference Protocol is guarded too.
    assert_eq!(anonymous.health("").await.unwrap(), ServingStatus::Serving);
    let mut oip = GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap();
    let status = oip.server_metadata(oip::ServerMetadataRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(oip::ServerMetadataRequest {});
    request.metadata_mut().insert("authorization", format!("Bearer {KEY_B}").parse().unwrap());
    assert!(oip.server_metadata(request).await.is_ok());
    let mut request = tonic::Request::new(oip::ServerMetadataRequest {});
    request.metadata_mut().insert("authorization", KEY_B.parse().unwrap());
    let status = oip.server_metadata(request).await.unwrap_err();
    assert!(status.message().contains("malformed"), "{}", status.message());
}

#[tokio::test]
async fn keys_rotate_by_editing_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    write_keys(&keys, &[KEY_A]);
    let server = start(&keys, &[]).await;
    let row = rows("sme", 1).values;
    let mut old = common::client(&server).await.with_api_key(KEY_A).unwrap();
    let mut new = common::client(&server).await.with_api_key(KEY_C).unwrap();
    assert!(old.predict("sme", row.clone()).await.is_ok());
    assert_eq!(new.predict("sme", row.clone()).await.unwrap_err().code(), Code::Unauthenticated);

    // Step 1: both keys valid while callers move over.
    write_keys(&keys, &[KEY_A, KEY_C]);
    let accepted = async || new.predict("sme", row.clone()).await.is_ok();
    eventually(Duration::from_secs(15), "the new key accepted", accepted).await;
    assert!(old.predict("sme", row.clone()).await.is_ok(), "the old key stays valid during the rotation");

    // Step 2: the old key goes.
    write_keys(&keys, &[KEY_C]);
    let revoked = async || old.predict("sme", row.clone()).await.is_err();
    eventually(Duration::from_secs(15), "the old key revoked", revoked).await;
    assert!(new.predict("sme", row.clone()).await.is_ok());

    // A broken edit (no keys left) keeps the last good keys instead of opening up or locking out.
    write_keys(&keys, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(new.predict("sme", row.clone()).await.is_ok());
    assert_eq!(common::client(&server).await.predict("sme", row).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn reflection_is_open_unless_asked_to_be_guarded() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    write_keys(&keys, &[KEY_A]);
    let list = || {
        futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let open = start(&keys, &[]).await;
    let channel =
        |url: String| async move { tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap() };
    let mut reflection = ServerReflectionClient::new(channel(open.url.clone()).await);
    assert!(reflection.server_reflection_info(list()).await.is_ok());

    let guarded = start(&keys, &["--auth-reflection"]).await;
    let mut reflection = ServerReflectionClient::new(channel(guarded.url.clone()).await);
    let status = reflection.server_reflection_info(list()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(list());
    request.metadata_mut().insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
    assert!(reflection.server_reflection_info(request).await.is_ok());
}

#[tokio::test]
async fn a_missing_or_empty_keys_file_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let error = TestServer::start_with(settings(&demo_models(), &["--api-keys-file", missing.to_str().unwrap()]))
        .await
        .join()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("absent: cannot read"), "{error}");
    let empty = dir.path().join("empty");
    write_keys(&empty, &[]);
    let error = TestServer::start_with(settings(&demo_models(), &["--api-keys-file", empty.to_str().unwrap()]))
        .await
        .join()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("holds no key"), "{error}");
}

#[tokio::test]
async fn feedback_takes_an_inference_key_and_no_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, admin) = (dir.path().join("keys"), dir.path().join("admin"));
    write_keys(&keys, &[KEY_A]);
    write_keys(&admin, &[KEY_C]);
    let server = start(&keys, &["--admin-keys-file", admin.to_str().unwrap()]).await;
    let mut client = common::client(&server).await.with_api_key(KEY_A).unwrap();
    let answer = client.predict("retail", rows("retail", 1).values).await.unwrap();
    let outcome = candela_client::proto::Outcome { request_id: answer.request_id, row: 0, label: "fraud".into() };

    let mut anonymous = common::client(&server).await;
    let status = anonymous.feedback(vec![outcome.clone()]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The inference key is enough: no admin key is needed.
    assert_eq!(client.feedback(vec![outcome]).await.unwrap().matched, 1);
}
