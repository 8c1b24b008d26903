//! The proto3 JSON mapping of every contract message, through the descriptors compiled in this
//! crate: procedure definition files, CLI output, debugging.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

static POOL: LazyLock<Result<DescriptorPool, String>> =
    LazyLock::new(|| DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()));

/// Why a JSON document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptors are broken (a build problem).
    #[error("descriptor pool: {0}")]
    Pool(String),
    /// No message with this fully-qualified name.
    #[error("unknown message {0}")]
    UnknownMessage(String),
    /// The document does not follow the proto3 JSON mapping of the message.
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
    /// The message could not be converted to the generated type.
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
}

fn descriptor(full_name: &str) -> Result<prost_reflect::MessageDescriptor, JsonError> {
    let pool = POOL.as_ref().map_err(|e| JsonError::Pool(e.clone()))?;
    pool.get_message_by_name(full_name)
        .ok_or_else(|| JsonError::UnknownMessage(full_name.to_owned()))
}

/// Reads `json` as the message `full_name` (e.g. `mst.forms.v1.ProcedureDefinition`).
/// Unknown fields are errors: a typo in a definition file must not be silently ignored.
pub fn decode<T: prost::Message + Default>(full_name: &str, json: &str) -> Result<T, JsonError> {
    let desc = descriptor(full_name)?;
    let mut de = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(desc, &mut de)?;
    de.end()?;
    Ok(dynamic.transcode_to::<T>()?)
}

/// Writes `message` (of type `full_name`) in the proto3 JSON mapping, pretty-printed.
pub fn encode<T: prost::Message>(full_name: &str, message: &T) -> Result<String, JsonError> {
    let desc = descriptor(full_name)?;
    let mut dynamic = DynamicMessage::new(desc);
    dynamic.transcode_from(message)?;
    Ok(serde_json::to_string_pretty(&dynamic)?)
}

/// Writes the encoded message `bytes` (of type `full_name`) in the proto3 JSON mapping, on one
/// line (event feeds, logs).
pub fn encode_bytes(full_name: &str, bytes: &[u8]) -> Result<String, JsonError> {
    let desc = descriptor(full_name)?;
    let dynamic = DynamicMessage::decode(desc, bytes)?;
    Ok(serde_json::to_string(&dynamic)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_round_trips_through_json() {
        let json = r#"{"id":"demo","title":"Démo","kind":"DOSSIER_KIND_PROJET","estimatedFillingTime":"900s",
            "fields":[{"id":"p_titre","label":"Titre","type":"FIELD_TYPE_TEXT","required":true,
            "text":{"maxLength":200}}]}"#;
        let def: crate::forms::ProcedureDefinition =
            decode("mst.forms.v1.ProcedureDefinition", json).unwrap();
        assert_eq!(def.fields[0].id, "p_titre");
        assert_eq!(def.estimated_filling_time.unwrap().seconds, 900);
        let back = encode("mst.forms.v1.ProcedureDefinition", &def).unwrap();
        assert!(back.contains("\"FIELD_TYPE_TEXT\""));
    }

    #[test]
    fn unknown_fields_and_names_are_errors() {
        let err = decode::<crate::forms::ProcedureDefinition>(
            "mst.forms.v1.ProcedureDefinition",
            r#"{"id":"x","titel":"typo"}"#,
        );
        assert!(err.is_err());
        assert!(matches!(
            decode::<crate::forms::ProcedureDefinition>("mst.nope.v1.X", "{}"),
            Err(JsonError::UnknownMessage(_))
        ));
    }
}
