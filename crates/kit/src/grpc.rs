//! The gRPC server every service runs: its routes, plus the standard health service and server
//! reflection, a tracing span per call whose parent comes from the caller's `traceparent`, and
//! graceful shutdown (health turns NOT_SERVING, new connections stop, in-flight calls drain).

use std::net::SocketAddr;

use opentelemetry::propagation::Extractor;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::shutdown::Shutdown;

/// Binds the gRPC listener first (port 0 picks a free port, for tests).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Puts the current span's W3C trace context (`traceparent`, `tracestate`) in an outgoing
/// request's metadata, so the called service's span joins the caller's trace.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// The span of one gRPC call, child of the caller's trace when it sent a `traceparent`.
pub fn request_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        enduser.id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// What a service serves.
#[derive(Debug)]
pub struct GrpcServer {
    routes: Routes,
    names: Vec<&'static str>,
    descriptors: &'static [u8],
}

impl GrpcServer {
    /// A server with no service of its own yet (health and reflection are always added).
    /// `descriptors` is the encoded `FileDescriptorSet` of the contracts, for reflection
    /// (`mst_proto::FILE_DESCRIPTOR_SET`).
    pub fn new(descriptors: &'static [u8]) -> Self {
        Self {
            routes: Routes::default(),
            names: Vec::new(),
            descriptors,
        }
    }

    /// Adds a service; it is reported by health and listed by reflection.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Serves on `listener` until `shutdown` triggers, then drains in-flight calls.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(self.descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection");
        for name in &self.names {
            reflection = reflection.with_service_name(*name);
        }
        let reflection = reflection.build_v1()?;

        health.set_service_status("", ServingStatus::Serving).await;
        for name in &self.names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        let routes = self
            .routes
            .add_service(health_service)
            .add_service(reflection);

        let addr = listener.local_addr()?;
        tracing::info!(%addr, services = ?self.names, "gRPC server listening");
        let signal = {
            let shutdown = shutdown.clone();
            let names = self.names.clone();
            async move {
                shutdown.cancelled().await;
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                for name in names {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                tracing::info!(%addr, "gRPC server draining");
            }
        };
        Server::builder()
            .trace_fn(request_span)
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
            .await?;
        tracing::info!(%addr, "gRPC server stopped");
        Ok(())
    }
}
