//! Form definitions: the fields of a revision, their types, constraints, visibility conditions and
//! purposes, mirroring `mst.forms.v1.FieldDefinition`. [`FormDefinition::new`] is the only way to
//! build a [`FormDefinition`] (deserialising calls it too): it checks the whole form and reports
//! every problem at once, so an admin can fix a draft revision in one go.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::NaiveDate;
use regex::{Regex, RegexBuilder};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::condition::{Condition, check_comparison};
use super::ids::FieldId;

/// Type of a field (`mst.forms.v1.FieldType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// One line of text.
    Text,
    /// Several lines of text.
    Textarea,
    /// Whole number.
    Integer,
    /// Decimal number (amounts).
    Decimal,
    /// Calendar date.
    Date,
    /// Date and time.
    Datetime,
    /// A box to tick.
    Checkbox,
    /// Oui / non.
    YesNo,
    /// One value from a list.
    DropDown,
    /// Several values from a list.
    MultiDropDown,
    /// SIRET number.
    Siret,
    /// Email address.
    Email,
    /// French phone number.
    Phone,
    /// Postal address.
    Address,
    /// Commune (INSEE code).
    Commune,
    /// Département (INSEE code).
    Departement,
    /// Région (INSEE code).
    Region,
    /// A block of child fields repeated N times.
    Repetition,
    /// Attached file(s).
    PieceJustificative,
    /// Number of another dossier.
    DossierLink,
    /// Display only: section title.
    HeaderSection,
    /// Display only: explanatory text.
    Explication,
}

impl FieldType {
    /// Every type, in proto order.
    pub const ALL: [FieldType; 22] = [
        FieldType::Text,
        FieldType::Textarea,
        FieldType::Integer,
        FieldType::Decimal,
        FieldType::Date,
        FieldType::Datetime,
        FieldType::Checkbox,
        FieldType::YesNo,
        FieldType::DropDown,
        FieldType::MultiDropDown,
        FieldType::Siret,
        FieldType::Email,
        FieldType::Phone,
        FieldType::Address,
        FieldType::Commune,
        FieldType::Departement,
        FieldType::Region,
        FieldType::Repetition,
        FieldType::PieceJustificative,
        FieldType::DossierLink,
        FieldType::HeaderSection,
        FieldType::Explication,
    ];

    /// Whether the field only displays something and takes no answer.
    pub fn is_display_only(self) -> bool {
        matches!(self, FieldType::HeaderSection | FieldType::Explication)
    }

    /// Whether the field holds a number (INTEGER, DECIMAL).
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Integer | FieldType::Decimal)
    }

    /// Whether the field holds a date (DATE, DATETIME).
    pub fn is_temporal(self) -> bool {
        matches!(self, FieldType::Date | FieldType::Datetime)
    }

    /// French name of the type, for admins.
    pub fn label_fr(self) -> &'static str {
        match self {
            FieldType::Text => "texte court",
            FieldType::Textarea => "texte long",
            FieldType::Integer => "nombre entier",
            FieldType::Decimal => "nombre décimal",
            FieldType::Date => "date",
            FieldType::Datetime => "date et heure",
            FieldType::Checkbox => "case à cocher",
            FieldType::YesNo => "oui/non",
            FieldType::DropDown => "liste déroulante",
            FieldType::MultiDropDown => "choix multiple",
            FieldType::Siret => "SIRET",
            FieldType::Email => "adresse électronique",
            FieldType::Phone => "téléphone",
            FieldType::Address => "adresse",
            FieldType::Commune => "commune",
            FieldType::Departement => "département",
            FieldType::Region => "région",
            FieldType::Repetition => "bloc répétable",
            FieldType::PieceJustificative => "pièce justificative",
            FieldType::DossierLink => "lien vers un dossier",
            FieldType::HeaderSection => "titre de section",
            FieldType::Explication => "explication",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label_fr())
    }
}

/// What a field means to the system beyond the form (`mst.forms.v1.FieldPurpose`); at most one
/// field of a form has each purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldPurpose {
    /// Title of the projet or action (TEXT).
    Title,
    /// Name of the promoteur's structure (TEXT).
    StructureName,
    /// SIRET of the promoteur's structure (SIRET).
    Siret,
    /// Région of the dossier (REGION).
    Region,
    /// Main département of the dossier (DEPARTEMENT); routing fallback.
    Departement,
    /// CPAM de rattachement (DROP_DOWN); routing key.
    Cpam,
}

impl FieldPurpose {
    /// The field type a field with this purpose must have.
    pub fn field_type(self) -> FieldType {
        match self {
            FieldPurpose::Title | FieldPurpose::StructureName => FieldType::Text,
            FieldPurpose::Siret => FieldType::Siret,
            FieldPurpose::Region => FieldType::Region,
            FieldPurpose::Departement => FieldType::Departement,
            FieldPurpose::Cpam => FieldType::DropDown,
        }
    }

    /// French name of the purpose, for admins.
    pub fn label_fr(self) -> &'static str {
        match self {
            FieldPurpose::Title => "intitulé",
            FieldPurpose::StructureName => "nom de la structure",
            FieldPurpose::Siret => "SIRET de la structure",
            FieldPurpose::Region => "région",
            FieldPurpose::Departement => "département",
            FieldPurpose::Cpam => "CPAM de rattachement",
        }
    }
}

impl fmt::Display for FieldPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label_fr())
    }
}

/// One field of a form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct FieldDefinition {
    /// Id, unique in the form (children included).
    pub id: FieldId,
    /// Label shown to the user.
    pub label: String,
    /// Help text under the label; for EXPLICATION, the text itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Type of the field.
    pub field_type: FieldType,
    /// Whether an answer is required to deposit (only while the field is visible).
    #[serde(default)]
    pub required: bool,
    /// Type-specific constraints.
    #[serde(default, skip_serializing_if = "Constraints::is_none")]
    pub constraints: Constraints,
    /// The field shows only when this holds; `None` means always visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_when: Option<Condition>,
    /// Child fields of a REPETITION.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<FieldDefinition>,
    /// Special meaning of the field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<FieldPurpose>,
}

impl FieldDefinition {
    /// A field with no description, constraint, condition, child or purpose; not required.
    pub fn new(id: FieldId, label: impl Into<String>, field_type: FieldType) -> Self {
        Self {
            id,
            label: label.into(),
            description: String::new(),
            field_type,
            required: false,
            constraints: Constraints::None,
            visible_when: None,
            children: Vec::new(),
            purpose: None,
        }
    }

    /// Marks the field required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the constraints.
    pub fn with_constraints(mut self, constraints: Constraints) -> Self {
        self.constraints = constraints;
        self
    }

    /// Sets the visibility condition.
    pub fn visible_when(mut self, condition: Condition) -> Self {
        self.visible_when = Some(condition);
        self
    }

    /// Sets the children (REPETITION).
    pub fn with_children(mut self, children: Vec<FieldDefinition>) -> Self {
        self.children = children;
        self
    }

    /// Sets the purpose.
    pub fn with_purpose(mut self, purpose: FieldPurpose) -> Self {
        self.purpose = Some(purpose);
        self
    }
}

/// Type-specific constraints of a field (the `constraints` oneof).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraints {
    /// No constraint.
    #[default]
    None,
    /// TEXT, TEXTAREA.
    Text(TextConstraints),
    /// INTEGER, DECIMAL.
    Number(NumberConstraints),
    /// DATE, DATETIME.
    Date(DateConstraints),
    /// DROP_DOWN, MULTI_DROP_DOWN (required for these).
    Choice(ChoiceConstraints),
    /// PIECE_JUSTIFICATIVE.
    File(FileConstraints),
    /// REPETITION.
    Repetition(RepetitionConstraints),
    /// DOSSIER_LINK.
    DossierLink(DossierLinkConstraints),
}

impl Constraints {
    /// Whether there is no constraint.
    pub fn is_none(&self) -> bool {
        matches!(self, Constraints::None)
    }

    /// Whether these constraints may apply to a field of this type.
    pub fn suits(&self, field_type: FieldType) -> bool {
        use FieldType as T;
        match self {
            Constraints::None => true,
            Constraints::Text(_) => matches!(field_type, T::Text | T::Textarea),
            Constraints::Number(_) => field_type.is_numeric(),
            Constraints::Date(_) => field_type.is_temporal(),
            Constraints::Choice(_) => matches!(field_type, T::DropDown | T::MultiDropDown),
            Constraints::File(_) => field_type == T::PieceJustificative,
            Constraints::Repetition(_) => field_type == T::Repetition,
            Constraints::DossierLink(_) => field_type == T::DossierLink,
        }
    }
}

/// Constraints of TEXT and TEXTAREA fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct TextConstraints {
    /// Minimum length in characters (when answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    /// Maximum length in characters (the global cap of 100 000 always applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Regular expression the whole answer must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    /// French message shown when the pattern does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_message: Option<String>,
}

/// Constraints of INTEGER and DECIMAL fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NumberConstraints {
    /// Inclusive lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Decimal>,
    /// Inclusive upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Decimal>,
    /// DECIMAL only: maximum digits after the point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decimal_places: Option<u32>,
    /// An earlier numeric field whose answer is an inclusive lower bound (checked at deposit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_field: Option<FieldId>,
    /// An earlier numeric field whose answer is an inclusive upper bound (checked at deposit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_field: Option<FieldId>,
}

/// Constraints of DATE and DATETIME fields (DATETIME answers compare by their Europe/Paris date).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct DateConstraints {
    /// Earliest allowed date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_date: Option<NaiveDate>,
    /// Latest allowed date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_date: Option<NaiveDate>,
    /// An earlier date field whose answer is the earliest allowed date (checked at deposit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_field: Option<FieldId>,
    /// An earlier date field whose answer is the latest allowed date (checked at deposit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_field: Option<FieldId>,
}

/// Constraints of DROP_DOWN and MULTI_DROP_DOWN fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ChoiceConstraints {
    /// Allowed values, in display order, unique.
    pub values: Vec<String>,
    /// Whether "autre" with free text is offered.
    #[serde(default)]
    pub allow_other: bool,
    /// Label of the "autre" option (default « Autre »).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_label: Option<String>,
    /// MULTI_DROP_DOWN only: minimum number of selections (when answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_selected: Option<u32>,
    /// MULTI_DROP_DOWN only: maximum number of selections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_selected: Option<u32>,
}

impl ChoiceConstraints {
    /// The label of the "autre" option.
    pub fn other_label(&self) -> &str {
        self.other_label
            .as_deref()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or("Autre")
    }
}

/// Constraints of PIECE_JUSTIFICATIVE fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct FileConstraints {
    /// Accepted media types; empty means the service's default list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_content_types: Vec<String>,
    /// Maximum size of one file in bytes; `None` means the service default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_bytes: Option<u64>,
    /// Maximum number of files; `None` means [`FileConstraints::DEFAULT_MAX_FILES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

impl FileConstraints {
    /// Maximum number of files when the field sets none.
    pub const DEFAULT_MAX_FILES: u32 = 10;
}

/// Constraints of REPETITION fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RepetitionConstraints {
    /// Minimum number of rows when required (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u32>,
    /// Maximum number of rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u32>,
}

/// Constraints of DOSSIER_LINK fields (checked by the application, which sees other dossiers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct DossierLinkConstraints {
    /// Procedures the linked dossier must belong to; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procedure_ids: Vec<String>,
    /// Whether the linked dossier must have the same owner.
    #[serde(default)]
    pub same_owner: bool,
    /// Whether the linked dossier must have been deposited.
    #[serde(default)]
    pub must_be_deposited: bool,
}

// ---------------------------------------------------------------------------------------------
// Pattern
// ---------------------------------------------------------------------------------------------

/// A regular expression (Rust `regex` syntax) that a whole text answer must match. Compiled once,
/// with size limits so an admin's pattern cannot exhaust memory; matching is linear in the text.
/// A pattern that does not compile is kept (so [`FormDefinition::new`] can report it) and matches
/// nothing.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    compiled: Result<Regex, String>,
}

impl Pattern {
    /// Longest pattern source, in bytes.
    pub const MAX_SOURCE_LEN: usize = 1_000;
    /// Size limit of the compiled program, in bytes.
    const SIZE_LIMIT: usize = 1 << 20;

    /// Compiles a pattern, anchored at both ends.
    pub fn new(source: impl Into<String>) -> Self {
        let source = source.into();
        let compiled = if source.len() > Self::MAX_SOURCE_LEN {
            Err(format!(
                "l'expression dépasse {} caractères",
                Self::MAX_SOURCE_LEN
            ))
        } else {
            RegexBuilder::new(&format!("^(?:{source})$"))
                .size_limit(Self::SIZE_LIMIT)
                .dfa_size_limit(Self::SIZE_LIMIT)
                .nest_limit(64)
                .build()
                .map_err(|e| match e {
                    regex::Error::CompiledTooBig(_) => "l'expression est trop complexe".to_owned(),
                    // The syntax error's last line says what is wrong (its drawing would show
                    // our anchoring wrapper, not what the admin wrote).
                    other => {
                        let text = other.to_string();
                        let reason = text
                            .lines()
                            .rev()
                            .find_map(|l| l.trim().strip_prefix("error: "))
                            .unwrap_or("erreur de syntaxe");
                        format!("erreur de syntaxe ({reason})")
                    }
                })
        };
        Self { source, compiled }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Why the pattern does not compile, if it does not.
    pub fn error(&self) -> Option<&str> {
        self.compiled.as_ref().err().map(String::as_str)
    }

    /// Whether the whole text matches (never, for a pattern that does not compile).
    pub fn is_match(&self, text: &str) -> bool {
        self.compiled.as_ref().is_ok_and(|re| re.is_match(text))
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Pattern::new)
    }
}

// ---------------------------------------------------------------------------------------------
// FormDefinition
// ---------------------------------------------------------------------------------------------

/// A checked form: the fields of a revision in display order. Built by [`FormDefinition::new`],
/// which guarantees every rule listed there; deserialising re-checks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FormDefinitionRepr", into = "FormDefinitionRepr")]
pub struct FormDefinition {
    fields: Vec<FieldDefinition>,
    /// Where each field is: index among top-level fields, and among the children.
    index: HashMap<FieldId, (usize, Option<usize>)>,
}

/// A field with the repetition it belongs to, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldEntry<'a> {
    /// The field.
    pub field: &'a FieldDefinition,
    /// The REPETITION holding it, for a child.
    pub parent: Option<&'a FieldDefinition>,
}

/// A problem in a form definition, for the admin editing it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefinitionError {
    /// Two fields share an id.
    #[error("L'identifiant « {field} » est utilisé par plusieurs champs")]
    DuplicateId {
        /// The id.
        field: FieldId,
    },
    /// The label is empty (allowed for EXPLICATION only).
    #[error("Le champ « {field} » n'a pas de libellé")]
    MissingLabel {
        /// The field.
        field: FieldId,
    },
    /// A display-only field is required.
    #[error("Le champ « {field} » ne sert qu'à l'affichage et ne peut pas être obligatoire")]
    DisplayOnlyRequired {
        /// The field.
        field: FieldId,
    },
    /// The constraints do not suit the type.
    #[error("Les contraintes du champ « {field} » ne conviennent pas à son type ({field_type})")]
    ConstraintsMismatch {
        /// The field.
        field: FieldId,
        /// Its type.
        field_type: FieldType,
    },
    /// A constraint value is out of range or inconsistent.
    #[error("Contrainte invalide pour le champ « {field} » : {reason}")]
    InvalidConstraint {
        /// The field.
        field: FieldId,
        /// What is wrong, in French.
        reason: String,
    },
    /// A list field has no allowed value.
    #[error("La liste du champ « {field} » ne propose aucune valeur")]
    NoAllowedValues {
        /// The field.
        field: FieldId,
    },
    /// An allowed value appears twice.
    #[error("La valeur « {value} » est proposée plusieurs fois dans le champ « {field} »")]
    DuplicateAllowedValue {
        /// The field.
        field: FieldId,
        /// The repeated value.
        value: String,
    },
    /// The regular expression does not compile.
    #[error("L'expression régulière du champ « {field} » n'est pas valide : {reason}")]
    InvalidPattern {
        /// The field.
        field: FieldId,
        /// The compiler's reason.
        reason: String,
    },
    /// A repetition without child.
    #[error("Le bloc répétable « {field} » doit contenir au moins un champ")]
    EmptyRepetition {
        /// The field.
        field: FieldId,
    },
    /// Children on a field that is not a repetition (or on a child).
    #[error("Le champ « {field} » ne peut pas contenir d'autres champs")]
    UnexpectedChildren {
        /// The field.
        field: FieldId,
    },
    /// A repetition inside a repetition.
    #[error("Le bloc répétable « {parent} » ne peut pas contenir le bloc répétable « {field} »")]
    NestedRepetition {
        /// The enclosing repetition.
        parent: FieldId,
        /// The nested one.
        field: FieldId,
    },
    /// A condition or bound names a field that does not exist.
    #[error("Le champ « {field} » fait référence au champ « {referenced} », qui n'existe pas")]
    UnknownReference {
        /// The referring field.
        field: FieldId,
        /// The missing field.
        referenced: FieldId,
    },
    /// A condition or bound names a field that is not placed before it (or is in another
    /// repetition).
    #[error(
        "Le champ « {field} » fait référence au champ « {referenced} », qui doit être placé avant \
         lui (dans le même bloc répétable ou hors de tout bloc)"
    )]
    ReferenceNotEarlier {
        /// The referring field.
        field: FieldId,
        /// The referenced field.
        referenced: FieldId,
    },
    /// A condition or bound does not suit the referenced field's type.
    #[error("Le champ « {field} » fait référence au champ « {referenced} » : {reason}")]
    IncompatibleReference {
        /// The referring field.
        field: FieldId,
        /// The referenced field.
        referenced: FieldId,
        /// What is wrong, in French.
        reason: String,
    },
    /// A condition is malformed (empty group, too deep).
    #[error("La condition d'affichage du champ « {field} » n'est pas valide : {reason}")]
    InvalidCondition {
        /// The field.
        field: FieldId,
        /// What is wrong, in French.
        reason: String,
    },
    /// Two fields have the same purpose.
    #[error("Les champs « {first} » et « {second} » ont tous deux le rôle « {purpose} »")]
    DuplicatePurpose {
        /// The purpose.
        purpose: FieldPurpose,
        /// The first field with it.
        first: FieldId,
        /// The second.
        second: FieldId,
    },
    /// The field's type does not suit its purpose.
    #[error(
        "Le champ « {field} » ne peut pas avoir le rôle « {purpose} » : ce rôle demande un champ \
         de type {}",
        .purpose.field_type()
    )]
    PurposeMismatch {
        /// The field.
        field: FieldId,
        /// Its purpose.
        purpose: FieldPurpose,
    },
    /// A child of a repetition has a purpose (a purpose needs a single answer).
    #[error("Le champ « {field} » fait partie d'un bloc répétable et ne peut pas avoir de rôle")]
    PurposeInRepetition {
        /// The field.
        field: FieldId,
    },
}

impl DefinitionError {
    /// The field the problem is about.
    pub fn field(&self) -> &FieldId {
        match self {
            DefinitionError::DuplicateId { field }
            | DefinitionError::MissingLabel { field }
            | DefinitionError::DisplayOnlyRequired { field }
            | DefinitionError::ConstraintsMismatch { field, .. }
            | DefinitionError::InvalidConstraint { field, .. }
            | DefinitionError::NoAllowedValues { field }
            | DefinitionError::DuplicateAllowedValue { field, .. }
            | DefinitionError::InvalidPattern { field, .. }
            | DefinitionError::EmptyRepetition { field }
            | DefinitionError::UnexpectedChildren { field }
            | DefinitionError::NestedRepetition { field, .. }
            | DefinitionError::UnknownReference { field, .. }
            | DefinitionError::ReferenceNotEarlier { field, .. }
            | DefinitionError::IncompatibleReference { field, .. }
            | DefinitionError::InvalidCondition { field, .. }
            | DefinitionError::DuplicatePurpose { second: field, .. }
            | DefinitionError::PurposeMismatch { field, .. }
            | DefinitionError::PurposeInRepetition { field } => field,
        }
    }

    /// The French message shown to the admin.
    pub fn message_fr(&self) -> String {
        self.to_string()
    }
}

/// Serialised shape of a [`FormDefinition`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
struct FormDefinitionRepr {
    fields: Vec<FieldDefinition>,
}

/// The errors of a definition that failed to deserialise, as one message.
#[derive(Debug)]
struct DefinitionErrors(Vec<DefinitionError>);

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<String> = self.0.iter().map(DefinitionError::message_fr).collect();
        write!(
            f,
            "définition de formulaire invalide : {}",
            messages.join(" ; ")
        )
    }
}

impl TryFrom<FormDefinitionRepr> for FormDefinition {
    type Error = DefinitionErrors;
    fn try_from(repr: FormDefinitionRepr) -> Result<Self, Self::Error> {
        FormDefinition::new(repr.fields).map_err(DefinitionErrors)
    }
}

impl From<FormDefinition> for FormDefinitionRepr {
    fn from(form: FormDefinition) -> Self {
        Self {
            fields: form.fields,
        }
    }
}

impl FormDefinition {
    /// Checks a form and builds it. An empty form is valid (a new draft revision). The rules:
    /// - ids are unique across the form, children included; labels are set (except EXPLICATION);
    /// - constraints suit the type and are consistent (bounds in order, positive maxima…);
    ///   DROP_DOWN / MULTI_DROP_DOWN have at least one allowed value, all distinct; patterns compile;
    /// - a REPETITION has at least one child; children are neither repetitions nor hold children;
    ///   no other field has children;
    /// - every condition and every `min_field` / `max_field` names an earlier field (top-level
    ///   before the field; for a child, an earlier sibling or a top-level field before its
    ///   repetition) of a type that suits the comparison; groups are not empty; conditions are at
    ///   most [`Condition::MAX_DEPTH`] deep;
    /// - at most one field per purpose, of the type the purpose needs, outside repetitions;
    /// - HEADER_SECTION and EXPLICATION are not required and have no constraints.
    ///
    /// Returns every problem found: duplicate ids first, then the other problems in form order.
    pub fn new(fields: Vec<FieldDefinition>) -> Result<Self, Vec<DefinitionError>> {
        let mut errors = Vec::new();
        let mut index = HashMap::new();
        for (i, field) in fields.iter().enumerate() {
            let children = field.children.iter().enumerate().map(|(j, c)| (c, Some(j)));
            for (f, position) in std::iter::once((field, None)).chain(children) {
                match index.entry(f.id.clone()) {
                    Entry::Vacant(slot) => {
                        slot.insert((i, position));
                    }
                    Entry::Occupied(_) => errors.push(DefinitionError::DuplicateId {
                        field: f.id.clone(),
                    }),
                }
            }
        }

        let all_ids: HashSet<&FieldId> = index.keys().collect();
        let mut checker = Checker {
            all_ids: &all_ids,
            errors: &mut errors,
        };
        let mut top: HashMap<&FieldId, &FieldDefinition> = HashMap::new();
        let mut purposes: HashMap<FieldPurpose, &FieldId> = HashMap::new();
        for field in &fields {
            let scope = Scope {
                top: &top,
                siblings: None,
            };
            checker.field(field, &scope);
            if let Some(purpose) = field.purpose {
                if field.field_type != purpose.field_type() {
                    checker.errors.push(DefinitionError::PurposeMismatch {
                        field: field.id.clone(),
                        purpose,
                    });
                }
                if let Some(first) = purposes.insert(purpose, &field.id) {
                    checker.errors.push(DefinitionError::DuplicatePurpose {
                        purpose,
                        first: first.clone(),
                        second: field.id.clone(),
                    });
                }
            }
            if field.field_type == FieldType::Repetition {
                if field.children.is_empty() {
                    checker.errors.push(DefinitionError::EmptyRepetition {
                        field: field.id.clone(),
                    });
                }
                let mut siblings: HashMap<&FieldId, &FieldDefinition> = HashMap::new();
                for child in &field.children {
                    if child.field_type == FieldType::Repetition {
                        checker.errors.push(DefinitionError::NestedRepetition {
                            parent: field.id.clone(),
                            field: child.id.clone(),
                        });
                    } else if !child.children.is_empty() {
                        checker.errors.push(DefinitionError::UnexpectedChildren {
                            field: child.id.clone(),
                        });
                    }
                    if child.purpose.is_some() {
                        checker.errors.push(DefinitionError::PurposeInRepetition {
                            field: child.id.clone(),
                        });
                    }
                    let scope = Scope {
                        top: &top,
                        siblings: Some(&siblings),
                    };
                    checker.field(child, &scope);
                    siblings.insert(&child.id, child);
                }
            } else if !field.children.is_empty() {
                checker.errors.push(DefinitionError::UnexpectedChildren {
                    field: field.id.clone(),
                });
            }
            top.insert(&field.id, field);
        }

        if errors.is_empty() {
            Ok(Self { fields, index })
        } else {
            Err(errors)
        }
    }

    /// Top-level fields, in display order.
    pub fn fields(&self) -> &[FieldDefinition] {
        &self.fields
    }

    /// Gives back the fields.
    pub fn into_fields(self) -> Vec<FieldDefinition> {
        self.fields
    }

    /// A field by id, top-level or child.
    pub fn field(&self, id: &FieldId) -> Option<&FieldDefinition> {
        self.entry(id).map(|e| e.field)
    }

    /// A field by id with the repetition holding it, if any.
    pub fn entry(&self, id: &FieldId) -> Option<FieldEntry<'_>> {
        let &(top, child) = self.index.get(id)?;
        let parent = self.fields.get(top)?;
        match child {
            None => Some(FieldEntry {
                field: parent,
                parent: None,
            }),
            Some(j) => parent.children.get(j).map(|field| FieldEntry {
                field,
                parent: Some(parent),
            }),
        }
    }

    /// The repetition holding a child field (`None` for top-level or unknown fields).
    pub fn parent(&self, id: &FieldId) -> Option<&FieldDefinition> {
        self.entry(id).and_then(|e| e.parent)
    }

    /// Every field in display order: each top-level field followed by its children.
    pub fn iter(&self) -> impl Iterator<Item = FieldEntry<'_>> {
        self.fields.iter().flat_map(|parent| {
            std::iter::once(FieldEntry {
                field: parent,
                parent: None,
            })
            .chain(parent.children.iter().map(move |field| FieldEntry {
                field,
                parent: Some(parent),
            }))
        })
    }

    /// The field with a purpose, if any.
    pub fn field_with_purpose(&self, purpose: FieldPurpose) -> Option<&FieldDefinition> {
        self.fields.iter().find(|f| f.purpose == Some(purpose))
    }
}

/// The fields a field may refer to: top-level fields before it (or before its repetition) and,
/// for a child, its earlier siblings.
struct Scope<'s, 'f> {
    top: &'s HashMap<&'f FieldId, &'f FieldDefinition>,
    siblings: Option<&'s HashMap<&'f FieldId, &'f FieldDefinition>>,
}

impl<'f> Scope<'_, 'f> {
    fn get(&self, id: &FieldId) -> Option<&'f FieldDefinition> {
        self.siblings
            .and_then(|s| s.get(id))
            .or_else(|| self.top.get(id))
            .copied()
    }
}

/// Checks one field (not its children) and collects the errors.
struct Checker<'a> {
    all_ids: &'a HashSet<&'a FieldId>,
    errors: &'a mut Vec<DefinitionError>,
}

impl Checker<'_> {
    fn field(&mut self, field: &FieldDefinition, scope: &Scope<'_, '_>) {
        let id = &field.id;
        if field.label.trim().is_empty() && field.field_type != FieldType::Explication {
            self.errors
                .push(DefinitionError::MissingLabel { field: id.clone() });
        }
        if field.field_type.is_display_only() && field.required {
            self.errors
                .push(DefinitionError::DisplayOnlyRequired { field: id.clone() });
        }
        if (field.field_type.is_display_only() && !field.constraints.is_none())
            || !field.constraints.suits(field.field_type)
        {
            self.errors.push(DefinitionError::ConstraintsMismatch {
                field: id.clone(),
                field_type: field.field_type,
            });
        } else {
            self.constraints(field, scope);
        }
        if let Some(condition) = &field.visible_when {
            self.condition(field, condition, scope);
        }
    }

    fn invalid(&mut self, field: &FieldDefinition, reason: impl Into<String>) {
        self.errors.push(DefinitionError::InvalidConstraint {
            field: field.id.clone(),
            reason: reason.into(),
        });
    }

    fn constraints(&mut self, field: &FieldDefinition, scope: &Scope<'_, '_>) {
        match &field.constraints {
            Constraints::None => {
                if matches!(
                    field.field_type,
                    FieldType::DropDown | FieldType::MultiDropDown
                ) {
                    self.errors.push(DefinitionError::NoAllowedValues {
                        field: field.id.clone(),
                    });
                }
            }
            Constraints::Text(c) => {
                if let (Some(min), Some(max)) = (c.min_length, c.max_length)
                    && min > max
                {
                    self.invalid(field, "la longueur minimale dépasse la longueur maximale");
                }
                if c.max_length == Some(0) {
                    self.invalid(field, "la longueur maximale doit être positive");
                }
                if let Some(reason) = c.pattern.as_ref().and_then(Pattern::error) {
                    self.errors.push(DefinitionError::InvalidPattern {
                        field: field.id.clone(),
                        reason: reason.to_owned(),
                    });
                }
            }
            Constraints::Number(c) => {
                if let (Some(min), Some(max)) = (c.min, c.max)
                    && min > max
                {
                    self.invalid(field, "la valeur minimale dépasse la valeur maximale");
                }
                if let Some(places) = c.max_decimal_places {
                    if field.field_type != FieldType::Decimal {
                        self.invalid(
                            field,
                            "le nombre de décimales ne s'applique qu'aux nombres décimaux",
                        );
                    } else if places > 28 {
                        self.invalid(field, "le nombre de décimales ne peut dépasser 28");
                    }
                }
                for bound in [&c.min_field, &c.max_field].into_iter().flatten() {
                    self.bound(field, bound, scope, FieldType::is_numeric, "numérique");
                }
            }
            Constraints::Date(c) => {
                if let (Some(min), Some(max)) = (c.min_date, c.max_date)
                    && min > max
                {
                    self.invalid(field, "la date minimale est postérieure à la date maximale");
                }
                for bound in [&c.min_field, &c.max_field].into_iter().flatten() {
                    self.bound(field, bound, scope, FieldType::is_temporal, "de date");
                }
            }
            Constraints::Choice(c) => self.choice(field, c),
            Constraints::File(c) => {
                if c.max_files == Some(0) {
                    self.invalid(field, "le nombre maximal de fichiers doit être positif");
                }
                if c.max_size_bytes == Some(0) {
                    self.invalid(field, "la taille maximale des fichiers doit être positive");
                }
                if c.accepted_content_types.iter().any(|t| !t.contains('/')) {
                    self.invalid(field, "un type de fichier accepté n'est pas un type MIME");
                }
            }
            Constraints::Repetition(c) => {
                if c.max_rows == Some(0) {
                    self.invalid(field, "le nombre maximal de lignes doit être positif");
                }
                if let (Some(min), Some(max)) = (c.min_rows, c.max_rows)
                    && min > max
                {
                    self.invalid(
                        field,
                        "le nombre minimal de lignes dépasse le nombre maximal",
                    );
                }
            }
            Constraints::DossierLink(c) => {
                if c.procedure_ids.iter().any(|p| p.trim().is_empty()) {
                    self.invalid(field, "un identifiant de démarche est vide");
                }
            }
        }
    }

    fn choice(&mut self, field: &FieldDefinition, c: &ChoiceConstraints) {
        if c.values.is_empty() {
            self.errors.push(DefinitionError::NoAllowedValues {
                field: field.id.clone(),
            });
        }
        if c.values.iter().any(|v| v.trim().is_empty()) {
            self.invalid(field, "une valeur proposée est vide");
        }
        let mut seen = HashSet::new();
        let mut reported = HashSet::new();
        for value in &c.values {
            if !seen.insert(value) && reported.insert(value) {
                self.errors.push(DefinitionError::DuplicateAllowedValue {
                    field: field.id.clone(),
                    value: value.clone(),
                });
            }
        }
        let multi = field.field_type == FieldType::MultiDropDown;
        if !multi && (c.min_selected.is_some() || c.max_selected.is_some()) {
            self.invalid(
                field,
                "les nombres de choix minimal et maximal ne s'appliquent qu'aux choix multiples",
            );
        }
        if multi {
            let options = c.values.len() + usize::from(c.allow_other);
            if c.max_selected == Some(0) {
                self.invalid(field, "le nombre maximal de choix doit être positif");
            }
            if let (Some(min), Some(max)) = (c.min_selected, c.max_selected)
                && min > max
            {
                self.invalid(
                    field,
                    "le nombre minimal de choix dépasse le nombre maximal",
                );
            }
            if c.min_selected
                .is_some_and(|min| usize::try_from(min).unwrap_or(usize::MAX) > options)
            {
                self.invalid(
                    field,
                    "le nombre minimal de choix dépasse le nombre de valeurs proposées",
                );
            }
        }
    }

    /// Checks a `min_field` / `max_field` reference.
    fn bound(
        &mut self,
        field: &FieldDefinition,
        referenced: &FieldId,
        scope: &Scope<'_, '_>,
        suits: fn(FieldType) -> bool,
        kind: &str,
    ) {
        if let Some(target) = self.resolve(field, referenced, scope)
            && !suits(target.field_type)
        {
            self.errors.push(DefinitionError::IncompatibleReference {
                field: field.id.clone(),
                referenced: referenced.clone(),
                reason: format!("une borne doit être un champ {kind}"),
            });
        }
    }

    /// Finds a referenced field in scope, reporting it when unknown or not earlier.
    fn resolve<'f>(
        &mut self,
        field: &FieldDefinition,
        referenced: &FieldId,
        scope: &Scope<'_, 'f>,
    ) -> Option<&'f FieldDefinition> {
        let found = scope.get(referenced);
        if found.is_none() {
            let error = if self.all_ids.contains(referenced) {
                DefinitionError::ReferenceNotEarlier {
                    field: field.id.clone(),
                    referenced: referenced.clone(),
                }
            } else {
                DefinitionError::UnknownReference {
                    field: field.id.clone(),
                    referenced: referenced.clone(),
                }
            };
            self.errors.push(error);
        }
        found
    }

    fn condition(&mut self, field: &FieldDefinition, condition: &Condition, scope: &Scope<'_, '_>) {
        if condition.depth() > Condition::MAX_DEPTH {
            self.errors.push(DefinitionError::InvalidCondition {
                field: field.id.clone(),
                reason: format!(
                    "elle imbrique plus de {} niveaux de groupes",
                    Condition::MAX_DEPTH
                ),
            });
            return;
        }
        let mut stack = vec![condition];
        let mut empty_group = false;
        while let Some(node) = stack.pop() {
            match node {
                Condition::All(items) | Condition::Any(items) => {
                    empty_group |= items.is_empty();
                    // Reverse so that errors come out in written order.
                    stack.extend(items.iter().rev());
                }
                Condition::Compare {
                    field: referenced,
                    operator,
                    operand,
                } => {
                    if let Some(target) = self.resolve(field, referenced, scope)
                        && let Err(reason) = check_comparison(*operator, operand.as_ref(), target)
                    {
                        self.errors.push(DefinitionError::IncompatibleReference {
                            field: field.id.clone(),
                            referenced: referenced.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        if empty_group {
            self.errors.push(DefinitionError::InvalidCondition {
                field: field.id.clone(),
                reason: "un groupe « et » / « ou » ne contient aucune condition".to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{Operand, Operator};

    fn fid(s: &str) -> FieldId {
        FieldId::parse(s).expect("test field id")
    }

    fn field(id: &str, field_type: FieldType) -> FieldDefinition {
        FieldDefinition::new(fid(id), format!("Libellé {id}"), field_type)
    }

    fn choice(values: &[&str]) -> Constraints {
        Constraints::Choice(ChoiceConstraints {
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            ..ChoiceConstraints::default()
        })
    }

    fn compare(id: &str, operator: Operator, operand: Option<Operand>) -> Condition {
        Condition::Compare {
            field: fid(id),
            operator,
            operand,
        }
    }

    fn errors(fields: Vec<FieldDefinition>) -> Vec<DefinitionError> {
        FormDefinition::new(fields).err().unwrap_or_default()
    }

    fn sample() -> Vec<FieldDefinition> {
        vec![
            field("p_section", FieldType::HeaderSection),
            field("p_titre", FieldType::Text)
                .required()
                .with_purpose(FieldPurpose::Title),
            field("p_renouvellement", FieldType::YesNo).required(),
            field("p_precedent", FieldType::Text).visible_when(compare(
                "p_renouvellement",
                Operator::Equals,
                Some(Operand::Boolean(true)),
            )),
            field("p_budget", FieldType::Decimal),
            field("p_depenses", FieldType::Repetition).with_children(vec![
                field("p_dep_libelle", FieldType::Text).required(),
                field("p_dep_montant", FieldType::Decimal).with_constraints(Constraints::Number(
                    NumberConstraints {
                        max_field: Some(fid("p_budget")),
                        ..NumberConstraints::default()
                    },
                )),
            ]),
        ]
    }

    #[test]
    fn a_well_formed_form_is_built_with_look_ups() {
        let form = FormDefinition::new(sample()).expect("valid form");
        assert_eq!(form.fields().len(), 6);
        assert_eq!(
            form.field(&fid("p_dep_montant")).map(|f| f.field_type),
            Some(FieldType::Decimal)
        );
        assert_eq!(
            form.parent(&fid("p_dep_montant")).map(|f| f.id.as_str()),
            Some("p_depenses")
        );
        assert!(form.parent(&fid("p_titre")).is_none());
        assert!(form.field(&fid("nope")).is_none());
        let order: Vec<(&str, Option<&str>)> = form
            .iter()
            .map(|e| (e.field.id.as_str(), e.parent.map(|p| p.id.as_str())))
            .collect();
        assert_eq!(
            order,
            vec![
                ("p_section", None),
                ("p_titre", None),
                ("p_renouvellement", None),
                ("p_precedent", None),
                ("p_budget", None),
                ("p_depenses", None),
                ("p_dep_libelle", Some("p_depenses")),
                ("p_dep_montant", Some("p_depenses")),
            ]
        );
        assert_eq!(
            form.field_with_purpose(FieldPurpose::Title)
                .map(|f| f.id.as_str()),
            Some("p_titre")
        );
        assert!(FormDefinition::new(Vec::new()).is_ok());
    }

    #[test]
    fn definitions_round_trip_through_json_and_are_rechecked() {
        let mut fields = sample();
        fields.push(
            field("p_cp", FieldType::Text).with_constraints(Constraints::Text(TextConstraints {
                pattern: Some(Pattern::new("[0-9]{5}")),
                pattern_message: Some("Indiquez un code postal à 5 chiffres".into()),
                ..TextConstraints::default()
            })),
        );
        let form = FormDefinition::new(fields).expect("valid form");
        let json = serde_json::to_string(&form).expect("json");
        assert!(
            json.starts_with("{\"fields\":[{\"id\":\"p_section\""),
            "{json}"
        );
        assert!(json.contains("\"field_type\":\"header_section\""), "{json}");
        assert!(json.contains("\"pattern\":\"[0-9]{5}\""), "{json}");
        let back: FormDefinition = serde_json::from_str(&json).expect("back");
        assert_eq!(back, form);
        let duplicated = json.replace("p_budget", "p_titre");
        let err = serde_json::from_str::<FormDefinition>(&duplicated)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("L'identifiant « p_titre » est utilisé par plusieurs champs"),
            "{err}"
        );
    }

    #[test]
    fn ids_must_be_unique_across_children() {
        let errs = errors(vec![
            field("a", FieldType::Text),
            field("r", FieldType::Repetition).with_children(vec![field("a", FieldType::Text)]),
        ]);
        assert_eq!(errs, vec![DefinitionError::DuplicateId { field: fid("a") }]);
    }

    #[test]
    fn constraints_must_suit_the_type() {
        let errs = errors(vec![
            field("a", FieldType::Integer).with_constraints(choice(&["x"])),
            field("b", FieldType::HeaderSection)
                .required()
                .with_constraints(Constraints::Text(TextConstraints::default())),
            field("c", FieldType::Siret)
                .with_constraints(Constraints::Text(TextConstraints::default())),
            FieldDefinition::new(fid("d"), "", FieldType::Explication),
            FieldDefinition::new(fid("e"), " ", FieldType::Text),
        ]);
        assert_eq!(
            errs,
            vec![
                DefinitionError::ConstraintsMismatch {
                    field: fid("a"),
                    field_type: FieldType::Integer
                },
                DefinitionError::DisplayOnlyRequired { field: fid("b") },
                DefinitionError::ConstraintsMismatch {
                    field: fid("b"),
                    field_type: FieldType::HeaderSection
                },
                DefinitionError::ConstraintsMismatch {
                    field: fid("c"),
                    field_type: FieldType::Siret
                },
                DefinitionError::MissingLabel { field: fid("e") },
            ]
        );
        assert_eq!(
            errs[0].message_fr(),
            "Les contraintes du champ « a » ne conviennent pas à son type (nombre entier)"
        );
    }

    #[test]
    fn lists_need_unique_allowed_values() {
        let errs = errors(vec![
            field("a", FieldType::DropDown),
            field("b", FieldType::MultiDropDown).with_constraints(choice(&[])),
            field("c", FieldType::DropDown).with_constraints(choice(&["x", "y", "x", "x"])),
            field("d", FieldType::DropDown).with_constraints(Constraints::Choice(
                ChoiceConstraints {
                    values: vec!["x".into()],
                    min_selected: Some(1),
                    ..ChoiceConstraints::default()
                },
            )),
            field("e", FieldType::MultiDropDown).with_constraints(Constraints::Choice(
                ChoiceConstraints {
                    values: vec!["x".into(), "y".into()],
                    min_selected: Some(3),
                    max_selected: Some(2),
                    ..ChoiceConstraints::default()
                },
            )),
        ]);
        let fields: Vec<&str> = errs.iter().map(|e| e.field().as_str()).collect();
        assert_eq!(fields, vec!["a", "b", "c", "d", "e", "e"]);
        assert_eq!(
            errs[2],
            DefinitionError::DuplicateAllowedValue {
                field: fid("c"),
                value: "x".into()
            }
        );
    }

    #[test]
    fn patterns_must_compile_within_limits() {
        let with_pattern = |id: &str, p: &str| {
            field(id, FieldType::Text).with_constraints(Constraints::Text(TextConstraints {
                pattern: Some(Pattern::new(p)),
                ..TextConstraints::default()
            }))
        };
        let errs = errors(vec![
            with_pattern("a", "[0-9"),
            with_pattern("b", "(?=x)"),
            with_pattern("c", "\\w{1000}{1000}"),
            with_pattern("d", &"a".repeat(1001)),
            with_pattern("e", "[0-9]{5}"),
        ]);
        let fields: Vec<&str> = errs.iter().map(|e| e.field().as_str()).collect();
        assert_eq!(fields, vec!["a", "b", "c", "d"]);
        assert!(
            errs.iter()
                .all(|e| matches!(e, DefinitionError::InvalidPattern { .. }))
        );
        assert_eq!(
            errs[0].message_fr(),
            "L'expression régulière du champ « a » n'est pas valide : erreur de syntaxe (unclosed \
             character class)"
        );
        assert_eq!(
            Pattern::new("\\w{5000}").error(),
            Some("l'expression est trop complexe")
        );
        assert!(Pattern::new("[0-9]{5}").is_match("13001"));
        assert!(!Pattern::new("[0-9]{5}").is_match("130012"));
        assert!(!Pattern::new("a|b").is_match("ab"));
        assert!(!Pattern::new("[").is_match("["));
    }

    #[test]
    fn bounds_must_be_in_order() {
        let errs = errors(vec![
            field("a", FieldType::Text).with_constraints(Constraints::Text(TextConstraints {
                min_length: Some(5),
                max_length: Some(2),
                ..TextConstraints::default()
            })),
            field("b", FieldType::Integer).with_constraints(Constraints::Number(
                NumberConstraints {
                    min: Some(Decimal::TEN),
                    max: Some(Decimal::ONE),
                    max_decimal_places: Some(2),
                    ..NumberConstraints::default()
                },
            )),
            field("c", FieldType::Date).with_constraints(Constraints::Date(DateConstraints {
                min_date: NaiveDate::from_ymd_opt(2024, 12, 1),
                max_date: NaiveDate::from_ymd_opt(2024, 1, 1),
                ..DateConstraints::default()
            })),
            field("d", FieldType::Repetition)
                .with_constraints(Constraints::Repetition(RepetitionConstraints {
                    min_rows: Some(3),
                    max_rows: Some(0),
                }))
                .with_children(vec![field("d_x", FieldType::Text)]),
            field("e", FieldType::PieceJustificative).with_constraints(Constraints::File(
                FileConstraints {
                    max_files: Some(0),
                    ..FileConstraints::default()
                },
            )),
        ]);
        let fields: Vec<&str> = errs.iter().map(|e| e.field().as_str()).collect();
        assert_eq!(fields, vec!["a", "b", "b", "c", "d", "d", "e"]);
    }

    #[test]
    fn repetitions_hold_flat_children_only() {
        let errs = errors(vec![
            field("r", FieldType::Repetition),
            field("s", FieldType::Repetition).with_children(vec![
                field("s_inner", FieldType::Repetition)
                    .with_children(vec![field("s_deep", FieldType::Text)]),
                field("s_text", FieldType::Text)
                    .with_children(vec![field("s_deeper", FieldType::Text)]),
                field("s_siret", FieldType::Siret).with_purpose(FieldPurpose::Siret),
            ]),
            field("t", FieldType::Text).with_children(vec![field("t_x", FieldType::Text)]),
        ]);
        assert_eq!(
            errs,
            vec![
                DefinitionError::EmptyRepetition { field: fid("r") },
                DefinitionError::NestedRepetition {
                    parent: fid("s"),
                    field: fid("s_inner")
                },
                DefinitionError::UnexpectedChildren {
                    field: fid("s_text")
                },
                DefinitionError::PurposeInRepetition {
                    field: fid("s_siret")
                },
                DefinitionError::UnexpectedChildren { field: fid("t") },
            ]
        );
    }

    #[test]
    fn conditions_must_name_earlier_fields() {
        let eq_true = |id: &str| compare(id, Operator::Equals, Some(Operand::Boolean(true)));
        let errs = errors(vec![
            field("a", FieldType::Text).visible_when(eq_true("b")),
            field("b", FieldType::YesNo).visible_when(eq_true("b")),
            field("c", FieldType::Text).visible_when(eq_true("zz")),
            field("r", FieldType::Repetition).with_children(vec![
                field("r_yn", FieldType::YesNo).visible_when(eq_true("b")),
                field("r_x", FieldType::Text).visible_when(eq_true("r_yn")),
                field("r_y", FieldType::Text).visible_when(eq_true("r_z")),
                field("r_z", FieldType::YesNo),
            ]),
            field("d", FieldType::Text).visible_when(eq_true("r_yn")),
            field("e", FieldType::Integer).visible_when(compare("s_yn", Operator::IsEmpty, None)),
            field("s", FieldType::Repetition).with_children(vec![
                field("s_yn", FieldType::YesNo).visible_when(eq_true("r_yn")),
            ]),
        ]);
        let pairs: Vec<(&str, &str, bool)> = errs
            .iter()
            .filter_map(|e| match e {
                DefinitionError::ReferenceNotEarlier { field, referenced } => {
                    Some((field.as_str(), referenced.as_str(), true))
                }
                DefinitionError::UnknownReference { field, referenced } => {
                    Some((field.as_str(), referenced.as_str(), false))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("a", "b", true),
                ("b", "b", true),
                ("c", "zz", false),
                ("r_y", "r_z", true),
                ("d", "r_yn", true),
                ("e", "s_yn", true),
                ("s_yn", "r_yn", true),
            ]
        );
        assert_eq!(errs.len(), pairs.len());
    }

    #[test]
    fn bounds_must_name_earlier_fields_of_a_suitable_type() {
        let number = |min_field: &str| {
            Constraints::Number(NumberConstraints {
                min_field: Some(fid(min_field)),
                ..NumberConstraints::default()
            })
        };
        let errs = errors(vec![
            field("t", FieldType::Text),
            field("n", FieldType::Integer).with_constraints(number("t")),
            field("m", FieldType::Decimal).with_constraints(number("n")),
            field("d", FieldType::Date).with_constraints(Constraints::Date(DateConstraints {
                max_field: Some(fid("n")),
                ..DateConstraints::default()
            })),
            field("e", FieldType::Integer).with_constraints(number("f")),
            field("f", FieldType::Integer),
        ]);
        assert_eq!(
            errs,
            vec![
                DefinitionError::IncompatibleReference {
                    field: fid("n"),
                    referenced: fid("t"),
                    reason: "une borne doit être un champ numérique".into()
                },
                DefinitionError::IncompatibleReference {
                    field: fid("d"),
                    referenced: fid("n"),
                    reason: "une borne doit être un champ de date".into()
                },
                DefinitionError::ReferenceNotEarlier {
                    field: fid("e"),
                    referenced: fid("f")
                },
            ]
        );
    }

    #[test]
    fn conditions_must_suit_the_compared_field() {
        let errs = errors(vec![
            field("yn", FieldType::YesNo),
            field("dd", FieldType::DropDown).with_constraints(choice(&["A", "B"])),
            field("md", FieldType::MultiDropDown).with_constraints(choice(&["A", "B"])),
            field("h", FieldType::HeaderSection),
            field("ok1", FieldType::Text).visible_when(Condition::All(vec![
                compare("dd", Operator::Equals, Some(Operand::Text("A".into()))),
                compare("md", Operator::Includes, Some(Operand::Text("B".into()))),
                compare("yn", Operator::IsNotEmpty, None),
            ])),
            field("x1", FieldType::Text).visible_when(compare(
                "yn",
                Operator::Equals,
                Some(Operand::Integer(1)),
            )),
            field("x2", FieldType::Text).visible_when(compare(
                "dd",
                Operator::Equals,
                Some(Operand::Text("C".into())),
            )),
            field("x3", FieldType::Text).visible_when(compare("yn", Operator::Equals, None)),
            field("x4", FieldType::Text).visible_when(compare(
                "yn",
                Operator::IsEmpty,
                Some(Operand::Boolean(true)),
            )),
            field("x5", FieldType::Text).visible_when(compare("h", Operator::IsEmpty, None)),
            field("x6", FieldType::Text).visible_when(compare(
                "md",
                Operator::Equals,
                Some(Operand::Text("A".into())),
            )),
            field("x7", FieldType::Text).visible_when(Condition::Any(vec![])),
        ]);
        let fields: Vec<&str> = errs.iter().map(|e| e.field().as_str()).collect();
        assert_eq!(fields, vec!["x1", "x2", "x3", "x4", "x5", "x6", "x7"]);
    }

    #[test]
    fn conditions_cannot_nest_too_deep() {
        let mut condition = compare("a", Operator::IsEmpty, None);
        for _ in 0..Condition::MAX_DEPTH {
            condition = Condition::All(vec![condition]);
        }
        let ok = vec![
            field("a", FieldType::Text),
            field("b", FieldType::Text).visible_when(condition.clone()),
        ];
        assert!(FormDefinition::new(ok).is_ok());
        let deep = vec![
            field("a", FieldType::Text),
            field("b", FieldType::Text).visible_when(Condition::Any(vec![condition])),
        ];
        assert!(matches!(
            errors(deep).as_slice(),
            [DefinitionError::InvalidCondition { .. }]
        ));
    }

    #[test]
    fn purposes_are_unique_and_typed() {
        let errs = errors(vec![
            field("a", FieldType::Text).with_purpose(FieldPurpose::Title),
            field("b", FieldType::Text).with_purpose(FieldPurpose::Title),
            field("c", FieldType::Text).with_purpose(FieldPurpose::Siret),
            field("d", FieldType::DropDown)
                .with_constraints(choice(&["CPAM 13"]))
                .with_purpose(FieldPurpose::Cpam),
        ]);
        assert_eq!(
            errs,
            vec![
                DefinitionError::DuplicatePurpose {
                    purpose: FieldPurpose::Title,
                    first: fid("a"),
                    second: fid("b")
                },
                DefinitionError::PurposeMismatch {
                    field: fid("c"),
                    purpose: FieldPurpose::Siret
                },
            ]
        );
        assert_eq!(
            errs[1].message_fr(),
            "Le champ « c » ne peut pas avoir le rôle « SIRET de la structure » : ce rôle demande \
             un champ de type SIRET"
        );
    }

    #[test]
    fn every_field_type_has_a_french_label_and_a_snake_case_name() {
        for t in FieldType::ALL {
            assert!(!t.label_fr().is_empty());
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert!(
                json.chars()
                    .all(|c| c == '"' || c == '_' || c.is_ascii_lowercase())
            );
        }
        assert_eq!(
            serde_json::to_string(&FieldType::PieceJustificative)
                .ok()
                .as_deref(),
            Some("\"piece_justificative\"")
        );
    }
}
