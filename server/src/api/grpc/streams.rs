//! Bidirectional streams: each message of a stream is answered on its own,
//! in order, admitted and timed on its own, and a stream that goes quiet or
//! sends bytes that are not its messages is ended.

use crate::api::call::Call;
use crate::api::gate;
use crate::api::serving::Serving;
use futures::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Status, Streaming};

/// The response stream of a streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers a bidirectional stream: each message gets its own `Call`, timed
/// and routed on its own, and is answered in order by `answer`, which admits
/// it against --max-concurrent-requests itself: an open stream holds no slot
/// while it has nothing being scored, so idle streams cannot lock others out.
/// A stream that sends nothing for --stream-idle-seconds is ended with
/// UNAVAILABLE; one that sends bytes that are not its messages, with
/// INVALID_ARGUMENT (counted).
pub fn message_stream<In, Out, F, Fut>(
    serving: &Arc<Serving>,
    stream: Call,
    inbound: Streaming<In>,
    answer: F,
) -> ResponseStream<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(Arc<Serving>, In, Call) -> Fut + Send + 'static,
    Fut: Future<Output = Out> + Send + 'static,
{
    let idle = serving.limits.stream_idle;
    let in_flight = serving.limits.stream_in_flight;
    let serving = serving.clone();
    let answers = tokio_stream::StreamExt::timeout(inbound, idle)
        .map(move |message| {
            let call = stream.message();
            let answer = match message {
                Ok(Ok(message)) => Ok(answer(serving.clone(), message, call)),
                Ok(Err(status)) => match gate::undecodable(&status) {
                    Some(error) => Err(call.refuse(error)),
                    None => Err(status),
                },
                Err(_elapsed) => Err(Status::unavailable(format!(
                    "the stream sent no message for {} s (--stream-idle-seconds); open a new one when there is work",
                    idle.as_secs_f64()
                ))),
            };
            async move { Ok(answer?.await) }
        })
        .buffered(in_flight);
    Box::pin(answers)
}
