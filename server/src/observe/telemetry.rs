//! Logs and traces. Log lines (pretty or JSON) carry ids, segments, versions,
//! row counts and outcomes, never feature values: features can be personal
//! data. Every call gets a span (service, method, segment, version, rows,
//! queue and compute time, gRPC code); with an OTLP endpoint the spans are
//! exported over OTLP/gRPC, continuing the caller's W3C `traceparent`.

use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Whether call spans are exported. Without an exporter no call span is
/// made at all: nothing would read it, and making one costs a small call
/// several allocations and registry operations.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Flushes and stops trace export when dropped (at exit).
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace export did not shut down cleanly: {error}");
        }
    }
}

/// Installs the global subscriber: logs as JSON lines or pretty text (`RUST_LOG` overrides
/// the default `info` level), and OTLP trace export when `otlp_endpoint` is
/// set. Must run inside the Tokio runtime (the exporter uses it).
pub fn init(json: bool, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file or a log collector
    // would get escape codes in every line.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    let logs = if json { logs.json().flatten_event(true).boxed() } else { logs.boxed() };
    let (traces, provider) = match otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "candela".into());
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("candela"));
            (Some(layer.with_filter(LevelFilter::INFO)), Some(provider))
        }
        None => (None, None),
    };
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    // Log lines are events only: the fmt layer would otherwise format every
    // call span's fields as they are recorded (the JSON formatter re-parses
    // and re-serialises them on each record), a large part of a small call's
    // CPU time. Events name their call with `request` themselves.
    let logs = logs.with_filter(filter.and(filter_fn(|metadata| metadata.is_event())));
    // No `Option` layer: a `None` one would still enable every callsite,
    // making the registry create h2's and tonic's trace-level spans.
    match traces {
        Some(traces) => tracing_subscriber::registry().with(logs).with(traces).try_init()?,
        None => tracing_subscriber::registry().with(logs).try_init()?,
    }
    if let Some(endpoint) = otlp_endpoint {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry { traces: provider })
}

/// The span of one call, a child of `parent` (the caller's trace context,
/// which the front extracts from its protocol's headers). Fields are filled
/// in as the call proceeds. A disabled span (recording nothing) when traces
/// are not exported; `parent` is only asked for when they are.
pub fn call_span(
    parent: impl FnOnce() -> opentelemetry::Context,
    service: &'static str,
    method: &'static str,
    log_id: &str,
) -> tracing::Span {
    if !EXPORTING.load(Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "call",
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        request = log_id,
        segment = tracing::field::Empty,
        version = tracing::field::Empty,
        rows = tracing::field::Empty,
        batch_rows = tracing::field::Empty,
        queue_seconds = tracing::field::Empty,
        compute_seconds = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(parent());
    span
}
