//! Connection to NATS and the JetStream streams every service relies on.
//!
//! - The event stream (`MST_EVENTS` by default) holds `<prefix>.>`, on file storage, with a
//!   duplicate window that makes relay retries idempotent, and keeps events for replay.
//! - The dead-letter stream (`<stream>_DEADLETTER`) holds `<prefix>_deadletter.>`.
//!
//! Creating them is idempotent; a changed configuration (replicas, …) is applied with an update.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// Where and how events are published.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// NATS server URL(s), comma-separated.
    pub url: String,
    /// Name of the event stream.
    pub stream: String,
    /// First subject token (`mst` in production, unique in tests).
    pub subject_prefix: String,
    /// Stream replicas (1 on one node, 3 in a cluster).
    pub replicas: usize,
    /// Window within which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// How long events are kept (`Duration::ZERO` = forever, so the state can be rebuilt).
    pub max_age: Duration,
    /// Name used for the NATS connection (shows in server monitoring).
    pub client_name: String,
}

impl BusSettings {
    /// Settings with the production defaults for the given connection and names.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            subject_prefix: prefix.into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(3600),
            max_age: Duration::ZERO,
            client_name: "mst".into(),
        }
    }

    /// Name of the dead-letter stream.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEADLETTER", self.stream)
    }
}

/// A NATS connection with its JetStream context and the stream names.
#[derive(Debug, Clone)]
pub struct Bus {
    /// Core NATS client.
    pub client: async_nats::Client,
    /// JetStream context (publish with ack, streams, consumers).
    pub jetstream: jetstream::Context,
    /// The settings it was made with.
    pub settings: BusSettings,
}

impl Bus {
    /// Connects (retrying in the background if the server is not up yet: the client reconnects
    /// forever) and makes sure both streams exist.
    pub async fn connect(settings: BusSettings) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name(&settings.client_name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            .connect(settings.url.as_str())
            .await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        let bus = Self {
            client,
            jetstream: js,
            settings,
        };
        bus.ensure_streams().await?;
        Ok(bus)
    }

    /// Creates or updates the event and dead-letter streams.
    pub async fn ensure_streams(&self) -> anyhow::Result<()> {
        let s = &self.settings;
        let events = stream::Config {
            name: s.stream.clone(),
            subjects: vec![format!("{}.>", s.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: s.replicas,
            duplicate_window: s.duplicate_window,
            max_age: s.max_age,
            retention: stream::RetentionPolicy::Limits,
            allow_direct: true,
            description: Some("mst-dossiers domain events".into()),
            ..Default::default()
        };
        let dead = stream::Config {
            name: s.dead_letter_stream(),
            subjects: vec![format!("{}_deadletter.>", s.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: s.replicas,
            duplicate_window: s.duplicate_window,
            retention: stream::RetentionPolicy::Limits,
            description: Some("mst-dossiers events their consumers could not handle".into()),
            ..Default::default()
        };
        for config in [events, dead] {
            let name = config.name.clone();
            let mut existing = self.jetstream.get_or_create_stream(config.clone()).await?;
            let current = existing.info().await?.config.clone();
            if current.subjects != config.subjects
                || current.num_replicas != config.num_replicas
                || current.duplicate_window != config.duplicate_window
                || current.max_age != config.max_age
            {
                tracing::info!(stream = %name, "updating stream configuration");
                self.jetstream.update_stream(config).await?;
            }
        }
        Ok(())
    }

    /// The full subject of a relative one.
    pub fn subject(&self, relative: &str) -> String {
        crate::subjects::full(&self.settings.subject_prefix, relative)
    }
}
