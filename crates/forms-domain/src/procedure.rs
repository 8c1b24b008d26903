//! Procedures (démarches) and what a dossier is in the forms service's eyes: who may reach it,
//! whether it may still be edited, and the headline its purposed fields give it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::form::{FieldPurpose, FormDefinition};
use super::value::{Answers, Choice, Value};

/// A procedure id: lower-case letters, digits and dashes, 3 to 64 characters, starting with a
/// letter (`mst-2024-projet`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcedureId(String);

impl ProcedureId {
    /// Parses an id.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (3..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "Identifiant de démarche invalide : « {} » (lettres minuscules, chiffres et tirets, 3 à 64 caractères, commençant par une lettre)",
                s.chars().take(80).collect::<String>()
            ))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProcedureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ProcedureId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ProcedureId> for String {
    fn from(id: ProcedureId) -> Self {
        id.0
    }
}

/// What a procedure's dossiers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A projet (frames actions).
    Projet,
    /// An action (one place, one public).
    Action,
}

impl Kind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Projet => "projet",
            Kind::Action => "action",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "projet" => Some(Kind::Projet),
            "action" => Some(Kind::Action),
            _ => None,
        }
    }
}

/// A complete procedure definition: attributes and form.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcedureDefinition {
    /// Id.
    pub id: ProcedureId,
    /// Title (non-empty, at most 500 characters).
    pub title: String,
    /// Object of the procedure.
    pub description: String,
    /// Projet or action.
    pub kind: Kind,
    /// Estimated filling time.
    pub estimated_filling_time: Duration,
    /// Closing instant.
    pub closing_at: Option<DateTime<Utc>>,
    /// The form.
    pub form: FormDefinition,
}

/// The dossier status as forms mirrors it from the instruction service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not deposited.
    Brouillon,
    /// Deposited, still editable.
    EnConstruction,
    /// Frozen for the promoteur.
    EnInstruction,
    /// Decided.
    Accepte,
    /// Decided.
    Refuse,
    /// Decided.
    SansSuite,
}

impl Status {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Brouillon => "brouillon",
            Status::EnConstruction => "en_construction",
            Status::EnInstruction => "en_instruction",
            Status::Accepte => "accepte",
            Status::Refuse => "refuse",
            Status::SansSuite => "sans_suite",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "brouillon" => Status::Brouillon,
            "en_construction" => Status::EnConstruction,
            "en_instruction" => Status::EnInstruction,
            "accepte" => Status::Accepte,
            "refuse" => Status::Refuse,
            "sans_suite" => Status::SansSuite,
            _ => return None,
        })
    }

    /// French label (« en construction »).
    pub fn label_fr(self) -> &'static str {
        match self {
            Status::Brouillon => "en brouillon",
            Status::EnConstruction => "en construction",
            Status::EnInstruction => "en instruction",
            Status::Accepte => "accepté",
            Status::Refuse => "refusé",
            Status::SansSuite => "classé sans suite",
        }
    }

    /// Whether the promoteur (or an invitee) may change the answers in this status.
    pub fn is_editable(self) -> bool {
        matches!(self, Status::Brouillon | Status::EnConstruction)
    }
}

/// How a caller reaches a dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The owner: everything.
    Owner,
    /// An invitee: read and edit only.
    Invitee,
    /// An instructeur of the dossier's groupe (never a brouillon): read only.
    Instructeur,
    /// An expert asked for an avis on the dossier: read only.
    Expert,
    /// A service or an admin: read only.
    System,
}

impl Access {
    /// Stored name of the actor role in the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Owner => "owner",
            Access::Invitee => "invitee",
            Access::Instructeur => "instructeur",
            Access::Expert => "expert",
            Access::System => "system",
        }
    }

    /// Whether this access edits the dossier (owner, invitee).
    pub fn edits(self) -> bool {
        matches!(self, Access::Owner | Access::Invitee)
    }
}

/// The summary of a dossier derived from its purposed fields (lists, search, routing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headline {
    /// Title of the projet or action.
    pub title: String,
    /// Name of the structure.
    pub structure_name: String,
    /// SIRET.
    pub siret: String,
    /// Région code.
    pub region_code: String,
    /// Département code.
    pub departement_code: String,
    /// CPAM de rattachement.
    pub cpam: String,
}

impl Headline {
    /// Reads the headline from the answers of the fields that have a purpose. The département
    /// falls back to the one of the answered région-bearing address or commune when no field has
    /// the DEPARTEMENT purpose.
    pub fn of(form: &FormDefinition, answers: &Answers) -> Self {
        let text = |purpose| {
            form.field_with_purpose(purpose)
                .and_then(|f| answers.get(&f.id))
                .map(display_code)
                .unwrap_or_default()
        };
        Self {
            title: text(FieldPurpose::Title),
            structure_name: text(FieldPurpose::StructureName),
            siret: text(FieldPurpose::Siret),
            region_code: text(FieldPurpose::Region),
            departement_code: text(FieldPurpose::Departement),
            cpam: text(FieldPurpose::Cpam),
        }
    }
}

/// The plain text of a headline answer (codes as codes, choices as their value).
fn display_code(value: &Value) -> String {
    let s = match value {
        Value::Text(t) => t.clone(),
        Value::Siret(s) => s.as_str().to_owned(),
        Value::Region(r) => r.as_str().to_owned(),
        Value::Departement(d) => d.as_str().to_owned(),
        Value::DropDown(Choice::Value(v) | Choice::Other(v)) => v.clone(),
        _ => String::new(),
    };
    s.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::{FieldDefinition, FieldType};
    use crate::ids::{FieldId, Siret};

    #[test]
    fn procedure_ids_follow_their_syntax() {
        assert!(ProcedureId::parse("mst-2024-projet").is_ok());
        for bad in ["", "ab", "2024-mst", "MST", "mst_2024", "mst 2024"] {
            assert!(ProcedureId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_brouillon_and_en_construction_are_editable() {
        let editable: Vec<_> = [
            Status::Brouillon,
            Status::EnConstruction,
            Status::EnInstruction,
            Status::Accepte,
            Status::Refuse,
            Status::SansSuite,
        ]
        .into_iter()
        .filter(|s| s.is_editable())
        .collect();
        assert_eq!(editable, [Status::Brouillon, Status::EnConstruction]);
        for s in ["brouillon", "en_construction", "accepte", "sans_suite"] {
            assert_eq!(Status::parse(s).map(Status::as_str), Some(s));
        }
    }

    #[test]
    fn the_headline_comes_from_the_purposed_fields() {
        let id = |s: &str| FieldId::parse(s).unwrap();
        let form = FormDefinition::new(vec![
            FieldDefinition::new(id("titre"), "Titre", FieldType::Text)
                .with_purpose(FieldPurpose::Title),
            FieldDefinition::new(id("siret"), "SIRET", FieldType::Siret)
                .with_purpose(FieldPurpose::Siret),
            FieldDefinition::new(id("autre"), "Autre", FieldType::Text),
        ])
        .unwrap();
        let mut answers = Answers::new();
        answers.set(
            id("titre"),
            Value::Text("Moi(s) sans tabac à Marseille".into()),
        );
        answers.set(
            id("siret"),
            Value::Siret(Siret::parse("73282932000074").unwrap()),
        );
        answers.set(id("autre"), Value::Text("ignoré".into()));
        let h = Headline::of(&form, &answers);
        assert_eq!(h.title, "Moi(s) sans tabac à Marseille");
        assert_eq!(h.siret, "73282932000074");
        assert_eq!(h.cpam, "");
    }
}
