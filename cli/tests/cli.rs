//! The `candela` CLI binary against the real server (in this process, on a
//! loopback port): health, models, predict, CSV and Parquet batch scoring
//! through StreamPredict, including files with bad rows, the `bench` load generator,
//! and `rollout` status and rollback with an admin key.

use candela_client::Client;
use candela_server::testing::TestServer;
use candela_server::train::synthetic::{FEATURES, Segment};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

/// Starts the real server on the demo models; returns its URL and the
/// server (it stops when dropped).
async fn server() -> (String, TestServer) {
    server_with(&[]).await
}

/// `server`, with extra settings.
async fn server_with(extra: &[&str]) -> (String, TestServer) {
    let server = TestServer::start(extra).await;
    (server.url.clone(), server)
}

/// Runs `candela --server url args…` off the runtime.
async fn candela(url: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_candela"));
    command.arg("--server").arg(url).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn health_models_and_predict() {
    let (url, _stop) = server().await;
    let health = candela(&url, &["health"]).await;
    assert!(health.status.success(), "{}", stderr(&health));
    assert_eq!(stdout(&health).trim(), "SERVING");
    let unknown = candela(&url, &["health", "--service", "no.Such"]).await;
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("NotFound"), "{}", stderr(&unknown));

    let models = candela(&url, &["models"]).await;
    assert!(models.status.success());
    let text = stdout(&models);
    for line in ["corporate v1 latest", "retail v1 latest", "sme v1 latest", "labels   legit, fraud", "held_out_auc="] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }

    let row = candela_server::train::training::fresh_rows(Segment::Retail, 1).values;
    let features: Vec<String> = row.iter().map(|v| v.to_string()).collect();
    let predict = candela(&url, &["predict", "--segment", "retail", "--features", &features.join(",")]).await;
    assert!(predict.status.success(), "{}", stderr(&predict));
    let expected = Client::connect(&url, Duration::from_secs(5)).await.unwrap().predict("retail", row).await.unwrap();
    let label = expected.prediction.unwrap().label;
    assert!(stdout(&predict).starts_with(&format!("{label} (class ")), "{}", stdout(&predict));
    assert!(stdout(&predict).contains("model retail v1"));

    let short = candela(&url, &["predict", "--segment", "retail", "--features", "1,-2,3"]).await;
    assert!(!short.status.success());
    assert!(stderr(&short).contains("InvalidArgument: features has 3 values"), "{}", stderr(&short));
}

#[tokio::test]
async fn score_streams_a_csv_in_order_and_isolates_the_refused_row() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
    let output = dir.path().join("scored.csv");
    let data = candela_server::train::training::fresh_rows(Segment::Sme, 1234);
    // Columns in a different order from the model's, plus an id column to carry through.
    let mut writer = csv::Writer::from_path(&input).unwrap();
    let mut header = vec!["txn_id".to_string()];
    header.extend(FEATURES.iter().rev().map(|f| f.to_string()));
    writer.write_record(&header).unwrap();
    for (i, row) in data.values.chunks(FEATURES.len()).enumerate() {
        let mut record = vec![format!("t{i}")];
        record
            .extend(row.iter().rev().map(|v| if i == 777 && *v == row[3] { "NaN".to_string() } else { v.to_string() }));
        writer.write_record(&record).unwrap();
    }
    writer.flush().unwrap();

    let run = candela(
        &url,
        &[
            "score",
            "--segment",
            "sme",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--batch-rows",
            "100",
            // 13 batches dealt to 3 streams: the results still come out in input order.
            "--streams",
            "3",
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "a refused batch is reported in the exit code: {}", stderr(&run));
    assert!(stderr(&run).contains("scored 1234 rows"), "{}", stderr(&run));
    // Only the row with the NaN fails; its 99 neighbours in the refused batch are scored.
    assert!(stderr(&run).contains("(1 rows refused)"), "{}", stderr(&run));

    let expected = Client::connect(&url, Duration::from_secs(5))
        .await
        .unwrap()
        .batch_predict("sme", FEATURES.len(), data.values[..1000 * FEATURES.len()].to_vec())
        .await
        .unwrap();
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers = reader.headers().unwrap().clone();
    let tail: Vec<&str> = headers.iter().skip(headers.len() - 4).collect();
    assert_eq!(tail, ["prediction", "p_legit", "p_fraud", "error"]);
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 1234);
    let n = headers.len();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(&record[0], format!("t{i}"), "rows stay in input order");
        if i == 777 {
            assert!(
                record[n - 1].contains("non-finite") || record[n - 1].contains("NaN"),
                "row {i}: {:?}",
                &record[n - 1]
            );
            assert_eq!(&record[n - 4], "");
        } else if i < 1000 {
            assert_eq!(&record[n - 1], "");
            assert_eq!(&record[n - 4], expected.predictions[i].label);
            let p: f32 = record[n - 2].parse().unwrap();
            assert!((p - expected.predictions[i].probabilities[1]).abs() < 1e-6, "row {i}");
        }
    }
}

/// The API guide's `candela score` examples, run as written (from the
/// repository's root; the outputs land in a scratch directory).
#[tokio::test]
async fn the_guides_score_examples_run_as_written() {
    let (url, _stop) = server().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let guide = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    let examples: Vec<&str> =
        guide.lines().filter_map(|line| line.strip_prefix("cargo run --release -p candela-cli -- score ")).collect();
    assert_eq!(examples.len(), 2, "docs/api.md shows a CSV and a Parquet example");
    let scratch = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root.join("tests"), scratch.path().join("tests")).unwrap();
    for example in examples {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_candela"));
        command.arg("--server").arg(&url).arg("score").args(example.split_whitespace()).current_dir(scratch.path());
        let run = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
        // The Parquet table's row with a missing value is refused by the network alone.
        let (code, rows) = if example.contains(".parquet") { (2, 600) } else { (0, 599) };
        assert_eq!(run.status.code(), Some(code), "`candela score {example}`: {}", stderr(&run));
        assert!(stderr(&run).contains(&format!("scored {rows} rows")), "{}", stderr(&run));
    }
    assert!(scratch.path().join("scored.csv").is_file() && scratch.path().join("scored.parquet").is_file());
}

#[tokio::test]
async fn score_a_bad_cell_costs_its_row_and_duplicate_feature_columns_are_refused() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("rows.csv"), dir.path().join("scored.csv"));
    let data = candela_server::train::training::fresh_rows(Segment::Sme, 20);
    let write = |header: Vec<String>, cell: &dyn Fn(usize, usize, f32) -> String| {
        let mut writer = csv::Writer::from_path(&input).unwrap();
        writer.write_record(&header).unwrap();
        for (i, row) in data.values.chunks(FEATURES.len()).enumerate() {
            let mut record: Vec<String> = row.iter().enumerate().map(|(j, v)| cell(i, j, *v)).collect();
            record.resize(header.len(), "0".into());
            writer.write_record(&record).unwrap();
        }
        writer.flush().unwrap();
    };
    let names: Vec<String> = FEATURES.iter().map(|f| f.to_string()).collect();
    // Row 5 has one bad cell; rows 8 to 11 (a whole batch of 4) have nothing but bad cells.
    write(names.clone(), &|i, j, v| match (i, j) {
        (5, 7) => "n/a".into(),
        (8..=11, _) => "?".into(),
        _ => v.to_string(),
    });
    let args = ["score", "--segment", "sme", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let mut batched = args.to_vec();
    batched.extend(["--batch-rows", "4", "--streams", "2"]);
    let run = candela(&url, &batched).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("scored 20 rows") && stderr(&run).contains("(5 rows refused)"), "{}", stderr(&run));
    let expected = Client::connect(&url, Duration::from_secs(5))
        .await
        .unwrap()
        .batch_predict("sme", FEATURES.len(), data.values.clone())
        .await
        .unwrap();
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let n = reader.headers().unwrap().len();
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 20);
    for (i, record) in records.iter().enumerate() {
        if i == 5 || (8..=11).contains(&i) {
            assert!(record[n - 1].contains("is not a number"), "row {i}: {:?}", &record[n - 1]);
            assert_eq!(&record[n - 4], "", "row {i} has no prediction");
        } else {
            assert_eq!(&record[n - 1], "", "row {i}");
            assert_eq!(&record[n - 4], expected.predictions[i].label, "row {i}");
        }
    }
    assert!(records[5][n - 1].contains(&format!("`n/a` in column `{}`", FEATURES[7])), "{:?}", &records[5]);

    // The same feature twice: which one is meant is ambiguous, so nothing is scored.
    let mut doubled = names.clone();
    doubled.push(FEATURES[2].to_string());
    write(doubled, &|_, _, v| v.to_string());
    let run = candela(&url, &args).await;
    assert!(!run.status.success());
    assert!(stderr(&run).contains(&format!("two columns named `{}`", FEATURES[2])), "{}", stderr(&run));
}

/// A table written by pandas (tests/fixtures/score/make_fixture.py: float64,
/// float32 and int64 features in another order, a carried id and timestamp,
/// one null, three row groups) scored Parquet to Parquet: every column and
/// row group carried, rows in order, answers equal to BatchPredict's, the
/// null row alone refused.
#[cfg(feature = "parquet")]
#[tokio::test]
async fn score_reads_and_writes_parquet_from_pandas() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type, Int64Type};
    use arrow_schema::DataType;
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/score/rows.parquet");
    let output = dir.path().join("scored.parquet");
    let args = ["score", "--segment", "sme", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let run = candela(&url, &[&args[..], &["--batch-rows", "64", "--streams", "3"]].concat()).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("scored 600 rows") && stderr(&run).contains("(1 rows refused)"), "{}", stderr(&run));

    let file = std::fs::File::open(&output).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(&names[..2], ["txn_id", "at"]);
    assert_eq!(&names[names.len() - 4..], ["prediction", "p_legit", "p_fraud", "error"]);
    assert!(matches!(schema.field(1).data_type(), DataType::Timestamp(..)), "the timestamp is carried as one");
    let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, [250, 250, 100], "the input's row groups are kept");
    let (mut ids, mut labels, mut p_fraud, mut errors) = (vec![], vec![], vec![], vec![]);
    // The model's features, as the client must have read them.
    let mut rows = vec![];
    for batch in reader.with_batch_size(64).build().unwrap() {
        let batch = batch.unwrap();
        let column = |name: &str| batch.column(schema.index_of(name).unwrap()).clone();
        ids.extend(column("txn_id").as_string::<i64>().iter().map(|v| v.unwrap().to_string()));
        labels.extend(column("prediction").as_string::<i32>().iter().map(|v| v.map(str::to_string)));
        p_fraud.extend(column("p_fraud").as_primitive::<Float32Type>().iter());
        errors.extend(column("error").as_string::<i32>().iter().map(|v| v.map(str::to_string)));
        let mut values = vec![0f32; batch.num_rows() * FEATURES.len()];
        for (j, name) in FEATURES.iter().enumerate() {
            let feature: Vec<f32> = match column(name).data_type() {
                DataType::Float64 => {
                    column(name).as_primitive::<Float64Type>().values().iter().map(|v| *v as f32).collect()
                }
                DataType::Float32 => column(name).as_primitive::<Float32Type>().values().to_vec(),
                DataType::Int64 => {
                    column(name).as_primitive::<Int64Type>().values().iter().map(|v| *v as f32).collect()
                }
                other => panic!("{name} is {other}"),
            };
            for (i, v) in feature.into_iter().enumerate() {
                values[i * FEATURES.len() + j] = v;
            }
        }
        rows.extend(values);
    }
    assert_eq!(ids.len(), 600);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(*id, format!("t{i}"), "rows stay in input order");
        if i == 123 {
            assert!(labels[i].is_none() && p_fraud[i].is_none(), "the refused row has no scores");
            let error = errors[i].as_deref().unwrap();
            assert!(error.contains("`hour_cos`) is NaN") && !error.contains("(first:"), "{error}");
        } else {
            assert!(errors[i].is_none(), "row {i}: {:?}", errors[i]);
        }
    }
    rows.drain(123 * FEATURES.len()..124 * FEATURES.len());
    let mut client = Client::connect(&url, Duration::from_secs(5)).await.unwrap();
    let expected = client.batch_predict("sme", FEATURES.len(), rows).await.unwrap().predictions;
    for (i, want) in (0..600).filter(|i| *i != 123).zip(&expected) {
        assert_eq!(labels[i].as_deref(), Some(want.label.as_str()), "row {i}");
        assert!((p_fraud[i].unwrap() - want.probabilities[1]).abs() < 1e-6, "row {i}");
    }
}

/// Feature columns in a codec this build cannot decode are refused before
/// anything is scored, naming the column, the codec and the fix; nothing is
/// left behind in the output's directory.
#[cfg(feature = "parquet")]
#[tokio::test]
async fn score_refuses_feature_columns_it_cannot_decompress() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/score/zstd.parquet");
    let output = dir.path().join("scored.parquet");
    let args = ["score", "--segment", "sme", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let run = candela(&url, &args).await;
    assert_eq!(run.status.code(), Some(1));
    let message = stderr(&run);
    assert!(message.contains("is compressed with ZSTD") && message.contains(r#"compression="snappy""#), "{message}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no output and no partial file");
}

/// Pages with checksums (tests/fixtures/score/checksummed.parquet, written
/// with pyarrow's `write_page_checksum`) are verified: the file scores, and
/// a copy with one byte of a feature column's page flipped is refused
/// instead of being scored from garbage.
#[tokio::test]
async fn score_refuses_a_parquet_page_that_fails_its_checksum() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/score/checksummed.parquet");
    let (input, output) = (dir.path().join("rows.parquet"), dir.path().join("scored.parquet"));
    let args = ["score", "--segment", "sme", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    std::fs::copy(&fixture, &input).unwrap();
    let run = candela(&url, &args).await;
    // Row 123's missing value is refused by the network; every other row is scored.
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("scored 200 rows") && stderr(&run).contains("(1 rows refused)"), "{}", stderr(&run));

    let meta = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(&fixture).unwrap()).unwrap(),
    )
    .clone();
    let group = meta.row_group(0);
    let column = (0..group.num_columns()).find(|&c| group.column(c).column_path().string() == FEATURES[0]).unwrap();
    let chunk = group.column(column);
    let start = chunk.dictionary_page_offset().unwrap_or(chunk.data_page_offset());
    let mut bytes = std::fs::read(&fixture).unwrap();
    // The last bytes of the chunk: its data page's values.
    let at = (start + chunk.compressed_size() - 3) as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(&input, bytes).unwrap();
    std::fs::remove_file(&output).unwrap();
    let run = candela(&url, &args).await;
    assert!(!run.status.success(), "a corrupted page was scored: {}", stderr(&run));
    assert!(stderr(&run).to_lowercase().contains("checksum"), "{}", stderr(&run));
    assert!(!output.exists(), "no output from a corrupted input");
}

/// Parquet in, CSV out is refused before anything is scored.
#[cfg(feature = "parquet")]
#[tokio::test]
async fn score_refuses_mixed_formats() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/score/rows.parquet");
    let output = dir.path().join("scored.csv");
    let run = candela(
        &url,
        &["score", "--segment", "sme", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()],
    )
    .await;
    assert!(!run.status.success());
    assert!(stderr(&run).contains("is Parquet but") && stderr(&run).contains("would be CSV"), "{}", stderr(&run));
    assert!(!output.exists(), "nothing written");
}

#[tokio::test]
async fn score_names_missing_feature_columns() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
    std::fs::write(&input, "amount_log,hour_sin\n1,2\n").unwrap();
    let run = candela(
        &url,
        &[
            "score",
            "--segment",
            "retail",
            "--input",
            input.to_str().unwrap(),
            "--output",
            dir.path().join("o.csv").to_str().unwrap(),
        ],
    )
    .await;
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("lacks columns for the model's features: amount_to_avg_ratio, hour_cos"),
        "{}",
        stderr(&run)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the input: no output, no partial file");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let run = candela(&url, &["health", "--connect-timeout", "2"]).await;
    assert!(!run.status.success());
    assert!(stderr(&run).contains(&format!("cannot connect to {url}")), "{}", stderr(&run));
}

#[tokio::test]
async fn the_api_key_comes_from_a_flag_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "cli-key-0b3e71f4a9\n").unwrap();
    let (url, _stop) = server_with(&["--api-keys-file", keys.to_str().unwrap()]).await;
    let refused = candela(&url, &["models"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("Unauthenticated"), "{}", stderr(&refused));
    let flag = candela(&url, &["--api-key", "cli-key-0b3e71f4a9", "models"]).await;
    assert!(flag.status.success(), "{}", stderr(&flag));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_candela"));
    command.args(["--server", &url, "models"]).env("CANDELA_API_KEY", "cli-key-0b3e71f4a9");
    let env = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(env.status.success(), "{}", stderr(&env));
    let help = candela(&url, &["--help"]).await;
    assert!(!stdout(&help).contains("cli-key"), "the key shows in --help");
}

/// `candela bench --json`: closed loop, open loop and StreamPredict count what
/// they sent; errors are counted and sampled by message, and make the exit non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_what_it_sent_as_json() {
    let (url, _stop) = server().await;
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec!["bench", "--duration", "0.5", "--warmup", "0.2", "--json"];
            all.extend_from_slice(args);
            let output = candela(&url, &all).await;
            let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|e| panic!("bench {args:?} printed no JSON ({e}): {}", stderr(&output)));
            (output.status.code(), summary)
        }
    };
    for args in [
        &["--call", "predict", "--concurrency", "4"][..],
        &["--call", "model-infer", "--rows", "8", "--rate", "200"][..],
        &["--call", "stream-predict", "--rows", "100"][..],
        &["--call", "stream-predict", "--rows", "100", "--columnar"][..],
    ] {
        let (code, summary) = run(args).await;
        assert_eq!(code, Some(0), "{args:?}: {summary}");
        assert!(summary["requests"].as_u64().unwrap() > 0, "{args:?}: {summary}");
        assert_eq!(summary["errors"], 0, "{args:?}: {summary}");
        let rows = summary["rows_per_request"].as_f64().unwrap();
        let ratio = summary["rows_per_second"].as_f64().unwrap() / summary["requests_per_second"].as_f64().unwrap();
        assert!((ratio - rows).abs() < 1e-9 * rows, "{args:?}: rows/s = requests/s × rows");
        assert!(summary["latency_us"]["p50"].as_u64().unwrap() > 0, "{args:?}: {summary}");
    }
    // An open loop at 200/s for 0.5 s against an unknown model: every request
    // fails, all under one sampled message.
    let (code, summary) =
        run(&["--call", "model-infer", "--model", "nowhere", "--features", "30", "--rate", "200"]).await;
    assert_eq!(code, Some(2), "{summary}");
    assert_eq!(summary["requests"], 0);
    let errors = summary["errors"].as_u64().unwrap();
    assert!(errors >= 50, "about 100 due in the measured half second: {summary}");
    let samples = summary["error_samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1, "{summary}");
    assert!(samples[0][0].as_str().unwrap().contains("unknown segment `nowhere`"), "{summary}");
    assert_eq!(samples[0][1].as_u64(), Some(errors));
}

/// `candela bench` loads the HTTP API with the same generator: /score and
/// the Open Inference Protocol's REST infer, JSON and binary, all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_the_http_api_too() {
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (url, _stop) = server_with(&["--http-listen", &http]).await;
    let http_url = format!("http://{http}");
    for call in ["http-score", "http-infer-json", "http-infer-binary"] {
        let args = ["bench", "--call", call, "--http-url", &http_url, "--rows", "8", "--concurrency", "2"];
        let output = candela(&url, &[&args[..], &["--duration", "0.5", "--warmup", "0.1", "--json"]].concat()).await;
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("bench {call} printed no JSON ({e}): {}", stderr(&output)));
        assert_eq!(output.status.code(), Some(0), "{call}: {summary}");
        assert!(summary["requests"].as_u64().unwrap() > 0, "{call}: {summary}");
        assert_eq!(summary["errors"], 0, "{call}: {summary}");
    }
}

/// `candela bench --p95-ms`: a ceiling probe, then six open-loop runs; the
/// highest passing rate sizes a fleet, measured and by the rule of thumb; an
/// unreachable target is said so, with no plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_finds_the_rate_within_a_p95_target_and_sizes_a_fleet() {
    let (url, _stop) = server().await;
    let search = |p95_ms: &'static str| {
        let url = url.clone();
        async move {
            let args = ["bench", "--p95-ms", p95_ms, "--target-qps", "5000", "--duration", "0.3", "--warmup", "0.1"];
            let output = candela(&url, &[&args[..], &["--json"]].concat()).await;
            assert!(output.status.success(), "{}", stderr(&output));
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
        }
    };
    let found = search("50").await;
    let ceiling = found["ceiling_requests_per_second"].as_f64().unwrap();
    let runs = found["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "{found}");
    assert!(
        (runs[0]["offered"].as_f64().unwrap() - 0.9 * ceiling).abs() < 1e-6,
        "the first run is at 0.9 × the ceiling"
    );
    let sustained = &found["sustained"];
    let rate = sustained["offered"].as_f64().expect("a 50 ms p95 is reachable on loopback");
    let best = runs.iter().filter(|r| r["passed"] == true).map(|r| r["offered"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(rate, best, "the highest passing rate is the answer");
    for run in runs.iter().filter(|r| r["passed"] == true) {
        assert!(run["p95_us"].as_u64().unwrap() <= 50_000 && run["errors"] == 0, "{run}");
    }
    let plan = &found["plan"];
    assert_eq!(plan["replicas_measured"].as_f64().unwrap(), (5000.0 / rate).ceil());
    let t_p95 = sustained["p95_us"].as_f64().unwrap() / 1e6;
    assert_eq!(plan["replicas_rule_of_thumb"].as_f64().unwrap(), (5000.0 * t_p95 / 0.7).ceil());

    let impossible = search("0.001").await;
    assert!(impossible["sustained"].is_null() && impossible["plan"].is_null(), "{impossible}");
    assert!(impossible["runs"].as_array().unwrap().iter().all(|r| r["passed"] == false));
}

#[tokio::test]
async fn repository_commands_show_the_index_and_reload_with_the_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    std::fs::write(&admin, "cli-admin-key-6a1f\n").unwrap();
    let (url, _stop) = server_with(&["--admin-keys-file", admin.to_str().unwrap()]).await;
    let index = candela(&url, &["repository", "index"]).await;
    assert!(index.status.success(), "{}", stderr(&index));
    for segment in ["corporate", "retail", "sme"] {
        assert!(stdout(&index).contains(&format!("{segment} v1  READY")), "{}", stdout(&index));
    }
    let refused = candela(&url, &["repository", "reload"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("admin key"), "{}", stderr(&refused));
    let reload = candela(&url, &["--admin-key", "cli-admin-key-6a1f", "repository", "reload"]).await;
    assert!(reload.status.success(), "{}", stderr(&reload));
    let models = candela(&url, &["models"]).await;
    assert!(stdout(&models).contains("created  2026-11-23T00:00:00Z (") && stdout(&models).contains("days old)"));
}

/// `candela rollout status` shows a canary; `candela rollout rollback` (admin
/// key only) sends its traffic to the stable version until rollout.json changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rolls_a_canary_back() {
    let root = tempfile::tempdir().unwrap();
    for version in [1, 2] {
        let (from, to) =
            (candela_server::testing::demo_models().join("retail/1"), root.path().join(format!("retail/{version}")));
        std::fs::create_dir_all(&to).unwrap();
        for file in ["model.safetensors", "model.json"] {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
    std::fs::write(
        root.path().join("retail/rollout.json"),
        r#"{"stable": 1, "canary": {"version": 2, "percent": 100}}"#,
    )
    .unwrap();
    let admin = root.path().join("admin-keys");
    std::fs::write(&admin, "rollout-admin-5e1f\n").unwrap();
    let settings = candela_server::testing::settings(root.path(), &["--admin-keys-file", admin.to_str().unwrap()]);
    let server = TestServer::start_with(settings).await;
    server.wait_until_serving().await;
    let url = server.url.clone();
    let mut client = Client::connect(&url, Duration::from_secs(5)).await.unwrap();
    let row = candela_server::train::training::fresh_rows(Segment::Retail, 1).values;
    let served = client.predict("retail", row.clone()).await.unwrap().model.unwrap().version;
    assert_eq!(served, 2, "a 100 % canary takes every request");

    let anonymous = candela(&url, &["rollout", "rollback", "--segment", "retail"]).await;
    assert!(!anonymous.status.success());
    assert!(stderr(&anonymous).contains("Unauthenticated"), "{}", stderr(&anonymous));
    let admin = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec!["--admin-key", "rollout-admin-5e1f", "rollout"];
            all.extend_from_slice(args);
            candela(&url, &all).await
        }
    };
    let shown = admin(&["status", "--segment", "retail"]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stdout(&shown).contains("canary v2 at 100% (configured 100%)"), "{}", stdout(&shown));
    let rolled = admin(&["rollback", "--segment", "retail"]).await;
    assert!(rolled.status.success(), "{}", stderr(&rolled));
    let served = client.predict("retail", row).await.unwrap().model.unwrap().version;
    assert_eq!(served, 1, "rolled back: the stable version serves");
    let shown = admin(&["status"]).await;
    assert!(stdout(&shown).contains("ROLLED BACK: rolled back by an operator"), "{}", stdout(&shown));
    assert!(stdout(&shown).contains("canary v2 at 0% (configured 100%)"), "{}", stdout(&shown));
    let again = admin(&["rollback", "--segment", "retail"]).await;
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already rolled back"), "{}", stderr(&again));
    let none = admin(&["rollback", "--segment", "corporate"]).await;
    assert!(stderr(&none).contains("no rollout policy in force"), "{}", stderr(&none));
}

#[tokio::test]
async fn feedback_sends_a_tables_outcomes_and_says_what_joined() {
    let (url, _stop) = server().await;
    let mut client = Client::connect(&url, Duration::from_secs(5)).await.unwrap();
    let data = candela_server::train::training::fresh_rows(Segment::Retail, 20);
    let answer = client.batch_predict("retail", FEATURES.len(), data.values.clone()).await.unwrap();
    let labels = ["legit", "fraud"];
    let dir = tempfile::tempdir().unwrap();

    // CSV: 20 outcomes of the answer, columns in another order and one extra, then
    // one of an unknown request and one row past the request's end.
    let mut csv = String::from("label,note,request_id,row\n");
    for (row, truth) in data.labels.iter().enumerate() {
        csv += &format!("{},x,{},{row}\n", labels[*truth as usize], answer.request_id);
    }
    csv += &format!("fraud,x,never-answered,0\nfraud,x,{},20\n", answer.request_id);
    let input = dir.path().join("outcomes.csv");
    std::fs::write(&input, csv).unwrap();
    let sent = candela(&url, &["feedback", "--input", input.to_str().unwrap()]).await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert_eq!(
        stdout(&sent).trim(),
        "fed back 22 outcomes: 20 matched; not matched: 1 unknown or expired request id, 1 row out of range, 0 unknown label, 0 duplicate"
    );

    // Parquet (as pandas writes it: large strings, int64): the same outcomes again are duplicates.
    use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch};
    let ids: ArrayRef = Arc::new(LargeStringArray::from(vec![answer.request_id.as_str(); 20]));
    let rows: ArrayRef = Arc::new(Int64Array::from((0..20).collect::<Vec<i64>>()));
    let truths: ArrayRef =
        Arc::new(LargeStringArray::from(data.labels.iter().map(|t| labels[*t as usize]).collect::<Vec<&str>>()));
    let table = RecordBatch::try_from_iter([("request_id", ids), ("row", rows), ("label", truths)]).unwrap();
    let input = dir.path().join("outcomes.parquet");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&input).unwrap(), table.schema(), None).unwrap();
    writer.write(&table).unwrap();
    writer.close().unwrap();
    let again = candela(&url, &["feedback", "--input", input.to_str().unwrap()]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("20 outcomes: 0 matched;") && stdout(&again).contains("20 duplicate"),
        "{}",
        stdout(&again)
    );

    // A table without the columns says which is missing.
    std::fs::write(dir.path().join("bad.csv"), "id,row,label\nx,0,fraud\n").unwrap();
    let bad = candela(&url, &["feedback", "--input", dir.path().join("bad.csv").to_str().unwrap()]).await;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("no column `request_id`"), "{}", stderr(&bad));
}

#[tokio::test]
async fn score_records_ids_that_feedback_joins_back() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let data = candela_server::train::training::fresh_rows(Segment::Retail, 300);
    // CSV: 300 rows, row 123 refused (a NaN), scored in batches of 40 on 3 streams.
    let input = dir.path().join("rows.csv");
    let mut writer = csv::Writer::from_path(&input).unwrap();
    writer.write_record(FEATURES).unwrap();
    for (i, row) in data.values.chunks(FEATURES.len()).enumerate() {
        writer
            .write_record(
                row.iter().enumerate().map(|(j, v)| if i == 123 && j == 0 { "NaN".into() } else { v.to_string() }),
            )
            .unwrap();
    }
    writer.flush().unwrap();
    let output = dir.path().join("scored.csv");
    let args = ["score", "--segment", "retail", "--record-ids", "--batch-rows", "40", "--streams", "3"];
    let paths = ["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let run = candela(&url, &[&args[..], &paths[..]].concat()).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));

    // The producer adds the true labels to the scored file and sends it back as is.
    let mut scored = csv::Reader::from_path(&output).unwrap();
    let header = scored.headers().unwrap().clone();
    assert_eq!(&header.iter().collect::<Vec<_>>()[header.len() - 3..], ["error", "request_id", "row"]);
    let outcomes = dir.path().join("outcomes.csv");
    let mut labelled = csv::Writer::from_path(&outcomes).unwrap();
    labelled.write_record(header.iter().chain(["label"])).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for (record, truth) in scored.records().zip(&data.labels) {
        let record = record.unwrap();
        ids.insert(record[header.len() - 2].to_string());
        labelled.write_record(record.iter().chain([["legit", "fraud"][*truth as usize]])).unwrap();
    }
    labelled.flush().unwrap();
    // 8 messages on 3 streams, and the refused batch's rows scored again apart.
    assert!(ids.len() > 8 && ids.contains(""), "{ids:?}");
    let sent = candela(&url, &["feedback", "--input", outcomes.to_str().unwrap()]).await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    // The refused row has no id: skipped, and every other row joins.
    assert_eq!(
        stdout(&sent).trim(),
        "fed back 299 outcomes: 299 matched; not matched: 0 unknown or expired request id, 0 row out of range, 0 unknown label, 0 duplicate; 1 rows without a request id skipped"
    );

    // Parquet: the two columns are a string and an int64, set for every row.
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/score/rows.parquet");
    let output = dir.path().join("scored.parquet");
    let paths = ["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let run = candela(&url, &[&["score", "--segment", "sme", "--record-ids"][..], &paths[..]].concat()).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let file = std::fs::File::open(&output).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let (mut with_id, mut rows) = (0, 0);
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column_by_name("request_id").unwrap();
        assert_eq!(batch.column_by_name("row").unwrap().data_type(), &arrow_schema::DataType::Int64);
        with_id += ids.len() - ids.null_count();
        rows += batch.num_rows();
    }
    assert_eq!((rows, with_id), (600, 599), "every answered row has an id; the refused one none");
}

/// The onnx-dataframe fixture's rows (amount, country, age, channel; null
/// amounts) and onnxruntime's P(yes) for each.
fn dataframe_rows() -> (serde_json::Value, Vec<f64>) {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/repo/onnx-dataframe");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap()).unwrap();
    let yes = expected["probabilities"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect();
    (expected["columns"].clone(), yes)
}

#[tokio::test]
async fn score_sends_a_category_column_as_its_names() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/repo");
    let server = TestServer::start_with(candela_server::testing::settings(&repo, &[])).await;
    server.wait_until_serving().await;
    let dir = tempfile::tempdir().unwrap();
    let (columns, yes) = dataframe_rows();
    let column = |name: &str| columns[name].as_array().unwrap().clone();
    let (input, output) = (dir.path().join("rows.csv"), dir.path().join("scored.csv"));
    let mut writer = csv::Writer::from_path(&input).unwrap();
    writer.write_record(["channel", "age", "country", "amount"]).unwrap();
    for i in 0..yes.len() {
        let number = |v: &serde_json::Value| v.as_f64().map_or("NaN".to_string(), |v| v.to_string());
        let country = column("country")[i].as_str().unwrap().to_string();
        let channel = column("channel")[i].as_str().unwrap().to_string();
        writer.write_record([channel, number(&column("age")[i]), country, number(&column("amount")[i])]).unwrap();
    }
    writer.flush().unwrap();
    let args = ["score", "--segment", "onnx-dataframe", "--input", input.to_str().unwrap()];
    let run =
        candela(&server.url, &[&args[..], &["--output", output.to_str().unwrap(), "--batch-rows", "64"]].concat())
            .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let scored = csv_column(&output, "p_yes");
    assert_eq!(scored.len(), yes.len());
    for (row, (got, want)) in scored.iter().zip(&yes).enumerate() {
        assert!((got - want).abs() <= 1e-5, "row {row}: {got} vs onnxruntime's {want}");
    }

    // Parquet as pandas writes a `category` (dictionary-encoded) and a string column.
    #[cfg(feature = "parquet")]
    {
        use arrow_array::{ArrayRef, DictionaryArray, Float32Array, LargeStringArray, RecordBatch, types::Int8Type};
        let numbers = |name: &str| -> ArrayRef {
            Arc::new(Float32Array::from(column(name).iter().map(|v| v.as_f64().map(|v| v as f32)).collect::<Vec<_>>()))
        };
        let strings = |name: &str| column(name).iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>();
        let country: DictionaryArray<Int8Type> = strings("country").iter().map(String::as_str).collect();
        let channel = LargeStringArray::from(strings("channel"));
        let table = RecordBatch::try_from_iter([
            ("amount", numbers("amount")),
            ("country", Arc::new(country) as ArrayRef),
            ("age", numbers("age")),
            ("channel", Arc::new(channel) as ArrayRef),
        ])
        .unwrap();
        let (input, output) = (dir.path().join("rows.parquet"), dir.path().join("scored.parquet"));
        let file = std::fs::File::create(&input).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, table.schema(), None).unwrap();
        writer.write(&table).unwrap();
        writer.close().unwrap();
        let args = ["score", "--segment", "onnx-dataframe", "--input", input.to_str().unwrap()];
        let run = candela(&server.url, &[&args[..], &["--output", output.to_str().unwrap()]].concat()).await;
        assert!(run.status.success(), "{}", stderr(&run));
        let scored = parquet_column(&output, "p_yes");
        assert!(scored.iter().zip(&yes).all(|(got, want)| (got - want).abs() <= 1e-5), "Parquet rows agree");
    }
}

#[tokio::test]
async fn score_writes_a_regressors_value_as_its_prediction() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/repo");
    let server = TestServer::start_with(candela_server::testing::settings(&repo, &[])).await;
    server.wait_until_serving().await;
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("onnx-reg-forest/expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("rows.csv"), dir.path().join("scored.csv"));
    let mut writer = csv::Writer::from_path(&input).unwrap();
    writer.write_record((0..8).map(|f| format!("f{f}"))).unwrap();
    for row in expected["rows"].as_array().unwrap() {
        writer
            .write_record(row.as_array().unwrap().iter().map(|v| v.as_f64().map_or("NaN".into(), |v| v.to_string())))
            .unwrap();
    }
    writer.flush().unwrap();
    let run = candela(
        &server.url,
        &[
            "score",
            "--segment",
            "onnx-reg-forest",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header[8..], ["prediction", "error"], "a value, no probabilities");
    let values: Vec<f64> = reader.records().map(|r| r.unwrap()[8].parse().unwrap()).collect();
    let want = expected["values"].as_array().unwrap();
    assert_eq!(values.len(), want.len());
    for (got, want) in values.iter().zip(want) {
        let want = want.as_f64().unwrap();
        assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{got} vs onnxruntime's {want}");
    }
}

/// A booster with categorical features (XGBoost, which refuses unseen categories but routes a
/// missing one its default way): an empty CSV cell or a Parquet null in a category column is
/// a missing category, scored as the library does, never an unknown one.
#[tokio::test]
async fn score_sends_an_empty_or_null_category_as_missing() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/repo");
    let server = TestServer::start_with(candela_server::testing::settings(&repo, &[])).await;
    server.wait_until_serving().await;
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("xgboost-categorical/expected.json")).unwrap())
            .unwrap();
    let columns = &expected["columns"];
    let fraud: Vec<f64> =
        expected["probabilities"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect();
    let cell = |name: &str, row: usize| match &columns[name][row] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(text) => text.clone(),
        number => number.to_string(),
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("rows.csv"), dir.path().join("scored.csv"));
    let mut writer = csv::Writer::from_path(&input).unwrap();
    writer.write_record(["amount", "merchant", "hour", "country"]).unwrap();
    for row in 0..fraud.len() {
        let amount = if columns["amount"][row].is_null() { "NaN".to_string() } else { cell("amount", row) };
        writer.write_record([amount, cell("merchant", row), cell("hour", row), cell("country", row)]).unwrap();
    }
    writer.flush().unwrap();
    assert!(std::fs::read_to_string(&input).unwrap().contains(",,"), "the rows hold empty category cells");
    let args = ["score", "--segment", "xgboost-categorical", "--input", input.to_str().unwrap()];
    let run = candela(&server.url, &[&args[..], &["--output", output.to_str().unwrap()]].concat()).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let scored = csv_column(&output, "p_fraud");
    assert_eq!(scored.len(), fraud.len());
    for (row, (got, want)) in scored.iter().zip(&fraud).enumerate() {
        assert!((got - want).abs() <= 1e-5, "row {row}: {got} vs XGBoost's {want}");
    }
    #[cfg(feature = "parquet")]
    {
        use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray};
        let numbers = |name: &str| -> ArrayRef {
            let values = (0..fraud.len()).map(|r| columns[name][r].as_f64().map(|v| v as f32));
            Arc::new(values.collect::<Float32Array>())
        };
        let strings = |name: &str| -> ArrayRef {
            Arc::new((0..fraud.len()).map(|r| columns[name][r].as_str()).collect::<StringArray>())
        };
        let table = RecordBatch::try_from_iter([
            ("amount", numbers("amount")),
            ("merchant", strings("merchant")),
            ("hour", numbers("hour")),
            ("country", strings("country")),
        ])
        .unwrap();
        let (input, output) = (dir.path().join("rows.parquet"), dir.path().join("scored.parquet"));
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&input).unwrap(), table.schema(), None).unwrap();
        writer.write(&table).unwrap();
        writer.close().unwrap();
        let args = ["score", "--segment", "xgboost-categorical", "--input", input.to_str().unwrap()];
        let run = candela(&server.url, &[&args[..], &["--output", output.to_str().unwrap()]].concat()).await;
        assert!(run.status.success(), "{}", stderr(&run));
        let scored = parquet_column(&output, "p_fraud");
        assert!(scored.iter().zip(&fraud).all(|(got, want)| (got - want).abs() <= 1e-5), "Parquet nulls are missing");
    }
}

/// Column `name` of a scored CSV file, as numbers.
fn csv_column(path: &std::path::Path, name: &str) -> Vec<f64> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let at = reader.headers().unwrap().iter().position(|h| h == name).unwrap();
    reader.records().map(|r| r.unwrap()[at].parse().unwrap()).collect()
}

/// Float32 column `name` of a scored Parquet file.
#[cfg(feature = "parquet")]
fn parquet_column(path: &std::path::Path, name: &str) -> Vec<f64> {
    use arrow_array::Float32Array;
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let mut values = Vec::new();
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        let column: &Float32Array = batch.column_by_name(name).unwrap().as_any().downcast_ref().unwrap();
        values.extend(column.values().iter().map(|v| f64::from(*v)));
    }
    values
}

#[tokio::test]
async fn score_and_predict_explain_rows_with_reasons_and_contributions() {
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("rows.csv"), dir.path().join("explained.csv"));
    let data = candela_server::train::training::fresh_rows(Segment::Retail, 250);
    let mut writer = csv::Writer::from_path(&input).unwrap();
    writer.write_record(FEATURES).unwrap();
    for (i, row) in data.values.chunks(FEATURES.len()).enumerate() {
        // Row 60 cannot be scored (an infinity): its batch is isolated row by row, explained too.
        writer
            .write_record(
                row.iter().enumerate().map(|(j, v)| if i == 60 && j == 2 { "inf".into() } else { v.to_string() }),
            )
            .unwrap();
    }
    writer.flush().unwrap();
    let args =
        ["score", "--segment", "retail-gbt", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let run = candela(&url, &[&args[..], &["--explain", "3", "--contributions"]].concat()).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("scored 250 rows") && stderr(&run).contains("(1 rows refused)"), "{}", stderr(&run));
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let reasons: Vec<usize> = (1..=3).map(|k| column(&format!("reason_{k}"))).collect();
    let contributions: Vec<usize> = FEATURES.iter().map(|f| column(&format!("contribution_{f}"))).collect();
    let (base, p_fraud, error) = (column("contribution_base"), column("p_fraud"), column("error"));
    for (i, record) in reader.records().enumerate() {
        let record = record.unwrap();
        if i == 60 {
            assert!(!record[error].is_empty() && record[reasons[0]].is_empty() && record[base].is_empty());
            continue;
        }
        let values: Vec<f64> = contributions.iter().map(|c| record[*c].parse().unwrap()).collect();
        let total = values.iter().sum::<f64>() + record[base].parse::<f64>().unwrap();
        let p: f64 = record[p_fraud].parse().unwrap();
        let margin = (p / (1.0 - p)).ln();
        assert!(
            (total - margin).abs() < 1e-3 * margin.abs().max(1.0),
            "row {i}: contributions sum to {total}, the margin is {margin}"
        );
        // reason_1 is the feature pushing hardest toward fraud (when any pushes that way).
        let (top, largest) =
            values.iter().enumerate().fold((0, f64::MIN), |best, (f, v)| if *v > best.1 { (f, *v) } else { best });
        let want = if largest > 0.0 { FEATURES[top] } else { "" };
        assert_eq!(&record[reasons[0]], want, "row {i}");
    }

    let features: Vec<String> = data.values[..FEATURES.len()].iter().map(|v| v.to_string()).collect();
    let predict =
        candela(&url, &["predict", "--segment", "retail-gbt", "--features", &features.join(","), "--explain", "2"])
            .await;
    assert!(predict.status.success(), "{}", stderr(&predict));
    let text = stdout(&predict);
    assert!(text.contains("why (tree contributions):"), "{text}");
    let listed = text.lines().filter(|l| l.starts_with("  1. ") || l.starts_with("  2. ")).count();
    assert!((1..=2).contains(&listed), "{text}");
}

#[tokio::test]
async fn score_writes_reasons_and_contributions_into_parquet() {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    use arrow_schema::DataType;
    let (url, _stop) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/score/rows.parquet");
    let output = dir.path().join("explained.parquet");
    let args =
        ["score", "--segment", "retail-gbt", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let run = candela(&url, &[&args[..], &["--explain", "2", "--contributions"]].concat()).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let file = std::fs::File::open(&output).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    assert_eq!(schema.field_with_name("reason_1").unwrap().data_type(), &DataType::Utf8);
    assert_eq!(schema.field_with_name("contribution_base").unwrap().data_type(), &DataType::Float32);
    let mut rows = 0;
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        let column = |name: &str| batch.column(schema.index_of(name).unwrap()).clone();
        let p_fraud = column("p_fraud");
        let base = column("contribution_base");
        let reason = column("reason_1");
        for i in 0..batch.num_rows() {
            let mut total = f64::from(base.as_primitive::<Float32Type>().value(i));
            for f in FEATURES {
                total += f64::from(column(&format!("contribution_{f}")).as_primitive::<Float32Type>().value(i));
            }
            let p = f64::from(p_fraud.as_primitive::<Float32Type>().value(i));
            assert!((total - (p / (1.0 - p)).ln()).abs() < 1e-3 * total.abs().max(1.0), "row {}", rows + i);
            let named = reason.as_string::<i32>();
            assert!(named.is_null(i) || FEATURES.contains(&named.value(i)), "row {}", rows + i);
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, 600);
}
