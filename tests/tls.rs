//! TLS and mTLS on the gRPC port, with certificates made here at test time
//! (rcgen): TLS works, plaintext to a TLS port fails, mTLS refuses clients
//! without a certificate or with one from another CA, certificates reload
//! without a restart, and the plaintext health-only port serves probes.

mod common;

use candela_client::Client;
use candela_server::testing::{TestServer, demo_models, eventually, rows, settings};
use common::wait_for;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;

/// A throwaway certificate authority.
struct Authority {
    pem: String,
    params: CertificateParams,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Authority { pem, params, key }
    }

    /// A leaf certificate for `names`, signed by this authority: (cert PEM, key PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A server with a certificate for `localhost` issued by `ca` that requires
/// client certificates from `clients` (files written to `dir`), plus `extra` flags.
async fn start_mtls(dir: &Path, ca: &Authority, clients: &Authority, extra: &[&str]) -> TestServer {
    let (cert, key) = ca.issue(&["localhost"]);
    let files = [write(dir, "cert.pem", &cert), write(dir, "key.pem", &key), write(dir, "clients.pem", &clients.pem)];
    let mut args = vec!["--tls-cert", &files[0], "--tls-key", &files[1], "--tls-client-ca", &files[2]];
    args.extend_from_slice(extra);
    TestServer::start_with(settings(&demo_models(), &args)).await
}

async fn tls_channel(
    port: u16,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

#[tokio::test]
async fn tls_serves_and_plaintext_to_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let (cert, key) = (write(dir.path(), "cert.pem", &cert), write(dir.path(), "key.pem", &key));
    let server = TestServer::start_with(settings(&demo_models(), &["--tls-cert", &cert, "--tls-key", &key])).await;
    let port = server.addr.port();
    let mut client = Client::from_channel(tls_channel(port, &ca.pem, None).await.unwrap());
    wait_for(&mut client, "", ServingStatus::Serving).await;
    assert!(client.predict("retail", rows("retail", 1).values).await.is_ok());

    let plaintext = Client::connect(&server.url, Duration::from_secs(2)).await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(mut client) => client.health("").await.is_err(),
    };
    assert!(refused, "a plaintext client was served on the TLS port");

    let stranger = Authority::new("another CA");
    let untrusted = tls_channel(port, &stranger.pem, None).await;
    let refused = match untrusted {
        Err(_) => true,
        Ok(channel) => Client::from_channel(channel).health("").await.is_err(),
    };
    assert!(refused, "a client trusting another CA accepted the server");
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("server CA");
    let clients = Authority::new("client CA");
    let rogue = Authority::new("rogue CA");
    let server = start_mtls(dir.path(), &ca, &clients, &[]).await;
    let port = server.addr.port();

    let good = clients.issue(&["caller"]);
    let mut client = Client::from_channel(tls_channel(port, &ca.pem, Some(&good)).await.unwrap());
    wait_for(&mut client, "", ServingStatus::Serving).await;
    assert!(client.predict("sme", rows("sme", 1).values).await.is_ok());

    for identity in [None, Some(rogue.issue(&["caller"]))] {
        let refused = match tls_channel(port, &ca.pem, identity.as_ref()).await {
            Err(_) => true,
            Ok(channel) => Client::from_channel(channel).health("").await.is_err(),
        };
        assert!(
            refused,
            "a client {} was served",
            if identity.is_some() { "with a rogue certificate" } else { "without a certificate" }
        );
    }
}

/// curl's HTTP status for `url` with `args` (0 when no TLS session or answer came).
async fn curl_status(url: &str, args: &[&str]) -> u16 {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
}

#[tokio::test]
async fn the_http_port_serves_tls_from_the_same_certificates_with_the_same_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("server CA");
    let clients = Authority::new("client CA");
    let http = common::free_port();
    let port = http.rsplit_once(':').unwrap().1.to_string();
    let server = start_mtls(dir.path(), &ca, &clients, &["--http-listen", &http]).await;
    let good = clients.issue(&["caller"]);
    let mut client = Client::from_channel(tls_channel(server.addr.port(), &ca.pem, Some(&good)).await.unwrap());
    wait_for(&mut client, "", ServingStatus::Serving).await;

    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let (client_cert, client_key) = (write(dir.path(), "c.pem", &good.0), write(dir.path(), "c.key", &good.1));
    let url = format!("https://localhost:{port}/v2/health/ready");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let trusted = ["--resolve", &resolve, "--cacert", &ca_file];
    let identity = ["--cert", client_cert.as_str(), "--key", client_key.as_str()];
    assert_eq!(curl_status(&url, &[&trusted[..], &identity].concat()).await, 200, "HTTPS with a client certificate");
    assert_eq!(curl_status(&url, &trusted).await, 0, "HTTPS without a client certificate is refused");
    assert_eq!(curl_status(&format!("http://{http}/v2/health/ready"), &[]).await, 0, "plaintext to the TLS port");
}

#[tokio::test]
async fn certificates_reload_without_a_restart_and_probes_use_the_plaintext_health_port() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Authority::new("old CA");
    let new_ca = Authority::new("new CA");
    let (cert, key) = old_ca.issue(&["localhost"]);
    let (cert_path, key_path) = (write(dir.path(), "cert.pem", &cert), write(dir.path(), "key.pem", &key));
    let probe_address = common::free_port();
    let server = TestServer::start_with(settings(
        &demo_models(),
        &["--tls-cert", &cert_path, "--tls-key", &key_path, "--health-listen", &probe_address],
    ))
    .await;
    let port = server.addr.port();

    // The probe port: plaintext, health only.
    // `run` binds the probe port as it starts: retry until it is there.
    let probe_url = format!("http://{probe_address}");
    let listening = async || Client::connect(&probe_url, Duration::from_secs(5)).await.is_ok();
    eventually(Duration::from_secs(15), "the probe port listening", listening).await;
    let mut probe = Client::connect(&probe_url, Duration::from_secs(5)).await.unwrap();
    wait_for(&mut probe, "candela.v1.Inference", ServingStatus::Serving).await;
    let status = probe.predict("retail", rows("retail", 1).values).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "the probe port serves health only");

    // Swap in a certificate from another CA: new connections get it.
    let (cert, key) = new_ca.issue(&["localhost"]);
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    let served = async || match tls_channel(port, &new_ca.pem, None).await {
        Ok(channel) => Client::from_channel(channel).health("").await.is_ok(),
        Err(_) => false,
    };
    eventually(Duration::from_secs(15), "the new certificate served", served).await;
}

#[tokio::test]
async fn incomplete_or_broken_tls_settings_stop_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "cert.pem", "not a certificate");
    let error =
        TestServer::start_with(settings(&demo_models(), &["--tls-cert", &cert])).await.join().await.unwrap_err();
    assert!(error.to_string().contains("TLS needs both --tls-cert and --tls-key"), "{error}");
    let key = write(dir.path(), "key.pem", "not a key");
    let error = TestServer::start_with(settings(&demo_models(), &["--tls-cert", &cert, "--tls-key", &key]))
        .await
        .join()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cert.pem: holds no PEM certificate"), "{error}");
}
