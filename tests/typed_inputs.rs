//! Named, typed inputs: models converted from a DataFrame of numbers and
//! string categories (an input per column) answered through Triton's gRPC
//! and HTTP clients with a tensor per input and through HTTP `/score` with
//! rows by name, within 1e-5 of onnxruntime, unknown categories as each
//! model's encoder says (tests/peers/typed_check.py); and through
//! candela.v1, whose plain numeric rows carry a category as its code,
//! checked against the model's categories.

mod common;

use candela_server::testing::{TestServer, peers_python, repo_root, settings};
use common::wait_for;
use std::process::Command;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn fixtures() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/formats/repo")
}

async fn serve(http: &str) -> TestServer {
    let server = TestServer::start_with(settings(&fixtures(), &["--http-listen", http])).await;
    wait_for(&mut common::client(&server).await, "", ServingStatus::Serving).await;
    server
}

#[tokio::test]
async fn triton_clients_and_score_send_an_input_per_feature_and_agree_with_onnxruntime() {
    let http = common::free_port();
    let server = serve(&http).await;
    let mut command = Command::new(peers_python());
    command.arg(repo_root().join("tests/peers/typed_check.py")).arg(server.addr.to_string()).arg(&http).arg(fixtures());
    let output = tokio::task::spawn_blocking(move || command.output().expect("the peer check runs")).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "typed-input peer checks failed:\n{text}");
    println!("{text}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn plain_numeric_rows_carry_a_category_as_its_code() {
    let http = common::free_port();
    let server = serve(&http).await;
    let mut client = common::client(&server).await;
    // amount, country, age, channel: "fr" and "web" as their codes in the encoder's sorted categories.
    let info = client.get_model("onnx-dataframe").await.unwrap();
    assert_eq!(info.features, ["amount", "country", "age", "channel"]);
    let coded = client.predict("onnx-dataframe", vec![20.0, 1.0, 35.0, 2.0]).await.unwrap().prediction.unwrap();
    let body = serde_json::json!({"segment": "onnx-dataframe",
        "features": [{"amount": 20.0, "country": "fr", "age": 35.0, "channel": "web"}]});
    let named: serde_json::Value = common::post_json(&http, "/score", &body.to_string()).await;
    let by_name = named["probability"][0].as_array().unwrap();
    for (c, n) in coded.probabilities.iter().zip(by_name) {
        assert!((f64::from(*c) - n.as_f64().unwrap()).abs() < 1e-7, "{:?} vs {by_name:?}", coded.probabilities);
    }
    let status = client.predict("onnx-dataframe", vec![20.0, 7.0, 35.0, 2.0]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("feature `country` is a category"), "{}", status.message());
    let status = client.predict("onnx-dataframe-strict", vec![20.0, -1.0, 35.0, 2.0]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "the strict encoder has no code for an unknown category");
    server.stop().await.unwrap();
}

/// onnx-dataframe's expected rows as candela.v1 Rows, its two category
/// features as text columns, and onnxruntime's probabilities.
fn typed_rows() -> (candela::v1::Rows, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(fixtures().join("onnx-dataframe/expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let column = |name: &str| expected["columns"][name].as_array().unwrap().clone();
    let (amount, age) = (column("amount"), column("age"));
    let number = |v: &serde_json::Value| v.as_f64().map_or(f32::NAN, |v| v as f32);
    let values = amount.iter().zip(&age).flat_map(|(a, g)| [number(a), 0.0, number(g), 0.0]).collect();
    let strings = |name: &str| column(name).iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let text = vec![
        candela::v1::TextColumn { feature: 1, values: strings("country"), missing: Vec::new() },
        candela::v1::TextColumn { feature: 3, values: strings("channel"), missing: Vec::new() },
    ];
    let rows = candela::v1::Rows { feature_count: 4, values, text };
    (rows, serde_json::from_value(expected["probabilities"].clone()).unwrap())
}

#[tokio::test]
async fn candela_v1_rows_carry_categories_as_strings_on_every_call() {
    let http = common::free_port();
    let server = serve(&http).await;
    let mut client = common::client(&server).await;
    let info = client.get_model("onnx-dataframe").await.unwrap();
    let kinds: Vec<(&str, &str)> = info.feature_types.iter().map(|f| (f.name.as_str(), f.kind.as_str())).collect();
    assert_eq!(kinds, [("amount", "number"), ("country", "category"), ("age", "number"), ("channel", "category")]);
    assert_eq!(info.feature_types[3].categories, ["app", "pos", "web"]);
    let (rows, want) = typed_rows();
    let close = |got: &[f32], want: &[f64]| got.iter().zip(want).all(|(g, w)| (f64::from(*g) - w).abs() <= 1e-5);
    // BatchPredict.
    let answer = client.batch_predict_rows("onnx-dataframe", rows.clone()).await.unwrap();
    assert_eq!(answer.predictions.len(), want.len());
    for (row, (got, want)) in answer.predictions.iter().zip(&want).enumerate() {
        assert!(close(&got.probabilities, want), "row {row}: {:?} vs {want:?}", got.probabilities);
    }
    // Predict: one row, its text columns of one value each.
    let one = |column: &candela::v1::TextColumn| candela::v1::TextColumn {
        feature: column.feature,
        values: column.values[..1].to_vec(),
        missing: Vec::new(),
    };
    let request = candela::v1::PredictRequest {
        explain: 0,
        segment: "onnx-dataframe".into(),
        version: 0,
        features: rows.values[..4].to_vec(),
        text: rows.text.iter().map(one).collect(),
    };
    let single = client.inference().predict(request).await.unwrap().into_inner().prediction.unwrap();
    assert!(close(&single.probabilities, &want[0]), "{:?} vs {:?}", single.probabilities, want[0]);
    // StreamPredict, columnar.
    let model = candela_client::ModelId::latest("onnx-dataframe");
    let mut message = candela_client::stream_batch("m1", &model, 4, Vec::new());
    (message.rows, message.columnar) = (Some(rows.clone()), true);
    let mut stream = client.stream_predict(futures::stream::iter([message])).await.unwrap();
    let response = stream.message().await.unwrap().unwrap();
    let Some(candela::v1::stream_predict_response::Outcome::Result(result)) = response.outcome else {
        panic!("the message was refused: {response:?}")
    };
    let columns = result.columns.unwrap();
    assert!(close(&columns.probabilities, &want.concat()));

    // Refusals name the field: an unknown category for the strict encoder, text
    // for a number, a column of the wrong length, a feature twice.
    let unknown = |r: &mut candela::v1::Rows| {
        // The strict model never saw "br": the first unknown is the one sent at row 3.
        r.text[0].values.iter_mut().filter(|v| *v == "br").for_each(|v| *v = "de".into());
        r.text[0].values[3] = "xx".into();
    };
    let status = refused(&mut client, unknown, "onnx-dataframe-strict").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("rows.text[0].values[3] "), "{}", status.message());
    assert!(
        status.message().contains(r#"["de", "fr", "it", "us"]"#),
        "the known ones are listed: {}",
        status.message()
    );
    let status = refused(&mut client, |r| r.text[0].feature = 0, "onnx-dataframe").await;
    assert!(
        status.message().contains("rows.text[0].feature is 0, `amount`, which takes numbers"),
        "{}",
        status.message()
    );
    let status = refused(&mut client, |r| r.text[1].values.pop().map(drop).unwrap(), "onnx-dataframe").await;
    assert!(status.message().contains("rows.text[1].values has 199 values for 200 rows"), "{}", status.message());
    let status = refused(&mut client, |r| r.text[1].feature = 1, "onnx-dataframe").await;
    assert!(status.message().contains("rows.text[1].feature is 1 again"), "{}", status.message());
    // An unknown category where the encoder ignores it is scored (no category), as over /score.
    let (mut rows, _) = typed_rows();
    rows.text[0].values[0] = "xx".into();
    client.batch_predict_rows("onnx-dataframe", rows).await.unwrap();
    server.stop().await.unwrap();
}

/// The status BatchPredict ends with for `segment` and the typed rows `edit` spoils.
async fn refused(
    client: &mut candela_client::Client,
    edit: fn(&mut candela::v1::Rows),
    segment: &str,
) -> tonic::Status {
    let (mut rows, _) = typed_rows();
    edit(&mut rows);
    client.batch_predict_rows(segment, rows).await.unwrap_err()
}

#[tokio::test]
async fn a_tensor_sent_both_raw_and_typed_is_refused_naming_it() {
    use candela::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
    let http = common::free_port();
    let server = serve(&http).await;
    let mut client = GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap();
    let tensor = |name: &str, datatype: &str, contents: Option<oip::InferTensorContents>| {
        oip::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![1, 1],
            parameters: Default::default(),
            contents,
        }
    };
    let typed = oip::InferTensorContents { fp32_contents: vec![35.0], ..Default::default() };
    let raw = |bytes: &[u8]| [(bytes.len() as u32).to_le_bytes().as_slice(), bytes].concat();
    let request = oip::ModelInferRequest {
        model_name: "onnx-dataframe".into(),
        inputs: vec![
            tensor("amount", "FP32", None),
            tensor("country", "BYTES", None),
            tensor("age", "FP32", Some(typed)),
            tensor("channel", "BYTES", None),
        ],
        raw_input_contents: [20f32.to_le_bytes().to_vec(), raw(b"fr"), 35f32.to_le_bytes().to_vec(), raw(b"web")]
            .into_iter()
            .map(Into::into)
            .collect(),
        ..Default::default()
    };
    let status = client.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("inputs[2].contents is set while raw_input_contents is used too"),
        "{}",
        status.message()
    );
    server.stop().await.unwrap();
}
