//! Who calls and where: the bearer token (given, or minted with the shared secret for `--as`),
//! the service address, and the status explanations a person can act on.

use std::time::Duration;

use mst_kit::auth::{AuthSettings, Role};
use mst_kit::config::Env;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// The caller of a command.
#[derive(Debug, Clone, clap::Args)]
pub struct Caller {
    /// Bearer token to send (default: one minted for --as with the shared secret).
    #[arg(long, env = "MST_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Email the token is minted for when --token is absent (admin commands default to
    /// admin@mst.local).
    #[arg(long = "as", env = "MST_AS", hide_env_values = true, global = true)]
    pub as_email: Option<String>,
    /// Role(s) of the minted token (default: the command's usual role).
    #[arg(long = "role", global = true)]
    pub roles: Vec<Role>,
}

impl Caller {
    /// `authorization` metadata for a command whose usual role is `role`.
    pub fn bearer(&self, role: Role) -> anyhow::Result<MetadataValue<Ascii>> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let email = match (&self.as_email, role) {
                    (Some(e), _) => e.clone(),
                    (None, Role::Admin) => "admin@mst.local".to_owned(),
                    (None, _) => anyhow::bail!(
                        "say who calls: --as EMAIL (a {role} token is minted) or --token TOKEN"
                    ),
                };
                let roles = if self.roles.is_empty() {
                    vec![role]
                } else {
                    self.roles.clone()
                };
                let mut env = Env::from_process();
                let settings = AuthSettings::from_env(&mut env);
                env.finish()?;
                mst_kit::auth::mint_for(&settings, &email, &roles, Duration::from_secs(600))?
            }
        };
        Ok(format!("Bearer {token}").parse()?)
    }

    /// `message` with the bearer of a command whose usual role is `role`.
    pub fn request<T>(&self, role: Role, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer(role)?);
        Ok(request)
    }
}

/// A channel to `addr`.
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(addr.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {addr}: {e}"))
}

/// A status as a person can act on it: the message, then every field violation.
pub fn explain(status: &tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt as _;
    let mut out = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            out.push_str(&format!("\n  - {} : {}", v.field, v.description));
        }
    }
    if let Some(info) = status.get_details_error_info() {
        out.push_str(&format!("\n  ({}", info.reason));
        for (k, v) in &info.metadata {
            out.push_str(&format!(", {k}={v}"));
        }
        out.push(')');
    }
    anyhow::anyhow!(out)
}

/// A message in the proto3 JSON mapping (for `show` commands).
pub fn json<T: prost::Message>(full_name: &str, message: &T) -> anyhow::Result<String> {
    Ok(mst_proto::json::encode(full_name, message)?)
}
