//! Accepting connections on the gRPC and HTTP ports so that nobody can exhaust the
//! server with connections alone: at most `--max-connections` are open at once
//! (beyond that, new ones wait in the kernel's accept queue), a connection
//! must send its first bytes (the HTTP/2 preface, an HTTP/1.1 request, or
//! the TLS handshake)
//! within `--handshake-timeout-seconds`, and running out of file descriptors
//! backs the accept loop off instead of spinning on the error. Handshakes run
//! concurrently, so one slow peer never holds up the others.

use futures::future::BoxFuture;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The length of the HTTP/2 client connection preface (RFC 9113, 3.4).
const PREFACE_LEN: usize = 24;

/// The first and the longest pause after an accept error such as EMFILE.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// How connections are accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// Turns an accepted TCP stream into the connection the server speaks over
/// (itself, or a TLS session); runs under the handshake timeout.
pub type Handshake<IO> = Arc<dyn Fn(TcpStream) -> BoxFuture<'static, io::Result<IO>> + Send + Sync>;

/// The plaintext handshake of the gRPC port: waits until the peer has sent
/// the whole HTTP/2 preface (or closed), so a connection that never speaks
/// is not handed to the HTTP/2 server, which would keep it until
/// --max-connection-age.
pub fn plaintext() -> Handshake<TcpStream> {
    first_bytes(PREFACE_LEN)
}

/// The plaintext handshake of the HTTP port: the request's first byte.
pub fn plaintext_http() -> Handshake<TcpStream> {
    first_bytes(1)
}

/// A handshake that waits for the peer's first `count` bytes (or its close).
fn first_bytes(count: usize) -> Handshake<TcpStream> {
    Arc::new(move |tcp: TcpStream| {
        Box::pin(async move {
            let mut preface = [0u8; PREFACE_LEN];
            loop {
                tcp.readable().await?;
                match tcp.peek(&mut preface[..count]).await? {
                    0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before speaking")),
                    n if n >= count => return Ok(tcp),
                    // Part of the preface: it is still arriving.
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        })
    })
}

/// Accepts connections on `listener` under `limits`, hands each to
/// `handshake`, and yields those that complete it, for tonic's
/// `serve_with_incoming`. Stops when the server drops the stream.
pub fn incoming<IO>(
    listener: TcpListener,
    limits: ConnectionLimits,
    handshake: Handshake<IO>,
) -> ReceiverStream<io::Result<Counted<IO>>>
where
    IO: Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        let mut backoff = BACKOFF.0;
        loop {
            let permit = tokio::select! {
                permit = open.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
                _ = sender.closed() => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = sender.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => {
                    backoff = BACKOFF.0;
                    accepted
                }
                Err(error) if out_of_resources(&error) => {
                    tracing::warn!(%error, pause_ms = backoff.as_millis() as u64, "cannot accept connections: out of resources; pausing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
                Err(error) => {
                    // A connection that failed before it was accepted (reset, aborted).
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let info = tcp.connect_info();
            let handshake = handshake.clone();
            let accepted = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, handshake(tcp)).await {
                    Ok(Ok(io)) => {
                        let _ = accepted.send(Ok(Counted { io, info, _permit: permit })).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "connection handshake failed"),
                    Err(_) => tracing::debug!(%peer, "connection closed: no handshake within the timeout"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// Errors that mean the process or the system is out of something (file
/// descriptors, buffers, memory): retrying at once would spin.
fn out_of_resources(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// A connection holding one of the --max-connections places until it closes.
pub struct Counted<IO> {
    io: IO,
    info: TcpConnectInfo,
    _permit: OwnedSemaphorePermit,
}

impl<IO> Connected for Counted<IO> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
