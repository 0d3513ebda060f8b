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
    // Two calls each declare a 3 MB message and send 300 kB of it, which
    // tonic's doubling buffer holds in 512 KiB: together they would hold
    // 1 MiB of incomplete messages, over the 1 MB budget.
    let mut calls = Vec::new();
    for _ in 0..2 {
        let mut call = raw_call(&mut connection, "/candela.v1.Inference/BatchPredict").await;
        let mut data = grpc_prefix(0, 3_000_000);
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

    // The held bytes come back when the holder goes: another 300 kB fits.
    drop(pending);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut call = raw_call(&mut connection, "/candela.v1.Inference/BatchPredict").await;
    let mut data = grpc_prefix(0, 3_000_000);
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

/// The resident memory of this process (the in-process server's), in bytes.
fn resident_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_one_byte_short_stay_within_the_documented_worst_case() {
    const BUDGET: f64 = 32.0 * 1024.0 * 1024.0;
    const CONNECTIONS: usize = 4;
    let server =
        TestServer::start(&["--max-pending-request-bytes", "33554432", "--max-message-bytes", "8388608"]).await;
    // Warm the server's paths, so what follows measures held messages only.
    let mut client = common::client(&server).await;
    client.batch_predict("retail", FEATURES, rows("retail", 1000).values).await.unwrap();
    let before = resident_bytes();
    // Each call declares a 4.2 MB message and sends all of it but one byte
    // (one shared buffer on the client's side, so only the server's memory grows).
    let length = 4_200_000;
    let mut body = grpc_prefix(0, length as u32);
    body.resize(length + 5 - 1, 0x0a);
    let body = Bytes::from(body);
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut connection = raw_connection(server.addr).await;
        for _ in 0..5 {
            let mut call = raw_call(&mut connection, "/candela.v1.Inference/BatchPredict").await;
            call.body.reserve_capacity(body.len());
            call.body.send_data(body.clone(), false).unwrap();
            held.push(call);
        }
        held.push(raw_call(&mut connection, "/candela.v1.Inference/BatchPredict").await);
    }
    // Every byte that can arrive has arrived: the refused calls are answered, the others wait for their last byte.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = resident_bytes() - before;
    let worst = BUDGET + CONNECTIONS as f64 * 1024.0 * 1024.0;
    println!(
        "20 messages one byte short grew the server by {:.1} MiB (documented worst case {:.1} MiB)",
        grown / 1048576.0,
        worst / 1048576.0
    );
    assert!(grown <= 1.25 * worst, "grew {:.1} MiB, over 1.25 × {:.1} MiB", grown / 1048576.0, worst / 1048576.0);
    drop(held);
}
