//! The live model repository, against the real server and client: versions
//! published, half-written, completed, removed and reloaded by call while a
//! load loop runs, without one failed call and with every answer from a
//! version published at that moment; broken versions at start under
//! `--on-broken-model skip`; digests; the version policy; and repository
//! control, which needs an admin key.

mod common;

use candela_client::Client;
use candela_client::oip;
use candela_server::testing::{FEATURES, TestServer, demo_models, eventually, rows, settings};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

/// A repository holding the demo `retail` model as each of `versions`.
fn repository(versions: &[u64]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for version in versions {
        publish(dir.path(), *version);
    }
    dir
}

/// Publishes the demo retail model as `retail/<version>` the way a publisher
/// should: the weights first, model.json (listing their digest) last.
fn publish(root: &Path, version: u64) {
    publish_as(root, "retail", version);
}

/// Publishes the demo model of `segment` as `<segment>/<version>`, as `publish` does.
fn publish_as(root: &Path, segment: &str, version: u64) {
    let (from, to) = (demo_models().join(segment).join("1"), root.join(format!("{segment}/{version}")));
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("model.safetensors"), to.join("model.safetensors")).unwrap();
    std::fs::copy(from.join("model.json"), to.join("model.json")).unwrap();
}

/// Versions of `retail` the server lists, by RepositoryIndex, with their state and reason.
async fn index(client: &Client) -> Vec<(String, String, String, String)> {
    let request = oip::RepositoryIndexRequest { repository_name: String::new(), ready: false };
    let index = client.open_inference().repository_index(request).await.unwrap().into_inner();
    index.models.into_iter().map(|m| (m.name, m.version, m.state, m.reason)).collect()
}

/// Waits (10 s at most) until `check` holds for the index.
async fn until_index(client: &Client, what: &str, check: impl Fn(&[(String, String, String, String)]) -> bool) {
    eventually(Duration::from_secs(10), what, async || check(&index(client).await)).await;
}

/// Waits until the callers have had `calls` more calls answered: each phase
/// of a test under load lasts a number of calls, not a time.
async fn more_calls(answered: &AtomicUsize, calls: usize) {
    let target = answered.load(Ordering::Relaxed) + calls;
    let what = format!("{calls} more calls answered");
    eventually(Duration::from_secs(60), &what, async || answered.load(Ordering::Relaxed) >= target).await;
}

fn ready(index: &[(String, String, String, String)], version: &str) -> bool {
    index.iter().any(|(name, v, state, _)| name == "retail" && v == version && state == "READY")
}

/// Which versions were published when: every change appends the new set.
#[derive(Default)]
struct Published(Mutex<Vec<(Instant, BTreeSet<u64>)>>);

impl Published {
    fn set(&self, versions: &[u64]) {
        self.0.lock().unwrap().push((Instant::now(), versions.iter().copied().collect()));
    }

    /// Whether `version` was published at some moment in [from, to].
    fn published_during(&self, version: u64, from: Instant, to: Instant) -> bool {
        let log = self.0.lock().unwrap();
        log.iter().enumerate().any(|(index, (at, set))| {
            let until = log.get(index + 1).map_or(to, |(next, _)| *next);
            *at <= to && until >= from && set.contains(&version)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_change_under_load_without_one_failed_call() {
    let repo = repository(&[1]);
    let root = repo.path().to_path_buf();
    let keys = tempfile::tempdir().unwrap();
    let admin_keys = keys.path().join("admin");
    std::fs::write(&admin_keys, "admin-key-5d0e\n").unwrap();
    let flags = ["--repository-poll-seconds", "0.2", "--admin-keys-file", admin_keys.to_str().unwrap()];
    let server = TestServer::start_with(settings(&root, &flags)).await;
    server.wait_until_serving().await;
    let client = common::client(&server).await;
    let operator = client.clone().with_api_key("admin-key-5d0e").unwrap();
    let published = Arc::new(Published::default());
    published.set(&[1]);

    // The load loop: 4 callers, each Predict checked against what was published.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let row = rows("retail", 1).values;
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (mut client, stop, published, row) = (client.clone(), stop.clone(), published.clone(), row.clone());
        let answered = answered.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let answer = client.predict("retail", row.clone()).await;
                let ended = Instant::now();
                let answer = answer.unwrap_or_else(|status| panic!("a call failed during the swaps: {status:?}"));
                let version = answer.model.unwrap().version;
                assert!(
                    published.published_during(version, started, ended),
                    "answered by version {version}, which was not published during the call"
                );
                latencies.push((started, ended - started));
                answered.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let steady_from = Instant::now();
    more_calls(&answered, 400).await;
    let swaps_from = Instant::now();

    // A new version: served within a poll or two.
    published.set(&[1, 2]);
    publish(&root, 2);
    until_index(&client, "version 2 is served", |index| ready(index, "2")).await;

    // A half-written version: model.json (with the weights' digest) first, then
    // half the weights. It must never be served.
    let partial = root.join("retail/3");
    std::fs::create_dir_all(&partial).unwrap();
    let weights = std::fs::read(demo_models().join("retail/1/model.safetensors")).unwrap();
    std::fs::copy(demo_models().join("retail/1/model.json"), partial.join("model.json")).unwrap();
    std::fs::write(partial.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    until_index(&client, "the half-written version 3 is reported", |index| {
        index
            .iter()
            .any(|(_, v, state, reason)| v == "3" && state == "UNAVAILABLE" && reason.contains("model.safetensors"))
    })
    .await;
    more_calls(&answered, 100).await;

    // The weights completed: now it is served.
    published.set(&[1, 2, 3]);
    std::fs::write(partial.join("model.safetensors"), &weights).unwrap();
    until_index(&client, "version 3 is served once complete", |index| ready(index, "3")).await;
    more_calls(&answered, 100).await;

    // Removed: its calls finish, new ones go to version 2.
    std::fs::remove_dir_all(root.join("retail/3")).unwrap();
    until_index(&client, "version 3 is gone", |index| !index.iter().any(|(_, v, _, _)| v == "3")).await;
    published.set(&[1, 2]);

    // Explicit reloads (what `candela repository reload` sends), of the
    // whole repository and of the segment, change nothing.
    for name in ["", "retail"] {
        let request = oip::RepositoryModelLoadRequest { model_name: name.into(), ..Default::default() };
        operator.open_inference().repository_model_load(request).await.unwrap();
    }
    more_calls(&answered, 200).await;
    let swaps_to = Instant::now();
    more_calls(&answered, 200).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut steady = Vec::new();
    let mut swapping = Vec::new();
    for caller in callers {
        for (started, latency) in caller.await.unwrap() {
            if started >= steady_from && started < swaps_from {
                steady.push(latency);
            } else if started >= swaps_from && started < swaps_to {
                swapping.push(latency);
            }
        }
    }
    let quantile = |latencies: &mut Vec<Duration>, q: f64| {
        latencies.sort();
        latencies[((latencies.len() - 1) as f64 * q) as usize]
    };
    assert!(steady.len() > 50 && swapping.len() > 50, "{} steady and {} swapping calls", steady.len(), swapping.len());
    eprintln!(
        "live repository: {} calls in steady state p50 {:?} p99 {:?}; {} calls during the swaps p50 {:?} p99 {:?}; none failed",
        steady.len(),
        quantile(&mut steady, 0.5),
        quantile(&mut steady, 0.99),
        swapping.len(),
        quantile(&mut swapping, 0.5),
        quantile(&mut swapping, 0.99),
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn broken_versions_at_start_are_skipped_and_reported_with_skip() {
    let repo = repository(&[1]);
    let broken = repo.path().join("corporate/1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(demo_models().join("corporate/1/model.json"), broken.join("model.json")).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"not a safetensors file").unwrap();

    // Refused by default, naming the file.
    let refused = TestServer::start_with(settings(repo.path(), &[])).await.join().await.unwrap_err();
    assert!(format!("{refused:#}").contains("corporate/1/model.safetensors"), "{refused:#}");

    let server =
        TestServer::start_with(settings(repo.path(), &["--on-broken-model", "skip", "--default-segment", "retail"]))
            .await;
    server.wait_until_serving().await;
    let mut client = common::client(&server).await;
    client.predict("retail", rows("retail", 1).values).await.unwrap();
    let missing = client.predict("corporate", rows("corporate", 1).values).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let index = index(&client).await;
    let corporate = index.iter().find(|(name, ..)| name == "corporate").expect("corporate is listed");
    assert_eq!(corporate.2, "UNAVAILABLE");
    assert!(corporate.3.contains("model.safetensors"), "{corporate:?}");
    assert!(ready(&index, "1"));

    // Fixed: served within a poll (SIGHUP-free: an admin reload isn't configured, so poll).
    std::fs::copy(demo_models().join("corporate/1/model.safetensors"), broken.join("model.safetensors")).unwrap();
    let served = async || client.predict("corporate", rows("corporate", 1).values).await.is_ok();
    eventually(Duration::from_secs(30), "the fixed version served", served).await;
}

/// An ONNX graph (the torch fixture) whose first initializer declares
/// `[8, 2^40]` values and holds none.
fn hostile_onnx(dir: &Path) {
    let fixture = candela_server::testing::repo_root().join("tests/fixtures/formats/repo/torch-softmax/1");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fixture.join("model.json"), dir.join("model.json")).unwrap();
    let mut model = onnx_schema::decode(&std::fs::read(fixture.join("model.onnx")).unwrap()).unwrap();
    let weight = &mut model.graph.as_mut().unwrap().initializer[0];
    weight.dims = vec![8, 1 << 40];
    weight.raw_data.clear();
    weight.float_data.clear();
    std::fs::write(dir.join("model.onnx"), prost::Message::encode_to_vec(&model)).unwrap();
}

#[tokio::test]
async fn a_hostile_onnx_shape_is_refused_alone_at_start_and_live() {
    let repo = repository(&[1]);
    hostile_onnx(&repo.path().join("torch/1"));
    let refused = TestServer::start_with(settings(repo.path(), &[])).await.join().await.unwrap_err();
    let refused = format!("{refused:#}");
    assert!(refused.contains("torch/1/model.onnx") && refused.contains("holds 0 values for shape"), "{refused}");

    let flags = ["--on-broken-model", "skip", "--default-segment", "retail", "--repository-poll-seconds", "0.1"];
    let server = TestServer::start_with(settings(repo.path(), &flags)).await;
    server.wait_until_serving().await;
    let client = common::client(&server).await;
    let index = index(&client).await;
    let torch = index.iter().find(|(name, ..)| name == "torch").expect("torch is listed");
    assert_eq!(torch.2, "UNAVAILABLE", "{torch:?}");
    assert!(torch.3.contains("torch/1/model.onnx"), "{torch:?}");
    // The reason names the file inside the repository, never the server's own paths.
    assert!(!torch.3.contains(&repo.path().display().to_string()), "{torch:?}");
    // Live: a second hostile version does not hold back a change elsewhere.
    hostile_onnx(&repo.path().join("torch/2"));
    publish(repo.path(), 2);
    until_index(&client, "retail 2 is served beside the hostile versions", |index| {
        ready(index, "2")
            && index.iter().any(|(name, v, state, _)| name == "torch" && v == "2" && state == "UNAVAILABLE")
    })
    .await;
}

#[tokio::test]
async fn a_version_is_served_only_once_its_files_match_their_digests() {
    let repo = repository(&[1]);
    let server = TestServer::start_with(settings(repo.path(), &["--repository-poll-seconds", "0.1"])).await;
    server.wait_until_serving().await;
    let client = common::client(&server).await;

    // A complete safetensors file that is not the one model.json names.
    publish(repo.path(), 2);
    let json = std::fs::read_to_string(repo.path().join("retail/2/model.json")).unwrap();
    let digest = json.split("\"model.safetensors\": \"").nth(1).unwrap()[..64].to_string();
    let wrong = json.replace(&digest, &"0".repeat(64));
    std::fs::write(repo.path().join("retail/2/model.json"), wrong).unwrap();
    until_index(&client, "the mismatching version is reported", |index| {
        index.iter().any(|(_, v, state, reason)| v == "2" && state == "UNAVAILABLE" && reason.contains("SHA-256"))
    })
    .await;
    let mut calls = client.clone();
    assert_eq!(calls.predict("retail", rows("retail", 1).values).await.unwrap().model.unwrap().version, 1);

    std::fs::write(repo.path().join("retail/2/model.json"), json).unwrap();
    until_index(&client, "the matching version is served", |index| ready(index, "2")).await;
    assert_eq!(calls.predict("retail", rows("retail", 1).values).await.unwrap().model.unwrap().version, 2);
}

#[tokio::test]
async fn latest_n_serves_only_the_newest_versions() {
    let repo = repository(&[1, 2, 3]);
    let server = TestServer::start_with(settings(repo.path(), &["--version-policy", "latest:2"])).await;
    server.wait_until_serving().await;
    let mut client = common::client(&server).await;
    let index = index(&client).await;
    assert!(ready(&index, "3") && ready(&index, "2"), "{index:?}");
    let old = index.iter().find(|(_, v, ..)| v == "1").unwrap();
    assert_eq!(old.2, "UNAVAILABLE");
    assert!(old.3.contains("latest:2"), "{old:?}");
    let pinned = client.predict(candela_client::ModelId::pinned("retail", 1), rows("retail", 1).values).await;
    assert_eq!(pinned.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.predict("retail", vec![0.5; FEATURES]).await.unwrap().model.unwrap().version, 3);
}

#[tokio::test]
async fn versions_loaded_are_bounded_per_segment_and_in_all() {
    let repo = repository(&[1, 2, 3, 4, 5, 6]);
    publish_as(repo.path(), "corporate", 1);
    let flags = ["--max-versions-per-segment", "4", "--max-loaded-versions", "3", "--default-segment", "retail"];
    let server = TestServer::start_with(settings(repo.path(), &flags)).await;
    server.wait_until_serving().await;
    let client = common::client(&server).await;
    let index = index(&client).await;
    let state = |name: &str, version: &str| {
        index
            .iter()
            .find(|(n, v, ..)| n == name && v == version)
            .map(|(_, _, state, reason)| (state.clone(), reason.clone()))
            .unwrap()
    };
    // Each segment's newest first (retail 6, corporate 1), then retail's second newest (5).
    for (name, version) in [("retail", "6"), ("retail", "5"), ("corporate", "1")] {
        assert_eq!(state(name, version).0, "READY", "{name} {version}: {index:?}");
    }
    let (over, reason) = state("retail", "4");
    assert!(over == "UNAVAILABLE" && reason.contains("--max-loaded-versions 3"), "{index:?}");
    for version in ["1", "2"] {
        let (old, reason) = state("retail", version);
        assert!(old == "UNAVAILABLE" && reason.contains("--max-versions-per-segment 4"), "{index:?}");
    }
}

#[tokio::test]
async fn the_publish_steps_are_no_errors_and_removing_model_json_unpublishes() {
    let repo = repository(&[1]);
    // The documented first step, the weights (model.json not yet), while the
    // server (re)starts: it starts, even refusing broken models.
    let dir = repo.path().join("retail/2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(demo_models().join("retail/1/model.safetensors"), dir.join("model.safetensors")).unwrap();
    let metrics = common::free_port();
    let flags = ["--repository-poll-seconds", "0.1", "--metrics-listen", &metrics, "--on-broken-model", "refuse"];
    let server = TestServer::start_with(settings(repo.path(), &flags)).await;
    server.wait_until_serving().await;
    let client = common::client(&server).await;
    let mut calls = client.clone();
    until_index(&client, "version 2 is listed as waiting", |index| {
        index.iter().any(|(_, v, state, reason)| {
            v == "2" && state == "UNAVAILABLE" && reason.contains("waiting for model.json")
        })
    })
    .await;
    assert_eq!(calls.predict("retail", rows("retail", 1).values).await.unwrap().model.unwrap().version, 1);
    // The last step, model.json: served.
    std::fs::copy(demo_models().join("retail/1/model.json"), dir.join("model.json")).unwrap();
    until_index(&client, "version 2 is served once published", |index| ready(index, "2")).await;
    assert_eq!(calls.predict("retail", rows("retail", 1).values).await.unwrap().model.unwrap().version, 2);
    // Unpublishing starts with model.json: version 2 stops serving, and the index says so.
    std::fs::remove_file(dir.join("model.json")).unwrap();
    until_index(&client, "version 2 is unpublished", |index| {
        index.iter().any(|(_, v, state, reason)| v == "2" && state == "UNAVAILABLE" && reason.contains("waiting"))
    })
    .await;
    assert_eq!(calls.predict("retail", rows("retail", 1).values).await.unwrap().model.unwrap().version, 1);
    let pinned = calls.predict(candela_client::ModelId::pinned("retail", 2), rows("retail", 1).values).await;
    assert_eq!(pinned.unwrap_err().code(), Code::NotFound);
    let failed = common::metric(&metrics, "candela_repository_reloads_total", &[("result", "failed")]).await;
    assert_eq!(failed, 0.0, "no publish step is a failed reload");
    // A file where a version directory belongs is reported, not ignored.
    std::fs::write(repo.path().join("retail/3"), b"not a directory").unwrap();
    let reported =
        async || common::metric(&metrics, "candela_repository_refusals_total", &[("reason", "refused")]).await >= 1.0;
    eventually(Duration::from_secs(10), "a file named like a version reported", reported).await;
}

#[tokio::test]
async fn loading_and_unloading_need_an_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, admin) = (dir.path().join("keys"), dir.path().join("admin"));
    std::fs::write(&keys, "inference-key-7f3a\n").unwrap();
    std::fs::write(&admin, "admin-key-91c2\n").unwrap();
    let repo = repository(&[1]);
    let flags = [
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--admin-keys-file",
        admin.to_str().unwrap(),
        "--repository-poll-seconds",
        "0",
    ];
    let server = TestServer::start_with(settings(repo.path(), &flags)).await;
    server.wait_until_serving().await;
    let anonymous = common::client(&server).await;
    let inference = anonymous.clone().with_api_key("inference-key-7f3a").unwrap();
    let operator = anonymous.clone().with_api_key("admin-key-91c2").unwrap();
    let unload = || oip::RepositoryModelUnloadRequest { model_name: "retail".into(), ..Default::default() };
    let load = || oip::RepositoryModelLoadRequest { model_name: "retail".into(), ..Default::default() };

    let status = anonymous.open_inference().repository_model_unload(unload()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = inference.open_inference().repository_model_unload(unload()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("admin key"), "{status:?}");
    // The index only reads: an inference key may ask for it.
    assert!(ready(&index(&inference).await, "1"));

    operator.open_inference().repository_model_unload(unload()).await.unwrap();
    let mut scoring = inference.clone();
    let gone = scoring.predict("retail", rows("retail", 1).values).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let unloaded = index(&inference).await;
    assert!(unloaded.iter().all(|(_, _, state, reason)| state == "UNAVAILABLE" && reason.contains("unloaded")));

    // Published while unloaded, then loaded: the newest is served at once (no poll).
    publish(repo.path(), 2);
    operator.open_inference().repository_model_load(load()).await.unwrap();
    assert_eq!(scoring.predict("retail", rows("retail", 1).values).await.unwrap().model.unwrap().version, 2);
    let unknown = oip::RepositoryModelLoadRequest { model_name: "no-such".into(), ..Default::default() };
    let status = operator.open_inference().repository_model_load(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let metadata = operator.open_inference().server_metadata(oip::ServerMetadataRequest {}).await.unwrap();
    assert!(metadata.into_inner().extensions.contains(&"model_repository".to_string()));
}
