//! A NATS message as a consumer receives it — subject, headers, payload — turned into a typed
//! event the way `mst_bus::Consumer::process` and the services' handlers do it: the event id
//! from `Nats-Msg-Id` (else `seq-<stream sequence>`), the subject relative to the deployment
//! prefix, the parent span from `traceparent` / `tracestate` with the propagator the services
//! install (W3C trace context), then the payload decoded as the protobuf message of its subject
//! (every event of `mst_proto::CATALOGUE`), and the occurred-at instant read as the services read
//! it. An unknown subject is a permanent failure, not a decode.
//!
//! Input format (what the seeds in `seeds/event_decode` hold): the subject on the first line,
//! then `Name: value` header lines, an empty line, and the payload bytes.
//!
//! Checks, besides "no panic": a decoded event re-encodes to bytes that decode to the same
//! bytes again (nothing lost or invented), its encoded length is what prost predicts, and an
//! extracted trace context, when valid, has non-zero ids.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use mst_proto::Event;
use mst_proto::events as ev;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const PREFIX: &str = "mst";

/// Header look-up with the semantics of `async_nats::HeaderMap::get`: the first value of a name.
struct Headers<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Splits the input into subject, headers and payload.
fn message(data: &[u8]) -> (String, Vec<(String, String)>, &[u8]) {
    let (head, payload) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &data[data.len()..]),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let subject = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (subject, headers, payload)
}

/// Decodes as `E` and checks the round trip; returns the event's metadata.
fn decode<E: Event>(payload: &[u8]) -> Option<ev::EventMetadata> {
    let event = E::decode(payload).ok()?;
    let bytes = event.encode_to_vec();
    assert_eq!(
        bytes.len(),
        event.encoded_len(),
        "{}: encoded length",
        E::SCHEMA
    );
    let again = E::decode(bytes.as_slice()).expect("a re-encoded event decodes");
    assert_eq!(
        again.encode_to_vec(),
        bytes,
        "{}: stable round trip",
        E::SCHEMA
    );
    event.metadata().cloned()
}

macro_rules! by_subject {
    ($subject:expr, $payload:expr, $($t:ident),* $(,)?) => {
        match $subject {
            $(s if s == ev::$t::SUBJECT => Some(decode::<ev::$t>($payload)),)*
            _ => None,
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let (subject, headers, payload) = message(data);
    let headers = Headers(
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    );
    let stream_sequence = payload.len() as u64;

    // The envelope, as in `Consumer::process`.
    let event_id = headers
        .get("Nats-Msg-Id")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("seq-{stream_sequence}"));
    assert!(!event_id.is_empty() || headers.get("Nats-Msg-Id") == Some(""));
    let relative = subject
        .strip_prefix(PREFIX)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or(&subject);

    // The parent span, as in `mst_bus::trace::set_parent_from` with `mst_kit`'s propagator.
    let cx = TraceContextPropagator::new().extract(&headers);
    let span = cx.span().span_context().clone();
    if span.is_valid() {
        assert_ne!(span.trace_id(), TraceId::INVALID);
        assert_ne!(span.span_id(), SpanId::INVALID);
        assert!(span.is_remote());
    }

    // The payload, as the handlers decode it by subject.
    let decoded = by_subject!(
        relative,
        payload,
        ProcedureChanged,
        DossierCreated,
        DossierContentChanged,
        DossierInvited,
        DossierInvitationRevoked,
        DossierDeleted,
        DossierStatusChanged,
        DossierCorrectionResolved,
        DossierArchived,
        DossierUnarchived,
        AvisRequested,
        AvisGiven,
        AvisRevoked,
        MessagePosted,
        MailSent,
        OscarsFicheImported,
        OscarsFichePublished,
        OscarsFicheUpdated,
        OscarsFicheWithdrawn,
    );
    match decoded {
        None => assert!(
            mst_proto::CATALOGUE.iter().all(|(s, _)| *s != relative),
            "every catalogued subject is decoded"
        ),
        Some(Some(metadata)) => {
            // When it happened, as messagerie and instruction read it.
            let _ = metadata.occurred_at.as_ref().and_then(|t| {
                DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            });
        }
        Some(None) => {}
    }
});
