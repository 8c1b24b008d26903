//! Arbitrary patch lists (set / clear / add_row / remove_row, every kind of answer, raw or
//! well-formed ids and paths) applied to a dossier of the shipped *Projet* or *Action* form or of
//! the tests' procedure, as the forms service applies an `UpdateDossier`; then what the other
//! use cases compute from the answers: deposit check (requiredness under visibility), visible
//! answers (exports, PDF), headline. Checks, besides "no panic": a refused patch changes
//! nothing, an accepted value fits its field and reads back equal from the stored JSON, the
//! answers read back equal, deposit violations name champs of the form, and the visible answers
//! are stable (filtering them again changes nothing).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mst_forms_domain::procedure::Headline;
use mst_forms_domain::referentiel::Referentiel;
use mst_forms_domain::validate::{check_for_deposit, visible_answers};
use mst_forms_domain::value::Answers;
use mst_fuzz::{FORMS, Patch, apply};

#[derive(Debug, Arbitrary)]
struct Case {
    form: u8,
    patches: Vec<Patch>,
}

fuzz_target!(|case: Case| {
    let form = &FORMS[usize::from(case.form) % FORMS.len()];
    let geo = Referentiel::official();
    let mut answers = Answers::new();
    apply(form, &mut answers, case.patches, geo);

    let json = serde_json::to_string(&answers).expect("answers serialise");
    let back: Answers = serde_json::from_str(&json).expect("stored answers read back");
    assert_eq!(back, answers, "stored answers read back equal");

    for v in check_for_deposit(form, &answers, geo) {
        assert!(
            form.entry(v.path.field_id()).is_some(),
            "deposit violation on a champ of the form: {}",
            v.path
        );
        assert!(!v.message.is_empty());
    }
    let visible = visible_answers(form, &answers, geo);
    assert!(visible.len() <= answers.len());
    assert_eq!(
        visible_answers(form, &visible, geo),
        visible,
        "visible answers are stable"
    );
    let _ = Headline::of(form, &answers);
});
