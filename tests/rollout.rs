//! Release safety against the real server and client, live traffic on
//! loopback: a canary split by routing key, a broken canary rolled back by
//! the guard, a 100 % shadow whose exported agreement matches the agreement
//! computed offline, drift on a shifted feature, a policy naming an unloaded
//! version refused while the old one keeps serving. (An operator's rollback
//! through the `candela` CLI is in client/tests/cli.rs.)

mod common;

use candela_client::{Client, ModelId, proto};
use candela_server::testing::{FEATURES, TestServer, demo_models, eventually, rows, settings};
use candela_server::train::synthetic::Segment;
use candela_server::train::training::{self, TrainConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Request;

const ADMIN_KEY: &str = "admin-key-c4n4ry";

/// Copies the demo model of `from` (its version 1) into `root` as `retail/<version>`.
fn publish(root: &Path, from: &str, version: u64) {
    publish_as(root, from, "retail", version);
}

/// Copies the demo model of `from` (its version 1) into `root` as `<segment>/<version>`.
fn publish_as(root: &Path, from: &str, segment: &str, version: u64) {
    let (source, target) = (demo_models().join(from).join("1"), root.join(segment).join(version.to_string()));
    std::fs::create_dir_all(&target).unwrap();
    for file in ["model.safetensors", "model.json"] {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
}

/// Writes `retail/rollout.json` whole (a temporary file renamed into place).
fn write_policy(root: &Path, policy: &str) {
    let partial = root.join("retail/.rollout.json.partial");
    std::fs::write(&partial, policy).unwrap();
    std::fs::rename(&partial, root.join("retail/rollout.json")).unwrap();
}

/// A server over `root` with an admin key and metrics on loopback, `extra` flags
/// added; its client and its operator's (admin) client, and the metrics address.
async fn start(root: &Path, extra: &[&str]) -> (TestServer, Client, Client, String, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let admin = keys.path().join("admin");
    std::fs::write(&admin, format!("{ADMIN_KEY}\n")).unwrap();
    let metrics = common::free_port();
    let mut flags = vec!["--admin-keys-file", admin.to_str().unwrap(), "--metrics-listen", &metrics];
    flags.extend_from_slice(extra);
    let server = TestServer::start_with(settings(root, &flags)).await;
    server.wait_until_serving().await;
    let client = common::client(&server).await;
    let operator = client.clone().with_api_key(ADMIN_KEY).unwrap();
    (server, client, operator, metrics, keys)
}

/// Predict on `retail` (no version pinned) with `x-routing-key: key`: the version that answered, or the status.
async fn predict_keyed(client: &mut Client, features: &[f32], key: &str) -> Result<u64, tonic::Status> {
    let mut request = Request::new(proto::PredictRequest {
        explain: 0,
        segment: "retail".into(),
        version: 0,
        features: features.to_vec(),
        text: Vec::new(),
    });
    request.metadata_mut().insert("x-routing-key", key.parse().unwrap());
    let answer = client.inference().predict(request).await?.into_inner();
    Ok(answer.model.unwrap().version)
}

/// The rollout status of `retail`.
async fn status(operator: &Client) -> proto::SegmentRollout {
    let request = proto::RolloutStatusRequest { segment: "retail".into() };
    let mut answer = operator.rollouts().status(request).await.unwrap().into_inner();
    assert_eq!(answer.segments.len(), 1);
    answer.segments.remove(0)
}

/// Polls the rollout status of `retail` until `done` holds (`seconds` at most).
async fn until_status(
    operator: &Client,
    seconds: u64,
    what: &str,
    done: impl Fn(&proto::SegmentRollout) -> bool,
) -> proto::SegmentRollout {
    eventually(Duration::from_secs(seconds), what, async || done(&status(operator).await)).await;
    status(operator).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_takes_its_share_by_routing_key_and_a_key_stays_on_one_version() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 1);
    publish(root.path(), "retail", 2);
    write_policy(root.path(), r#"{"stable": 1, "canary": {"version": 2, "percent": 20}}"#);
    let (server, client, operator, _metrics, _keys) = start(root.path(), &[]).await;
    let row = rows("retail", 1).values;

    let calls = 5_000;
    let answers = futures::future::join_all((0..16).map(|worker| {
        let (mut client, row) = (client.clone(), row.clone());
        async move {
            let mut versions = Vec::new();
            for i in (worker..calls).step_by(16) {
                versions.push((i, predict_keyed(&mut client, &row, &format!("customer-{i}")).await.unwrap()));
            }
            versions
        }
    }))
    .await;
    let by_key: BTreeMap<usize, u64> = answers.into_iter().flatten().collect();
    let canary = by_key.values().filter(|v| **v == 2).count();
    let share = canary as f64 / calls as f64;
    println!("canary share over {calls} keys: {:.2} %", share * 100.0);
    assert!((share - 0.20).abs() <= 0.03, "a 20 % canary took {:.2} %", share * 100.0);

    // The same key lands on the same version, call after call.
    let mut client = client.clone();
    for i in (0..calls).step_by(50) {
        for _ in 0..3 {
            assert_eq!(predict_keyed(&mut client, &row, &format!("customer-{i}")).await.unwrap(), by_key[&i]);
        }
    }
    // A pinned version is always that version.
    for version in [1, 2] {
        let answer = client.predict(ModelId::pinned("retail", version), row.clone()).await.unwrap();
        assert_eq!(answer.model.unwrap().version, version);
    }
    let rollout = status(&operator).await;
    assert_eq!((rollout.stable_version, rollout.canary_version, rollout.canary_percent), (1, 2, 20.0));
    let served: u64 = rollout.versions.iter().map(|v| v.requests).sum();
    assert!(served >= calls as u64, "status counts every request: {rollout:?}");
    server.stop().await.unwrap();
}

/// Trains a small 31-feature retail model into `root` as `retail/<version>`:
/// a canary whose schema no caller sends.
fn publish_wider(root: &Path, version: u64) {
    let config = TrainConfig {
        features: FEATURES + 1,
        train_rows: 2_000,
        held_out_rows: 500,
        epochs: 1,
        ..TrainConfig::default()
    };
    let mut trained = training::train(Segment::Retail, &config).unwrap();
    trained.manifest.provenance.created = "2026-12-01T00:00:00Z".into();
    training::write(&trained, &root.join("retail").join(version.to_string())).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_canary_is_rolled_back_by_the_guard_and_then_nothing_fails() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 3);
    publish_wider(root.path(), 4);
    let window = 0.5;
    write_policy(
        root.path(),
        &format!(
            r#"{{"stable": 3, "canary": {{"version": 4, "percent": 20}},
                "guard": {{"window_seconds": {window}, "min_requests": 20, "max_error_rate": 0.02,
                          "max_p95_ms": 250, "breaches_to_rollback": 2}}}}"#
        ),
    );
    let (server, client, operator, metrics, _keys) = start(root.path(), &[]).await;
    let row = rows("retail", 1).values;

    // Traffic until the guard rolls the canary back (20 s at most).
    let started = Instant::now();
    let (mut calls, mut failed, mut first_failure) = (0usize, 0usize, None);
    let rolled_back_at = loop {
        let outcomes = futures::future::join_all((0..8).map(|worker| {
            let (mut client, row) = (client.clone(), row.clone());
            let key = format!("caller-{calls}-{worker}");
            async move { predict_keyed(&mut client, &row, &key).await }
        }))
        .await;
        for outcome in outcomes {
            calls += 1;
            if let Err(status) = outcome {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(status.message().contains("version 4 expects 31 features"), "{}", status.message());
                failed += 1;
                first_failure.get_or_insert_with(Instant::now);
            }
        }
        if calls % 200 == 0 && !status(&operator).await.rollback_reason.is_empty() {
            break Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the broken canary was never rolled back");
    };
    let rollout = status(&operator).await;
    println!(
        "rolled back after {calls} calls ({failed} failed) in {:.2} s: {}",
        (rolled_back_at - started).as_secs_f64(),
        rollout.rollback_reason
    );
    assert!(rollout.rollback_reason.contains("error rate"), "{rollout:?}");
    assert_eq!(rollout.canary_percent, 0.0);
    assert_eq!(rollout.canary_percent_configured, 20.0);
    // Within breaches_to_rollback windows of the first failure (one more for
    // the window already under way, and the status poll's granularity).
    let took = (rolled_back_at - first_failure.unwrap()).as_secs_f64();
    assert!(took <= 3.0 * window + 1.0, "rolled back {took:.2} s after the first failure");
    // Failures are at most the canary's share of the traffic.
    let failed_share = failed as f64 / calls as f64;
    assert!(failed_share <= 0.20 + 0.05, "{failed} of {calls} calls failed");

    // After the rollback, nothing fails.
    let mut client = client.clone();
    for i in 0..500 {
        assert_eq!(predict_keyed(&mut client, &row, &format!("after-{i}")).await.unwrap(), 3);
    }
    assert_eq!(common::metric(&metrics, "candela_rollout_rollbacks_total", &[("by", "guard")]).await, 1.0);
    assert_eq!(common::metric(&metrics, "candela_rollout_canary_percent", &[("segment", "retail")]).await, 0.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shadow_reports_the_agreement_computed_offline_from_the_same_rows() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 1);
    // Another segment's model as the shadow: the same features, other weights, so they disagree at times.
    publish(root.path(), "sme", 5);
    write_policy(root.path(), r#"{"stable": 1, "shadow": {"version": 5, "percent": 100}}"#);
    publish_as(root.path(), "retail", "plain", 1);
    let (server, mut client, operator, metrics, _keys) = start(root.path(), &[]).await;

    let data = rows("retail", 2_000);
    let mut offline_agreed = 0;
    for batch in data.values.chunks(50 * FEATURES) {
        let answer = client.batch_predict("retail", FEATURES, batch.to_vec()).await.unwrap();
        assert_eq!(answer.model.unwrap().version, 1, "the stable version answers");
        let shadow = client.batch_predict(ModelId::pinned("retail", 5), FEATURES, batch.to_vec()).await.unwrap();
        offline_agreed += answer
            .predictions
            .iter()
            .zip(&shadow.predictions)
            .filter(|(stable, shadow)| stable.class_index == shadow.class_index)
            .count() as u64;
    }
    let accounted = |r: &proto::SegmentRollout| r.shadow.as_ref().map_or(0, |s| s.rows + s.dropped + s.errors);
    let rollout = until_status(&operator, 10, "the shadow never caught up", |r| accounted(r) >= 2_000).await;
    let shadow = rollout.shadow.unwrap();
    println!("shadow: {shadow:?}; offline agreement {offline_agreed} of 2000");
    assert_eq!((shadow.rows, shadow.dropped, shadow.errors), (2_000, 0, 0));
    assert_eq!(shadow.agreed, offline_agreed, "exported agreement = offline agreement");
    assert!(offline_agreed < 2_000, "the two models disagree somewhere, so the comparison means something");
    assert!(shadow.mean_abs_delta > 0.0);
    let exported = common::metric(&metrics, "candela_shadow_agreed_rows_total", &[("version", "5")]).await;
    assert_eq!(exported, offline_agreed as f64);
    assert_eq!(common::metric(&metrics, "candela_shadow_rows_total", &[("version", "5")]).await, 2_000.0);
    // The callers' latency with the shadow on (retail) and off (`plain`, the
    // same model with no policy), interleaved in one run: reported, not
    // asserted (bench/rollout.sh measures it; timings are not for tests).
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let row = rows("retail", 1).values;
    for _ in 0..300 {
        for (segment, samples) in [("retail", &mut on), ("plain", &mut off)] {
            let at = Instant::now();
            client.predict(segment, row.clone()).await.unwrap();
            samples.push(at.elapsed());
        }
    }
    let p99 = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() * 99 / 100]
    };
    let (on, off) = (p99(&mut on), p99(&mut off));
    println!(
        "callers' p99 with a 100 % shadow {on:?}, without {off:?}: ratio {:.2}",
        on.as_secs_f64() / off.as_secs_f64()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_shadow_queue_drops_and_counts_rows_and_callers_never_notice() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 1);
    publish(root.path(), "sme", 5);
    // A slow shadow: each of its passes waits 1 s for company, so its queue fills.
    let manifest_path = root.path().join("retail/5/model.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["batching"] = serde_json::json!({"max_batch_rows": 1_000_000, "max_queue_delay_us": 1_000_000});
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    write_policy(root.path(), r#"{"stable": 1, "shadow": {"version": 5, "percent": 100}}"#);
    let (server, client, operator, metrics, _keys) = start(root.path(), &[]).await;

    let (calls, rows_per_call) = (150, 1_000);
    let data = rows("retail", rows_per_call);
    let answers = futures::future::join_all((0..8).map(|sender| {
        let (mut client, values) = (client.clone(), data.values.clone());
        async move {
            for _ in (sender..calls).step_by(8) {
                let answer = client.batch_predict("retail", FEATURES, values.clone()).await.unwrap();
                assert_eq!(answer.predictions.len(), rows_per_call);
            }
        }
    }));
    answers.await;
    let sent = (calls * rows_per_call) as u64;
    let accounted = |r: &proto::SegmentRollout| r.shadow.as_ref().map_or(0, |s| s.rows + s.dropped + s.errors);
    let rollout =
        until_status(&operator, 30, "the shadow never accounted for every row", |r| accounted(r) == sent).await;
    let shadow = rollout.shadow.unwrap();
    println!("a slow shadow under {sent} rows: {shadow:?}");
    assert!(shadow.dropped > 0, "the queue (at most 65,536 rows) overflowed: {shadow:?}");
    assert!(shadow.rows > 0 && shadow.errors == 0, "{shadow:?}");
    let dropped = common::metric(&metrics, "candela_shadow_dropped_rows_total", &[("version", "5")]).await;
    assert_eq!(dropped, shadow.dropped as f64);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shifted_feature_drifts_and_the_others_do_not() {
    let (server, mut client, operator, metrics, _keys) = start(
        &demo_models(),
        &["--drift-min-rows", "3000", "--drift-window-seconds", "300", "--drift-max-rows", "1000000"],
    )
    .await;
    let mut data = rows("retail", 4_000);
    let shifted = 0; // amount_log, the first feature
    for row in data.values.chunks_mut(FEATURES) {
        row[shifted] += 1.5;
    }
    for batch in data.values.chunks(500 * FEATURES) {
        client.batch_predict("retail", FEATURES, batch.to_vec()).await.unwrap();
    }
    let version = status(&operator).await.versions.remove(0);
    assert_eq!(version.drift_rows, 4_000, "{version:?}");
    for drift in &version.drift {
        if drift.feature == "amount_log" {
            assert!(drift.psi > 0.25, "the shifted feature: {drift:?}");
        } else {
            assert!(drift.psi < 0.1, "an unshifted feature: {drift:?}");
        }
    }
    assert_eq!(version.drift.len(), FEATURES);
    // The gauges follow within the supervisor's second.
    let labels = [("segment", "retail"), ("feature", "amount_log")];
    let shifted = async || common::metric(&metrics, "candela_drift_psi", &labels).await > 0.25;
    eventually(Duration::from_secs(5), "the drift gauge of the shifted feature", shifted).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_naming_an_unloaded_version_is_refused_and_the_old_one_serves() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 1);
    publish(root.path(), "retail", 2);
    write_policy(root.path(), r#"{"stable": 1, "canary": {"version": 2, "percent": 50}}"#);
    let (server, client, operator, metrics, _keys) = start(root.path(), &["--repository-poll-seconds", "0.2"]).await;
    write_policy(root.path(), r#"{"stable": 1, "canary": {"version": 9, "percent": 50}}"#);
    let rollout = until_status(&operator, 10, "the new policy was never read", |r| !r.refused.is_empty()).await;
    assert!(rollout.refused.contains("version 9, which is not loaded (served versions: 1, 2)"), "{rollout:?}");
    assert!(rollout.refused.contains("the previous policy stays in force"), "{rollout:?}");
    assert_eq!((rollout.canary_version, rollout.canary_percent), (2, 50.0), "the old policy serves");
    let row = rows("retail", 1).values;
    let mut client = client.clone();
    let mut versions = std::collections::BTreeSet::new();
    for i in 0..100 {
        versions.insert(predict_keyed(&mut client, &row, &format!("k{i}")).await.unwrap());
    }
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), vec![1, 2], "the old split still routes");
    let refused = common::metric(&metrics, "candela_rollout_policies_refused_total", &[("segment", "retail")]).await;
    assert_eq!(refused, 1.0, "counted once, however many polls read the same file");
    // Put back, the policy in force is no longer shown as refused.
    write_policy(root.path(), r#"{"stable": 1, "canary": {"version": 2, "percent": 50}}"#);
    until_status(&operator, 10, "the reverted policy still shows as refused", |r| r.refused.is_empty()).await;
    server.stop().await.unwrap();
}

/// Makes something at a path (a file, a link, a FIFO, a directory).
type Make = dyn Fn(&Path);

/// The resident memory of this process (the in-process server's), in MiB.
fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_file_that_cannot_be_read_is_refused_counted_once_and_the_pinned_policy_stays() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 1);
    publish(root.path(), "retail", 2);
    write_policy(root.path(), r#"{"stable": 1}"#);
    let (server, client, operator, metrics, _keys) = start(root.path(), &["--repository-poll-seconds", "0.1"]).await;
    let row = rows("retail", 1).values;
    let policy = root.path().join("retail/rollout.json");
    let before = resident_mib();
    // Each made beside the policy and renamed over it, so no scan sees it missing.
    let replace = |make: &Make| {
        let partial = root.path().join("retail/.rollout.json.partial");
        make(&partial);
        std::fs::rename(&partial, &policy).unwrap();
    };
    let cases: [(&str, &Make); 7] = [
        ("is not a regular file (a device, by a symbolic link to `/dev/zero`)", &|p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("is not a regular file (a device, by a symbolic link to `/dev/urandom`)", &|p| {
            std::os::unix::fs::symlink("/dev/urandom", p).unwrap()
        }),
        ("is not a regular file (a FIFO)", &|p| {
            assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success())
        }),
        ("is a symbolic link to `nowhere.json`, which does not exist", &|p| {
            std::os::unix::fs::symlink("nowhere.json", p).unwrap()
        }),
        ("over the limit of 65536 bytes", &|p| {
            std::fs::write(p, format!("{{\"stable\": 2{}}}", " ".repeat(70_000))).unwrap()
        }),
        ("is not UTF-8 text", &|p| std::fs::write(p, b"{\"stable\": 2, \"x\": \"\xff\xfe\"}").unwrap()),
        // A directory in its place (a link to one: a directory cannot be renamed over a file).
        ("is not a regular file (a directory, by a symbolic link to `.policy.d`)", &|p| {
            std::fs::create_dir_all(p.with_file_name(".policy.d")).unwrap();
            std::os::unix::fs::symlink(".policy.d", p).unwrap()
        }),
    ];
    for (expected, make) in cases {
        replace(make);
        let rollout = until_status(&operator, 10, expected, |r| {
            r.refused.contains(expected) && r.refused.contains("rollout.json")
        })
        .await;
        assert!(rollout.refused.contains("the previous policy stays in force"), "{rollout:?}");
        assert_eq!(rollout.stable_version, 1, "the pinned policy stays: {rollout:?}");
        // Reloads go on: a reader blocked on a FIFO would never get here.
        let mut client = client.clone();
        for i in 0..20 {
            assert_eq!(predict_keyed(&mut client, &row, &format!("k{i}")).await.unwrap(), 1, "{expected}");
        }
    }
    let grown = resident_mib() - before;
    assert!(grown < 150.0, "reading /dev/zero or /dev/urandom grew the server by {grown:.0} MiB");
    let refused = common::metric(&metrics, "candela_rollout_policies_refused_total", &[("segment", "retail")]).await;
    assert_eq!(refused, 7.0, "each unreadable file counted once, however many polls met it");
    let counted = common::metric(&metrics, "candela_repository_refusals_total", &[("reason", "refused")]).await;
    assert!(counted >= 7.0, "each refusal counted with its reason: {counted}");
    // Only an explicit removal drops the policy: the newest version then serves.
    std::fs::remove_file(&policy).unwrap();
    until_status(&operator, 10, "the policy was never dropped", |r| r.refused.is_empty() && r.stable_version == 0)
        .await;
    let mut client = client.clone();
    assert_eq!(predict_keyed(&mut client, &row, "k").await.unwrap(), 2);
    server.stop().await.unwrap();
}

/// The exact AUC of `(score, positive)` pairs, ties counting half.
fn exact_auc(scored: &[(f32, bool)]) -> f64 {
    let mut negatives: Vec<f32> = scored.iter().filter(|s| !s.1).map(|s| s.0).collect();
    negatives.sort_by(f32::total_cmp);
    let positives: Vec<f32> = scored.iter().filter(|s| s.1).map(|s| s.0).collect();
    let won: f64 = positives
        .iter()
        .map(|p| {
            let below = negatives.partition_point(|n| n < p);
            let ties = negatives.partition_point(|n| n <= p) - below;
            below as f64 + ties as f64 / 2.0
        })
        .sum();
    won / (positives.len() as f64 * negatives.len() as f64)
}

#[tokio::test]
async fn outcomes_fed_back_give_the_serving_and_the_shadow_version_their_live_auc() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 1);
    publish(root.path(), "sme", 5);
    write_policy(root.path(), r#"{"stable": 1, "shadow": {"version": 5, "percent": 100}}"#);
    let (server, mut client, operator, metrics, _keys) = start(root.path(), &["--quality-min-outcomes", "1000"]).await;
    let labels = client.get_model("retail").await.unwrap().labels;

    // 5,000 demo rows, whose true labels the generator knows, in 20 requests.
    let data = rows("retail", 5_000);
    let mut answered = Vec::new();
    let mut outcomes = Vec::new();
    for (batch, truths) in data.values.chunks(250 * FEATURES).zip(data.labels.chunks(250)) {
        let answer = client.batch_predict("retail", FEATURES, batch.to_vec()).await.unwrap();
        for (row, (prediction, truth)) in answer.predictions.iter().zip(truths).enumerate() {
            answered.push((prediction.probabilities[1], *truth == 1));
            let label = labels[*truth as usize].clone();
            outcomes.push(proto::Outcome { request_id: answer.request_id.clone(), row: row as u64, label });
        }
    }
    let accounted = |r: &proto::SegmentRollout| r.shadow.as_ref().map_or(0, |s| s.rows + s.dropped + s.errors);
    let rollout = until_status(&operator, 20, "the shadow never caught up", |r| accounted(r) >= 5_000).await;
    let shadowed = rollout.shadow.unwrap().rows;

    let first = outcomes[0].clone();
    let mut taken = proto::FeedbackResponse::default();
    for chunk in outcomes.chunks(1_000) {
        let joined = client.feedback(chunk.to_vec()).await.unwrap();
        taken.matched += joined.matched;
        taken.unknown_request += joined.unknown_request;
    }
    assert_eq!((taken.matched, taken.unknown_request), (5_000, 0));
    // What joins nothing is counted by reason, and nothing is counted twice.
    let bad = vec![
        proto::Outcome { request_id: "never-answered".into(), row: 0, label: labels[0].clone() },
        proto::Outcome { row: 250, ..first.clone() },
        proto::Outcome { label: "maybe".into(), ..first.clone() },
        first.clone(),
    ];
    let joined = client.feedback(bad).await.unwrap();
    assert_eq!(
        (joined.matched, joined.unknown_request, joined.row_out_of_range, joined.unknown_label, joined.duplicate),
        (0, 1, 1, 1, 1)
    );

    // The quality gauges are published each second.
    let shadow_version = [("segment", "retail"), ("version", "5")];
    let published =
        async || common::metric(&metrics, "candela_model_outcomes", &shadow_version).await >= shadowed as f64;
    eventually(Duration::from_secs(5), "the quality gauges", published).await;
    let offline = exact_auc(&answered);
    let live = common::metric(&metrics, "candela_model_auc", &[("segment", "retail"), ("version", "1")]).await;
    println!("retail v1 AUC: live {live:.4}, offline {offline:.4}; shadow scored {shadowed} rows");
    assert!((live - offline).abs() < 0.01, "live {live} against offline {offline}");
    assert!(offline > 0.6, "the demo model separates the classes, so the comparison means something");
    let outcomes_v1 =
        common::metric(&metrics, "candela_model_outcomes", &[("segment", "retail"), ("version", "1")]).await;
    assert_eq!(outcomes_v1, 5_000.0);
    // The shadow served nobody, yet has its own quality from the same outcomes.
    let shadow_outcomes =
        common::metric(&metrics, "candela_model_outcomes", &[("segment", "retail"), ("version", "5")]).await;
    assert_eq!(shadow_outcomes, shadowed as f64);
    let shadow_auc = common::metric(&metrics, "candela_model_auc", &[("segment", "retail"), ("version", "5")]).await;
    assert!(shadow_auc > 0.0 && shadow_auc < 1.0 && (shadow_auc - live).abs() > 1e-6, "shadow AUC {shadow_auc}");
    let unmatched =
        common::metric(&metrics, "candela_feedback_outcomes_total", &[("result", "row_out_of_range")]).await;
    assert_eq!(unmatched, 1.0);

    // A StreamPredict message's rows are kept under `<stream request id>/<message id>`.
    let message =
        candela_client::stream_batch("m7", &ModelId::from("retail"), FEATURES, data.values[..3 * FEATURES].to_vec());
    let mut request = Request::new(futures::stream::iter([message]));
    request.metadata_mut().insert("x-request-id", "stream-42".parse().unwrap());
    let mut answers = client.inference().stream_predict(request).await.unwrap().into_inner();
    assert!(answers.message().await.unwrap().is_some());
    let streamed = |row: u64| proto::Outcome { request_id: "stream-42/m7".into(), row, label: labels[1].clone() };
    let joined = client.feedback(vec![streamed(2), streamed(3)]).await.unwrap();
    assert_eq!((joined.matched, joined.row_out_of_range), (1, 1));
    server.stop().await.unwrap();
}

/// Writes `<segment>/rollout.json` whole.
fn write_segment_policy(root: &Path, segment: &str, policy: &str) {
    let partial = root.join(segment).join(".rollout.json.partial");
    std::fs::write(&partial, policy).unwrap();
    std::fs::rename(&partial, root.join(segment).join("rollout.json")).unwrap();
}

#[tokio::test]
async fn a_canary_that_scores_worse_is_rolled_back_by_its_auc_only_where_the_guard_asks() {
    let root = tempfile::tempdir().unwrap();
    // In both segments: retail's model stable, another segment's model (the same
    // features, weights fitted to other rows) as a 50 % canary that raises no error.
    for segment in ["guarded", "unguarded"] {
        publish_as(root.path(), "retail", segment, 1);
        publish_as(root.path(), "corporate", segment, 2);
    }
    // Windows too short in requests to judge errors or latency: only quality can breach.
    let guard = r#""window_seconds": 0.3, "min_requests": 1000000, "breaches_to_rollback": 2"#;
    write_segment_policy(
        root.path(),
        "guarded",
        &format!(
            r#"{{"stable": 1, "canary": {{"version": 2, "percent": 50}}, "guard": {{{guard}, "min_auc_delta": -0.03, "min_outcomes": 300}}}}"#
        ),
    );
    write_segment_policy(
        root.path(),
        "unguarded",
        &format!(r#"{{"stable": 1, "canary": {{"version": 2, "percent": 50}}, "guard": {{{guard}}}}}"#),
    );
    let (server, mut client, operator, _metrics, _keys) = start(root.path(), &["--quality-min-outcomes", "300"]).await;
    let labels = client.get_model(ModelId::pinned("guarded", 1)).await.unwrap().labels;

    let data = rows("retail", 4_000);
    let mut by_version: BTreeMap<u64, Vec<(f32, bool)>> = BTreeMap::new();
    for segment in ["guarded", "unguarded"] {
        let mut outcomes = Vec::new();
        for (batch, truths) in data.values.chunks(50 * FEATURES).zip(data.labels.chunks(50)) {
            let answer = client.batch_predict(segment, FEATURES, batch.to_vec()).await.unwrap();
            let version = answer.model.unwrap().version;
            for (row, (prediction, truth)) in answer.predictions.iter().zip(truths).enumerate() {
                if segment == "guarded" {
                    by_version.entry(version).or_default().push((prediction.probabilities[1], *truth == 1));
                }
                let label = labels[*truth as usize].clone();
                outcomes.push(proto::Outcome { request_id: answer.request_id.clone(), row: row as u64, label });
            }
        }
        for chunk in outcomes.chunks(1_000) {
            assert_eq!(client.feedback(chunk.to_vec()).await.unwrap().matched, chunk.len() as u64);
        }
    }
    let (stable, canary) = (exact_auc(&by_version[&1]), exact_auc(&by_version[&2]));
    println!("offline AUC on retail rows: stable {stable:.4}, canary {canary:.4}");
    assert!(canary - stable < -0.05, "the canary must score clearly worse for the test to mean something");

    let status_of = |segment: &'static str| {
        let operator = operator.clone();
        async move {
            let answer = operator.rollouts().status(proto::RolloutStatusRequest { segment: segment.into() }).await;
            answer.unwrap().into_inner().segments.remove(0)
        }
    };
    let rolled_back = async || !status_of("guarded").await.rollback_reason.is_empty();
    eventually(Duration::from_secs(15), "the guard rolling the worse canary back", rolled_back).await;
    let guarded = status_of("guarded").await;
    println!("rolled back: {}", guarded.rollback_reason);
    assert!(guarded.rollback_reason.contains("AUC"), "{}", guarded.rollback_reason);
    assert_eq!(guarded.canary_percent, 0.0);
    let canary_quality = guarded.versions.iter().find(|v| v.version == 2).unwrap();
    assert!(canary_quality.outcomes >= 300 && canary_quality.auc > 0.0, "{canary_quality:?}");
    // The same canary where the guard has no AUC limit keeps its share.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let unguarded = status_of("unguarded").await;
    assert!(unguarded.rollback_reason.is_empty(), "{}", unguarded.rollback_reason);
    assert_eq!(unguarded.canary_percent, 50.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_prediction_store_keeps_its_bound_under_a_flood_and_lets_old_records_expire() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), "retail", 1);
    let flags = ["--feedback-max-records", "1000", "--feedback-retention", "2s"];
    let (server, client, _operator, metrics, _keys) = start(root.path(), &flags).await;
    // 8 callers, 4,000 one-row predictions, no feedback: the store never holds more than 1,000.
    let row = rows("retail", 1).values;
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (mut client, row) = (client.clone(), row.clone());
        callers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..500 {
                ids.push(client.predict("retail", row.clone()).await.unwrap().request_id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for caller in callers {
        ids.extend(caller.await.unwrap());
    }
    let gauge = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let metrics = metrics.clone();
        async move { common::metric(&metrics, name, labels).await }
    };
    // The gauges follow each second.
    let published = async || gauge("candela_feedback_records_released_total", &[("reason", "room")]).await >= 3_000.0;
    eventually(Duration::from_secs(5), "the prediction store's gauges after every call", published).await;
    let held = gauge("candela_feedback_records", &[]).await;
    let dropped = gauge("candela_feedback_records_released_total", &[("reason", "room")]).await;
    println!("held {held}, dropped for room {dropped}");
    assert_eq!((held, dropped), (1_000.0, 3_000.0));
    // The newest are kept, the oldest were dropped.
    let mut client = client.clone();
    let outcome = |id: &String| proto::Outcome { request_id: id.clone(), row: 0, label: "fraud".into() };
    let joined = client.feedback(vec![outcome(ids.last().unwrap()), outcome(&ids[0])]).await.unwrap();
    assert_eq!((joined.matched, joined.unknown_request), (1, 1));
    // After the retention, everything has expired.
    eventually(Duration::from_secs(10), "every record expiring", async || {
        gauge("candela_feedback_records", &[]).await == 0.0
    })
    .await;
    assert_eq!(gauge("candela_feedback_records_released_total", &[("reason", "expired")]).await, 1_000.0);
    server.stop().await.unwrap();
}
