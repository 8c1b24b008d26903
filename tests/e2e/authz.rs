//! The authorization matrix (I4): every RPC of every public gRPC service of the four services ×
//! eleven callers × the dossier states, each cell with the outcome the proto docs and DESIGN.md
//! promise, written below as data. A service gaining an RPC the matrix does not list fails the
//! test. For every cell denied a dossier (or fiche, avis, message…), the answer about the existing
//! one must equal the answer about one that does not exist: no existence leak through NOT_FOUND
//! vs PERMISSION_DENIED, nor through the message or the details.
//!
//! Writes are sent with a stale `expected_version` (or an already-used id) wherever the RPC takes
//! one, so an allowed caller gets ABORTED / FAILED_PRECONDITION / ALREADY_EXISTS and the shared
//! dossiers do not move; the few writes that do change something (a follow, a posted message, a
//! revoked spare invitation, a removed spare instructeur, a deleted message) change nothing
//! another cell relies on, and each row's callers run from the anonymous one to the owner so the
//! only caller allowed a destructive write goes last.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use mst_e2e::{Services, Stack};
use mst_kit::auth::Role;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::mst_procedures::{
    INSTRUCTEUR_13, PROJET, PROMOTEUR, cpam_of, open_procedures, pdf, roster_groupe, siret,
    try_create,
};
use crate::oscars::{AMBASSADEUR_ARA, AMBASSADEUR_PACA, configure_ambassadeurs, fill_projet};
use crate::rawgrpc::{Body, RawClient, all_methods, find_str, pool};
use crate::support::*;

const INVITEE: &str = "lucie.petit@asso-souffle.fr";
const SPARE_INVITEE: &str = "invitee.de.reserve@asso-souffle.fr";
const OTHER_PROMOTEUR: &str = "karim.benali@csapa-lestaque.fr";
const INSTRUCTEUR_69: &str = "julien.morel@cpam69.example";
const SPARE_INSTRUCTEUR: &str = "instructeur.de.reserve@cpam13.example";
const UNDECLARED: &str = "inconnu@cpam13.example";
pub(crate) const EXPERT: &str = "docteur.tabac@chu-marseille.example";
const SIRET: &str = "73282932000074";

/// The callers, in the column order of [`ROWS`].
const CALLERS: [(&str, &str, &[Role]); 11] = [
    ("owner", PROMOTEUR, &[Role::Promoteur]),
    ("invitee", INVITEE, &[Role::Promoteur]),
    ("other promoteur", OTHER_PROMOTEUR, &[Role::Promoteur]),
    (
        "instructeur of the groupe",
        INSTRUCTEUR_13,
        &[Role::Instructeur],
    ),
    (
        "instructeur of another groupe",
        INSTRUCTEUR_69,
        &[Role::Instructeur],
    ),
    ("undeclared instructeur", UNDECLARED, &[Role::Instructeur]),
    ("expert", EXPERT, &[Role::Expert]),
    (
        "ambassadeur of the région",
        AMBASSADEUR_PACA,
        &[Role::Ambassadeur],
    ),
    (
        "ambassadeur of another région",
        AMBASSADEUR_ARA,
        &[Role::Ambassadeur],
    ),
    ("admin", ADMIN, &[Role::Admin]),
    ("anonymous", "", &[]),
];

/// Dossier states; every dossier-scoped row is tried on one dossier in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum St {
    Brouillon,
    EnConstruction,
    EnInstruction,
    Accepte,
    Refuse,
    SansSuite,
    Archive,
}

const STATES: [St; 7] = [
    St::Brouillon,
    St::EnConstruction,
    St::EnInstruction,
    St::Accepte,
    St::Refuse,
    St::SansSuite,
    St::Archive,
];

/// Where a row applies.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Once, not about one dossier (or about one fixed object: a fiche, an avis, a message…).
    Once,
    /// On the dossier of each state.
    Dossier,
    /// On the dossiers of these states only (the object exists only there).
    Only(&'static [St]),
}

/// One RPC: its request (proto3 JSON, placeholders in braces) and the expected outcome per
/// caller, in [`CALLERS`] order:
/// `A` allowed (anything but UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND), `D`
/// PERMISSION_DENIED, `H` NOT_FOUND (hidden), `U` UNAUTHENTICATED; `p` PERMISSION_DENIED to a
/// caller who may see the object (an invitee deleting, an admin editing, an instructeur deleting
/// another's message): he knows it exists, so no existence probe; for dossier rows `b` = `H` on
/// the brouillon and `A` otherwise, `d` = `H` on the brouillon and `p` otherwise (an instructeur
/// or expert never reaches a brouillon; they do see a deposited dossier of their groupe or
/// avis). `D` and `H` cells are probed: the same call about a missing object answers the same.
struct Row {
    rpc: &'static str,
    scope: Scope,
    want: &'static str,
    request: &'static str,
}

const fn row(rpc: &'static str, scope: Scope, want: &'static str, request: &'static str) -> Row {
    Row {
        rpc,
        scope,
        want,
        request,
    }
}

use Scope::{Dossier, Once, Only};

/// The matrix. Columns: owner, invitee, other promoteur, instructeur of the groupe, of another
/// groupe, undeclared, expert, ambassadeur of the région, of another région, admin, anonymous.
/// Sources: the common rules at the top of each service's proto file, each RPC's comment, and
/// DESIGN.md §1 and I4.
#[rustfmt::skip]
const ROWS: &[Row] = &[
    // ---- forms: FormsService — "reaching a dossier: owner, invitees; an instructeur once deposited
    // and routed to his groupe; an expert with an avis; admins read all. Unreachable = NOT_FOUND;
    // reachable but not in this way = PERMISSION_DENIED."
    row("mst.forms.v1.FormsService/ListProcedures", Once, "AAAAAAAAAAU", r#"{}"#),
    row("mst.forms.v1.FormsService/GetProcedure", Once, "AAAAAAAAAAU", r#"{"procedureId":"{proc}","includePublishedRevision":true}"#),
    row("mst.forms.v1.FormsService/GetRevision", Once, "AAAAAAAAAAU", r#"{"revisionId":"{rev}"}"#),
    row("mst.forms.v1.FormsService/DownloadNotice", Once, "AAAAAAAAAAU", r#"{"procedureId":"{proc}"}"#),
    row("mst.forms.v1.FormsService/CreateDossier", Once, "AAADDDDDDDU", r#"{"procedureId":"{proc}","requestId":"{uuid}"}"#),
    row("mst.forms.v1.FormsService/GetDossier", Dossier, "AAHbHHbHHAU", r#"{"number":"{n}"}"#),
    // Any caller lists what he owns or was invited to (DESIGN §1: promoteurs invite "typically
    // the CPAM instructeur"); an empty list otherwise.
    row("mst.forms.v1.FormsService/ListDossiers", Once, "AAAAAAAAAAU", r#"{}"#),
    row("mst.forms.v1.FormsService/UpdateDossier", Dossier, "AAHdHHdHHpU", r#"{"number":"{n}","expectedVersion":"999","patches":[{"fieldId":"p_titre","set":{"text":"Titre"}}]}"#),
    row("mst.forms.v1.FormsService/DuplicateDossier", Dossier, "ApHdHHdHHpU", r#"{"number":"{n}","requestId":"{uuid}"}"#),
    row("mst.forms.v1.FormsService/DeleteDossier", Dossier, "ApHdHHdHHpU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.forms.v1.FormsService/InviteToDossier", Dossier, "ApHdHHdHHpU", r#"{"number":"{n}","inviteeEmail":"lucie.petit@asso-souffle.fr"}"#),
    row("mst.forms.v1.FormsService/ListInvitations", Dossier, "AAHdHHdHHpU", r#"{"number":"{n}"}"#),
    row("mst.forms.v1.FormsService/RevokeInvitation", Dossier, "ApHdHHdHHpU", r#"{"number":"{n}","invitationId":"{inv}"}"#),
    row("mst.forms.v1.FormsService/DepositDossier", Dossier, "ApHdHHdHHpU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.forms.v1.FormsService/GetDossierHistory", Dossier, "AAHbHHdHHAU", r#"{"number":"{n}"}"#),
    row("mst.forms.v1.FormsService/UploadChampFile", Dossier, "AAHdHHdHHpU", r#"[{"metadata":{"number":"{n}","fieldId":"p_pj_budget","fileName":"budget.pdf","contentType":"application/pdf","sizeBytes":"10","expectedVersion":"999"}}]"#),
    row("mst.forms.v1.FormsService/DownloadChampFile", Dossier, "AAHbHHbHHAU", r#"{"number":"{n}","fileId":"{file}"}"#),
    row("mst.forms.v1.FormsService/GetDossierPdf", Dossier, "AAHbHHbHHAU", r#"{"number":"{n}"}"#),
    // ---- forms: ProcedureAdminService — admin only.
    row("mst.forms.v1.ProcedureAdminService/CreateProcedure", Once, "DDDDDDDDDAU", r#"{"procedureId":"{proc}","title":"Doublon","kind":"DOSSIER_KIND_PROJET"}"#),
    row("mst.forms.v1.ProcedureAdminService/UpdateProcedure", Once, "DDDDDDDDDAU", r#"{"procedureId":"{proc}","expectedVersion":"999","procedure":{"title":"Autre"},"updateMask":"title"}"#),
    row("mst.forms.v1.ProcedureAdminService/UploadNotice", Once, "DDDDDDDDDAU", r#"[{"metadata":{"procedureId":"{proc}","fileName":"notice.pdf","contentType":"application/pdf","sizeBytes":"10"}}]"#),
    row("mst.forms.v1.ProcedureAdminService/ListRevisions", Once, "DDDDDDDDDAU", r#"{"procedureId":"{proc}"}"#),
    row("mst.forms.v1.ProcedureAdminService/UpdateDraftRevision", Once, "DDDDDDDDDAU", r#"{"procedureId":"{proc}","expectedVersion":"999"}"#),
    row("mst.forms.v1.ProcedureAdminService/PublishRevision", Once, "DDDDDDDDDAU", r#"{"procedureId":"{proc}","expectedVersion":"999"}"#),
    row("mst.forms.v1.ProcedureAdminService/LoadProcedure", Once, "DDDDDDDDDAU", r#"{"builtinId":"mst-2024-action"}"#),
    // ---- forms: FormsInternalService — service tokens only: every human is denied.
    row("mst.forms.v1.FormsInternalService/FreezeDossier", Dossier, "DDDDDDDDDDU", r#"{"number":"{n}","operationId":"{uuid}","targetStatus":"DOSSIER_STATUS_EN_INSTRUCTION","statusVersion":"999"}"#),
    row("mst.forms.v1.FormsInternalService/UnfreezeDossier", Dossier, "DDDDDDDDDDU", r#"{"number":"{n}","operationId":"{uuid}","reason":"UNFREEZE_REASON_ROLLBACK"}"#),
    row("mst.forms.v1.FormsInternalService/StreamDossiers", Once, "DDDDDDDDDDU", r#"{"procedureId":"{proc}"}"#),
    // ---- instruction: InstructionService — "no instructeur role, or not on the roster:
    // PERMISSION_DENIED; a dossier outside his groupes or a brouillon: NOT_FOUND; admins read
    // everything, transitions are instructeur-only."
    row("mst.instruction.v1.InstructionService/GetDashboard", Once, "DDDAADDDDAU", r#"{}"#),
    row("mst.instruction.v1.InstructionService/ListDossiers", Once, "DDDAADDDDAU", r#"{"procedureId":"{proc}"}"#),
    row("mst.instruction.v1.InstructionService/GetDossier", Dossier, "DDDbHDDDDbU", r#"{"number":"{n}"}"#),
    // Column preferences: instructeur and admin (the admin's ListDossiers uses them too).
    row("mst.instruction.v1.InstructionService/GetColumnPreferences", Once, "DDDAADDDDAU", r#"{"procedureId":"{proc}"}"#),
    row("mst.instruction.v1.InstructionService/UpdateColumnPreferences", Once, "DDDAADDDDAU", r#"{"procedureId":"{proc}"}"#),
    row("mst.instruction.v1.InstructionService/FollowDossier", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}"}"#),
    row("mst.instruction.v1.InstructionService/UnfollowDossier", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}"}"#),
    row("mst.instruction.v1.InstructionService/ListPeopleInvolved", Dossier, "DDDbHDDDDbU", r#"{"number":"{n}"}"#),
    row("mst.instruction.v1.InstructionService/UploadJustificatif", Dossier, "DDDbHDDDDDU", r#"[{"metadata":{"number":"{n}","fileName":"decision.pdf","contentType":"application/pdf","sizeBytes":"10"}}]"#),
    // "instructeur of the dossier, its owner and invitees, system. Errors: NOT_FOUND."
    row("mst.instruction.v1.InstructionService/DownloadJustificatif", Only(&[St::Accepte]), "AAHAHHHHHAU", r#"{"number":"{n}","fileId":"{jfile}"}"#),
    row("mst.instruction.v1.InstructionService/PasserEnInstruction", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/RepasserEnConstruction", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/DemanderCorrection", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999","message":"Merci de corriger.","reason":"CORRECTION_REASON_INCORRECT"}"#),
    row("mst.instruction.v1.InstructionService/Accepter", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/Refuser", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999","motivation":"Hors cahier des charges."}"#),
    row("mst.instruction.v1.InstructionService/ClasserSansSuite", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999","motivation":"Doublon."}"#),
    row("mst.instruction.v1.InstructionService/RepasserEnInstruction", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/ArchiveDossier", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/UnarchiveDossier", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    // "Role: instructeur": the per-dossier outcome is in the answer, the call itself is allowed.
    row("mst.instruction.v1.InstructionService/BulkAction", Once, "DDDAADDDDDU", r#"{"action":"BULK_ACTION_KIND_ACCEPTER","targets":[{"number":"{n1}","expectedVersion":"999"}]}"#),
    row("mst.instruction.v1.InstructionService/GetAnnotationDefinitions", Once, "DDDAADDDDAU", r#"{"procedureId":"{proc}"}"#),
    row("mst.instruction.v1.InstructionService/UpdateAnnotationDefinitions", Once, "DDDDDDDDDAU", r#"{"procedureId":"{proc}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/GetAnnotations", Dossier, "DDDbHDDDDbU", r#"{"number":"{n}"}"#),
    row("mst.instruction.v1.InstructionService/UpdateAnnotations", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/RequestAvis", Dossier, "DDDbHDDDDDU", r#"{"number":"{n}","expertEmail":"autre.expert@chu-marseille.example","question":"Votre avis ?","requestId":"{uuid}"}"#),
    // "the expert the avis was asked to; Errors: NOT_FOUND (no such avis for the caller)".
    row("mst.instruction.v1.InstructionService/GiveAvis", Once, "HHHHHHAHHHU", r#"[{"metadata":{"avisId":"{avis}","expectedVersion":"999","answer":"Favorable."}}]"#),
    // "the instructeur who requested it; PERMISSION_DENIED (another instructeur)".
    row("mst.instruction.v1.InstructionService/RevokeAvis", Once, "DDDAHDDDDDU", r#"{"avisId":"{avis}","expectedVersion":"999"}"#),
    row("mst.instruction.v1.InstructionService/ListAvis", Dossier, "DDDbHDDDDbU", r#"{"number":"{n}"}"#),
    row("mst.instruction.v1.InstructionService/ListMyAvisRequests", Once, "AAAAAAAAAAU", r#"{}"#),
    // "the expert, the instructeurs allowed to see the answer. Errors: NOT_FOUND."
    row("mst.instruction.v1.InstructionService/DownloadAvisFile", Once, "HHHAHHAHHAU", r#"{"avisId":"{avis}"}"#),
    row("mst.instruction.v1.InstructionService/ExportDossiers", Once, "DDDAADDDDAU", r#"{"procedureId":"{proc}","format":"EXPORT_FORMAT_CSV"}"#),
    row("mst.instruction.v1.InstructionService/GetStatistics", Once, "DDDAADDDDAU", r#"{"procedureId":"{proc}"}"#),
    // ---- instruction: RosterService — writes admin only; reads admin, system, instructeur
    // (his groupes).
    row("mst.instruction.v1.RosterService/ImportRoster", Once, "DDDDDDDDDAU", r#"[{"metadata":{"fileName":"roster.csv","dryRun":true}},{"chunk":"ZW1haWw7Z3JvdXBlO25vbQo="}]"#),
    row("mst.instruction.v1.RosterService/AddInstructeur", Once, "DDDDDDDDDAU", r#"{"email":"claire.roussel@assurance-maladie.example","groupeId":"{g13}","name":"Claire Roussel"}"#),
    row("mst.instruction.v1.RosterService/RemoveInstructeur", Once, "DDDDDDDDDAU", r#"{"email":"instructeur.de.reserve@cpam13.example","groupeId":"{g13}"}"#),
    row("mst.instruction.v1.RosterService/ListInstructeurs", Once, "DDDAADDDDAU", r#"{}"#),
    row("mst.instruction.v1.RosterService/CreateGroupe", Once, "DDDDDDDDDAU", r#"{"label":"CPAM des Bouches-du-Rhône","departementCodes":["13"]}"#),
    row("mst.instruction.v1.RosterService/GetGroupe", Once, "DDDAHDDDDAU", r#"{"groupeId":"{g13}"}"#),
    row("mst.instruction.v1.RosterService/ListGroupes", Once, "DDDAADDDDAU", r#"{}"#),
    row("mst.instruction.v1.RosterService/UpdateGroupe", Once, "DDDDDDDDDAU", r#"{"groupeId":"{g13}","expectedVersion":"999","groupe":{"label":"Autre"},"updateMask":"label"}"#),
    row("mst.instruction.v1.RosterService/DeleteGroupe", Once, "DDDDDDDDDAU", r#"{"groupeId":"{g13}","expectedVersion":"999"}"#),
    // ---- instruction: InstructionInternalService — service tokens only.
    row("mst.instruction.v1.InstructionInternalService/RecordDeposit", Dossier, "DDDDDDDDDDU", r#"{"number":"{n}","depositId":"{uuid}","ownerEmail":"marie.dupont@asso-souffle.fr","contentVersion":"999"}"#),
    row("mst.instruction.v1.InstructionInternalService/CheckDossierAccess", Dossier, "DDDDDDDDDDU", r#"{"number":"{n}","email":"karim.benali@csapa-lestaque.fr","role":"ROLE_PROMOTEUR"}"#),
    row("mst.instruction.v1.InstructionInternalService/ListDossierInstructeurs", Dossier, "DDDDDDDDDDU", r#"{"number":"{n}"}"#),
    row("mst.instruction.v1.InstructionInternalService/GetInstructeurStatus", Once, "DDDDDDDDDDU", r#"{"email":"claire.roussel@assurance-maladie.example"}"#),
    // ---- messagerie — "who reaches a thread is who reaches the dossier (owner, invitees,
    // instructeurs of its groupe, experts with an avis); else NOT_FOUND; a brouillon has no thread
    // (FAILED_PRECONDITION)".
    row("mst.messagerie.v1.MessagerieService/ListMessages", Dossier, "AAHbHHbHHHU", r#"{"number":"{n}"}"#),
    row("mst.messagerie.v1.MessagerieService/PostMessage", Dossier, "AAHbHHbHHHU", r#"[{"metadata":{"number":"{n}","body":"Bonjour","requestId":"{uuid}"}}]"#),
    row("mst.messagerie.v1.MessagerieService/DeleteMessage", Once, "ApHpHHpHHHU", r#"{"messageId":"{msg}"}"#),
    row("mst.messagerie.v1.MessagerieService/DownloadAttachment", Once, "AAHAHHAHHHU", r#"{"attachmentId":"{att}"}"#),
    row("mst.messagerie.v1.MessagerieService/ContactBrouillonOwners", Once, "DDDAADDDDDU", r#"{"procedureId":"{proc}","subject":"Rappel","body":"Pensez à déposer.","requestId":"{uuid}"}"#),
    row("mst.messagerie.v1.MessagerieService/ListNotifications", Once, "AAAAAAAAAAU", r#"{}"#),
    // "Role: instructeur": the messagerie's rules do not require the roster for one's own
    // preferences (they notify nothing until he is declared).
    row("mst.messagerie.v1.MessagerieService/GetNotificationPreferences", Once, "DDDAAADDDDU", r#"{"procedureId":"{proc}"}"#),
    row("mst.messagerie.v1.MessagerieService/UpdateNotificationPreferences", Once, "DDDAAADDDDU", r#"{"procedureId":"{proc}","expectedVersion":"999","settings":[{"kind":"NOTICE_KIND_NEW_DOSSIER","instant":true}]}"#),
    row("mst.messagerie.v1.MessagerieService/ListDeliveries", Once, "DDDDDDDDDAU", r#"{}"#),
    // ---- oscars: OscarsService — "an ambassadeur reaches only the fiches of his région(s) (other
    // région: NOT_FOUND); without the role or not configured: PERMISSION_DENIED; admins all".
    row("mst.oscars.v1.OscarsService/ListWorkQueue", Once, "DDDDDDDAAAU", r#"{}"#),
    row("mst.oscars.v1.OscarsService/GetFiche", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}"}"#),
    row("mst.oscars.v1.OscarsService/SuggestProjet", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}"}"#),
    row("mst.oscars.v1.OscarsService/ChainToProjet", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}","expectedVersion":"999"}"#),
    row("mst.oscars.v1.OscarsService/SuggestPreviousYear", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}"}"#),
    row("mst.oscars.v1.OscarsService/ChainToPrevious", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}","expectedVersion":"999"}"#),
    row("mst.oscars.v1.OscarsService/FindPromoteurs", Once, "DDDDDDDAAAU", r#"{"siret":"{siret1}"}"#),
    row("mst.oscars.v1.OscarsService/GetPromoteur", Once, "DDDDDDDAAAU", r#"{"promoteurId":"{prom1}"}"#),
    row("mst.oscars.v1.OscarsService/CreatePromoteur", Once, "DDDDDDDAAAU", r#"{"promoteur":{"siret":"{siret1}","raisonSociale":"Doublon"},"requestId":"{uuid}"}"#),
    row("mst.oscars.v1.OscarsService/AttachPromoteur", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}","expectedVersion":"999","promoteurId":"{prom1}"}"#),
    row("mst.oscars.v1.OscarsService/MergePromoteurs", Once, "DDDDDDDAAAU", r#"{"survivor":{"promoteurId":"{prom1}","expectedVersion":"999"},"merged":[{"promoteurId":"{prom2}","expectedVersion":"999"}]}"#),
    row("mst.oscars.v1.OscarsService/UpdatePromoteur", Once, "DDDDDDDAAAU", r#"{"promoteurId":"{prom1}","expectedVersion":"999","promoteur":{"raisonSociale":"Autre"},"updateMask":"raisonSociale"}"#),
    row("mst.oscars.v1.OscarsService/CorrectFiche", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}","expectedVersion":"999","corrections":[{"field":"title","value":{"text":"Titre corrigé"}}]}"#),
    row("mst.oscars.v1.OscarsService/ListCorrections", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}"}"#),
    row("mst.oscars.v1.OscarsService/PublishFiche", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}","expectedVersion":"999"}"#),
    row("mst.oscars.v1.OscarsService/HideFiche", Once, "DDDDDDDAHAU", r#"{"ficheId":"{fiche}","expectedVersion":"999"}"#),
    row("mst.oscars.v1.OscarsService/SetAmbassadeurs", Once, "DDDDDDDDDAU", r#"{"regionCode":"93","expectedVersion":"999"}"#),
    row("mst.oscars.v1.OscarsService/ListAmbassadeurs", Once, "DDDDDDDAAAU", r#"{}"#),
    // ---- oscars: OscarsPublicService — anyone, visible fiches only (the fiche here is not
    // visible: NOT_FOUND for everyone, exactly as a missing one).
    row("mst.oscars.v1.OscarsPublicService/ListPublicFiches", Once, "AAAAAAAAAAA", r#"{}"#),
    row("mst.oscars.v1.OscarsPublicService/GetPublicFiche", Once, "HHHHHHHHHHH", r#"{"ficheId":"{fiche}"}"#),
    row("mst.oscars.v1.OscarsPublicService/ExportPublicFiches", Once, "AAAAAAAAAAA", r#"{"format":"PUBLIC_EXPORT_FORMAT_JSON"}"#),
];

/// An outcome class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Allow,
    Deny,
    Hidden,
    Unauth,
}

fn classify(result: &Result<Vec<Value>, tonic::Status>) -> Out {
    match result {
        Ok(_) => Out::Allow,
        Err(s) => match s.code() {
            Code::Unauthenticated => Out::Unauth,
            Code::PermissionDenied => Out::Deny,
            Code::NotFound => Out::Hidden,
            _ => Out::Allow,
        },
    }
}

fn expected(c: char, state: Option<St>) -> Out {
    let brouillon = state == Some(St::Brouillon);
    match c {
        'A' => Out::Allow,
        'D' => Out::Deny,
        'H' => Out::Hidden,
        'U' => Out::Unauth,
        'b' if brouillon => Out::Hidden,
        'b' => Out::Allow,
        'd' if brouillon => Out::Hidden,
        'd' => Out::Deny,
        'p' => Out::Deny,
        other => panic!("unknown cell {other:?}"),
    }
}

/// Placeholders naming an object whose existence must not leak, and their values for a missing
/// object.
const MISSING: &[(&str, &str)] = &[
    ("{n}", "987654"),
    ("{file}", "0190e0f0-0000-7000-8000-00000000f11e"),
    ("{inv}", "0190e0f0-0000-7000-8000-000000000171"),
    ("{jfile}", "0190e0f0-0000-7000-8000-00000000f11f"),
    ("{avis}", "0190e0f0-0000-7000-8000-0000000a0150"),
    ("{msg}", "0190e0f0-0000-7000-8000-000000000350"),
    ("{att}", "0190e0f0-0000-7000-8000-0000000a77ac"),
    ("{fiche}", "0190e0f0-0000-7000-8000-00000000f1c4"),
    ("{g13}", "0190e0f0-0000-7000-8000-000000000013"),
];

/// The objects of the fixture.
pub(crate) struct Fixture {
    pub(crate) values: BTreeMap<&'static str, String>,
    pub(crate) per_state: BTreeMap<St, BTreeMap<&'static str, String>>,
}

impl Fixture {
    fn fill(
        &self,
        template: &str,
        state: Option<St>,
        missing: bool,
    ) -> (String, Vec<(String, &'static str)>) {
        let mut out = template.replace("{uuid}", &uuid::Uuid::now_v7().to_string());
        let mut used = Vec::new();
        let mut all: Vec<(&'static str, String)> =
            self.values.iter().map(|(k, v)| (*k, v.clone())).collect();
        if let Some(s) = state {
            all.extend(self.per_state[&s].iter().map(|(k, v)| (*k, v.clone())));
        }
        for (key, value) in all {
            if !out.contains(key) {
                continue;
            }
            let value = match MISSING.iter().find(|(k, _)| *k == key) {
                Some((_, m)) if missing => (*m).to_owned(),
                _ => value,
            };
            out = out.replace(key, &value);
            if MISSING.iter().any(|(k, _)| *k == key) {
                used.push((value, key));
            }
        }
        assert!(
            !out.contains("{n}") && !out.contains("{proc}"),
            "unfilled: {out}"
        );
        (out, used)
    }
}

/// The answer with the object's ids replaced by their placeholder names, for comparing the
/// answers about an existing and a missing object.
fn normalized(status: &tonic::Status, used: &[(String, &'static str)]) -> String {
    let mut text = format!(
        "{:?} {} {:?}",
        status.code(),
        status.message(),
        status.get_error_details()
    );
    for (value, key) in used {
        text = text.replace(value.as_str(), key);
    }
    text
}

fn token_of(caller: usize) -> Option<String> {
    let (_, email, roles) = CALLERS[caller];
    (!roles.is_empty()).then(|| token(email, roles))
}

async fn call(
    client: &RawClient,
    rpc: &str,
    caller: usize,
    json: String,
) -> Result<Vec<Value>, tonic::Status> {
    client
        .call(rpc, token_of(caller).as_deref(), Body::Json(json))
        .await
}

/// Calls `rpc` as the admin (setup), panicking on an error.
async fn admin_call(client: &RawClient, rpc: &str, json: String) -> Vec<Value> {
    call(client, rpc, 9, json)
        .await
        .unwrap_or_else(|e| panic!("{rpc}: {e:?}"))
}

async fn as_email(
    client: &RawClient,
    rpc: &str,
    email: &str,
    roles: &[Role],
    json: String,
) -> Vec<Value> {
    client
        .call(rpc, Some(&token(email, roles)), Body::Json(json))
        .await
        .unwrap_or_else(|e| panic!("{rpc} as {email}: {e:?}"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) async fn status_version(client: &RawClient, number: i64) -> String {
    let d = as_email(
        client,
        "mst.instruction.v1.InstructionService/GetDossier",
        INSTRUCTEUR_13,
        &[Role::Instructeur],
        format!(r#"{{"number":"{number}"}}"#),
    )
    .await;
    d[0]["dossier"]["version"].as_str().unwrap().to_owned()
}

async fn transition(client: &RawClient, rpc: &str, number: i64, extra: &str) {
    let version = status_version(client, number).await;
    as_email(
        client,
        &format!("mst.instruction.v1.InstructionService/{rpc}"),
        INSTRUCTEUR_13,
        &[Role::Instructeur],
        format!(r#"{{"number":"{number}","expectedVersion":"{version}"{extra}}}"#),
    )
    .await;
}

/// Polls `f` until it returns `Some` (projections fed by events), for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Two groupes in two régions, ambassadeurs of two régions, one dossier per state with an
/// invitee and an expert, a message with an attachment, a justificatif, an answered avis with a
/// file, the fiche of the accepted dossier and two promoteurs.
pub(crate) async fn fixture(stack: &Stack, client: &RawClient) -> Fixture {
    let (projet, _) = open_procedures(stack).await;
    let cpam13 = cpam_of("13");
    let g13 = roster_groupe(stack, &cpam13, "13").await;
    let mut values = BTreeMap::new();
    values.insert("{proc}", PROJET.to_owned());
    values.insert("{rev}", projet.id.clone());
    values.insert("{g13}", g13.clone());
    let g69 = admin_call(
        client,
        "mst.instruction.v1.RosterService/CreateGroupe",
        format!(
            r#"{{"label":"CPAM du Rhône","cpamValues":["{}"],"departementCodes":["69"]}}"#,
            cpam_of("69")
        ),
    )
    .await;
    let g69 = find_str(&g69[0], "id").unwrap();
    for (email, groupe) in [(INSTRUCTEUR_69, &g69), (SPARE_INSTRUCTEUR, &g13)] {
        admin_call(
            client,
            "mst.instruction.v1.RosterService/AddInstructeur",
            format!(r#"{{"email":"{email}","groupeId":"{groupe}","name":"Agent"}}"#),
        )
        .await;
    }
    configure_ambassadeurs(stack).await;
    let notice = pdf("Notice");
    admin_call(
        client,
        "mst.forms.v1.ProcedureAdminService/UploadNotice",
        format!(
            r#"[{{"metadata":{{"procedureId":"{PROJET}","fileName":"notice.pdf","contentType":"application/pdf","sizeBytes":"{}"}}}},{{"chunk":"{}"}}]"#,
            notice.len(),
            b64(&notice)
        ),
    )
    .await;

    // One filled projet per state, with the invitee and a spare invitee (for RevokeInvitation).
    let mut per_state = BTreeMap::new();
    let mut numbers = BTreeMap::new();
    for state in STATES {
        let d = try_create(stack, PROMOTEUR, PROJET).await.unwrap();
        let version = fill_projet(
            stack,
            &d,
            2024,
            SIRET,
            &cpam13,
            "Mois sans tabac à Marseille",
        )
        .await;
        let mut values = BTreeMap::new();
        values.insert("{n}", d.number.to_string());
        let mut spare = String::new();
        for invitee in [INVITEE, SPARE_INVITEE] {
            let inv = as_email(
                client,
                "mst.forms.v1.FormsService/InviteToDossier",
                PROMOTEUR,
                &[Role::Promoteur],
                format!(r#"{{"number":"{}","inviteeEmail":"{invitee}"}}"#, d.number),
            )
            .await;
            spare = find_str(&inv[0], "id").unwrap();
        }
        values.insert("{inv}", spare);
        let got = as_email(
            client,
            "mst.forms.v1.FormsService/GetDossier",
            PROMOTEUR,
            &[Role::Promoteur],
            format!(r#"{{"number":"{}"}}"#, d.number),
        )
        .await;
        let files = find_file_id(&got[0]).expect("an uploaded file");
        values.insert("{file}", files);
        if state != St::Brouillon {
            deposit(stack, PROMOTEUR, d.number, version)
                .await
                .unwrap_or_else(|e| panic!("deposit: {e:?}"));
        }
        per_state.insert(state, values);
        numbers.insert(state, d.number);
    }
    values.insert("{n1}", numbers[&St::EnConstruction].to_string());

    // The expert is asked for an avis on every deposited dossier, while en construction.
    let mut avis_of = BTreeMap::new();
    for (&state, &number) in &numbers {
        if state == St::Brouillon {
            continue;
        }
        let avis = as_email(
            client,
            "mst.instruction.v1.InstructionService/RequestAvis",
            INSTRUCTEUR_13,
            &[Role::Instructeur],
            format!(
                r#"{{"number":"{number}","expertEmail":"{EXPERT}","question":"Qu'en pensez-vous ?","requestId":"{}"}}"#,
                uuid::Uuid::now_v7()
            ),
        )
        .await;
        avis_of.insert(state, avis[0]["avis"].clone());
    }

    // Messages of the owner in the en construction dossier's thread (created from the deposit
    // event): one with an attachment, one to delete.
    let n1 = numbers[&St::EnConstruction];
    let attachment = pdf("Devis");
    let posted = eventually("the thread of the deposited dossier", || {
        let json = format!(
            r#"[{{"metadata":{{"number":"{n1}","body":"Voici le devis.","attachmentCount":1,"requestId":"0190e0f0-0000-7000-8000-0000000000a1"}}}},{{"attachment":{{"fileName":"devis.pdf","contentType":"application/pdf","sizeBytes":"{}"}}}},{{"chunk":"{}"}}]"#,
            attachment.len(),
            b64(&attachment)
        );
        async move {
            client
                .call(
                    "mst.messagerie.v1.MessagerieService/PostMessage",
                    Some(&token(PROMOTEUR, &[Role::Promoteur])),
                    Body::Json(json),
                )
                .await
                .ok()
        }
    })
    .await;
    let attachments = &posted[0]["entry"]["message"]["attachments"];
    values.insert("{att}", find_str(attachments, "id").unwrap());
    let plain = as_email(
        client,
        "mst.messagerie.v1.MessagerieService/PostMessage",
        PROMOTEUR,
        &[Role::Promoteur],
        format!(
            r#"[{{"metadata":{{"number":"{n1}","body":"Une question.","requestId":"{}"}}}}]"#,
            uuid::Uuid::now_v7()
        ),
    )
    .await;
    values.insert(
        "{msg}",
        plain[0]["entry"]["id"].as_str().unwrap().to_owned(),
    );

    // The expert answers the avis of the en instruction dossier with a file.
    let avis = &avis_of[&St::EnInstruction];
    let avis_id = avis["id"].as_str().unwrap().to_owned();
    let file = pdf("Avis");
    as_email(
        client,
        "mst.instruction.v1.InstructionService/GiveAvis",
        EXPERT,
        &[Role::Expert],
        format!(
            r#"[{{"metadata":{{"avisId":"{avis_id}","expectedVersion":"{}","answer":"Favorable.","file":{{"fileName":"avis.pdf","contentType":"application/pdf","sizeBytes":"{}"}}}}}},{{"chunk":"{}"}}]"#,
            avis["version"].as_str().unwrap(),
            file.len(),
            b64(&file)
        ),
    )
    .await;
    values.insert("{avis}", avis_id);

    // Transitions.
    for (&state, &number) in &numbers {
        if state <= St::EnConstruction {
            continue;
        }
        transition(client, "PasserEnInstruction", number, "").await;
        match state {
            St::Accepte => {
                let justificatif = pdf("Décision");
                let upload = as_email(
                    client,
                    "mst.instruction.v1.InstructionService/UploadJustificatif",
                    INSTRUCTEUR_13,
                    &[Role::Instructeur],
                    format!(
                        r#"[{{"metadata":{{"number":"{number}","fileName":"decision.pdf","contentType":"application/pdf","sizeBytes":"{}"}}}},{{"chunk":"{}"}}]"#,
                        justificatif.len(),
                        b64(&justificatif)
                    ),
                )
                .await;
                let upload_id = upload[0]["uploadId"].as_str().unwrap().to_owned();
                let jfile = upload[0]["file"]["id"].as_str().unwrap().to_owned();
                transition(
                    client,
                    "Accepter",
                    number,
                    &format!(r#","justificatifUploadId":"{upload_id}""#),
                )
                .await;
                per_state.get_mut(&state).unwrap().insert("{jfile}", jfile);
            }
            St::Refuse | St::Archive => {
                transition(
                    client,
                    "Refuser",
                    number,
                    r#","motivation":"Hors cahier des charges.""#,
                )
                .await;
                if state == St::Archive {
                    transition(client, "ArchiveDossier", number, "").await;
                }
            }
            St::SansSuite => {
                transition(
                    client,
                    "ClasserSansSuite",
                    number,
                    r#","motivation":"Doublon.""#,
                )
                .await;
            }
            _ => {}
        }
    }

    // The fiche of the accepted dossier, and two promoteurs of the base.
    let accepted = numbers[&St::Accepte];
    let fiche = eventually("the fiche of the accepted dossier", || async move {
        let queue = call(
            client,
            "mst.oscars.v1.OscarsService/ListWorkQueue",
            9,
            r#"{"filter":{"regionCode":"93","statuses":["FICHE_STATUS_IMPORTE","FICHE_STATUS_EN_COURS","FICHE_STATUS_VISIBLE","FICHE_STATUS_RETIREE"]}}"#.into(),
        )
        .await
        .map_err(|e| println!("work queue: {e:?}"))
        .ok()?;
        queue[0]["fiches"]
            .as_array()
            .or_else(|| {
                println!("work queue: {}", queue[0]);
                None
            })?
            .iter()
            .find(|f| f["dossierNumber"].as_str() == Some(&accepted.to_string()))
            .and_then(|f| f["id"].as_str().map(str::to_owned))
    })
    .await;
    values.insert("{fiche}", fiche);
    for (key, siret, name) in [
        ("{prom1}", siret("12345678", "0001"), "Association Souffle"),
        ("{prom2}", siret("44306184", "0004"), "Souffle (doublon)"),
    ] {
        let p = admin_call(
            client,
            "mst.oscars.v1.OscarsService/CreatePromoteur",
            format!(r#"{{"promoteur":{{"siret":"{siret}","raisonSociale":"{name}","communeCode":"13055"}},"requestId":"{}"}}"#, uuid::Uuid::now_v7()),
        )
        .await;
        values.insert(key, find_str(&p[0], "id").unwrap());
        if key == "{prom1}" {
            values.insert("{siret1}", siret);
        }
    }
    Fixture { values, per_state }
}

/// The id of the first file attached to a champ of a dossier (as JSON).
fn find_file_id(dossier: &Value) -> Option<String> {
    match dossier {
        Value::Object(map) => {
            if let Some(Value::Array(files)) = map.get("files")
                && let Some(id) = files.first().and_then(|f| f["id"].as_str())
            {
                return Some(id.to_owned());
            }
            map.values().find_map(find_file_id)
        }
        Value::Array(items) => items.iter().find_map(find_file_id),
        _ => None,
    }
}

#[tokio::test]
async fn every_rpc_answers_every_caller_in_every_state_as_specified_and_leaks_no_existence() {
    // The matrix lists every RPC of the contracts, no more, no less.
    let listed: BTreeSet<String> = ROWS.iter().map(|r| r.rpc.to_owned()).collect();
    assert_eq!(listed.len(), ROWS.len(), "an RPC is listed twice");
    let served: BTreeSet<String> = all_methods(&pool()).into_iter().collect();
    let missing: Vec<_> = served.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&served).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "RPCs missing from the matrix: {missing:?}; not in the contracts: {unknown:?}"
    );
    for r in ROWS {
        assert_eq!(r.want.chars().count(), CALLERS.len(), "{}", r.rpc);
    }

    let stack = Stack::start_with(&[
        ("MST_OSCARS_PUBLIC_RATE", "10000"),
        ("MST_OSCARS_PUBLIC_BURST", "10000"),
    ])
    .await
    .unwrap();
    let urls: Vec<(&str, String)> = ["forms", "instruction", "messagerie", "oscars"]
        .into_iter()
        .map(|s| (s, stack.url(s)))
        .collect();
    let client = RawClient::connect(&urls).await;
    let fixture = fixture(&stack, &client).await;

    let (mut cells, mut allowed, mut denied, mut hidden, mut unauth, mut probes) =
        (0, 0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    let mut leaks = Vec::new();
    let mut per_service: BTreeMap<String, usize> = BTreeMap::new();
    for r in ROWS {
        let states: Vec<Option<St>> = match r.scope {
            Scope::Once => vec![None],
            Scope::Dossier => STATES.iter().copied().map(Some).collect(),
            Scope::Only(states) => states.iter().copied().map(Some).collect(),
        };
        let want: Vec<char> = r.want.chars().collect();
        // From the anonymous caller to the owner: a destructive write allowed to the owner (or
        // the admin) runs after every other caller's attempt.
        for caller in (0..CALLERS.len()).rev() {
            for &state in &states {
                cells += 1;
                *per_service
                    .entry(r.rpc.split('/').next().unwrap().to_owned())
                    .or_default() += 1;
                let (json, used) = fixture.fill(r.request, state, false);
                let result = call(&client, r.rpc, caller, json).await;
                let got = classify(&result);
                let expect = expected(want[caller], state);
                match got {
                    Out::Allow => allowed += 1,
                    Out::Deny => denied += 1,
                    Out::Hidden => hidden += 1,
                    Out::Unauth => unauth += 1,
                }
                let cell = format!("{} × {} × {state:?}", r.rpc, CALLERS[caller].0);
                if let Err(s) = &result
                    && matches!(
                        s.code(),
                        Code::Internal | Code::Unknown | Code::Unimplemented
                    )
                {
                    failures.push(format!("{cell}: unexpected {:?} {}", s.code(), s.message()));
                    continue;
                }
                if got != expect {
                    let detail = match &result {
                        Ok(_) => "OK".to_owned(),
                        Err(s) => format!("{:?} {}", s.code(), s.message()),
                    };
                    failures.push(format!(
                        "{cell}: expected {expect:?}, got {got:?} ({detail})"
                    ));
                    continue;
                }
                // The same call about a missing object must answer the same.
                let probed = match want[caller] {
                    'D' | 'H' => true,
                    'b' | 'd' => state == Some(St::Brouillon),
                    _ => false,
                };
                if probed && !used.is_empty() {
                    probes += 1;
                    let (json, missing_used) = fixture.fill(r.request, state, true);
                    let other = call(&client, r.rpc, caller, json).await;
                    let (Err(a), Err(b)) = (&result, &other) else {
                        leaks.push(format!("{cell}: the missing object answered OK"));
                        continue;
                    };
                    let (a, b) = (normalized(a, &used), normalized(b, &missing_used));
                    if a != b {
                        leaks.push(format!("{cell}: existing: {a} / missing: {b}"));
                    }
                }
            }
        }
    }
    println!(
        "authorization matrix: {} RPCs, {} callers, {} states; {cells} cells: {allowed} allowed, \
         {denied} denied, {hidden} hidden, {unauth} unauthenticated; {probes} existence probes, \
         {} leaks, {} wrong decisions",
        ROWS.len(),
        CALLERS.len(),
        STATES.len(),
        leaks.len(),
        failures.len()
    );
    for (service, n) in &per_service {
        println!("  {service}: {n} cells");
    }
    for f in &failures {
        println!("WRONG {f}");
    }
    for l in &leaks {
        println!("LEAK {l}");
    }
    assert!(failures.is_empty(), "{} wrong decisions", failures.len());
    assert!(leaks.is_empty(), "{} existence leaks", leaks.len());
}
