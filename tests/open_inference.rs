//! The Open Inference Protocol service through its generated client: every
//! RPC, every input-validation error, dtype conversion, raw and typed
//! contents, requested outputs, statistics, and health. The real Triton tools
//! are exercised in open_inference_peers.rs.

mod common;

use candela::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use candela_server::testing::{FEATURES, TestServer, eventually, rows};
use futures::StreamExt;
use oip::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

async fn client(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap()
}

fn input(datatype: &str, shape: Vec<i64>, contents: Option<oip::InferTensorContents>) -> InferInputTensor {
    InferInputTensor {
        name: "features".into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents,
    }
}

fn typed_request(model: &str, values: &[f32]) -> oip::ModelInferRequest {
    let n = (values.len() / FEATURES) as i64;
    let contents = oip::InferTensorContents { fp32_contents: values.to_vec(), ..Default::default() };
    oip::ModelInferRequest {
        model_name: model.into(),
        id: "t".into(),
        inputs: vec![input("FP32", vec![n, FEATURES as i64], Some(contents))],
        ..Default::default()
    }
}

fn raw_request(model: &str, datatype: &str, rows: i64, bytes: Vec<u8>) -> oip::ModelInferRequest {
    oip::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input(datatype, vec![rows, FEATURES as i64], None)],
        raw_input_contents: vec![bytes.into()],
        ..Default::default()
    }
}

fn probabilities(response: &oip::ModelInferResponse) -> Vec<f32> {
    match response.raw_output_contents.first() {
        Some(raw) => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        None => response.outputs[0].contents.as_ref().unwrap().fp32_contents.clone(),
    }
}

fn first_violation(status: &tonic::Status) -> String {
    status.get_details_bad_request().expect("BadRequest details").field_violations[0].field.clone()
}

#[tokio::test]
async fn metadata_config_readiness_and_index_describe_the_repository() {
    let server = TestServer::start(&[]).await;
    let mut oip = client(&server).await;
    assert!(oip.server_live(oip::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(oip.server_ready(oip::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = oip.model_ready(oip::ModelReadyRequest { name: "sme".into(), version: "1".into() }).await.unwrap();
    assert!(ready.into_inner().ready);
    let missing =
        oip.model_ready(oip::ModelReadyRequest { name: "sme".into(), version: "9".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let server_metadata = oip.server_metadata(oip::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(server_metadata.name, "candela");
    assert_eq!(server_metadata.extensions, ["classification", "model_configuration", "model_repository", "statistics"]);

    let metadata =
        oip.model_metadata(oip::ModelMetadataRequest { name: "retail".into(), version: String::new() }).await;
    let metadata = metadata.unwrap().into_inner();
    assert_eq!((metadata.name.as_str(), metadata.platform.as_str()), ("retail", "candela"));
    assert_eq!(metadata.versions, ["1"]);
    let shapes: Vec<(&str, &str, &[i64])> = metadata
        .inputs
        .iter()
        .chain(&metadata.outputs)
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("features", "FP32", &[-1, 30][..]),
            ("probabilities", "FP32", &[-1, 2][..]),
            ("prediction", "INT64", &[-1, 1][..])
        ]
    );

    let config = oip.model_config(oip::ModelConfigRequest { name: "retail".into(), version: String::new() }).await;
    let config = config.unwrap().into_inner().config.unwrap();
    assert_eq!(config.max_batch_size, 1000);
    assert_eq!(config.input[0].dims, [30]);
    assert_eq!(config.input[0].data_type, oip::DataType::TypeFp32 as i32);
    assert_eq!(config.output[1].data_type, oip::DataType::TypeInt64 as i32);
    let batching = config.dynamic_batching.expect("dynamic batching is on by default and advertised");
    assert_eq!(batching.max_queue_delay_microseconds, 0, "greedy by default: no added delay");
    assert!(batching.preserve_ordering);

    let index = oip.repository_index(oip::RepositoryIndexRequest::default()).await.unwrap().into_inner();
    let entries: Vec<(String, String, String)> =
        index.models.into_iter().map(|m| (m.name, m.version, m.state)).collect();
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|(_, v, s)| v == "1" && s == "READY"), "{entries:?}");

    // Repository control is off without --admin-keys-file (tests/live_repository.rs covers it on).
    let load = oip.repository_model_load(oip::RepositoryModelLoadRequest::default()).await.unwrap_err();
    assert_eq!(load.code(), Code::PermissionDenied);
    assert!(load.message().contains("--admin-keys-file"), "{load:?}");
    let unload = oip.repository_model_unload(oip::RepositoryModelUnloadRequest::default()).await.unwrap_err();
    assert_eq!(unload.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn infer_equals_batch_predict_typed_raw_and_in_every_float_type() {
    let server = TestServer::start(&[]).await;
    let mut oip = client(&server).await;
    let data = rows("corporate", 20);
    let expected: Vec<f32> = common::client(&server)
        .await
        .batch_predict("corporate", FEATURES, data.values.clone())
        .await
        .unwrap()
        .predictions
        .iter()
        .flat_map(|p| p.probabilities.clone())
        .collect();

    let typed = oip.model_infer(typed_request("corporate", &data.values)).await.unwrap().into_inner();
    assert_eq!((typed.model_name.as_str(), typed.model_version.as_str(), typed.id.as_str()), ("corporate", "1", "t"));
    assert!(typed.raw_output_contents.is_empty(), "typed in, typed out");
    assert_eq!(probabilities(&typed), expected);
    let classes = &typed.outputs[1].contents.as_ref().unwrap().int64_contents;
    assert_eq!(typed.outputs[1].shape, [20, 1]);
    assert_eq!(classes.len(), 20);

    let f32_bytes = data.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let raw = oip.model_infer(raw_request("corporate", "FP32", 20, f32_bytes)).await.unwrap().into_inner();
    assert_eq!(raw.raw_output_contents.len(), 2, "raw in, raw out");
    assert!(raw.outputs.iter().all(|o| o.contents.is_none()));
    assert_eq!(probabilities(&raw), expected);
    let raw_classes: Vec<i64> =
        raw.raw_output_contents[1].chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(&raw_classes, classes);

    let f64_bytes = data.values.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect();
    let wide = oip.model_infer(raw_request("corporate", "FP64", 20, f64_bytes)).await.unwrap().into_inner();
    assert_eq!(probabilities(&wide), expected, "f32 values survive a trip through f64 exactly");
    let mut typed64 = typed_request("corporate", &[]);
    typed64.inputs[0] = input(
        "FP64",
        vec![20, 30],
        Some(oip::InferTensorContents {
            fp64_contents: data.values.iter().map(|v| *v as f64).collect(),
            ..Default::default()
        }),
    );
    assert_eq!(probabilities(&oip.model_infer(typed64).await.unwrap().into_inner()), expected);

    for datatype in ["FP16", "BF16"] {
        let bytes = data
            .values
            .iter()
            .flat_map(|v| {
                if datatype == "FP16" {
                    half::f16::from_f32(*v).to_le_bytes()
                } else {
                    half::bf16::from_f32(*v).to_le_bytes()
                }
            })
            .collect();
        let narrow = oip.model_infer(raw_request("corporate", datatype, 20, bytes)).await.unwrap().into_inner();
        let worst = probabilities(&narrow).iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 0.1, "{datatype}: probabilities differ from f32 by {worst}");
    }
}

#[tokio::test]
async fn requested_outputs_are_honoured_in_their_order() {
    let server = TestServer::start(&[]).await;
    let mut oip = client(&server).await;
    let mut request = typed_request("retail", &rows("retail", 3).values);
    request.outputs = vec![InferRequestedOutputTensor { name: "prediction".into(), parameters: Default::default() }];
    let response = oip.model_infer(request.clone()).await.unwrap().into_inner();
    let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["prediction"]);
    request.outputs.push(InferRequestedOutputTensor { name: "probabilities".into(), parameters: Default::default() });
    let response = oip.model_infer(request.clone()).await.unwrap().into_inner();
    let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["prediction", "probabilities"]);
    request.outputs.push(InferRequestedOutputTensor { name: "logits".into(), parameters: Default::default() });
    let status = oip.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(first_violation(&status), "outputs[2].name");
    assert!(status.message().contains("the model's outputs are `probabilities` and `prediction`"));
}

/// A requested output asking for `classification` of `k` classes.
fn classification(name: &str, k: oip::infer_parameter::ParameterChoice) -> InferRequestedOutputTensor {
    let parameter = oip::InferParameter { parameter_choice: Some(k) };
    InferRequestedOutputTensor { name: name.into(), parameters: [("classification".to_string(), parameter)].into() }
}

#[tokio::test]
async fn the_classification_extension_answers_the_top_classes_and_refuses_nonsense() {
    use oip::infer_parameter::ParameterChoice::{Int64Param, StringParam};
    let server = TestServer::start(&[]).await;
    let mut oip = client(&server).await;
    let mut request = typed_request("retail", &rows("retail", 3).values);
    let all = probabilities(&oip.model_infer(request.clone()).await.unwrap().into_inner());
    // More classes than the model has: all of them, most probable first.
    request.outputs = vec![classification("probabilities", Int64Param(5))];
    let response = oip.model_infer(request.clone()).await.unwrap().into_inner();
    let output = &response.outputs[0];
    assert_eq!((output.datatype.as_str(), output.shape.as_slice()), ("BYTES", &[3i64, 2][..]));
    let top = &output.contents.as_ref().unwrap().bytes_contents;
    for (row, pair) in top.chunks(2).enumerate() {
        let first = String::from_utf8(pair[0].clone()).unwrap();
        let [value, index, label] = first.split(':').collect::<Vec<_>>()[..] else { panic!("{first}") };
        let index: usize = index.parse().unwrap();
        let other = 1 - index;
        assert!(all[row * 2 + index] >= all[row * 2 + other], "row {row}: {first}");
        assert!((value.parse::<f32>().unwrap() - all[row * 2 + index]).abs() <= 1e-6, "{first}");
        assert_eq!(label, ["legit", "fraud"][index]);
        assert!(
            String::from_utf8(pair[1].clone()).unwrap().ends_with(&format!(":{other}:{}", ["legit", "fraud"][other]))
        );
    }
    for (output, field, says) in [
        (
            classification("prediction", Int64Param(1)),
            "outputs[0].parameters[classification]",
            "classify the probabilities",
        ),
        (classification("probabilities", Int64Param(0)), "outputs[0].parameters[classification]", "at least 1"),
        (
            classification("probabilities", StringParam("2".into())),
            "outputs[0].parameters[classification]",
            "as an integer",
        ),
    ] {
        request.outputs = vec![output];
        let status = oip.model_infer(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(first_violation(&status), field);
        assert!(status.message().contains(says), "{}", status.message());
    }
}

#[tokio::test]
async fn malformed_inputs_are_invalid_argument_naming_the_field() {
    let server = TestServer::start(&[]).await;
    let mut oip = client(&server).await;
    let values = rows("retail", 2).values;
    let good = typed_request("retail", &values);
    let raw_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut cases: Vec<(&str, oip::ModelInferRequest, &str, &str)> = Vec::new();

    let mut r = good.clone();
    r.inputs.clear();
    cases.push((
        "missing input",
        r,
        "inputs",
        "has 0 tensors; model `retail` takes one input `features`, FP32 [batch, 30]",
    ));
    let mut r = good.clone();
    r.inputs.push(good.inputs[0].clone());
    cases.push(("extra input", r, "inputs", "has 2 tensors"));
    let mut r = good.clone();
    r.inputs[0].name = "x".into();
    cases.push(("wrong name", r, "inputs[0].name", "is `x`"));
    let mut r = good.clone();
    r.inputs[0].shape = vec![60];
    cases.push(("rank 1", r, "inputs[0].shape", "is [60]"));
    let mut r = good.clone();
    r.inputs[0].shape = vec![3, 20];
    r.inputs[0].contents.as_mut().unwrap().fp32_contents.truncate(60);
    cases.push(("wrong width", r, "inputs[0].shape", "has 20 columns; model `retail` version 1 expects 30 features"));
    let mut r = good.clone();
    r.inputs[0].shape = vec![3, 30];
    cases.push(("count mismatch", r, "inputs[0].contents.fp32_contents", "has 60 values; shape [3, 30] needs 90"));
    let mut r = good.clone();
    r.inputs[0].shape = vec![-2, 30];
    cases.push(("negative", r, "inputs[0].shape", "dimensions cannot be negative"));
    let mut r = good.clone();
    r.raw_input_contents = vec![raw_bytes.clone().into()];
    cases.push(("raw and typed", r, "inputs[0].contents", "is set while raw_input_contents is used too"));
    let r = raw_request("retail", "FP32", 2, raw_bytes[..raw_bytes.len() - 4].to_vec());
    cases.push(("short raw", r, "raw_input_contents[0]", "has 236 bytes; FP32 shape [2, 30] needs 60 × 4"));
    let mut r = raw_request("retail", "FP32", 2, raw_bytes.clone());
    r.raw_input_contents.push(Default::default());
    cases.push(("two raws", r, "raw_input_contents", "has 2 entries; expected one per input (1)"));
    let r = raw_request("retail", "INT32", 2, raw_bytes.clone());
    cases.push(("int32", r, "inputs[0].datatype", "is `INT32`; send FP32"));
    let mut r = good.clone();
    r.inputs[0].datatype = "FP16".into();
    cases.push(("typed fp16", r, "inputs[0].datatype", "travels only in raw_input_contents"));
    let mut r = good.clone();
    r.inputs[0].contents.as_mut().unwrap().fp32_contents[31] = f32::NAN;
    cases.push(("nan", r, "inputs[0][1][1]", "(`amount_to_avg_ratio`) is NaN"));
    let mut r = good.clone();
    r.inputs[0].shape = vec![0, 30];
    r.inputs[0].contents = None;
    cases.push(("empty", r, "inputs[0]", "is empty: send at least one row"));

    for (label, request, field, message) in cases {
        let status = oip.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{label}: {status:?}");
        assert!(status.message().contains(message), "{label}: `{}` lacks `{message}`", status.message());
        assert_eq!(first_violation(&status), field, "{label}");
    }

    let status = oip.model_infer(typed_request("nowhere", &values)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let mut pinned = typed_request("retail", &values);
    pinned.model_version = "two".into();
    let status = oip.model_infer(pinned).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("versions are positive integers"), "{}", status.message());
}

#[tokio::test]
async fn model_stream_infer_answers_errors_in_band_and_carries_on() {
    let server = TestServer::start(&[]).await;
    let mut oip = client(&server).await;
    let values = rows("sme", 4).values;
    let mut bad = typed_request("sme", &values[..4 * 29]);
    bad.inputs[0].shape = vec![4, 29];
    bad.id = "bad".into();
    let mut unknown = typed_request("nowhere", &values);
    unknown.id = "unknown".into();
    let mut first = typed_request("sme", &values);
    first.id = "first".into();
    let mut last = typed_request("sme", &values);
    last.id = "last".into();
    let responses: Vec<oip::ModelStreamInferResponse> = oip
        .model_stream_infer(futures::stream::iter([first, bad, unknown, last]))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(responses.len(), 4);
    assert_eq!(responses[0].infer_response.as_ref().unwrap().id, "first");
    assert!(responses[0].error_message.is_empty());
    assert!(responses[1].error_message.contains("inputs[0].shape has 29 columns"), "{:?}", responses[1]);
    assert!(responses[2].error_message.contains("unknown segment `nowhere`"), "{:?}", responses[2]);
    assert_eq!(responses[3].infer_response.as_ref().unwrap().id, "last");
}

#[tokio::test]
async fn statistics_count_requests_rows_executions_and_batch_sizes() {
    let server = TestServer::start(&[]).await;
    let mut oip = client(&server).await;
    let mut candela = common::client(&server).await;
    for _ in 0..3 {
        oip.model_infer(typed_request("sme", &rows("sme", 5).values)).await.unwrap();
    }
    candela.batch_predict("sme", FEATURES, rows("sme", 7).values).await.unwrap();
    candela.predict("sme", rows("sme", 1).values).await.unwrap();
    let _ = oip.model_infer(typed_request("sme", &[f32::NAN; 30])).await.unwrap_err();
    let _ = candela.predict("sme", vec![1.0; 3]).await.unwrap_err();

    let request = oip::ModelStatisticsRequest { name: "sme".into(), version: String::new() };
    let stats = oip.model_statistics(request).await.unwrap().into_inner().model_stats;
    assert_eq!(stats.len(), 1);
    let sme = &stats[0];
    assert_eq!((sme.name.as_str(), sme.version.as_str()), ("sme", "1"));
    let inference = sme.inference_stats.as_ref().unwrap();
    assert_eq!(inference.success.as_ref().unwrap().count, 5, "both APIs count");
    assert_eq!(inference.fail.as_ref().unwrap().count, 2);
    assert!(inference.success.as_ref().unwrap().ns > 0);
    assert_eq!(sme.inference_count, 3 * 5 + 7 + 1);
    assert_eq!(sme.execution_count, 5);
    assert_eq!(inference.queue.as_ref().unwrap().count, 5);
    assert!(inference.compute_infer.as_ref().unwrap().ns > 0);
    assert!(sme.last_inference > 1_700_000_000_000, "milliseconds since the epoch");
    let sizes: Vec<(u64, u64)> =
        sme.batch_stats.iter().map(|b| (b.batch_size, b.compute_infer.as_ref().unwrap().count)).collect();
    assert_eq!(sizes, [(1, 1), (5, 3), (7, 1)]);

    let all = oip.model_statistics(oip::ModelStatisticsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.model_stats.len(), 4);
}

#[tokio::test]
async fn a_draining_server_is_live_but_not_ready_and_still_answers() {
    let mut server = TestServer::start(&["--drain-seconds", "1"]).await;
    let mut oip = client(&server).await;
    server.begin_shutdown();
    let unready = async || !oip.server_ready(oip::ServerReadyRequest {}).await.unwrap().into_inner().ready;
    eventually(std::time::Duration::from_secs(5), "readiness ending once the drain began", unready).await;
    assert!(oip.server_live(oip::ServerLiveRequest {}).await.unwrap().into_inner().live);
    let ready = oip.model_ready(oip::ModelReadyRequest { name: "retail".into(), version: String::new() }).await;
    assert!(!ready.unwrap().into_inner().ready);
    let index = oip.repository_index(oip::RepositoryIndexRequest::default()).await.unwrap().into_inner();
    assert!(index.models.iter().all(|m| m.state == "UNAVAILABLE"));
    assert!(oip.model_infer(typed_request("retail", &rows("retail", 1).values)).await.is_ok());
    drop(oip);
    server.stop().await.unwrap();
}
