//! Plumbing seen from a client: a trace started by a gRPC caller continues in the consumer of the
//! event the call published, and calls without a valid bearer token are UNAUTHENTICATED.
//!
//! The gRPC service here is a small test service (the standard health API, re-implemented so
//! that `Check` writes an event through the outbox) served exactly as the services serve theirs:
//! `mst_kit::grpc::request_span` for tracing and `mst_kit::auth` for authentication.

use std::time::Duration;

use mst_bus::{
    Bus, BusSettings, Consumer, ConsumerSpec, Delivery, Handler, HandlerError, OutgoingEvent,
    Relay, RelayHandle,
};
use mst_kit::auth::{AuthSettings, Authenticator, Role};
use mst_migrations::MigratorTrait as _;
use mst_testkit::{NatsServer, TestDb, unique_prefix};
use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const SUBJECT: &str = "dossier.created.v1";

#[derive(Clone)]
struct Publisher {
    db: DatabaseConnection,
    relay: RelayHandle,
}

#[tonic::async_trait]
impl Health for Publisher {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let txn = self
            .db
            .begin()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let event = OutgoingEvent {
            event_id: uuid::Uuid::now_v7(),
            subject: SUBJECT.into(),
            schema: "mst.events.v1.DossierCreated".into(),
            payload: Vec::new(),
        };
        mst_bus::enqueue(&txn, event)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        txn.commit()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        self.relay.wake();
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "this test service only answers Check",
        ))
    }
}

/// Records the trace id under which each event is handled.
struct TraceRecorder(mpsc::UnboundedSender<String>);

impl Handler for TraceRecorder {
    async fn handle(&self, _txn: &DatabaseTransaction, _d: &Delivery) -> Result<(), HandlerError> {
        let _ = self.0.send(mst_kit::telemetry::current_trace_id());
        Ok(())
    }
}

struct Fixture {
    _nats: NatsServer,
    _db: TestDb,
    url: String,
    traces: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
}

async fn fixture() -> Fixture {
    mst_e2e::init_telemetry();
    let nats = NatsServer::start().await.unwrap();
    let test_db = TestDb::new().await.unwrap();
    let db = mst_kit::db::connect(&mst_kit::config::DatabaseSettings {
        url: test_db.url().to_owned(),
        max_connections: 4,
        migrate_on_start: true,
    })
    .await
    .unwrap();
    mst_migrations::forms::Migrator::up(&db, None)
        .await
        .unwrap();
    let prefix = unique_prefix();
    let bus = Bus::connect(BusSettings::new(nats.url(), prefix.to_uppercase(), prefix))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let relay = Relay::new(db.clone(), bus.clone());
    let relay_handle = relay.handle();
    tokio::spawn(relay.run(stop.clone()));
    let (tx, traces) = mpsc::unbounded_channel();
    let consumer = Consumer::new(
        db.clone(),
        bus,
        ConsumerSpec::new("tracer", &[SUBJECT]),
        TraceRecorder(tx),
    );
    tokio::spawn(consumer.run(stop.clone()));

    let auth = Authenticator::new(AuthSettings::embedded()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = HealthServer::with_interceptor(
        Publisher {
            db,
            relay: relay_handle,
        },
        auth.interceptor(),
    );
    let token = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .trace_fn(mst_kit::grpc::request_span)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), token.cancelled_owned())
            .await
    });
    Fixture {
        _nats: nats,
        _db: test_db,
        url,
        traces,
        stop,
    }
}

async fn call(url: &str, metadata: &[(&'static str, String)]) -> Result<ServingStatus, Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = Request::new(HealthCheckRequest::default());
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    HealthClient::new(channel)
        .check(request)
        .await
        .map(|r| r.into_inner().status())
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

#[tokio::test]
async fn a_trace_started_in_a_grpc_call_continues_in_the_consumer_of_the_event_it_published() {
    let mut f = fixture().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let token = mst_kit::auth::mint_dev(
        "marie@example.org",
        &[Role::Promoteur],
        Duration::from_secs(60),
    )
    .unwrap();
    let status = call(
        &f.url,
        &[
            bearer(&token),
            ("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, ServingStatus::Serving);
    let seen = tokio::time::timeout(Duration::from_secs(30), f.traces.recv())
        .await
        .expect("the event is consumed in time")
        .unwrap();
    assert_eq!(seen, trace_id);
    f.stop.cancel();
}

#[tokio::test]
async fn a_call_without_a_valid_bearer_token_is_unauthenticated_and_publishes_nothing() {
    let mut f = fixture().await;
    let secret = mst_kit::auth::DEV_JWT_SECRET;
    let (iss, aud) = (
        mst_kit::auth::DEFAULT_ISSUER,
        mst_kit::auth::DEFAULT_AUDIENCE,
    );
    let email = "marie@example.org";
    let expired = {
        // Valid signature, expired an hour ago (beyond the 30 s leeway).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = mst_kit::auth::Claims {
            sub: email.into(),
            roles: vec!["promoteur".into()],
            name: None,
            iss: iss.into(),
            aud: aud.into(),
            exp: now - 3600,
            nbf: None,
            iat: now - 7200,
        };
        jsonwebtoken_encode_hs256(&claims, secret)
    };
    let wrong_key = mst_kit::auth::mint(
        "another-secret-that-is-long-enough-to-be-valid",
        iss,
        aud,
        email,
        &[Role::Promoteur],
        Duration::from_secs(60),
    )
    .unwrap();
    let alg_none = {
        let valid =
            mst_kit::auth::mint_dev(email, &[Role::Admin], Duration::from_secs(60)).unwrap();
        let body = valid.split('.').nth(1).unwrap().to_owned();
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.")
    };
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("missing", vec![]),
        (
            "not bearer",
            vec![("authorization", "Basic bWFyaWU6c2VjcmV0".into())],
        ),
        ("garbage", vec![bearer("not.a.jwt")]),
        ("expired", vec![bearer(&expired)]),
        ("wrong signature", vec![bearer(&wrong_key)]),
        ("alg none", vec![bearer(&alg_none)]),
    ];
    for (name, metadata) in cases {
        let err = call(&f.url, &metadata).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{name}");
    }
    // Nothing was published by the refused calls: the first event the consumer sees is the one
    // of the accepted call below.
    let ok = mst_kit::auth::mint_dev(email, &[Role::Promoteur], Duration::from_secs(60)).unwrap();
    assert_eq!(
        call(&f.url, &[bearer(&ok)]).await.unwrap(),
        ServingStatus::Serving
    );
    tokio::time::timeout(Duration::from_secs(30), f.traces.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        f.traces.try_recv().is_err(),
        "only the authenticated call published an event"
    );
    f.stop.cancel();
}

fn jsonwebtoken_encode_hs256(claims: &mst_kit::auth::Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
