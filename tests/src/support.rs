//! Helpers of the end-to-end tests: tokens, authenticated requests, clients, a small test
//! procedure, and the roster of one CPAM groupe.

use std::time::Duration;

use crate::Services;
use mst_kit::auth::Role;
use mst_proto::forms as pb;
use mst_proto::forms::forms_service_client::FormsServiceClient;
use mst_proto::forms::procedure_admin_service_client::ProcedureAdminServiceClient;
use mst_proto::instruction::roster_service_client::RosterServiceClient;
use tonic::transport::Channel;

pub const ADMIN: &str = "admin@cnamts.example";
pub const OWNER: &str = "marie.dupont@asso-souffle.example";
pub const INSTRUCTEUR: &str = "paul.martin@cpam13.example";

/// A bearer token minted with the embedded secret.
pub fn token(email: &str, roles: &[Role]) -> String {
    mst_kit::auth::mint_dev(email, roles, Duration::from_secs(600)).unwrap()
}

/// `message` with `email`'s bearer token.
pub fn as_<T>(email: &str, roles: &[Role], message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(email, roles)).parse().unwrap(),
    );
    r
}

/// `message` as the promoteur `email`.
pub fn promoteur<T>(email: &str, message: T) -> tonic::Request<T> {
    as_(email, &[Role::Promoteur], message)
}

/// `message` as the admin.
pub fn admin<T>(message: T) -> tonic::Request<T> {
    as_(ADMIN, &[Role::Admin], message)
}

async fn channel(url: String) -> Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A forms client.
pub async fn forms(stack: &impl Services) -> FormsServiceClient<Channel> {
    FormsServiceClient::new(channel(stack.url("forms")).await)
        .max_decoding_message_size(64 * 1024 * 1024)
}

/// A forms admin client.
pub async fn forms_admin(stack: &impl Services) -> ProcedureAdminServiceClient<Channel> {
    ProcedureAdminServiceClient::new(channel(stack.url("forms")).await)
}

/// A client of forms' service-to-service API (call it with a `Role::System` token).
pub async fn forms_internal(
    stack: &impl Services,
) -> mst_proto::forms::forms_internal_service_client::FormsInternalServiceClient<Channel> {
    mst_proto::forms::forms_internal_service_client::FormsInternalServiceClient::new(
        channel(stack.url("forms")).await,
    )
}

/// A roster client.
pub async fn roster(stack: &impl Services) -> RosterServiceClient<Channel> {
    RosterServiceClient::new(channel(stack.url("instruction")).await)
}

/// The test procedure: a title, a SIRET, a yes/no that makes a precision required, a
/// département (routing), a repetition of budget lines with a required amount, and a file.
pub fn test_definition(id: &str) -> pb::ProcedureDefinition {
    let json = format!(
        r#"{{"id":"{id}","title":"Démarche de test","description":"Pour les tests","kind":"DOSSIER_KIND_PROJET",
        "estimatedFillingTime":"600s",
        "fields":[
          {{"id":"s_structure","label":"Structure","type":"FIELD_TYPE_HEADER_SECTION"}},
          {{"id":"titre","label":"Titre du projet","type":"FIELD_TYPE_TEXT","required":true,"purpose":"FIELD_PURPOSE_TITLE","text":{{"maxLength":200}}}},
          {{"id":"siret","label":"SIRET","type":"FIELD_TYPE_SIRET","required":true,"purpose":"FIELD_PURPOSE_SIRET"}},
          {{"id":"departement","label":"Département","type":"FIELD_TYPE_DEPARTEMENT","required":true,"purpose":"FIELD_PURPOSE_DEPARTEMENT"}},
          {{"id":"renouvellement","label":"Renouvellement ?","type":"FIELD_TYPE_YES_NO","required":true}},
          {{"id":"precedent","label":"Projet précédent","type":"FIELD_TYPE_TEXT","required":true,
            "visibleWhen":{{"comparison":{{"fieldId":"renouvellement","operator":"COMPARISON_OPERATOR_EQUALS","operand":{{"boolean":true}}}}}}}},
          {{"id":"budget","label":"Budget","type":"FIELD_TYPE_REPETITION","required":true,
            "children":[{{"id":"poste","label":"Poste","type":"FIELD_TYPE_TEXT","required":true}},
                        {{"id":"montant","label":"Montant","type":"FIELD_TYPE_DECIMAL","required":true,"number":{{"min":"0","maxDecimalPlaces":2}}}}]}},
          {{"id":"piece","label":"Pièce jointe","type":"FIELD_TYPE_PIECE_JUSTIFICATIVE","file":{{"maxFiles":3}}}}
        ]}}"#
    );
    mst_proto::json::decode("mst.forms.v1.ProcedureDefinition", &json).unwrap()
}

/// Loads and publishes the test procedure `id`.
pub async fn publish_test_procedure(stack: &impl Services, id: &str) {
    let mut admin_client = forms_admin(stack).await;
    let response = admin_client
        .load_procedure(admin(pb::LoadProcedureRequest {
            source: Some(pb::load_procedure_request::Source::Definition(
                test_definition(id),
            )),
            publish: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.outcome, pb::LoadOutcome::Created as i32);
}

/// A groupe for département 13 with one declared instructeur.
pub async fn roster_cpam13(stack: &impl Services) -> String {
    let mut client = roster(stack).await;
    let groupe = client
        .create_groupe(admin(mst_proto::instruction::CreateGroupeRequest {
            label: "CPAM des Bouches-du-Rhône".into(),
            cpam_values: vec!["CPAM des Bouches-du-Rhône (13)".into()],
            departement_codes: vec!["13".into()],
            is_default: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .groupe
        .unwrap();
    client
        .add_instructeur(admin(mst_proto::instruction::AddInstructeurRequest {
            email: INSTRUCTEUR.into(),
            groupe_id: groupe.id.clone(),
            name: "Paul Martin".into(),
        }))
        .await
        .unwrap();
    groupe.id
}

/// A `set` patch of a top-level field.
pub fn set(field: &str, value: pb::champ_value::Value) -> pb::ChampPatch {
    pb::ChampPatch {
        field_id: field.into(),
        row: None,
        operation: Some(pb::champ_patch::Operation::Set(pb::ChampValue {
            value: Some(value),
        })),
    }
}

/// A `set` patch of a child field in a repetition row.
pub fn set_in_row(
    rep: &str,
    row: &str,
    field: &str,
    value: pb::champ_value::Value,
) -> pb::ChampPatch {
    pb::ChampPatch {
        field_id: field.into(),
        row: Some(pb::RowRef {
            repetition_field_id: rep.into(),
            row_id: row.into(),
        }),
        operation: Some(pb::champ_patch::Operation::Set(pb::ChampValue {
            value: Some(value),
        })),
    }
}

/// An `add_row` patch.
pub fn add_row(rep: &str, row: &str) -> pb::ChampPatch {
    pb::ChampPatch {
        field_id: rep.into(),
        row: None,
        operation: Some(pb::champ_patch::Operation::AddRow(row.into())),
    }
}

/// Text value.
pub fn text(s: &str) -> pb::champ_value::Value {
    pb::champ_value::Value::Text(s.into())
}

/// The patches that complete the test procedure's required fields.
pub fn complete_answers() -> Vec<pb::ChampPatch> {
    use pb::champ_value::Value as V;
    vec![
        set("titre", text("Mois sans tabac au quartier Nord")),
        set("siret", V::Siret("73282932000074".into())),
        set("departement", V::Departement("13".into())),
        set("renouvellement", V::YesNo(false)),
        add_row("budget", "l1"),
        set_in_row("budget", "l1", "poste", text("Affiches")),
        set_in_row("budget", "l1", "montant", V::Decimal("1200.50".into())),
    ]
}

/// Creates a brouillon of `procedure` for `owner`.
pub async fn create(stack: &impl Services, owner: &str, procedure: &str) -> pb::Dossier {
    forms(stack)
        .await
        .create_dossier(promoteur(
            owner,
            pb::CreateDossierRequest {
                procedure_id: procedure.into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap()
}

/// Applies `patches` at `version`.
pub async fn update(
    stack: &impl Services,
    who: &str,
    number: i64,
    version: i64,
    patches: Vec<pb::ChampPatch>,
) -> Result<pb::Dossier, tonic::Status> {
    forms(stack)
        .await
        .update_dossier(promoteur(
            who,
            pb::UpdateDossierRequest {
                number,
                expected_version: version,
                patches,
            },
        ))
        .await
        .map(|r| r.into_inner().dossier.unwrap())
}

/// Dossier `number` as promoteur `who` sees it in forms.
pub async fn promoteurs_view(stack: &impl Services, who: &str, number: i64) -> pb::Dossier {
    forms(stack)
        .await
        .get_dossier(promoteur(who, pb::GetDossierRequest { number }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap()
}

/// Dossier `number` as its owner ([`OWNER`]) sees it in forms.
pub async fn owners_view(stack: &impl Services, number: i64) -> pb::Dossier {
    promoteurs_view(stack, OWNER, number).await
}

/// Deposits at `version`.
pub async fn deposit(
    stack: &impl Services,
    who: &str,
    number: i64,
    version: i64,
) -> Result<pb::Dossier, tonic::Status> {
    forms(stack)
        .await
        .deposit_dossier(promoteur(
            who,
            pb::DepositDossierRequest {
                number,
                expected_version: version,
            },
        ))
        .await
        .map(|r| r.into_inner().dossier.unwrap())
}

/// Publishes `event` on the stack's stream under the message id `msg_id` (as its producer
/// would), and waits for the stream's acknowledgement.
pub async fn publish<E: mst_proto::Event>(stack: &impl Services, event: &E, msg_id: &str) {
    let client = async_nats::connect(stack.nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    js.publish_with_headers(
        format!("{}.{}", stack.prefix(), E::SUBJECT),
        headers,
        event.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// An instructeur's acceptance of dossier `number` of `procedure` (id, title) owned by `owner`,
/// at `status_version`, as instruction would publish it.
pub fn acceptance_event(
    number: i64,
    procedure: (&str, &str),
    owner: &str,
    status_version: i64,
) -> mst_proto::events::DossierStatusChanged {
    use mst_proto::events as ev;
    ev::DossierStatusChanged {
        metadata: Some(ev::EventMetadata::new(
            "instruction",
            ev::Actor {
                email: INSTRUCTEUR.into(),
                role: ev::Role::Instructeur as i32,
            },
        )),
        number,
        procedure: Some(ev::ProcedureRef {
            id: procedure.0.into(),
            title: procedure.1.into(),
            kind: ev::DossierKind::Projet as i32,
        }),
        from_status: ev::DossierStatus::EnInstruction as i32,
        to_status: ev::DossierStatus::Accepte as i32,
        transition: ev::DossierTransition::Accepter as i32,
        owner_email: owner.into(),
        status_version,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    /// The fuzz targets of `tests/fuzz` read the test procedure's form in the domain's serde
    /// form from `tests/fuzz/forms/test.json`; this keeps that copy equal to
    /// [`super::test_definition`] (`MST_WRITE_FUZZ_FORMS=1` rewrites it).
    #[test]
    fn the_fuzz_targets_copy_of_the_test_form_is_up_to_date() {
        let def = mst_forms::grpc::convert::procedure_definition(
            super::test_definition("test"),
            "definition",
        )
        .expect("valid test definition");
        let json = serde_json::to_string_pretty(&def.form).expect("json") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/forms/test.json");
        if std::env::var_os("MST_WRITE_FUZZ_FORMS").is_some() {
            std::fs::write(&path, &json).expect("write");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == json,
            "{} differs from test_definition: run MST_WRITE_FUZZ_FORMS=1 cargo test -p mst-e2e --lib",
            path.display()
        );
    }
}
