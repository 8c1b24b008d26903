//! `mstctl events`: the event feed, live, one JSON line per event, from JetStream.
//!
//! An ordered ephemeral consumer on the stream (nothing stays on the server after it stops):
//! from now on by default, or from the start of the stream (`--from-start`), or from a stream
//! sequence (`--from-seq`). Each payload is decoded with its schema (the `Mst-Schema` header, or
//! the catalogue entry of its subject) and printed in the proto3 JSON mapping.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt as _;

/// Which events to follow.
#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// NATS server.
    #[arg(long, env = "MST_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// JetStream stream of the deployment.
    #[arg(long, env = "MST_NATS_STREAM", default_value = "MST_EVENTS")]
    pub stream: String,
    /// Subject prefix of the deployment.
    #[arg(long, env = "MST_NATS_SUBJECT_PREFIX", default_value = "mst")]
    pub prefix: String,
    /// Only these subjects (after the prefix; NATS wildcards allowed), e.g. 'dossier.>' or
    /// oscars.fiche.published.v1.
    #[arg(long, default_value = ">")]
    pub subject: String,
    /// Replay the stream from its first event.
    #[arg(long, conflicts_with = "from_seq")]
    pub from_start: bool,
    /// Replay from this stream sequence.
    #[arg(long)]
    pub from_seq: Option<u64>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn follow(args: FollowArgs) -> anyhow::Result<bool> {
    let client = async_nats::connect(&args.nats_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach NATS at {}: {e}", args.nats_url))?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(&args.stream)
        .await
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", args.stream))?;
    let deliver_policy = match (args.from_start, args.from_seq) {
        (true, _) => DeliverPolicy::All,
        (false, Some(start_sequence)) => DeliverPolicy::ByStartSequence { start_sequence },
        (false, None) => DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}.{}", args.prefix, args.subject),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0u64;
    while let Some(message) = messages.next().await {
        let message = message?;
        let subject = message.subject.as_str();
        let short = subject
            .strip_prefix(&format!("{}.", args.prefix))
            .unwrap_or(subject);
        let schema = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Mst-Schema"))
            .map(|v| v.as_str().to_owned())
            .or_else(|| {
                mst_proto::CATALOGUE
                    .iter()
                    .find(|(s, _)| *s == short)
                    .map(|(_, schema)| (*schema).to_owned())
            });
        let payload = match &schema {
            Some(schema) => mst_proto::json::encode_bytes(schema, &message.payload)
                .unwrap_or_else(|e| format!("{{\"undecodable\": {:?}}}", e.to_string())),
            None => format!("{{\"bytes\": {}}}", message.payload.len()),
        };
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        println!("{{\"seq\":{seq},\"subject\":{short:?},\"event\":{payload}}}");
        seen += 1;
        if args.count.is_some_and(|n| seen >= n) {
            break;
        }
    }
    Ok(true)
}
