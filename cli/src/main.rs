//! `candela`: the command line for Candela servers. Health checks, model
//! listing, one-off predictions, batch scoring of CSV and Parquet
//! files through StreamPredict, outcomes fed back (`feedback`), load
//! generation (`bench`), repository control and rollouts (`rollout`).

mod bench;
mod capacity;
mod feedback;
mod http_load;
mod model;
mod rollout;
mod score;

use anyhow::{Context, bail};
use candela_client::{Client, ModelId};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Talk to a Candela inference server.
#[derive(Parser)]
#[command(name = "candela", version)]
struct Cli {
    /// The server's URL.
    #[arg(long, env = "CANDELA_SERVER", default_value = "http://127.0.0.1:50051", global = true)]
    server: String,
    /// Seconds to wait for the connection.
    #[arg(long, default_value_t = 5.0, global = true)]
    connect_timeout: f64,
    /// The API key to send, when the server requires one.
    #[arg(long, env = "CANDELA_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// The admin key `candela repository` and `candela rollout` send (load,
    /// unload, reload and every rollout command need one).
    #[arg(long, env = "CANDELA_ADMIN_KEY", hide_env_values = true, global = true)]
    admin_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the server's gRPC health; exits non-zero unless SERVING.
    Health {
        /// The service to ask about; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// List the served models: segments, versions, features, labels.
    Models,
    /// Score one row.
    Predict {
        /// The segment; omit for the server's default.
        #[arg(long, default_value = "")]
        segment: String,
        /// The model version; 0 for the newest.
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Comma-separated feature values in the model's order (see `candela models`).
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true, required = true)]
        features: Vec<f32>,
        /// Also print why: the this-many features pushing the row most toward
        /// its answer, with their contributions (0: none).
        #[arg(long, default_value_t = 0)]
        explain: u32,
    },
    /// Score a CSV or Parquet file through StreamPredict and write the rows with their scores.
    Score {
        /// The segment; omit for the server's default.
        #[arg(long, default_value = "")]
        segment: String,
        /// The model version; 0 for the newest.
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Input table: Parquet (`.parquet`, `.pq`) or CSV with a header row;
        /// columns named for (at least) the model's features, in any order.
        #[arg(long)]
        input: PathBuf,
        /// Output table, in the input's format: the input columns plus
        /// prediction, one probability column per label (`p_<label>`), and error.
        #[arg(long)]
        output: PathBuf,
        /// Rows per StreamPredict message: at most the server's --max-rows
        /// (1000 by default), with --explain its --max-explain-rows (100).
        #[arg(long)]
        batch_rows: Option<usize>,
        /// StreamPredict streams scoring at once (batches dealt in turn,
        /// results written in input order).
        #[arg(long, default_value_t = 8)]
        streams: usize,
        /// Add `request_id` and `row` columns: under which request id and row
        /// the server keeps each answer, so the true labels can be sent later
        /// (`candela feedback` reads exactly these columns, plus `label`).
        #[arg(long)]
        record_ids: bool,
        /// Add `reason_1` … `reason_K`: the K features pushing each row most
        /// toward its answer, most first (see docs/explanations.md).
        #[arg(long, default_value_t = 0)]
        explain: usize,
        /// With --explain, also add every feature's contribution
        /// (`contribution_<feature>`) and `contribution_base`.
        #[arg(long, requires = "explain")]
        contributions: bool,
    },
    /// Send the true labels of rows scored earlier (a CSV or Parquet table
    /// with columns `request_id`, `row`, `label`) and print how many joined.
    Feedback {
        /// The outcomes table.
        #[arg(long)]
        input: PathBuf,
    },
    /// Load the server (candela.v1 or Open Inference Protocol) and report
    /// throughput and latency percentiles; with --p95-ms, find the highest
    /// rate one replica sustains within a p95 target and size a fleet.
    Bench(bench::BenchArgs),
    /// See and change what the server serves from its model repository.
    Repository {
        #[command(subcommand)]
        action: RepositoryAction,
    },
    /// See a segment's release (canary, shadow, guard, drift) and roll a canary back.
    Rollout {
        #[command(subcommand)]
        action: rollout::RolloutAction,
    },
    /// From a trained model file to a served version: write its model.json
    /// (`init`), then put it into a repository (`publish`). No server needed.
    Model {
        #[command(subcommand)]
        action: model::ModelAction,
    },
}

#[derive(Subcommand)]
enum RepositoryAction {
    /// Every version in the repository: READY, LOADING, or UNAVAILABLE with the reason.
    Index,
    /// Rescan the whole repository now (needs an admin key).
    Reload,
    /// Rescan and serve a segment again after `unload` (needs an admin key).
    Load { segment: String },
    /// Stop serving a segment until `load` (needs an admin key).
    Unload { segment: String },
}

/// mimalloc instead of the system allocator: scoring a table allocates a
/// label and a probability vector per row (the decoded predictions), and
/// glibc's malloc and free were an eighth of `candela score`'s time (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let client = Client::connect(&cli.server, Duration::from_secs_f64(cli.connect_timeout)).await?;
    // Repository commands send the admin key (which the server also accepts for reading).
    let key = match cli.command {
        Command::Repository { .. } | Command::Rollout { .. } => cli.admin_key.as_ref().or(cli.api_key.as_ref()),
        _ => cli.api_key.as_ref(),
    };
    Ok(match key {
        Some(key) => client.with_api_key(key)?,
        None => client,
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Model { action } = cli.command {
        println!("{}", model::run(action).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = connect(&cli).await?;
    match cli.command {
        Command::Health { service } => {
            let status = client.health(&service).await.map_err(status_error)?;
            println!("{}", status.as_str_name());
            Ok(if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Models => {
            let list = client.list_models().await.map_err(status_error)?;
            for m in &list.models {
                let metrics: Vec<String> =
                    m.provenance.iter().flat_map(|p| &p.metrics).map(|(k, v)| format!("{k}={v}")).collect();
                let default = if m.segment == list.default_segment && m.is_latest { "  (default)" } else { "" };
                println!("{} v{}{}{default}", m.segment, m.version, if m.is_latest { " latest" } else { "" });
                if let Some(created) = m.provenance.as_ref().map(|p| p.created.as_str()).filter(|c| !c.is_empty()) {
                    println!("  created  {created} ({})", age(created));
                }
                println!("  device {}  dtype {}  layers {}", m.device, m.dtype, m.layers.join(" → "));
                match m.task.as_str() {
                    "regression" => println!("  answers  a value (regression)"),
                    _ => println!("  labels   {}", m.labels.join(", ")),
                }
                println!("  features {}", m.features.join(", "));
                if !metrics.is_empty() {
                    println!("  metrics  {}", metrics.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Predict { segment, version, features, explain } => {
            let model = ModelId::pinned(segment, version);
            let response = client.predict_explained(model, features, explain).await.map_err(status_error)?;
            let prediction = response.prediction.context("the server sent no prediction")?;
            let model = response.model.unwrap_or_default();
            if prediction.probabilities.is_empty() {
                println!("value {}", prediction.value);
            } else {
                println!("{} (class {})", prediction.label, prediction.class_index);
                println!("probabilities {:?}", prediction.probabilities);
            }
            if let Some(explanation) = &prediction.explanation {
                println!("why ({} contributions):", explanation.method);
                for (rank, reason) in explanation.reasons.iter().enumerate() {
                    let value =
                        if reason.category.is_empty() { reason.value.to_string() } else { reason.category.clone() };
                    println!("  {}. {} {:+.4} (value {value})", rank + 1, reason.feature, reason.contribution);
                }
            }
            println!("model {} v{}  request {}", model.segment, model.version, response.request_id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Feedback { input } => {
            let (totals, skipped) = feedback::send(&mut client, &input).await?;
            println!("{}", feedback::summary(&totals, skipped)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Score { segment, version, input, output, batch_rows, streams, record_ids, explain, contributions } => {
            let batch_rows = batch_rows.unwrap_or(if explain > 0 { 100 } else { 1000 });
            if batch_rows == 0 || streams == 0 {
                bail!("--batch-rows and --streams must be at least 1");
            }
            let model = ModelId::pinned(segment, version);
            let started = std::time::Instant::now();
            let run = score::Run { batch_rows, streams, record_ids, explain, contributions };
            let summary = score::score_file(&mut client, model, &input, &output, run).await?;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "scored {} rows into {} ({} rows refused) in {seconds:.2} s, {:.0} rows/s",
                summary.rows,
                output.display(),
                summary.refused_rows,
                summary.rows as f64 / seconds.max(1e-9)
            );
            Ok(if summary.refused_rows == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Model { .. } => unreachable!("handled before connecting"),
        Command::Bench(ref args) => {
            let mut clients = vec![client];
            for _ in 1..args.connections.max(1) {
                clients.push(connect(&cli).await?);
            }
            if let Some(p95_ms) = args.p95_ms {
                let capacity = capacity::search(&clients, args, p95_ms).await?;
                if args.json {
                    println!("{}", serde_json::to_string(&capacity)?);
                } else {
                    capacity.print(args);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let summary = bench::run(&clients, args).await?;
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                summary.print();
            }
            Ok(if summary.errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Repository { action } => repository(&client, action).await,
        Command::Rollout { action } => {
            rollout::run(&client, action).await.map_err(status_error)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a `candela repository` action.
async fn repository(client: &Client, action: RepositoryAction) -> anyhow::Result<ExitCode> {
    use candela_client::oip;
    let mut oip = client.open_inference();
    match action {
        RepositoryAction::Index => {
            let request = oip::RepositoryIndexRequest { repository_name: String::new(), ready: false };
            let index = oip.repository_index(request).await.map_err(status_error)?.into_inner();
            for model in index.models {
                let reason = if model.reason.is_empty() { String::new() } else { format!("  {}", model.reason) };
                println!("{} v{}  {}{reason}", model.name, model.version, model.state);
            }
        }
        RepositoryAction::Reload => {
            let request = oip::RepositoryModelLoadRequest::default();
            oip.repository_model_load(request).await.map_err(status_error)?;
            println!("rescanned");
        }
        RepositoryAction::Load { segment } => {
            let request = oip::RepositoryModelLoadRequest { model_name: segment.clone(), ..Default::default() };
            oip.repository_model_load(request).await.map_err(status_error)?;
            println!("{segment} loaded");
        }
        RepositoryAction::Unload { segment } => {
            let request = oip::RepositoryModelUnloadRequest { model_name: segment.clone(), ..Default::default() };
            oip.repository_model_unload(request).await.map_err(status_error)?;
            println!("{segment} unloaded");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long ago an RFC 3339 time was, in days (or why it cannot be read).
fn age(created: &str) -> String {
    match humantime::parse_rfc3339_weak(created) {
        Ok(at) => {
            let days = std::time::SystemTime::now().duration_since(at).unwrap_or_default().as_secs() / 86_400;
            format!("{days} days old")
        }
        Err(_) => "not an RFC 3339 time".into(),
    }
}

/// A gRPC status as a one-line error, with any field violations the server sent.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
