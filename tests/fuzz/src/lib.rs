//! What the fuzz targets share: the forms under test (the shipped Mois sans tabac *Projet* and
//! *Action* and the end-to-end tests' procedure), and fuzzer-chosen answers, paths and patches
//! built with `arbitrary`, applied the way the forms service applies an `UpdateDossier` patch
//! list (`services/forms/src/app/dossiers.rs`, `apply_patches`, without its store look-ups).
//!
//! Strings are either raw (anything the fuzzer makes) or picked from a dictionary of values that
//! pass the parsers (real SIRETs, INSEE codes, the forms' drop-down values…), so that the fuzzer
//! reaches what lies past the parsers too.

#![forbid(unsafe_code)]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, NaiveDate};
use mst_forms_domain::condition::{Condition, Operand, Operator};
use mst_forms_domain::form::{Constraints, FormDefinition};
use mst_forms_domain::geo::Geo;
use mst_forms_domain::ids::{FieldId, RowId};
use mst_forms_domain::validate::{Violation, check_add_row, parse_at};
use mst_forms_domain::value::{
    AddressInput, Answers, ChampPath, Choice, FileRef, Input, RowInput, Value,
};
use rust_decimal::Decimal;

/// The forms under test, in the domain's serde form (kept equal to the shipped definitions by
/// tests in `services/forms` and `tests/src/support.rs`).
pub static FORMS: LazyLock<Vec<FormDefinition>> = LazyLock::new(|| {
    [
        include_str!("../forms/mst-2024-projet.json"),
        include_str!("../forms/mst-2024-action.json"),
        include_str!("../forms/test.json"),
    ]
    .iter()
    .map(|json| serde_json::from_str(json).expect("a form of tests/fuzz/forms"))
    .collect()
});

/// Every field id of every form under test (children included), in form order.
static FIELD_IDS: LazyLock<Vec<FieldId>> = LazyLock::new(|| {
    FORMS
        .iter()
        .flat_map(|f| f.iter().map(|e| e.field.id.clone()))
        .collect()
});

/// Values that pass the parsers, and a few that almost do.
const WORDS: &[&str] = &[
    "",
    " ",
    "autre",
    "Autre",
    // SIRET: valid (Luhn), La Poste (sum of digits a multiple of 5), invalid, spaced.
    "44306184100047",
    "44306184100048",
    "35600000000048",
    "35600000049837",
    "443 061 841 00047",
    "00000000000000",
    // INSEE codes: communes (Corse, outre-mer, arrondissements), départements, régions.
    "13055",
    "13201",
    "75056",
    "2A004",
    "2B033",
    "97411",
    "97608",
    "13",
    "2A",
    "2B",
    "20",
    "971",
    "976",
    "93",
    "94",
    "11",
    "01",
    "6",
    // Postal codes.
    "13002",
    "20000",
    "1300",
    // Numbers, dates.
    "0",
    "-1",
    "1500.50",
    "1e3",
    "79228162514264337593543950335",
    "-79228162514264337593543950336",
    "0.0000000000000000000000000001",
    "2024-10-01",
    "2024-02-30",
    "+262143-12-31",
    "-262144-01-01",
    // Emails, phones.
    "marie.dupont@asso-souffle.example",
    "a@b",
    "06 12 34 56 78",
    "+33612345678",
    "+262 262 12 34 56",
    "0033612345678",
    // Row ids.
    "r1",
    "5f0c2d3e-9a1b-4c2d-8e3f-0a1b2c3d4e5f",
];

/// Every drop-down value offered by the forms under test.
static CHOICES: LazyLock<Vec<String>> = LazyLock::new(|| {
    FORMS
        .iter()
        .flat_map(|f| f.iter())
        .filter_map(|e| match &e.field.constraints {
            Constraints::Choice(c) => Some(c.values.clone()),
            _ => None,
        })
        .flatten()
        .collect()
});

/// A string: raw, or picked among the dictionary and the forms' drop-down values.
#[derive(Debug, Clone)]
pub struct Str(pub String);

impl<'a> Arbitrary<'a> for Str {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Str(match u.int_in_range(0..=3u8)? {
            0 => String::arbitrary(u)?,
            1 | 2 => u.choose(WORDS)?.to_string(),
            _ => u.choose(&CHOICES)?.clone(),
        }))
    }
}

/// A field id: one of the forms' (most often) or raw.
#[derive(Debug, Clone, Arbitrary)]
pub enum Sel {
    /// Index into the field ids of the forms under test.
    Known(u16),
    /// Any text (parsed like `ChampPatch.field_id`).
    Raw(String),
}

impl Sel {
    /// The field id, or `None` where the gRPC layer would refuse the text.
    pub fn id(&self) -> Option<FieldId> {
        match self {
            Sel::Known(i) => FIELD_IDS.get(usize::from(*i) % FIELD_IDS.len()).cloned(),
            Sel::Raw(s) => FieldId::parse(s).ok(),
        }
    }
}

/// A row id: one of a few (so that rows meet again), or raw.
#[derive(Debug, Clone, Arbitrary)]
pub enum RowSel {
    /// One of four fixed ids.
    Known(u8),
    /// Any text (parsed like `ChampPatch.row`).
    Raw(String),
}

const ROWS: [&str; 4] = [
    "r1",
    "r2",
    "ligne-3",
    "5f0c2d3e-9a1b-4c2d-8e3f-0a1b2c3d4e5f",
];

impl RowSel {
    /// The row id, or `None` where the gRPC layer would refuse the text.
    pub fn id(&self) -> Option<RowId> {
        match self {
            RowSel::Known(i) => RowId::parse(ROWS[usize::from(*i) % ROWS.len()]).ok(),
            RowSel::Raw(s) => RowId::parse(s).ok(),
        }
    }
}

/// The champ a patch names.
#[derive(Debug, Clone, Arbitrary)]
pub enum PathSel {
    /// A top-level field.
    Field(Sel),
    /// A child in a row.
    Child(Sel, RowSel, Sel),
    /// A path in its text form (`field[row].child`), through `ChampPath::parse`.
    Text(String),
}

impl PathSel {
    /// The path, or `None` where the gRPC layer would refuse it.
    pub fn path(&self) -> Option<ChampPath> {
        match self {
            PathSel::Field(f) => Some(ChampPath::field(f.id()?)),
            PathSel::Child(r, row, f) => Some(ChampPath::child(r.id()?, row.id()?, f.id()?)),
            PathSel::Text(s) => ChampPath::parse(s).ok(),
        }
    }
}

/// An address as a client may send it.
#[derive(Debug, Clone, Arbitrary)]
pub struct FuzzAddress {
    label: Str,
    street: Str,
    postal_code: Str,
    city: Str,
    commune_code: Str,
    departement_code: Str,
    region_code: Str,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A file reference as a client may send it.
#[derive(Debug, Clone, Arbitrary)]
pub struct FuzzFile {
    id: Str,
    name: String,
    content_type: Str,
    size: u64,
    sha256: String,
}

/// An answer as a client may send it: every member of `ChampValue`.
#[derive(Debug, Clone, Arbitrary)]
pub enum FuzzInput {
    Text(Str),
    Integer(i64),
    Decimal(Str),
    Date(Str),
    Datetime(i64, u32),
    Checkbox(bool),
    YesNo(bool),
    DropDown(bool, Str),
    MultiDropDown(Vec<Str>, Option<Str>),
    Siret(Str),
    Email(Str),
    Phone(Str),
    Address(FuzzAddress),
    Commune(Str),
    Departement(Str),
    Region(Str),
    Repetition(Vec<(Str, Vec<(Sel, FuzzInput)>)>),
    Files(Vec<FuzzFile>),
    DossierLink(i64),
}

impl FuzzInput {
    /// The domain's input, or `None` where the gRPC layer could not have built it (an instant
    /// out of range, a child id that is not a field id).
    pub fn input(self) -> Option<Input> {
        Some(match self {
            FuzzInput::Text(s) => Input::Text(s.0),
            FuzzInput::Integer(i) => Input::Integer(i),
            FuzzInput::Decimal(s) => Input::Decimal(s.0),
            FuzzInput::Date(s) => Input::Date(s.0),
            FuzzInput::Datetime(secs, nanos) => {
                Input::Datetime(DateTime::from_timestamp(secs, nanos % 1_000_000_000)?)
            }
            FuzzInput::Checkbox(b) => Input::Checkbox(b),
            FuzzInput::YesNo(b) => Input::YesNo(b),
            FuzzInput::DropDown(other, s) => Input::DropDown(if other {
                Choice::Other(s.0)
            } else {
                Choice::Value(s.0)
            }),
            FuzzInput::MultiDropDown(values, other) => Input::MultiDropDown {
                values: values.into_iter().map(|s| s.0).collect(),
                other: other.map(|s| s.0),
            },
            FuzzInput::Siret(s) => Input::Siret(s.0),
            FuzzInput::Email(s) => Input::Email(s.0),
            FuzzInput::Phone(s) => Input::Phone(s.0),
            FuzzInput::Address(a) => Input::Address(AddressInput {
                label: a.label.0,
                street: a.street.0,
                postal_code: a.postal_code.0,
                city: a.city.0,
                commune_code: a.commune_code.0,
                departement_code: a.departement_code.0,
                region_code: a.region_code.0,
                latitude: a.latitude,
                longitude: a.longitude,
            }),
            FuzzInput::Commune(s) => Input::Commune(s.0),
            FuzzInput::Departement(s) => Input::Departement(s.0),
            FuzzInput::Region(s) => Input::Region(s.0),
            FuzzInput::Repetition(rows) => Input::Repetition(
                rows.into_iter()
                    .map(|(id, champs)| {
                        let champs = champs
                            .into_iter()
                            .map(|(f, v)| {
                                let id = match f {
                                    Sel::Known(_) => f.id()?.as_str().to_owned(),
                                    Sel::Raw(s) => s,
                                };
                                Some((id, v.input()?))
                            })
                            .collect::<Option<Vec<_>>>()?;
                        Some(RowInput { id: id.0, champs })
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
            FuzzInput::Files(files) => Input::Files(
                files
                    .into_iter()
                    .map(|f| FileRef {
                        id: f.id.0,
                        name: f.name,
                        content_type: f.content_type.0,
                        size: f.size,
                        sha256: f.sha256,
                    })
                    .collect(),
            ),
            FuzzInput::DossierLink(n) => Input::DossierLink(n),
        })
    }
}

/// One patch of an `UpdateDossierRequest`.
#[derive(Debug, Clone, Arbitrary)]
pub enum Patch {
    Set(PathSel, FuzzInput),
    Clear(PathSel),
    AddRow(Sel, RowSel),
    RemoveRow(Sel, RowSel),
}

/// Applies `patches` to `answers` as the forms service does, checking after each one what a
/// save guarantees; returns the violations (which leave the answers as they were).
pub fn apply(
    form: &FormDefinition,
    answers: &mut Answers,
    patches: Vec<Patch>,
    geo: &dyn Geo,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for patch in patches {
        let before = answers.clone();
        match patch {
            Patch::Set(path, input) => {
                let (Some(path), Some(input)) = (path.path(), input.input()) else {
                    continue;
                };
                let value = match parse_at(form, &path, input, geo) {
                    Ok(v) => v,
                    Err(v) => {
                        assert_eq!(*answers, before, "a refused value changed nothing");
                        violations.push(v);
                        continue;
                    }
                };
                check_value(form, &path, &value);
                match answers.set_at(&path, value.clone()) {
                    Ok(_) => assert_eq!(answers.get_at(&path), Some(&value), "saved: {path}"),
                    Err(e) => {
                        assert_eq!(*answers, before, "a refused save changed nothing");
                        violations.push(Violation::new(path, e.message_fr()));
                    }
                }
            }
            Patch::Clear(path) => {
                let Some(path) = path.path() else { continue };
                match answers.clear_at(&path) {
                    Ok(_) => assert_eq!(answers.get_at(&path), None, "cleared: {path}"),
                    Err(e) => violations.push(Violation::new(path, e.message_fr())),
                }
            }
            Patch::AddRow(rep, row) => {
                let (Some(rep), Some(row)) = (rep.id(), row.id()) else {
                    continue;
                };
                if let Err(v) = check_add_row(form, answers, &rep, &row) {
                    violations.push(v);
                    continue;
                }
                match answers.add_row(rep.clone(), row.clone()) {
                    Ok(_) => assert!(answers.row(&rep, &row).is_some(), "row added"),
                    Err(e) => {
                        violations.push(Violation::new(ChampPath::field(rep), e.message_fr()))
                    }
                }
            }
            Patch::RemoveRow(rep, row) => {
                let (Some(rep), Some(row)) = (rep.id(), row.id()) else {
                    continue;
                };
                match answers.remove_row(&rep, &row) {
                    Ok(_) => assert!(answers.row(&rep, &row).is_none(), "row removed"),
                    Err(e) => {
                        violations.push(Violation::new(ChampPath::field(rep), e.message_fr()))
                    }
                }
            }
        }
    }
    violations
}

/// What an accepted value guarantees: it fits its field's type, and survives the JSON the store
/// writes.
fn check_value(form: &FormDefinition, path: &ChampPath, value: &Value) {
    let field = form
        .entry(path.field_id())
        .expect("a value was accepted for a field of the form")
        .field;
    assert!(value.fits(field.field_type), "{path}: {value:?} fits");
    let json = serde_json::to_string(value).expect("a value serialises");
    let back: Value = serde_json::from_str(&json).expect("a stored value reads back");
    assert_eq!(
        &back, value,
        "{path}: stored value reads back equal: {json}"
    );
}

/// A condition tree of at most `depth` levels of groups, over the forms' field ids.
pub fn condition(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Condition> {
    let kind = if depth == 0 {
        2
    } else {
        u.int_in_range(0..=2u8)?
    };
    Ok(match kind {
        0 | 1 => {
            let n = u.int_in_range(0..=4usize)?;
            let items = (0..n)
                .map(|_| condition(u, depth - 1))
                .collect::<arbitrary::Result<Vec<_>>>()?;
            if kind == 0 {
                Condition::All(items)
            } else {
                Condition::Any(items)
            }
        }
        _ => Condition::Compare {
            field: Sel::arbitrary(u)?
                .id()
                .unwrap_or_else(|| FIELD_IDS[0].clone()),
            operator: *u.choose(&OPERATORS)?,
            operand: if bool::arbitrary(u)? {
                Some(operand(u)?)
            } else {
                None
            },
        },
    })
}

const OPERATORS: [Operator; 11] = [
    Operator::Equals,
    Operator::NotEquals,
    Operator::Lt,
    Operator::Lte,
    Operator::Gt,
    Operator::Gte,
    Operator::Includes,
    Operator::InDepartement,
    Operator::InRegion,
    Operator::IsEmpty,
    Operator::IsNotEmpty,
];

fn operand(u: &mut Unstructured<'_>) -> arbitrary::Result<Operand> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => Operand::Text(Str::arbitrary(u)?.0),
        1 => Operand::Integer(i64::arbitrary(u)?),
        2 => Operand::Decimal(
            Decimal::try_from_i128_with_scale(i128::arbitrary(u)? >> 32, u32::arbitrary(u)? % 29)
                .unwrap_or_default(),
        ),
        3 => Operand::Date(
            NaiveDate::from_num_days_from_ce_opt(i32::arbitrary(u)?).unwrap_or_default(),
        ),
        _ => Operand::Boolean(bool::arbitrary(u)?),
    })
}
