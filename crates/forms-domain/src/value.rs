//! Answers of a dossier: [`Input`] is an answer as a client sent it (strings not yet parsed),
//! [`Value`] an answer that passed [`super::validate::parse_input`], and [`Answers`] the answers of
//! one dossier by field id, with the operations of a field-level patch (set, clear, add or remove a
//! repetition row, set or clear a child in a row). [`ChampPath`] names one answer
//! (`p_siret`, `p_depenses[<row_id>].p_dep_montant`).
//!
//! Every type here serialises with serde: the store keeps answers as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, TimeDelta, Utc, Weekday};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::form::FieldType;
use super::ids::{
    Email, FieldId, FieldIdError, InseeCommune, InseeDepartement, InseeRegion, Phone, RowId,
    RowIdError, Siret,
};

/// A validated answer. Which variant a field takes depends on its [`FieldType`]
/// (see [`Value::fits`]); HEADER_SECTION and EXPLICATION take none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// TEXT and TEXTAREA.
    Text(String),
    /// INTEGER.
    Integer(i64),
    /// DECIMAL (exact; serialised as a decimal string).
    Decimal(Decimal),
    /// DATE.
    Date(NaiveDate),
    /// DATETIME, an instant.
    Datetime(DateTime<Utc>),
    /// CHECKBOX: true when ticked.
    Checkbox(bool),
    /// YES_NO: true for "oui".
    YesNo(bool),
    /// DROP_DOWN.
    DropDown(Choice),
    /// MULTI_DROP_DOWN: allowed values in the order of the field's list, plus the "autre" text.
    MultiDropDown {
        /// Selected allowed values.
        values: Vec<String>,
        /// Free text for "autre"; `None` when "autre" is not selected.
        other: Option<String>,
    },
    /// SIRET.
    Siret(Siret),
    /// EMAIL.
    Email(Email),
    /// PHONE, E.164.
    Phone(Phone),
    /// ADDRESS.
    Address(Address),
    /// COMMUNE: INSEE code.
    Commune(InseeCommune),
    /// DEPARTEMENT: INSEE code.
    Departement(InseeDepartement),
    /// REGION: INSEE code.
    Region(InseeRegion),
    /// REPETITION: rows of child answers, in display order.
    Repetition(Vec<Row>),
    /// PIECE_JUSTIFICATIVE: attached files, in upload order.
    Files(Vec<FileRef>),
    /// DOSSIER_LINK: number of another dossier.
    DossierLink(i64),
}

impl Value {
    /// Whether this kind of value is the answer member of `field_type`.
    pub fn fits(&self, field_type: FieldType) -> bool {
        use FieldType as T;
        matches!(
            (self, field_type),
            (Value::Text(_), T::Text | T::Textarea)
                | (Value::Integer(_), T::Integer)
                | (Value::Decimal(_), T::Decimal)
                | (Value::Date(_), T::Date)
                | (Value::Datetime(_), T::Datetime)
                | (Value::Checkbox(_), T::Checkbox)
                | (Value::YesNo(_), T::YesNo)
                | (Value::DropDown(_), T::DropDown)
                | (Value::MultiDropDown { .. }, T::MultiDropDown)
                | (Value::Siret(_), T::Siret)
                | (Value::Email(_), T::Email)
                | (Value::Phone(_), T::Phone)
                | (Value::Address(_), T::Address)
                | (Value::Commune(_), T::Commune)
                | (Value::Departement(_), T::Departement)
                | (Value::Region(_), T::Region)
                | (Value::Repetition(_), T::Repetition)
                | (Value::Files(_), T::PieceJustificative)
                | (Value::DossierLink(_), T::DossierLink)
        )
    }

    /// Whether the value carries no answer: blank text (including a blank "autre"), nothing
    /// selected, an address with no part filled in, no row, no file. An unticked checkbox is an
    /// answer (`false`); [`super::validate`] treats it specially for required fields.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Text(s) => s.trim().is_empty(),
            Value::DropDown(Choice::Value(v)) => v.is_empty(),
            Value::DropDown(Choice::Other(s)) => s.trim().is_empty(),
            Value::MultiDropDown { values, other } => {
                values.is_empty() && other.as_deref().is_none_or(|o| o.trim().is_empty())
            }
            Value::Address(a) => a.is_empty(),
            Value::Repetition(rows) => rows.is_empty(),
            Value::Files(files) => files.is_empty(),
            Value::Integer(_)
            | Value::Decimal(_)
            | Value::Date(_)
            | Value::Datetime(_)
            | Value::Checkbox(_)
            | Value::YesNo(_)
            | Value::Siret(_)
            | Value::Email(_)
            | Value::Phone(_)
            | Value::Commune(_)
            | Value::Departement(_)
            | Value::Region(_)
            | Value::DossierLink(_) => false,
        }
    }
}

/// Answer to a DROP_DOWN field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// One of the field's allowed values.
    Value(String),
    /// Free text for "autre" (only when the field allows it).
    Other(String),
}

/// A French postal address (as the Base Adresse Nationale returns it). Codes, when present, exist
/// and agree with each other (checked on save through `Geo`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Address {
    /// The whole address on one line.
    pub label: String,
    /// Number and street.
    pub street: String,
    /// Postal code, 5 digits (or empty).
    pub postal_code: String,
    /// City name.
    pub city: String,
    /// INSEE code of the commune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commune_code: Option<InseeCommune>,
    /// INSEE code of the département (filled in from the commune when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departement_code: Option<InseeDepartement>,
    /// INSEE code of the région (filled in from the commune or département when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<InseeRegion>,
    /// Latitude (WGS84), when geocoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude (WGS84), when geocoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

impl Address {
    /// Whether no part of the address is filled in.
    pub fn is_empty(&self) -> bool {
        [&self.label, &self.street, &self.postal_code, &self.city]
            .iter()
            .all(|s| s.trim().is_empty())
            && self.commune_code.is_none()
            && self.departement_code.is_none()
            && self.region_code.is_none()
    }
}

/// One row of a repetition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Row {
    /// Stable id chosen by the client when it added the row.
    pub id: RowId,
    /// Answers of the row's child fields.
    #[serde(default)]
    pub champs: BTreeMap<FieldId, Value>,
}

impl Row {
    /// An empty row.
    pub fn new(id: RowId) -> Self {
        Self {
            id,
            champs: BTreeMap::new(),
        }
    }

    /// The answer of a child field in this row.
    pub fn get(&self, child: &FieldId) -> Option<&Value> {
        self.champs.get(child)
    }
}

/// A file attached to a PIECE_JUSTIFICATIVE champ (uploaded beforehand).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct FileRef {
    /// Id of the stored file.
    pub id: String,
    /// File name as uploaded.
    pub name: String,
    /// Media type, checked against the content on upload.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hexadecimal.
    pub sha256: String,
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

/// An answer as a client sent it, before validation: the member of `ChampValue` that was set,
/// with strings not yet parsed. [`super::validate::parse_input`] turns it into a [`Value`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// `text`.
    Text(String),
    /// `integer`.
    Integer(i64),
    /// `decimal`: a canonical decimal string expected (`-1500.50`).
    Decimal(String),
    /// `date`: `YYYY-MM-DD` expected.
    Date(String),
    /// `datetime`.
    Datetime(DateTime<Utc>),
    /// `checkbox`.
    Checkbox(bool),
    /// `yes_no`.
    YesNo(bool),
    /// `drop_down`.
    DropDown(Choice),
    /// `multi_drop_down`.
    MultiDropDown {
        /// Selected values.
        values: Vec<String>,
        /// "Autre" text, when "autre" is selected.
        other: Option<String>,
    },
    /// `siret`.
    Siret(String),
    /// `email`.
    Email(String),
    /// `phone`.
    Phone(String),
    /// `address`.
    Address(AddressInput),
    /// `commune`: INSEE code.
    Commune(String),
    /// `departement`: INSEE code.
    Departement(String),
    /// `region`: INSEE code.
    Region(String),
    /// `repetition`: the whole list of rows.
    Repetition(Vec<RowInput>),
    /// `piece_justificative`: the files of the champ.
    Files(Vec<FileRef>),
    /// `dossier_link`.
    DossierLink(i64),
}

/// An address as a client sent it; empty strings mean "absent".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AddressInput {
    /// The whole address on one line.
    pub label: String,
    /// Number and street.
    pub street: String,
    /// Postal code.
    pub postal_code: String,
    /// City name.
    pub city: String,
    /// INSEE code of the commune.
    pub commune_code: String,
    /// INSEE code of the département.
    pub departement_code: String,
    /// INSEE code of the région.
    pub region_code: String,
    /// Latitude.
    pub latitude: Option<f64>,
    /// Longitude.
    pub longitude: Option<f64>,
}

/// A repetition row as a client sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RowInput {
    /// Row id (not yet parsed).
    pub id: String,
    /// Child answers: field id (not yet parsed) and answer.
    pub champs: Vec<(String, Input)>,
}

// ---------------------------------------------------------------------------------------------
// ChampPath
// ---------------------------------------------------------------------------------------------

/// Names one answer: a top-level field (`p_siret`) or a child field in a repetition row
/// (`p_depenses[5f0c…].p_dep_montant`). Used in patches, history and field violations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ChampPath {
    /// A top-level field.
    Field(FieldId),
    /// A child field in one row of a repetition.
    Child {
        /// The REPETITION field.
        repetition: FieldId,
        /// The row.
        row: RowId,
        /// The child field.
        field: FieldId,
    },
}

/// Why a string is not a [`ChampPath`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChampPathError {
    /// Not `field` nor `repetition[row].field`.
    #[error("Le chemin du champ doit être de la forme « champ » ou « repetition[ligne].champ »")]
    Malformed,
    /// A field id in the path is invalid.
    #[error("{0}")]
    Field(#[from] FieldIdError),
    /// The row id in the path is invalid.
    #[error("{0}")]
    Row(#[from] RowIdError),
}

impl ChampPathError {
    /// The French message shown to the user.
    pub fn message_fr(&self) -> String {
        self.to_string()
    }
}

impl ChampPath {
    /// Parses `field` or `repetition[row].field`.
    pub fn parse(s: &str) -> Result<Self, ChampPathError> {
        let Some((repetition, rest)) = s.split_once('[') else {
            return Ok(Self::Field(FieldId::parse(s)?));
        };
        let (row, field) = rest.split_once("].").ok_or(ChampPathError::Malformed)?;
        Ok(Self::Child {
            repetition: FieldId::parse(repetition)?,
            row: RowId::parse(row)?,
            field: FieldId::parse(field)?,
        })
    }

    /// Path of a top-level field.
    pub fn field(id: FieldId) -> Self {
        Self::Field(id)
    }

    /// Path of a child field in a row.
    pub fn child(repetition: FieldId, row: RowId, field: FieldId) -> Self {
        Self::Child {
            repetition,
            row,
            field,
        }
    }

    /// The field the path ends at (the child field for a row path).
    pub fn field_id(&self) -> &FieldId {
        match self {
            Self::Field(id) | Self::Child { field: id, .. } => id,
        }
    }
}

impl fmt::Display for ChampPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(id) => write!(f, "{id}"),
            Self::Child {
                repetition,
                row,
                field,
            } => write!(f, "{repetition}[{row}].{field}"),
        }
    }
}

impl FromStr for ChampPath {
    type Err = ChampPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ChampPath {
    type Error = ChampPathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ChampPath> for String {
    fn from(p: ChampPath) -> String {
        p.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// The answers of one dossier, by top-level field id (children live in the rows of their
/// repetition). Ordered by id so that its JSON is deterministic; form order comes from the
/// [`super::form::FormDefinition`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Answers(BTreeMap<FieldId, Value>);

/// Why a row operation could not apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswersError {
    /// The field holds an answer that is not a repetition.
    #[error("Le champ « {field} » n'est pas un bloc répétable")]
    NotARepetition {
        /// The field.
        field: FieldId,
    },
    /// The repetition has no row with this id.
    #[error("La ligne {row} n'existe pas dans le bloc répétable « {field} »")]
    RowNotFound {
        /// The repetition.
        field: FieldId,
        /// The missing row.
        row: RowId,
    },
}

impl AnswersError {
    /// The French message shown to the user.
    pub fn message_fr(&self) -> String {
        self.to_string()
    }
}

impl Answers {
    /// No answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The answer of a top-level field.
    pub fn get(&self, id: &FieldId) -> Option<&Value> {
        self.0.get(id)
    }

    /// Sets the answer of a top-level field; returns the previous one.
    pub fn set(&mut self, id: FieldId, value: Value) -> Option<Value> {
        self.0.insert(id, value)
    }

    /// Removes the answer of a top-level field; returns it.
    pub fn clear(&mut self, id: &FieldId) -> Option<Value> {
        self.0.remove(id)
    }

    /// Top-level answers, by field id.
    pub fn iter(&self) -> impl Iterator<Item = (&FieldId, &Value)> {
        self.0.iter()
    }

    /// Number of top-level answers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no answer at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rows of a repetition (none when unanswered or not a repetition).
    pub fn rows(&self, repetition: &FieldId) -> &[Row] {
        match self.0.get(repetition) {
            Some(Value::Repetition(rows)) => rows,
            _ => &[],
        }
    }

    /// One row of a repetition.
    pub fn row(&self, repetition: &FieldId, row: &RowId) -> Option<&Row> {
        self.rows(repetition).iter().find(|r| &r.id == row)
    }

    /// Appends an empty row. Idempotent: returns `Ok(false)` when the row already exists.
    pub fn add_row(&mut self, repetition: FieldId, row: RowId) -> Result<bool, AnswersError> {
        let rows = match self
            .0
            .entry(repetition.clone())
            .or_insert_with(|| Value::Repetition(Vec::new()))
        {
            Value::Repetition(rows) => rows,
            _ => return Err(AnswersError::NotARepetition { field: repetition }),
        };
        if rows.iter().any(|r| r.id == row) {
            return Ok(false);
        }
        rows.push(Row::new(row));
        Ok(true)
    }

    /// Removes a row; a missing row (or an unanswered repetition) is a no-op (`Ok(None)`).
    pub fn remove_row(
        &mut self,
        repetition: &FieldId,
        row: &RowId,
    ) -> Result<Option<Row>, AnswersError> {
        match self.0.get_mut(repetition) {
            None => Ok(None),
            Some(Value::Repetition(rows)) => Ok(rows
                .iter()
                .position(|r| &r.id == row)
                .map(|i| rows.remove(i))),
            Some(_) => Err(AnswersError::NotARepetition {
                field: repetition.clone(),
            }),
        }
    }

    /// Sets a child answer in an existing row; returns the previous one.
    pub fn set_in_row(
        &mut self,
        repetition: &FieldId,
        row: &RowId,
        child: FieldId,
        value: Value,
    ) -> Result<Option<Value>, AnswersError> {
        let target = self
            .row_mut(repetition, row)?
            .ok_or_else(|| AnswersError::RowNotFound {
                field: repetition.clone(),
                row: row.clone(),
            })?;
        Ok(target.champs.insert(child, value))
    }

    /// Removes a child answer from a row; returns it. Idempotent: a missing row clears nothing.
    pub fn clear_in_row(
        &mut self,
        repetition: &FieldId,
        row: &RowId,
        child: &FieldId,
    ) -> Result<Option<Value>, AnswersError> {
        Ok(self
            .row_mut(repetition, row)?
            .and_then(|r| r.champs.remove(child)))
    }

    /// The answer at a path.
    pub fn get_at(&self, path: &ChampPath) -> Option<&Value> {
        match path {
            ChampPath::Field(id) => self.get(id),
            ChampPath::Child {
                repetition,
                row,
                field,
            } => self.row(repetition, row).and_then(|r| r.get(field)),
        }
    }

    /// Sets the answer at a path (the row must exist); returns the previous one.
    pub fn set_at(
        &mut self,
        path: &ChampPath,
        value: Value,
    ) -> Result<Option<Value>, AnswersError> {
        match path {
            ChampPath::Field(id) => Ok(self.set(id.clone(), value)),
            ChampPath::Child {
                repetition,
                row,
                field,
            } => self.set_in_row(repetition, row, field.clone(), value),
        }
    }

    /// Removes the answer at a path; returns it.
    pub fn clear_at(&mut self, path: &ChampPath) -> Result<Option<Value>, AnswersError> {
        match path {
            ChampPath::Field(id) => Ok(self.clear(id)),
            ChampPath::Child {
                repetition,
                row,
                field,
            } => self.clear_in_row(repetition, row, field),
        }
    }

    fn row_mut(
        &mut self,
        repetition: &FieldId,
        row: &RowId,
    ) -> Result<Option<&mut Row>, AnswersError> {
        match self.0.get_mut(repetition) {
            None => Ok(None),
            Some(Value::Repetition(rows)) => Ok(rows.iter_mut().find(|r| &r.id == row)),
            Some(_) => Err(AnswersError::NotARepetition {
                field: repetition.clone(),
            }),
        }
    }
}

impl FromIterator<(FieldId, Value)> for Answers {
    fn from_iter<I: IntoIterator<Item = (FieldId, Value)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl IntoIterator for Answers {
    type Item = (FieldId, Value);
    type IntoIter = std::collections::btree_map::IntoIter<FieldId, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

// ---------------------------------------------------------------------------------------------
// Europe/Paris dates
// ---------------------------------------------------------------------------------------------

/// The calendar date of an instant in Europe/Paris (DATETIME answers compare by it).
///
/// Uses the EU summer-time rule in force since 1996 (UTC+2 from the last Sunday of March,
/// 01:00 UTC, to the last Sunday of October, 01:00 UTC; UTC+1 otherwise), which is all a
/// calendar-date comparison needs without a time-zone database.
pub fn paris_date(instant: DateTime<Utc>) -> NaiveDate {
    paris_datetime(instant).date()
}

/// The wall-clock date and time of an instant in Europe/Paris (same rule as [`paris_date`]).
pub fn paris_datetime(instant: DateTime<Utc>) -> NaiveDateTime {
    let utc = instant.naive_utc();
    let summer = |year: i32| -> Option<(NaiveDateTime, NaiveDateTime)> {
        Some((
            last_sunday(year, 3)?.and_hms_opt(1, 0, 0)?,
            last_sunday(year, 10)?.and_hms_opt(1, 0, 0)?,
        ))
    };
    let offset = match summer(utc.year()) {
        Some((start, end)) if start <= utc && utc < end => 2,
        _ => 1,
    };
    utc.checked_add_signed(TimeDelta::hours(offset))
        .unwrap_or(utc)
}

/// Last Sunday of a 31-day month.
fn last_sunday(year: i32, month: u32) -> Option<NaiveDate> {
    let last = NaiveDate::from_ymd_opt(year, month, 31)?;
    let back = last.weekday().num_days_from_sunday();
    let sunday = last.checked_sub_days(Days::new(u64::from(back)))?;
    (sunday.weekday() == Weekday::Sun).then_some(sunday)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fid(s: &str) -> FieldId {
        FieldId::parse(s).expect("test field id")
    }

    fn rid(s: &str) -> RowId {
        RowId::parse(s).expect("test row id")
    }

    #[test]
    fn champ_paths_print_and_parse_back() {
        let top = ChampPath::parse("p_siret").expect("top");
        assert_eq!(top, ChampPath::field(fid("p_siret")));
        assert_eq!(top.to_string(), "p_siret");
        let child = ChampPath::parse("p_depenses[5f0c-1].p_dep_montant").expect("child");
        assert_eq!(
            child,
            ChampPath::child(fid("p_depenses"), rid("5f0c-1"), fid("p_dep_montant"))
        );
        assert_eq!(child.to_string(), "p_depenses[5f0c-1].p_dep_montant");
        assert_eq!(child.field_id(), &fid("p_dep_montant"));
        for bad in [
            "", "P", "a[b]", "a[b]c", "a[].c", "a[b].", "[b].c", "a[b c].d", "a[b].c.d",
        ] {
            assert!(ChampPath::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&child).expect("json");
        assert_eq!(json, "\"p_depenses[5f0c-1].p_dep_montant\"");
    }

    #[test]
    fn rows_are_added_idempotently_and_removed_as_no_ops_when_missing() {
        let mut answers = Answers::new();
        let rep = fid("p_depenses");
        assert_eq!(answers.add_row(rep.clone(), rid("r1")), Ok(true));
        assert_eq!(answers.add_row(rep.clone(), rid("r2")), Ok(true));
        assert_eq!(answers.add_row(rep.clone(), rid("r1")), Ok(false));
        assert_eq!(answers.rows(&rep).len(), 2);
        assert_eq!(
            answers.set_in_row(&rep, &rid("r2"), fid("p_montant"), Value::Integer(3)),
            Ok(None)
        );
        let path = ChampPath::parse("p_depenses[r2].p_montant").expect("path");
        assert_eq!(answers.get_at(&path), Some(&Value::Integer(3)));
        assert_eq!(
            answers.set_in_row(&rep, &rid("r9"), fid("p_montant"), Value::Integer(3)),
            Err(AnswersError::RowNotFound {
                field: rep.clone(),
                row: rid("r9")
            })
        );
        assert_eq!(answers.clear_at(&path), Ok(Some(Value::Integer(3))));
        assert_eq!(answers.clear_at(&path), Ok(None));
        assert_eq!(answers.clear_in_row(&rep, &rid("r9"), &fid("x")), Ok(None));
        assert!(
            answers
                .remove_row(&rep, &rid("r1"))
                .ok()
                .flatten()
                .is_some()
        );
        assert_eq!(answers.remove_row(&rep, &rid("r1")), Ok(None));
        assert_eq!(answers.remove_row(&fid("other"), &rid("r1")), Ok(None));
        assert_eq!(answers.rows(&rep).len(), 1);
        assert_eq!(
            answers.row(&rep, &rid("r2")).map(|r| r.id.as_str()),
            Some("r2")
        );
    }

    #[test]
    fn row_operations_on_a_non_repetition_answer_are_refused() {
        let mut answers = Answers::new();
        let id = fid("p_titre");
        answers.set(id.clone(), Value::Text("x".into()));
        let err = Err(AnswersError::NotARepetition { field: id.clone() });
        assert_eq!(answers.add_row(id.clone(), rid("r")).map(|_| ()), err);
        assert_eq!(answers.remove_row(&id, &rid("r")).map(|_| ()), err);
        assert_eq!(
            answers
                .set_in_row(&id, &rid("r"), fid("c"), Value::Integer(1))
                .map(|_| ()),
            err
        );
        assert!(answers.rows(&id).is_empty());
        assert_eq!(
            answers.set(id.clone(), Value::Integer(1)),
            Some(Value::Text("x".into()))
        );
        assert_eq!(answers.clear(&id), Some(Value::Integer(1)));
        assert!(answers.is_empty());
    }

    #[test]
    fn answers_round_trip_through_json() {
        let mut answers: Answers = [
            (fid("a_text"), Value::Text("Bonjour".into())),
            (fid("a_dec"), Value::Decimal(Decimal::new(150050, 2))),
            (
                fid("a_date"),
                Value::Date(NaiveDate::from_ymd_opt(2024, 9, 1).expect("date")),
            ),
            (
                fid("a_multi"),
                Value::MultiDropDown {
                    values: vec!["A".into()],
                    other: Some("Z".into()),
                },
            ),
            (
                fid("a_siret"),
                Value::Siret(Siret::parse("44306184100047").expect("siret")),
            ),
            (
                fid("a_addr"),
                Value::Address(Address {
                    label: "1 rue X 13001 Marseille".into(),
                    commune_code: InseeCommune::parse("13055").ok(),
                    latitude: Some(43.3),
                    ..Address::default()
                }),
            ),
        ]
        .into_iter()
        .collect();
        answers.add_row(fid("a_rep"), rid("r1")).expect("add row");
        let json = serde_json::to_string(&answers).expect("json");
        assert!(
            json.contains("\"a_dec\":{\"decimal\":\"1500.50\"}"),
            "{json}"
        );
        assert!(
            json.contains("\"a_date\":{\"date\":\"2024-09-01\"}"),
            "{json}"
        );
        let back: Answers = serde_json::from_str(&json).expect("back");
        assert_eq!(back, answers);
    }

    /// Found by the `form_answers` / `condition` fuzz targets: answers are stored as JSON, and
    /// serde_json's default float parsing is not correctly rounded, so an accepted latitude
    /// came back one unit in the last place off. The workspace enables `float_roundtrip`.
    #[test]
    fn every_accepted_coordinate_reads_back_exactly_from_its_json() {
        for latitude in [
            1.1448512168956955e-259,
            43.296_482,
            -89.999_999_999_999_99,
            5e-324,
        ] {
            let value = Value::Address(Address {
                latitude: Some(latitude),
                longitude: Some(-latitude * 2.0),
                ..Address::default()
            });
            let json = serde_json::to_string(&value).expect("json");
            let back: Value = serde_json::from_str(&json).expect("back");
            assert_eq!(back, value, "{json}");
        }
    }

    #[test]
    fn values_know_their_field_type_and_emptiness() {
        assert!(Value::Text(String::new()).fits(FieldType::Textarea));
        assert!(!Value::Text(String::new()).fits(FieldType::Email));
        assert!(Value::Files(vec![]).fits(FieldType::PieceJustificative));
        assert!(!Value::Integer(1).fits(FieldType::HeaderSection));
        assert!(Value::Text("  ".into()).is_empty());
        assert!(Value::DropDown(Choice::Other(" ".into())).is_empty());
        assert!(!Value::Checkbox(false).is_empty());
        assert!(Value::Address(Address::default()).is_empty());
        assert!(
            Value::MultiDropDown {
                values: vec![],
                other: None
            }
            .is_empty()
        );
    }

    #[test]
    fn paris_dates_follow_summer_time() {
        let at = |y, m, d, h, min| {
            Utc.with_ymd_and_hms(y, m, d, h, min, 0)
                .single()
                .expect("instant")
        };
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("date");
        // Winter: UTC+1.
        assert_eq!(paris_date(at(2024, 1, 15, 22, 59)), date(2024, 1, 15));
        assert_eq!(paris_date(at(2024, 1, 15, 23, 0)), date(2024, 1, 16));
        // Summer: UTC+2.
        assert_eq!(paris_date(at(2024, 7, 1, 21, 59)), date(2024, 7, 1));
        assert_eq!(paris_date(at(2024, 7, 1, 22, 0)), date(2024, 7, 2));
        // 2024 changes: 31 March and 27 October at 01:00 UTC.
        assert_eq!(paris_date(at(2024, 3, 30, 22, 30)), date(2024, 3, 30));
        assert_eq!(paris_date(at(2024, 3, 31, 22, 30)), date(2024, 4, 1));
        assert_eq!(paris_date(at(2024, 10, 26, 22, 30)), date(2024, 10, 27));
        assert_eq!(paris_date(at(2024, 10, 27, 22, 30)), date(2024, 10, 27));
        // Extremes do not panic.
        let _ = paris_date(DateTime::<Utc>::MAX_UTC);
        let _ = paris_date(DateTime::<Utc>::MIN_UTC);
    }
}
