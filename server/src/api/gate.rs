//! What every call on the main port passes before tonic reads its body:
//!
//! - Inference calls answered from one request message (Predict,
//!   BatchPredict, BatchPredictStream, ModelInfer) are admitted here against
//!   --max-concurrent-requests, so an overloaded server refuses them with
//!   RESOURCE_EXHAUSTED before reading a byte of their body. The permit
//!   travels to the handler in the request's extensions.
//! - Every request body is charged against one server-wide budget
//!   (--max-pending-request-bytes) for the bytes of messages that have begun
//!   to arrive but are not complete yet; a message that would overdraw it
//!   fails its call with RESOURCE_EXHAUSTED. Complete messages are handed on
//!   and stop counting, so slow or stalled uploads cannot hoard memory.
//! - A request tonic cannot decode (not protobuf, bad framing) gets
//!   INVALID_ARGUMENT saying so, not the INTERNAL tonic answers (which this
//!   API keeps for its own bugs), and is counted in the call metrics.

use super::serving::Serving;
use crate::error::ServeError;
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// Calls admitted at the gate: (path, service, method).
const ADMITTED: &[(&str, &str, &str)] = &[
    ("/candela.v1.Inference/Predict", "candela.v1.Inference", "Predict"),
    ("/candela.v1.Inference/BatchPredict", "candela.v1.Inference", "BatchPredict"),
    ("/candela.v1.Inference/BatchPredictStream", "candela.v1.Inference", "BatchPredictStream"),
    ("/inference.GRPCInferenceService/ModelInfer", "inference.GRPCInferenceService", "ModelInfer"),
];

/// The size of a gRPC message's prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// A permit taken at the gate, for the handler to hold while it works. The
/// handler takes it out; if it never runs, the permit goes with the request.
#[derive(Clone)]
pub struct Admitted(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Admitted {
    /// The permit, once.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// Bytes of incomplete request messages held across the server.
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget { held: AtomicUsize::new(0), limit })
    }

    fn charge(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The tower layer that puts the gate in front of the main port's services.
#[derive(Clone)]
pub struct GateLayer {
    serving: Arc<Serving>,
    budget: Arc<Budget>,
}

impl GateLayer {
    pub fn new(serving: Arc<Serving>, budget: Arc<Budget>) -> GateLayer {
        GateLayer { serving, budget }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner, serving: self.serving.clone(), budget: self.budget.clone() }
    }
}

/// The gate around one connection's services.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    serving: Arc<Serving>,
    budget: Arc<Budget>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Gate<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (service, method) = names(request.uri().path());
        let admitted = ADMITTED.iter().any(|(path, ..)| *path == request.uri().path());
        let mut request = request;
        if admitted {
            match self.serving.admit() {
                Ok(permit) => {
                    request.extensions_mut().insert(Admitted(Arc::new(Mutex::new(Some(permit)))));
                }
                Err(error) => {
                    let call =
                        self.serving.call(&MetadataMap::from_headers(request.headers().clone()), service, method);
                    let status = self.serving.refuse(&call, error);
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        let budget = self.budget.clone();
        let request = request.map(|body| Body::new(Budgeted::new(body, budget)));
        // The service that was polled ready answers this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let serving = self.serving.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(undecodable(response, |message| {
                // Counted only: the request's metadata no longer matters.
                let call = serving.call(&MetadataMap::new(), service, method);
                call.finished(Some(&ServeError::invalid("(request)", message)));
            }))
        })
    }
}

/// The service and method a path names, as the metrics label them (known
/// names only: a caller's path never becomes a label).
fn names(path: &str) -> (&'static str, &'static str) {
    const OTHER: (&str, &str) = ("other", "other");
    const STREAMS: &[(&str, &str, &str)] = &[
        ("/candela.v1.Inference/StreamPredict", "candela.v1.Inference", "StreamPredict"),
        ("/inference.GRPCInferenceService/ModelStreamInfer", "inference.GRPCInferenceService", "ModelStreamInfer"),
    ];
    ADMITTED
        .iter()
        .chain(STREAMS)
        .find(|(known, ..)| *known == path)
        .map_or(OTHER, |(_, service, method)| (*service, *method))
}

/// Whether `status` is tonic's answer to request bytes it could not decode:
/// the protobuf decoder's errors and the message framing's (a compression
/// flag other than 0 or 1, a body that ends inside a message). A compressed
/// flag without a `grpc-encoding` stays INTERNAL, as the gRPC compression
/// spec requires.
pub fn is_undecodable(code: Code, message: &str) -> bool {
    code == Code::Internal
        && (message.starts_with("failed to decode Protobuf message")
            || message.starts_with("protocol error: received message with invalid compression flag")
            || message.starts_with("Unexpected EOF decoding stream"))
}

/// The INVALID_ARGUMENT answer for a request that could not be decoded.
pub fn invalid_request(message: &str) -> Status {
    Status::invalid_argument(format!("the request could not be decoded: {message}; send the method's protobuf message"))
}

/// Rewrites a trailers-only answer of tonic's to undecodable bytes into
/// INVALID_ARGUMENT, calling `counted` so the call is recorded (its handler
/// never ran). Other answers pass untouched.
fn undecodable(mut response: http::Response<Body>, counted: impl FnOnce(String)) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else { return response };
    if !is_undecodable(status.code(), status.message()) {
        return response;
    }
    let rewritten = invalid_request(status.message());
    counted(rewritten.message().to_string());
    let headers = response.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    let _ = rewritten.add_header(headers);
    response
}

/// A request body charged against the budget for the bytes of its
/// incomplete message. It follows the gRPC framing (5-byte prefix, then the
/// message) to know where messages end.
struct Budgeted {
    inner: Body,
    budget: Arc<Budget>,
    /// Bytes of the current message received so far (prefix included), all charged.
    pending: usize,
    /// The current message's prefix, while incomplete.
    prefix: [u8; PREFIX],
    /// Message bytes still to come after the prefix, once the prefix is complete.
    remaining: Option<usize>,
}

impl Budgeted {
    fn new(inner: Body, budget: Arc<Budget>) -> Budgeted {
        Budgeted { inner, budget, pending: 0, prefix: [0; PREFIX], remaining: None }
    }

    /// Follows `data` through the framing; returns the bytes of the message
    /// still incomplete at its end.
    fn follow(&mut self, mut data: &[u8]) -> usize {
        let mut incomplete = self.pending;
        while !data.is_empty() {
            match self.remaining {
                None => {
                    let have = incomplete;
                    let take = (PREFIX - have).min(data.len());
                    self.prefix[have..have + take].copy_from_slice(&data[..take]);
                    data = &data[take..];
                    incomplete += take;
                    if incomplete == PREFIX {
                        let length = u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes")) as usize;
                        self.remaining = Some(length);
                    }
                }
                Some(left) => {
                    let take = left.min(data.len());
                    data = &data[take..];
                    incomplete += take;
                    self.remaining = Some(left - take);
                }
            }
            if self.remaining == Some(0) {
                self.remaining = None;
                incomplete = 0;
            }
        }
        incomplete
    }
}

impl Drop for Budgeted {
    fn drop(&mut self) {
        self.budget.release(self.pending);
    }
}

impl HttpBody for Budgeted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let incomplete = self.follow(data.chunk());
            let before = self.pending;
            if incomplete > before {
                if !self.budget.charge(incomplete - before) {
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "the server is holding its limit of {} bytes of incomplete request messages (--max-pending-request-bytes); retry shortly, or send smaller messages",
                        self.budget.limit
                    )))));
                }
            } else {
                self.budget.release(before - incomplete);
            }
            self.pending = incomplete;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
