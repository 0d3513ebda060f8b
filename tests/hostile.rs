//! Hostile and malformed input: garbage and truncated protobuf, shapes that
//! declare huge tensors with tiny payloads, overflowing and negative shapes,
//! odd segment names, and a storm of streams opened and dropped. Each gets
//! a precise error or is shrugged off; nothing crashes, leaks or allocates
//! what a caller merely declared.

mod common;

use bytes::{Buf, BufMut, Bytes};
use candela::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use candela_client::{ModelId, stream_batch};
use candela_server::testing::{FEATURES, TestServer, eventually, rows};
use std::time::Duration;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends message bodies as given bytes, so tests can put anything on the wire.
#[derive(Default, Clone)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn raw_call(url: &str, path: &str, body: Vec<u8>) -> Result<Bytes, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = path.parse().unwrap();
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, RawCodec).await.map(|r| r.into_inner())
}

/// `candela_requests_total` for `method` and `code`, summed over the other labels.
async fn requests_counted(metrics: &str, method: &str, code: &str) -> f64 {
    let body = http_get(metrics).await;
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "candela_requests_total")
        .filter(|s| s.labels.get("method") == Some(method) && s.labels.get("code") == Some(code))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// A plain HTTP/1.1 GET over loopback.
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, path) = url.trim_start_matches("http://").split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tcp.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[tokio::test]
async fn garbage_and_truncated_protobuf_get_invalid_argument_are_counted_and_the_server_carries_on() {
    let address = common::free_port();
    let metrics = format!("http://{address}/metrics");
    let server = TestServer::start(&["--metrics-listen", &address]).await;
    let valid = prost::Message::encode_to_vec(&candela_client::proto::PredictRequest {
        explain: 0,
        segment: "retail".into(),
        version: 0,
        features: rows("retail", 1).values,
        text: Vec::new(),
    });
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff; 64],                           // invalid wire types
        valid[..valid.len() / 2].to_vec(),        // truncated mid-field
        vec![0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f], // a length-delimited field claiming 4 GiB
        (0..4096).map(|i| (i * 7919 % 251) as u8).collect(),
        vec![0x0a, 0x02, 0xff, 0xfe], // field 1 (a string: segment, model_name) that is not UTF-8
    ];
    for path in [
        "/candela.v1.Inference/Predict",
        "/candela.v1.Inference/BatchPredict",
        "/inference.GRPCInferenceService/ModelInfer",
    ] {
        let method = path.rsplit('/').next().unwrap();
        let before = requests_counted(&metrics, method, "INVALID_ARGUMENT").await;
        for body in &bodies {
            let status = raw_call(&server.url, path, body.clone()).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
            assert!(status.message().contains("could not be decoded"), "{path}: {status:?}");
        }
        let after = requests_counted(&metrics, method, "INVALID_ARGUMENT").await;
        assert_eq!(after - before, bodies.len() as f64, "{path}: undecodable calls counted");
    }
    // Bad framing: a compression flag that is neither 0 nor 1, and a body
    // that ends inside its message.
    let mut connection = common::raw_connection(server.addr).await;
    for (flag, declared, sent) in [(2u8, 10u32, 10usize), (0xff, 10, 10), (0, 100, 10)] {
        let mut call = common::raw_call(&mut connection, "/candela.v1.Inference/Predict").await;
        let mut data = common::grpc_prefix(flag, declared);
        data.resize(5 + sent, 0);
        call.body.send_data(Bytes::from(data), true).unwrap();
        let (code, message) = common::raw_status(call.response).await;
        assert_eq!(code, Code::InvalidArgument, "flag {flag}: {message}");
        assert!(message.contains("could not be decoded"), "{message}");
    }
    // Undecodable messages inside a stream end it with INVALID_ARGUMENT too.
    let mut call = common::raw_call(&mut connection, "/candela.v1.Inference/StreamPredict").await;
    let mut data = common::grpc_prefix(0, 64);
    data.extend([0xff; 64]);
    call.body.send_data(Bytes::from(data), true).unwrap();
    let (code, message) = common::raw_status(call.response).await;
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(raw_call(&server.url, "/candela.v1.Inference/Predict", valid).await.is_ok(), "the server carries on");
}

#[tokio::test]
async fn declared_shapes_never_size_an_allocation() {
    let server = TestServer::start(&[]).await;
    let mut client = GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap();
    let request = |shape: Vec<i64>, raw: Option<Vec<u8>>| {
        let contents = oip::InferTensorContents { fp32_contents: vec![0.5; FEATURES], ..Default::default() };
        oip::ModelInferRequest {
            model_name: "retail".into(),
            inputs: vec![oip::model_infer_request::InferInputTensor {
                name: "features".into(),
                datatype: "FP32".into(),
                shape,
                parameters: Default::default(),
                contents: if raw.is_some() { None } else { Some(contents) },
            }],
            raw_input_contents: raw.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    };
    let cases = [
        (request(vec![1_000_000_000_000, 30], None), "needs 30000000000000"),
        (request(vec![1_000_000_000_000, 30], Some(vec![0; 120])), "has 120 bytes"),
        (request(vec![i64::MAX, 30], None), "too large"),
        (request(vec![4_611_686_018_427_387_904, 4], Some(vec![0; 8])), "too large"),
        (request(vec![-1, 30], None), "cannot be negative"),
        (request(vec![1, -30], None), "cannot be negative"),
        (request(vec![1, 30, 1], None), "is [1, 30, 1]"),
    ];
    for (request, message) in cases {
        let shape = request.inputs[0].shape.clone();
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{shape:?}: {status:?}");
        assert!(status.message().contains(message), "{shape:?}: `{}` lacks `{message}`", status.message());
    }
}

#[tokio::test]
async fn odd_segment_names_are_just_unknown() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let row = rows("retail", 1).values;
    for name in ["零售", "retail\u{0}", "../retail", "retail\n", &"x".repeat(10_000), "RETAIL", " retail"] {
        let status = client.predict(name, row.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{name:?}: {status:?}");
        // A caller's name is echoed only as a short prefix, so the status
        // stays far below gRPC clients' metadata limits (8 KiB in C-core).
        assert!(status.message().len() < 300, "{} bytes echoed: {}", status.message().len(), status.message());
    }
    let status = client.predict("y".repeat(8_000).as_str(), row.clone()).await.unwrap_err();
    assert!(status.message().contains("(8000 bytes in all)"), "{}", status.message());
    let mut oip = GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap();
    let long = "z".repeat(8_000);
    for request in [
        oip::ModelInferRequest { model_name: long.clone(), ..Default::default() },
        oip::ModelInferRequest { model_name: "retail".into(), model_version: long.clone(), ..Default::default() },
    ] {
        let status = oip.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().len() < 300, "{}", status.message());
    }
    let status = client.predict(ModelId::pinned("retail", u64::MAX), row).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// 10,000 streams opened and dropped, over 10 connections, against a call
/// limit of 64: refusals are fine, but no permit may leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_streams_opened_and_dropped_leaks_nothing() {
    let server = TestServer::start(&["--max-concurrent-requests", "64", "--max-concurrent-streams", "1000"]).await;
    let model = ModelId::latest("sme");
    let row = rows("sme", 1).values;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = common::client(&server).await;
        for i in 0..1000 {
            let (mut client, model, row) = (client.clone(), model.clone(), row.clone());
            tasks.push(tokio::spawn(async move {
                let batches = futures::stream::iter([stream_batch(i.to_string(), &model, FEATURES, row)]);
                let opened = client.stream_predict(batches).await;
                // Read at most one answer, then drop the stream whatever happened.
                if let Ok(mut responses) = opened {
                    let _ = tokio::time::timeout(Duration::from_millis(50), responses.message()).await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every permit came back: 64 streams can be open at once again.
    let mut client = common::client(&server).await;
    let all_open = async || {
        let mut held = Vec::new();
        for _ in 0..64 {
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            match client.stream_predict(tokio_stream::wrappers::ReceiverStream::new(receiver)).await {
                Ok(stream) => held.push((sender, stream)),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted);
                    return false;
                }
            }
        }
        true
    };
    eventually(Duration::from_secs(20), "64 streams open at once after the storm (no permit leaked)", all_open).await;
    assert!(client.predict("sme", rows("sme", 1).values).await.is_ok());
}
