//! Validation of answers, in two moments:
//!
//! - on every save, [`parse_input`] / [`parse_at`] turn a client's [`Input`] into a [`Value`]:
//!   the kind must match the field type, the syntax must be right and the field's own constraints
//!   must hold (lengths, pattern, bounds, allowed values, existing INSEE codes, number of files…).
//!   An invalid value is refused then, so what is stored is always well-formed;
//! - on deposit, [`check_for_deposit`] lists every problem of the whole dossier, in form order:
//!   visible required fields without an answer, rows missing in required repetitions, bounds
//!   given by other fields (`min_field` / `max_field`), and the save-time rules again (the
//!   referential of communes may have changed in between). Hidden fields are ignored.
//!
//! [`visible_answers`] keeps only what is visible (exports and PDFs show nothing else).
//! Messages are French sentences for end users; they never contain more than a short excerpt
//! of what the user typed.

use std::collections::HashSet;
use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::condition::{Visibility, visibility};
use super::form::{
    ChoiceConstraints, Constraints, FieldDefinition, FieldType, FileConstraints, FormDefinition,
};
use super::geo::Geo;
use super::ids::{
    Email, FieldId, InseeCommune, InseeDepartement, InseeRegion, Phone, RowId, Siret,
};
use super::value::{
    Address, AddressInput, Answers, ChampPath, Choice, FileRef, Input, Row, RowInput, Value,
    paris_date,
};

/// Longest text answer, in characters, whatever the field allows.
pub const TEXT_MAX_CHARS: usize = 100_000;
/// Longest part of an address (label, street, city), in characters.
pub const ADDRESS_PART_MAX_CHARS: usize = 1_000;
/// Longest excerpt of a user's input quoted in a message, in characters.
const QUOTE_MAX_CHARS: usize = 60;

/// A problem with one answer: where, and a French message for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Violation {
    /// The answer concerned.
    pub path: ChampPath,
    /// What is wrong, in French.
    pub message: String,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: ChampPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} : {}", self.path, self.message)
    }
}

impl std::error::Error for Violation {}

const MSG_REQUIRED: &str = "Ce champ est obligatoire";
const MSG_CHECKBOX_REQUIRED: &str = "Cette case doit être cochée";
const MSG_WRONG_TYPE: &str = "Type de réponse invalide pour ce champ";
const MSG_DISPLAY_ONLY: &str = "Ce champ n'attend pas de réponse";
const MSG_UNKNOWN_FIELD: &str = "Ce champ n'existe pas dans le formulaire";

// ---------------------------------------------------------------------------------------------
// Save time
// ---------------------------------------------------------------------------------------------

/// Validates a client's answer to a field on save. Violations name the field as a top-level path
/// (and `field[row].child` for a problem inside a whole repetition); for a child answered in one
/// row, use [`parse_at`], which names the row.
pub fn parse_input(def: &FieldDefinition, input: Input, geo: &dyn Geo) -> Result<Value, Violation> {
    parse_value(def, input, geo, &ChampPath::Field(def.id.clone()))
}

/// Validates a client's answer at a path of the form: a top-level field, or a child of a
/// repetition in a row (the row's existence is checked when the value is stored, see
/// [`Answers::set_at`]).
pub fn parse_at(
    form: &FormDefinition,
    path: &ChampPath,
    input: Input,
    geo: &dyn Geo,
) -> Result<Value, Violation> {
    let def = field_at(form, path)?;
    parse_value(def, input, geo, path)
}

/// Checks that a row can be added to a repetition: the field is a top-level REPETITION and holds
/// fewer rows than its maximum. Adding a row that exists already is accepted (it is a no-op).
pub fn check_add_row(
    form: &FormDefinition,
    answers: &Answers,
    repetition: &FieldId,
    row: &RowId,
) -> Result<(), Violation> {
    let path = ChampPath::Field(repetition.clone());
    let def = field_at(form, &path)?;
    if def.field_type != FieldType::Repetition {
        return Err(Violation::new(path, "Ce champ n'est pas un bloc répétable"));
    }
    if answers.row(repetition, row).is_some() {
        return Ok(());
    }
    let rows = answers.rows(repetition).len();
    match max_rows(def) {
        Some(max) if rows >= max => Err(Violation::new(path, too_many_rows(max))),
        _ => Ok(()),
    }
}

/// The field a path names, or a violation.
fn field_at<'f>(
    form: &'f FormDefinition,
    path: &ChampPath,
) -> Result<&'f FieldDefinition, Violation> {
    let entry = form.entry(path.field_id());
    let found = match (path, entry) {
        (ChampPath::Field(_), Some(e)) if e.parent.is_none() => Some(e.field),
        (ChampPath::Field(_), Some(_)) => {
            return Err(Violation::new(
                path.clone(),
                "Ce champ fait partie d'un bloc répétable : précisez la ligne",
            ));
        }
        (ChampPath::Child { repetition, .. }, Some(e))
            if e.parent.is_some_and(|p| &p.id == repetition) =>
        {
            Some(e.field)
        }
        _ => None,
    };
    found.ok_or_else(|| Violation::new(path.clone(), MSG_UNKNOWN_FIELD))
}

/// Input → value: kind, syntax, then the field's own constraints.
fn parse_value(
    def: &FieldDefinition,
    input: Input,
    geo: &dyn Geo,
    path: &ChampPath,
) -> Result<Value, Violation> {
    use FieldType as T;
    let violation = |message: String| Violation::new(path.clone(), message);
    let value = match (def.field_type, input) {
        (T::HeaderSection | T::Explication, _) => {
            return Err(violation(MSG_DISPLAY_ONLY.to_owned()));
        }
        (T::Text | T::Textarea, Input::Text(s)) => Value::Text(s),
        (T::Integer, Input::Integer(i)) => Value::Integer(i),
        (T::Decimal, Input::Decimal(s)) => Value::Decimal(parse_decimal(&s).map_err(violation)?),
        (T::Date, Input::Date(s)) => Value::Date(parse_date(&s).map_err(violation)?),
        (T::Datetime, Input::Datetime(t)) => Value::Datetime(t),
        (T::Checkbox, Input::Checkbox(b)) => Value::Checkbox(b),
        (T::YesNo, Input::YesNo(b)) => Value::YesNo(b),
        (T::DropDown, Input::DropDown(choice)) => Value::DropDown(choice),
        (T::MultiDropDown, Input::MultiDropDown { values, other }) => {
            Value::MultiDropDown { values, other }
        }
        (T::Siret, Input::Siret(s)) => {
            Value::Siret(Siret::parse(&s).map_err(|e| violation(e.message_fr()))?)
        }
        (T::Email, Input::Email(s)) => {
            Value::Email(Email::parse(&s).map_err(|e| violation(e.message_fr()))?)
        }
        (T::Phone, Input::Phone(s)) => {
            Value::Phone(Phone::parse(&s).map_err(|e| violation(e.message_fr()))?)
        }
        (T::Address, Input::Address(a)) => {
            Value::Address(parse_address(a, geo).map_err(violation)?)
        }
        (T::Commune, Input::Commune(s)) => {
            Value::Commune(InseeCommune::parse(&s).map_err(|e| violation(e.message_fr()))?)
        }
        (T::Departement, Input::Departement(s)) => {
            Value::Departement(InseeDepartement::parse(&s).map_err(|e| violation(e.message_fr()))?)
        }
        (T::Region, Input::Region(s)) => {
            Value::Region(InseeRegion::parse(&s).map_err(|e| violation(e.message_fr()))?)
        }
        (T::Repetition, Input::Repetition(rows)) => {
            Value::Repetition(parse_rows(def, rows, geo, path)?)
        }
        (T::PieceJustificative, Input::Files(files)) => Value::Files(files),
        (T::DossierLink, Input::DossierLink(n)) => Value::DossierLink(n),
        _ => return Err(violation(MSG_WRONG_TYPE.to_owned())),
    };
    check_value(def, &value, geo, path)?;
    Ok(normalise(def, value))
}

/// Puts the selections of a multiple choice in the order of the field's list.
fn normalise(def: &FieldDefinition, value: Value) -> Value {
    match (value, &def.constraints) {
        (Value::MultiDropDown { mut values, other }, Constraints::Choice(c)) => {
            values.sort_by_key(|v| c.values.iter().position(|allowed| allowed == v));
            Value::MultiDropDown { values, other }
        }
        (value, _) => value,
    }
}

/// Rows of a whole repetition sent at once: row ids, child ids, child answers.
fn parse_rows(
    def: &FieldDefinition,
    rows: Vec<RowInput>,
    geo: &dyn Geo,
    path: &ChampPath,
) -> Result<Vec<Row>, Violation> {
    let mut parsed = Vec::with_capacity(rows.len());
    for input in rows {
        let id =
            RowId::parse(&input.id).map_err(|e| Violation::new(path.clone(), e.message_fr()))?;
        let mut row = Row::new(id);
        for (child_id, child_input) in input.champs {
            let Some(child) = def.children.iter().find(|c| c.id.as_str() == child_id) else {
                return Err(Violation::new(
                    path.clone(),
                    format!(
                        "Le champ « {} » n'existe pas dans ce bloc répétable",
                        quote(&child_id)
                    ),
                ));
            };
            let child_path = ChampPath::child(def.id.clone(), row.id.clone(), child.id.clone());
            let value = parse_value(child, child_input, geo, &child_path)?;
            if row.champs.insert(child.id.clone(), value).is_some() {
                return Err(Violation::new(
                    child_path,
                    "Ce champ est renseigné plusieurs fois dans la même ligne",
                ));
            }
        }
        parsed.push(row);
    }
    Ok(parsed)
}

/// The field's own rules on a value (everything but requiredness and other fields' bounds).
fn check_value(
    def: &FieldDefinition,
    value: &Value,
    geo: &dyn Geo,
    path: &ChampPath,
) -> Result<(), Violation> {
    if !value.fits(def.field_type) {
        return Err(Violation::new(path.clone(), MSG_WRONG_TYPE));
    }
    let result = match value {
        Value::Text(s) => check_text(def, s),
        Value::Integer(i) => check_number(def, Decimal::from(*i)),
        Value::Decimal(d) => check_number(def, *d),
        Value::Date(d) => check_date(def, *d),
        Value::Datetime(t) => check_date(def, paris_date(*t)),
        Value::DropDown(choice) => check_choice(def, choice),
        Value::MultiDropDown { values, other } => check_multi(def, values, other.as_deref()),
        Value::Address(a) => check_address(a, geo),
        Value::Commune(c) => match geo.commune(c.as_str()) {
            Some(_) => Ok(()),
            None => Err(format!("Code commune INSEE inconnu : {c}")),
        },
        Value::Departement(d) => match geo.departement(d.as_str()) {
            Some(_) => Ok(()),
            None => Err(format!("Code département INSEE inconnu : {d}")),
        },
        Value::Region(r) => match geo.region(r.as_str()) {
            Some(_) => Ok(()),
            None => Err(format!("Code région INSEE inconnu : {r}")),
        },
        Value::Repetition(rows) => return check_rows(def, rows, path),
        Value::Files(files) => check_files(def, files),
        Value::DossierLink(n) if *n <= 0 => {
            Err("Le numéro de dossier doit être un nombre entier positif".to_owned())
        }
        Value::DossierLink(_)
        | Value::Checkbox(_)
        | Value::YesNo(_)
        | Value::Siret(_)
        | Value::Email(_)
        | Value::Phone(_) => Ok(()),
    };
    result.map_err(|message| Violation::new(path.clone(), message))
}

/// Characters no answer may hold: control characters other than tab and line breaks (NUL
/// cannot even be stored by PostgreSQL).
fn has_forbidden_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

fn has_line_break(s: &str) -> bool {
    s.chars()
        .any(|c| matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{85}'))
}

/// Checks that apply to any one-line free text (the "autre" of a list, address parts).
fn check_line(s: &str, max_chars: usize) -> Result<(), String> {
    if s.chars().take(max_chars + 1).count() > max_chars {
        return Err(format!(
            "Le texte ne doit pas dépasser {} caractères",
            fr_integer(max_chars as u64)
        ));
    }
    if has_forbidden_control(s) {
        return Err("Le texte contient des caractères non autorisés".to_owned());
    }
    if has_line_break(s) {
        return Err("Ce champ ne doit pas contenir de retour à la ligne".to_owned());
    }
    Ok(())
}

fn check_text(def: &FieldDefinition, s: &str) -> Result<(), String> {
    let chars = s.chars().take(TEXT_MAX_CHARS + 1).count();
    if chars > TEXT_MAX_CHARS {
        return Err(format!(
            "Le texte ne doit pas dépasser {} caractères",
            fr_integer(TEXT_MAX_CHARS as u64)
        ));
    }
    if has_forbidden_control(s) {
        return Err("Le texte contient des caractères non autorisés".to_owned());
    }
    if def.field_type == FieldType::Text && has_line_break(s) {
        return Err("Ce champ ne doit pas contenir de retour à la ligne".to_owned());
    }
    let Constraints::Text(c) = &def.constraints else {
        return Ok(());
    };
    if let Some(max) = c.max_length
        && chars > max as usize
    {
        return Err(format!(
            "Le texte doit comporter au plus {} (il en comporte {})",
            count(u64::from(max), "caractère", "caractères"),
            fr_integer(chars as u64)
        ));
    }
    if s.trim().is_empty() {
        // Not answered: the minimum length and the pattern apply to answers only.
        return Ok(());
    }
    if let Some(min) = c.min_length
        && chars < min as usize
    {
        return Err(format!(
            "Le texte doit comporter au moins {} (il en comporte {})",
            count(u64::from(min), "caractère", "caractères"),
            fr_integer(chars as u64)
        ));
    }
    if let Some(pattern) = &c.pattern
        && !pattern.is_match(s.trim())
    {
        return Err(c
            .pattern_message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or("La valeur ne respecte pas le format attendu")
            .to_owned());
    }
    Ok(())
}

/// Canonical decimal: optional `-`, digits, optional `.` and digits.
fn parse_decimal(s: &str) -> Result<Decimal, String> {
    const SYNTAX: &str = "Le nombre doit être écrit avec des chiffres et, si besoin, un point \
                          décimal (par exemple 1500.50)";
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(SYNTAX.to_owned());
    }
    if s.len() > 40 {
        return Err("Le nombre comporte trop de chiffres".to_owned());
    }
    Decimal::from_str_exact(s).map_err(|_| "Le nombre comporte trop de chiffres".to_owned())
}

/// `YYYY-MM-DD` of an existing day.
fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let number = |range: std::ops::Range<usize>| s.get(range).and_then(|p| p.parse::<u32>().ok());
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return Err("La date doit être au format AAAA-MM-JJ".to_owned());
    };
    if !shape {
        return Err("La date doit être au format AAAA-MM-JJ".to_owned());
    }
    i32::try_from(year)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, month, day))
        .ok_or_else(|| format!("La date du {day:02}/{month:02}/{year:04} n'existe pas"))
}

fn check_number(def: &FieldDefinition, n: Decimal) -> Result<(), String> {
    let Constraints::Number(c) = &def.constraints else {
        return Ok(());
    };
    let below = c.min.is_some_and(|min| n < min);
    let above = c.max.is_some_and(|max| n > max);
    if below || above {
        return Err(match (c.min, c.max) {
            (Some(min), Some(max)) => format!(
                "La valeur doit être comprise entre {} et {}",
                fr_number(min),
                fr_number(max)
            ),
            (Some(min), None) => {
                format!(
                    "La valeur doit être supérieure ou égale à {}",
                    fr_number(min)
                )
            }
            (None, Some(max)) => {
                format!(
                    "La valeur doit être inférieure ou égale à {}",
                    fr_number(max)
                )
            }
            (None, None) => String::new(),
        });
    }
    if def.field_type == FieldType::Decimal
        && let Some(places) = c.max_decimal_places
        && n.normalize().scale() > places
    {
        return Err(match places {
            0 => "Le nombre doit être entier".to_owned(),
            1 => "Le nombre doit comporter au plus 1 chiffre après la virgule".to_owned(),
            n => format!("Le nombre doit comporter au plus {n} chiffres après la virgule"),
        });
    }
    Ok(())
}

fn check_date(def: &FieldDefinition, d: NaiveDate) -> Result<(), String> {
    let Constraints::Date(c) = &def.constraints else {
        return Ok(());
    };
    let early = c.min_date.is_some_and(|min| d < min);
    let late = c.max_date.is_some_and(|max| d > max);
    if !early && !late {
        return Ok(());
    }
    Err(match (c.min_date, c.max_date) {
        (Some(min), Some(max)) => format!(
            "La date doit être comprise entre le {} et le {}",
            fr_date(min),
            fr_date(max)
        ),
        (Some(min), None) => format!("La date doit être postérieure ou égale au {}", fr_date(min)),
        (None, Some(max)) => format!("La date doit être antérieure ou égale au {}", fr_date(max)),
        (None, None) => String::new(),
    })
}

/// The list of a choice field (a field without one accepts no choice).
fn choices(def: &FieldDefinition) -> Option<&ChoiceConstraints> {
    match &def.constraints {
        Constraints::Choice(c) => Some(c),
        _ => None,
    }
}

fn check_other(c: Option<&ChoiceConstraints>, text: &str) -> Result<(), String> {
    match c {
        Some(c) if c.allow_other => check_line(text, TEXT_MAX_CHARS),
        _ => Err(format!(
            "La réponse « {} » n'est pas proposée pour ce champ",
            c.map_or("Autre", ChoiceConstraints::other_label)
        )),
    }
}

fn check_choice(def: &FieldDefinition, choice: &Choice) -> Result<(), String> {
    let c = choices(def);
    match choice {
        Choice::Value(v) if c.is_some_and(|c| c.values.contains(v)) => Ok(()),
        Choice::Value(_) => Err("Choisissez une valeur de la liste proposée".to_owned()),
        Choice::Other(text) => check_other(c, text),
    }
}

fn check_multi(
    def: &FieldDefinition,
    values: &[String],
    other: Option<&str>,
) -> Result<(), String> {
    let c = choices(def);
    let mut seen = HashSet::new();
    for v in values {
        if !c.is_some_and(|c| c.values.contains(v)) {
            return Err(format!(
                "La valeur « {} » ne fait pas partie de la liste proposée",
                quote(v)
            ));
        }
        if !seen.insert(v) {
            return Err(format!(
                "La valeur « {} » est choisie plusieurs fois",
                quote(v)
            ));
        }
    }
    if let Some(text) = other {
        check_other(c, text)?;
    }
    let selected = values.len() + usize::from(other.is_some());
    if selected == 0 {
        return Ok(());
    }
    let Some(c) = c else { return Ok(()) };
    if let Some(min) = c.min_selected
        && selected < min as usize
    {
        return Err(format!(
            "Choisissez au moins {}",
            count(u64::from(min), "valeur", "valeurs")
        ));
    }
    if let Some(max) = c.max_selected
        && selected > max as usize
    {
        return Err(format!(
            "Choisissez au plus {}",
            count(u64::from(max), "valeur", "valeurs")
        ));
    }
    Ok(())
}

/// Address as sent → address with parsed codes; the département and région are filled in from
/// the commune (or the région from the département) when the referential knows them.
fn parse_address(input: AddressInput, geo: &dyn Geo) -> Result<Address, String> {
    let optional = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then_some(s.to_owned())
    };
    let commune_code = optional(&input.commune_code)
        .map(|c| InseeCommune::parse(&c).map_err(|e| e.message_fr()))
        .transpose()?;
    let mut departement_code = optional(&input.departement_code)
        .map(|d| InseeDepartement::parse(&d).map_err(|e| e.message_fr()))
        .transpose()?;
    let mut region_code = optional(&input.region_code)
        .map(|r| InseeRegion::parse(&r).map_err(|e| e.message_fr()))
        .transpose()?;
    if let Some(commune) = commune_code.as_ref().and_then(|c| geo.commune(c.as_str())) {
        if departement_code.is_none() {
            departement_code = InseeDepartement::parse(commune.departement).ok();
        }
        if region_code.is_none() {
            region_code = InseeRegion::parse(commune.region).ok();
        }
    }
    if region_code.is_none()
        && let Some(dept) = departement_code
            .as_ref()
            .and_then(|d| geo.departement(d.as_str()))
    {
        region_code = InseeRegion::parse(dept.region).ok();
    }
    Ok(Address {
        label: input.label,
        street: input.street,
        postal_code: input.postal_code.trim().to_owned(),
        city: input.city,
        commune_code,
        departement_code,
        region_code,
        latitude: input.latitude,
        longitude: input.longitude,
    })
}

fn check_address(a: &Address, geo: &dyn Geo) -> Result<(), String> {
    for part in [&a.label, &a.street, &a.city, &a.postal_code] {
        check_line(part, ADDRESS_PART_MAX_CHARS)?;
    }
    if !a.postal_code.is_empty()
        && (a.postal_code.len() != 5 || !a.postal_code.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("Le code postal doit comporter 5 chiffres".to_owned());
    }
    let latitude_ok = a
        .latitude
        .is_none_or(|l| l.is_finite() && (-90.0..=90.0).contains(&l));
    let longitude_ok = a
        .longitude
        .is_none_or(|l| l.is_finite() && (-180.0..=180.0).contains(&l));
    if !latitude_ok || !longitude_ok {
        return Err("Les coordonnées géographiques de l'adresse ne sont pas valides".to_owned());
    }
    let commune = match &a.commune_code {
        Some(code) => Some(
            geo.commune(code.as_str())
                .ok_or_else(|| format!("Code commune INSEE inconnu : {code}"))?,
        ),
        None => None,
    };
    let departement = match &a.departement_code {
        Some(code) => Some(
            geo.departement(code.as_str())
                .ok_or_else(|| format!("Code département INSEE inconnu : {code}"))?,
        ),
        None => None,
    };
    if let Some(code) = &a.region_code
        && geo.region(code.as_str()).is_none()
    {
        return Err(format!("Code région INSEE inconnu : {code}"));
    }
    let region = a.region_code.as_ref().map(|r| r.as_str());
    if let Some(c) = commune {
        if let Some(d) = departement
            && c.departement != d.code
        {
            return Err(format!(
                "La commune {} ({}) n'est pas dans le département {}",
                c.name, c.code, d.code
            ));
        }
        if let Some(r) = region
            && c.region != r
        {
            return Err(format!(
                "La commune {} ({}) n'est pas dans la région {r}",
                c.name, c.code
            ));
        }
    }
    if let (Some(d), Some(r)) = (departement, region)
        && d.region != r
    {
        return Err(format!(
            "Le département {} ({}) n'est pas dans la région {r}",
            d.name, d.code
        ));
    }
    Ok(())
}

fn max_rows(def: &FieldDefinition) -> Option<usize> {
    match &def.constraints {
        Constraints::Repetition(c) => c.max_rows.map(|m| m as usize),
        _ => None,
    }
}

fn too_many_rows(max: usize) -> String {
    format!(
        "Ce bloc ne peut pas comporter plus de {}",
        count(max as u64, "ligne", "lignes")
    )
}

/// Structure of a repetition answer: row count, distinct row ids, children of this repetition
/// holding answers of their type. (Children's own rules are checked when each is saved, and at
/// deposit for the visible ones.)
fn check_rows(def: &FieldDefinition, rows: &[Row], path: &ChampPath) -> Result<(), Violation> {
    if let Some(max) = max_rows(def)
        && rows.len() > max
    {
        return Err(Violation::new(path.clone(), too_many_rows(max)));
    }
    let mut ids = HashSet::new();
    for row in rows {
        if !ids.insert(&row.id) {
            return Err(Violation::new(
                path.clone(),
                format!("La ligne {} apparaît plusieurs fois", row.id),
            ));
        }
        for (child_id, value) in &row.champs {
            let child_path = ChampPath::child(def.id.clone(), row.id.clone(), child_id.clone());
            match def.children.iter().find(|c| &c.id == child_id) {
                None => return Err(Violation::new(child_path, MSG_UNKNOWN_FIELD)),
                Some(child) if !value.fits(child.field_type) => {
                    return Err(Violation::new(child_path, MSG_WRONG_TYPE));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn check_files(def: &FieldDefinition, files: &[FileRef]) -> Result<(), String> {
    let default = FileConstraints::default();
    let c = match &def.constraints {
        Constraints::File(c) => c,
        _ => &default,
    };
    let max = c.max_files.unwrap_or(FileConstraints::DEFAULT_MAX_FILES) as usize;
    if files.len() > max {
        return Err(format!(
            "Vous pouvez joindre au plus {}",
            count(max as u64, "fichier", "fichiers")
        ));
    }
    let mut ids = HashSet::new();
    for file in files {
        let name = quote(&file.name);
        if file.id.trim().is_empty() {
            return Err(format!("Le fichier « {name} » n'a pas été téléversé"));
        }
        if !ids.insert(&file.id) {
            return Err(format!("Le fichier « {name} » est joint plusieurs fois"));
        }
        if let Some(limit) = c.max_size_bytes
            && file.size > limit
        {
            return Err(format!(
                "Le fichier « {name} » dépasse la taille maximale autorisée ({})",
                fr_size(limit)
            ));
        }
        if !c.accepted_content_types.is_empty()
            && !c
                .accepted_content_types
                .iter()
                .any(|accepted| content_type_matches(accepted, &file.content_type))
        {
            return Err(format!("Le type du fichier « {name} » n'est pas accepté"));
        }
    }
    Ok(())
}

/// `image/png` matches `image/png` and `image/*`; case and parameters are ignored.
fn content_type_matches(accepted: &str, actual: &str) -> bool {
    let essence = |t: &str| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let (accepted, actual) = (essence(accepted), essence(actual));
    match accepted.strip_suffix("/*") {
        Some(family) => actual
            .split_once('/')
            .is_some_and(|(actual_family, _)| actual_family == family),
        None => accepted == actual,
    }
}

// ---------------------------------------------------------------------------------------------
// Deposit
// ---------------------------------------------------------------------------------------------

/// Every problem that prevents depositing the dossier, in form order (a repetition's own
/// problem, then its rows in order, each row's children in order). Empty means depositable.
pub fn check_for_deposit(
    form: &FormDefinition,
    answers: &Answers,
    geo: &dyn Geo,
) -> Vec<Violation> {
    let vis = visibility(form, answers, geo);
    let mut out = Vec::new();
    for field in form.fields() {
        if field.field_type.is_display_only() || !vis.is_visible(&field.id) {
            continue;
        }
        let scope = Scope {
            form,
            answers,
            vis: &vis,
            row: None,
        };
        let path = ChampPath::Field(field.id.clone());
        check_answer(field, answers.get(&field.id), &scope, geo, &path, &mut out);
        if field.field_type != FieldType::Repetition {
            continue;
        }
        for row in answers.rows(&field.id) {
            let scope = Scope {
                form,
                answers,
                vis: &vis,
                row: Some((&field.id, row)),
            };
            for child in &field.children {
                if child.field_type.is_display_only()
                    || !vis.is_visible_in_row(&field.id, &row.id, &child.id)
                {
                    continue;
                }
                let path = ChampPath::child(field.id.clone(), row.id.clone(), child.id.clone());
                check_answer(child, row.get(&child.id), &scope, geo, &path, &mut out);
            }
        }
    }
    out
}

/// Where a field's bounds are looked up: its row first (siblings), then top-level answers.
struct Scope<'a> {
    form: &'a FormDefinition,
    answers: &'a Answers,
    vis: &'a Visibility,
    row: Option<(&'a FieldId, &'a Row)>,
}

impl Scope<'_> {
    /// The answer of a referenced field, if visible and answered.
    fn visible_answer(&self, id: &FieldId) -> Option<&Value> {
        let in_row = self.row.and_then(|(repetition, row)| {
            row.get(id)
                .map(|v| (v, self.vis.is_visible_in_row(repetition, &row.id, id)))
        });
        let (value, visible) = match in_row {
            Some(found) => found,
            None => (self.answers.get(id)?, self.vis.is_visible(id)),
        };
        (visible && !value.is_empty()).then_some(value)
    }
}

/// Requiredness, own rules and bounds of one visible answer.
fn check_answer(
    def: &FieldDefinition,
    value: Option<&Value>,
    scope: &Scope<'_>,
    geo: &dyn Geo,
    path: &ChampPath,
    out: &mut Vec<Violation>,
) {
    let answered = match value {
        Some(Value::Checkbox(ticked)) => *ticked,
        Some(v) => !v.is_empty(),
        None => false,
    };
    if def.field_type == FieldType::Repetition {
        let rows = match value {
            Some(Value::Repetition(rows)) => rows.len(),
            _ => 0,
        };
        let min = match &def.constraints {
            Constraints::Repetition(c) => c.min_rows.unwrap_or(1).max(1) as usize,
            _ => 1,
        };
        if def.required && rows < min {
            let message = if min == 1 {
                format!("{MSG_REQUIRED} : ajoutez au moins une ligne")
            } else {
                format!(
                    "Ajoutez au moins {} (il y en a {rows})",
                    count(min as u64, "ligne", "lignes")
                )
            };
            out.push(Violation::new(path.clone(), message));
            return;
        }
    } else if def.required && !answered {
        let message = if def.field_type == FieldType::Checkbox {
            MSG_CHECKBOX_REQUIRED
        } else {
            MSG_REQUIRED
        };
        out.push(Violation::new(path.clone(), message));
        return;
    }
    let Some(value) = value else { return };
    if let Err(violation) = check_value(def, value, geo, path) {
        out.push(violation);
        return;
    }
    if value.is_empty() {
        return;
    }
    match &def.constraints {
        Constraints::Number(c) => {
            let Some(n) = number_of(value) else { return };
            if let Some((bound, label)) = bound(scope, c.min_field.as_ref(), number_of)
                && n < bound
            {
                out.push(Violation::new(
                    path.clone(),
                    format!(
                        "La valeur doit être supérieure ou égale à celle du champ « {label} » ({})",
                        fr_number(bound)
                    ),
                ));
            }
            if let Some((bound, label)) = bound(scope, c.max_field.as_ref(), number_of)
                && n > bound
            {
                out.push(Violation::new(
                    path.clone(),
                    format!(
                        "La valeur doit être inférieure ou égale à celle du champ « {label} » ({})",
                        fr_number(bound)
                    ),
                ));
            }
        }
        Constraints::Date(c) => {
            let Some(d) = date_of(value) else { return };
            if let Some((bound, label)) = bound(scope, c.min_field.as_ref(), date_of)
                && d < bound
            {
                out.push(Violation::new(
                    path.clone(),
                    format!(
                        "La date doit être postérieure ou égale à celle du champ « {label} » ({})",
                        fr_date(bound)
                    ),
                ));
            }
            if let Some((bound, label)) = bound(scope, c.max_field.as_ref(), date_of)
                && d > bound
            {
                out.push(Violation::new(
                    path.clone(),
                    format!(
                        "La date doit être antérieure ou égale à celle du champ « {label} » ({})",
                        fr_date(bound)
                    ),
                ));
            }
        }
        _ => {}
    }
}

/// The value of a bound field and its label, when visible and answered with a suitable kind.
fn bound<T>(
    scope: &Scope<'_>,
    field: Option<&FieldId>,
    extract: fn(&Value) -> Option<T>,
) -> Option<(T, String)> {
    let field = field?;
    let value = extract(scope.visible_answer(field)?)?;
    Some((value, bound_label(scope, field)))
}

/// The label of a bound field as the user knows it.
fn bound_label(scope: &Scope<'_>, field: &FieldId) -> String {
    scope
        .form
        .field(field)
        .map_or_else(|| field.to_string(), |f| f.label.clone())
}

fn number_of(value: &Value) -> Option<Decimal> {
    match value {
        Value::Integer(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

fn date_of(value: &Value) -> Option<NaiveDate> {
    match value {
        Value::Date(d) => Some(*d),
        Value::Datetime(t) => Some(paris_date(*t)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Visible answers
// ---------------------------------------------------------------------------------------------

/// The answers a reader may see (exports, PDFs): visible fields of the form only, rows keeping
/// their visible children; display-only fields and answers to unknown fields are dropped.
pub fn visible_answers(form: &FormDefinition, answers: &Answers, geo: &dyn Geo) -> Answers {
    let vis = visibility(form, answers, geo);
    form.fields()
        .iter()
        .filter(|f| !f.field_type.is_display_only() && vis.is_visible(&f.id))
        .filter_map(|field| {
            let value = match answers.get(&field.id)? {
                Value::Repetition(rows) => Value::Repetition(
                    rows.iter()
                        .map(|row| Row {
                            id: row.id.clone(),
                            champs: row
                                .champs
                                .iter()
                                .filter(|(child, _)| {
                                    vis.is_visible_in_row(&field.id, &row.id, child)
                                })
                                .map(|(child, v)| (child.clone(), v.clone()))
                                .collect(),
                        })
                        .collect(),
                ),
                other => other.clone(),
            };
            Some((field.id.clone(), value))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// French formatting
// ---------------------------------------------------------------------------------------------

/// Groups digits by three with a narrow no-break space, from 5 digits on (`1500`, `15 000`).
fn group_digits(digits: &str) -> String {
    if digits.len() < 5 {
        return digits.to_owned();
    }
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A whole number the French way.
fn fr_integer(n: u64) -> String {
    group_digits(&n.to_string())
}

/// A decimal number the French way: `-1500,5`, `15 000`.
fn fr_number(n: Decimal) -> String {
    let text = n.normalize().to_string();
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    match unsigned.split_once('.') {
        Some((int, frac)) => format!("{sign}{},{frac}", group_digits(int)),
        None => format!("{sign}{}", group_digits(unsigned)),
    }
}

/// `01/09/2024`.
fn fr_date(d: NaiveDate) -> String {
    d.format("%d/%m/%Y").to_string()
}

/// `20 Mo`, `512 Ko`, `1 500 octets`.
fn fr_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} Mo", fr_integer(bytes / MIB))
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} Ko", fr_integer(bytes / KIB))
    } else {
        format!("{} octets", fr_integer(bytes))
    }
}

/// `1 ligne`, `3 lignes` (French: 0 and 1 take the singular).
fn count(n: u64, singular: &str, plural: &str) -> String {
    format!(
        "{} {}",
        fr_integer(n),
        if n <= 1 { singular } else { plural }
    )
}

/// A short excerpt of user input for a message.
fn quote(s: &str) -> String {
    let mut chars = s.chars().filter(|c| !c.is_control());
    let excerpt: String = chars.by_ref().take(QUOTE_MAX_CHARS).collect();
    if chars.next().is_some() {
        format!("{excerpt}…")
    } else {
        excerpt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::tests::{TestGeo, any_value};
    use crate::condition::{Condition, Operand, Operator};
    use crate::form::{
        DateConstraints, NumberConstraints, Pattern, RepetitionConstraints, TextConstraints,
    };
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    fn fid(s: &str) -> FieldId {
        FieldId::parse(s).expect("test field id")
    }

    fn rid(s: &str) -> RowId {
        RowId::parse(s).expect("test row id")
    }

    fn def(id: &str, field_type: FieldType) -> FieldDefinition {
        FieldDefinition::new(fid(id), format!("Libellé {id}"), field_type)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("test date")
    }

    /// Parses and returns the value or the message.
    fn parse(def: &FieldDefinition, input: Input) -> Result<Value, String> {
        parse_input(def, input, &TestGeo).map_err(|v| {
            assert_eq!(v.path, ChampPath::Field(def.id.clone()), "path of {v}");
            v.message
        })
    }

    fn err(def: &FieldDefinition, input: Input) -> String {
        parse(def, input)
            .err()
            .unwrap_or_else(|| "accepted".to_owned())
    }

    fn text_def(field_type: FieldType, c: TextConstraints) -> FieldDefinition {
        def("t", field_type).with_constraints(Constraints::Text(c))
    }

    fn number_def(field_type: FieldType, c: NumberConstraints) -> FieldDefinition {
        def("n", field_type).with_constraints(Constraints::Number(c))
    }

    fn choice_def(field_type: FieldType, values: &[&str], allow_other: bool) -> FieldDefinition {
        def("c", field_type).with_constraints(Constraints::Choice(ChoiceConstraints {
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            allow_other,
            ..ChoiceConstraints::default()
        }))
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("test decimal")
    }

    // --- save time, per type ----------------------------------------------------------------

    #[test]
    fn text_answers_respect_lengths_lines_and_patterns() {
        let plain = def("t", FieldType::Text);
        assert_eq!(
            parse(&plain, Input::Text("Bonjour".into())),
            Ok(Value::Text("Bonjour".into()))
        );
        assert_eq!(
            err(&plain, Input::Text("deux\nlignes".into())),
            "Ce champ ne doit pas contenir de retour à la ligne"
        );
        assert_eq!(
            err(&plain, Input::Text("nul\0".into())),
            "Le texte contient des caractères non autorisés"
        );
        let area = def("t", FieldType::Textarea);
        assert!(parse(&area, Input::Text("deux\r\nlignes\tet tab".into())).is_ok());
        assert_eq!(
            err(&area, Input::Text("é".repeat(TEXT_MAX_CHARS + 1))),
            "Le texte ne doit pas dépasser 100\u{202f}000 caractères"
        );
        assert!(parse(&area, Input::Text("é".repeat(TEXT_MAX_CHARS))).is_ok());

        let bounded = text_def(
            FieldType::Text,
            TextConstraints {
                min_length: Some(3),
                max_length: Some(5),
                ..TextConstraints::default()
            },
        );
        assert!(
            parse(&bounded, Input::Text("ééééé".into())).is_ok(),
            "counts characters"
        );
        assert_eq!(
            err(&bounded, Input::Text("éééééé".into())),
            "Le texte doit comporter au plus 5 caractères (il en comporte 6)"
        );
        assert_eq!(
            err(&bounded, Input::Text("ab".into())),
            "Le texte doit comporter au moins 3 caractères (il en comporte 2)"
        );
        assert!(
            parse(&bounded, Input::Text(String::new())).is_ok(),
            "empty is unanswered"
        );

        let postal = text_def(
            FieldType::Text,
            TextConstraints {
                pattern: Some(Pattern::new("[0-9]{5}")),
                pattern_message: Some("Indiquez un code postal à 5 chiffres".into()),
                ..TextConstraints::default()
            },
        );
        assert!(parse(&postal, Input::Text("13001".into())).is_ok());
        assert!(parse(&postal, Input::Text(" 13001 ".into())).is_ok());
        assert_eq!(
            err(&postal, Input::Text("1300".into())),
            "Indiquez un code postal à 5 chiffres"
        );
        let unexplained = text_def(
            FieldType::Text,
            TextConstraints {
                pattern: Some(Pattern::new("[A-Z]+")),
                ..TextConstraints::default()
            },
        );
        assert_eq!(
            err(&unexplained, Input::Text("abc".into())),
            "La valeur ne respecte pas le format attendu"
        );
    }

    #[test]
    fn integers_respect_their_bounds() {
        let both = number_def(
            FieldType::Integer,
            NumberConstraints {
                min: Some(Decimal::ZERO),
                max: Some(Decimal::ONE_HUNDRED),
                ..NumberConstraints::default()
            },
        );
        assert_eq!(parse(&both, Input::Integer(100)), Ok(Value::Integer(100)));
        assert_eq!(
            err(&both, Input::Integer(101)),
            "La valeur doit être comprise entre 0 et 100"
        );
        assert_eq!(
            err(&both, Input::Integer(-1)),
            "La valeur doit être comprise entre 0 et 100"
        );
        let min = number_def(
            FieldType::Integer,
            NumberConstraints {
                min: Some(Decimal::from(2016)),
                ..NumberConstraints::default()
            },
        );
        assert_eq!(
            err(&min, Input::Integer(2015)),
            "La valeur doit être supérieure ou égale à 2016"
        );
        let max = number_def(
            FieldType::Integer,
            NumberConstraints {
                max: Some(Decimal::from(150_000)),
                ..NumberConstraints::default()
            },
        );
        assert_eq!(
            err(&max, Input::Integer(i64::MAX)),
            "La valeur doit être inférieure ou égale à 150\u{202f}000"
        );
        assert_eq!(err(&max, Input::Decimal("1".into())), MSG_WRONG_TYPE);
    }

    #[test]
    fn decimals_are_canonical_exact_and_bounded() {
        let plain = def("n", FieldType::Decimal);
        assert_eq!(
            parse(&plain, Input::Decimal("1500.50".into())),
            Ok(Value::Decimal(dec("1500.50")))
        );
        assert_eq!(
            parse(&plain, Input::Decimal("-0.5".into())),
            Ok(Value::Decimal(dec("-0.5")))
        );
        assert_eq!(
            parse(&plain, Input::Decimal("42".into())),
            Ok(Value::Decimal(dec("42")))
        );
        for bad in [
            "", "1,5", "1e3", "+1", ".5", "1.", "1 500", "--1", "1.2.3", "٣", "NaN",
        ] {
            assert!(
                err(&plain, Input::Decimal(bad.into())).starts_with("Le nombre doit être écrit"),
                "{bad}"
            );
        }
        assert_eq!(
            err(&plain, Input::Decimal("9".repeat(40))),
            "Le nombre comporte trop de chiffres"
        );
        assert_eq!(
            err(&plain, Input::Decimal(format!("0.{}", "1".repeat(30)))),
            "Le nombre comporte trop de chiffres"
        );
        let money = number_def(
            FieldType::Decimal,
            NumberConstraints {
                min: Some(dec("0.5")),
                max: Some(dec("15000.25")),
                max_decimal_places: Some(2),
                ..NumberConstraints::default()
            },
        );
        assert!(parse(&money, Input::Decimal("12.50".into())).is_ok());
        assert!(
            parse(&money, Input::Decimal("12.500".into())).is_ok(),
            "trailing zeros"
        );
        assert_eq!(
            err(&money, Input::Decimal("12.505".into())),
            "Le nombre doit comporter au plus 2 chiffres après la virgule"
        );
        assert_eq!(
            err(&money, Input::Decimal("15000.26".into())),
            "La valeur doit être comprise entre 0,5 et 15\u{202f}000,25"
        );
    }

    #[test]
    fn dates_exist_and_respect_their_bounds() {
        let plain = def("d", FieldType::Date);
        assert_eq!(
            parse(&plain, Input::Date("2024-02-29".into())),
            Ok(Value::Date(date(2024, 2, 29)))
        );
        assert_eq!(
            err(&plain, Input::Date("2023-02-29".into())),
            "La date du 29/02/2023 n'existe pas"
        );
        assert_eq!(
            err(&plain, Input::Date("2024-13-01".into())),
            "La date du 01/13/2024 n'existe pas"
        );
        for bad in [
            "",
            "2024-9-1",
            "01/09/2024",
            "2024-09-01T00:00",
            "2024_09_01",
            "+024-09-01",
            "２０２４-09-01",
        ] {
            assert_eq!(
                err(&plain, Input::Date(bad.into())),
                "La date doit être au format AAAA-MM-JJ",
                "{bad}"
            );
        }
        let bounded = |min, max| {
            def("d", FieldType::Date).with_constraints(Constraints::Date(DateConstraints {
                min_date: min,
                max_date: max,
                ..DateConstraints::default()
            }))
        };
        let from = bounded(Some(date(2024, 9, 1)), None);
        assert!(parse(&from, Input::Date("2024-09-01".into())).is_ok());
        assert_eq!(
            err(&from, Input::Date("2024-08-31".into())),
            "La date doit être postérieure ou égale au 01/09/2024"
        );
        let until = bounded(None, Some(date(2024, 12, 31)));
        assert_eq!(
            err(&until, Input::Date("2025-01-01".into())),
            "La date doit être antérieure ou égale au 31/12/2024"
        );
        let within = bounded(Some(date(2024, 10, 1)), Some(date(2024, 11, 30)));
        assert_eq!(
            err(&within, Input::Date("2024-12-01".into())),
            "La date doit être comprise entre le 01/10/2024 et le 30/11/2024"
        );
    }

    #[test]
    fn datetimes_compare_by_their_paris_date() {
        let d =
            def("d", FieldType::Datetime).with_constraints(Constraints::Date(DateConstraints {
                min_date: Some(date(2024, 10, 1)),
                ..DateConstraints::default()
            }));
        let at = |h| {
            Utc.with_ymd_and_hms(2024, 9, 30, h, 30, 0)
                .single()
                .expect("instant")
        };
        // 21:30 UTC is 23:30 in Paris (still 30 September); 22:30 UTC is 00:30 on 1 October.
        assert_eq!(
            err(&d, Input::Datetime(at(21))),
            "La date doit être postérieure ou égale au 01/10/2024"
        );
        assert_eq!(
            parse(&d, Input::Datetime(at(22))),
            Ok(Value::Datetime(at(22)))
        );
    }

    #[test]
    fn checkboxes_yes_no_and_dossier_links() {
        assert_eq!(
            parse(&def("c", FieldType::Checkbox), Input::Checkbox(false)),
            Ok(Value::Checkbox(false))
        );
        assert_eq!(
            parse(&def("y", FieldType::YesNo), Input::YesNo(true)),
            Ok(Value::YesNo(true))
        );
        assert_eq!(
            err(&def("y", FieldType::YesNo), Input::Checkbox(true)),
            MSG_WRONG_TYPE
        );
        let link = def("l", FieldType::DossierLink);
        assert_eq!(
            parse(&link, Input::DossierLink(42)),
            Ok(Value::DossierLink(42))
        );
        assert_eq!(
            err(&link, Input::DossierLink(0)),
            "Le numéro de dossier doit être un nombre entier positif"
        );
    }

    #[test]
    fn drop_downs_take_an_allowed_value_or_other_when_offered() {
        let closed = choice_def(FieldType::DropDown, &["Association", "Entreprise"], false);
        let pick = |v: &str| Input::DropDown(Choice::Value(v.into()));
        assert_eq!(
            parse(&closed, pick("Association")),
            Ok(Value::DropDown(Choice::Value("Association".into())))
        );
        assert_eq!(
            err(&closed, pick("association")),
            "Choisissez une valeur de la liste proposée"
        );
        assert_eq!(
            err(&closed, Input::DropDown(Choice::Other("Club".into()))),
            "La réponse « Autre » n'est pas proposée pour ce champ"
        );
        let open = def("c", FieldType::DropDown).with_constraints(Constraints::Choice(
            ChoiceConstraints {
                values: vec!["Association".into()],
                allow_other: true,
                other_label: Some("Autre structure".into()),
                ..ChoiceConstraints::default()
            },
        ));
        assert!(parse(&open, Input::DropDown(Choice::Other("Club sportif".into()))).is_ok());
        assert_eq!(
            err(&open, Input::DropDown(Choice::Other("deux\nlignes".into()))),
            "Ce champ ne doit pas contenir de retour à la ligne"
        );
        let bare = def("c", FieldType::DropDown);
        assert_eq!(
            err(&bare, pick("x")),
            "Choisissez une valeur de la liste proposée"
        );
    }

    #[test]
    fn multiple_choices_are_allowed_distinct_counted_and_ordered() {
        let multi = def("m", FieldType::MultiDropDown).with_constraints(Constraints::Choice(
            ChoiceConstraints {
                values: vec!["A".into(), "B".into(), "C".into()],
                allow_other: true,
                min_selected: Some(2),
                max_selected: Some(3),
                ..ChoiceConstraints::default()
            },
        ));
        let input = |values: &[&str], other: Option<&str>| Input::MultiDropDown {
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            other: other.map(str::to_owned),
        };
        assert_eq!(
            parse(&multi, input(&["C", "A"], None)),
            Ok(Value::MultiDropDown {
                values: vec!["A".into(), "C".into()],
                other: None
            })
        );
        assert!(
            parse(&multi, input(&["B"], Some("Z"))).is_ok(),
            "autre counts as a choice"
        );
        assert!(parse(&multi, input(&[], None)).is_ok(), "unanswered");
        assert_eq!(
            err(&multi, input(&["A"], None)),
            "Choisissez au moins 2 valeurs"
        );
        assert_eq!(
            err(&multi, input(&["A", "B", "C"], Some("Z"))),
            "Choisissez au plus 3 valeurs"
        );
        assert_eq!(
            err(&multi, input(&["A", "A"], None)),
            "La valeur « A » est choisie plusieurs fois"
        );
        assert_eq!(
            err(&multi, input(&["A", "D"], None)),
            "La valeur « D » ne fait pas partie de la liste proposée"
        );
        let closed = choice_def(FieldType::MultiDropDown, &["A"], false);
        assert_eq!(
            err(&closed, input(&["A"], Some("Z"))),
            "La réponse « Autre » n'est pas proposée pour ce champ"
        );
    }

    #[test]
    fn sirets_emails_and_phones_are_parsed() {
        let siret = def("s", FieldType::Siret);
        assert_eq!(
            parse(&siret, Input::Siret("443 061 841 00047".into()))
                .map(|v| matches!(v, Value::Siret(s) if s.as_str() == "44306184100047")),
            Ok(true)
        );
        assert_eq!(
            err(&siret, Input::Siret("4430618410004".into())),
            "Le numéro SIRET doit comporter 14 chiffres"
        );
        assert_eq!(
            err(&siret, Input::Siret("44306184100048".into())),
            "Le numéro SIRET n'est pas valide (clé de contrôle incorrecte)"
        );
        let email = def("e", FieldType::Email);
        assert!(parse(&email, Input::Email("contact@asso.fr".into())).is_ok());
        assert!(err(&email, Input::Email("contact@asso".into())).starts_with("Le nom de domaine"));
        let phone = def("p", FieldType::Phone);
        assert_eq!(
            parse(&phone, Input::Phone("04 91 12 34 56".into()))
                .map(|v| matches!(v, Value::Phone(p) if p.as_str() == "+33491123456")),
            Ok(true)
        );
        assert!(err(&phone, Input::Phone("+44 20 7946 0958".into())).contains("numéro français"));
        assert_eq!(err(&phone, Input::Email("a@b.fr".into())), MSG_WRONG_TYPE);
    }

    #[test]
    fn insee_codes_must_exist_in_the_referential() {
        let commune = def("c", FieldType::Commune);
        assert!(parse(&commune, Input::Commune("13055".into())).is_ok());
        assert!(parse(&commune, Input::Commune("2a004".into())).is_ok());
        assert_eq!(
            err(&commune, Input::Commune("99999".into())),
            "Code commune INSEE inconnu : 99999"
        );
        assert_eq!(
            err(&commune, Input::Commune("1305".into())),
            "Le code commune INSEE doit comporter 5 caractères (par exemple 13055 ou 2A004)"
        );
        let dept = def("d", FieldType::Departement);
        assert!(parse(&dept, Input::Departement("974".into())).is_ok());
        assert_eq!(
            err(&dept, Input::Departement("95".into())),
            "Code département INSEE inconnu : 95"
        );
        assert!(
            err(&dept, Input::Departement("99".into()))
                .starts_with("Le code département INSEE n'est pas valide")
        );
        let region = def("r", FieldType::Region);
        assert!(parse(&region, Input::Region("93".into())).is_ok());
        assert_eq!(
            err(&region, Input::Region("99".into())),
            "Code région INSEE inconnu : 99"
        );
    }

    fn address(commune: &str, dept: &str, region: &str) -> Input {
        Input::Address(AddressInput {
            label: "Place Bargemon 13002 Marseille".into(),
            street: "Place Bargemon".into(),
            postal_code: "13002".into(),
            city: "Marseille".into(),
            commune_code: commune.into(),
            departement_code: dept.into(),
            region_code: region.into(),
            latitude: Some(43.2965),
            longitude: Some(5.3698),
        })
    }

    #[test]
    fn addresses_have_consistent_codes_filled_in_from_the_commune() {
        let field = def("a", FieldType::Address);
        let Ok(Value::Address(a)) = parse(&field, address("13055", "", "")) else {
            panic!("address refused");
        };
        assert_eq!(a.departement_code.as_ref().map(|d| d.as_str()), Some("13"));
        assert_eq!(a.region_code.as_ref().map(|r| r.as_str()), Some("93"));
        assert!(parse(&field, address("", "2A", "")).is_ok());
        assert!(
            parse(&field, address("", "", "")).is_ok(),
            "codes are optional"
        );
        assert_eq!(
            err(&field, address("13055", "75", "")),
            "La commune Marseille (13055) n'est pas dans le département 75"
        );
        assert_eq!(
            err(&field, address("13055", "13", "11")),
            "La commune Marseille (13055) n'est pas dans la région 11"
        );
        assert_eq!(
            err(&field, address("", "75", "93")),
            "Le département Paris (75) n'est pas dans la région 93"
        );
        assert_eq!(
            err(&field, address("99999", "", "")),
            "Code commune INSEE inconnu : 99999"
        );
        let Input::Address(mut bad) = address("", "", "") else {
            return;
        };
        bad.postal_code = "1300".into();
        assert_eq!(
            err(&field, Input::Address(bad.clone())),
            "Le code postal doit comporter 5 chiffres"
        );
        bad.postal_code = String::new();
        bad.latitude = Some(f64::NAN);
        assert_eq!(
            err(&field, Input::Address(bad)),
            "Les coordonnées géographiques de l'adresse ne sont pas valides"
        );
    }

    fn files_def(c: FileConstraints) -> FieldDefinition {
        def("f", FieldType::PieceJustificative).with_constraints(Constraints::File(c))
    }

    fn file(id: &str, content_type: &str, size: u64) -> FileRef {
        FileRef {
            id: id.into(),
            name: format!("{id}.pdf"),
            content_type: content_type.into(),
            size,
            sha256: "00".repeat(32),
        }
    }

    #[test]
    fn files_respect_count_size_and_type() {
        let default = def("f", FieldType::PieceJustificative);
        let eleven: Vec<FileRef> = (0..11)
            .map(|i| file(&format!("f{i}"), "application/pdf", 1))
            .collect();
        assert_eq!(
            err(&default, Input::Files(eleven.clone())),
            "Vous pouvez joindre au plus 10 fichiers"
        );
        assert!(parse(&default, Input::Files(eleven[..10].to_vec())).is_ok());
        let strict = files_def(FileConstraints {
            accepted_content_types: vec!["application/pdf".into(), "image/*".into()],
            max_size_bytes: Some(20 * 1024 * 1024),
            max_files: Some(1),
        });
        assert!(parse(&strict, Input::Files(vec![file("a", "image/PNG", 10)])).is_ok());
        assert!(
            parse(
                &strict,
                Input::Files(vec![file("a", "application/pdf; charset=binary", 10)])
            )
            .is_ok()
        );
        assert_eq!(
            err(&strict, Input::Files(vec![file("a", "text/html", 10)])),
            "Le type du fichier « a.pdf » n'est pas accepté"
        );
        assert_eq!(
            err(
                &strict,
                Input::Files(vec![file("a", "application/pdf", 21 * 1024 * 1024)])
            ),
            "Le fichier « a.pdf » dépasse la taille maximale autorisée (20 Mo)"
        );
        assert_eq!(
            err(
                &strict,
                Input::Files(vec![file("a", "image/png", 1), file("b", "image/png", 1)])
            ),
            "Vous pouvez joindre au plus 1 fichier"
        );
        assert_eq!(
            err(
                &default,
                Input::Files(vec![file("a", "image/png", 1), file("a", "image/png", 1)])
            ),
            "Le fichier « a.pdf » est joint plusieurs fois"
        );
    }

    #[test]
    fn display_only_fields_take_no_answer() {
        for t in [FieldType::HeaderSection, FieldType::Explication] {
            assert_eq!(
                err(&def("h", t), Input::Text("x".into())),
                "Ce champ n'attend pas de réponse"
            );
        }
    }

    #[test]
    fn every_field_type_refuses_every_other_kind_of_input() {
        let inputs = || {
            vec![
                Input::Text("x".into()),
                Input::Integer(1),
                Input::Decimal("1".into()),
                Input::Date("2024-01-01".into()),
                Input::Datetime(chrono::DateTime::UNIX_EPOCH),
                Input::Checkbox(true),
                Input::YesNo(true),
                Input::DropDown(Choice::Value("A".into())),
                Input::MultiDropDown {
                    values: vec![],
                    other: None,
                },
                Input::Siret("44306184100047".into()),
                Input::Email("a@b.fr".into()),
                Input::Phone("0612345678".into()),
                Input::Address(AddressInput::default()),
                Input::Commune("13055".into()),
                Input::Departement("13".into()),
                Input::Region("93".into()),
                Input::Repetition(vec![]),
                Input::Files(vec![]),
                Input::DossierLink(1),
            ]
        };
        for field_type in FieldType::ALL {
            let field = match field_type {
                FieldType::DropDown | FieldType::MultiDropDown => {
                    choice_def(field_type, &["A"], false)
                }
                FieldType::Repetition => {
                    def("r", field_type).with_children(vec![def("r_x", FieldType::Text)])
                }
                _ => def("x", field_type),
            };
            let accepted: Vec<Value> = inputs()
                .into_iter()
                .filter_map(|input| parse_input(&field, input, &TestGeo).ok())
                .collect();
            if field_type.is_display_only() {
                assert!(accepted.is_empty(), "{field_type:?}");
            } else {
                assert_eq!(accepted.len(), 1, "{field_type:?} accepted {accepted:?}");
                assert!(accepted[0].fits(field_type), "{field_type:?}");
            }
        }
    }

    // --- repetitions --------------------------------------------------------------------

    fn budget_form() -> FormDefinition {
        FormDefinition::new(vec![
            def("p_budget", FieldType::Decimal).required(),
            def("p_depenses", FieldType::Repetition)
                .required()
                .with_constraints(Constraints::Repetition(RepetitionConstraints {
                    min_rows: Some(2),
                    max_rows: Some(3),
                }))
                .with_children(vec![
                    def("p_dep_libelle", FieldType::Text).required(),
                    def("p_dep_montant", FieldType::Decimal)
                        .required()
                        .with_constraints(Constraints::Number(NumberConstraints {
                            min: Some(Decimal::ZERO),
                            max_field: Some(fid("p_budget")),
                            ..NumberConstraints::default()
                        })),
                ]),
        ])
        .expect("budget form")
    }

    fn row_input(id: &str, champs: Vec<(&str, Input)>) -> RowInput {
        RowInput {
            id: id.into(),
            champs: champs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    #[test]
    fn whole_repetitions_are_parsed_row_by_row() {
        let form = budget_form();
        let rep = form.field(&fid("p_depenses")).expect("rep");
        let parsed = parse_input(
            rep,
            Input::Repetition(vec![
                row_input(
                    "r1",
                    vec![("p_dep_libelle", Input::Text("Affiches".into()))],
                ),
                row_input("r2", vec![("p_dep_montant", Input::Decimal("12.5".into()))]),
            ]),
            &TestGeo,
        );
        let Ok(Value::Repetition(rows)) = parsed else {
            panic!("refused: {parsed:?}");
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1].get(&fid("p_dep_montant")),
            Some(&Value::Decimal(dec("12.5")))
        );

        let bad_child = parse_input(
            rep,
            Input::Repetition(vec![row_input(
                "r1",
                vec![("p_dep_montant", Input::Decimal("-1".into()))],
            )]),
            &TestGeo,
        );
        assert_eq!(
            bad_child.err().map(|v| v.to_string()),
            Some(
                "p_depenses[r1].p_dep_montant : La valeur doit être supérieure ou égale à 0".into()
            )
        );
        let unknown = parse_input(
            rep,
            Input::Repetition(vec![row_input(
                "r1",
                vec![("p_budget", Input::Decimal("1".into()))],
            )]),
            &TestGeo,
        );
        assert_eq!(
            unknown.err().map(|v| v.message),
            Some("Le champ « p_budget » n'existe pas dans ce bloc répétable".into())
        );
        let twice = parse_input(
            rep,
            Input::Repetition(vec![row_input("r1", vec![]), row_input("r1", vec![])]),
            &TestGeo,
        );
        assert_eq!(
            twice.err().map(|v| v.message),
            Some("La ligne r1 apparaît plusieurs fois".into())
        );
        let four = (1..=4)
            .map(|i| row_input(&format!("r{i}"), vec![]))
            .collect();
        let too_many = parse_input(rep, Input::Repetition(four), &TestGeo);
        assert_eq!(
            too_many.err().map(|v| v.message),
            Some("Ce bloc ne peut pas comporter plus de 3 lignes".into())
        );
        let bad_row = parse_input(
            rep,
            Input::Repetition(vec![row_input("r 1", vec![])]),
            &TestGeo,
        );
        assert!(bad_row.is_err());
    }

    #[test]
    fn answers_are_parsed_at_their_path() {
        let form = budget_form();
        let child = ChampPath::parse("p_depenses[r1].p_dep_montant").expect("path");
        assert_eq!(
            parse_at(&form, &child, Input::Decimal("10".into()), &TestGeo),
            Ok(Value::Decimal(dec("10")))
        );
        let negative = parse_at(&form, &child, Input::Decimal("-10".into()), &TestGeo);
        assert_eq!(negative.err().map(|v| v.path), Some(child));
        let as_top = ChampPath::parse("p_dep_montant").expect("path");
        assert_eq!(
            parse_at(&form, &as_top, Input::Decimal("10".into()), &TestGeo)
                .err()
                .map(|v| v.message),
            Some("Ce champ fait partie d'un bloc répétable : précisez la ligne".into())
        );
        for unknown in [
            "p_nope",
            "p_budget[r1].p_dep_montant",
            "p_depenses[r1].p_budget",
        ] {
            let path = ChampPath::parse(unknown).expect("path");
            assert_eq!(
                parse_at(&form, &path, Input::Decimal("10".into()), &TestGeo)
                    .err()
                    .map(|v| v.message),
                Some(MSG_UNKNOWN_FIELD.to_owned()),
                "{unknown}"
            );
        }
    }

    #[test]
    fn rows_can_be_added_up_to_the_maximum() {
        let form = budget_form();
        let rep = fid("p_depenses");
        let mut answers = Answers::new();
        for i in 1..=3 {
            let row = rid(&format!("r{i}"));
            assert_eq!(check_add_row(&form, &answers, &rep, &row), Ok(()));
            answers.add_row(rep.clone(), row).expect("add");
        }
        assert_eq!(
            check_add_row(&form, &answers, &rep, &rid("r4"))
                .err()
                .map(|v| v.message),
            Some("Ce bloc ne peut pas comporter plus de 3 lignes".into())
        );
        assert_eq!(
            check_add_row(&form, &answers, &rep, &rid("r1")),
            Ok(()),
            "retry is a no-op"
        );
        assert!(check_add_row(&form, &answers, &fid("p_budget"), &rid("r1")).is_err());
    }

    // --- deposit ------------------------------------------------------------------------

    fn messages(violations: &[Violation]) -> Vec<String> {
        violations.iter().map(Violation::to_string).collect()
    }

    #[test]
    fn a_field_becomes_required_when_an_earlier_yes_no_is_oui() {
        let form = FormDefinition::new(vec![
            def("p_renouvellement", FieldType::YesNo).required(),
            def("p_precedent", FieldType::Text)
                .required()
                .visible_when(Condition::Compare {
                    field: fid("p_renouvellement"),
                    operator: Operator::Equals,
                    operand: Some(Operand::Boolean(true)),
                }),
        ])
        .expect("form");
        let mut answers = Answers::new();
        assert_eq!(
            messages(&check_for_deposit(&form, &answers, &TestGeo)),
            vec!["p_renouvellement : Ce champ est obligatoire"]
        );
        answers.set(fid("p_renouvellement"), Value::YesNo(false));
        assert!(check_for_deposit(&form, &answers, &TestGeo).is_empty());
        answers.set(fid("p_renouvellement"), Value::YesNo(true));
        assert_eq!(
            messages(&check_for_deposit(&form, &answers, &TestGeo)),
            vec!["p_precedent : Ce champ est obligatoire"]
        );
        answers.set(fid("p_precedent"), Value::Text("   ".into()));
        assert_eq!(
            check_for_deposit(&form, &answers, &TestGeo).len(),
            1,
            "blank is empty"
        );
        answers.set(fid("p_precedent"), Value::Text("Projet 2023".into()));
        assert!(check_for_deposit(&form, &answers, &TestGeo).is_empty());
        // Hidden again: its answer is ignored and dropped from what readers see.
        answers.set(fid("p_renouvellement"), Value::YesNo(false));
        assert!(check_for_deposit(&form, &answers, &TestGeo).is_empty());
        let visible = visible_answers(&form, &answers, &TestGeo);
        assert_eq!(visible.get(&fid("p_precedent")), None);
        assert_eq!(
            visible.get(&fid("p_renouvellement")),
            Some(&Value::YesNo(false))
        );
    }

    #[test]
    fn required_repetitions_need_their_minimum_rows_and_required_children() {
        let form = budget_form();
        let rep = fid("p_depenses");
        let mut answers = Answers::new();
        answers.set(fid("p_budget"), Value::Decimal(dec("1000")));
        assert_eq!(
            messages(&check_for_deposit(&form, &answers, &TestGeo)),
            vec!["p_depenses : Ajoutez au moins 2 lignes (il y en a 0)"]
        );
        for row in ["r1", "r2"] {
            answers.add_row(rep.clone(), rid(row)).expect("add");
        }
        answers
            .set_in_row(
                &rep,
                &rid("r1"),
                fid("p_dep_libelle"),
                Value::Text("Affiches".into()),
            )
            .expect("set");
        answers
            .set_in_row(
                &rep,
                &rid("r1"),
                fid("p_dep_montant"),
                Value::Decimal(dec("1200")),
            )
            .expect("set");
        assert_eq!(
            messages(&check_for_deposit(&form, &answers, &TestGeo)),
            vec![
                "p_depenses[r1].p_dep_montant : La valeur doit être inférieure ou égale à celle du \
                 champ « Libellé p_budget » (1000)",
                "p_depenses[r2].p_dep_libelle : Ce champ est obligatoire",
                "p_depenses[r2].p_dep_montant : Ce champ est obligatoire",
            ]
        );
    }

    #[test]
    fn a_single_row_minimum_reads_as_required() {
        let form = FormDefinition::new(vec![
            def("r", FieldType::Repetition)
                .required()
                .with_children(vec![def("r_x", FieldType::Text)]),
        ])
        .expect("form");
        assert_eq!(
            messages(&check_for_deposit(&form, &Answers::new(), &TestGeo)),
            vec!["r : Ce champ est obligatoire : ajoutez au moins une ligne"]
        );
    }

    #[test]
    fn cross_field_bounds_hold_for_numbers_and_dates() {
        let form = FormDefinition::new(vec![
            def("total", FieldType::Integer),
            def("demande", FieldType::Decimal).with_constraints(Constraints::Number(
                NumberConstraints {
                    max_field: Some(fid("total")),
                    ..NumberConstraints::default()
                },
            )),
            def("debut", FieldType::Date),
            def("fin", FieldType::Datetime).with_constraints(Constraints::Date(DateConstraints {
                min_field: Some(fid("debut")),
                ..DateConstraints::default()
            })),
        ])
        .expect("form");
        let mut answers = Answers::new();
        answers.set(fid("demande"), Value::Decimal(dec("15000.5")));
        answers.set(
            fid("fin"),
            Value::Datetime(
                Utc.with_ymd_and_hms(2024, 9, 30, 21, 0, 0)
                    .single()
                    .expect("instant"),
            ),
        );
        assert!(
            check_for_deposit(&form, &answers, &TestGeo).is_empty(),
            "empty bounds are ignored"
        );
        answers.set(fid("total"), Value::Integer(15_000));
        answers.set(fid("debut"), Value::Date(date(2024, 10, 1)));
        assert_eq!(
            messages(&check_for_deposit(&form, &answers, &TestGeo)),
            vec![
                "demande : La valeur doit être inférieure ou égale à celle du champ « Libellé total » \
                 (15\u{202f}000)",
                "fin : La date doit être postérieure ou égale à celle du champ « Libellé debut » \
                 (01/10/2024)",
            ]
        );
        answers.set(fid("demande"), Value::Decimal(dec("15000")));
        answers.set(
            fid("fin"),
            Value::Datetime(
                Utc.with_ymd_and_hms(2024, 9, 30, 22, 0, 0)
                    .single()
                    .expect("instant"),
            ),
        );
        assert!(check_for_deposit(&form, &answers, &TestGeo).is_empty());
    }

    #[test]
    fn a_hidden_bound_is_ignored() {
        let form = FormDefinition::new(vec![
            def("avec_budget", FieldType::YesNo),
            def("total", FieldType::Integer).visible_when(Condition::Compare {
                field: fid("avec_budget"),
                operator: Operator::Equals,
                operand: Some(Operand::Boolean(true)),
            }),
            def("demande", FieldType::Integer).with_constraints(Constraints::Number(
                NumberConstraints {
                    max_field: Some(fid("total")),
                    ..NumberConstraints::default()
                },
            )),
        ])
        .expect("form");
        let answers: Answers = [
            (fid("avec_budget"), Value::YesNo(false)),
            (fid("total"), Value::Integer(10)),
            (fid("demande"), Value::Integer(20)),
        ]
        .into_iter()
        .collect();
        assert!(check_for_deposit(&form, &answers, &TestGeo).is_empty());
    }

    #[test]
    fn deposit_lists_every_violation_in_form_order() {
        let form = FormDefinition::new(vec![
            def("p_section", FieldType::HeaderSection),
            def("p_siret", FieldType::Siret).required(),
            def("p_titre", FieldType::Text).required(),
            def("p_commune", FieldType::Commune).required(),
            def("p_attestation", FieldType::Checkbox).required(),
            def("p_public", FieldType::MultiDropDown)
                .required()
                .with_constraints(Constraints::Choice(ChoiceConstraints {
                    values: vec!["Jeunes".into()],
                    ..ChoiceConstraints::default()
                })),
            def("p_optionnel", FieldType::Email),
            def("p_pieces", FieldType::PieceJustificative).required(),
        ])
        .expect("form");
        let mut answers = Answers::new();
        answers.set(
            fid("p_titre"),
            Value::Text("Mois sans tabac à Marseille".into()),
        );
        // Stored when the referential still had it; gone by deposit time.
        answers.set(
            fid("p_commune"),
            Value::Commune(InseeCommune::parse("99999").expect("code")),
        );
        answers.set(fid("p_attestation"), Value::Checkbox(false));
        answers.set(
            fid("p_public"),
            Value::MultiDropDown {
                values: vec![],
                other: None,
            },
        );
        answers.set(fid("p_pieces"), Value::Files(vec![]));
        answers.set(fid("p_inconnu"), Value::Integer(1));
        assert_eq!(
            messages(&check_for_deposit(&form, &answers, &TestGeo)),
            vec![
                "p_siret : Ce champ est obligatoire",
                "p_commune : Code commune INSEE inconnu : 99999",
                "p_attestation : Cette case doit être cochée",
                "p_public : Ce champ est obligatoire",
                "p_pieces : Ce champ est obligatoire",
            ]
        );
        let visible = visible_answers(&form, &answers, &TestGeo);
        assert_eq!(
            visible.get(&fid("p_inconnu")),
            None,
            "unknown fields are dropped"
        );
        assert_eq!(visible.len(), 5);
    }

    #[test]
    fn visible_answers_drop_hidden_children_of_rows() {
        let form = FormDefinition::new(vec![def("r", FieldType::Repetition).with_children(vec![
            def("r_type", FieldType::YesNo),
            def("r_detail", FieldType::Text).visible_when(Condition::Compare {
                field: fid("r_type"),
                operator: Operator::Equals,
                operand: Some(Operand::Boolean(true)),
            }),
        ])])
        .expect("form");
        let rep = fid("r");
        let mut answers = Answers::new();
        for (row, shown) in [("a", true), ("b", false)] {
            answers.add_row(rep.clone(), rid(row)).expect("add");
            answers
                .set_in_row(&rep, &rid(row), fid("r_type"), Value::YesNo(shown))
                .expect("set");
            answers
                .set_in_row(
                    &rep,
                    &rid(row),
                    fid("r_detail"),
                    Value::Text("détail".into()),
                )
                .expect("set");
        }
        let visible = visible_answers(&form, &answers, &TestGeo);
        let rows = visible.rows(&rep);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].champs.len(), 2);
        assert_eq!(rows[1].champs.len(), 1);
        assert_eq!(rows[1].get(&fid("r_detail")), None);
    }

    #[test]
    fn french_numbers_sizes_and_counts() {
        assert_eq!(fr_number(dec("1500.50")), "1500,5");
        assert_eq!(fr_number(dec("-1234567.25")), "-1\u{202f}234\u{202f}567,25");
        assert_eq!(fr_number(dec("2016")), "2016");
        assert_eq!(fr_number(dec("10000")), "10\u{202f}000");
        assert_eq!(fr_size(20 * 1024 * 1024), "20 Mo");
        assert_eq!(fr_size(512 * 1024), "512 Ko");
        assert_eq!(fr_size(1500), "1500 octets");
        assert_eq!(count(0, "ligne", "lignes"), "0 ligne");
        assert_eq!(count(2, "ligne", "lignes"), "2 lignes");
        assert_eq!(quote(&"x".repeat(100)).chars().count(), QUOTE_MAX_CHARS + 1);
    }

    // --- properties ---------------------------------------------------------------------

    fn any_input() -> impl Strategy<Value = Input> {
        let s = || "\\PC{0,24}";
        prop_oneof![
            s().prop_map(Input::Text),
            any::<i64>().prop_map(Input::Integer),
            prop_oneof![s(), "-?[0-9]{0,30}(\\.[0-9]{0,30})?"].prop_map(Input::Decimal),
            prop_oneof![s(), "[0-9]{4}-[0-9]{2}-[0-9]{2}"].prop_map(Input::Date),
            s().prop_map(Input::Siret),
            s().prop_map(Input::Email),
            s().prop_map(Input::Phone),
            s().prop_map(Input::Commune),
            s().prop_map(Input::Departement),
            s().prop_map(Input::Region),
            s().prop_map(|v| Input::DropDown(Choice::Value(v))),
            (s(), s(), s(), s(), proptest::option::of(any::<f64>())).prop_map(
                |(a, b, c, d, lat)| {
                    Input::Address(AddressInput {
                        label: a,
                        postal_code: b,
                        commune_code: c,
                        departement_code: d,
                        latitude: lat,
                        ..AddressInput::default()
                    })
                }
            ),
            (s(), s()).prop_map(|(id, v)| Input::Repetition(vec![RowInput {
                id,
                champs: vec![("p_dep_montant".into(), Input::Decimal(v))],
            }])),
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics(input in any_input(), type_index in 0usize..22) {
            let field_type = FieldType::ALL[type_index];
            let field = match field_type {
                FieldType::Repetition => budget_form().field(&fid("p_depenses")).cloned().expect("rep"),
                FieldType::DropDown | FieldType::MultiDropDown => choice_def(field_type, &["A"], true),
                _ => def("x", field_type),
            };
            if let Ok(value) = parse_input(&field, input, &TestGeo) {
                prop_assert!(value.fits(field_type));
            }
        }

        #[test]
        fn deposit_checks_never_panic(
            values in proptest::collection::vec(proptest::option::of(any_value()), 2),
        ) {
            let form = budget_form();
            let answers: Answers = ["p_budget", "p_depenses"]
                .iter()
                .zip(values)
                .filter_map(|(id, v)| v.map(|v| (fid(id), v)))
                .collect();
            let _ = check_for_deposit(&form, &answers, &TestGeo);
            let _ = visible_answers(&form, &answers, &TestGeo);
        }
    }
}
