//! What every call on the main port passes before tonic reads its body:
//!
//! - Inference calls answered from one request message (Predict,
//!   BatchPredict, BatchPredictStream, ModelInfer) are admitted here against
//!   --max-concurrent-requests, so an overloaded server refuses them with
//!   RESOURCE_EXHAUSTED before reading a byte of their body. The permit
//!   travels to the handler in the request's extensions.
//! - Every request body is charged against one server-wide budget
//!   (--max-pending-request-bytes) for the memory held by messages that have
//!   begun to arrive but are not complete yet (from its 5-byte prefix on, a
//!   message holds the length it declares); a message that would overdraw it
//!   fails its call with RESOURCE_EXHAUSTED. Complete messages are handed on
//!   and stop counting; a stalled upload holds its one message, within the budget.
//! - Calls that change what the server serves (RepositoryModelLoad,
//!   RepositoryModelUnload) need an admin key (`auth::AdminGuard`).
//! - A request tonic cannot decode (not protobuf, bad framing) gets
//!   INVALID_ARGUMENT saying so, not the INTERNAL tonic answers (which this
//!   API keeps for its own bugs), and is counted in the call metrics.

use super::auth::AdminGuard;
use super::call::requested_timeout;
use super::serving::{Admitted, Serving};
use crate::core::error::ServeError;
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::{Code, Status};

/// An inference method the gate knows: how metrics name it, and whether it
/// is admitted here (calls answered from one request message) or per
/// message by its stream.
struct Method {
    path: &'static str,
    service: &'static str,
    method: &'static str,
    admitted_here: bool,
}

const fn method(path: &'static str, service: &'static str, method: &'static str, admitted_here: bool) -> Method {
    Method { path, service, method, admitted_here }
}

const CANDELA: &str = "candela.v1.Inference";
const OIP: &str = "inference.GRPCInferenceService";

/// The inference methods; any other path is labelled `other` (a caller's
/// path never becomes a metric label).
const METHODS: &[Method] = &[
    method("/candela.v1.Inference/Predict", CANDELA, "Predict", true),
    method("/candela.v1.Inference/BatchPredict", CANDELA, "BatchPredict", true),
    method("/candela.v1.Inference/BatchPredictStream", CANDELA, "BatchPredictStream", true),
    method("/candela.v1.Inference/StreamPredict", CANDELA, "StreamPredict", false),
    method("/candela.v1.Inference/Feedback", CANDELA, "Feedback", true),
    method("/candela.v1.Inference/FeedbackStream", CANDELA, "FeedbackStream", false),
    method("/inference.GRPCInferenceService/ModelInfer", OIP, "ModelInfer", true),
    method("/inference.GRPCInferenceService/ModelStreamInfer", OIP, "ModelStreamInfer", false),
];

const OTHER: Method = method("", "other", "other", false);

/// The admin methods (what the server serves, rollouts): admin keys only.
const ADMIN_PATHS: &[&str] = &[
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    "/candela.v1.Rollouts/Status",
    "/candela.v1.Rollouts/Rollback",
];

/// The size of a gRPC message's prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// Bytes of incomplete request messages held across the server.
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget { held: AtomicUsize::new(0), limit })
    }

    /// The most bytes held at once (--max-pending-request-bytes).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` from the budget; `false` (nothing taken) when that would overdraw it.
    pub fn charge(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Returns `bytes` charged before.
    pub fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The tower layer that puts the gate in front of the main port's services.
#[derive(Clone)]
pub struct GateLayer {
    serving: Arc<Serving>,
    budget: Arc<Budget>,
    admin: AdminGuard,
}

impl GateLayer {
    pub fn new(serving: Arc<Serving>, budget: Arc<Budget>, admin: AdminGuard) -> GateLayer {
        GateLayer { serving, budget, admin }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner, serving: self.serving.clone(), budget: self.budget.clone(), admin: self.admin.clone() }
    }
}

/// The gate around one connection's services.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    serving: Arc<Serving>,
    budget: Arc<Budget>,
    admin: AdminGuard,
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let known = METHODS.iter().find(|m| m.path == path).unwrap_or(&OTHER);
        let (service, method) = (known.service, known.method);
        if ADMIN_PATHS.contains(&path)
            && let Err(denied) = self.admin.check(request.headers())
        {
            return Box::pin(async move { Ok(Status::from(denied).into_http()) });
        }
        if let Err(error) =
            self.serving.check_headers(request.headers()).and_then(|()| requested_timeout(request.headers()))
        {
            let status = self.serving.call(request.headers(), service, method).refuse(error);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        if known.admitted_here {
            match self.serving.admit() {
                Ok(permit) => {
                    request.extensions_mut().insert(Admitted::new(permit));
                }
                Err(error) => {
                    let call = self.serving.call(request.headers(), service, method);
                    let status = call.refuse(error);
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        let budget = self.budget.clone();
        let largest = self.serving.limits.largest_message();
        let request = request.map(|body| Body::new(Budgeted::new(body, budget, largest)));
        // The service that was polled ready answers this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let serving = self.serving.clone();
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            // A trailers-only answer of tonic's to undecodable bytes: the
            // handler never ran, so the call is recorded here.
            if let Some(error) = Status::from_header_map(response.headers()).as_ref().and_then(undecodable) {
                let status = serving.call(&http::HeaderMap::new(), service, method).refuse(error);
                let headers = response.headers_mut();
                for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                    headers.remove(header);
                }
                let _ = status.add_header(headers);
            }
            Ok(response)
        })
    }
}

/// The core error for tonic's answer to request bytes it could not decode
/// (the protobuf decoder's errors and the message framing's: a compression
/// flag other than 0 or 1, a body that ends inside a message); `None` for
/// any other status. A compressed flag without a `grpc-encoding` stays
/// INTERNAL, as the gRPC compression spec requires.
pub fn undecodable(status: &Status) -> Option<ServeError> {
    let message = status.message();
    let undecodable = status.code() == Code::Internal
        && (message.starts_with("failed to decode Protobuf message")
            || message.starts_with("protocol error: received message with invalid compression flag")
            || message.starts_with("Unexpected EOF decoding stream"));
    undecodable.then(|| ServeError::InvalidArgument {
        message: format!("the request could not be decoded: {message}; send the method's protobuf message"),
        violations: Vec::new(),
    })
}

/// A request body charged against the budget for the memory its incomplete
/// message holds. It follows the gRPC framing (5-byte prefix, then the
/// message) to know where messages end. Once a message's prefix has
/// arrived, tonic reserves a buffer of the length it declares, so that is
/// what is charged from then on: a message that would overdraw the budget
/// is refused before any of its bytes are buffered, and a flood of large
/// messages cannot leave the memory of half-received, refused ones behind.
struct Budgeted {
    inner: Body,
    budget: Arc<Budget>,
    /// Bytes of the current message received so far (prefix included).
    received: usize,
    /// The current message's whole size (prefix included), once its prefix is complete.
    declared: Option<usize>,
    /// The largest message tonic reserves a buffer for (a larger one it
    /// refuses on reading the prefix, holding nothing).
    largest: usize,
    /// What the current message holds (see `held`), all charged.
    pending: usize,
    /// The current message's prefix, while incomplete.
    prefix: [u8; PREFIX],
}

impl Budgeted {
    fn new(inner: Body, budget: Arc<Budget>, largest: usize) -> Budgeted {
        Budgeted { inner, budget, received: 0, declared: None, largest, pending: 0, prefix: [0; PREFIX] }
    }

    /// Follows `data` through the framing, to the end of `data`.
    fn follow(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.declared {
                None => {
                    let have = self.received;
                    let take = (PREFIX - have).min(data.len());
                    self.prefix[have..have + take].copy_from_slice(&data[..take]);
                    data = &data[take..];
                    self.received += take;
                    if self.received == PREFIX {
                        let length = u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes")) as usize;
                        self.declared = Some(PREFIX + length);
                    }
                }
                Some(size) => {
                    let take = (size - self.received).min(data.len());
                    data = &data[take..];
                    self.received += take;
                }
            }
            if self.declared == Some(self.received) {
                (self.received, self.declared) = (0, None);
            }
        }
    }

    /// The memory the incomplete message holds: its declared size once its
    /// prefix is in (tonic's buffer for it), else the few bytes received.
    fn held(&self) -> usize {
        self.declared.filter(|size| *size - PREFIX <= self.largest).unwrap_or(self.received)
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
            self.follow(data.chunk());
            let incomplete = self.held();
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
