//! Arbitrary visibility conditions — all / any groups nested up to 40 levels, or chains of
//! thousands of groups, comparisons of any field with any operator and operand — put on a new
//! last field of a shipped form, then evaluated on answers built by arbitrary patches. Checks,
//! besides "no panic": the form refuses a condition deeper than `Condition::MAX_DEPTH` (and
//! counts depth without recursion); when it accepts the condition, the field's visibility is the
//! condition evaluated on the visibility of the fields before it; the condition alone can be
//! evaluated on any answers, accepted or not.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use mst_forms_domain::condition::{Condition, visibility};
use mst_forms_domain::form::{FieldDefinition, FieldType, FormDefinition};
use mst_forms_domain::ids::FieldId;
use mst_forms_domain::referentiel::Referentiel;
use mst_forms_domain::validate::check_for_deposit;
use mst_forms_domain::value::Answers;
use mst_fuzz::{FORMS, Patch, apply, condition};

/// Deepest tree built group by group (past `MAX_DEPTH`, to see it refused).
const TREE_DEPTH: usize = 40;
/// Longest chain of single-item groups (a tree no JSON or protobuf decoder would hand over:
/// both stop at about a hundred levels).
const CHAIN_MAX: u16 = 5_000;

fn case(u: &mut Unstructured<'_>) -> arbitrary::Result<(usize, Condition, Vec<Patch>)> {
    let form = usize::from(u8::arbitrary(u)?) % FORMS.len();
    let mut condition = condition(u, TREE_DEPTH)?;
    if bool::arbitrary(u)? {
        for i in 0..u16::arbitrary(u)? % CHAIN_MAX {
            condition = if i % 2 == 0 {
                Condition::All(vec![condition])
            } else {
                Condition::Any(vec![condition])
            };
        }
    }
    Ok((form, condition, Vec::<Patch>::arbitrary(u)?))
}

fuzz_target!(|data: &[u8]| {
    let Ok((form, condition, patches)) = case(&mut Unstructured::new(data)) else {
        return;
    };
    let base = &FORMS[form];
    let geo = Referentiel::official();
    let target = FieldId::parse("fuzz_cible").expect("a field id");
    let mut fields = base.fields().to_vec();
    fields.push(
        FieldDefinition::new(target.clone(), "Cible", FieldType::Text)
            .required()
            .visible_when(condition.clone()),
    );
    let depth = condition.depth();
    let with_condition = FormDefinition::new(fields);
    if depth > Condition::MAX_DEPTH {
        assert!(with_condition.is_err(), "depth {depth} refused");
    }

    let mut answers = Answers::new();
    apply(base, &mut answers, patches, geo);
    let base_visibility = visibility(base, &answers, geo);
    // Alone, on any answers and any visibility of the compared fields.
    let holds = condition.holds(&answers, None, geo, &|f| base_visibility.is_visible(f));
    let _ = condition.holds(&answers, None, geo, &|_| true);

    if let Ok(form) = with_condition {
        let vis = visibility(&form, &answers, geo);
        assert_eq!(
            vis.is_visible(&target),
            holds,
            "the form evaluates the condition"
        );
        let missing = check_for_deposit(&form, &answers, geo)
            .iter()
            .any(|v| v.path.field_id() == &target);
        assert_eq!(
            missing, holds,
            "a visible required field without answer blocks the deposit"
        );
    }
});
