use super::*;
use crate::domain::referentiel::Referentiel;
use crate::domain::validate::parse_input;
use proptest::prelude::*;

use pb::FieldType as T;

const PROJET: &str = include_str!("../../../procedures/mst-2024-projet.json");
const ACTION: &str = include_str!("../../../procedures/mst-2024-action.json");

fn decode(json: &str) -> pb::ProcedureDefinition {
    mst_proto::json::decode::<pb::ProcedureDefinition>("mst.forms.v1.ProcedureDefinition", json)
        .expect("shipped procedure decodes")
}

fn fid(s: &str) -> FieldId {
    FieldId::parse(s).expect("test field id")
}

fn rid(s: &str) -> RowId {
    RowId::parse(s).expect("test row id")
}

fn field(id: &str, t: T) -> pb::FieldDefinition {
    pb::FieldDefinition {
        id: id.into(),
        label: format!("Libellé {id}"),
        r#type: t as i32,
        ..Default::default()
    }
}

fn with(
    mut f: pb::FieldDefinition,
    constraints: pb::field_definition::Constraints,
) -> pb::FieldDefinition {
    f.constraints = Some(constraints);
    f
}

fn choice(values: &[&str]) -> pb::field_definition::Constraints {
    pb::field_definition::Constraints::Choice(pb::ChoiceConstraints {
        values: values.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    })
}

fn compare(
    id: &str,
    operator: pb::ComparisonOperator,
    operand: Option<pb::condition_operand::Operand>,
) -> pb::Condition {
    pb::Condition {
        node: Some(pb::condition::Node::Comparison(pb::Comparison {
            field_id: id.into(),
            operator: operator as i32,
            operand: operand.map(|o| pb::ConditionOperand { operand: Some(o) }),
        })),
    }
}

fn group(all: bool, conditions: Vec<pb::Condition>) -> pb::Condition {
    let group = pb::ConditionGroup { conditions };
    pb::Condition {
        node: Some(if all {
            pb::condition::Node::All(group)
        } else {
            pb::condition::Node::Any(group)
        }),
    }
}

fn visible_when(mut f: pb::FieldDefinition, condition: pb::Condition) -> pb::FieldDefinition {
    f.visible_when = Some(condition);
    f
}

fn paths(violations: &FieldViolations) -> Vec<&str> {
    violations.iter().map(|(p, _)| p.as_str()).collect()
}

fn form_errors(fields: Vec<pb::FieldDefinition>) -> FieldViolations {
    match form_definition(fields, "fields") {
        Ok(_) => Vec::new(),
        Err(v) => v,
    }
}

fn value(v: pb::champ_value::Value) -> pb::ChampValue {
    pb::ChampValue { value: Some(v) }
}

// ---------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------

#[test]
fn the_shipped_procedures_convert_to_the_domain_and_back_unchanged() {
    for json in [PROJET, ACTION] {
        let pb = decode(json);
        let domain = match procedure_definition(pb.clone(), "definition") {
            Ok(d) => d,
            Err(v) => panic!("{}: {v:?}", pb.id),
        };
        assert!(!domain.form.fields().is_empty());
        assert_eq!(
            field_definitions_to_pb(&domain.form),
            pb.fields,
            "{}",
            pb.id
        );
        assert_eq!(procedure_definition_to_pb(&domain), pb, "{}", pb.id);
    }
}

#[test]
fn a_definition_with_several_problems_lists_them_all_at_their_request_paths() {
    use pb::ComparisonOperator as Op;
    use pb::condition_operand::Operand as O;
    let mut fields = vec![
        field("a", T::Text),
        field("B", T::Text),
        field("c", T::Unspecified),
        with(field("d", T::DropDown), choice(&["x", "y", "x"])),
        with(
            field("e", T::Text),
            pb::field_definition::Constraints::Text(pb::TextConstraints {
                max_length: Some(-1),
                ..Default::default()
            }),
        ),
        visible_when(
            field("f", T::Text),
            compare("zz", Op::Equals, Some(O::Text("x".into()))),
        ),
        field("r", T::Repetition),
        field("g", T::Text),
        field("a", T::Integer),
        with(
            field("n", T::Decimal),
            pb::field_definition::Constraints::Number(pb::NumberConstraints {
                min: Some("01".into()),
                ..Default::default()
            }),
        ),
        // Refers to "c", which could not be read: no second error about it.
        visible_when(field("h", T::Text), compare("c", Op::IsEmpty, None)),
    ];
    fields[6].children = vec![
        field("r_a", T::Text),
        field("r_b", T::Text),
        visible_when(
            field("r_c", T::Text),
            group(
                false,
                vec![
                    compare("r_a", Op::IsEmpty, None),
                    compare("a", Op::Equals, Some(O::Integer(1))),
                ],
            ),
        ),
    ];
    fields[6].children[1].r#type = 99;
    fields[7].purpose = 99;
    let definition = pb::ProcedureDefinition {
        id: "Pas un id".into(),
        title: "  ".into(),
        description: String::new(),
        kind: ev::DossierKind::Unspecified as i32,
        estimated_filling_time: Some(prost_types::Duration {
            seconds: -60,
            nanos: 0,
        }),
        closing_at: Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        }),
        fields,
    };
    let violations = procedure_definition(definition, "definition").expect_err("invalid");
    assert_eq!(
        paths(&violations),
        vec![
            "definition.id",
            "definition.title",
            "definition.kind",
            "definition.estimated_filling_time",
            "definition.closing_at",
            // Shapes, in form order.
            "definition.fields[1].id",
            "definition.fields[2].type",
            "definition.fields[4].text.max_length",
            "definition.fields[6].children[1].type",
            "definition.fields[7].purpose",
            "definition.fields[9].number.min",
            // The domain's rules: duplicate ids first, then in form order.
            "definition.fields[8].id",
            "definition.fields[3].choice.values[2]",
            "definition.fields[5].visible_when.comparison.field_id",
            "definition.fields[6].children[2].visible_when.any.conditions[1].comparison",
        ],
        "{violations:#?}"
    );
    let message = |path: &str| {
        violations
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, m)| m.as_str())
            .unwrap_or_default()
    };
    assert_eq!(
        message("definition.fields[3].choice.values[2]"),
        "La valeur « x » est proposée plusieurs fois dans le champ « d »"
    );
    assert_eq!(
        message("definition.fields[8].id"),
        "L'identifiant « a » est utilisé par plusieurs champs"
    );
    assert_eq!(
        message("definition.title"),
        "Le titre de la démarche est obligatoire"
    );
    assert_eq!(
        message("definition.fields[4].text.max_length"),
        MSG_NEGATIVE
    );
    assert!(
        message("definition.fields[9].number.min").contains("« 01 »"),
        "{violations:?}"
    );
}

#[test]
fn domain_errors_name_the_member_concerned() {
    use pb::ComparisonOperator as Op;
    use pb::condition_operand::Operand as O;
    let number_bound = |id: &str, min_field: &str| {
        with(
            field(id, T::Integer),
            pb::field_definition::Constraints::Number(pb::NumberConstraints {
                min_field_id: min_field.into(),
                ..Default::default()
            }),
        )
    };
    let mut explication = field("x", T::Explication);
    explication.required = true;
    let mut siret = field("s", T::Text);
    siret.purpose = pb::FieldPurpose::Siret as i32;
    let mut title_1 = field("t1", T::Text);
    title_1.purpose = pb::FieldPurpose::Title as i32;
    let mut title_2 = title_1.clone();
    title_2.id = "t2".into();
    let mut nested = field("rep", T::Repetition);
    nested.children = vec![field("rep_inner", T::Repetition)];
    nested.children[0].children = vec![field("rep_deep", T::Text)];
    let errors = form_errors(vec![
        field("a", T::Text),
        field("a", T::Text),
        field("a", T::Text),
        number_bound("n", "a"),
        number_bound("m", "later"),
        field("later", T::Integer),
        with(field("i", T::Integer), choice(&["x"])),
        field("empty", T::Text),
        explication,
        siret,
        title_1,
        title_2,
        visible_when(
            field("v", T::Text),
            group(
                true,
                vec![
                    compare("later", Op::IsNotEmpty, None),
                    compare("later", Op::Equals, Some(O::Boolean(true))),
                    compare("later", Op::Equals, Some(O::Integer(3))),
                    compare("later", Op::Equals, Some(O::Text("3".into()))),
                    group(false, vec![]),
                ],
            ),
        ),
        with(
            field("p", T::Text),
            pb::field_definition::Constraints::Text(pb::TextConstraints {
                pattern: "[0-9".into(),
                ..Default::default()
            }),
        ),
        nested,
    ]);
    let label_less = form_errors(vec![pb::FieldDefinition {
        label: String::new(),
        ..field("nolabel", T::Text)
    }]);
    assert_eq!(paths(&label_less), vec!["fields[0].label"]);
    assert_eq!(
        paths(&errors),
        vec![
            "fields[14].children[0].children",
            "fields[1].id",
            "fields[2].id",
            "fields[3].number.min_field_id",
            "fields[4].number.min_field_id",
            "fields[6].choice",
            "fields[8].required",
            "fields[9].purpose",
            "fields[11].purpose",
            "fields[12].visible_when.all.conditions[1].comparison",
            "fields[12].visible_when.all.conditions[3].comparison",
            "fields[12].visible_when",
            "fields[13].text.pattern",
            "fields[14].children[0].type",
        ],
        "{errors:#?}"
    );
}

#[test]
fn a_repetition_whose_children_could_not_be_read_is_not_also_called_empty() {
    let mut rep = field("r", T::Repetition);
    rep.children = vec![field("r_x", T::Unspecified)];
    assert_eq!(
        paths(&form_errors(vec![rep])),
        vec!["fields[0].children[0].type"]
    );
    // A failed repetition takes its children with it: references to them are not reported.
    let mut rep = field("R", T::Repetition);
    rep.children = vec![field("r_x", T::Text)];
    let later = visible_when(
        field("z", T::Text),
        compare("r_x", pb::ComparisonOperator::IsEmpty, None),
    );
    assert_eq!(paths(&form_errors(vec![rep, later])), vec!["fields[0].id"]);
}

#[test]
fn counts_sizes_decimals_and_dates_are_checked_for_shape() {
    use pb::field_definition::Constraints as C;
    let errors = form_errors(vec![
        with(
            field("m", T::MultiDropDown),
            C::Choice(pb::ChoiceConstraints {
                values: vec!["x".into()],
                min_selected: Some(-1),
                max_selected: Some(i32::MIN),
                ..Default::default()
            }),
        ),
        with(
            field("f", T::PieceJustificative),
            C::File(pb::FileConstraints {
                max_size_bytes: Some(-1),
                max_files: Some(-3),
                ..Default::default()
            }),
        ),
        with(
            field("r", T::Repetition),
            C::Repetition(pb::RepetitionConstraints {
                min_rows: Some(-1),
                max_rows: Some(-1),
            }),
        ),
        with(
            field("d", T::Date),
            C::Date(pb::DateConstraints {
                min_date: Some("2024-02-30".into()),
                max_date: Some("2024-2-1".into()),
                ..Default::default()
            }),
        ),
        with(
            field("n", T::Decimal),
            C::Number(pb::NumberConstraints {
                min: Some("1e3".into()),
                max: Some("1".repeat(10_000)),
                max_decimal_places: Some(-2),
                min_field_id: "Nope".into(),
                ..Default::default()
            }),
        ),
        with(
            field("l", T::DossierLink),
            C::DossierLink(pb::DossierLinkConstraints {
                procedure_ids: vec!["mst-2024-projet".into(), "X".into()],
                ..Default::default()
            }),
        ),
        visible_when(
            field("v", T::Text),
            compare(
                "n",
                pb::ComparisonOperator::Unspecified,
                Some(pb::condition_operand::Operand::Decimal("1,5".into())),
            ),
        ),
        visible_when(field("w", T::Text), pb::Condition { node: None }),
    ]);
    assert_eq!(
        paths(&errors),
        vec![
            "fields[0].choice.min_selected",
            "fields[0].choice.max_selected",
            "fields[1].file.max_size_bytes",
            "fields[1].file.max_files",
            "fields[2].repetition.min_rows",
            "fields[2].repetition.max_rows",
            "fields[3].date.min_date",
            "fields[3].date.max_date",
            "fields[4].number.min",
            "fields[4].number.max",
            "fields[4].number.max_decimal_places",
            "fields[4].number.min_field_id",
            "fields[5].dossier_link.procedure_ids[1]",
            "fields[6].visible_when.comparison.operator",
            "fields[6].visible_when.comparison.operand.decimal",
            "fields[7].visible_when",
        ],
        "{errors:#?}"
    );
    // A huge string is quoted, not echoed.
    assert!(errors.iter().all(|(_, m)| m.len() < 300));
}

#[test]
fn conditions_deeper_than_the_domain_allows_are_refused_before_recursing() {
    let leaf = || compare("a", pb::ComparisonOperator::IsEmpty, None);
    let nest = |levels: usize| {
        let mut c = leaf();
        for _ in 0..levels {
            c = group(true, vec![c]);
        }
        c
    };
    let form = |c| vec![field("a", T::Text), visible_when(field("b", T::Text), c)];
    assert!(form_definition(form(nest(Condition::MAX_DEPTH)), "fields").is_ok());
    let errors = form_errors(form(nest(Condition::MAX_DEPTH + 1)));
    let expected = format!(
        "fields[1].visible_when{}.all",
        ".all.conditions[0]".repeat(Condition::MAX_DEPTH)
    );
    assert_eq!(paths(&errors), vec![expected.as_str()]);
    // Far deeper than the stack would bear if the conversion recursed all the way.
    assert_eq!(form_errors(form(nest(5_000))).len(), 1);
}

#[test]
fn procedure_attributes_are_checked() {
    let base = || pb::ProcedureDefinition {
        id: "mst-demo".into(),
        title: "Démo".into(),
        kind: ev::DossierKind::Projet as i32,
        ..Default::default()
    };
    let ok = procedure_definition(base(), "definition").expect("valid");
    assert_eq!(ok.estimated_filling_time, Duration::ZERO);
    assert_eq!(ok.closing_at, None);
    assert_eq!(procedure_definition_to_pb(&ok), base());

    let title = |n: usize| pb::ProcedureDefinition {
        title: "é".repeat(n),
        ..base()
    };
    assert!(procedure_definition(title(TITLE_MAX_CHARS), "definition").is_ok());
    let long = procedure_definition(title(TITLE_MAX_CHARS + 1), "definition").expect_err("long");
    assert_eq!(paths(&long), vec!["definition.title"]);

    let bad_kind = pb::ProcedureDefinition { kind: 7, ..base() };
    let errors = procedure_definition(bad_kind, "d").expect_err("kind");
    assert_eq!(paths(&errors), vec!["d.kind"]);
    let bare = pb::ProcedureDefinition {
        title: String::new(),
        fields: vec![field("X", T::Text)],
        ..base()
    };
    let errors = procedure_definition(bare, "").expect_err("no prefix");
    assert_eq!(paths(&errors), vec!["title", "fields[0].id"]);

    for (seconds, nanos) in [
        (-1, 0),
        (0, -1),
        (0, 1_000_000_000),
        (DURATION_MAX_SECONDS + 1, 0),
    ] {
        let d = prost_types::Duration { seconds, nanos };
        assert!(duration(Some(&d), "x").is_err(), "{d:?}");
    }
    let d = prost_types::Duration {
        seconds: 2700,
        nanos: 5,
    };
    let read = duration(Some(&d), "x").expect("duration");
    assert_eq!(read, Duration::new(2700, 5));
    assert_eq!(duration_to_pb(read), Some(d));
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

fn file(id: &str, size: i64) -> ev::FileRef {
    ev::FileRef {
        id: id.into(),
        file_name: format!("{id}.pdf"),
        content_type: "application/pdf".into(),
        size_bytes: size,
        sha256: "ab".repeat(32),
    }
}

fn address() -> pb::Address {
    pb::Address {
        label: "12 rue de la République 13001 Marseille".into(),
        street: "12 rue de la République".into(),
        postal_code: "13001".into(),
        city: "Marseille".into(),
        commune_code: "13055".into(),
        departement_code: "13".into(),
        region_code: "93".into(),
        latitude: Some(43.2965),
        longitude: Some(5.3698),
    }
}

fn champ(id: &str, v: pb::champ_value::Value) -> pb::Champ {
    pb::Champ {
        field_id: id.into(),
        value: Some(value(v)),
    }
}

#[test]
fn every_champ_value_member_becomes_its_input() {
    use pb::champ_value::Value as V;
    let at = |t: i64| prost_types::Timestamp {
        seconds: t,
        nanos: 0,
    };
    let instant = DateTime::from_timestamp(1_727_000_000, 0).expect("instant");
    let cases: Vec<(V, Input)> = vec![
        (V::Text("Bonjour".into()), Input::Text("Bonjour".into())),
        (V::Integer(-3), Input::Integer(-3)),
        (
            V::Decimal("1500.50".into()),
            Input::Decimal("1500.50".into()),
        ),
        (
            V::Date("2024-10-01".into()),
            Input::Date("2024-10-01".into()),
        ),
        (V::Datetime(at(1_727_000_000)), Input::Datetime(instant)),
        (V::Checkbox(true), Input::Checkbox(true)),
        (V::YesNo(false), Input::YesNo(false)),
        (
            V::DropDown(pb::Choice {
                choice: Some(pb::choice::Choice::Value("A".into())),
            }),
            Input::DropDown(Choice::Value("A".into())),
        ),
        (
            V::DropDown(pb::Choice {
                choice: Some(pb::choice::Choice::Other("Z".into())),
            }),
            Input::DropDown(Choice::Other("Z".into())),
        ),
        (
            V::MultiDropDown(pb::MultiChoice {
                values: vec!["A".into()],
                other: Some("Z".into()),
            }),
            Input::MultiDropDown {
                values: vec!["A".into()],
                other: Some("Z".into()),
            },
        ),
        (
            V::Siret("443 061 841".into()),
            Input::Siret("443 061 841".into()),
        ),
        (V::Email("a@b.fr".into()), Input::Email("a@b.fr".into())),
        (V::Phone("06 12".into()), Input::Phone("06 12".into())),
        (
            V::Address(address()),
            Input::Address(AddressInput {
                label: "12 rue de la République 13001 Marseille".into(),
                street: "12 rue de la République".into(),
                postal_code: "13001".into(),
                city: "Marseille".into(),
                commune_code: "13055".into(),
                departement_code: "13".into(),
                region_code: "93".into(),
                latitude: Some(43.2965),
                longitude: Some(5.3698),
            }),
        ),
        (V::Commune("13055".into()), Input::Commune("13055".into())),
        (V::Departement("2A".into()), Input::Departement("2A".into())),
        (V::Region("93".into()), Input::Region("93".into())),
        (
            V::Repetition(pb::Repetition {
                rows: vec![pb::RepetitionRow {
                    row_id: "row-1".into(),
                    champs: vec![
                        champ("r_t", V::Text("x".into())),
                        champ("r_n", V::Integer(2)),
                    ],
                }],
            }),
            Input::Repetition(vec![RowInput {
                id: "row-1".into(),
                champs: vec![
                    ("r_t".into(), Input::Text("x".into())),
                    ("r_n".into(), Input::Integer(2)),
                ],
            }]),
        ),
        (
            V::PieceJustificative(pb::PieceJustificative {
                files: vec![file("f1", 10)],
            }),
            Input::Files(vec![FileRef {
                id: "f1".into(),
                name: "f1.pdf".into(),
                content_type: "application/pdf".into(),
                size: 10,
                sha256: "ab".repeat(32),
            }]),
        ),
        (V::DossierLink(42), Input::DossierLink(42)),
    ];
    for (member, expected) in cases {
        assert_eq!(input(value(member), "v"), Ok(expected));
    }
}

#[test]
fn malformed_answers_are_violations_at_their_path() {
    use pb::champ_value::Value as V;
    let err = |v: pb::ChampValue| input(v, "patches[2].set").map(|_| ()).expect_err("invalid");
    let path = |v: pb::ChampValue| err(v).0;
    assert_eq!(
        err(pb::ChampValue { value: None }),
        ("patches[2].set".to_owned(), "Réponse vide".to_owned())
    );
    assert_eq!(
        path(value(V::DropDown(pb::Choice { choice: None }))),
        "patches[2].set.drop_down"
    );
    assert_eq!(
        path(value(V::Address(pb::Address {
            latitude: Some(f64::NAN),
            ..address()
        }))),
        "patches[2].set.address.latitude"
    );
    assert_eq!(
        path(value(V::Address(pb::Address {
            longitude: Some(f64::NEG_INFINITY),
            ..address()
        }))),
        "patches[2].set.address.longitude"
    );
    assert_eq!(
        path(value(V::PieceJustificative(pb::PieceJustificative {
            files: vec![file("f1", 1), file("f2", -1)],
        }))),
        "patches[2].set.piece_justificative.files[1].size_bytes"
    );
    assert_eq!(
        path(value(V::Datetime(prost_types::Timestamp {
            seconds: TIMESTAMP_MAX_SECONDS + 1,
            nanos: 0,
        }))),
        "patches[2].set.datetime"
    );
    let repetition = |champs: Vec<pb::Champ>| {
        value(V::Repetition(pb::Repetition {
            rows: vec![
                pb::RepetitionRow {
                    row_id: "r0".into(),
                    champs: vec![],
                },
                pb::RepetitionRow {
                    row_id: "r1".into(),
                    champs,
                },
            ],
        }))
    };
    assert_eq!(
        path(repetition(vec![
            champ("x", V::Integer(1)),
            pb::Champ {
                field_id: "y".into(),
                value: None,
            },
        ])),
        "patches[2].set.repetition.rows[1].champs[1].value"
    );
    assert_eq!(
        path(repetition(vec![champ(
            "x",
            V::Repetition(pb::Repetition { rows: vec![] }),
        )])),
        "patches[2].set.repetition.rows[1].champs[0].value.repetition"
    );
}

/// A form with one answerable field of each type, and a valid answer for each, written as
/// `value_to_pb` writes it back (canonical decimal, E.164 phone, codes filled in…).
fn every_type() -> (FormDefinition, Vec<(&'static str, pb::champ_value::Value)>) {
    use pb::champ_value::Value as V;
    let list = |t| {
        with(
            field("unused", t),
            pb::field_definition::Constraints::Choice(pb::ChoiceConstraints {
                values: vec!["A".into(), "B".into()],
                allow_other: true,
                ..Default::default()
            }),
        )
    };
    let mut repetition = field("v_repetition", T::Repetition);
    repetition.children = vec![field("r_t", T::Text), field("r_n", T::Integer)];
    let fields = vec![
        field("v_text", T::Text),
        field("v_textarea", T::Textarea),
        field("v_integer", T::Integer),
        field("v_decimal", T::Decimal),
        field("v_date", T::Date),
        field("v_datetime", T::Datetime),
        field("v_checkbox", T::Checkbox),
        field("v_yes_no", T::YesNo),
        pb::FieldDefinition {
            id: "v_drop_down".into(),
            ..list(T::DropDown)
        },
        pb::FieldDefinition {
            id: "v_multi".into(),
            ..list(T::MultiDropDown)
        },
        field("v_siret", T::Siret),
        field("v_email", T::Email),
        field("v_phone", T::Phone),
        field("v_address", T::Address),
        field("v_commune", T::Commune),
        field("v_departement", T::Departement),
        field("v_region", T::Region),
        repetition,
        field("v_files", T::PieceJustificative),
        field("v_link", T::DossierLink),
        field("v_header", T::HeaderSection),
        field("v_explication", T::Explication),
    ];
    let form = form_definition(fields, "fields").expect("valid form");
    let answers = vec![
        ("v_text", V::Text("Bonjour".into())),
        ("v_textarea", V::Text("Deux\nlignes".into())),
        ("v_integer", V::Integer(-42)),
        ("v_decimal", V::Decimal("1500.50".into())),
        ("v_date", V::Date("2024-10-01".into())),
        (
            "v_datetime",
            V::Datetime(prost_types::Timestamp {
                seconds: 1_727_000_000,
                nanos: 123_456_789,
            }),
        ),
        ("v_checkbox", V::Checkbox(true)),
        ("v_yes_no", V::YesNo(false)),
        (
            "v_drop_down",
            V::DropDown(pb::Choice {
                choice: Some(pb::choice::Choice::Other("Autre chose".into())),
            }),
        ),
        (
            "v_multi",
            V::MultiDropDown(pb::MultiChoice {
                values: vec!["A".into(), "B".into()],
                other: Some("Z".into()),
            }),
        ),
        ("v_siret", V::Siret("44306184100047".into())),
        ("v_email", V::Email("jeanne.martin@example.fr".into())),
        ("v_phone", V::Phone("+33612345678".into())),
        ("v_address", V::Address(address())),
        ("v_commune", V::Commune("13055".into())),
        ("v_departement", V::Departement("2A".into())),
        ("v_region", V::Region("93".into())),
        (
            "v_repetition",
            V::Repetition(pb::Repetition {
                rows: vec![
                    pb::RepetitionRow {
                        row_id: "row-1".into(),
                        // By child id: value_to_pb has no form to order them by.
                        champs: vec![
                            champ("r_n", V::Integer(3)),
                            champ("r_t", V::Text("x".into())),
                        ],
                    },
                    pb::RepetitionRow {
                        row_id: "row-2".into(),
                        champs: vec![],
                    },
                ],
            }),
        ),
        (
            "v_files",
            V::PieceJustificative(pb::PieceJustificative {
                files: vec![file("f1", 10), file("f2", 0)],
            }),
        ),
        ("v_link", V::DossierLink(42)),
    ];
    (form, answers)
}

#[test]
fn every_field_type_round_trips_through_input_parse_and_value_to_pb() {
    let geo = Referentiel::official();
    let (form, answers) = every_type();
    let answerable = form
        .fields()
        .iter()
        .filter(|f| !f.field_type.is_display_only())
        .count();
    assert_eq!(answers.len(), answerable, "one answer per answerable type");
    let mut seen = std::collections::HashSet::new();
    for (id, member) in answers {
        let def = form.field(&fid(id)).expect("field");
        assert!(seen.insert(def.field_type));
        let sent = value(member);
        let parsed = input(sent.clone(), "v").expect("shape");
        let value = parse_input(def, parsed, geo).unwrap_or_else(|v| panic!("{id}: {v}"));
        assert_eq!(value_to_pb(&value), sent, "{id}");
        // And back: what the service answers, a client can send again.
        let again = input(value_to_pb(&value), "v").expect("shape");
        assert_eq!(parse_input(def, again, geo).as_ref(), Ok(&value), "{id}");
    }
}

#[test]
fn answers_come_in_form_order_with_row_champs_in_children_order() {
    use pb::champ_value::Value as V;
    let geo = Referentiel::official();
    let (form, sent) = every_type();
    let mut answers = Answers::new();
    // Answered in reverse, and one field left out.
    for (id, member) in sent.into_iter().rev().filter(|(id, _)| *id != "v_email") {
        let def = form.field(&fid(id)).expect("field");
        let parsed = input(value(member), "v").expect("shape");
        let v = parse_input(def, parsed, geo).expect("valid");
        answers.set(fid(id), v);
    }
    let champs = answers_to_pb(&form, &answers);
    let ids: Vec<&str> = champs.iter().map(|c| c.field_id.as_str()).collect();
    let expected: Vec<&str> = form
        .fields()
        .iter()
        .map(|f| f.id.as_str())
        .filter(|id| answers.get(&fid(id)).is_some())
        .collect();
    assert_eq!(ids, expected);
    assert!(!ids.contains(&"v_email"));
    let rows = champs
        .iter()
        .find_map(|c| match c.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(V::Repetition(r)) => Some(r.rows.clone()),
            _ => None,
        })
        .expect("repetition");
    let row_ids: Vec<&str> = rows[0].champs.iter().map(|c| c.field_id.as_str()).collect();
    assert_eq!(row_ids, vec!["r_t", "r_n"]);
}

#[test]
fn file_refs_and_enums_convert_both_ways() {
    let f = FileRef {
        id: "f".into(),
        name: "budget.pdf".into(),
        content_type: "application/pdf".into(),
        size: u64::MAX,
        sha256: "00".into(),
    };
    assert_eq!(file_ref_to_pb(&f).size_bytes, i64::MAX);
    for s in [
        Status::Brouillon,
        Status::EnConstruction,
        Status::EnInstruction,
        Status::Accepte,
        Status::Refuse,
        Status::SansSuite,
    ] {
        assert_eq!(status_from_pb(status_to_pb(s)), Some(s));
    }
    assert_eq!(status_from_pb(ev::DossierStatus::Unspecified), None);
    for k in [Kind::Projet, Kind::Action] {
        assert_eq!(kind_from_pb(kind_to_pb(k)), Some(k));
    }
    assert_eq!(kind_from_pb(ev::DossierKind::Unspecified), None);
    for t in FieldType::ALL {
        assert_eq!(field_type_from_pb(field_type_to_pb(t)), Some(t));
    }
    for p in [
        FieldPurpose::Title,
        FieldPurpose::StructureName,
        FieldPurpose::Siret,
        FieldPurpose::Region,
        FieldPurpose::Departement,
        FieldPurpose::Cpam,
    ] {
        assert_eq!(field_purpose_from_pb(field_purpose_to_pb(p)), Some(p));
    }
}

// ---------------------------------------------------------------------------------------------
// Patches
// ---------------------------------------------------------------------------------------------

fn champ_patch(
    field_id: &str,
    row: Option<(&str, &str)>,
    operation: Option<pb::champ_patch::Operation>,
) -> pb::ChampPatch {
    pb::ChampPatch {
        field_id: field_id.into(),
        row: row.map(|(repetition, row)| pb::RowRef {
            repetition_field_id: repetition.into(),
            row_id: row.into(),
        }),
        operation,
    }
}

#[test]
fn patches_name_top_level_fields_children_and_rows() {
    use pb::champ_patch::Operation as Op;
    let set = |s: &str| Some(Op::Set(value(pb::champ_value::Value::Text(s.into()))));

    let p = patch(champ_patch("p_titre", None, set("Titre")), 0).expect("top-level");
    assert_eq!(p.path, ChampPath::Field(fid("p_titre")));
    assert!(matches!(p.op, PatchOp::Set(Input::Text(ref s)) if s == "Titre"));

    let p = patch(
        champ_patch("p_dep_montant", Some(("p_depenses", "5f0c-1")), set("x")),
        1,
    )
    .expect("child");
    assert_eq!(
        p.path,
        ChampPath::child(fid("p_depenses"), rid("5f0c-1"), fid("p_dep_montant"))
    );

    let p = patch(
        champ_patch("p_depenses", None, Some(Op::AddRow("row-9".into()))),
        2,
    )
    .expect("add row");
    assert_eq!(p.path, ChampPath::Field(fid("p_depenses")));
    assert!(matches!(p.op, PatchOp::AddRow(ref r) if r == &rid("row-9")));

    let p = patch(
        champ_patch("p_depenses", None, Some(Op::RemoveRow("row-9".into()))),
        3,
    )
    .expect("remove row");
    assert!(matches!(p.op, PatchOp::RemoveRow(ref r) if r == &rid("row-9")));

    let p = patch(
        champ_patch(
            "p_dep_montant",
            Some(("p_depenses", "r")),
            Some(Op::Clear(true)),
        ),
        4,
    )
    .expect("clear");
    assert!(matches!(p.op, PatchOp::Clear));
}

#[test]
fn malformed_patches_are_violations_at_their_path() {
    use pb::champ_patch::Operation as Op;
    let path = |pb: pb::ChampPatch, i: usize| patch(pb, i).map(|_| ()).expect_err("invalid").0;
    assert_eq!(
        patch(champ_patch("a", None, Some(Op::Clear(false))), 3)
            .map(|_| ())
            .expect_err("clear=false"),
        (
            "patches[3].clear".to_owned(),
            "« clear » doit valoir true pour effacer la réponse".to_owned()
        )
    );
    assert_eq!(
        path(champ_patch("A", None, Some(Op::Clear(true))), 0),
        "patches[0].field_id"
    );
    assert_eq!(path(champ_patch("a", None, None), 1), "patches[1]");
    assert_eq!(
        path(
            champ_patch("a", None, Some(Op::Set(pb::ChampValue { value: None }))),
            2
        ),
        "patches[2].set"
    );
    assert_eq!(
        path(
            champ_patch("r", Some(("r", "x")), Some(Op::AddRow("y".into()))),
            4
        ),
        "patches[4].row"
    );
    assert_eq!(
        path(champ_patch("r", None, Some(Op::AddRow("a b".into()))), 5),
        "patches[5].add_row"
    );
    assert_eq!(
        path(
            champ_patch("r", None, Some(Op::RemoveRow(String::new()))),
            6
        ),
        "patches[6].remove_row"
    );
    assert_eq!(
        path(champ_patch("c", Some(("R", "x")), Some(Op::Clear(true))), 7),
        "patches[7].row.repetition_field_id"
    );
    assert_eq!(
        path(
            champ_patch("c", Some(("r", "x y")), Some(Op::Clear(true))),
            8
        ),
        "patches[8].row.row_id"
    );
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

#[test]
fn timestamps_outside_the_protobuf_range_are_violations() {
    let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
    for bad in [
        ts(TIMESTAMP_MAX_SECONDS + 1, 0),
        ts(TIMESTAMP_MIN_SECONDS - 1, 0),
        ts(i64::MAX, 0),
        ts(i64::MIN, 0),
        ts(0, -1),
        ts(0, NANOS_PER_SECOND),
    ] {
        let (path, message) = datetime(&bad, "closing_at").expect_err("out of range");
        assert_eq!(path, "closing_at");
        assert!(message.contains("9999"), "{message}");
    }
    for good in [
        ts(TIMESTAMP_MAX_SECONDS, NANOS_PER_SECOND - 1),
        ts(TIMESTAMP_MIN_SECONDS, 0),
        ts(0, 0),
    ] {
        let at = datetime(&good, "x").expect("in range");
        assert_eq!(timestamp(at), good);
    }
    // Instants chrono holds but the protobuf range does not are still written, not panicking.
    let _ = timestamp(DateTime::<Utc>::MAX_UTC);
    let _ = timestamp(DateTime::<Utc>::MIN_UTC);
}

proptest! {
    #[test]
    fn any_timestamp_reads_without_panicking_and_writes_back(seconds: i64, nanos: i32) {
        let ts = prost_types::Timestamp { seconds, nanos };
        if let Ok(at) = datetime(&ts, "t") {
            prop_assert_eq!(timestamp(at), ts);
        }
    }

    #[test]
    fn decimals_read_only_in_the_form_they_are_written_back(s in "-?[0-9]{1,30}(\\.[0-9]{0,30})?") {
        if let Ok(d) = decimal(&s, "x") {
            prop_assert_eq!(d.to_string(), s);
        }
    }
}
