//! Logs and traces for every Starling process: [`init`] installs the `tracing`
//! subscriber once, at start, and [`Telemetry::shutdown`] flushes what is left at exit.
//!
//! - **Logs** go to stderr, filtered by `RUST_LOG`, as text or, with
//!   `STARLING_LOG_FORMAT=json`, as one JSON object a line carrying the `trace_id` and
//!   `span_id` of the span they were logged in ([`json`]).
//! - **Traces** are exported over OTLP (HTTP/protobuf) by the OpenTelemetry SDK when the
//!   standard environment asks for it, and not at all otherwise ([`config`]): the spans
//!   Starling opens through `tracing` become OpenTelemetry spans through
//!   `tracing-opentelemetry`, batched and sent by the SDK's batch processor on a thread of
//!   its own. Sampling (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), the batch
//!   processor (`OTEL_BSP_*`) and the resource (`OTEL_SERVICE_NAME`,
//!   `OTEL_RESOURCE_ATTRIBUTES`) are read by the SDK itself.
//! - **Context** crosses processes as W3C `traceparent`/`tracestate`, by the SDK's
//!   propagator ([`propagation`]): incoming and internal HTTP, event headers on the log,
//!   the timeline bus.
//!
//! With export off, nothing of OpenTelemetry runs: the spans made only for traces
//! ([`span!`]) are not even created, and no context is propagated, so the hot paths cost
//! what they cost before (BENCHMARKS.md, "Traces").

pub mod config;
pub mod json;
pub mod propagation;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use config::{LogFormat, TelemetryConfig, Traces};

/// Set once by [`init`]: whether spans are exported, so whether [`span!`] makes any.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces. Code that would do work only for a trace (open
/// a span, inject a header) asks this first.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Turns [`exporting`] on without installing anything: for tests that install their own
/// subscriber and propagator.
#[doc(hidden)]
pub fn set_exporting_for_tests() {
    start_exporting();
}

/// What every process that exports shares: the W3C propagator, and [`exporting`] true.
fn start_exporting() {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    EXPORTING.store(true, Ordering::Relaxed);
}

/// An `INFO` span that exists only while traces are exported ([`exporting`]), and is
/// [`tracing::Span::none`] otherwise: for the spans around backend calls, requests and
/// internal calls, which a log line never needs.
#[macro_export]
macro_rules! span {
    ($($arg:tt)+) => {
        if $crate::exporting() { ::tracing::info_span!($($arg)+) } else { ::tracing::Span::none() }
    };
}

/// The installed subscriber's exporting half; flush it with [`Telemetry::shutdown`].
#[must_use = "call shutdown() at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still batched and stops the exporter. It blocks (the SDK's batch
    /// processor joins its thread), so an async caller runs it on a blocking thread.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces at exit failed: {e}");
        }
    }
}

/// Crates whose DEBUG spans are store calls, exported with the rest.
const STORE_TARGETS: [&str; 2] = ["starling_storage", "starling_scylla_store"];

/// The log filter when `RUST_LOG` is unset: the storage engine's own info lines are noise.
const DEFAULT_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// Installs logging and, if the environment asks for it, trace export, for a process
/// whose service name is `service` unless `OTEL_SERVICE_NAME` says otherwise. Call once,
/// inside the Tokio runtime, before anything logs.
pub fn init(service: &str) -> anyhow::Result<Telemetry> {
    let config = TelemetryConfig::from_env(|name| std::env::var(name).ok())?;
    init_with(service, &config)
}

/// [`init`] with the configuration given.
pub fn init_with(service: &str, config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    // Logs to stderr; stdout carries only the "listening on" line scripts read.
    let json = json::JsonLines::default();
    let logs = match config.logs {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).event_format(json.clone()).boxed()
        }
    }
    .with_filter(filter);
    let provider = match &config.traces {
        Traces::Off => None,
        Traces::Otlp => Some(provider(service)?),
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("starling"))
            // Spans at INFO and above become OpenTelemetry spans, and the stores' DEBUG
            // spans (one per store call: a read's storage calls); of events, only warnings
            // and errors become span events (the rest are logs, not trace data).
            .with_filter(FilterFn::new(|m| {
                if !m.is_span() {
                    *m.level() <= tracing::Level::WARN
                } else {
                    *m.level() <= tracing::Level::INFO
                        || (*m.level() <= tracing::Level::DEBUG
                            && STORE_TARGETS.iter().any(|t| m.target().starts_with(t)))
                }
            }))
    });
    tracing_subscriber::registry().with(logs).with(traces).try_init()?;
    json.bind();
    if provider.is_some() {
        start_exporting();
    }
    Ok(Telemetry { provider })
}

/// The SDK's tracer provider with an OTLP/HTTP exporter, configured by the standard
/// environment (endpoint, headers, timeout, sampler, batching, resource).
fn provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let mut resource =
        Resource::builder().with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    // OTEL_SERVICE_NAME, read by the resource's own detector, wins over the role's name.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}
