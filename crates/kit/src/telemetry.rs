//! Logs and traces.
//!
//! A `tracing` subscriber writes logs (text or JSON) and feeds an OpenTelemetry tracer, so every
//! span has a W3C trace id even when no collector is configured: trace context then still flows
//! through gRPC metadata and NATS headers, and shows in logs. Spans are exported over OTLP/gRPC only
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::Env;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What to log and where to send traces.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `service.name` of exported spans (`OTEL_SERVICE_NAME`, default `mst-<service>`).
    pub service_name: String,
    /// OTLP/gRPC endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`); no export when unset.
    pub otlp_endpoint: Option<String>,
    /// `RUST_LOG`-style filter (default `info`).
    pub filter: String,
    /// `MST_LOG_FORMAT`: `text` or `json`.
    pub format: LogFormat,
}

impl TelemetrySettings {
    /// Reads the telemetry settings of `service`.
    pub fn from_env(env: &mut Env, service: &str) -> Self {
        let format = match env
            .raw("MST_LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                env.issue(
                    "MST_LOG_FORMAT",
                    format!("expected text or json, got {other:?}"),
                );
                LogFormat::Text
            }
        };
        Self {
            service_name: env.or("OTEL_SERVICE_NAME", format!("mst-{service}")),
            otlp_endpoint: env.raw("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_owned),
            filter: env.or("RUST_LOG", "info".to_owned()),
            format,
        }
    }
}

/// Keeps the tracer provider alive; flush it with [`TelemetryGuard::shutdown`] before exit.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Exports the spans still buffered and stops the exporter. The SDK's flush blocks, so it runs
    /// on the blocking pool.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        })
        .await;
    }

    /// The tracer provider (tests attach span processors to inspect what is exported).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

/// Builds the tracer provider: batch OTLP export when an endpoint is set, none otherwise.
/// Must run inside a tokio runtime.
pub fn tracer_provider(settings: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &settings.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the global subscriber (logs + OpenTelemetry layer) and the W3C trace-context
/// propagator. Fails if a global subscriber is already set.
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    let provider = tracer_provider(settings)?;
    install(settings, provider.clone())?;
    Ok(TelemetryGuard { provider })
}

/// Installs the global subscriber with the given provider (tests pass one with an in-memory or
/// custom exporter).
pub fn install(settings: &TelemetrySettings, provider: SdkTracerProvider) -> anyhow::Result<()> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer(settings.service_name.clone());
    opentelemetry::global::set_tracer_provider(provider);
    // The log filter applies to log output only: spans at INFO and above always reach the
    // OpenTelemetry layer, so trace context propagates whatever the log level.
    let filter = EnvFilter::try_new(&settings.filter)?;
    let fmt = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .try_init()?;
    Ok(())
}

/// The W3C trace id of the current span, as 32 hex digits (all zeros when there is none).
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}
