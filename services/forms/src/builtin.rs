//! The procedure definitions shipped with the service (`procedures/*.json`, in the proto3 JSON
//! mapping of `mst.forms.v1.ProcedureDefinition`): the Mois sans tabac 2024 *Projet* and *Action*.

use mst_proto::forms::ProcedureDefinition;
use mst_proto::json::JsonError;

/// Ids of the shipped definitions.
pub const IDS: [&str; 2] = ["mst-2024-projet", "mst-2024-action"];

/// The shipped definition `id`, if there is one.
pub fn definition(id: &str) -> Option<Result<ProcedureDefinition, JsonError>> {
    let json = match id {
        "mst-2024-projet" => include_str!("../procedures/mst-2024-projet.json"),
        "mst-2024-action" => include_str!("../procedures/mst-2024-action.json"),
        _ => return None,
    };
    Some(mst_proto::json::decode(
        "mst.forms.v1.ProcedureDefinition",
        json,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_definition_decodes_and_is_a_valid_form() {
        for id in IDS {
            let def = definition(id).expect("known id").expect("valid JSON");
            assert_eq!(def.id, id);
            let domain = crate::grpc::convert::procedure_definition(def, "definition")
                .unwrap_or_else(|v| panic!("{id}: {v:?}"));
            assert!(domain.form.fields().len() > 20, "{id}");
        }
        assert!(definition("mst-1999").is_none());
    }

    /// The fuzz targets of `tests/fuzz` cannot build mst-proto's JSON mapping: they read the
    /// shipped forms in the domain's own serde form, from `tests/fuzz/forms/`. This keeps those
    /// copies equal to the shipped definitions (`MST_WRITE_FUZZ_FORMS=1` rewrites them).
    #[test]
    fn the_fuzz_targets_copies_of_the_shipped_forms_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/forms");
        for id in IDS {
            let def = definition(id).expect("known id").expect("valid JSON");
            let domain = crate::grpc::convert::procedure_definition(def, "definition")
                .unwrap_or_else(|v| panic!("{id}: {v:?}"));
            let json = serde_json::to_string_pretty(&domain.form).expect("json") + "\n";
            let path = dir.join(format!("{id}.json"));
            if std::env::var_os("MST_WRITE_FUZZ_FORMS").is_some() {
                std::fs::write(&path, &json).expect("write");
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == json,
                "{} differs from {id}: run MST_WRITE_FUZZ_FORMS=1 cargo test -p mst-forms builtin",
                path.display()
            );
        }
    }
}
