//! Every candela.v1 RPC, end to end: the real server on a loopback port, the
//! real client crate, the bundled demo models.

mod common;

use candela_client::{ModelId, proto, stream_batch};
use candela_server::testing::{FEATURES, TestServer, rows};
use futures::StreamExt;
use tonic::Code;

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6, "{a:?} vs {b:?}");
    }
}

#[tokio::test]
async fn predict_scores_one_row_and_names_the_model() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let data = rows("retail", 1);
    let response = client.predict("retail", data.values.clone()).await.unwrap();
    let prediction = response.prediction.unwrap();
    assert_eq!(prediction.probabilities.len(), 2);
    assert!((prediction.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let argmax = if prediction.probabilities[1] > prediction.probabilities[0] { 1 } else { 0 };
    assert_eq!(prediction.class_index, argmax);
    assert_eq!(prediction.label, ["legit", "fraud"][argmax as usize]);
    assert_eq!(response.model, Some(proto::ModelRef { segment: "retail".into(), version: 1 }));
    assert_eq!(response.request_id.len(), 36, "a generated UUID: {}", response.request_id);
}

#[tokio::test]
async fn a_callers_request_id_is_echoed() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let mut request = tonic::Request::new(proto::PredictRequest {
        explain: 0,
        segment: "sme".into(),
        version: 0,
        features: rows("sme", 1).values,
        text: Vec::new(),
    });
    request.metadata_mut().insert("x-request-id", "order-42".parse().unwrap());
    let response = client.inference().predict(request).await.unwrap().into_inner();
    assert_eq!(response.request_id, "order-42");
}

#[tokio::test]
async fn batch_predict_answers_every_row_in_order_as_predict_would() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let data = rows("corporate", 50);
    let batch = client.batch_predict("corporate", FEATURES, data.values.clone()).await.unwrap();
    assert_eq!(batch.predictions.len(), 50);
    assert_eq!(batch.model.unwrap().segment, "corporate");
    for (row, expected) in data.values.chunks(FEATURES).zip(&batch.predictions) {
        let single = client.predict("corporate", row.to_vec()).await.unwrap().prediction.unwrap();
        assert_eq!(single.class_index, expected.class_index);
        assert_close(&single.probabilities, &expected.probabilities);
    }
}

#[tokio::test]
async fn segments_are_routed_to_their_own_models() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let row = rows("retail", 1).values;
    let mut seen = Vec::new();
    for segment in ["retail", "corporate", "sme"] {
        let response = client.predict(segment, row.clone()).await.unwrap();
        assert_eq!(response.model.unwrap().segment, segment);
        seen.push(response.prediction.unwrap().probabilities);
    }
    assert!(seen[0] != seen[1] && seen[1] != seen[2], "three models give three answers: {seen:?}");
}

#[tokio::test]
async fn the_default_segment_serves_requests_that_name_none() {
    let server = TestServer::start(&["--default-segment", "sme"]).await;
    let mut client = common::client(&server).await;
    let row = rows("sme", 1).values;
    let response = client.predict("", row.clone()).await.unwrap();
    assert_eq!(response.model.unwrap().segment, "sme");
    let explicit = client.predict("sme", row).await.unwrap();
    assert_eq!(response.prediction, explicit.prediction);
    assert_eq!(client.list_models().await.unwrap().default_segment, "sme");
}

#[tokio::test]
async fn batch_predict_stream_sends_chunks_that_add_up_to_the_batch() {
    let server = TestServer::start(&["--stream-chunk-rows", "64"]).await;
    let mut client = common::client(&server).await;
    let data = rows("retail", 300);
    let whole = client.batch_predict("retail", FEATURES, data.values.clone()).await.unwrap();
    let mut stream = client.batch_predict_stream("retail", FEATURES, data.values).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    let starts: Vec<u64> = chunks.iter().map(|c| c.first_row).collect();
    assert_eq!(starts, [0, 64, 128, 192, 256]);
    assert_eq!(chunks.last().unwrap().predictions.len(), 300 - 256);
    let streamed: Vec<proto::Prediction> = chunks.into_iter().flat_map(|c| c.predictions).collect();
    assert_eq!(streamed.len(), whole.predictions.len());
    for (a, b) in streamed.iter().zip(&whole.predictions) {
        assert_eq!(a.class_index, b.class_index);
        assert_close(&a.probabilities, &b.probabilities);
    }
}

#[tokio::test]
async fn stream_predict_answers_each_batch_by_id_and_survives_bad_batches() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let model = ModelId::latest("retail");
    let good = rows("retail", 40).values;
    let mut with_nan = good[..FEATURES * 3].to_vec();
    with_nan[FEATURES + 4] = f32::NAN;
    let batches = vec![
        stream_batch("a", &model, FEATURES, good[..FEATURES * 10].to_vec()),
        stream_batch("bad-count", &model, FEATURES - 1, good[..(FEATURES - 1) * 2].to_vec()),
        stream_batch("b", &model, FEATURES, good[FEATURES * 10..].to_vec()),
        stream_batch("nan", &model, FEATURES, with_nan),
        stream_batch("unknown", &ModelId::latest("nowhere"), FEATURES, good[..FEATURES].to_vec()),
        stream_batch("empty", &model, FEATURES, vec![]),
        stream_batch("c", &model, FEATURES, good[..FEATURES].to_vec()),
    ];
    let responses: Vec<proto::StreamPredictResponse> =
        client.stream_predict(futures::stream::iter(batches)).await.unwrap().map(|r| r.unwrap()).collect().await;
    let ids: Vec<&str> = responses.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "bad-count", "b", "nan", "unknown", "empty", "c"]);
    use proto::stream_predict_response::Outcome;
    let rows_of = |r: &proto::StreamPredictResponse| match &r.outcome {
        Some(Outcome::Result(result)) => Ok(result.predictions.len()),
        Some(Outcome::Error(e)) => Err(e.clone()),
        None => panic!("empty outcome"),
    };
    assert_eq!(rows_of(&responses[0]), Ok(10));
    assert_eq!(rows_of(&responses[2]), Ok(30));
    assert_eq!(rows_of(&responses[6]), Ok(1));
    let bad_count = rows_of(&responses[1]).unwrap_err();
    assert_eq!(bad_count.code, Code::InvalidArgument as i32);
    assert_eq!(bad_count.field_violations[0].field, "rows.feature_count");
    let nan = rows_of(&responses[3]).unwrap_err();
    assert_eq!(nan.code, Code::InvalidArgument as i32);
    assert_eq!(nan.field_violations[0].field, "rows.values[1][4]");
    assert!(nan.field_violations[0].description.contains("is_weekend"), "{nan:?}");
    assert_eq!(rows_of(&responses[4]).unwrap_err().code, Code::NotFound as i32);
    assert_eq!(rows_of(&responses[5]).unwrap_err().code, Code::InvalidArgument as i32);
    // The good batches' results equal BatchPredict's, to float rounding: with
    // dynamic batching the rows may share a forward pass with other rows, and
    // a different pass size can change the last bit of a matrix product.
    let whole = client.batch_predict("retail", FEATURES, good[..FEATURES * 10].to_vec()).await.unwrap();
    let Some(Outcome::Result(first)) = &responses[0].outcome else { unreachable!() };
    assert_eq!(first.predictions.len(), whole.predictions.len());
    for (streamed, alone) in first.predictions.iter().zip(&whole.predictions) {
        assert_eq!((streamed.class_index, &streamed.label), (alone.class_index, &alone.label));
        assert_close(&streamed.probabilities, &alone.probabilities);
    }
}

#[tokio::test]
async fn stream_predict_handles_many_batches_from_a_fast_producer() {
    let server = TestServer::start(&["--stream-in-flight", "2"]).await;
    let mut client = common::client(&server).await;
    let model = ModelId::latest("sme");
    let data = rows("sme", 100);
    let batches: Vec<_> =
        (0..400).map(|i| stream_batch(i.to_string(), &model, FEATURES, data.values.clone())).collect();
    let mut responses = client.stream_predict(futures::stream::iter(batches)).await.unwrap();
    let mut expected = 0;
    while let Some(response) = responses.next().await {
        let response = response.unwrap();
        assert_eq!(response.id, expected.to_string());
        expected += 1;
    }
    assert_eq!(expected, 400);
}

/// `columnar` asks for the same scores as two packed columns: equal to the
/// per-row predictions, for networks and trees; a refused batch is refused
/// the same way.
#[tokio::test]
async fn stream_predict_answers_in_columns_on_request() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    for segment in ["retail", "corporate", "retail-gbt"] {
        let model = ModelId::latest(segment);
        let data = rows(if segment == "retail-gbt" { "retail" } else { segment }, 50);
        let mut columnar = stream_batch("c", &model, FEATURES, data.values.clone());
        columnar.columnar = true;
        let mut bad = stream_batch("bad", &model, FEATURES, vec![f32::INFINITY; FEATURES]);
        bad.columnar = true;
        let batches = [stream_batch("p", &model, FEATURES, data.values.clone()), columnar, bad];
        let answers: Vec<_> =
            client.stream_predict(futures::stream::iter(batches)).await.unwrap().map(Result::unwrap).collect().await;
        let result = |i: usize| match answers[i].outcome.clone() {
            Some(proto::stream_predict_response::Outcome::Result(result)) => result,
            other => panic!("{segment} batch {i}: {other:?}"),
        };
        let (per_row, columns) = (result(0), result(1));
        assert!(per_row.columns.is_none() && columns.predictions.is_empty(), "{segment}: one form each");
        let columns = columns.columns.unwrap();
        let labels = per_row.predictions[0].probabilities.len();
        assert_eq!(columns.label_count as usize, labels, "{segment}");
        assert_eq!(columns.class_index.len(), 50);
        for (i, prediction) in per_row.predictions.iter().enumerate() {
            assert_eq!(columns.class_index[i], prediction.class_index, "{segment} row {i}");
            assert_eq!(&columns.probabilities[i * labels..(i + 1) * labels], &prediction.probabilities[..]);
        }
        assert!(
            matches!(&answers[2].outcome, Some(proto::stream_predict_response::Outcome::Error(e)) if e.code == 3),
            "{segment}: {:?}",
            answers[2].outcome
        );
    }
}

#[tokio::test]
async fn list_and_get_model_describe_schemas_and_provenance() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let list = client.list_models().await.unwrap();
    let names: Vec<(String, u64)> = list.models.iter().map(|m| (m.segment.clone(), m.version)).collect();
    assert_eq!(names, [("corporate".into(), 1), ("retail".into(), 1), ("retail-gbt".into(), 1), ("sme".into(), 1)]);
    assert_eq!(list.default_segment, "", "four segments and none configured: no default");
    let retail = client.get_model("retail").await.unwrap();
    assert_eq!(retail.features.len(), FEATURES);
    assert_eq!(retail.features[0], "amount_log");
    assert_eq!(retail.labels, ["legit", "fraud"]);
    assert_eq!(retail.dtype, "f32");
    assert_eq!(retail.device, "cpu");
    assert!(retail.is_latest);
    assert_eq!(retail.layers[1], "linear(30→32)");
    assert_eq!(retail.format, "candle");
    let trees = client.get_model("retail-gbt").await.unwrap();
    assert_eq!((trees.format.as_str(), trees.dtype.as_str(), trees.device.as_str()), ("lightgbm", "f64", "cpu"));
    assert_eq!(trees.features, retail.features, "the tree model scores retail's rows");
    assert!(trees.layers[0].starts_with("lightgbm binary sigmoid:1: 200 trees"), "{:?}", trees.layers);
    let provenance = retail.provenance.unwrap();
    assert!(provenance.metrics["held_out_auc"] >= 0.9, "{provenance:?}");
    assert!(provenance.training_data.contains("synthetic"));
    assert_eq!(list.models[1], client.get_model(ModelId::pinned("retail", 1)).await.unwrap());
}

/// A producer far faster than its consumer is held back by HTTP/2 flow
/// control: while nobody reads the responses, the transport pulls only as
/// many batches as the flow-control windows and the server's in-flight limit
/// hold; reading resumes it, and every batch is answered.
#[tokio::test]
async fn stream_predict_backpressure_holds_back_a_fast_producer() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = TestServer::start(&[]).await;
    // A 64 KiB receive window (hyper's client default is 2 MiB) so the bound is
    // small enough to see: about 30 unread 100-row responses fill it.
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = candela_client::Client::from_channel(channel);
    let model = ModelId::latest("retail");
    let values = rows("retail", 100).values;
    let total = 2000;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let batches = futures::stream::iter(0..total).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        stream_batch(i.to_string(), &model, FEATURES, values.clone())
    });
    let mut responses = client.stream_predict(batches).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let held = pulled.load(Ordering::SeqCst);
    assert!(held < total / 4, "{held} of {total} batches were pulled with no responses read");
    let mut answered = 0;
    while let Some(response) = responses.next().await {
        assert_eq!(response.unwrap().id, answered.to_string());
        answered += 1;
    }
    assert_eq!(answered, total);
    println!("batches pulled while the consumer was stalled: {held} of {total}");
}
