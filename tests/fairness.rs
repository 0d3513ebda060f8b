//! One client must not be able to lock others out or exhaust the server's
//! memory: open streams hold a --max-concurrent-requests slot only while a
//! message is being scored (idle StreamPredict streams and BatchPredictStream
//! answers nobody reads hold none), a stream that sends nothing is ended after
//! --stream-idle-seconds, bytes of incomplete request messages are bounded
//! server-wide (--max-pending-request-bytes), and an overloaded server refuses
//! a call before reading its body.

mod common;

use bytes::Bytes;
use candela_client::{ModelId, proto, stream_batch};
use candela_server::testing::{FEATURES, TestServer, rows};
use common::{grpc_prefix, raw_call, raw_connection, raw_status};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_unread_streams_never_lock_other_callers_out() {
    let server = TestServer::start(&["--max-concurrent-requests", "8"]).await;
    // One greedy client on two connections: 120 StreamPredict streams that
    // send nothing, and 100 BatchPredictStream answers it never reads.
    let mut held = Vec::new();
    let mut unread = Vec::new();
    for connection in 0..2 {
        let mut greedy = common::client(&server).await;
        for _ in 0..60 {
            let (sender, receiver) = tokio::sync::mpsc::channel::<proto::StreamPredictRequest>(1);
            let responses = greedy.stream_predict(ReceiverStream::new(receiver)).await.expect("a stream opens");
            held.push((sender, responses));
        }
        for _ in 0..50 {
            let chunks = greedy.batch_predict_stream("retail", FEATURES, rows("retail", 600).values).await;
            unread.push(chunks.unwrap_or_else(|status| panic!("connection {connection}: {status:?}")));
        }
    }
    // Everyone else is served, every time.
    let mut other = common::client(&server).await;
    let row = rows("retail", 1).values;
    for call in 0..50 {
        let answer = other.predict("retail", row.clone()).await;
        assert!(answer.is_ok(), "call {call} of another client refused: {:?}", answer.err());
    }
    // And the greedy streams still work when they do send.
    let (sender, responses) = &mut held[0];
    sender.send(stream_batch("late", &ModelId::latest("retail"), FEATURES, row)).await.unwrap();
    assert!(responses.message().await.unwrap().is_some());
}

#[tokio::test]
async fn a_stream_that_sends_nothing_is_ended_after_the_idle_timeout() {
    let server = TestServer::start(&["--stream-idle-seconds", "1"]).await;
    let mut client = common::client(&server).await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<proto::StreamPredictRequest>(1);
    let mut responses = client.stream_predict(ReceiverStream::new(receiver)).await.unwrap();
    // A stream that works is not idle.
    sender.send(stream_batch("a", &ModelId::latest("retail"), FEATURES, rows("retail", 1).values)).await.unwrap();
    assert!(responses.message().await.unwrap().is_some());
    let opened = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the server ends an idle stream")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("--stream-idle-seconds"), "{}", status.message());
    assert!(opened.elapsed() >= Duration::from_millis(900), "ended after {:?}", opened.elapsed());
    drop(sender);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_request_bytes_are_bounded_across_the_server() {
    let server = TestServer::start(&["--max-pending-request-bytes", "1000000"]).await;
    let mut connection = raw_connection(server.addr).await;
    // Two calls each declare a 600 kB message (tonic reserves that much for
    // each) and send half of it: together they would hold 1.2 MB of
    // incomplete messages, over the 1 MB budget.
    let mut calls = Vec::new();
    for _ in 0..2 {
        let mut call = raw_call(&mut connection, "/candela.v1.Inference/BatchPredict").await;
        let mut data = grpc_prefix(0, 600_000);
        data.resize(300_000, 0x0a);
        call.body.send_data(Bytes::from(data), false).unwrap();
        calls.push(call);
    }
    let mut answered = Vec::new();
    let mut pending = Vec::new();
    for call in calls {
        let mut response = Box::pin(raw_status(call.response));
        match tokio::time::timeout(Duration::from_secs(5), &mut response).await {
            Ok(status) => answered.push(status),
            Err(_) => pending.push((call.body, response)),
        }
    }
    assert_eq!(answered.len(), 1, "exactly the call that overdrew the budget is refused: {answered:?}");
    let (code, message) = &answered[0];
    assert_eq!(*code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("--max-pending-request-bytes"), "{message}");

    // The held bytes come back when the holder goes: another such message fits.
    drop(pending);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut call = raw_call(&mut connection, "/candela.v1.Inference/BatchPredict").await;
    let mut data = grpc_prefix(0, 600_000);
    data.resize(300_000, 0x0a);
    call.body.send_data(Bytes::from(data), false).unwrap();
    let mut response = Box::pin(raw_status(call.response));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut response).await.is_err(),
        "the budget was released: this call is still receiving"
    );
    // Complete messages never count: ordinary calls carry on.
    let mut client = common::client(&server).await;
    assert!(client.batch_predict("retail", FEATURES, rows("retail", 1000).values).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_server_refuses_a_call_before_its_body_arrives() {
    let (server, holders) = common::server_held_full(2, Duration::from_secs(3)).await;
    let mut connection = raw_connection(server.addr).await;
    for path in [
        "/candela.v1.Inference/BatchPredict",
        "/candela.v1.Inference/Predict",
        "/inference.GRPCInferenceService/ModelInfer",
    ] {
        // Headers only: the body (an 8 MB batch, say) is never sent.
        let call = raw_call(&mut connection, path).await;
        let (code, message) = tokio::time::timeout(Duration::from_secs(2), raw_status(call.response))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer without the body"));
        assert_eq!(code, Code::ResourceExhausted, "{path}: {message}");
        assert!(message.contains("limit of 2 concurrent calls"), "{message}");
        drop(call.body);
    }
    for holder in holders {
        assert!(holder.await.unwrap().is_ok());
    }
}
