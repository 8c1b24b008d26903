//! Event payloads as the bus sees them: each message of `mst.events.v1` that is published knows
//! its subject (without the deployment prefix) and its fully-qualified name, sent in the
//! `Mst-Schema` header. This is the one place subjects are spelled.

use crate::events::{Actor, EventMetadata};

/// A published event payload.
pub trait Event: prost::Message + Default {
    /// Subject after the prefix, e.g. `dossier.status_changed.v1`.
    const SUBJECT: &'static str;
    /// Fully-qualified message name, e.g. `mst.events.v1.DossierStatusChanged`.
    const SCHEMA: &'static str;
    /// The event's metadata (event id, time, producer, actor).
    fn metadata(&self) -> Option<&EventMetadata>;
}

macro_rules! events {
    ($($message:ident => $subject:literal),* $(,)?) => {
        $(
            impl Event for crate::events::$message {
                const SUBJECT: &'static str = $subject;
                const SCHEMA: &'static str = concat!("mst.events.v1.", stringify!($message));
                fn metadata(&self) -> Option<&EventMetadata> {
                    self.metadata.as_ref()
                }
            }
        )*

        /// Every published subject, with its payload's schema name.
        pub const CATALOGUE: &[(&str, &str)] = &[
            $(($subject, concat!("mst.events.v1.", stringify!($message))),)*
        ];
    };
}

events! {
    ProcedureChanged => "procedure.changed.v1",
    DossierCreated => "dossier.created.v1",
    DossierContentChanged => "dossier.content_changed.v1",
    DossierInvited => "dossier.invited.v1",
    DossierInvitationRevoked => "dossier.invitation_revoked.v1",
    DossierDeleted => "dossier.deleted.v1",
    DossierStatusChanged => "dossier.status_changed.v1",
    DossierCorrectionResolved => "dossier.correction_resolved.v1",
    DossierArchived => "dossier.archived.v1",
    DossierUnarchived => "dossier.unarchived.v1",
    AvisRequested => "avis.requested.v1",
    AvisGiven => "avis.given.v1",
    AvisRevoked => "avis.revoked.v1",
    MessagePosted => "message.posted.v1",
    MailSent => "mail.sent.v1",
    OscarsFicheImported => "oscars.fiche.imported.v1",
    OscarsFichePublished => "oscars.fiche.published.v1",
    OscarsFicheUpdated => "oscars.fiche.updated.v1",
    OscarsFicheWithdrawn => "oscars.fiche.withdrawn.v1",
}

impl EventMetadata {
    /// Metadata of a new event (id: a fresh UUID v7) produced now by `producer` for `actor`.
    pub fn new(producer: &str, actor: Actor) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            producer: producer.to_owned(),
            actor: Some(actor),
            causation_id: String::new(),
        }
    }

    /// The same, recording the event that caused this one.
    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = causation_id.into();
        self
    }
}

#[cfg(all(test, feature = "json"))]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_schema_is_a_message_of_the_contracts() {
        let pool = prost_reflect::DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        for (subject, schema) in CATALOGUE {
            assert!(
                pool.get_message_by_name(schema).is_some(),
                "{subject} → {schema}"
            );
            assert!(subject.ends_with(".v1"));
        }
        let mut subjects: Vec<_> = CATALOGUE.iter().map(|(s, _)| s).collect();
        subjects.sort();
        subjects.dedup();
        assert_eq!(subjects.len(), CATALOGUE.len(), "subjects are unique");
    }
}
