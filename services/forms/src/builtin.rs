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
}
