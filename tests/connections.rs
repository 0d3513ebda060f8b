//! Connections alone cannot take the server down: a connection that never
//! sends the HTTP/2 preface is closed after --handshake-timeout-seconds (it
//! used to stay until --max-connection-age), and at most --max-connections
//! are served at once; the next waits until one closes, on every port the
//! server listens on, /metrics included. (Running out of file descriptors is
//! tested against the binary, in server/tests/binary.rs.)

mod common;

use candela_server::testing::{TestServer, rows};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the server closes `tcp` (EOF or reset), at most `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue, // the server's SETTINGS, if it got that far
            Err(_) => panic!("the connection was still open after {within:?}"),
        }
    }
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_after_the_handshake_timeout() {
    let server = TestServer::start(&["--handshake-timeout-seconds", "1"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(); // 16 of the preface's 24 bytes
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(800), "closed after {took:?}, before the timeout");
    closed_within(&mut partial, Duration::from_secs(10)).await;
    // A real client is unaffected.
    let mut client = common::client(&server).await;
    assert!(client.predict("retail", rows("retail", 1).values).await.is_ok());
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let server = TestServer::start(&["--max-connections", "2", "--handshake-timeout-seconds", "30"]).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    let url = server.url.clone();
    let call = || {
        let url = url.clone();
        async move {
            let mut client = candela_client::Client::connect(&url, Duration::from_secs(30)).await?;
            client.predict("retail", rows("retail", 1).values).await.map_err(anyhow::Error::from)
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(1), call()).await.is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(10), call()).await.expect("served once a place was free");
    assert!(answer.is_ok(), "{answer:?}");
}

#[tokio::test]
async fn the_metrics_port_is_held_to_the_same_connection_limit() {
    let metrics = common::free_port();
    let flags = ["--max-connections", "1", "--handshake-timeout-seconds", "30", "--metrics-listen", &metrics];
    let server = TestServer::start(&flags).await;
    let silent = TcpStream::connect(&metrics).await.unwrap();
    let scrape = || common::metric(&metrics, "candela_in_flight_requests", &[]);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), scrape()).await.is_err(),
        "a second connection to /metrics was served while one was open"
    );
    drop(silent);
    let scraped = tokio::time::timeout(Duration::from_secs(10), scrape()).await;
    assert_eq!(scraped.expect("scraped once a place was free"), 0.0);
    drop(server);
}
