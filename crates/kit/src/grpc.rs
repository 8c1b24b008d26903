//! The gRPC server every service runs: its routes, plus the standard health service and server
//! reflection, a tracing span per call whose parent comes from the caller's `traceparent`, and
//! graceful shutdown (health turns NOT_SERVING, new connections stop, in-flight calls drain).

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::propagation::Extractor;
use tokio::net::TcpListener;
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

/// Rewrites tonic's answer to a request it could not decode — INTERNAL "failed to decode Protobuf
/// message: …", e.g. a `string` field holding invalid UTF-8 — as INVALID_ARGUMENT with a
/// `BadRequest` violation naming the field: the client sent bad input (I6), the server is fine.
/// Applies to every answer whose status travels in the headers (unary and client-streaming calls,
/// and a server stream failing before its first message), which is where decode errors land.
pub fn decode_errors_are_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"13".as_slice()) {
        return response;
    }
    let Some(message) = headers
        .get("grpc-message")
        .map(|v| percent_decoded(v.as_bytes()))
        .filter(|m| m.starts_with("failed to decode Protobuf message"))
    else {
        return response;
    };
    // "failed to decode Protobuf message: UploadChampFileMetadata.file_name: UploadChampFileRequest
    // .payload: invalid string value: …": the innermost message and field come first.
    let field = message
        .split(": ")
        .nth(1)
        .and_then(|path| path.rsplit('.').next())
        .filter(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or("request")
        .to_owned();
    let description =
        "Valeur illisible : texte qui n'est pas de l'UTF-8 valide ou message mal formé";
    let status = <tonic::Status as tonic_types::StatusExt>::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field} : {description}"),
        tonic_types::ErrorDetails::with_bad_request(vec![tonic_types::FieldViolation::new(
            field,
            description,
        )]),
    );
    let headers = response.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if status.add_header(headers).is_err() {
        tracing::warn!("could not rewrite a decode error as INVALID_ARGUMENT");
    }
    response
}

/// The `grpc-message` header decoded (the gRPC spec percent-encodes it).
fn percent_decoded(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    /// Serves on `listener` until `shutdown` triggers, then drains in-flight calls for at most
    /// `grace`: a call still running after it (a client that never ends a stream, a peer that
    /// stopped reading) has its connection closed, so that a stopping service never hangs.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
        grace: Duration,
    ) -> anyhow::Result<()> {
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
        let serving = Server::builder()
            .trace_fn(request_span)
            .layer(tower::util::MapResponseLayer::new(
                decode_errors_are_invalid_argument,
            ))
            .add_routes(routes)
            .serve_with_incoming_shutdown(accepted(listener), signal);
        let overdue = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = serving => served?,
            () = overdue => tracing::warn!(
                %addr,
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "calls still in flight after the grace period; closing their connections"
            ),
        }
        tracing::info!(%addr, "gRPC server stopped");
        Ok(())
    }
}

/// A lazily connected channel from one service to another at `url` (`http://host:port`): it
/// connects on first use and reconnects after a failure; a connection attempt gives up after
/// 5 s and a call after 10 s, so a peer that hangs never holds a consumer, a request or a
/// shutdown.
pub fn peer_channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .timeout(PEER_CALL_TIMEOUT)
        .connect_lazy())
}

/// How long [`peer_channel`] waits for a connection.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`peer_channel`] waits for a call's answer.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections `listener` accepts, with `TCP_NODELAY` (tonic sets it only on listeners it
/// binds itself: without it a response written in several segments waits for the client's
/// delayed ACK, 40 ms on Linux) and TCP keepalive.
fn accepted(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt as _;
    use tonic_types::StatusExt as _;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_on_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = accepted(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = incoming.next().await.unwrap().unwrap();
        assert!(conn.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_call_that_never_ends_does_not_hold_the_shutdown_past_the_grace_period() {
        use tonic_health::pb::health_client::HealthClient;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let grace = Duration::from_millis(200);
        let server = tokio::spawn(
            GrpcServer::new(tonic_health::pb::FILE_DESCRIPTOR_SET).serve(
                listener,
                shutdown.clone(),
                grace,
            ),
        );
        // Health's Watch is a stream the server never ends: the call stays in flight.
        let mut health = HealthClient::new(peer_channel(&url).unwrap());
        let mut watch = health
            .watch(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);

        shutdown.trigger();
        // Without the bound, graceful shutdown waits for the stream forever.
        let served = tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the server stops once the grace period is over")
            .unwrap();
        assert!(served.is_ok(), "{served:?}");
    }

    fn answer(status: &tonic::Status) -> http::Response<()> {
        let mut response = http::Response::new(());
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    #[test]
    fn an_undecodable_request_is_invalid_argument_naming_the_field() {
        let decode = tonic::Status::internal(
            "failed to decode Protobuf message: AttachmentHeader.file_name: \
             PostMessageRequest.payload: invalid string value: data is not UTF-8 encoded",
        );
        let rewritten = decode_errors_are_invalid_argument(answer(&decode));
        let status = tonic::Status::from_header_map(rewritten.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["file_name"]);
    }

    #[test]
    fn other_internal_errors_are_left_alone() {
        let other = tonic::Status::internal("erreur interne");
        let kept = decode_errors_are_invalid_argument(answer(&other));
        let status = tonic::Status::from_header_map(kept.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "erreur interne");
    }
}
