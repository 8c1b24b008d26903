//! Plumbing seen from a client: a trace started by a gRPC caller continues in the consumer of the
//! event the call published, and calls without a valid bearer token are UNAUTHENTICATED — on a
//! test service and on each of the four services' listeners (expired, not yet valid, wrong issuer,
//! audience or key, `alg: none`, tampered claims, missing or garbage bearer), changing and
//! publishing nothing.
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

// ---------------------------------------------------------------------------------------------
// The four services' listeners
// ---------------------------------------------------------------------------------------------

/// Every kind of bad bearer token, forged with admin (and every other) role so that an accepted
/// one would be allowed to write.
fn forged_tokens(email: &str) -> Vec<(&'static str, Option<String>)> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let secret = mst_kit::auth::DEV_JWT_SECRET;
    let (iss, aud) = (
        mst_kit::auth::DEFAULT_ISSUER,
        mst_kit::auth::DEFAULT_AUDIENCE,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let roles: Vec<String> = Role::ALL.iter().map(|r| r.as_str().to_owned()).collect();
    let claims = |iss: &str, aud: &str, exp: u64, nbf: Option<u64>| mst_kit::auth::Claims {
        sub: email.into(),
        roles: roles.clone(),
        name: None,
        iss: iss.into(),
        aud: aud.into(),
        exp,
        nbf,
        iat: now.saturating_sub(60),
    };
    let valid_promoteur =
        mst_kit::auth::mint_dev(email, &[Role::Promoteur], Duration::from_secs(600)).unwrap();
    let tampered = {
        // A valid promoteur token whose payload is edited to claim every role; the signature is
        // the original one.
        let mut parts: Vec<String> = valid_promoteur.split('.').map(str::to_owned).collect();
        parts[1] = b64.encode(serde_json::to_vec(&claims(iss, aud, now + 600, None)).unwrap());
        parts.join(".")
    };
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(&claims(iss, aud, now + 600, None)).unwrap())
    );
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(iss, aud, now + 600, None),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-that-is-long-enough-to-be-valid"),
    )
    .unwrap();
    vec![
        ("missing", None),
        ("garbage", Some("not.a.jwt".into())),
        ("empty", Some(String::new())),
        (
            "expired",
            Some(jsonwebtoken_encode_hs256(
                &claims(iss, aud, now - 3600, None),
                secret,
            )),
        ),
        (
            "not yet valid",
            Some(jsonwebtoken_encode_hs256(
                &claims(iss, aud, now + 7200, Some(now + 3600)),
                secret,
            )),
        ),
        (
            "wrong issuer",
            Some(jsonwebtoken_encode_hs256(
                &claims("https://evil.example", aud, now + 600, None),
                secret,
            )),
        ),
        (
            "wrong audience",
            Some(jsonwebtoken_encode_hs256(
                &claims(iss, "another-platform", now + 600, None),
                secret,
            )),
        ),
        ("wrong key", Some(wrong_key)),
        ("alg none", Some(alg_none)),
        ("tampered claims", Some(tampered)),
    ]
}

#[tokio::test]
async fn every_services_listener_refuses_each_bad_token_as_unauthenticated_and_nothing_changes() {
    use crate::rawgrpc::{Body, RawClient};
    let stack = mst_e2e::Stack::start().await.unwrap();
    let urls: Vec<(&str, String)> = ["forms", "instruction", "messagerie", "oscars"]
        .into_iter()
        .map(|s| (s, mst_e2e::Services::url(&stack, s)))
        .collect();
    let client = RawClient::connect(&urls).await;
    let intruder = "intrus@evil.example";
    let admin = crate::support::token(crate::support::ADMIN, &[Role::Admin]);
    let groupe = client
        .call(
            "mst.instruction.v1.RosterService/CreateGroupe",
            Some(&admin),
            Body::Json(r#"{"label":"CPAM de test","departementCodes":["13"]}"#.into()),
        )
        .await
        .unwrap();
    let groupe = groupe[0]["groupe"]["id"].as_str().unwrap().to_owned();
    // One write per service, each of which publishes or stores something when accepted.
    let writes = [
        (
            "mst.forms.v1.ProcedureAdminService/LoadProcedure",
            r#"{"builtinId":"mst-2024-projet","publish":true}"#.to_owned(),
        ),
        (
            "mst.instruction.v1.RosterService/AddInstructeur",
            format!(r#"{{"email":"{intruder}","groupeId":"{groupe}","name":"Intrus"}}"#),
        ),
        (
            "mst.messagerie.v1.MessagerieService/UpdateNotificationPreferences",
            r#"{"procedureId":"mst-2024-projet","settings":[{"kind":"NOTICE_KIND_NEW_DOSSIER","instant":true}]}"#.to_owned(),
        ),
        (
            "mst.oscars.v1.OscarsService/SetAmbassadeurs",
            format!(r#"{{"regionCode":"93","ambassadeurs":[{{"email":"{intruder}"}}]}}"#),
        ),
    ];
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let mut stream = js.get_stream(stack.prefix.to_uppercase()).await.unwrap();
    let before = stream.info().await.unwrap().state.messages;
    let mut refused = 0;
    for (name, token) in forged_tokens(intruder) {
        for (rpc, json) in &writes {
            let err = client
                .call(rpc, token.as_deref(), Body::Json(json.clone()))
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{name} on {rpc}");
            refused += 1;
        }
    }
    assert_eq!(refused, 40);
    // Nothing stored: the intruder is on no roster, no région, the procedure was not loaded.
    let listed = client
        .call(
            "mst.instruction.v1.RosterService/ListInstructeurs",
            Some(&admin),
            Body::Json("{}".into()),
        )
        .await
        .unwrap();
    assert!(!listed[0].to_string().contains(intruder));
    let regions = client
        .call(
            "mst.oscars.v1.OscarsService/ListAmbassadeurs",
            Some(&admin),
            Body::Json("{}".into()),
        )
        .await
        .unwrap();
    assert!(!regions[0].to_string().contains(intruder));
    let missing = client
        .call(
            "mst.forms.v1.FormsService/GetProcedure",
            Some(&admin),
            Body::Json(r#"{"procedureId":"mst-2024-projet"}"#.into()),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(stream.info().await.unwrap().state.messages, before);
    // Nothing published: the first event after the refused calls is the one of an accepted
    // call (forms' relay publishes its outbox in order).
    let token = crate::support::token(crate::support::ADMIN, &[Role::Admin]);
    client
        .call(writes[0].0, Some(&token), Body::Json(writes[0].1.clone()))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stream.info().await.unwrap().state.messages == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the accepted call publishes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = stream.get_raw_message(before + 1).await.unwrap();
    assert!(
        first.subject.ends_with("procedure.changed.v1"),
        "{}",
        first.subject
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
