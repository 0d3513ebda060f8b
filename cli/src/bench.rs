//! `candela bench`: a load generator for Candela and any Open Inference
//! Protocol server (Triton, MLServer, the transport baseline in bench/), so
//! they are measured by the same client. Closed loop: `--concurrency` callers,
//! each sending its next request when the last is answered. Open loop
//! (`--rate`): requests are sent on a fixed schedule whatever the server does,
//! and latency counts from the moment a request was *due*, so a stalled server
//! cannot hide its stall by slowing the client (no coordinated omission).
//! Latencies go into an HDR histogram; the summary is text or JSON.

use crate::http_load::{self, HttpRequest};
use anyhow::{Context, bail};
use candela_client::{Client, ModelId, OpenInferenceClient, oip, proto, stream_batch};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// Which RPC the load is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchCall {
    /// candela.v1 Predict: one row per call.
    Predict,
    /// candela.v1 BatchPredict: `--rows` rows per call.
    BatchPredict,
    /// candela.v1 StreamPredict: `--rows` rows per message, `--stream-window`
    /// messages in flight on each of `--concurrency` streams.
    StreamPredict,
    /// Open Inference Protocol ModelInfer, FP32 raw contents, `--rows` rows.
    ModelInfer,
    /// HTTP `POST /score` (JSON rows) to `--http-url`.
    HttpScore,
    /// HTTP Open Inference Protocol infer with JSON tensors, to `--http-url`.
    HttpInferJson,
    /// HTTP Open Inference Protocol infer with binary tensor data, to `--http-url`.
    HttpInferBinary,
}

/// `candela bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The RPC to load the server with.
    #[arg(long, value_enum, default_value_t = BenchCall::Predict)]
    pub call: BenchCall,
    /// The segment (candela.v1) or model name (ModelInfer).
    #[arg(long, default_value = "retail")]
    pub model: String,
    /// Rows per request (per message for stream-predict).
    #[arg(long, default_value_t = 1)]
    pub rows: usize,
    /// Features per row; default: asked of the server (GetModel, or ModelMetadata for ModelInfer).
    #[arg(long)]
    features: Option<usize>,
    /// Closed loop: callers each keeping one request in flight (streams, for stream-predict).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Open loop: requests per second, sent on schedule whatever the latency
    /// (not for stream-predict).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of the same load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// HTTP/2 connections the callers share (round robin).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// The server's HTTP API, for the http-* calls.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_url: String,
    /// Messages in flight per stream (stream-predict).
    #[arg(long, default_value_t = 4)]
    stream_window: usize,
    /// Ask for packed columns instead of a prediction per row (stream-predict;
    /// what `candela score` does).
    #[arg(long)]
    columnar: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Ask for this many reasons per row (Predict, BatchPredict and
    /// StreamPredict): the cost of explanations.
    #[arg(long, default_value_t = 0)]
    pub explain: u32,
    /// Capacity planning: search (open loop, each run `--duration` long) for
    /// the highest request rate one server sustains with p95 latency within
    /// this many milliseconds, no errors and no backlog.
    #[arg(long)]
    pub p95_ms: Option<f64>,
    /// With --p95-ms: the load to size a fleet for, in requests per second;
    /// prints the replicas it takes.
    #[arg(long, requires = "p95_ms")]
    pub target_qps: Option<f64>,
    /// With --target-qps: the utilisation u of the rule of thumb ⌈QPS · t_p95 / u⌉.
    #[arg(long, default_value_t = 0.7, requires = "target_qps")]
    pub utilization: f64,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct BenchSummary {
    call: BenchCall,
    model: String,
    rows_per_request: usize,
    concurrency: usize,
    rate: Option<f64>,
    pub connections: usize,
    seconds: f64,
    requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    rows_per_second: f64,
    latency_us: Latency,
    /// The first few distinct error messages, with counts.
    error_samples: Vec<(String, u64)>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p95: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

/// The requests of a run, built once and cloned per call.
#[derive(Clone)]
enum Prepared {
    Predict(proto::PredictRequest),
    BatchPredict(proto::BatchPredictRequest),
    ModelInfer(oip::ModelInferRequest),
    Http(Box<HttpRequest>),
}

/// The shared record of a run: latencies and outcomes.
struct Recorder {
    histogram: Mutex<Histogram<u64>>,
    requests: AtomicU64,
    errors: AtomicU64,
    error_samples: Mutex<HashMap<String, u64>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            histogram: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_samples: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, latency: Duration, outcome: Result<(), tonic::Status>) {
        match outcome {
            Ok(()) => {
                self.requests.fetch_add(1, Relaxed);
                let micros = (latency.as_micros() as u64).clamp(1, 120_000_000);
                self.histogram.lock().expect("histogram lock").record(micros).expect("clamped into bounds");
            }
            Err(status) => {
                self.errors.fetch_add(1, Relaxed);
                let sample = format!("{:?}: {}", status.code(), status.message());
                let mut samples = self.error_samples.lock().expect("samples lock");
                if samples.len() < 8 || samples.contains_key(&sample) {
                    *samples.entry(sample).or_default() += 1;
                }
            }
        }
    }
}

/// Runs the load described by `args` over `clients` (one per connection, all
/// to the same server).
pub async fn run(clients: &[Client], args: &BenchArgs) -> anyhow::Result<BenchSummary> {
    let client = &clients[0];
    if args.rows == 0 || args.concurrency == 0 || args.connections == 0 || args.stream_window == 0 {
        bail!("--rows, --concurrency, --connections and --stream-window must be at least 1");
    }
    if args.call == BenchCall::Predict && args.rows != 1 {
        bail!("Predict scores exactly one row: use --call batch-predict for --rows {}", args.rows);
    }
    if args.rate.is_some() && args.call == BenchCall::StreamPredict {
        bail!("--rate is for unary calls; stream-predict runs closed loop (--concurrency streams)");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of requests per second");
    }
    let features = match args.features {
        Some(n) => n,
        None => features_of(client, args).await?,
    };
    let values: Vec<f32> = (0..args.rows * features).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
    let prepared = prepare(args, features, values.clone())?;

    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let measure = Duration::from_secs_f64(args.duration.max(0.1));
    let recorder = Arc::new(Recorder::new());
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    match (args.call, args.rate) {
        (BenchCall::StreamPredict, _) => {
            stream_load(clients, args, features, values, measure_from, end, &recorder).await
        }
        (_, Some(rate)) => open_loop(clients, &prepared, rate, measure_from, end, &recorder).await,
        (_, None) => closed_loop(clients, &prepared, args.concurrency, measure_from, end, &recorder).await,
    }
    let histogram = recorder.histogram.lock().expect("histogram lock");
    let requests = recorder.requests.load(Relaxed);
    let seconds = measure.as_secs_f64();
    let mut error_samples: Vec<(String, u64)> =
        recorder.error_samples.lock().expect("samples lock").iter().map(|(m, c)| (m.clone(), *c)).collect();
    error_samples.sort();
    Ok(BenchSummary {
        call: args.call,
        model: args.model.clone(),
        rows_per_request: args.rows,
        concurrency: args.concurrency,
        rate: args.rate,
        connections: args.connections,
        seconds,
        requests,
        errors: recorder.errors.load(Relaxed),
        requests_per_second: requests as f64 / seconds,
        rows_per_second: (requests * args.rows as u64) as f64 / seconds,
        latency_us: Latency {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p95: histogram.value_at_quantile(0.95),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        },
        error_samples,
    })
}

/// Features per row, as the server describes the model.
async fn features_of(client: &Client, args: &BenchArgs) -> anyhow::Result<usize> {
    if args.call == BenchCall::ModelInfer {
        let request = oip::ModelMetadataRequest { name: args.model.clone(), version: String::new() };
        let metadata = client.open_inference().model_metadata(request).await.context("ModelMetadata")?.into_inner();
        let input = metadata.inputs.first().context("the model's metadata lists no inputs: pass --features")?;
        let columns = *input.shape.last().context("the input has no shape: pass --features")?;
        usize::try_from(columns)
            .ok()
            .filter(|c| *c > 0)
            .context("the input's last dimension is not fixed: pass --features")
    } else {
        let model = client.clone().get_model(ModelId::latest(args.model.clone())).await.context("GetModel")?;
        Ok(model.features.len())
    }
}

fn prepare(args: &BenchArgs, features: usize, values: Vec<f32>) -> anyhow::Result<Prepared> {
    let http = |kind| -> anyhow::Result<Prepared> {
        let request = HttpRequest::new(kind, &args.http_url, &args.model, args.rows, features, &values)?;
        Ok(Prepared::Http(Box::new(request)))
    };
    Ok(match args.call {
        BenchCall::HttpScore => http(http_load::Kind::Score)?,
        BenchCall::HttpInferJson => http(http_load::Kind::InferJson)?,
        BenchCall::HttpInferBinary => http(http_load::Kind::InferBinary)?,
        BenchCall::Predict => Prepared::Predict(proto::PredictRequest {
            segment: args.model.clone(),
            version: 0,
            features: values,
            text: Vec::new(),
            explain: args.explain,
        }),
        BenchCall::BatchPredict | BenchCall::StreamPredict => Prepared::BatchPredict(proto::BatchPredictRequest {
            segment: args.model.clone(),
            version: 0,
            rows: Some(proto::Rows { feature_count: features as u32, values, text: Vec::new() }),
            explain: args.explain,
        }),
        BenchCall::ModelInfer => {
            let mut raw = Vec::with_capacity(values.len() * 4);
            for v in &values {
                raw.extend_from_slice(&v.to_le_bytes());
            }
            Prepared::ModelInfer(oip::ModelInferRequest {
                model_name: args.model.clone(),
                inputs: vec![oip::model_infer_request::InferInputTensor {
                    name: "features".into(),
                    datatype: "FP32".into(),
                    shape: vec![args.rows as i64, features as i64],
                    ..Default::default()
                }],
                raw_input_contents: vec![raw.into()],
                ..Default::default()
            })
        }
    })
}

/// One call; Ok when the server answered it successfully.
async fn call_once(
    client: &mut Client,
    oip: &mut OpenInferenceClient,
    prepared: &Prepared,
) -> Result<(), tonic::Status> {
    match prepared {
        Prepared::Predict(request) => client.inference().predict(request.clone()).await.map(drop),
        Prepared::BatchPredict(request) => client.inference().batch_predict(request.clone()).await.map(drop),
        Prepared::ModelInfer(request) => oip.model_infer(request.clone()).await.map(drop),
        Prepared::Http(request) => request.send().await,
    }
}

async fn closed_loop(
    clients: &[Client],
    prepared: &Prepared,
    concurrency: usize,
    measure_from: Instant,
    end: Instant,
    recorder: &Arc<Recorder>,
) {
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let mut oip = client.open_inference();
            let (prepared, recorder) = (prepared.clone(), recorder.clone());
            tokio::spawn(async move {
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let outcome = call_once(&mut client, &mut oip, &prepared).await;
                    if sent >= measure_from {
                        recorder.record(sent.elapsed(), outcome);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// Most requests outstanding in an open loop before the generator itself
/// gives up (the server is far slower than the rate asked).
const OPEN_LOOP_OUTSTANDING: usize = 10_000;

/// Sends `prepared` at `rate` per second on schedule. A thread of its own
/// paces the sends (the OS sleeps to within tens of microseconds; tokio's
/// timer fires up to a millisecond late, and that lateness would have been
/// counted as the server's latency, since every latency counts from when
/// its request was due).
async fn open_loop(
    clients: &[Client],
    prepared: &Prepared,
    rate: f64,
    measure_from: Instant,
    end: Instant,
    recorder: &Arc<Recorder>,
) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let outstanding = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_OUTSTANDING));
    let runtime = tokio::runtime::Handle::current();
    let (clients, prepared, pacer_recorder, permits) =
        (clients.to_vec(), prepared.clone(), recorder.clone(), outstanding.clone());
    let pacing = tokio::task::spawn_blocking(move || {
        let mut due = Instant::now();
        let mut sent = 0usize;
        while due < end {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                let error = tonic::Status::resource_exhausted("client: too many outstanding");
                pacer_recorder.record(Duration::ZERO, Err(error));
                due += interval;
                continue;
            };
            let mut client = clients[sent % clients.len()].clone();
            let mut oip = client.open_inference();
            let (prepared, recorder) = (prepared.clone(), pacer_recorder.clone());
            let scheduled = due;
            runtime.spawn(async move {
                let _permit = permit;
                let outcome = call_once(&mut client, &mut oip, &prepared).await;
                if scheduled >= measure_from {
                    // From when the request was due, not when it left.
                    recorder.record(scheduled.elapsed(), outcome);
                }
            });
            sent += 1;
            due += interval;
        }
    });
    let _ = pacing.await;
    // Every call has ended once all the permits are back.
    let _ = outstanding.acquire_many(OPEN_LOOP_OUTSTANDING as u32).await;
}

async fn stream_load(
    clients: &[Client],
    args: &BenchArgs,
    features: usize,
    values: Vec<f32>,
    measure_from: Instant,
    end: Instant,
    recorder: &Arc<Recorder>,
) {
    let model = ModelId::latest(args.model.clone());
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let (model, values, recorder, window, columnar, explain) =
                (model.clone(), values.clone(), recorder.clone(), args.stream_window, args.columnar, args.explain);
            tokio::spawn(async move {
                let (sender, receiver) = mpsc::channel(window);
                let mut responses = match client.stream_predict(ReceiverStream::new(receiver)).await {
                    Ok(responses) => responses,
                    Err(status) => return recorder.record(Duration::ZERO, Err(status)),
                };
                let mut sent_at: HashMap<u64, Instant> = HashMap::new();
                let mut next = 0u64;
                // A full window or a closed stream shows in the responses, not here.
                let send = |id: u64| {
                    let mut batch = stream_batch(id.to_string(), &model, features, values.clone());
                    batch.columnar = columnar;
                    batch.explain = explain;
                    let _ = sender.try_send(batch);
                };
                for _ in 0..window {
                    sent_at.insert(next, Instant::now());
                    send(next);
                    next += 1;
                }
                while let Some(response) = responses.next().await {
                    let response = match response {
                        Ok(response) => response,
                        Err(status) => return recorder.record(Duration::ZERO, Err(status)),
                    };
                    let id: u64 = response.id.parse().unwrap_or(u64::MAX);
                    let sent = sent_at.remove(&id).unwrap_or_else(Instant::now);
                    if sent >= measure_from {
                        let outcome = match response.outcome {
                            Some(proto::stream_predict_response::Outcome::Result(_)) => Ok(()),
                            Some(proto::stream_predict_response::Outcome::Error(error)) => {
                                Err(tonic::Status::new(tonic::Code::from(error.code), error.message))
                            }
                            None => Err(tonic::Status::internal("a response with neither result nor error")),
                        };
                        recorder.record(sent.elapsed(), outcome);
                    }
                    if Instant::now() < end {
                        sent_at.insert(next, Instant::now());
                        send(next);
                        next += 1;
                    } else if sent_at.is_empty() {
                        break;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

impl BenchSummary {
    pub fn p95_us(&self) -> u64 {
        self.latency_us.p95
    }

    pub fn p99_us(&self) -> u64 {
        self.latency_us.p99
    }

    /// The summary for people.
    pub fn print(&self) {
        let l = &self.latency_us;
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => format!("closed loop, concurrency {}", self.concurrency),
        };
        println!(
            "{:?} on `{}`, {} row(s) per request, {load}, {:.1} s",
            self.call, self.model, self.rows_per_request, self.seconds
        );
        println!(
            "  {:.0} requests/s, {:.0} rows/s, {} ok, {} errors",
            self.requests_per_second, self.rows_per_second, self.requests, self.errors
        );
        println!(
            "  latency µs: p50 {} p90 {} p95 {} p99 {} p99.9 {} max {} (mean {:.0})",
            l.p50, l.p90, l.p95, l.p99, l.p999, l.max, l.mean
        );
        for (message, count) in &self.error_samples {
            println!("  {count} × {message}");
        }
    }
}
