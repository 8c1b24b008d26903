//! Instructeur tools: the annotations privées (typed fields an admin defines per procedure,
//! filled by the instructeurs of a dossier's groupe, never shown to promoteurs) and the avis
//! externes (an expert, invited by email, answers a question with text and an optional file
//! kept in an object store). Every avis change writes its event to the outbox in the
//! transaction that makes it.

use std::path::Path;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use mst_kit::ApiError;
use mst_kit::auth::{Principal, Role};
use mst_proto::events::{self as ev, EventMetadata};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
};

pub use self::annotation::{
    AnnotationDefinition, AnnotationKind, AnnotationPatch, AnnotationValue, validate_definitions,
};
use super::{AppError, Instruction, PRODUCER, actor, page_size};
use crate::domain::Status;
use crate::store::avis::{annotation_set, annotation_value, avis_row as avis, definitions};
use crate::store::{self, dossier};

/// Largest file an expert may attach to an answer.
pub const MAX_AVIS_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Largest chunk of an avis file upload.
pub const MAX_AVIS_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest chunk of a download.
pub const DOWNLOAD_CHUNK_BYTES: usize = 64 * 1024;
/// Longest question, in characters.
pub const MAX_QUESTION_CHARS: usize = 10_000;
/// Longest answer, in characters.
pub const MAX_ANSWER_CHARS: usize = 20_000;

/// Annotation fields and values: pure rules (no database, no transport).
pub mod annotation {
    use std::collections::BTreeSet;
    use std::str::FromStr;

    use chrono::NaiveDate;
    use rust_decimal::Decimal;
    use serde::{Deserialize, Serialize};

    /// Default cap of a TEXT value without `max_length`.
    pub const DEFAULT_TEXT_CHARS: u32 = 1_000;
    /// Cap of a TEXTAREA value, and of any `max_length`.
    pub const MAX_TEXTAREA_CHARS: u32 = 20_000;
    /// Longest label.
    pub const MAX_LABEL_CHARS: usize = 200;
    /// Longest description.
    pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
    /// Most fields per procedure.
    pub const MAX_DEFINITIONS: usize = 200;

    /// Type of an annotation field.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum AnnotationKind {
        /// One line of text.
        Text,
        /// Several lines.
        Textarea,
        /// Whole number.
        Integer,
        /// Decimal number.
        Decimal,
        /// Calendar date.
        Date,
        /// A box to tick.
        Checkbox,
        /// Oui / non.
        YesNo,
        /// One of `options`.
        DropDown,
    }

    impl AnnotationKind {
        /// French name, for messages.
        pub const fn label_fr(self) -> &'static str {
            match self {
                AnnotationKind::Text => "un texte d'une ligne",
                AnnotationKind::Textarea => "un texte",
                AnnotationKind::Integer => "un nombre entier",
                AnnotationKind::Decimal => "un nombre décimal",
                AnnotationKind::Date => "une date",
                AnnotationKind::Checkbox => "une case à cocher",
                AnnotationKind::YesNo => "oui ou non",
                AnnotationKind::DropDown => "une valeur de la liste",
            }
        }

        const fn numeric(self) -> bool {
            matches!(self, AnnotationKind::Integer | AnnotationKind::Decimal)
        }

        const fn textual(self) -> bool {
            matches!(self, AnnotationKind::Text | AnnotationKind::Textarea)
        }
    }

    /// One annotation field of a procedure.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AnnotationDefinition {
        /// Id, `^[a-z][a-z0-9_]{0,62}$`, unique in the procedure.
        pub id: String,
        /// Label.
        pub label: String,
        /// Help text.
        #[serde(default)]
        pub description: String,
        /// Type.
        pub kind: AnnotationKind,
        /// DROP_DOWN values.
        #[serde(default)]
        pub options: Vec<String>,
        /// TEXT/TEXTAREA: most characters.
        #[serde(default)]
        pub max_length: Option<u32>,
        /// INTEGER/DECIMAL: inclusive lower bound (decimal string).
        #[serde(default)]
        pub min: Option<String>,
        /// INTEGER/DECIMAL: inclusive upper bound (decimal string).
        #[serde(default)]
        pub max: Option<String>,
    }

    /// A typed annotation value.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "kind", content = "value", rename_all = "snake_case")]
    pub enum AnnotationValue {
        /// TEXT, TEXTAREA.
        Text(String),
        /// INTEGER.
        Integer(i64),
        /// DECIMAL, e.g. "1500.50".
        Decimal(String),
        /// DATE, "YYYY-MM-DD".
        Date(String),
        /// CHECKBOX.
        Checkbox(bool),
        /// YES_NO.
        YesNo(bool),
        /// DROP_DOWN.
        DropDown(String),
    }

    /// One change to a dossier's annotations.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum AnnotationPatch {
        /// Set the value of `annotation_id`.
        Set(String, AnnotationValue),
        /// Remove the value of `annotation_id`.
        Clear(String),
    }

    impl AnnotationPatch {
        /// The annotation it changes.
        pub fn annotation_id(&self) -> &str {
            match self {
                AnnotationPatch::Set(id, _) | AnnotationPatch::Clear(id) => id,
            }
        }
    }

    fn valid_id(id: &str) -> bool {
        let mut chars = id.chars();
        matches!(chars.next(), Some('a'..='z'))
            && id.len() <= 63
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
    }

    /// A plain decimal: optional minus, digits, optional fraction (no exponent, no spaces).
    fn parse_decimal(s: &str) -> Option<Decimal> {
        let body = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return None;
        }
        Decimal::from_str(s).ok()
    }

    fn parse_bound(kind: AnnotationKind, s: &str) -> Option<Decimal> {
        match kind {
            AnnotationKind::Integer => s.parse::<i64>().ok().map(Decimal::from),
            _ => parse_decimal(s),
        }
    }

    /// The problems of a procedure's new definitions, as (field path, French message).
    pub fn validate_definitions(defs: &[AnnotationDefinition]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if defs.len() > MAX_DEFINITIONS {
            out.push((
                "definitions".to_owned(),
                format!("Au plus {MAX_DEFINITIONS} annotations par démarche"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, d) in defs.iter().enumerate() {
            let at = |f: &str| format!("definitions[{i}].{f}");
            if !valid_id(&d.id) {
                out.push((
                    at("id"),
                    "Identifiant invalide : une lettre minuscule puis lettres, chiffres ou « _ » (63 au plus)".into(),
                ));
            } else if !seen.insert(d.id.as_str()) {
                out.push((at("id"), format!("Identifiant « {} » en double", d.id)));
            }
            if d.label.trim().is_empty() {
                out.push((at("label"), "Le libellé est obligatoire".into()));
            } else if d.label.chars().count() > MAX_LABEL_CHARS {
                out.push((
                    at("label"),
                    format!("Le libellé dépasse {MAX_LABEL_CHARS} caractères"),
                ));
            }
            if d.description.chars().count() > MAX_DESCRIPTION_CHARS {
                out.push((
                    at("description"),
                    format!("La description dépasse {MAX_DESCRIPTION_CHARS} caractères"),
                ));
            }
            if d.kind == AnnotationKind::DropDown {
                if d.options.is_empty() {
                    out.push((
                        at("options"),
                        "Une liste déroulante doit proposer au moins une valeur".into(),
                    ));
                }
                let mut values = BTreeSet::new();
                for (j, o) in d.options.iter().enumerate() {
                    if o.trim().is_empty() {
                        out.push((at(&format!("options[{j}]")), "Valeur vide".into()));
                    } else if !values.insert(o.as_str()) {
                        out.push((
                            at(&format!("options[{j}]")),
                            format!("Valeur « {o} » en double"),
                        ));
                    }
                }
            } else if !d.options.is_empty() {
                out.push((
                    at("options"),
                    "Seule une liste déroulante propose des valeurs".into(),
                ));
            }
            match d.max_length {
                Some(_) if !d.kind.textual() => out.push((
                    at("max_length"),
                    "Une longueur maximale ne s'applique qu'à un texte".into(),
                )),
                Some(n) if n == 0 || n > MAX_TEXTAREA_CHARS => out.push((
                    at("max_length"),
                    format!(
                        "La longueur maximale doit être comprise entre 1 et {MAX_TEXTAREA_CHARS}"
                    ),
                )),
                _ => {}
            }
            let mut bounds = [None, None];
            for (k, (name, bound)) in [("min", &d.min), ("max", &d.max)].into_iter().enumerate() {
                let Some(b) = bound else { continue };
                if !d.kind.numeric() {
                    out.push((at(name), "Une borne ne s'applique qu'à un nombre".into()));
                } else if let Some(v) = parse_bound(d.kind, b) {
                    bounds[k] = Some(v);
                } else {
                    out.push((at(name), format!("Borne invalide : « {b} »")));
                }
            }
            if let [Some(min), Some(max)] = bounds
                && min > max
            {
                out.push((
                    at("max"),
                    "La borne supérieure est inférieure à la borne inférieure".into(),
                ));
            }
        }
        out
    }

    impl AnnotationDefinition {
        /// Whether a stored value still fits this definition's type (a definition may have been
        /// replaced by one of another type under the same id).
        pub fn accepts(&self, value: &AnnotationValue) -> bool {
            matches!(
                (self.kind, value),
                (
                    AnnotationKind::Text | AnnotationKind::Textarea,
                    AnnotationValue::Text(_)
                ) | (AnnotationKind::Integer, AnnotationValue::Integer(_))
                    | (AnnotationKind::Decimal, AnnotationValue::Decimal(_))
                    | (AnnotationKind::Date, AnnotationValue::Date(_))
                    | (AnnotationKind::Checkbox, AnnotationValue::Checkbox(_))
                    | (AnnotationKind::YesNo, AnnotationValue::YesNo(_))
                    | (AnnotationKind::DropDown, AnnotationValue::DropDown(_))
            )
        }

        fn within_bounds(&self, v: Decimal) -> Result<(), String> {
            let min = self.min.as_deref().and_then(|b| parse_bound(self.kind, b));
            let max = self.max.as_deref().and_then(|b| parse_bound(self.kind, b));
            match (min, max) {
                (Some(lo), _) if v < lo => Err(format!("La valeur doit être au moins {lo}")),
                (_, Some(hi)) if v > hi => Err(format!("La valeur doit être au plus {hi}")),
                _ => Ok(()),
            }
        }

        /// `value` checked against this definition, or why it is refused (French).
        pub fn check(&self, value: AnnotationValue) -> Result<AnnotationValue, String> {
            if !self.accepts(&value) {
                return Err(format!(
                    "Valeur attendue pour « {} » : {}",
                    self.label,
                    self.kind.label_fr()
                ));
            }
            match &value {
                AnnotationValue::Text(t) => {
                    if t.trim().is_empty() {
                        return Err("La valeur est vide (effacez l'annotation plutôt)".into());
                    }
                    if self.kind == AnnotationKind::Text && t.contains(['\n', '\r']) {
                        return Err("Une seule ligne est attendue".into());
                    }
                    let cap = self.max_length.unwrap_or(match self.kind {
                        AnnotationKind::Text => DEFAULT_TEXT_CHARS,
                        _ => MAX_TEXTAREA_CHARS,
                    });
                    if t.chars().count() > cap as usize {
                        return Err(format!("Au plus {cap} caractères"));
                    }
                }
                AnnotationValue::Integer(n) => self.within_bounds(Decimal::from(*n))?,
                AnnotationValue::Decimal(s) => {
                    let v = parse_decimal(s)
                        .ok_or_else(|| format!("« {s} » n'est pas un nombre décimal"))?;
                    self.within_bounds(v)?;
                }
                AnnotationValue::Date(s) => {
                    if s.len() != 10 || NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err() {
                        return Err(format!("« {s} » n'est pas une date (AAAA-MM-JJ)"));
                    }
                }
                AnnotationValue::DropDown(v) => {
                    if !self.options.iter().any(|o| o == v) {
                        return Err(format!("« {v} » n'est pas une des valeurs proposées"));
                    }
                }
                AnnotationValue::Checkbox(_) | AnnotationValue::YesNo(_) => {}
            }
            Ok(value)
        }
    }
}

/// Where avis files are kept: an object store (a local directory).
#[derive(Clone)]
pub struct AvisFiles {
    store: mst_kit::files::FileStore,
}

impl std::fmt::Debug for AvisFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AvisFiles")
    }
}

impl AvisFiles {
    /// Files under `dir` (created if missing).
    pub fn local(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: mst_kit::files::FileStore::local(dir, MAX_AVIS_FILE_BYTES)?,
        })
    }

    /// Files in the given store.
    pub fn new(store: mst_kit::files::FileStore) -> Self {
        Self { store }
    }

    async fn delete(&self, key: &str) {
        self.store.delete(key).await;
    }
}

/// The state of an avis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvisState {
    /// Asked, not answered.
    Pending,
    /// Answered.
    Given,
    /// Revoked before an answer.
    Revoked,
}

impl AvisState {
    /// Stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AvisState::Pending => "pending",
            AvisState::Given => "given",
            AvisState::Revoked => "revoked",
        }
    }

    /// The state of a stored row.
    pub fn of(row: &avis::Model) -> Result<Self, AppError> {
        match row.state.as_str() {
            "pending" => Ok(AvisState::Pending),
            "given" => Ok(AvisState::Given),
            "revoked" => Ok(AvisState::Revoked),
            other => Err(AppError::Unexpected(anyhow::anyhow!(
                "unknown stored avis state {other:?}"
            ))),
        }
    }
}

/// The definitions of a procedure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionsView {
    /// In display order.
    pub definitions: Vec<AnnotationDefinition>,
    /// Version (0 when never defined).
    pub version: i64,
}

/// One filled annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationEntry {
    /// Definition id.
    pub annotation_id: String,
    /// Value.
    pub value: AnnotationValue,
    /// Who last set it.
    pub updated_by_email: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// The annotations of a dossier, with the definitions to render them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationsView {
    /// Dossier.
    pub number: i64,
    /// Filled annotations of current definitions, in definition order.
    pub annotations: Vec<AnnotationEntry>,
    /// Version of the set (0 when never changed).
    pub version: i64,
    /// The procedure's definitions.
    pub definitions: Vec<AnnotationDefinition>,
}

/// An avis as the caller may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AvisView {
    /// The row, with the answer and file cleared when redacted.
    pub row: avis::Model,
    /// The dossier's procedure.
    pub procedure: ev::ProcedureRef,
    /// The caller may not see the answer of this confidential avis.
    pub redacted: bool,
}

/// An avis request.
#[derive(Debug, Clone)]
pub struct NewAvis {
    /// Dossier.
    pub number: i64,
    /// Expert.
    pub expert_email: String,
    /// Question.
    pub question: String,
    /// Answer for the requester only.
    pub confidential: bool,
    /// Client idempotency key (a UUID).
    pub request_id: String,
}

/// The file announced with an answer.
#[derive(Debug, Clone)]
pub struct AvisFileInput {
    /// Name.
    pub file_name: String,
    /// Declared media type.
    pub content_type: String,
    /// Declared size.
    pub size_bytes: i64,
}

/// An expert's answer.
#[derive(Debug, Clone)]
pub struct AvisAnswer {
    /// Avis.
    pub avis_id: String,
    /// Version last read.
    pub expected_version: i64,
    /// Answer text.
    pub answer: String,
    /// Announced file.
    pub file: Option<AvisFileInput>,
}

/// A page of the expert's inbox.
#[derive(Debug, Clone)]
pub struct AvisPage {
    /// Newest first.
    pub avis: Vec<AvisView>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

/// An avis file being downloaded.
pub struct AvisDownload {
    /// Name.
    pub file_name: String,
    /// Media type.
    pub content_type: String,
    /// Size.
    pub size_bytes: i64,
    /// Chunks of at most [`DOWNLOAD_CHUNK_BYTES`].
    pub chunks: BoxStream<'static, Result<Vec<u8>, AppError>>,
}

impl std::fmt::Debug for AvisDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvisDownload")
            .field("content_type", &self.content_type)
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

/// Why an answer was refused: an [`AppError`], or a file over the limit.
#[derive(Debug, thiserror::Error)]
pub enum GiveAvisError {
    /// Any use-case error.
    #[error(transparent)]
    App(#[from] AppError),
    /// The file exceeds this many bytes; nothing was stored.
    #[error("avis file over {0} bytes")]
    TooLarge(u64),
}

impl From<DbErr> for GiveAvisError {
    fn from(e: DbErr) -> Self {
        GiveAvisError::App(e.into())
    }
}

impl From<GiveAvisError> for tonic::Status {
    fn from(e: GiveAvisError) -> Self {
        match e {
            GiveAvisError::App(e) => e.into(),
            GiveAvisError::TooLarge(limit_bytes) => ApiError::TooLarge {
                what: "Le fichier joint à l'avis".into(),
                limit_bytes,
            }
            .into(),
        }
    }
}

fn bad(field: &str, message: impl Into<String>) -> AppError {
    AppError::BadRequest(vec![(field.to_owned(), message.into())])
}

fn not_found_avis(id: &str) -> AppError {
    AppError::NotFound("avis", id.to_owned())
}

fn avis_closed(state: AvisState) -> AppError {
    AppError::WrongState {
        reason: "AVIS_CLOSED",
        current: state.as_str().to_owned(),
        message: match state {
            AvisState::Given => "Cet avis a déjà été donné".into(),
            _ => "Cette demande d'avis a été révoquée".into(),
        },
    }
}

fn stale_avis(row: &avis::Model, expected: i64) -> AppError {
    AppError::Stale {
        resource: "avis",
        id: row.id.clone(),
        expected,
        current: row.version,
    }
}

fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(email)
}

/// The last path segment, without control characters.
fn sanitize_file_name(raw: &str) -> String {
    raw.rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Media types accepted for avis files.
fn accepted_type(content_type: &str) -> bool {
    matches!(
        content_type,
        "application/pdf" | "image/png" | "image/jpeg" | "text/plain" | "text/csv"
    ) || content_type.starts_with("application/vnd.openxmlformats-officedocument.")
        || content_type.starts_with("application/vnd.oasis.opendocument.")
}

fn validate_file(file: &AvisFileInput) -> Result<(), GiveAvisError> {
    let mut violations = Vec::new();
    if sanitize_file_name(&file.file_name).is_empty() || file.file_name.chars().count() > 255 {
        violations.push((
            "metadata.file.file_name".into(),
            "Nom de fichier invalide".into(),
        ));
    }
    if !accepted_type(&file.content_type) {
        violations.push((
            "metadata.file.content_type".into(),
            "Type de fichier non accepté (PDF, PNG, JPEG, texte, bureautique)".into(),
        ));
    }
    if file.size_bytes <= 0 {
        violations.push(("metadata.file.size_bytes".into(), "Taille invalide".into()));
    }
    if !violations.is_empty() {
        return Err(AppError::BadRequest(violations).into());
    }
    if u64::try_from(file.size_bytes).unwrap_or(u64::MAX) > MAX_AVIS_FILE_BYTES {
        return Err(GiveAvisError::TooLarge(MAX_AVIS_FILE_BYTES));
    }
    Ok(())
}

/// Who may see what of a dossier's avis.
enum Reader {
    /// A declared instructeur of the dossier's groupe.
    Instructeur(String),
    /// An admin (reads everything, acts on nothing).
    Admin(String),
}

impl Reader {
    fn email(&self) -> &str {
        match self {
            Reader::Instructeur(e) | Reader::Admin(e) => e,
        }
    }
}

impl Instruction {
    /// The dossier if `who` is an instructeur of it (or, with `admin_reads`, an admin). A caller
    /// without the role, or not on the roster, is refused; a dossier outside his groupes, a
    /// brouillon or a deleted one is not found.
    async fn dossier_for_reader(
        &self,
        who: &Principal,
        number: i64,
        admin_reads: bool,
    ) -> Result<(dossier::Model, Reader), AppError> {
        let not_found = || AppError::NotFound("dossier", number.to_string());
        let email = who.email.trim().to_lowercase();
        let reader = if who.has(Role::Instructeur) {
            let groupes = self.groupes_of(&email).await?;
            if groupes.is_empty() {
                return Err(AppError::Forbidden(format!(
                    "{email} n'est pas un instructeur déclaré"
                )));
            }
            let row = store::dossier(self.db(), number)
                .await?
                .ok_or_else(not_found)?;
            if !row.groupe_id.as_ref().is_some_and(|g| groupes.contains(g)) {
                return Err(not_found());
            }
            (row, Reader::Instructeur(email))
        } else if admin_reads && who.has(Role::Admin) {
            let row = store::dossier(self.db(), number)
                .await?
                .ok_or_else(not_found)?;
            (row, Reader::Admin(email))
        } else {
            return Err(AppError::Forbidden(format!(
                "{} n'est pas instructeur",
                who.email
            )));
        };
        if reader.0.status == Status::Brouillon.as_str() || reader.0.deleted {
            return Err(not_found());
        }
        Ok(reader)
    }

    async fn procedure_of<C: ConnectionTrait>(
        &self,
        db: &C,
        id: &str,
    ) -> Result<ev::ProcedureRef, AppError> {
        Ok(match store::procedure(db, id).await? {
            Some(p) => ev::ProcedureRef {
                kind: if p.kind == "action" {
                    ev::DossierKind::Action
                } else {
                    ev::DossierKind::Projet
                } as i32,
                id: p.id,
                title: p.title,
            },
            None => ev::ProcedureRef {
                id: id.to_owned(),
                ..Default::default()
            },
        })
    }

    async fn definitions_on<C: ConnectionTrait>(
        &self,
        db: &C,
        procedure_id: &str,
    ) -> Result<DefinitionsView, AppError> {
        Ok(match store::avis::definitions_of(db, procedure_id).await? {
            Some(row) => DefinitionsView {
                definitions: serde_json::from_str(&row.definitions)?,
                version: row.version,
            },
            None => DefinitionsView {
                definitions: Vec::new(),
                version: 0,
            },
        })
    }

    /// The annotation fields of a procedure. Role: declared instructeur, admin.
    pub async fn annotation_definitions(
        &self,
        who: &Principal,
        procedure_id: &str,
    ) -> Result<DefinitionsView, AppError> {
        if !who.has(Role::Admin) {
            if !who.has(Role::Instructeur) {
                return Err(AppError::Forbidden(format!(
                    "{} n'est ni instructeur ni administrateur",
                    who.email
                )));
            }
            if !self.is_declared(&who.email).await? {
                return Err(AppError::Forbidden(format!(
                    "{} n'est pas un instructeur déclaré",
                    who.email
                )));
            }
        }
        if store::procedure(self.db(), procedure_id).await?.is_none() {
            return Err(AppError::NotFound("procedure", procedure_id.to_owned()));
        }
        self.definitions_on(self.db(), procedure_id).await
    }

    /// Replaces the annotation fields of a procedure at `expected_version` (0 when never
    /// defined). Values of removed fields are kept, no longer shown. Role: admin.
    pub async fn update_annotation_definitions(
        &self,
        who: &Principal,
        procedure_id: &str,
        expected_version: i64,
        new: Vec<AnnotationDefinition>,
    ) -> Result<DefinitionsView, AppError> {
        super::require(who, Role::Admin)?;
        let violations = validate_definitions(&new);
        if !violations.is_empty() {
            return Err(AppError::BadRequest(violations));
        }
        let json = serde_json::to_string(&new)?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        if store::procedure(&txn, procedure_id).await?.is_none() {
            return Err(AppError::NotFound("procedure", procedure_id.to_owned()));
        }
        let current = self.definitions_on(&txn, procedure_id).await?.version;
        let stale = || AppError::Stale {
            resource: "annotation_definitions",
            id: procedure_id.to_owned(),
            expected: expected_version,
            current,
        };
        if current != expected_version {
            return Err(stale());
        }
        let now = Utc::now();
        let version = expected_version + 1;
        if expected_version == 0 {
            let inserted = definitions::Entity::insert(definitions::ActiveModel {
                procedure_id: Set(procedure_id.to_owned()),
                version: Set(version),
                definitions: Set(json),
                updated_by_email: Set(who.email.to_lowercase()),
                updated_at: Set(now),
            })
            .on_conflict_do_nothing()
            .exec_without_returning(&txn)
            .await?;
            if !matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
                return Err(stale());
            }
        } else {
            // Conditional on the version read, so that a concurrent update loses.
            let updated = definitions::Entity::update_many()
                .col_expr(definitions::Column::Version, version.into())
                .col_expr(definitions::Column::Definitions, json.into())
                .col_expr(
                    definitions::Column::UpdatedByEmail,
                    who.email.to_lowercase().into(),
                )
                .col_expr(definitions::Column::UpdatedAt, now.into())
                .filter(definitions::Column::ProcedureId.eq(procedure_id))
                .filter(definitions::Column::Version.eq(expected_version))
                .exec(&txn)
                .await?;
            if updated.rows_affected == 0 {
                return Err(stale());
            }
        }
        txn.commit().await?;
        Ok(DefinitionsView {
            definitions: new,
            version,
        })
    }

    async fn annotations_on<C: ConnectionTrait>(
        &self,
        db: &C,
        row: &dossier::Model,
    ) -> Result<AnnotationsView, AppError> {
        let definitions = self
            .definitions_on(db, &row.procedure_id)
            .await?
            .definitions;
        let version = store::avis::annotation_set_of(db, row.number)
            .await?
            .map_or(0, |s| s.version);
        let mut values = std::collections::HashMap::new();
        for v in store::avis::annotation_values_of(db, row.number).await? {
            let value: AnnotationValue = serde_json::from_str(&v.value)?;
            values.insert(v.annotation_id.clone(), (value, v));
        }
        let annotations = definitions
            .iter()
            .filter_map(|d| {
                let (value, v) = values.remove(&d.id)?;
                d.accepts(&value).then(|| AnnotationEntry {
                    annotation_id: d.id.clone(),
                    value,
                    updated_by_email: v.updated_by_email,
                    updated_at: v.updated_at,
                })
            })
            .collect();
        Ok(AnnotationsView {
            number: row.number,
            annotations,
            version,
            definitions,
        })
    }

    /// The annotations of a dossier. Role: instructeur of the dossier, admin.
    pub async fn annotations(
        &self,
        who: &Principal,
        number: i64,
    ) -> Result<AnnotationsView, AppError> {
        let (row, _) = self.dossier_for_reader(who, number, true).await?;
        self.annotations_on(self.db(), &row).await
    }

    /// Applies `patches` (all or none) at `expected_version` of the dossier's annotations,
    /// whatever its status. Role: instructeur of the dossier.
    pub async fn update_annotations(
        &self,
        who: &Principal,
        number: i64,
        expected_version: i64,
        patches: Vec<AnnotationPatch>,
    ) -> Result<AnnotationsView, AppError> {
        let (row, reader) = self.dossier_for_reader(who, number, false).await?;
        let definitions = self.definitions_on(self.db(), &row.procedure_id).await?;
        let mut violations = Vec::new();
        let mut checked = Vec::with_capacity(patches.len());
        for (i, patch) in patches.into_iter().enumerate() {
            let field = format!("patches[{i}]");
            let Some(def) = definitions
                .definitions
                .iter()
                .find(|d| d.id == patch.annotation_id())
            else {
                violations.push((
                    field,
                    format!("Annotation inconnue : « {} »", patch.annotation_id()),
                ));
                continue;
            };
            match patch {
                AnnotationPatch::Set(id, value) => match def.check(value) {
                    Ok(value) => checked.push((id, Some(value))),
                    Err(message) => violations.push((field, message)),
                },
                AnnotationPatch::Clear(id) => checked.push((id, None)),
            }
        }
        if !violations.is_empty() {
            return Err(AppError::BadRequest(violations));
        }
        let now = Utc::now();
        let txn = mst_kit::db::begin_write(self.db()).await?;
        // The dossier row lock serializes concurrent updates of its annotations.
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| AppError::NotFound("dossier", number.to_string()))?;
        let set = store::avis::annotation_set_of(&txn, number).await?;
        let current = set.as_ref().map_or(0, |s| s.version);
        if current != expected_version {
            return Err(AppError::Stale {
                resource: "annotations",
                id: number.to_string(),
                expected: expected_version,
                current,
            });
        }
        for (id, value) in checked {
            store::avis::delete_annotation_value(&txn, number, &id).await?;
            if let Some(value) = value {
                annotation_value::ActiveModel {
                    dossier_number: Set(number),
                    annotation_id: Set(id),
                    value: Set(serde_json::to_string(&value)?),
                    updated_by_email: Set(reader.email().to_owned()),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?;
            }
        }
        let next = annotation_set::ActiveModel {
            dossier_number: Set(number),
            version: Set(current + 1),
            updated_at: Set(now),
        };
        if set.is_some() {
            next.update(&txn).await?;
        } else {
            next.insert(&txn).await?;
        }
        let view = self.annotations_on(&txn, &row).await?;
        txn.commit().await?;
        Ok(view)
    }

    fn view_for(&self, row: avis::Model, procedure: ev::ProcedureRef, me: &str) -> AvisView {
        let redacted = row.confidential && row.requested_by_email != me;
        let row = if redacted { redact(row) } else { row };
        AvisView {
            row,
            procedure,
            redacted,
        }
    }

    /// Asks an expert for an avis on a dossier en construction or en instruction (not
    /// archived); publishes `AvisRequested`. Idempotent per `request_id`. Role: instructeur of
    /// the dossier.
    pub async fn request_avis(&self, who: &Principal, new: NewAvis) -> Result<AvisView, AppError> {
        let mut violations = Vec::new();
        let expert = normalize_email(&new.expert_email);
        if expert.is_none() {
            violations.push((
                "expert_email".into(),
                "Adresse électronique invalide".into(),
            ));
        }
        let question = new.question.trim().to_owned();
        if question.is_empty() {
            violations.push(("question".into(), "La question est obligatoire".into()));
        } else if question.chars().count() > MAX_QUESTION_CHARS {
            violations.push((
                "question".into(),
                format!("La question dépasse {MAX_QUESTION_CHARS} caractères"),
            ));
        }
        if uuid::Uuid::parse_str(&new.request_id).is_err() {
            violations.push((
                "request_id".into(),
                "Identifiant de requête invalide (UUID attendu)".into(),
            ));
        }
        let (row, reader) = self.dossier_for_reader(who, new.number, false).await?;
        if !violations.is_empty() {
            return Err(AppError::BadRequest(violations));
        }
        let expert = expert.unwrap_or_default();
        let me = reader.email().to_owned();
        let procedure = self.procedure_of(self.db(), &row.procedure_id).await?;
        if let Some(done) = store::avis::avis_by_request(self.db(), &me, &new.request_id).await? {
            if done.dossier_number != new.number {
                return Err(bad("request_id", "Identifiant de requête déjà utilisé"));
            }
            return Ok(self.view_for(done, procedure, &me));
        }
        let now = Utc::now();
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = store::dossier_for_update(&txn, row.number)
            .await?
            .ok_or_else(|| AppError::NotFound("dossier", new.number.to_string()))?;
        let status = row.status.parse::<Status>().map_err(|_| {
            AppError::Unexpected(anyhow::anyhow!("unknown stored status {:?}", row.status))
        })?;
        if row.archived {
            return Err(AppError::WrongState {
                reason: "ARCHIVED",
                current: status.as_str().to_owned(),
                message: format!("Le dossier n° {} est archivé", row.number),
            });
        }
        if !matches!(status, Status::EnConstruction | Status::EnInstruction) {
            return Err(AppError::WrongState {
                reason: "DOSSIER_DECIDED",
                current: status.as_str().to_owned(),
                message: format!("Le dossier n° {} est {}", row.number, status.label_fr()),
            });
        }
        let saved = avis::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            dossier_number: Set(row.number),
            procedure_id: Set(row.procedure_id.clone()),
            expert_email: Set(expert.clone()),
            question: Set(question),
            confidential: Set(new.confidential),
            state: Set(AvisState::Pending.as_str().to_owned()),
            requested_by_email: Set(me.clone()),
            request_id: Set(new.request_id.clone()),
            requested_at: Set(now),
            answer: Set(None),
            answered_at: Set(None),
            revoked_at: Set(None),
            file_key: Set(None),
            file_name: Set(None),
            file_content_type: Set(None),
            file_size_bytes: Set(None),
            file_sha256: Set(None),
            version: Set(1),
        }
        .insert(&txn)
        .await?;
        mst_bus::enqueue_event(
            &txn,
            &ev::AvisRequested {
                metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Instructeur))),
                avis_id: saved.id.clone(),
                number: saved.dossier_number,
                procedure: Some(procedure.clone()),
                expert_email: expert,
                confidential: saved.confidential,
                avis_version: saved.version,
            },
        )
        .await?;
        txn.commit().await?;
        self.relay().wake();
        Ok(self.view_for(saved, procedure, &me))
    }

    /// Revokes a pending avis; publishes `AvisRevoked`; the expert loses access. Role: the
    /// instructeur who requested it.
    pub async fn revoke_avis(
        &self,
        who: &Principal,
        avis_id: &str,
        expected_version: i64,
    ) -> Result<AvisView, AppError> {
        self.gate(who, false).await?;
        let found = store::avis::avis_by_id(self.db(), avis_id)
            .await?
            .ok_or_else(|| not_found_avis(avis_id))?;
        let (_, reader) = self
            .dossier_for_reader(who, found.dossier_number, false)
            .await
            .map_err(|e| match e {
                AppError::NotFound(..) => not_found_avis(avis_id),
                e => e,
            })?;
        let me = reader.email().to_owned();
        if found.requested_by_email != me {
            return Err(AppError::Forbidden(
                "Seul l'instructeur qui a demandé l'avis peut le révoquer".into(),
            ));
        }
        let now = Utc::now();
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = store::avis::avis_for_update(&txn, avis_id)
            .await?
            .ok_or_else(|| not_found_avis(avis_id))?;
        let state = AvisState::of(&row)?;
        if state != AvisState::Pending {
            return Err(avis_closed(state));
        }
        if row.version != expected_version {
            return Err(stale_avis(&row, expected_version));
        }
        let mut active: avis::ActiveModel = row.clone().into();
        active.state = Set(AvisState::Revoked.as_str().to_owned());
        active.revoked_at = Set(Some(now));
        active.version = Set(row.version + 1);
        let saved = active.update(&txn).await?;
        mst_bus::enqueue_event(
            &txn,
            &ev::AvisRevoked {
                metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Instructeur))),
                avis_id: saved.id.clone(),
                number: saved.dossier_number,
                expert_email: saved.expert_email.clone(),
                avis_version: saved.version,
            },
        )
        .await?;
        txn.commit().await?;
        self.relay().wake();
        let procedure = self.procedure_of(self.db(), &saved.procedure_id).await?;
        Ok(self.view_for(saved, procedure, &me))
    }

    /// The avis of a dossier, oldest first; confidential answers are redacted for everyone but
    /// their requester. Role: instructeur of the dossier (admins read, redacted likewise).
    pub async fn list_avis(&self, who: &Principal, number: i64) -> Result<Vec<AvisView>, AppError> {
        let (row, reader) = self.dossier_for_reader(who, number, true).await?;
        let procedure = self.procedure_of(self.db(), &row.procedure_id).await?;
        Ok(store::avis::avis_of_dossier(self.db(), number)
            .await?
            .into_iter()
            .map(|a| self.view_for(a, procedure.clone(), reader.email()))
            .collect())
    }

    /// The avis asked of the caller, newest first, in `states` (all when empty). A revoked
    /// request keeps its place but no longer shows its question. Any authenticated caller.
    pub async fn my_avis_requests(
        &self,
        who: &Principal,
        states: &[AvisState],
        requested_page_size: i32,
        page_token: &str,
    ) -> Result<AvisPage, AppError> {
        let before = if page_token.is_empty() {
            None
        } else {
            uuid::Uuid::parse_str(page_token)
                .map_err(|_| bad("page_token", "Jeton de page invalide"))?;
            Some(page_token)
        };
        let limit = page_size(requested_page_size, 50, 500);
        let me = who.email.trim().to_lowercase();
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let mut rows =
            store::avis::avis_of_expert(self.db(), &me, &states, before, limit + 1).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = if more {
            rows.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut avis = Vec::with_capacity(rows.len());
        for mut row in rows {
            if row.state == AvisState::Revoked.as_str() {
                row.question.clear();
            }
            let procedure = self.procedure_of(self.db(), &row.procedure_id).await?;
            avis.push(AvisView {
                row,
                procedure,
                redacted: false,
            });
        }
        Ok(AvisPage {
            avis,
            next_page_token,
        })
    }

    /// The expert answers a pending avis at `expected_version`, with the announced file's bytes
    /// in `chunks`; publishes `AvisGiven`. The file is streamed to `files` with its size checked
    /// as it comes; on any refusal nothing is kept. Role: the expert the avis was asked to.
    pub async fn give_avis<S>(
        &self,
        who: &Principal,
        files: &AvisFiles,
        answer: AvisAnswer,
        mut chunks: S,
    ) -> Result<AvisView, GiveAvisError>
    where
        S: Stream<Item = Result<Vec<u8>, AppError>> + Unpin + Send,
    {
        let me = who.email.trim().to_lowercase();
        let avis_id = answer.avis_id.as_str();
        let found = store::avis::avis_by_id(self.db(), avis_id)
            .await?
            .filter(|a| a.expert_email == me)
            .ok_or_else(|| not_found_avis(avis_id))?;
        let state = AvisState::of(&found)?;
        if state != AvisState::Pending {
            return Err(avis_closed(state).into());
        }
        if found.version != answer.expected_version {
            return Err(stale_avis(&found, answer.expected_version).into());
        }
        let text = answer.answer.trim().to_owned();
        if text.is_empty() {
            return Err(bad("metadata.answer", "La réponse est obligatoire").into());
        }
        if text.chars().count() > MAX_ANSWER_CHARS {
            return Err(bad(
                "metadata.answer",
                format!("La réponse dépasse {MAX_ANSWER_CHARS} caractères"),
            )
            .into());
        }
        let stored = match &answer.file {
            None => {
                if chunks.next().await.transpose()?.is_some() {
                    return Err(bad(
                        "chunk",
                        "Aucun fichier n'a été annoncé dans les métadonnées",
                    )
                    .into());
                }
                None
            }
            Some(file) => {
                validate_file(file)?;
                let key = format!("avis/{}/{}", found.id, uuid::Uuid::now_v7());
                let (size, sha256) = store_file(files, &key, file, &mut chunks).await?;
                Some((key, size, sha256))
            }
        };
        let committed = self
            .commit_answer(
                who,
                &found.id,
                answer.expected_version,
                text,
                &answer.file,
                &stored,
            )
            .await;
        if committed.is_err()
            && let Some((key, _, _)) = &stored
        {
            files.delete(key).await;
        }
        committed
    }

    async fn commit_answer(
        &self,
        who: &Principal,
        avis_id: &str,
        expected_version: i64,
        text: String,
        file: &Option<AvisFileInput>,
        stored: &Option<(String, i64, String)>,
    ) -> Result<AvisView, GiveAvisError> {
        let me = who.email.trim().to_lowercase();
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = store::avis::avis_for_update(&txn, avis_id)
            .await?
            .filter(|a| a.expert_email == me)
            .ok_or_else(|| not_found_avis(avis_id))?;
        let state = AvisState::of(&row)?;
        if state != AvisState::Pending {
            return Err(avis_closed(state).into());
        }
        if row.version != expected_version {
            return Err(stale_avis(&row, expected_version).into());
        }
        let mut active: avis::ActiveModel = row.clone().into();
        active.state = Set(AvisState::Given.as_str().to_owned());
        active.answer = Set(Some(text));
        active.answered_at = Set(Some(Utc::now()));
        active.version = Set(row.version + 1);
        if let (Some(file), Some((key, size, sha256))) = (file, stored) {
            active.file_key = Set(Some(key.clone()));
            active.file_name = Set(Some(sanitize_file_name(&file.file_name)));
            active.file_content_type = Set(Some(file.content_type.clone()));
            active.file_size_bytes = Set(Some(*size));
            active.file_sha256 = Set(Some(sha256.clone()));
        }
        let saved = active.update(&txn).await?;
        let procedure = self.procedure_of(&txn, &saved.procedure_id).await?;
        mst_bus::enqueue_event(
            &txn,
            &ev::AvisGiven {
                metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Expert))),
                avis_id: saved.id.clone(),
                number: saved.dossier_number,
                procedure: Some(procedure.clone()),
                requested_by_email: saved.requested_by_email.clone(),
                confidential: saved.confidential,
                has_attachment: saved.file_key.is_some(),
                avis_version: saved.version,
            },
        )
        .await?;
        txn.commit().await?;
        self.relay().wake();
        Ok(AvisView {
            row: saved,
            procedure,
            redacted: false,
        })
    }

    /// Whether `email` is the expert of a pending or given avis on dossier `number`: he may read
    /// the dossier and its thread (for `CheckDossierAccess`); a revocation ends it.
    pub async fn is_expert_of(&self, number: i64, email: &str) -> Result<bool, AppError> {
        let email = email.trim().to_lowercase();
        Ok(store::avis::avis_of_dossier(self.db(), number)
            .await?
            .iter()
            .any(|a| a.expert_email == email && a.state != AvisState::Revoked.as_str()))
    }

    /// The file of an avis answer. Role: the expert, the instructeurs of the dossier allowed to
    /// see the answer (admins for a shared avis). Anything else is not found.
    pub async fn download_avis_file(
        &self,
        who: &Principal,
        files: &AvisFiles,
        avis_id: &str,
    ) -> Result<AvisDownload, AppError> {
        let not_found = || AppError::NotFound("avis file", avis_id.to_owned());
        let row = store::avis::avis_by_id(self.db(), avis_id)
            .await?
            .ok_or_else(not_found)?;
        let me = who.email.trim().to_lowercase();
        let allowed = if row.expert_email == me {
            true
        } else {
            match self.dossier_for_reader(who, row.dossier_number, true).await {
                Ok((_, reader)) => !row.confidential || row.requested_by_email == reader.email(),
                Err(AppError::NotFound(..) | AppError::Forbidden(_)) => false,
                Err(e) => return Err(e),
            }
        };
        if !allowed || row.state != AvisState::Given.as_str() {
            return Err(not_found());
        }
        let (Some(key), Some(file_name), Some(content_type), Some(size_bytes)) = (
            row.file_key,
            row.file_name,
            row.file_content_type,
            row.file_size_bytes,
        ) else {
            return Err(not_found());
        };
        let stream = files
            .store
            .get_stream(key.as_str())
            .await
            .map_err(|e| AppError::Unexpected(e.into()))?;
        let chunks = stream
            .flat_map(|item| {
                let pieces: Vec<Result<Vec<u8>, AppError>> = match item {
                    Ok(bytes) => bytes
                        .chunks(DOWNLOAD_CHUNK_BYTES)
                        .map(|c| Ok(c.to_vec()))
                        .collect(),
                    Err(e) => vec![Err(AppError::Unexpected(e.into()))],
                };
                futures::stream::iter(pieces)
            })
            .boxed();
        Ok(AvisDownload {
            file_name,
            content_type,
            size_bytes,
            chunks,
        })
    }
}

/// The row without its answer and file.
fn redact(mut row: avis::Model) -> avis::Model {
    row.answer = None;
    row.file_key = None;
    row.file_name = None;
    row.file_content_type = None;
    row.file_size_bytes = None;
    row.file_sha256 = None;
    row
}

/// Streams `chunks` to `key`: refused past [`MAX_AVIS_FILE_BYTES`] or the declared size as soon
/// as it is crossed, or when the size or the first bytes do not match the metadata; the
/// partial object is then removed. Returns the size and the hex SHA-256.
async fn store_file<S>(
    files: &AvisFiles,
    key: &str,
    file: &AvisFileInput,
    chunks: &mut S,
) -> Result<(i64, String), GiveAvisError>
where
    S: Stream<Item = Result<Vec<u8>, AppError>> + Unpin + Send,
{
    use mst_kit::files::FileError;
    let declared = u64::try_from(file.size_bytes).unwrap_or(0);
    let bytes = chunks.map(|c| match c {
        Ok(chunk) if chunk.len() > MAX_AVIS_CHUNK_BYTES => {
            Err("Un fragment dépasse 1 Mio".to_owned())
        }
        Ok(chunk) => Ok(bytes::Bytes::from(chunk)),
        Err(e) => Err(e.to_string()),
    });
    let stored = files
        .store
        .put_stream(
            key,
            &file.content_type,
            declared,
            MAX_AVIS_FILE_BYTES,
            bytes,
        )
        .await
        .map_err(|e| -> GiveAvisError {
            match e {
                FileError::TooLarge(limit) => GiveAvisError::TooLarge(limit),
                FileError::SizeMismatch { declared, received } => bad(
                    "metadata.file.size_bytes",
                    format!("Taille annoncée {declared} octets, reçue {received}"),
                )
                .into(),
                FileError::TypeMismatch { .. } => bad(
                    "metadata.file.content_type",
                    "Le contenu du fichier ne correspond pas au type annoncé",
                )
                .into(),
                FileError::Stream(msg) => bad("chunk", msg).into(),
                FileError::Store(e) => AppError::Unexpected(e.into()).into(),
            }
        })?;
    Ok((
        i64::try_from(stored.size).unwrap_or(i64::MAX),
        stored.sha256,
    ))
}
