//! The HTTP/JSON requests `candela bench` can load a server's HTTP port
//! with, so the HTTP API and gRPC are measured by the same load generator:
//! `POST /score` (JSON rows), and the Open Inference Protocol's REST infer
//! with JSON tensors or Triton's binary tensor data. HTTP/1.1 carries one
//! request per connection at a time: each caller keeps its own pooled
//! connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Which HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /score` with `{"segment", "features": [[…], …]}`.
    Score,
    /// `POST /v2/models/{model}/infer` with the tensor as JSON `data`.
    InferJson,
    /// The same with Triton's binary tensor data, in and out.
    InferBinary,
}

/// One request, built once and sent many times.
#[derive(Clone)]
pub struct HttpRequest {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    body: Bytes,
    /// The JSON part's length, for binary tensor data.
    header_length: Option<usize>,
}

impl HttpRequest {
    /// The request of `kind` to the HTTP API at `base` (`http://host:port`)
    /// for `model`, carrying `values` (`rows` × `features`, row-major).
    pub fn new(
        kind: Kind,
        base: &str,
        model: &str,
        rows: usize,
        features: usize,
        values: &[f32],
    ) -> anyhow::Result<HttpRequest> {
        let base = base.trim_end_matches('/');
        let table: Vec<&[f32]> = values.chunks(features).collect();
        let (path, body, header_length) = match kind {
            Kind::Score => (
                "/score".to_string(),
                serde_json::json!({"segment": model, "features": table}).to_string().into_bytes(),
                None,
            ),
            Kind::InferJson => {
                let body = serde_json::json!({
                    "inputs": [{"name": "features", "shape": [rows, features], "datatype": "FP32", "data": values}],
                });
                (format!("/v2/models/{model}/infer"), body.to_string().into_bytes(), None)
            }
            Kind::InferBinary => {
                let bytes = values.len() * 4;
                let head = serde_json::json!({
                    "inputs": [{"name": "features", "shape": [rows, features], "datatype": "FP32",
                                "parameters": {"binary_data_size": bytes}}],
                    "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}},
                                {"name": "prediction", "parameters": {"binary_data": true}}],
                });
                let mut body = head.to_string().into_bytes();
                let length = body.len();
                body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                (format!("/v2/models/{model}/infer"), body, Some(length))
            }
        };
        let uri: http::Uri = format!("{base}{path}").parse()?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(HttpRequest { client, uri, body: Bytes::from(body), header_length })
    }

    /// Sends the request and reads the whole answer; an answer other than
    /// 200 is an error carrying its status and body.
    pub async fn send(&self) -> Result<(), tonic::Status> {
        let mut request = http::Request::post(self.uri.clone()).header("content-type", "application/json");
        if let Some(length) = self.header_length {
            request = request.header("inference-header-content-length", length);
        }
        let request = request.body(Full::new(self.body.clone())).expect("a valid request");
        let response = self.client.request(request).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        if status != http::StatusCode::OK {
            let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
            return Err(tonic::Status::unknown(format!("HTTP {status}: {text}")));
        }
        Ok(())
    }
}
