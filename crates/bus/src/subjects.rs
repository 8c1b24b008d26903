//! Event subjects: `<prefix>.<aggregate>.<event>.v1`, with the prefix `mst` in production (tests
//! use a unique prefix each). The constants are the part after the prefix; the payload of each is
//! the protobuf message of `proto/mst/events/v1` named alongside.

/// `ProcedureChanged`, published by forms.
pub const PROCEDURE_CHANGED: &str = "procedure.changed.v1";
/// `DossierCreated`, published by forms.
pub const DOSSIER_CREATED: &str = "dossier.created.v1";
/// `DossierContentChanged`, published by forms.
pub const DOSSIER_CONTENT_CHANGED: &str = "dossier.content_changed.v1";
/// `DossierInvited`, published by forms.
pub const DOSSIER_INVITED: &str = "dossier.invited.v1";
/// `DossierInvitationRevoked`, published by forms.
pub const DOSSIER_INVITATION_REVOKED: &str = "dossier.invitation_revoked.v1";
/// `DossierDeleted`, published by forms.
pub const DOSSIER_DELETED: &str = "dossier.deleted.v1";
/// `DossierStatusChanged`, published by instruction.
pub const DOSSIER_STATUS_CHANGED: &str = "dossier.status_changed.v1";
/// `DossierCorrectionResolved`, published by instruction.
pub const DOSSIER_CORRECTION_RESOLVED: &str = "dossier.correction_resolved.v1";
/// `DossierArchived`, published by instruction.
pub const DOSSIER_ARCHIVED: &str = "dossier.archived.v1";
/// `DossierUnarchived`, published by instruction.
pub const DOSSIER_UNARCHIVED: &str = "dossier.unarchived.v1";
/// `AvisRequested`, published by instruction.
pub const AVIS_REQUESTED: &str = "avis.requested.v1";
/// `AvisGiven`, published by instruction.
pub const AVIS_GIVEN: &str = "avis.given.v1";
/// `AvisRevoked`, published by instruction.
pub const AVIS_REVOKED: &str = "avis.revoked.v1";
/// `MessagePosted`, published by messagerie.
pub const MESSAGE_POSTED: &str = "message.posted.v1";
/// `MailSent`, published by messagerie.
pub const MAIL_SENT: &str = "mail.sent.v1";
/// `OscarsFicheImported`, published by oscars.
pub const OSCARS_FICHE_IMPORTED: &str = "oscars.fiche.imported.v1";
/// `OscarsFichePublished`, published by oscars.
pub const OSCARS_FICHE_PUBLISHED: &str = "oscars.fiche.published.v1";
/// `OscarsFicheUpdated`, published by oscars.
pub const OSCARS_FICHE_UPDATED: &str = "oscars.fiche.updated.v1";
/// `OscarsFicheWithdrawn`, published by oscars.
pub const OSCARS_FICHE_WITHDRAWN: &str = "oscars.fiche.withdrawn.v1";

/// Joins a prefix and a relative subject.
pub fn full(prefix: &str, relative: &str) -> String {
    format!("{prefix}.{relative}")
}

/// The relative part of a full subject, when it starts with `prefix.`.
pub fn relative<'a>(prefix: &str, full: &'a str) -> Option<&'a str> {
    full.strip_prefix(prefix)?.strip_prefix('.')
}

/// The dead-letter subject of a consumer: outside the main stream's `<prefix>.>` space, so that
/// subscribers of the event feed never see dead letters.
pub fn dead_letter(prefix: &str, durable: &str) -> String {
    format!("{prefix}_deadletter.{durable}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_through_the_prefix() {
        let s = full("mst", DOSSIER_STATUS_CHANGED);
        assert_eq!(s, "mst.dossier.status_changed.v1");
        assert_eq!(relative("mst", &s), Some(DOSSIER_STATUS_CHANGED));
        assert_eq!(relative("mstx", &s), None);
        assert!(!dead_letter("mst", "oscars").starts_with("mst."));
    }
}
