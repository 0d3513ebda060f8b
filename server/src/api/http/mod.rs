//! The HTTP/JSON front on --http-listen (HTTP/1.1): the Open Inference
//! Protocol's REST routes under `/v2` (`rest`, so KServe V2 and Triton HTTP
//! tooling works unchanged) and the scoring contract teams already call
//! (`score`: `POST /score`, and `POST /feedback` for outcomes), over the same
//! serving core as the gRPC services: routing and rollouts, validation,
//! batching, admission (--max-concurrent-requests is shared with gRPC),
//! API keys, metrics, traces and outcome records. Around them: bounded
//! bodies (`body`) and the one mapping from core errors to HTTP (`answer`).
//! Connections are accepted like the gRPC port's (`connections`: at most
//! --max-connections, a handshake timeout, TLS from the same certificates)
//! and served by hyper with bounded headers and an idle timeout.

pub mod answer;
pub mod body;
pub mod infer_json;
pub mod metrics;
pub mod rest;
pub mod score;

use super::auth::{AdminGuard, Authenticator};
use super::call::{Call, requested_timeout};
use super::connections::Counted;
use super::serving::Serving;
use answer::Refused;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

/// The service name HTTP calls carry in metrics and traces.
pub const SERVICE: &str = "http";

/// The most bytes of a request's head (request line and headers): as much
/// as the gRPC port's HTTP/2 header list.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What every HTTP handler shares.
pub struct Front {
    pub serving: Arc<Serving>,
    /// Checks API keys on everything but the health routes.
    pub auth: Authenticator,
    /// Checks admin keys, for the repository's load and unload.
    pub admin: AdminGuard,
    pub bounds: body::Bounds,
}

impl Front {
    /// The answer refusing a request whose `authorization` carries no
    /// valid key; `None` admits it.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        self.auth.check(headers).err().map(answer::unauthorized)
    }

    /// Answers one call whose body the core scores or joins (`method`, as
    /// metrics name it): checks the key, admits it against
    /// --max-concurrent-requests (429), reads its body within bounds, hands
    /// it to `handle`, records the outcome once, and answers with the
    /// call's request id.
    pub async fn answer(
        &self,
        method: &'static str,
        headers: &HeaderMap,
        body: Body,
        handle: impl for<'a> FnOnce(Bytes, &'a Call) -> BoxFuture<'a, Result<Response, Refused>>,
    ) -> Response {
        if let Some(refused) = self.refusal(headers) {
            return refused;
        }
        let call = self.serving.call(headers, SERVICE, method);
        let result = async {
            requested_timeout(headers)?;
            let _permit = self.serving.admit()?;
            let bytes = body::read(headers, body, &self.bounds).await?;
            handle(bytes, &call).await
        }
        .await;
        let response = answer::finish(&call, result).unwrap_or_else(IntoResponse::into_response);
        answer::with_request_id(&call, response)
    }
}

/// Every HTTP route.
pub fn router(front: Arc<Front>) -> axum::Router {
    rest::routes().merge(score::routes()).fallback(rest::no_route).with_state(front)
}

/// Serves `app` to the connections `incoming` yields until `stop` resolves;
/// then stops accepting, lets each connection finish the request it is
/// answering, and returns when all are closed. A connection is closed when
/// it has waited `idle` for a request's head (between requests, or a
/// slow head), or when its head exceeds the limit (431).
pub async fn serve<IO>(
    mut incoming: ReceiverStream<io::Result<Counted<IO>>>,
    app: axum::Router,
    idle: Duration,
    stop: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (closing, closed) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(Ok(io)) = next else { break };
        let service = TowerToHyperService::new(app.clone());
        let mut closed = closed.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(idle).max_header_size(MAX_HEAD_BYTES);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(incoming);
    let _ = closing.send(());
    while connections.join_next().await.is_some() {}
}
