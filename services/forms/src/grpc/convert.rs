//! Conversions between the forms service's protobuf contracts (`mst.forms.v1`, `mst.events.v1`)
//! and its domain.
//!
//! Inbound (pb → domain) conversions check the *shape* of a request — enum values known, counts
//! not negative, decimal and date strings canonical, timestamps in the protobuf range — and report
//! each problem as a field violation `(request path, French message)` whose path follows the
//! request's proto field names (`definition.fields[3].choice.values[2]`), ready for a BadRequest.
//! The domain's own rules (a form's consistency, an answer's validity) stay in the domain; for a
//! form definition, [`FormDefinition::new`]'s errors are mapped back to request paths here so
//! that an admin sees every problem of a definition at once.
//!
//! Every pb struct is destructured field by field (and every pb enum matched without a wildcard),
//! so a field added to a contract fails the build here until it is handled. Nothing here panics,
//! whatever the input; recursion is bounded (condition trees by [`Condition::MAX_DEPTH`] before
//! recursing, fields by two levels, repetitions by one).
//!
//! Outbound (domain → pb) conversions are total: [`field_definitions_to_pb`] is the exact inverse
//! of [`form_definition`] on every definition the latter accepts, and [`value_to_pb`] gives back
//! the `ChampValue` a client sends for a value (see the tests).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use mst_proto::{events as ev, forms as pb};
use rust_decimal::Decimal;

use crate::app::{Patch, PatchOp};
use crate::domain::condition::{Condition, Operand, Operator, check_comparison};
use crate::domain::form::{
    ChoiceConstraints, Constraints, DateConstraints, DefinitionError, DossierLinkConstraints,
    FieldDefinition, FieldPurpose, FieldType, FileConstraints, FormDefinition, NumberConstraints,
    Pattern, RepetitionConstraints, TextConstraints,
};
use crate::domain::ids::{FieldId, RowId};
use crate::domain::procedure::{Kind, ProcedureDefinition, ProcedureId, Status};
use crate::domain::value::{
    Address, AddressInput, Answers, ChampPath, Choice, FileRef, Input, Row, RowInput, Value,
};

/// One problem of a request: the path of the request field (proto field names, e.g.
/// `definition.fields[3].label` or `patches[2].set.address.latitude`) and a French message.
pub type FieldViolation = (String, String);

/// Every problem found in a request.
pub type FieldViolations = Vec<(String, String)>;

/// Longest procedure title, in characters.
pub const TITLE_MAX_CHARS: usize = 500;

/// Earliest instant a `google.protobuf.Timestamp` may hold: 0001-01-01T00:00:00Z.
const TIMESTAMP_MIN_SECONDS: i64 = -62_135_596_800;
/// Latest second a `google.protobuf.Timestamp` may hold: 9999-12-31T23:59:59Z.
const TIMESTAMP_MAX_SECONDS: i64 = 253_402_300_799;
/// Longest `google.protobuf.Duration`: about 10 000 years.
const DURATION_MAX_SECONDS: i64 = 315_576_000_000;
/// Nanoseconds in a second.
const NANOS_PER_SECOND: i32 = 1_000_000_000;
/// Longest decimal string accepted (the domain's `Decimal` holds at most 28 digits anyway).
const DECIMAL_MAX_LEN: usize = 40;
/// Longest excerpt of a client's string quoted back in a message.
const QUOTE_MAX_CHARS: usize = 40;
/// `chrono` format of the proto's `YYYY-MM-DD` dates.
const DATE_FORMAT: &str = "%Y-%m-%d";

const MSG_EMPTY_ANSWER: &str = "Réponse vide";
const MSG_NEGATIVE: &str = "Ce nombre ne peut pas être négatif";

// ---------------------------------------------------------------------------------------------
// Procedure definitions (pb → domain)
// ---------------------------------------------------------------------------------------------

/// Reads a procedure definition (`LoadProcedure`, a definition file). `prefix` is the request
/// path of the message (`"definition"`, or `""` when its fields are the request's own);
/// violations name `"{prefix}.title"`, `"{prefix}.fields[3].choice.values[2]"`, … Every problem is listed: the attributes' (id,
/// non-blank title of at most 500 characters, kind, non-negative filling time, closing instant in
/// the timestamp range) and the form's (see [`form_definition`]).
///
/// An absent `estimated_filling_time` reads as zero.
pub fn procedure_definition(
    pb: pb::ProcedureDefinition,
    prefix: &str,
) -> Result<ProcedureDefinition, FieldViolations> {
    let pb::ProcedureDefinition {
        id,
        title,
        description,
        kind,
        estimated_filling_time,
        closing_at,
        fields,
    } = pb;
    let at = |member: &str| member_path(prefix, member);
    let mut violations = Vec::new();
    let id = keep(
        &mut violations,
        ProcedureId::parse(&id).map_err(|message| (at("id"), message)),
    );
    let title = keep(&mut violations, procedure_title(title, &at("title")));
    let kind = keep(
        &mut violations,
        ev::DossierKind::try_from(kind)
            .ok()
            .and_then(kind_from_pb)
            .ok_or_else(|| {
                (
                    at("kind"),
                    "Indiquez si la démarche porte sur des projets ou des actions".to_owned(),
                )
            }),
    );
    let estimated_filling_time = keep(
        &mut violations,
        duration(
            estimated_filling_time.as_ref(),
            &at("estimated_filling_time"),
        ),
    );
    let closing_at = keep(
        &mut violations,
        closing_at
            .map(|ts| datetime(&ts, &at("closing_at")))
            .transpose(),
    );
    let form = match form_definition(fields, &at("fields")) {
        Ok(form) => Some(form),
        Err(problems) => {
            violations.extend(problems);
            None
        }
    };
    match (
        id,
        title,
        kind,
        estimated_filling_time,
        closing_at,
        form,
        violations.is_empty(),
    ) {
        (
            Some(id),
            Some(title),
            Some(kind),
            Some(estimated_filling_time),
            Some(closing_at),
            Some(form),
            true,
        ) => Ok(ProcedureDefinition {
            id,
            title,
            description,
            kind,
            estimated_filling_time,
            closing_at,
            form,
        }),
        _ => Err(violations),
    }
}

/// `{prefix}.{member}`, or `member` alone under an empty prefix (a request's top-level fields).
fn member_path(prefix: &str, member: &str) -> String {
    if prefix.is_empty() {
        member.to_owned()
    } else {
        format!("{prefix}.{member}")
    }
}

/// A procedure definition as the contract carries it (the exact inverse of
/// [`procedure_definition`], except that a zero filling time is written absent).
pub fn procedure_definition_to_pb(definition: &ProcedureDefinition) -> pb::ProcedureDefinition {
    let ProcedureDefinition {
        id,
        title,
        description,
        kind,
        estimated_filling_time,
        closing_at,
        form,
    } = definition;
    pb::ProcedureDefinition {
        id: id.to_string(),
        title: title.clone(),
        description: description.clone(),
        kind: kind_to_pb(*kind) as i32,
        estimated_filling_time: duration_to_pb(*estimated_filling_time),
        closing_at: closing_at.map(timestamp),
        fields: field_definitions_to_pb(form),
    }
}

/// A procedure title: not blank, at most [`TITLE_MAX_CHARS`] characters (kept as written).
pub fn procedure_title(title: String, path: &str) -> Result<String, FieldViolation> {
    let path = path.to_owned();
    if title.trim().is_empty() {
        Err((path, "Le titre de la démarche est obligatoire".to_owned()))
    } else if title.chars().nth(TITLE_MAX_CHARS).is_some() {
        Err((
            path,
            format!("Le titre de la démarche ne doit pas dépasser {TITLE_MAX_CHARS} caractères"),
        ))
    } else {
        Ok(title)
    }
}

/// A non-negative duration within the protobuf range; absent reads as zero.
pub fn duration(d: Option<&prost_types::Duration>, path: &str) -> Result<Duration, FieldViolation> {
    let Some(&prost_types::Duration { seconds, nanos }) = d else {
        return Ok(Duration::ZERO);
    };
    if seconds < 0 || nanos < 0 {
        return Err((
            path.to_owned(),
            "La durée ne peut pas être négative".to_owned(),
        ));
    }
    match (u64::try_from(seconds), u32::try_from(nanos)) {
        (Ok(secs), Ok(nanos)) if seconds <= DURATION_MAX_SECONDS && nanos < 1_000_000_000 => {
            Ok(Duration::new(secs, nanos))
        }
        _ => Err((
            path.to_owned(),
            "Durée hors des limites autorisées".to_owned(),
        )),
    }
}

/// A duration as the contract carries it; zero is written absent.
pub fn duration_to_pb(d: Duration) -> Option<prost_types::Duration> {
    (!d.is_zero()).then(|| prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    })
}

// ---------------------------------------------------------------------------------------------
// Form definitions (pb → domain)
// ---------------------------------------------------------------------------------------------

/// Reads the fields of a form (`UpdateDraftRevision`, a definition file). `prefix` is the request
/// path of the repeated field (`"fields"`, `"definition.fields"`).
///
/// Lists every problem: first the shape problems of each field in form order (ids, unknown or
/// unspecified types, operators and purposes, negative counts, decimal and date syntax, conditions
/// deeper than [`Condition::MAX_DEPTH`], fields nested more than two levels), then the rules of
/// [`FormDefinition::new`], checked on the fields that could be read and each mapped to the path
/// of the field (found by its id) and of its member concerned. Errors of the domain that only come
/// from a field that could not be read (a reference to it, an emptied repetition) are left out.
pub fn form_definition(
    fields: Vec<pb::FieldDefinition>,
    prefix: &str,
) -> Result<FormDefinition, FieldViolations> {
    let mut reader = FormReader::default();
    let mut converted = Vec::with_capacity(fields.len());
    for (i, field) in fields.into_iter().enumerate() {
        let path = format!("{prefix}[{i}]");
        if let Some(field) = reader.field(field, &path, (converted.len(), None)) {
            converted.push(field);
        }
    }
    // Kept to locate the domain's errors (allowed values, referenced fields' types).
    let copy = converted.clone();
    match FormDefinition::new(converted) {
        Ok(form) if reader.violations.is_empty() => Ok(form),
        Ok(_) => Err(reader.violations),
        Err(errors) => {
            let located = reader.locate(errors, &copy, prefix);
            let mut violations = reader.violations;
            violations.extend(located);
            Err(violations)
        }
    }
}

/// Where a converted field came from, to map [`FormDefinition::new`]'s errors to request paths.
struct Site {
    id: FieldId,
    /// Request path of the field (`definition.fields[3].children[1]`).
    path: String,
    /// Name of the constraints member set (`text`, `choice`…), if any.
    member: Option<&'static str>,
    /// Position among the converted fields: top-level index, child index.
    position: (usize, Option<usize>),
    /// The fields it names (bounds first, then comparisons in written order, as the domain checks
    /// them).
    references: Vec<Reference>,
    /// Whether some of its children could not be converted.
    lost_children: bool,
}

/// A field named by a bound or a comparison.
struct Reference {
    referenced: FieldId,
    /// Path of the member naming the field (`…number.min_field_id`, `…comparison.field_id`).
    naming_path: String,
    /// Path reported when the referenced field does not suit (`…number.min_field_id`,
    /// `…comparison`).
    mismatch_path: String,
    check: ReferenceCheck,
}

enum ReferenceCheck {
    /// A `min_field_id` / `max_field_id`: the referenced type must pass.
    Bound(fn(FieldType) -> bool),
    /// A comparison of a condition.
    Comparison(Operator, Option<Operand>),
}

impl Reference {
    fn suits(&self, target: &FieldDefinition) -> bool {
        match &self.check {
            ReferenceCheck::Bound(suits) => suits(target.field_type),
            ReferenceCheck::Comparison(operator, operand) => {
                check_comparison(*operator, operand.as_ref(), target).is_ok()
            }
        }
    }
}

#[derive(Default)]
struct FormReader {
    violations: FieldViolations,
    /// Converted fields in the domain's order: each top-level field, then its children.
    sites: Vec<Site>,
    /// Raw ids of the fields that could not be converted.
    failed_ids: Vec<String>,
}

impl FormReader {
    fn keep<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        keep(&mut self.violations, result)
    }

    /// Converts one field (and, for a top-level field, its children); `None` when one of its own
    /// members is invalid (violations recorded).
    fn field(
        &mut self,
        pb: pb::FieldDefinition,
        path: &str,
        position: (usize, Option<usize>),
    ) -> Option<FieldDefinition> {
        let pb::FieldDefinition {
            id,
            label,
            description,
            r#type,
            required,
            constraints,
            visible_when,
            children,
            purpose,
        } = pb;
        let before = self.violations.len();
        let field_id =
            self.keep(FieldId::parse(&id).map_err(|e| (format!("{path}.id"), e.message_fr())));
        let field_type = self.keep(field_type(r#type, &format!("{path}.type")));
        let member = constraints.as_ref().map(constraints_member);
        let mut references = Vec::new();
        let constraints = self.constraints(constraints, path, &mut references);
        let visible_when = match visible_when {
            None => Some(None),
            Some(condition) => self
                .condition(
                    condition,
                    &format!("{path}.visible_when"),
                    0,
                    &mut references,
                )
                .map(Some),
        };
        let purpose = self.keep(field_purpose(purpose, &format!("{path}.purpose")));
        let own_ok = self.violations.len() == before;

        let site_index = self.sites.len();
        if own_ok && let Some(id) = &field_id {
            self.sites.push(Site {
                id: id.clone(),
                path: path.to_owned(),
                member,
                position,
                references,
                lost_children: false,
            });
        }

        let mut converted_children = Vec::new();
        if position.1.is_none() {
            let mut lost_children = false;
            for (j, child) in children.into_iter().enumerate() {
                let child_path = format!("{path}.children[{j}]");
                let child_position = (position.0, Some(converted_children.len()));
                match self.field(child, &child_path, child_position) {
                    Some(child) => converted_children.push(child),
                    None => lost_children = true,
                }
            }
            if let Some(site) = self.sites.get_mut(site_index) {
                site.lost_children = lost_children;
            }
        } else if !children.is_empty() {
            // Children of a child: the domain would refuse them too (it only indexes two levels);
            // refused here so that the conversion never recurses deeper.
            let message = match &field_id {
                Some(id) => DefinitionError::UnexpectedChildren { field: id.clone() }.message_fr(),
                None => {
                    "Un champ d'un bloc répétable ne peut pas contenir d'autres champs".to_owned()
                }
            };
            self.violations.push((format!("{path}.children"), message));
        }

        match (field_id, field_type, constraints, visible_when, purpose) {
            (Some(id), Some(field_type), Some(constraints), Some(visible_when), Some(purpose))
                if own_ok =>
            {
                Some(FieldDefinition {
                    id,
                    label,
                    description,
                    field_type,
                    required,
                    constraints,
                    visible_when,
                    children: converted_children,
                    purpose,
                })
            }
            _ => {
                // Its children go with it: the domain will not see them either.
                self.sites.truncate(site_index);
                self.failed_ids.push(id);
                self.failed_ids
                    .extend(converted_children.into_iter().map(|c| c.id.to_string()));
                None
            }
        }
    }

    fn constraints(
        &mut self,
        pb: Option<pb::field_definition::Constraints>,
        path: &str,
        references: &mut Vec<Reference>,
    ) -> Option<Constraints> {
        use pb::field_definition::Constraints as C;
        let before = self.violations.len();
        let constraints = match pb {
            None => Constraints::None,
            Some(C::Text(pb::TextConstraints {
                min_length,
                max_length,
                pattern,
                pattern_message,
            })) => {
                let p = format!("{path}.text");
                let min_length = self.keep(count(min_length, &format!("{p}.min_length")));
                let max_length = self.keep(count(max_length, &format!("{p}.max_length")));
                Constraints::Text(TextConstraints {
                    min_length: min_length.flatten(),
                    max_length: max_length.flatten(),
                    // A pattern that does not compile is reported by the domain.
                    pattern: non_empty(pattern).map(Pattern::new),
                    pattern_message: non_empty(pattern_message),
                })
            }
            Some(C::Number(pb::NumberConstraints {
                min,
                max,
                max_decimal_places,
                min_field_id,
                max_field_id,
            })) => {
                let p = format!("{path}.number");
                let min = self.keep(optional_decimal(min, &format!("{p}.min")));
                let max = self.keep(optional_decimal(max, &format!("{p}.max")));
                let max_decimal_places = self.keep(count(
                    max_decimal_places,
                    &format!("{p}.max_decimal_places"),
                ));
                let min_field = self.bound(
                    &min_field_id,
                    format!("{p}.min_field_id"),
                    FieldType::is_numeric,
                    references,
                );
                let max_field = self.bound(
                    &max_field_id,
                    format!("{p}.max_field_id"),
                    FieldType::is_numeric,
                    references,
                );
                Constraints::Number(NumberConstraints {
                    min: min.flatten(),
                    max: max.flatten(),
                    max_decimal_places: max_decimal_places.flatten(),
                    min_field,
                    max_field,
                })
            }
            Some(C::Date(pb::DateConstraints {
                min_date,
                max_date,
                min_field_id,
                max_field_id,
            })) => {
                let p = format!("{path}.date");
                let min_date = self.keep(optional_date(min_date, &format!("{p}.min_date")));
                let max_date = self.keep(optional_date(max_date, &format!("{p}.max_date")));
                let min_field = self.bound(
                    &min_field_id,
                    format!("{p}.min_field_id"),
                    FieldType::is_temporal,
                    references,
                );
                let max_field = self.bound(
                    &max_field_id,
                    format!("{p}.max_field_id"),
                    FieldType::is_temporal,
                    references,
                );
                Constraints::Date(DateConstraints {
                    min_date: min_date.flatten(),
                    max_date: max_date.flatten(),
                    min_field,
                    max_field,
                })
            }
            Some(C::Choice(pb::ChoiceConstraints {
                values,
                allow_other,
                other_label,
                min_selected,
                max_selected,
            })) => {
                let p = format!("{path}.choice");
                let min_selected = self.keep(count(min_selected, &format!("{p}.min_selected")));
                let max_selected = self.keep(count(max_selected, &format!("{p}.max_selected")));
                Constraints::Choice(ChoiceConstraints {
                    values,
                    allow_other,
                    other_label: non_empty(other_label),
                    min_selected: min_selected.flatten(),
                    max_selected: max_selected.flatten(),
                })
            }
            Some(C::File(pb::FileConstraints {
                accepted_content_types,
                max_size_bytes,
                max_files,
            })) => {
                let p = format!("{path}.file");
                let max_size_bytes = self.keep(
                    max_size_bytes
                        .map(|n| {
                            u64::try_from(n).map_err(|_| {
                                (format!("{p}.max_size_bytes"), MSG_NEGATIVE.to_owned())
                            })
                        })
                        .transpose(),
                );
                let max_files = self.keep(count(max_files, &format!("{p}.max_files")));
                Constraints::File(FileConstraints {
                    accepted_content_types,
                    max_size_bytes: max_size_bytes.flatten(),
                    max_files: max_files.flatten(),
                })
            }
            Some(C::Repetition(pb::RepetitionConstraints { min_rows, max_rows })) => {
                let p = format!("{path}.repetition");
                let min_rows = self.keep(count(min_rows, &format!("{p}.min_rows")));
                let max_rows = self.keep(count(max_rows, &format!("{p}.max_rows")));
                Constraints::Repetition(RepetitionConstraints {
                    min_rows: min_rows.flatten(),
                    max_rows: max_rows.flatten(),
                })
            }
            Some(C::DossierLink(pb::DossierLinkConstraints {
                procedure_ids,
                same_owner,
                must_be_deposited,
            })) => {
                let p = format!("{path}.dossier_link");
                for (k, id) in procedure_ids.iter().enumerate() {
                    self.keep(
                        ProcedureId::parse(id)
                            .map_err(|message| (format!("{p}.procedure_ids[{k}]"), message)),
                    );
                }
                Constraints::DossierLink(DossierLinkConstraints {
                    procedure_ids,
                    same_owner,
                    must_be_deposited,
                })
            }
        };
        (self.violations.len() == before).then_some(constraints)
    }

    /// A `min_field_id` / `max_field_id` (empty means none), recorded as a reference.
    fn bound(
        &mut self,
        raw: &str,
        path: String,
        suits: fn(FieldType) -> bool,
        references: &mut Vec<Reference>,
    ) -> Option<FieldId> {
        if raw.is_empty() {
            return None;
        }
        let id = self.keep(FieldId::parse(raw).map_err(|e| (path.clone(), e.message_fr())))?;
        references.push(Reference {
            referenced: id.clone(),
            naming_path: path.clone(),
            mismatch_path: path,
            check: ReferenceCheck::Bound(suits),
        });
        Some(id)
    }

    /// Converts a condition whose root (or enclosing group) is `depth` groups deep; `None` when
    /// some part is invalid (violations recorded).
    fn condition(
        &mut self,
        pb: pb::Condition,
        path: &str,
        depth: usize,
        references: &mut Vec<Reference>,
    ) -> Option<Condition> {
        use pb::condition::Node;
        let pb::Condition { node } = pb;
        match node {
            None => {
                self.violations.push((
                    path.to_owned(),
                    "Condition vide : indiquez un groupe « all » ou « any », ou une comparaison"
                        .to_owned(),
                ));
                None
            }
            Some(Node::All(group)) => self
                .group(group, &format!("{path}.all"), depth, references)
                .map(Condition::All),
            Some(Node::Any(group)) => self
                .group(group, &format!("{path}.any"), depth, references)
                .map(Condition::Any),
            Some(Node::Comparison(comparison)) => {
                self.comparison(comparison, &format!("{path}.comparison"), references)
            }
        }
    }

    fn group(
        &mut self,
        pb: pb::ConditionGroup,
        path: &str,
        depth: usize,
        references: &mut Vec<Reference>,
    ) -> Option<Vec<Condition>> {
        let pb::ConditionGroup { conditions } = pb;
        // Checked before recursing, so that no request can make the conversion recurse deeper.
        if depth >= Condition::MAX_DEPTH {
            self.violations.push((
                path.to_owned(),
                format!(
                    "La condition d'affichage imbrique plus de {} niveaux de groupes",
                    Condition::MAX_DEPTH
                ),
            ));
            return None;
        }
        let mut converted = Vec::with_capacity(conditions.len());
        let mut complete = true;
        for (k, condition) in conditions.into_iter().enumerate() {
            let item_path = format!("{path}.conditions[{k}]");
            match self.condition(condition, &item_path, depth + 1, references) {
                Some(c) => converted.push(c),
                None => complete = false,
            }
        }
        complete.then_some(converted)
    }

    fn comparison(
        &mut self,
        pb: pb::Comparison,
        path: &str,
        references: &mut Vec<Reference>,
    ) -> Option<Condition> {
        let pb::Comparison {
            field_id,
            operator,
            operand,
        } = pb;
        let field = self.keep(
            FieldId::parse(&field_id).map_err(|e| (format!("{path}.field_id"), e.message_fr())),
        );
        let operator = self.keep(comparison_operator(operator, &format!("{path}.operator")));
        let operand = match operand {
            None => Some(None),
            Some(o) => self
                .keep(condition_operand(o, &format!("{path}.operand")))
                .map(Some),
        };
        let (field, operator, operand) = (field?, operator?, operand?);
        references.push(Reference {
            referenced: field.clone(),
            naming_path: format!("{path}.field_id"),
            mismatch_path: path.to_owned(),
            check: ReferenceCheck::Comparison(operator, operand.clone()),
        });
        Some(Condition::Compare {
            field,
            operator,
            operand,
        })
    }

    /// Maps [`FormDefinition::new`]'s errors to request paths, leaving out those that only come
    /// from fields that could not be converted.
    fn locate(
        &self,
        errors: Vec<DefinitionError>,
        fields: &[FieldDefinition],
        prefix: &str,
    ) -> FieldViolations {
        let mut duplicates: HashMap<FieldId, usize> = HashMap::new();
        let mut referenced: HashMap<(usize, FieldId, bool), usize> = HashMap::new();
        let mut out = Vec::with_capacity(errors.len());
        for error in errors {
            let message = error.message_fr();
            let id = error.field();
            // The domain reports a duplicate id at its second (third…) occurrence.
            let nth = match &error {
                DefinitionError::DuplicateId { field } => next(&mut duplicates, field.clone()) + 1,
                _ => 0,
            };
            let found = self
                .sites
                .iter()
                .enumerate()
                .filter(|(_, s)| &s.id == id)
                .nth(nth);
            let Some((index, site)) = found else {
                out.push((prefix.to_owned(), message));
                continue;
            };
            let p = &site.path;
            let member_path = || match site.member {
                Some(member) => format!("{p}.{member}"),
                None => format!("{p}.type"),
            };
            let path = match &error {
                DefinitionError::DuplicateId { .. } => format!("{p}.id"),
                DefinitionError::MissingLabel { .. } => format!("{p}.label"),
                DefinitionError::DisplayOnlyRequired { .. } => format!("{p}.required"),
                DefinitionError::ConstraintsMismatch { .. }
                | DefinitionError::InvalidConstraint { .. } => member_path(),
                DefinitionError::NoAllowedValues { .. } => format!("{p}.choice.values"),
                DefinitionError::DuplicateAllowedValue { value, .. } => {
                    let repeated =
                        field_at(fields, site.position).and_then(|f| match &f.constraints {
                            Constraints::Choice(c) => c
                                .values
                                .iter()
                                .enumerate()
                                .filter(|(_, v)| *v == value)
                                .nth(1)
                                .map(|(k, _)| k),
                            _ => None,
                        });
                    match repeated {
                        Some(k) => format!("{p}.choice.values[{k}]"),
                        None => format!("{p}.choice.values"),
                    }
                }
                DefinitionError::InvalidPattern { .. } => format!("{p}.text.pattern"),
                DefinitionError::EmptyRepetition { .. } if site.lost_children => continue,
                DefinitionError::EmptyRepetition { .. }
                | DefinitionError::UnexpectedChildren { .. } => format!("{p}.children"),
                DefinitionError::NestedRepetition { .. } => format!("{p}.type"),
                DefinitionError::UnknownReference {
                    referenced: target, ..
                } if self.failed_ids.iter().any(|f| f == target.as_str()) => continue,
                DefinitionError::UnknownReference {
                    referenced: target, ..
                }
                | DefinitionError::ReferenceNotEarlier {
                    referenced: target, ..
                } => {
                    let n = next(&mut referenced, (index, target.clone(), false));
                    site.references
                        .iter()
                        .filter(|r| &r.referenced == target)
                        .nth(n)
                        .map_or_else(|| format!("{p}.visible_when"), |r| r.naming_path.clone())
                }
                DefinitionError::IncompatibleReference {
                    referenced: target, ..
                } => {
                    let n = next(&mut referenced, (index, target.clone(), true));
                    let target_def = find_field(fields, target);
                    site.references
                        .iter()
                        .filter(|r| &r.referenced == target)
                        .filter(|r| target_def.is_some_and(|t| !r.suits(t)))
                        .nth(n)
                        .map_or_else(|| format!("{p}.visible_when"), |r| r.mismatch_path.clone())
                }
                DefinitionError::InvalidCondition { .. } => format!("{p}.visible_when"),
                DefinitionError::DuplicatePurpose { .. }
                | DefinitionError::PurposeMismatch { .. }
                | DefinitionError::PurposeInRepetition { .. } => format!("{p}.purpose"),
            };
            out.push((path, message));
        }
        out
    }
}

/// Returns the counter's value, then increments it.
fn next<K: std::hash::Hash + Eq>(counters: &mut HashMap<K, usize>, key: K) -> usize {
    let n = counters.entry(key).or_insert(0);
    *n += 1;
    *n - 1
}

fn field_at(
    fields: &[FieldDefinition],
    (top, child): (usize, Option<usize>),
) -> Option<&FieldDefinition> {
    let parent = fields.get(top)?;
    match child {
        None => Some(parent),
        Some(j) => parent.children.get(j),
    }
}

fn find_field<'f>(fields: &'f [FieldDefinition], id: &FieldId) -> Option<&'f FieldDefinition> {
    fields
        .iter()
        .flat_map(|f| std::iter::once(f).chain(f.children.iter()))
        .find(|f| &f.id == id)
}

fn constraints_member(c: &pb::field_definition::Constraints) -> &'static str {
    use pb::field_definition::Constraints as C;
    match c {
        C::Text(_) => "text",
        C::Number(_) => "number",
        C::Date(_) => "date",
        C::Choice(_) => "choice",
        C::File(_) => "file",
        C::Repetition(_) => "repetition",
        C::DossierLink(_) => "dossier_link",
    }
}

fn field_type(raw: i32, path: &str) -> Result<FieldType, FieldViolation> {
    pb::FieldType::try_from(raw)
        .ok()
        .and_then(field_type_from_pb)
        .ok_or_else(|| {
            (
                path.to_owned(),
                "Type de champ manquant ou inconnu".to_owned(),
            )
        })
}

fn field_purpose(raw: i32, path: &str) -> Result<Option<FieldPurpose>, FieldViolation> {
    pb::FieldPurpose::try_from(raw)
        .map(field_purpose_from_pb)
        .map_err(|_| (path.to_owned(), "Rôle de champ inconnu".to_owned()))
}

fn comparison_operator(raw: i32, path: &str) -> Result<Operator, FieldViolation> {
    pb::ComparisonOperator::try_from(raw)
        .ok()
        .and_then(operator_from_pb)
        .ok_or_else(|| {
            (
                path.to_owned(),
                "Opérateur de comparaison manquant ou inconnu".to_owned(),
            )
        })
}

fn condition_operand(pb: pb::ConditionOperand, path: &str) -> Result<Operand, FieldViolation> {
    use pb::condition_operand::Operand as O;
    let pb::ConditionOperand { operand } = pb;
    match operand {
        None => Err((path.to_owned(), "Valeur de comparaison vide".to_owned())),
        Some(O::Text(s)) => Ok(Operand::Text(s)),
        Some(O::Integer(i)) => Ok(Operand::Integer(i)),
        Some(O::Decimal(s)) => decimal(&s, &format!("{path}.decimal")).map(Operand::Decimal),
        Some(O::Date(s)) => date(&s, &format!("{path}.date")).map(Operand::Date),
        Some(O::Boolean(b)) => Ok(Operand::Boolean(b)),
    }
}

/// An optional `int32` count: negative is a violation.
fn count(raw: Option<i32>, path: &str) -> Result<Option<u32>, FieldViolation> {
    raw.map(|n| u32::try_from(n).map_err(|_| (path.to_owned(), MSG_NEGATIVE.to_owned())))
        .transpose()
}

fn optional_decimal(raw: Option<String>, path: &str) -> Result<Option<Decimal>, FieldViolation> {
    raw.map(|s| decimal(&s, path)).transpose()
}

fn optional_date(raw: Option<String>, path: &str) -> Result<Option<NaiveDate>, FieldViolation> {
    raw.map(|s| date(&s, path)).transpose()
}

/// A decimal written in its canonical form — the form it is written back in, so that reading
/// then writing a definition gives it back unchanged: optional `-`, digits without a useless
/// leading zero, optional `.` and digits (`1500.50`).
fn decimal(s: &str, path: &str) -> Result<Decimal, FieldViolation> {
    (s.len() <= DECIMAL_MAX_LEN)
        .then(|| Decimal::from_str_exact(s).ok())
        .flatten()
        .filter(|d| d.to_string() == s)
        .ok_or_else(|| {
            (
                path.to_owned(),
                format!(
                    "Nombre invalide « {} » : écrivez des chiffres, avec si besoin un signe « - » \
                     et un point décimal (par exemple 1500.50)",
                    quote(s)
                ),
            )
        })
}

/// A `YYYY-MM-DD` date of an existing day.
fn date(s: &str, path: &str) -> Result<NaiveDate, FieldViolation> {
    (s.len() == 10)
        .then(|| NaiveDate::parse_from_str(s, DATE_FORMAT).ok())
        .flatten()
        .filter(|d| d.format(DATE_FORMAT).to_string() == s)
        .ok_or_else(|| {
            (
                path.to_owned(),
                format!(
                    "Date invalide « {} » : écrivez une date existante au format AAAA-MM-JJ",
                    quote(s)
                ),
            )
        })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The start of a client's string, for a message.
fn quote(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(QUOTE_MAX_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn keep<T>(violations: &mut FieldViolations, result: Result<T, FieldViolation>) -> Option<T> {
    result.map_err(|v| violations.push(v)).ok()
}

// ---------------------------------------------------------------------------------------------
// Form definitions (domain → pb)
// ---------------------------------------------------------------------------------------------

/// The fields of a form as the contract carries them: the exact inverse of [`form_definition`].
pub fn field_definitions_to_pb(form: &FormDefinition) -> Vec<pb::FieldDefinition> {
    form.fields().iter().map(field_to_pb).collect()
}

/// One field (and its children; a [`FormDefinition`] holds two levels at most).
pub fn field_to_pb(field: &FieldDefinition) -> pb::FieldDefinition {
    let FieldDefinition {
        id,
        label,
        description,
        field_type,
        required,
        constraints,
        visible_when,
        children,
        purpose,
    } = field;
    pb::FieldDefinition {
        id: id.to_string(),
        label: label.clone(),
        description: description.clone(),
        r#type: field_type_to_pb(*field_type) as i32,
        required: *required,
        constraints: constraints_to_pb(constraints),
        visible_when: visible_when.as_ref().map(condition_to_pb),
        children: children.iter().map(field_to_pb).collect(),
        purpose: purpose.map_or(pb::FieldPurpose::Unspecified, field_purpose_to_pb) as i32,
    }
}

fn constraints_to_pb(c: &Constraints) -> Option<pb::field_definition::Constraints> {
    use pb::field_definition::Constraints as C;
    let optional_id =
        |id: &Option<FieldId>| id.as_ref().map(FieldId::to_string).unwrap_or_default();
    let signed = |n: Option<u32>| n.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    Some(match c {
        Constraints::None => return None,
        Constraints::Text(TextConstraints {
            min_length,
            max_length,
            pattern,
            pattern_message,
        }) => C::Text(pb::TextConstraints {
            min_length: signed(*min_length),
            max_length: signed(*max_length),
            pattern: pattern
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            pattern_message: pattern_message.clone().unwrap_or_default(),
        }),
        Constraints::Number(NumberConstraints {
            min,
            max,
            max_decimal_places,
            min_field,
            max_field,
        }) => C::Number(pb::NumberConstraints {
            min: min.map(|d| d.to_string()),
            max: max.map(|d| d.to_string()),
            max_decimal_places: signed(*max_decimal_places),
            min_field_id: optional_id(min_field),
            max_field_id: optional_id(max_field),
        }),
        Constraints::Date(DateConstraints {
            min_date,
            max_date,
            min_field,
            max_field,
        }) => C::Date(pb::DateConstraints {
            min_date: min_date.map(|d| d.format(DATE_FORMAT).to_string()),
            max_date: max_date.map(|d| d.format(DATE_FORMAT).to_string()),
            min_field_id: optional_id(min_field),
            max_field_id: optional_id(max_field),
        }),
        Constraints::Choice(ChoiceConstraints {
            values,
            allow_other,
            other_label,
            min_selected,
            max_selected,
        }) => C::Choice(pb::ChoiceConstraints {
            values: values.clone(),
            allow_other: *allow_other,
            other_label: other_label.clone().unwrap_or_default(),
            min_selected: signed(*min_selected),
            max_selected: signed(*max_selected),
        }),
        Constraints::File(FileConstraints {
            accepted_content_types,
            max_size_bytes,
            max_files,
        }) => C::File(pb::FileConstraints {
            accepted_content_types: accepted_content_types.clone(),
            max_size_bytes: max_size_bytes.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            max_files: signed(*max_files),
        }),
        Constraints::Repetition(RepetitionConstraints { min_rows, max_rows }) => {
            C::Repetition(pb::RepetitionConstraints {
                min_rows: signed(*min_rows),
                max_rows: signed(*max_rows),
            })
        }
        Constraints::DossierLink(DossierLinkConstraints {
            procedure_ids,
            same_owner,
            must_be_deposited,
        }) => C::DossierLink(pb::DossierLinkConstraints {
            procedure_ids: procedure_ids.clone(),
            same_owner: *same_owner,
            must_be_deposited: *must_be_deposited,
        }),
    })
}

/// A condition (at most [`Condition::MAX_DEPTH`] deep in a [`FormDefinition`]).
fn condition_to_pb(c: &Condition) -> pb::Condition {
    use pb::condition::Node;
    let group = |items: &[Condition]| pb::ConditionGroup {
        conditions: items.iter().map(condition_to_pb).collect(),
    };
    let node = match c {
        Condition::All(items) => Node::All(group(items)),
        Condition::Any(items) => Node::Any(group(items)),
        Condition::Compare {
            field,
            operator,
            operand,
        } => Node::Comparison(pb::Comparison {
            field_id: field.to_string(),
            operator: operator_to_pb(*operator) as i32,
            operand: operand.as_ref().map(operand_to_pb),
        }),
    };
    pb::Condition { node: Some(node) }
}

fn operand_to_pb(o: &Operand) -> pb::ConditionOperand {
    use pb::condition_operand::Operand as O;
    let operand = match o {
        Operand::Text(s) => O::Text(s.clone()),
        Operand::Integer(i) => O::Integer(*i),
        Operand::Decimal(d) => O::Decimal(d.to_string()),
        Operand::Date(d) => O::Date(d.format(DATE_FORMAT).to_string()),
        Operand::Boolean(b) => O::Boolean(*b),
    };
    pb::ConditionOperand {
        operand: Some(operand),
    }
}

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

/// A field type; `None` for UNSPECIFIED.
pub fn field_type_from_pb(t: pb::FieldType) -> Option<FieldType> {
    use pb::FieldType as P;
    Some(match t {
        P::Unspecified => return None,
        P::Text => FieldType::Text,
        P::Textarea => FieldType::Textarea,
        P::Integer => FieldType::Integer,
        P::Decimal => FieldType::Decimal,
        P::Date => FieldType::Date,
        P::Datetime => FieldType::Datetime,
        P::Checkbox => FieldType::Checkbox,
        P::YesNo => FieldType::YesNo,
        P::DropDown => FieldType::DropDown,
        P::MultiDropDown => FieldType::MultiDropDown,
        P::Siret => FieldType::Siret,
        P::Email => FieldType::Email,
        P::Phone => FieldType::Phone,
        P::Address => FieldType::Address,
        P::Commune => FieldType::Commune,
        P::Departement => FieldType::Departement,
        P::Region => FieldType::Region,
        P::Repetition => FieldType::Repetition,
        P::PieceJustificative => FieldType::PieceJustificative,
        P::DossierLink => FieldType::DossierLink,
        P::HeaderSection => FieldType::HeaderSection,
        P::Explication => FieldType::Explication,
    })
}

/// A field type as the contract names it.
pub fn field_type_to_pb(t: FieldType) -> pb::FieldType {
    use pb::FieldType as P;
    match t {
        FieldType::Text => P::Text,
        FieldType::Textarea => P::Textarea,
        FieldType::Integer => P::Integer,
        FieldType::Decimal => P::Decimal,
        FieldType::Date => P::Date,
        FieldType::Datetime => P::Datetime,
        FieldType::Checkbox => P::Checkbox,
        FieldType::YesNo => P::YesNo,
        FieldType::DropDown => P::DropDown,
        FieldType::MultiDropDown => P::MultiDropDown,
        FieldType::Siret => P::Siret,
        FieldType::Email => P::Email,
        FieldType::Phone => P::Phone,
        FieldType::Address => P::Address,
        FieldType::Commune => P::Commune,
        FieldType::Departement => P::Departement,
        FieldType::Region => P::Region,
        FieldType::Repetition => P::Repetition,
        FieldType::PieceJustificative => P::PieceJustificative,
        FieldType::DossierLink => P::DossierLink,
        FieldType::HeaderSection => P::HeaderSection,
        FieldType::Explication => P::Explication,
    }
}

/// A field purpose; `None` for UNSPECIFIED (no purpose).
pub fn field_purpose_from_pb(p: pb::FieldPurpose) -> Option<FieldPurpose> {
    use pb::FieldPurpose as P;
    Some(match p {
        P::Unspecified => return None,
        P::Title => FieldPurpose::Title,
        P::StructureName => FieldPurpose::StructureName,
        P::Siret => FieldPurpose::Siret,
        P::Region => FieldPurpose::Region,
        P::Departement => FieldPurpose::Departement,
        P::Cpam => FieldPurpose::Cpam,
    })
}

/// A field purpose as the contract names it.
pub fn field_purpose_to_pb(p: FieldPurpose) -> pb::FieldPurpose {
    use pb::FieldPurpose as P;
    match p {
        FieldPurpose::Title => P::Title,
        FieldPurpose::StructureName => P::StructureName,
        FieldPurpose::Siret => P::Siret,
        FieldPurpose::Region => P::Region,
        FieldPurpose::Departement => P::Departement,
        FieldPurpose::Cpam => P::Cpam,
    }
}

fn operator_from_pb(o: pb::ComparisonOperator) -> Option<Operator> {
    use pb::ComparisonOperator as P;
    Some(match o {
        P::Unspecified => return None,
        P::Equals => Operator::Equals,
        P::NotEquals => Operator::NotEquals,
        P::LessThan => Operator::Lt,
        P::LessThanOrEqual => Operator::Lte,
        P::GreaterThan => Operator::Gt,
        P::GreaterThanOrEqual => Operator::Gte,
        P::Includes => Operator::Includes,
        P::InDepartement => Operator::InDepartement,
        P::InRegion => Operator::InRegion,
        P::IsEmpty => Operator::IsEmpty,
        P::IsNotEmpty => Operator::IsNotEmpty,
    })
}

fn operator_to_pb(o: Operator) -> pb::ComparisonOperator {
    use pb::ComparisonOperator as P;
    match o {
        Operator::Equals => P::Equals,
        Operator::NotEquals => P::NotEquals,
        Operator::Lt => P::LessThan,
        Operator::Lte => P::LessThanOrEqual,
        Operator::Gt => P::GreaterThan,
        Operator::Gte => P::GreaterThanOrEqual,
        Operator::Includes => P::Includes,
        Operator::InDepartement => P::InDepartement,
        Operator::InRegion => P::InRegion,
        Operator::IsEmpty => P::IsEmpty,
        Operator::IsNotEmpty => P::IsNotEmpty,
    }
}

/// A dossier status as the contract names it.
pub fn status_to_pb(s: Status) -> ev::DossierStatus {
    use ev::DossierStatus as P;
    match s {
        Status::Brouillon => P::Brouillon,
        Status::EnConstruction => P::EnConstruction,
        Status::EnInstruction => P::EnInstruction,
        Status::Accepte => P::Accepte,
        Status::Refuse => P::Refuse,
        Status::SansSuite => P::SansSuite,
    }
}

/// A dossier status; `None` for UNSPECIFIED.
pub fn status_from_pb(s: ev::DossierStatus) -> Option<Status> {
    use ev::DossierStatus as P;
    Some(match s {
        P::Unspecified => return None,
        P::Brouillon => Status::Brouillon,
        P::EnConstruction => Status::EnConstruction,
        P::EnInstruction => Status::EnInstruction,
        P::Accepte => Status::Accepte,
        P::Refuse => Status::Refuse,
        P::SansSuite => Status::SansSuite,
    })
}

/// A procedure kind as the contract names it.
pub fn kind_to_pb(k: Kind) -> ev::DossierKind {
    match k {
        Kind::Projet => ev::DossierKind::Projet,
        Kind::Action => ev::DossierKind::Action,
    }
}

/// A procedure kind; `None` for UNSPECIFIED.
pub fn kind_from_pb(k: ev::DossierKind) -> Option<Kind> {
    match k {
        ev::DossierKind::Unspecified => None,
        ev::DossierKind::Projet => Some(Kind::Projet),
        ev::DossierKind::Action => Some(Kind::Action),
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

/// An instant as a protobuf timestamp (a leap second reads as the last nanosecond before it).
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos())
            .unwrap_or(NANOS_PER_SECOND - 1)
            .min(NANOS_PER_SECOND - 1),
    }
}

/// A protobuf timestamp as an instant: it must lie within the protobuf range (years 1 to 9999),
/// with nanoseconds in `0..1e9`.
pub fn datetime(ts: &prost_types::Timestamp, path: &str) -> Result<DateTime<Utc>, FieldViolation> {
    let prost_types::Timestamp { seconds, nanos } = *ts;
    let in_range = (TIMESTAMP_MIN_SECONDS..=TIMESTAMP_MAX_SECONDS).contains(&seconds)
        && (0..NANOS_PER_SECOND).contains(&nanos);
    in_range
        .then(|| u32::try_from(nanos).ok())
        .flatten()
        .and_then(|nanos| DateTime::from_timestamp(seconds, nanos))
        .ok_or_else(|| {
            (
                path.to_owned(),
                "Date et heure invalides : l'année doit être comprise entre 1 et 9999".to_owned(),
            )
        })
}

// ---------------------------------------------------------------------------------------------
// Answers (pb → domain)
// ---------------------------------------------------------------------------------------------

/// A client's answer as an unvalidated [`Input`]: only its shape is checked here (a member set,
/// an instant in range, finite coordinates, non-negative file sizes, no repetition inside a
/// repetition row); the value's rules are the domain's ([`crate::domain::validate::parse_at`]).
/// `path` is the request path of the `ChampValue` (`patches[2].set`).
pub fn input(pb: pb::ChampValue, path: &str) -> Result<Input, FieldViolation> {
    input_at(pb, path, false)
}

fn input_at(pb: pb::ChampValue, path: &str, in_row: bool) -> Result<Input, FieldViolation> {
    use pb::champ_value::Value as V;
    let pb::ChampValue { value } = pb;
    let Some(value) = value else {
        return Err((path.to_owned(), MSG_EMPTY_ANSWER.to_owned()));
    };
    Ok(match value {
        V::Text(s) => Input::Text(s),
        V::Integer(i) => Input::Integer(i),
        V::Decimal(s) => Input::Decimal(s),
        V::Date(s) => Input::Date(s),
        V::Datetime(ts) => Input::Datetime(datetime(&ts, &format!("{path}.datetime"))?),
        V::Checkbox(b) => Input::Checkbox(b),
        V::YesNo(b) => Input::YesNo(b),
        V::DropDown(c) => Input::DropDown(choice(c, &format!("{path}.drop_down"))?),
        V::MultiDropDown(pb::MultiChoice { values, other }) => {
            Input::MultiDropDown { values, other }
        }
        V::Siret(s) => Input::Siret(s),
        V::Email(s) => Input::Email(s),
        V::Phone(s) => Input::Phone(s),
        V::Address(a) => Input::Address(address(a, &format!("{path}.address"))?),
        V::Commune(s) => Input::Commune(s),
        V::Departement(s) => Input::Departement(s),
        V::Region(s) => Input::Region(s),
        V::Repetition(_) if in_row => {
            return Err((
                format!("{path}.repetition"),
                "Un bloc répétable ne peut pas contenir d'autre bloc répétable".to_owned(),
            ));
        }
        V::Repetition(r) => Input::Repetition(rows(r, &format!("{path}.repetition"))?),
        V::PieceJustificative(pb::PieceJustificative { files }) => Input::Files(
            files
                .into_iter()
                .enumerate()
                .map(|(k, f)| file_ref(f, &format!("{path}.piece_justificative.files[{k}]")))
                .collect::<Result<_, _>>()?,
        ),
        V::DossierLink(n) => Input::DossierLink(n),
    })
}

fn choice(pb: pb::Choice, path: &str) -> Result<Choice, FieldViolation> {
    use pb::choice::Choice as C;
    let pb::Choice { choice } = pb;
    match choice {
        Some(C::Value(v)) => Ok(Choice::Value(v)),
        Some(C::Other(o)) => Ok(Choice::Other(o)),
        None => Err((
            path.to_owned(),
            "Choix vide : indiquez une valeur de la liste ou « autre »".to_owned(),
        )),
    }
}

fn address(pb: pb::Address, path: &str) -> Result<AddressInput, FieldViolation> {
    let pb::Address {
        label,
        street,
        postal_code,
        city,
        commune_code,
        departement_code,
        region_code,
        latitude,
        longitude,
    } = pb;
    // NaN and infinities cannot be stored (JSON) nor compared; the range is the domain's rule.
    for (member, coordinate) in [("latitude", latitude), ("longitude", longitude)] {
        if coordinate.is_some_and(|c| !c.is_finite()) {
            return Err((
                format!("{path}.{member}"),
                "Coordonnée géographique invalide".to_owned(),
            ));
        }
    }
    Ok(AddressInput {
        label,
        street,
        postal_code,
        city,
        commune_code,
        departement_code,
        region_code,
        latitude,
        longitude,
    })
}

fn rows(pb: pb::Repetition, path: &str) -> Result<Vec<RowInput>, FieldViolation> {
    let pb::Repetition { rows } = pb;
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let pb::RepetitionRow { row_id, champs } = row;
            let champs = champs
                .into_iter()
                .enumerate()
                .map(|(j, champ)| {
                    let pb::Champ { field_id, value } = champ;
                    let value_path = format!("{path}.rows[{i}].champs[{j}].value");
                    let value =
                        value.ok_or_else(|| (value_path.clone(), MSG_EMPTY_ANSWER.to_owned()))?;
                    Ok((field_id, input_at(value, &value_path, true)?))
                })
                .collect::<Result<_, FieldViolation>>()?;
            Ok(RowInput { id: row_id, champs })
        })
        .collect()
}

fn file_ref(pb: ev::FileRef, path: &str) -> Result<FileRef, FieldViolation> {
    let ev::FileRef {
        id,
        file_name,
        content_type,
        size_bytes,
        sha256,
    } = pb;
    let size = u64::try_from(size_bytes).map_err(|_| {
        (
            format!("{path}.size_bytes"),
            "La taille du fichier ne peut pas être négative".to_owned(),
        )
    })?;
    Ok(FileRef {
        id,
        name: file_name,
        content_type,
        size,
        sha256,
    })
}

// ---------------------------------------------------------------------------------------------
// Answers (domain → pb)
// ---------------------------------------------------------------------------------------------

/// A validated value as the contract carries it. Rows of a repetition list their answers by child
/// id (use [`answers_to_pb`] for the form's order).
pub fn value_to_pb(value: &Value) -> pb::ChampValue {
    value_in_form_order(value, &[])
}

/// Top-level answers in the form's field order (unanswered fields absent); in repetition rows,
/// answers in the order of the repetition's children (answers to fields the form no longer has
/// come last, by id).
pub fn answers_to_pb(form: &FormDefinition, answers: &Answers) -> Vec<pb::Champ> {
    form.fields()
        .iter()
        .filter_map(|field| {
            answers.get(&field.id).map(|value| pb::Champ {
                field_id: field.id.to_string(),
                value: Some(value_in_form_order(value, &field.children)),
            })
        })
        .collect()
}

/// A file reference as events and answers carry it.
pub fn file_ref_to_pb(f: &FileRef) -> ev::FileRef {
    let FileRef {
        id,
        name,
        content_type,
        size,
        sha256,
    } = f;
    ev::FileRef {
        id: id.clone(),
        file_name: name.clone(),
        content_type: content_type.clone(),
        size_bytes: i64::try_from(*size).unwrap_or(i64::MAX),
        sha256: sha256.clone(),
    }
}

/// `children` orders the answers of repetition rows (empty: by id).
fn value_in_form_order(value: &Value, children: &[FieldDefinition]) -> pb::ChampValue {
    use pb::champ_value::Value as V;
    let member = match value {
        Value::Text(s) => V::Text(s.clone()),
        Value::Integer(i) => V::Integer(*i),
        Value::Decimal(d) => V::Decimal(d.to_string()),
        Value::Date(d) => V::Date(d.format(DATE_FORMAT).to_string()),
        Value::Datetime(t) => V::Datetime(timestamp(*t)),
        Value::Checkbox(b) => V::Checkbox(*b),
        Value::YesNo(b) => V::YesNo(*b),
        Value::DropDown(c) => V::DropDown(pb::Choice {
            choice: Some(match c {
                Choice::Value(v) => pb::choice::Choice::Value(v.clone()),
                Choice::Other(o) => pb::choice::Choice::Other(o.clone()),
            }),
        }),
        Value::MultiDropDown { values, other } => V::MultiDropDown(pb::MultiChoice {
            values: values.clone(),
            other: other.clone(),
        }),
        Value::Siret(s) => V::Siret(s.to_string()),
        Value::Email(e) => V::Email(e.to_string()),
        Value::Phone(p) => V::Phone(p.to_string()),
        Value::Address(a) => V::Address(address_to_pb(a)),
        Value::Commune(c) => V::Commune(c.to_string()),
        Value::Departement(d) => V::Departement(d.to_string()),
        Value::Region(r) => V::Region(r.to_string()),
        Value::Repetition(rows) => V::Repetition(pb::Repetition {
            rows: rows.iter().map(|row| row_to_pb(row, children)).collect(),
        }),
        Value::Files(files) => V::PieceJustificative(pb::PieceJustificative {
            files: files.iter().map(file_ref_to_pb).collect(),
        }),
        Value::DossierLink(n) => V::DossierLink(*n),
    };
    pb::ChampValue {
        value: Some(member),
    }
}

fn address_to_pb(a: &Address) -> pb::Address {
    let Address {
        label,
        street,
        postal_code,
        city,
        commune_code,
        departement_code,
        region_code,
        latitude,
        longitude,
    } = a;
    let code = |c: Option<&str>| c.unwrap_or_default().to_owned();
    pb::Address {
        label: label.clone(),
        street: street.clone(),
        postal_code: postal_code.clone(),
        city: city.clone(),
        commune_code: code(commune_code.as_ref().map(|c| c.as_str())),
        departement_code: code(departement_code.as_ref().map(|d| d.as_str())),
        region_code: code(region_code.as_ref().map(|r| r.as_str())),
        latitude: *latitude,
        longitude: *longitude,
    }
}

fn row_to_pb(row: &Row, children: &[FieldDefinition]) -> pb::RepetitionRow {
    let Row { id, champs } = row;
    let champ = |(field_id, value): (&FieldId, &Value)| pb::Champ {
        field_id: field_id.to_string(),
        // Rows never hold repetitions (the domain refuses them), so no deeper order is needed.
        value: Some(value_in_form_order(value, &[])),
    };
    let in_form = children
        .iter()
        .filter_map(|child| champs.get_key_value(&child.id));
    let elsewhere = champs
        .iter()
        .filter(|(field_id, _)| !children.iter().any(|c| &c.id == *field_id));
    pb::RepetitionRow {
        row_id: id.to_string(),
        champs: in_form.chain(elsewhere).map(champ).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Patches
// ---------------------------------------------------------------------------------------------

/// The champ a request names: a top-level field, or a child field of a repetition row; paths of
/// violations start with `prefix`.
pub fn champ_path(
    field_id: &str,
    row: Option<&pb::RowRef>,
    prefix: &str,
) -> Result<ChampPath, FieldViolation> {
    let field =
        FieldId::parse(field_id).map_err(|e| (format!("{prefix}.field_id"), e.message_fr()))?;
    Ok(match row {
        None => ChampPath::Field(field),
        Some(pb::RowRef {
            repetition_field_id,
            row_id,
        }) => ChampPath::Child {
            repetition: FieldId::parse(repetition_field_id)
                .map_err(|e| (format!("{prefix}.row.repetition_field_id"), e.message_fr()))?,
            row: RowId::parse(row_id)
                .map_err(|e| (format!("{prefix}.row.row_id"), e.message_fr()))?,
            field,
        },
    })
}

/// One patch of an `UpdateDossierRequest` (at `index`): the champ path it names and what to do.
/// `field_id` with no `row` names a top-level field, with a `row` a child in that row; for
/// `add_row` / `remove_row`, `field_id` is the REPETITION and `row` must be absent. The first
/// problem is returned, at `patches[{index}].…`.
pub fn patch(pb: pb::ChampPatch, index: usize) -> Result<Patch, FieldViolation> {
    use pb::champ_patch::Operation as Op;
    let pb::ChampPatch {
        field_id,
        row,
        operation,
    } = pb;
    let at = |member: &str| format!("patches[{index}].{member}");
    let field = FieldId::parse(&field_id).map_err(|e| (at("field_id"), e.message_fr()))?;
    let Some(operation) = operation else {
        return Err((
            format!("patches[{index}]"),
            "Opération manquante : indiquez set, clear, add_row ou remove_row".to_owned(),
        ));
    };
    let row_operation = matches!(operation, Op::AddRow(_) | Op::RemoveRow(_));
    if row.is_some() && row_operation {
        return Err((
            at("row"),
            "Pour ajouter ou supprimer une ligne, field_id désigne le bloc répétable : ne \
             précisez pas de ligne"
                .to_owned(),
        ));
    }
    let path = champ_path(field.as_str(), row.as_ref(), &format!("patches[{index}]"))?;
    let op = match operation {
        Op::Set(value) => PatchOp::Set(input(value, &at("set"))?),
        Op::Clear(true) => PatchOp::Clear,
        Op::Clear(false) => {
            return Err((
                at("clear"),
                "« clear » doit valoir true pour effacer la réponse".to_owned(),
            ));
        }
        Op::AddRow(row) => {
            PatchOp::AddRow(RowId::parse(&row).map_err(|e| (at("add_row"), e.message_fr()))?)
        }
        Op::RemoveRow(row) => {
            PatchOp::RemoveRow(RowId::parse(&row).map_err(|e| (at("remove_row"), e.message_fr()))?)
        }
    };
    Ok(Patch { path, op })
}

#[cfg(test)]
mod tests;
