//! Visibility conditions (`mst.forms.v1.Condition`): a tree of all/any groups whose leaves compare
//! an earlier field's answer with an operand, and [`visibility`], which evaluates every field's
//! condition in form order (a field's visibility may depend on earlier fields' visibility).
//!
//! Semantics, as in the proto: a comparison on a hidden field is false, except IS_EMPTY which is
//! true; a comparison whose operand does not suit the answer (wrong kind, unknown INSEE code) is
//! false; nothing here panics, whatever the answers.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::form::{Constraints, FieldDefinition, FieldType, FormDefinition};
use super::geo::Geo;
use super::ids::{
    Email, FieldId, InseeCommune, InseeDepartement, InseeRegion, Phone, RowId, Siret,
};
use super::value::{Address, Answers, ChampPath, Choice, Row, Value, paris_date};

/// A visibility condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Holds when every sub-condition holds (an empty group holds).
    All(Vec<Condition>),
    /// Holds when at least one sub-condition holds (an empty group does not).
    Any(Vec<Condition>),
    /// Compares the answer of an earlier field.
    Compare {
        /// The compared field.
        field: FieldId,
        /// The comparison.
        operator: Operator,
        /// The operand; `None` for IS_EMPTY / IS_NOT_EMPTY.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operand: Option<Operand>,
    },
}

/// Comparison of a leaf (`mst.forms.v1.ComparisonOperator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// The answer equals the operand.
    Equals,
    /// The answer is present and differs from the operand.
    NotEquals,
    /// The answer (number, date) is less than the operand.
    Lt,
    /// … less than or equal.
    Lte,
    /// … greater than.
    Gt,
    /// … greater than or equal.
    Gte,
    /// The MULTI_DROP_DOWN answer includes the operand value.
    Includes,
    /// The COMMUNE, ADDRESS or DEPARTEMENT answer lies in the département given as operand.
    InDepartement,
    /// The COMMUNE, ADDRESS, DEPARTEMENT or REGION answer lies in the région given as operand.
    InRegion,
    /// The field has no answer (no operand).
    IsEmpty,
    /// The field has an answer (no operand).
    IsNotEmpty,
}

impl Operator {
    /// Whether the operator compares with an operand (all but IS_EMPTY / IS_NOT_EMPTY).
    pub fn takes_operand(self) -> bool {
        !matches!(self, Operator::IsEmpty | Operator::IsNotEmpty)
    }

    /// French wording, for admins.
    pub fn label_fr(self) -> &'static str {
        match self {
            Operator::Equals => "est égal à",
            Operator::NotEquals => "est différent de",
            Operator::Lt => "est inférieur à",
            Operator::Lte => "est inférieur ou égal à",
            Operator::Gt => "est supérieur à",
            Operator::Gte => "est supérieur ou égal à",
            Operator::Includes => "contient",
            Operator::InDepartement => "est dans le département",
            Operator::InRegion => "est dans la région",
            Operator::IsEmpty => "est vide",
            Operator::IsNotEmpty => "n'est pas vide",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label_fr())
    }
}

/// Operand of a comparison (`mst.forms.v1.ConditionOperand`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operand {
    /// TEXT, DROP_DOWN and MULTI_DROP_DOWN values, SIRET, EMAIL, PHONE and INSEE codes.
    Text(String),
    /// INTEGER (or DECIMAL).
    Integer(i64),
    /// DECIMAL (or INTEGER).
    Decimal(Decimal),
    /// DATE and DATETIME (by its Europe/Paris date).
    Date(NaiveDate),
    /// CHECKBOX and YES_NO.
    Boolean(bool),
}

impl Condition {
    /// Deepest nesting of groups a form accepts.
    pub const MAX_DEPTH: usize = 16;

    /// Levels of nested groups (0 for a single comparison). Iterative, so any tree is safe.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 0usize)];
        while let Some((node, level)) = stack.pop() {
            match node {
                Condition::All(items) | Condition::Any(items) => {
                    deepest = deepest.max(level + 1);
                    stack.extend(items.iter().map(|c| (c, level + 1)));
                }
                Condition::Compare { .. } => deepest = deepest.max(level),
            }
        }
        deepest
    }

    /// Ids of the fields compared, in written order (with repeats).
    pub fn fields(&self) -> Vec<&FieldId> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            match node {
                Condition::All(items) | Condition::Any(items) => stack.extend(items.iter().rev()),
                Condition::Compare { field, .. } => out.push(field),
            }
        }
        out
    }

    /// Whether the condition holds.
    ///
    /// `row` is the repetition row of the conditioned field, for a child: a compared field is
    /// looked up in the row first, then among top-level answers (field ids are unique in a form).
    /// `visible` tells whether a compared field is visible (in that row, for a sibling).
    pub fn holds(
        &self,
        answers: &Answers,
        row: Option<&Row>,
        geo: &dyn Geo,
        visible: &dyn Fn(&FieldId) -> bool,
    ) -> bool {
        match self {
            Condition::All(items) => items.iter().all(|c| c.holds(answers, row, geo, visible)),
            Condition::Any(items) => items.iter().any(|c| c.holds(answers, row, geo, visible)),
            Condition::Compare {
                field,
                operator,
                operand,
            } => {
                if !visible(field) {
                    return *operator == Operator::IsEmpty;
                }
                let value = row
                    .and_then(|r| r.get(field))
                    .or_else(|| answers.get(field))
                    .filter(|v| !v.is_empty());
                match (operator, value, operand) {
                    (Operator::IsEmpty, value, _) => value.is_none(),
                    (Operator::IsNotEmpty, value, _) => value.is_some(),
                    (_, None, _) | (_, _, None) => false,
                    (op, Some(value), Some(operand)) => compare(value, *op, operand, geo),
                }
            }
        }
    }
}

/// Compares a non-empty answer with an operand; incomparable kinds give false.
fn compare(value: &Value, operator: Operator, operand: &Operand, geo: &dyn Geo) -> bool {
    match operator {
        Operator::Equals => equals(value, operand) == Some(true),
        Operator::NotEquals => equals(value, operand) == Some(false),
        Operator::Lt => order(value, operand) == Some(Ordering::Less),
        Operator::Lte => order(value, operand).is_some_and(Ordering::is_le),
        Operator::Gt => order(value, operand) == Some(Ordering::Greater),
        Operator::Gte => order(value, operand).is_some_and(Ordering::is_ge),
        Operator::Includes => match (value, operand) {
            (Value::MultiDropDown { values, .. }, Operand::Text(wanted)) => values.contains(wanted),
            _ => false,
        },
        Operator::InDepartement => match operand {
            Operand::Text(code) => in_departement(value, code.trim(), geo),
            _ => false,
        },
        Operator::InRegion => match operand {
            Operand::Text(code) => in_region(value, code.trim(), geo),
            _ => false,
        },
        Operator::IsEmpty | Operator::IsNotEmpty => false,
    }
}

/// `Some(equal?)` when the answer and the operand are comparable, `None` otherwise.
fn equals(value: &Value, operand: &Operand) -> Option<bool> {
    match (value, operand) {
        (Value::Text(s), Operand::Text(o)) => Some(s.trim() == o.trim()),
        (Value::DropDown(Choice::Value(v)), Operand::Text(o)) => Some(v == o),
        (Value::DropDown(Choice::Other(_)), Operand::Text(_)) => Some(false),
        (Value::Siret(s), Operand::Text(o)) => Siret::parse(o).ok().map(|o| &o == s),
        (Value::Email(e), Operand::Text(o)) => Email::parse(o).ok().map(|o| &o == e),
        (Value::Phone(p), Operand::Text(o)) => Phone::parse(o).ok().map(|o| &o == p),
        (Value::Commune(c), Operand::Text(o)) => InseeCommune::parse(o).ok().map(|o| &o == c),
        (Value::Departement(d), Operand::Text(o)) => {
            InseeDepartement::parse(o).ok().map(|o| &o == d)
        }
        (Value::Region(r), Operand::Text(o)) => InseeRegion::parse(o).ok().map(|o| &o == r),
        (Value::Checkbox(b) | Value::YesNo(b), Operand::Boolean(o)) => Some(b == o),
        _ => order(value, operand).map(Ordering::is_eq),
    }
}

/// Order of a number or date answer relative to the operand.
fn order(value: &Value, operand: &Operand) -> Option<Ordering> {
    let number = |n: &Operand| match n {
        Operand::Integer(i) => Some(Decimal::from(*i)),
        Operand::Decimal(d) => Some(*d),
        _ => None,
    };
    match (value, operand) {
        (Value::Integer(i), Operand::Integer(o)) => Some(i.cmp(o)),
        (Value::Integer(i), o) => number(o).map(|o| Decimal::from(*i).cmp(&o)),
        (Value::Decimal(d), o) => number(o).map(|o| d.cmp(&o)),
        (Value::Date(d), Operand::Date(o)) => Some(d.cmp(o)),
        (Value::Datetime(t), Operand::Date(o)) => Some(paris_date(*t).cmp(o)),
        _ => None,
    }
}

/// Whether a COMMUNE, ADDRESS or DEPARTEMENT answer lies in the département `code`.
fn in_departement(value: &Value, code: &str, geo: &dyn Geo) -> bool {
    match value {
        Value::Commune(c) => geo
            .commune(c.as_str())
            .is_some_and(|i| i.departement == code),
        Value::Departement(d) => d.as_str() == code,
        Value::Address(a) => address_departement(a, geo).is_some_and(|d| d == code),
        _ => false,
    }
}

/// Whether a COMMUNE, ADDRESS, DEPARTEMENT or REGION answer lies in the région `code`.
fn in_region(value: &Value, code: &str, geo: &dyn Geo) -> bool {
    let of_departement = |d: &str| geo.departement(d).is_some_and(|i| i.region == code);
    match value {
        Value::Commune(c) => geo.commune(c.as_str()).is_some_and(|i| i.region == code),
        Value::Departement(d) => of_departement(d.as_str()),
        Value::Region(r) => r.as_str() == code,
        Value::Address(a) => {
            if let Some(commune) = a
                .commune_code
                .as_ref()
                .and_then(|c| geo.commune(c.as_str()))
            {
                commune.region == code
            } else if let Some(d) = &a.departement_code {
                of_departement(d.as_str())
            } else {
                a.region_code.as_ref().is_some_and(|r| r.as_str() == code)
            }
        }
        _ => false,
    }
}

/// The département of an address: its commune's, else its own code.
fn address_departement(a: &Address, geo: &dyn Geo) -> Option<String> {
    a.commune_code
        .as_ref()
        .and_then(|c| geo.commune(c.as_str()))
        .map(|i| i.departement.to_owned())
        .or_else(|| a.departement_code.as_ref().map(|d| d.as_str().to_owned()))
}

/// Checks that a comparison suits the compared field (used by [`FormDefinition::new`]); the
/// error is a French reason for the admin.
pub fn check_comparison(
    operator: Operator,
    operand: Option<&Operand>,
    target: &FieldDefinition,
) -> Result<(), String> {
    use FieldType as T;
    let field_type = target.field_type;
    if field_type.is_display_only() {
        return Err("un champ d'affichage n'a pas de réponse à comparer".to_owned());
    }
    let operand = match (operator.takes_operand(), operand) {
        (false, None) => return Ok(()),
        (false, Some(_)) => {
            return Err(format!(
                "la condition « {operator} » ne prend pas de valeur de comparaison"
            ));
        }
        (true, None) => {
            return Err(format!(
                "la condition « {operator} » demande une valeur de comparaison"
            ));
        }
        (true, Some(operand)) => operand,
    };
    let syntax = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("la valeur de comparaison n'est pas {what} valide"))
        }
    };
    let suits = match (operator, operand) {
        (Operator::Equals | Operator::NotEquals, Operand::Text(text)) => match field_type {
            T::Text | T::Textarea => true,
            T::DropDown => return allowed_value(target, text),
            T::Siret => return syntax(Siret::parse(text).is_ok(), "un SIRET"),
            T::Email => return syntax(Email::parse(text).is_ok(), "une adresse électronique"),
            T::Phone => return syntax(Phone::parse(text).is_ok(), "un numéro de téléphone"),
            T::Commune => return syntax(InseeCommune::parse(text).is_ok(), "un code commune"),
            T::Departement => {
                return syntax(InseeDepartement::parse(text).is_ok(), "un code département");
            }
            T::Region => return syntax(InseeRegion::parse(text).is_ok(), "un code région"),
            _ => false,
        },
        (Operator::Equals | Operator::NotEquals, Operand::Boolean(_)) => {
            matches!(field_type, T::Checkbox | T::YesNo)
        }
        (
            Operator::Equals
            | Operator::NotEquals
            | Operator::Lt
            | Operator::Lte
            | Operator::Gt
            | Operator::Gte,
            operand,
        ) => match operand {
            Operand::Integer(_) | Operand::Decimal(_) => field_type.is_numeric(),
            Operand::Date(_) => field_type.is_temporal(),
            Operand::Text(_) | Operand::Boolean(_) => false,
        },
        (Operator::Includes, Operand::Text(text)) if field_type == T::MultiDropDown => {
            return allowed_value(target, text);
        }
        (Operator::InDepartement, Operand::Text(code)) => {
            syntax(InseeDepartement::parse(code).is_ok(), "un code département")?;
            matches!(field_type, T::Commune | T::Address | T::Departement)
        }
        (Operator::InRegion, Operand::Text(code)) => {
            syntax(InseeRegion::parse(code).is_ok(), "un code région")?;
            matches!(
                field_type,
                T::Commune | T::Address | T::Departement | T::Region
            )
        }
        _ => false,
    };
    if suits {
        Ok(())
    } else {
        Err(format!(
            "la condition « {operator} » avec cette valeur ne s'applique pas à un champ de type \
             {field_type}"
        ))
    }
}

/// A DROP_DOWN / MULTI_DROP_DOWN operand must be one of the field's allowed values.
fn allowed_value(target: &FieldDefinition, text: &str) -> Result<(), String> {
    match &target.constraints {
        Constraints::Choice(c) if c.values.iter().any(|v| v == text) => Ok(()),
        _ => Err(format!(
            "la valeur « {text} » ne fait pas partie des valeurs proposées"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Visibility
// ---------------------------------------------------------------------------------------------

/// Which fields of a dossier are visible: every top-level field, and every child in every row of
/// its repetition. A child of a hidden repetition is hidden.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    top: HashMap<FieldId, bool>,
    /// Repetition → row → child → visible.
    rows: HashMap<FieldId, HashMap<RowId, HashMap<FieldId, bool>>>,
}

impl Visibility {
    /// Whether a top-level field is visible (false for a field the form does not have).
    pub fn is_visible(&self, field: &FieldId) -> bool {
        self.top.get(field).copied().unwrap_or(false)
    }

    /// Whether a child field is visible in a row (false for an unknown row or field).
    pub fn is_visible_in_row(&self, repetition: &FieldId, row: &RowId, child: &FieldId) -> bool {
        self.rows
            .get(repetition)
            .and_then(|rows| rows.get(row))
            .and_then(|children| children.get(child))
            .copied()
            .unwrap_or(false)
    }

    /// Whether the answer at a path is visible.
    pub fn is_visible_at(&self, path: &ChampPath) -> bool {
        match path {
            ChampPath::Field(id) => self.is_visible(id),
            ChampPath::Child {
                repetition,
                row,
                field,
            } => self.is_visible_in_row(repetition, row, field),
        }
    }
}

/// Evaluates every condition of the form in order. A field's condition sees the visibility of
/// the fields it compares (computed before it, as they are earlier in the form).
pub fn visibility(form: &FormDefinition, answers: &Answers, geo: &dyn Geo) -> Visibility {
    let mut result = Visibility::default();
    for field in form.fields() {
        let visible = {
            let top = &result.top;
            let lookup = |id: &FieldId| top.get(id).copied().unwrap_or(false);
            field
                .visible_when
                .as_ref()
                .is_none_or(|c| c.holds(answers, None, geo, &lookup))
        };
        result.top.insert(field.id.clone(), visible);
        if field.field_type != FieldType::Repetition {
            continue;
        }
        let mut rows = HashMap::new();
        for row in answers.rows(&field.id) {
            let mut children: HashMap<FieldId, bool> = HashMap::new();
            for child in &field.children {
                let child_visible = visible && {
                    let (top, siblings) = (&result.top, &children);
                    let lookup = |id: &FieldId| {
                        siblings
                            .get(id)
                            .or_else(|| top.get(id))
                            .copied()
                            .unwrap_or(false)
                    };
                    child
                        .visible_when
                        .as_ref()
                        .is_none_or(|c| c.holds(answers, Some(row), geo, &lookup))
                };
                children.insert(child.id.clone(), child_visible);
            }
            rows.insert(row.id.clone(), children);
        }
        result.rows.insert(field.id.clone(), rows);
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::form::{ChoiceConstraints, FieldDefinition};
    use crate::geo::{CommuneInfo, DepartementInfo, RegionInfo};
    use crate::value::Address;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    /// A tiny referential for tests.
    pub(crate) struct TestGeo;

    const COMMUNES: [(&str, &str, &str, &str); 4] = [
        ("13055", "Marseille", "13", "93"),
        ("75056", "Paris", "75", "11"),
        ("2A004", "Ajaccio", "2A", "94"),
        ("97411", "Saint-Denis", "974", "04"),
    ];
    const DEPARTEMENTS: [(&str, &str, &str); 4] = [
        ("13", "Bouches-du-Rhône", "93"),
        ("75", "Paris", "11"),
        ("2A", "Corse-du-Sud", "94"),
        ("974", "La Réunion", "04"),
    ];
    const REGIONS: [(&str, &str); 4] = [
        ("93", "Provence-Alpes-Côte d'Azur"),
        ("11", "Île-de-France"),
        ("94", "Corse"),
        ("04", "La Réunion"),
    ];

    impl Geo for TestGeo {
        fn commune(&self, code: &str) -> Option<CommuneInfo<'_>> {
            COMMUNES
                .iter()
                .find(|c| c.0 == code)
                .map(|&(code, name, departement, region)| CommuneInfo {
                    code,
                    name,
                    departement,
                    region,
                })
        }
        fn departement(&self, code: &str) -> Option<DepartementInfo<'_>> {
            DEPARTEMENTS
                .iter()
                .find(|d| d.0 == code)
                .map(|&(code, name, region)| DepartementInfo { code, name, region })
        }
        fn region(&self, code: &str) -> Option<RegionInfo<'_>> {
            REGIONS
                .iter()
                .find(|r| r.0 == code)
                .map(|&(code, name)| RegionInfo { code, name })
        }
    }

    fn fid(s: &str) -> FieldId {
        FieldId::parse(s).expect("test field id")
    }

    fn rid(s: &str) -> RowId {
        RowId::parse(s).expect("test row id")
    }

    fn cmp(id: &str, operator: Operator, operand: Option<Operand>) -> Condition {
        Condition::Compare {
            field: fid(id),
            operator,
            operand,
        }
    }

    fn text(s: &str) -> Option<Operand> {
        Some(Operand::Text(s.to_owned()))
    }

    /// Evaluates a leaf on one answer of field `x`, visible.
    fn eval(value: Option<Value>, operator: Operator, operand: Option<Operand>) -> bool {
        let mut answers = Answers::new();
        if let Some(v) = value {
            answers.set(fid("x"), v);
        }
        cmp("x", operator, operand).holds(&answers, None, &TestGeo, &|_| true)
    }

    fn commune(code: &str) -> Value {
        Value::Commune(InseeCommune::parse(code).expect("commune"))
    }

    #[test]
    fn equality_compares_answers_of_the_same_kind() {
        use Operator::{Equals, NotEquals};
        assert!(eval(
            Some(Value::YesNo(true)),
            Equals,
            Some(Operand::Boolean(true))
        ));
        assert!(!eval(
            Some(Value::YesNo(false)),
            Equals,
            Some(Operand::Boolean(true))
        ));
        assert!(eval(
            Some(Value::YesNo(false)),
            NotEquals,
            Some(Operand::Boolean(true))
        ));
        assert!(eval(
            Some(Value::Checkbox(true)),
            Equals,
            Some(Operand::Boolean(true))
        ));
        assert!(eval(Some(Value::Text(" Oui ".into())), Equals, text("Oui")));
        let dd = |v: &str| Some(Value::DropDown(Choice::Value(v.into())));
        assert!(eval(dd("Association"), Equals, text("Association")));
        assert!(eval(dd("Association"), NotEquals, text("Autre")));
        let other = Some(Value::DropDown(Choice::Other("Club".into())));
        assert!(!eval(other.clone(), Equals, text("Association")));
        assert!(eval(other, NotEquals, text("Association")));
        assert!(eval(
            Some(Value::Integer(3)),
            Equals,
            Some(Operand::Decimal(Decimal::new(30, 1)))
        ));
        assert!(eval(
            Some(Value::Decimal(Decimal::new(150, 2))),
            Equals,
            Some(Operand::Decimal(Decimal::new(15, 1)))
        ));
        assert!(eval(Some(commune("13055")), Equals, text("13055")));
        let siret = Siret::parse("44306184100047").map(Value::Siret).ok();
        assert!(eval(siret.clone(), Equals, text("443 061 841 00047")));
        assert!(!eval(siret.clone(), NotEquals, text("not a siret")));
        assert!(!eval(siret, Equals, text("not a siret")));
        let phone = Phone::parse("06 12 34 56 78").map(Value::Phone).ok();
        assert!(eval(phone, Equals, text("+33612345678")));
    }

    #[test]
    fn a_missing_answer_is_neither_equal_nor_different() {
        assert!(!eval(None, Operator::Equals, Some(Operand::Boolean(true))));
        assert!(!eval(
            None,
            Operator::NotEquals,
            Some(Operand::Boolean(true))
        ));
        assert!(!eval(
            Some(Value::Text("  ".into())),
            Operator::NotEquals,
            text("x")
        ));
        assert!(eval(None, Operator::IsEmpty, None));
        assert!(eval(Some(Value::Text(" ".into())), Operator::IsEmpty, None));
        assert!(!eval(None, Operator::IsNotEmpty, None));
        assert!(eval(
            Some(Value::Checkbox(false)),
            Operator::IsNotEmpty,
            None
        ));
    }

    #[test]
    fn ordering_compares_numbers_and_dates() {
        use Operator::{Gt, Gte, Lt, Lte};
        let int = |i| Some(Value::Integer(i));
        assert!(eval(int(5), Lt, Some(Operand::Integer(6))));
        assert!(!eval(int(6), Lt, Some(Operand::Integer(6))));
        assert!(eval(int(6), Lte, Some(Operand::Integer(6))));
        assert!(eval(
            int(7),
            Gt,
            Some(Operand::Decimal(Decimal::new(65, 1)))
        ));
        assert!(eval(int(6), Gte, Some(Operand::Integer(6))));
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("date");
        assert!(eval(
            Some(Value::Date(date(2024, 10, 1))),
            Gte,
            Some(Operand::Date(date(2024, 10, 1)))
        ));
        assert!(eval(
            Some(Value::Date(date(2024, 9, 30))),
            Lt,
            Some(Operand::Date(date(2024, 10, 1)))
        ));
        // 30 September 23:30 UTC is already 1 October in Paris.
        let late = Utc
            .with_ymd_and_hms(2024, 9, 30, 23, 30, 0)
            .single()
            .map(Value::Datetime);
        assert!(eval(late, Gte, Some(Operand::Date(date(2024, 10, 1)))));
        // Mismatched kinds are false whatever the operator.
        assert!(!eval(int(5), Lt, Some(Operand::Date(date(2024, 1, 1)))));
        assert!(!eval(
            Some(Value::Text("5".into())),
            Lt,
            Some(Operand::Integer(6))
        ));
    }

    #[test]
    fn includes_looks_into_multiple_choices() {
        let multi = Some(Value::MultiDropDown {
            values: vec!["Jeunes".into(), "Étudiants".into()],
            other: Some("Sportifs".into()),
        });
        assert!(eval(multi.clone(), Operator::Includes, text("Étudiants")));
        assert!(!eval(multi, Operator::Includes, text("Sportifs")));
        assert!(!eval(
            Some(Value::Text("Jeunes".into())),
            Operator::Includes,
            text("Jeunes")
        ));
    }

    #[test]
    fn geography_is_resolved_through_geo() {
        use Operator::{InDepartement, InRegion};
        assert!(eval(Some(commune("13055")), InDepartement, text("13")));
        assert!(!eval(Some(commune("13055")), InDepartement, text("75")));
        assert!(eval(Some(commune("2A004")), InRegion, text("94")));
        assert!(eval(Some(commune("97411")), InDepartement, text("974")));
        // Unknown commune: false, never a panic.
        assert!(!eval(Some(commune("99999")), InDepartement, text("99")));
        let dept = InseeDepartement::parse("75").map(Value::Departement).ok();
        assert!(eval(dept.clone(), InDepartement, text("75")));
        assert!(eval(dept, InRegion, text("11")));
        let region = InseeRegion::parse("93").map(Value::Region).ok();
        assert!(eval(region.clone(), InRegion, text("93")));
        assert!(!eval(region, InDepartement, text("13")));
        let address = Value::Address(Address {
            label: "Place du Général de Gaulle 13001 Marseille".into(),
            commune_code: InseeCommune::parse("13055").ok(),
            ..Address::default()
        });
        assert!(eval(Some(address.clone()), InDepartement, text("13")));
        assert!(eval(Some(address), InRegion, text("93")));
        let coded = Value::Address(Address {
            label: "Quelque part".into(),
            departement_code: InseeDepartement::parse("2A").ok(),
            ..Address::default()
        });
        assert!(eval(Some(coded.clone()), InDepartement, text("2A")));
        assert!(eval(Some(coded), InRegion, text("94")));
    }

    #[test]
    fn a_hidden_field_is_empty_and_nothing_else() {
        let mut answers = Answers::new();
        answers.set(fid("x"), Value::YesNo(true));
        let hidden = |_: &FieldId| false;
        for (operator, operand, expected) in [
            (Operator::IsEmpty, None, true),
            (Operator::IsNotEmpty, None, false),
            (Operator::Equals, Some(Operand::Boolean(true)), false),
            (Operator::NotEquals, Some(Operand::Boolean(false)), false),
        ] {
            let holds = cmp("x", operator, operand).holds(&answers, None, &TestGeo, &hidden);
            assert_eq!(holds, expected, "{operator:?}");
        }
    }

    #[test]
    fn groups_combine_their_items() {
        let t = cmp("x", Operator::IsNotEmpty, None);
        let f = cmp("x", Operator::IsEmpty, None);
        let mut answers = Answers::new();
        answers.set(fid("x"), Value::Integer(1));
        let holds = |c: Condition| c.holds(&answers, None, &TestGeo, &|_| true);
        assert!(holds(Condition::All(vec![t.clone(), t.clone()])));
        assert!(!holds(Condition::All(vec![t.clone(), f.clone()])));
        assert!(holds(Condition::Any(vec![f.clone(), t.clone()])));
        assert!(!holds(Condition::Any(vec![f.clone(), f.clone()])));
        assert!(holds(Condition::All(vec![])));
        assert!(!holds(Condition::Any(vec![])));
        let nested = Condition::Any(vec![Condition::All(vec![t.clone(), f]), t]);
        assert_eq!(nested.depth(), 2);
        assert_eq!(nested.fields().len(), 3);
    }

    fn yes_no(id: &str) -> FieldDefinition {
        FieldDefinition::new(fid(id), "Question ?", FieldType::YesNo)
    }

    fn text_field(id: &str) -> FieldDefinition {
        FieldDefinition::new(fid(id), "Texte", FieldType::Text)
    }

    #[test]
    fn visibility_cascades_through_hidden_fields() {
        // b shows when a is oui; c shows when b is oui; d shows when b is empty.
        let form = FormDefinition::new(vec![
            yes_no("a"),
            yes_no("b").visible_when(cmp("a", Operator::Equals, Some(Operand::Boolean(true)))),
            text_field("c").visible_when(cmp("b", Operator::Equals, Some(Operand::Boolean(true)))),
            text_field("d").visible_when(cmp("b", Operator::IsEmpty, None)),
        ])
        .expect("form");
        let mut answers = Answers::new();
        answers.set(fid("a"), Value::YesNo(false));
        answers.set(fid("b"), Value::YesNo(true));
        let v = visibility(&form, &answers, &TestGeo);
        assert!(v.is_visible(&fid("a")));
        assert!(!v.is_visible(&fid("b")));
        // b is hidden, so its stale "oui" does not show c, and b counts as empty for d.
        assert!(!v.is_visible(&fid("c")));
        assert!(v.is_visible(&fid("d")));
        assert!(!v.is_visible(&fid("unknown")));

        answers.set(fid("a"), Value::YesNo(true));
        let v = visibility(&form, &answers, &TestGeo);
        assert!(v.is_visible(&fid("b")) && v.is_visible(&fid("c")) && !v.is_visible(&fid("d")));
    }

    #[test]
    fn visibility_is_computed_per_row() {
        let form = FormDefinition::new(vec![
            yes_no("show"),
            FieldDefinition::new(fid("r"), "Lignes", FieldType::Repetition)
                .visible_when(cmp("show", Operator::Equals, Some(Operand::Boolean(true))))
                .with_children(vec![
                    FieldDefinition::new(fid("r_kind"), "Type", FieldType::DropDown)
                        .with_constraints(Constraints::Choice(ChoiceConstraints {
                            values: vec!["A".into(), "B".into()],
                            ..ChoiceConstraints::default()
                        })),
                    text_field("r_detail").visible_when(cmp("r_kind", Operator::Equals, text("B"))),
                    text_field("r_note").visible_when(cmp("show", Operator::IsNotEmpty, None)),
                ]),
        ])
        .expect("form");
        let mut answers = Answers::new();
        answers.set(fid("show"), Value::YesNo(true));
        let rep = fid("r");
        for (row, kind) in [("r1", "A"), ("r2", "B")] {
            answers.add_row(rep.clone(), rid(row)).expect("row");
            answers
                .set_in_row(
                    &rep,
                    &rid(row),
                    fid("r_kind"),
                    Value::DropDown(Choice::Value(kind.into())),
                )
                .expect("set");
        }
        let v = visibility(&form, &answers, &TestGeo);
        assert!(v.is_visible_in_row(&rep, &rid("r1"), &fid("r_kind")));
        assert!(!v.is_visible_in_row(&rep, &rid("r1"), &fid("r_detail")));
        assert!(v.is_visible_in_row(&rep, &rid("r2"), &fid("r_detail")));
        assert!(v.is_visible_in_row(&rep, &rid("r2"), &fid("r_note")));
        assert!(!v.is_visible_in_row(&rep, &rid("r3"), &fid("r_kind")));
        let path = ChampPath::parse("r[r2].r_detail").expect("path");
        assert!(v.is_visible_at(&path));

        answers.set(fid("show"), Value::YesNo(false));
        let v = visibility(&form, &answers, &TestGeo);
        assert!(!v.is_visible(&rep));
        assert!(!v.is_visible_in_row(&rep, &rid("r2"), &fid("r_kind")));
        assert!(!v.is_visible_at(&path));
    }

    // --- property tests ------------------------------------------------------------------

    const IDS: [&str; 4] = ["a", "b", "c", "d"];

    fn any_operator() -> impl Strategy<Value = Operator> {
        prop_oneof![
            Just(Operator::Equals),
            Just(Operator::NotEquals),
            Just(Operator::Lt),
            Just(Operator::Lte),
            Just(Operator::Gt),
            Just(Operator::Gte),
            Just(Operator::Includes),
            Just(Operator::InDepartement),
            Just(Operator::InRegion),
            Just(Operator::IsEmpty),
            Just(Operator::IsNotEmpty),
        ]
    }

    fn any_operand() -> impl Strategy<Value = Operand> {
        prop_oneof![
            "\\PC{0,6}".prop_map(Operand::Text),
            prop_oneof![
                Just("13".to_owned()),
                Just("93".to_owned()),
                Just("2A".to_owned())
            ]
            .prop_map(Operand::Text),
            any::<i64>().prop_map(Operand::Integer),
            (any::<i64>(), 0u32..10).prop_map(|(m, s)| Operand::Decimal(Decimal::new(m, s))),
            (-400_000i32..400_000).prop_filter_map("date", |d| {
                NaiveDate::from_num_days_from_ce_opt(d + 700_000).map(Operand::Date)
            }),
            any::<bool>().prop_map(Operand::Boolean),
        ]
    }

    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        let code = prop_oneof![Just("13055"), Just("2A004"), Just("99999"), Just("97411"),];
        prop_oneof![
            "\\PC{0,6}".prop_map(Value::Text),
            any::<i64>().prop_map(Value::Integer),
            (any::<i64>(), 0u32..28).prop_map(|(m, s)| Value::Decimal(Decimal::new(m, s))),
            (-400_000i32..400_000).prop_filter_map("date", |d| {
                NaiveDate::from_num_days_from_ce_opt(d + 700_000).map(Value::Date)
            }),
            any::<i64>().prop_filter_map("instant", |s| {
                chrono::DateTime::from_timestamp(s % 100_000_000_000, 0).map(Value::Datetime)
            }),
            any::<bool>().prop_map(Value::Checkbox),
            any::<bool>().prop_map(Value::YesNo),
            "\\PC{0,6}".prop_map(|s| Value::DropDown(Choice::Value(s))),
            "\\PC{0,6}".prop_map(|s| Value::DropDown(Choice::Other(s))),
            (
                proptest::collection::vec("\\PC{0,4}", 0..4),
                proptest::option::of("\\PC{0,4}")
            )
                .prop_map(|(values, other)| Value::MultiDropDown { values, other }),
            code.clone()
                .prop_filter_map("commune", |c| InseeCommune::parse(c)
                    .ok()
                    .map(Value::Commune)),
            prop_oneof![Just("13"), Just("2A"), Just("95"), Just("974")]
                .prop_filter_map("dept", |d| InseeDepartement::parse(d)
                    .ok()
                    .map(Value::Departement)),
            prop_oneof![Just("93"), Just("00")].prop_filter_map("region", |r| InseeRegion::parse(
                r
            )
            .ok()
            .map(Value::Region)),
            (
                code,
                proptest::option::of(prop_oneof![Just("13"), Just("75")])
            )
                .prop_map(|(c, d)| {
                    Value::Address(Address {
                        label: "x".into(),
                        commune_code: InseeCommune::parse(c).ok(),
                        departement_code: d.and_then(|d| InseeDepartement::parse(d).ok()),
                        ..Address::default()
                    })
                }),
            Just(Value::Repetition(vec![])),
            Just(Value::Files(vec![])),
            any::<i64>().prop_map(Value::DossierLink),
        ]
    }

    fn any_condition() -> impl Strategy<Value = Condition> {
        let leaf = (
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("d"), Just("zz")],
            any_operator(),
            proptest::option::of(any_operand()),
        )
            .prop_map(|(id, operator, operand)| cmp(id, operator, operand));
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Condition::All),
                proptest::collection::vec(inner, 0..4).prop_map(Condition::Any),
            ]
        })
    }

    fn any_answers() -> impl Strategy<Value = Answers> {
        proptest::collection::vec(proptest::option::of(any_value()), IDS.len()).prop_map(|values| {
            IDS.iter()
                .zip(values)
                .filter_map(|(id, v)| v.map(|v| (fid(id), v)))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn condition_evaluation_never_panics(
            condition in any_condition(),
            answers in any_answers(),
            hidden in proptest::collection::vec(any::<bool>(), IDS.len()),
            row_value in proptest::option::of(any_value()),
        ) {
            let visible = |id: &FieldId| {
                IDS.iter().position(|i| *i == id.as_str()).is_none_or(|p| !hidden[p])
            };
            let _ = condition.holds(&answers, None, &TestGeo, &visible);
            let mut row = Row::new(rid("r1"));
            if let Some(v) = row_value {
                row.champs.insert(fid("a"), v);
            }
            let _ = condition.holds(&answers, Some(&row), &TestGeo, &visible);
        }

        #[test]
        fn equals_and_not_equals_never_both_hold(
            value in any_value(),
            operand in any_operand(),
        ) {
            let eq = eval(Some(value.clone()), Operator::Equals, Some(operand.clone()));
            let ne = eval(Some(value), Operator::NotEquals, Some(operand));
            prop_assert!(!(eq && ne));
        }
    }
}
