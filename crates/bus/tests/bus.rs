//! The bus against a real nats-server and the database chosen by `MST_TEST_DB` (SQLite or
//! PostgreSQL): outbox atomicity, relay crash and NATS outage recovery, consumer retries,
//! dead letters and idempotency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use futures::StreamExt as _;
use mst_bus::consumer::Outcome;
use mst_bus::{
    Bus, BusSettings, Consumer, ConsumerSpec, Delivery, Handler, HandlerError, OutgoingEvent, Relay,
};
use mst_migrations::MigratorTrait as _;
use mst_testkit::{NatsServer, TestDb, unique_prefix, wait_until};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, Statement, TransactionTrait,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

struct Setup {
    nats: NatsServer,
    _db_guard: TestDb,
    db: DatabaseConnection,
    bus: Bus,
}

async fn setup() -> Setup {
    let nats = NatsServer::start().await.unwrap();
    let test_db = TestDb::new().await.unwrap();
    let db = mst_kit::db::connect(&mst_kit::config::DatabaseSettings {
        url: test_db.url().to_owned(),
        max_connections: 8,
        migrate_on_start: true,
    })
    .await
    .unwrap();
    mst_migrations::forms::Migrator::up(&db, None)
        .await
        .unwrap();
    db.execute_unprepared(
        "CREATE TABLE effects (event_id VARCHAR(64) NOT NULL, attempt BIGINT NOT NULL)",
    )
    .await
    .unwrap();
    let prefix = unique_prefix();
    let mut settings = BusSettings::new(nats.url(), prefix.to_uppercase(), prefix);
    settings.client_name = "bus-test".into();
    let bus = Bus::connect(settings).await.unwrap();
    Setup {
        nats,
        _db_guard: test_db,
        db,
        bus,
    }
}

fn event(subject: &str) -> OutgoingEvent {
    OutgoingEvent {
        event_id: Uuid::now_v7(),
        subject: subject.into(),
        schema: "mst.events.v1.Test".into(),
        payload: b"payload".to_vec(),
    }
}

async fn commit_event(db: &DatabaseConnection, subject: &str) -> Uuid {
    let e = event(subject);
    let id = e.event_id;
    let txn = db.begin().await.unwrap();
    mst_bus::enqueue(&txn, e).await.unwrap();
    txn.commit().await.unwrap();
    id
}

/// Every event id currently in the stream under `relative`, in stream order.
async fn stream_ids(bus: &Bus, relative: &str) -> Vec<String> {
    let stream = bus
        .jetstream
        .get_stream(&bus.settings.stream)
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: bus.subject(relative),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.clone().info().await.unwrap().num_pending as usize;
    if pending == 0 {
        return Vec::new();
    }
    let mut batch = consumer
        .fetch()
        .max_messages(pending)
        .messages()
        .await
        .unwrap();
    let mut ids = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        ids.push(
            m.headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
        );
        m.ack().await.unwrap();
    }
    ids
}

async fn effect_count(db: &DatabaseConnection, event_id: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            match db.get_database_backend() {
                sea_orm::DatabaseBackend::Postgres => {
                    "SELECT COUNT(*) AS n FROM effects WHERE event_id = $1"
                }
                _ => "SELECT COUNT(*) AS n FROM effects WHERE event_id = ?",
            },
            [event_id.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Writes one `effects` row per call; fails according to its plan.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<AtomicUsize>,
    /// Fail transiently while the attempt is at most this.
    transient_until_attempt: i64,
    /// Event id to treat as poison.
    poison: Option<String>,
    /// Sleep this long on the first attempt (to outlast ack_wait).
    slow_first: Option<Duration>,
}

impl Handler for Recorder {
    async fn handle(&self, txn: &DatabaseTransaction, d: &Delivery) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.poison.as_deref() == Some(d.event_id.as_str()) {
            return Err(HandlerError::Permanent(anyhow::anyhow!("poison message")));
        }
        if d.attempt <= self.transient_until_attempt {
            return Err(HandlerError::Transient(anyhow::anyhow!("database busy")));
        }
        if let (Some(slow), 1) = (self.slow_first, d.attempt) {
            tokio::time::sleep(slow).await;
        }
        let sql = match txn.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                "INSERT INTO effects (event_id, attempt) VALUES ($1, $2)"
            }
            _ => "INSERT INTO effects (event_id, attempt) VALUES (?, ?)",
        };
        txn.execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            sql,
            [d.event_id.clone().into(), d.attempt.into()],
        ))
        .await?;
        Ok(())
    }
}

fn spec(name: &str, subject: &str) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(name, &[subject]);
    spec.backoff = vec![Duration::from_millis(50), Duration::from_millis(100)];
    spec.max_deliver = 4;
    spec
}

fn spawn_consumer<H: Handler>(
    s: &Setup,
    spec: ConsumerSpec,
    handler: H,
) -> (
    CancellationToken,
    mpsc::UnboundedReceiver<(String, Outcome)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let consumer = Consumer::new(s.db.clone(), s.bus.clone(), spec, handler).with_observer(tx);
    let task = tokio::spawn(consumer.run(token.clone()));
    (token, rx, task)
}

async fn next_outcome(rx: &mut mpsc::UnboundedReceiver<(String, Outcome)>) -> (String, Outcome) {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an outcome in time")
        .expect("channel open")
}

#[tokio::test]
async fn an_event_is_published_only_after_its_transaction_commits() {
    let s = setup().await;
    let relay = Relay::new(s.db.clone(), s.bus.clone());

    // Written but not yet committed: the relay sees nothing.
    let open = s.db.begin().await.unwrap();
    let committed = event("dossier.created.v1");
    let committed_id = committed.event_id.to_string();
    mst_bus::enqueue(&open, committed).await.unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    assert!(stream_ids(&s.bus, "dossier.created.v1").await.is_empty());
    open.commit().await.unwrap();

    // Rolled back: never published.
    let rolled = s.db.begin().await.unwrap();
    let ghost = event("dossier.created.v1");
    let ghost_id = ghost.event_id.to_string();
    mst_bus::enqueue(&rolled, ghost).await.unwrap();
    rolled.rollback().await.unwrap();

    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    let ids = stream_ids(&s.bus, "dossier.created.v1").await;
    assert_eq!(ids, vec![committed_id]);
    assert!(!ids.contains(&ghost_id));
    assert_eq!(mst_bus::outbox::pending(&s.db).await.unwrap(), 0);
}

#[tokio::test]
async fn a_relay_killed_between_publish_and_mark_republishes_and_the_consumer_sees_each_event_once()
{
    let s = setup().await;
    let relay = Relay::new(s.db.clone(), s.bus.clone());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            commit_event(&s.db, "dossier.status_changed.v1")
                .await
                .to_string(),
        );
    }
    assert_eq!(relay.publish_pending().await.unwrap(), 5);
    // The crash: the PubAcks came back but the rows were never marked published.
    s.db.execute_unprepared("UPDATE outbox SET published_at = NULL")
        .await
        .unwrap();
    assert_eq!(mst_bus::outbox::pending(&s.db).await.unwrap(), 5);

    // A restarted relay publishes them again; the stream drops the duplicates.
    let restarted = Relay::new(s.db.clone(), s.bus.clone());
    assert_eq!(restarted.publish_pending().await.unwrap(), 5);
    assert_eq!(mst_bus::outbox::pending(&s.db).await.unwrap(), 0);
    assert_eq!(stream_ids(&s.bus, "dossier.status_changed.v1").await, ids);

    let handler = Recorder::default();
    let calls = handler.calls.clone();
    let (stop, mut rx, task) =
        spawn_consumer(&s, spec("once", "dossier.status_changed.v1"), handler);
    for id in &ids {
        assert_eq!(next_outcome(&mut rx).await, (id.clone(), Outcome::Handled));
        assert_eq!(effect_count(&s.db, id).await, 1);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn events_committed_while_nats_is_down_all_arrive_once_it_is_back_and_none_twice() {
    let mut s = setup().await;
    let relay = Relay::new(s.db.clone(), s.bus.clone());
    let handle = relay.handle();
    let stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(stop.clone()));

    let first = commit_event(&s.db, "dossier.deleted.v1").await.to_string();
    handle.wake();
    let db = s.db.clone();
    wait_until(DEADLINE, || {
        let db = db.clone();
        async move { (mst_bus::outbox::pending(&db).await.ok()? == 0).then_some(()) }
    })
    .await
    .unwrap();

    s.nats.stop().await.unwrap();
    let mut ids = vec![first];
    for _ in 0..20 {
        ids.push(commit_event(&s.db, "dossier.deleted.v1").await.to_string());
        handle.wake();
    }
    // Nothing can be published while the server is down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mst_bus::outbox::pending(&s.db).await.unwrap(), 20);

    s.nats.start_again().await.unwrap();
    let db = s.db.clone();
    wait_until(DEADLINE, || {
        let db = db.clone();
        async move { (mst_bus::outbox::pending(&db).await.ok()? == 0).then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(stream_ids(&s.bus, "dossier.deleted.v1").await, ids);

    let (stop_consumer, mut rx, task) = spawn_consumer(
        &s,
        spec("after-outage", "dossier.deleted.v1"),
        Recorder::default(),
    );
    for id in &ids {
        assert_eq!(next_outcome(&mut rx).await, (id.clone(), Outcome::Handled));
        assert_eq!(effect_count(&s.db, id).await, 1);
    }
    stop_consumer.cancel();
    stop.cancel();
    task.await.unwrap();
    relay_task.await.unwrap();
}

#[tokio::test]
async fn a_transient_failure_is_redelivered_and_succeeds() {
    let s = setup().await;
    let id = commit_event(&s.db, "message.posted.v1").await.to_string();
    Relay::new(s.db.clone(), s.bus.clone())
        .publish_pending()
        .await
        .unwrap();
    let handler = Recorder {
        transient_until_attempt: 2,
        ..Default::default()
    };
    let calls = handler.calls.clone();
    let (stop, mut rx, task) = spawn_consumer(&s, spec("flaky", "message.posted.v1"), handler);
    assert_eq!(next_outcome(&mut rx).await, (id.clone(), Outcome::Retried));
    assert_eq!(next_outcome(&mut rx).await, (id.clone(), Outcome::Retried));
    assert_eq!(next_outcome(&mut rx).await, (id.clone(), Outcome::Handled));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(effect_count(&s.db, &id).await, 1);
    stop.cancel();
    task.await.unwrap();
}

async fn dead_letters(bus: &Bus) -> Vec<(String, String)> {
    let stream = bus
        .jetstream
        .get_stream(bus.settings.dead_letter_stream())
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config::default())
        .await
        .unwrap();
    let pending = consumer.clone().info().await.unwrap().num_pending as usize;
    if pending == 0 {
        return Vec::new();
    }
    let mut batch = consumer
        .fetch()
        .max_messages(pending)
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        let h = m.headers.clone().unwrap_or_default();
        out.push((
            h.get("Mst-Original-Event-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
            h.get("Mst-Reason")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
        ));
    }
    out
}

#[tokio::test]
async fn a_poison_message_lands_on_the_dead_letter_subject_and_the_consumer_moves_on() {
    let s = setup().await;
    let poison = commit_event(&s.db, "mail.sent.v1").await.to_string();
    let healthy = commit_event(&s.db, "mail.sent.v1").await.to_string();
    Relay::new(s.db.clone(), s.bus.clone())
        .publish_pending()
        .await
        .unwrap();
    let handler = Recorder {
        poison: Some(poison.clone()),
        ..Default::default()
    };
    let (stop, mut rx, task) = spawn_consumer(&s, spec("poisoned", "mail.sent.v1"), handler);
    assert_eq!(
        next_outcome(&mut rx).await,
        (poison.clone(), Outcome::DeadLettered)
    );
    assert_eq!(
        next_outcome(&mut rx).await,
        (healthy.clone(), Outcome::Handled)
    );
    assert_eq!(effect_count(&s.db, &poison).await, 0);
    assert_eq!(effect_count(&s.db, &healthy).await, 1);
    let dl = dead_letters(&s.bus).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].0, poison);
    assert!(dl[0].1.contains("poison message"), "{}", dl[0].1);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_message_failing_transiently_past_max_deliver_is_dead_lettered() {
    let s = setup().await;
    let id = commit_event(&s.db, "oscars.fiche.imported.v1")
        .await
        .to_string();
    Relay::new(s.db.clone(), s.bus.clone())
        .publish_pending()
        .await
        .unwrap();
    let handler = Recorder {
        transient_until_attempt: i64::MAX,
        ..Default::default()
    };
    let calls = handler.calls.clone();
    let (stop, mut rx, task) =
        spawn_consumer(&s, spec("hopeless", "oscars.fiche.imported.v1"), handler);
    for _ in 0..3 {
        assert_eq!(next_outcome(&mut rx).await, (id.clone(), Outcome::Retried));
    }
    assert_eq!(
        next_outcome(&mut rx).await,
        (id.clone(), Outcome::DeadLettered)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(dead_letters(&s.bus).await.len(), 1);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_handler_that_ran_once_for_an_event_does_not_run_its_effect_again_on_redelivery() {
    let s = setup().await;
    let id = commit_event(&s.db, "dossier.invited.v1").await.to_string();
    Relay::new(s.db.clone(), s.bus.clone())
        .publish_pending()
        .await
        .unwrap();
    // The first attempt outlasts ack_wait: the server redelivers while the effect is committing.
    let handler = Recorder {
        slow_first: Some(Duration::from_millis(2500)),
        ..Default::default()
    };
    let calls = handler.calls.clone();
    let mut spec = spec("slow", "dossier.invited.v1");
    spec.ack_wait = Duration::from_secs(1);
    let (stop, mut rx, task) = spawn_consumer(&s, spec, handler);
    assert_eq!(next_outcome(&mut rx).await, (id.clone(), Outcome::Handled));
    assert_eq!(
        next_outcome(&mut rx).await,
        (id.clone(), Outcome::Duplicate)
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the redelivery must not reach the handler"
    );
    assert_eq!(effect_count(&s.db, &id).await, 1);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn events_arriving_together_take_effect_once_each_and_a_poison_among_them_is_dead_lettered() {
    let s = setup().await;
    // Published before the consumer starts: they arrive together and are handled as batches.
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(commit_event(&s.db, "dossier.batch.v1").await.to_string());
    }
    let poison = ids[31].clone();
    Relay::new(s.db.clone(), s.bus.clone())
        .publish_pending()
        .await
        .unwrap();
    let handler = Recorder {
        poison: Some(poison.clone()),
        ..Default::default()
    };
    let calls = handler.calls.clone();
    let (stop, mut rx, task) = spawn_consumer(&s, spec("batched", "dossier.batch.v1"), handler);
    let mut outcomes = std::collections::HashMap::new();
    for _ in 0..ids.len() {
        let (id, outcome) = next_outcome(&mut rx).await;
        assert!(
            outcomes.insert(id, outcome).is_none(),
            "an event reported twice"
        );
    }
    for id in &ids {
        let expected = if *id == poison {
            Outcome::DeadLettered
        } else {
            Outcome::Handled
        };
        assert_eq!(outcomes.get(id), Some(&expected), "{id}");
        assert_eq!(effect_count(&s.db, id).await, i64::from(*id != poison));
    }
    let dl = dead_letters(&s.bus).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].0, poison);
    // A batch that failed is replayed message by message: some handlers ran twice, never their
    // effect (each run was rolled back or committed once).
    assert!(calls.load(Ordering::SeqCst) >= ids.len());
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_batch_without_failures_runs_each_handler_once() {
    let s = setup().await;
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(commit_event(&s.db, "dossier.fast.v1").await.to_string());
    }
    Relay::new(s.db.clone(), s.bus.clone())
        .publish_pending()
        .await
        .unwrap();
    let handler = Recorder::default();
    let calls = handler.calls.clone();
    let (stop, mut rx, task) = spawn_consumer(&s, spec("fast", "dossier.fast.v1"), handler);
    let mut handled = Vec::new();
    for _ in 0..ids.len() {
        let (id, outcome) = next_outcome(&mut rx).await;
        assert_eq!(outcome, Outcome::Handled);
        handled.push(id);
    }
    // In stream order, each once.
    assert_eq!(handled, ids);
    assert_eq!(calls.load(Ordering::SeqCst), ids.len());
    for id in &ids {
        assert_eq!(effect_count(&s.db, id).await, 1);
    }
    stop.cancel();
    task.await.unwrap();
}
