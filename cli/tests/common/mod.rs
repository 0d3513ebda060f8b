//! What the `candela model` tests share: the real binary, and a LightGBM
//! booster trained on a DataFrame with category columns (the fixture the
//! library made) alone in a directory, with a CSV sample of its rows.

use candela_client::Client;
use candela_server::testing::{eventually, repo_root};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

pub fn fixture() -> PathBuf {
    repo_root().join("tests/fixtures/formats/repo/lightgbm-categorical")
}

/// Runs `candela args…` (no server needed) with `env`, off the runtime.
pub async fn candela(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_candela"));
    command.args(args).envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The trained file alone in a directory, and a CSV sample of its rows
/// (those with every cell present).
pub fn trained(work: &Path) -> (PathBuf, PathBuf) {
    let dir = work.join("trained");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture().join("1/lightgbm.txt"), dir.join("lightgbm.txt")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let columns = ["amount", "merchant", "hour", "country"];
    let mut csv = String::from("amount,merchant,hour,country\n");
    for row in 0..expected["probabilities"].as_array().unwrap().len() {
        let cells: Vec<&serde_json::Value> = columns.iter().map(|c| &expected["columns"][c][row]).collect();
        if cells.iter().all(|c| !c.is_null()) {
            let cells: Vec<String> =
                cells.iter().map(|c| c.as_str().map_or_else(|| c.to_string(), String::from)).collect();
            csv.push_str(&(cells.join(",") + "\n"));
        }
    }
    let sample = work.join("sample.csv");
    std::fs::write(&sample, csv).unwrap();
    (dir.join("lightgbm.txt"), sample)
}

/// Once the server serves, the fixture's first row with every cell
/// present, categories as codes, and the library's answer for it.
pub async fn first_row(client: &mut Client, segment: &str) -> (Vec<f32>, f64) {
    let serving = async || client.health("").await.is_ok_and(|s| s == ServingStatus::Serving);
    eventually(Duration::from_secs(30), "the server serving", serving).await;
    let info = client.get_model(segment).await.unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let row = (0..300)
        .find(|&r| ["amount", "merchant", "hour", "country"].iter().all(|c| !expected["columns"][c][r].is_null()));
    let row = row.unwrap();
    let cell = |f: usize| {
        let value = &expected["columns"][&info.features[f]][row];
        match value.as_str() {
            Some(name) => info.feature_types[f].categories.iter().position(|c| c == name).map_or(-1.0, |at| at as f32),
            None => value.as_f64().unwrap() as f32,
        }
    };
    ((0..4).map(cell).collect(), expected["probabilities"][row][1].as_f64().unwrap())
}
