//! `mstctl procedure load`: create or update a procedure from a definition.

use mst_kit::auth::Role;

use crate::client::{Caller, channel, explain};

/// Where the forms service listens.
#[derive(Debug, Clone, clap::Args)]
pub struct FormsAddr {
    /// Address of the forms service.
    #[arg(
        long = "addr",
        env = "MST_FORMS_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub url: String,
}

pub async fn load(
    builtin: Option<String>,
    file: Option<std::path::PathBuf>,
    publish: bool,
    addr: &FormsAddr,
    caller: &Caller,
) -> anyhow::Result<bool> {
    use mst_proto::forms::load_procedure_request::Source;
    use mst_proto::forms::procedure_admin_service_client::ProcedureAdminServiceClient;
    let source = match (builtin, file) {
        (Some(id), _) => Source::BuiltinId(id),
        (None, Some(path)) => {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            Source::Definition(
                mst_proto::json::decode("mst.forms.v1.ProcedureDefinition", &json).map_err(
                    |e| anyhow::anyhow!("{} is not a procedure definition: {e}", path.display()),
                )?,
            )
        }
        (None, None) => anyhow::bail!("give --builtin or --file"),
    };
    let request = caller.request(
        Role::Admin,
        mst_proto::forms::LoadProcedureRequest {
            source: Some(source),
            publish,
        },
    )?;
    let response = ProcedureAdminServiceClient::new(channel(&addr.url).await?)
        .load_procedure(request)
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    let outcome = mst_proto::forms::LoadOutcome::try_from(response.outcome)
        .map(|o| o.as_str_name())
        .unwrap_or("?");
    let procedure = response.procedure.unwrap_or_default();
    println!(
        "{outcome}: {} « {} » (version {}, published revision {})",
        procedure.id,
        procedure.title,
        procedure.version,
        if procedure.published_revision_id.is_empty() {
            "none"
        } else {
            &procedure.published_revision_id
        }
    );
    Ok(true)
}
