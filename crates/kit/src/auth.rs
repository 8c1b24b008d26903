//! Bearer-token authentication.
//!
//! Requests carry `authorization: Bearer <JWT>`; the subject is the caller's email and the `roles`
//! claim lists their roles. Tokens are verified either with a shared HS256 secret (the embedded
//! default and local use, where `mstctl token` mints them) or, in production, with the published
//! keys (JWKS) of an OpenID Connect issuer, refreshed periodically and when an unknown key id shows
//! up. `alg: none` and every algorithm other than the key's are refused; `exp` is required.
//!
//! The [`AuthInterceptor`] puts the verified [`Principal`] in the request extensions; handlers read
//! it with [`principal`]. Authorization (who may do what to which dossier) stays in each service.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::config::Env;
use crate::error::ApiError;

/// The secret of the embedded default. Anyone can read it here: never use it beyond one machine.
pub const DEV_JWT_SECRET: &str = "mst-dossiers-embedded-default-secret-do-not-use-in-production";
/// Default `iss` of locally minted tokens.
pub const DEFAULT_ISSUER: &str = "mst-dossiers-local";
/// Default `aud` every service expects.
pub const DEFAULT_AUDIENCE: &str = "mst-dossiers";

/// A role a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Files and follows his own dossiers.
    Promoteur,
    /// CPAM agent instructing dossiers of his groupes (when on the roster).
    Instructeur,
    /// Asked for an opinion (avis) on a dossier.
    Expert,
    /// Regional structure processing OSCARS fiches.
    Ambassadeur,
    /// Publishes procedures, manages the roster and ambassadeurs.
    Admin,
    /// Another mst-dossiers service calling an internal API (service token).
    System,
}

impl Role {
    /// All roles.
    pub const ALL: [Role; 6] = [
        Role::Promoteur,
        Role::Instructeur,
        Role::Expert,
        Role::Ambassadeur,
        Role::Admin,
        Role::System,
    ];

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Promoteur => "promoteur",
            Role::Instructeur => "instructeur",
            Role::Expert => "expert",
            Role::Ambassadeur => "ambassadeur",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown role {s:?} (expected one of promoteur, instructeur, expert, ambassadeur, admin, system)"))
    }
}

/// The claims of an mst-dossiers token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The caller's email address.
    pub sub: String,
    /// Roles; unknown values are ignored.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Display name, when the issuer gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Email address, lower-cased.
    pub email: String,
    /// Display name, if any.
    pub name: Option<String>,
    /// Roles the token grants.
    pub roles: BTreeSet<Role>,
}

impl Principal {
    /// Whether the caller holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// `Ok` when the caller holds `role`, PERMISSION_DENIED otherwise.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "{} lacks role {role}",
                self.email
            )))
        }
    }
}

/// Where verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// A shared HS256 secret (`MST_AUTH_JWT_SECRET`).
    SharedSecret(SecretString),
    /// The JWKS of an OpenID Connect issuer (`MST_AUTH_OIDC_ISSUER_URL`).
    Oidc {
        /// Issuer URL; its `/.well-known/openid-configuration` names the JWKS.
        issuer_url: String,
    },
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::SharedSecret(_) => f.write_str("SharedSecret(..)"),
            KeySource::Oidc { issuer_url } => write!(f, "Oidc({issuer_url})"),
        }
    }
}

/// Token verification settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Where keys come from.
    pub keys: KeySource,
    /// Expected `iss` (`MST_AUTH_ISSUER`; the OIDC issuer URL by default in OIDC mode).
    pub issuer: String,
    /// Expected `aud` (`MST_AUTH_AUDIENCE`).
    pub audience: String,
    /// Allowed clock skew.
    pub leeway: Duration,
    /// How often the JWKS is refreshed (`MST_AUTH_JWKS_REFRESH_SECS`).
    pub jwks_refresh: Duration,
    /// The token this service presents to other services' internal APIs when tokens come from an
    /// OIDC issuer (`MST_SERVICE_TOKEN`, role `system`); with a shared secret the service mints
    /// its own.
    pub service_token: Option<SecretString>,
}

impl AuthSettings {
    /// Reads the auth settings.
    pub fn from_env(env: &mut Env) -> Self {
        let oidc = env.raw("MST_AUTH_OIDC_ISSUER_URL").map(str::to_owned);
        let keys = match (&oidc, env.secret("MST_AUTH_JWT_SECRET")) {
            (Some(url), _) => KeySource::Oidc {
                issuer_url: url.trim_end_matches('/').to_owned(),
            },
            (None, Some(secret)) => {
                if secret.expose_secret().len() < 32 {
                    env.issue("MST_AUTH_JWT_SECRET", "must be at least 32 characters long");
                }
                KeySource::SharedSecret(secret)
            }
            (None, None) => KeySource::SharedSecret(SecretString::from(DEV_JWT_SECRET)),
        };
        let default_issuer = oidc
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        Self {
            keys,
            issuer: env.or("MST_AUTH_ISSUER", default_issuer),
            audience: env.or("MST_AUTH_AUDIENCE", DEFAULT_AUDIENCE.to_owned()),
            leeway: Duration::from_secs(30),
            jwks_refresh: env.seconds("MST_AUTH_JWKS_REFRESH_SECS", Duration::from_secs(600)),
            service_token: env.secret("MST_SERVICE_TOKEN"),
        }
    }

    /// Settings of the embedded default (shared dev secret).
    pub fn embedded() -> Self {
        Self::from_env(&mut Env::default())
    }

    /// Whether the publicly known development secret is in use.
    pub fn uses_dev_secret(&self) -> bool {
        matches!(&self.keys, KeySource::SharedSecret(s) if s.expose_secret() == DEV_JWT_SECRET)
    }
}

/// Why a token was refused (logged, never sent to the client in detail).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing bearer token")]
    Missing,
    /// Not `Bearer <token>`.
    #[error("malformed authorization header")]
    Malformed,
    /// Signature, algorithm, expiry, issuer or audience check failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// No key with the token's `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKey(Option<String>),
}

#[derive(Clone)]
struct VerifyKey {
    key: DecodingKey,
    validation: Validation,
}

enum Keys {
    Static(VerifyKey),
    Jwks {
        issuer_url: String,
        by_kid: RwLock<HashMap<String, VerifyKey>>,
        refresh: Notify,
        client: reqwest::Client,
    },
}

struct Inner {
    settings: AuthSettings,
    keys: Keys,
}

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.inner.settings.keys)
            .field("issuer", &self.inner.settings.issuer)
            .finish()
    }
}

fn validation(settings: &AuthSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[&settings.issuer]);
    v.set_audience(&[&settings.audience]);
    v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    v.validate_nbf = true;
    v.leeway = settings.leeway.as_secs();
    v
}

fn default_alg(params: &AlgorithmParameters) -> Option<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            jsonwebtoken::jwk::EllipticCurve::P256 => Some(Algorithm::ES256),
            jsonwebtoken::jwk::EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

impl Authenticator {
    /// Builds the verifier; in OIDC mode, fetches the issuer's keys once (failing if unreachable).
    pub async fn new(settings: AuthSettings) -> anyhow::Result<Self> {
        let keys = match &settings.keys {
            KeySource::SharedSecret(secret) => Keys::Static(VerifyKey {
                key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                validation: validation(&settings, Algorithm::HS256),
            }),
            KeySource::Oidc { issuer_url } => Keys::Jwks {
                issuer_url: issuer_url.clone(),
                by_kid: RwLock::new(HashMap::new()),
                refresh: Notify::new(),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()?,
            },
        };
        let auth = Self {
            inner: Arc::new(Inner { settings, keys }),
        };
        auth.refresh_keys().await?;
        Ok(auth)
    }

    /// Fetches the issuer's JWKS again (no-op with a shared secret).
    pub async fn refresh_keys(&self) -> anyhow::Result<()> {
        let Keys::Jwks {
            issuer_url,
            by_kid,
            client,
            ..
        } = &self.inner.keys
        else {
            return Ok(());
        };
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let discovery: Discovery = client
            .get(format!("{issuer_url}/.well-known/openid-configuration"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let set: JwkSet = client
            .get(&discovery.jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match jwk.common.key_algorithm {
                Some(a) => Algorithm::try_from(a).ok(),
                None => default_alg(&jwk.algorithm),
            };
            let (Some(alg), Ok(key)) = (alg, DecodingKey::from_jwk(jwk)) else {
                tracing::warn!(%kid, "skipping unsupported JWK");
                continue;
            };
            keys.insert(
                kid,
                VerifyKey {
                    key,
                    validation: validation(&self.inner.settings, alg),
                },
            );
        }
        tracing::info!(keys = keys.len(), "loaded OIDC signing keys");
        if let Ok(mut guard) = by_kid.write() {
            *guard = keys;
        }
        Ok(())
    }

    /// Keeps the JWKS fresh until `shutdown`: every refresh period, and at once when a token names
    /// an unknown key (rotation). Returns at once with a shared secret.
    pub async fn run_key_refresh(self, shutdown: CancellationToken) {
        let Keys::Jwks { refresh, .. } = &self.inner.keys else {
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.inner.settings.jwks_refresh) => {}
                () = refresh.notified() => {}
            }
            if let Err(error) = self.refresh_keys().await {
                tracing::warn!(error = %error, "JWKS refresh failed; keeping the previous keys");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }

    /// Verifies a bearer token and returns the caller.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let vk = match &self.inner.keys {
            Keys::Static(k) => k.clone(),
            Keys::Jwks {
                by_kid, refresh, ..
            } => {
                let found = header
                    .kid
                    .as_ref()
                    .and_then(|kid| by_kid.read().ok().and_then(|keys| keys.get(kid).cloned()));
                match found {
                    Some(k) => k,
                    None => {
                        refresh.notify_one();
                        return Err(AuthError::UnknownKey(header.kid));
                    }
                }
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &vk.key, &vk.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let email = claims.sub.trim().to_lowercase();
        if !email.contains('@') {
            return Err(AuthError::Invalid("subject is not an email".into()));
        }
        Ok(Principal {
            email,
            name: claims.name,
            roles: claims.roles.iter().filter_map(|r| r.parse().ok()).collect(),
        })
    }

    /// Verifies the `authorization` metadata of a request.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, AuthError> {
        let value = request
            .metadata()
            .get("authorization")
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?;
        self.verify(token.trim())
    }

    /// An interceptor requiring a valid token on every call.
    pub fn interceptor(&self) -> AuthInterceptor {
        AuthInterceptor {
            auth: self.clone(),
            allow_anonymous: false,
        }
    }

    /// An interceptor for public APIs: a token is verified when present (and refused when
    /// invalid); without one the call goes through with no [`Principal`].
    pub fn optional_interceptor(&self) -> AuthInterceptor {
        AuthInterceptor {
            auth: self.clone(),
            allow_anonymous: true,
        }
    }
}

/// A tonic interceptor that authenticates each call and stores the [`Principal`] in the request
/// extensions.
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    auth: Authenticator,
    allow_anonymous: bool,
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.auth.authenticate(&request) {
            Ok(principal) => {
                tracing::Span::current().record("enduser.id", principal.email.as_str());
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(AuthError::Missing) if self.allow_anonymous => Ok(request),
            Err(error) => Err(ApiError::Unauthenticated(error.to_string()).into()),
        }
    }
}

/// The authenticated caller of a request that went through an [`AuthInterceptor`].
pub fn principal<T>(request: &Request<T>) -> Result<Principal, ApiError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("no principal on the request".into()))
}

/// Mints an HS256 token for local use (embedded default, demos, tests).
pub fn mint(
    secret: &str,
    issuer: &str,
    audience: &str,
    email: &str,
    roles: &[Role],
    ttl: Duration,
) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: email.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        name: None,
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        exp: now + ttl.as_secs(),
        nbf: Some(now.saturating_sub(1)),
        iat: now,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Mints a token with the embedded default settings.
pub fn mint_dev(email: &str, roles: &[Role], ttl: Duration) -> anyhow::Result<String> {
    mint(
        DEV_JWT_SECRET,
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
        email,
        roles,
        ttl,
    )
}

/// Mints a token for the given settings when they use a shared secret.
pub fn mint_for(
    settings: &AuthSettings,
    email: &str,
    roles: &[Role],
    ttl: Duration,
) -> anyhow::Result<String> {
    match &settings.keys {
        KeySource::SharedSecret(secret) => mint(
            secret.expose_secret(),
            &settings.issuer,
            &settings.audience,
            email,
            roles,
            ttl,
        ),
        KeySource::Oidc { .. } => {
            anyhow::bail!(
                "tokens come from the OIDC issuer; local minting needs MST_AUTH_JWT_SECRET"
            )
        }
    }
}

enum TokenSource {
    Mint {
        settings: AuthSettings,
        email: String,
    },
    Static(SecretString),
}

struct ServiceTokenInner {
    source: TokenSource,
    cached: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

/// The credentials a service presents to another service's internal API (role `system`), as a
/// client interceptor. With a shared secret the token is minted locally and renewed every 30
/// minutes; with an OIDC issuer it is the configured `MST_SERVICE_TOKEN`.
#[derive(Clone)]
pub struct ServiceToken {
    inner: Arc<ServiceTokenInner>,
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken(..)")
    }
}

/// Lifetime of a minted service token.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl ServiceToken {
    /// The credentials of `service` under `settings`.
    pub fn for_service(settings: &AuthSettings, service: &str) -> anyhow::Result<Self> {
        let source = match (&settings.keys, &settings.service_token) {
            (_, Some(token)) => TokenSource::Static(token.clone()),
            (KeySource::SharedSecret(_), None) => TokenSource::Mint {
                settings: settings.clone(),
                email: format!("{service}@services.mst.local"),
            },
            (KeySource::Oidc { .. }, None) => anyhow::bail!(
                "MST_SERVICE_TOKEN is required to call other services when tokens come from an OIDC issuer"
            ),
        };
        Ok(Self {
            inner: Arc::new(ServiceTokenInner {
                source,
                cached: std::sync::Mutex::new(None),
            }),
        })
    }

    fn current(&self) -> anyhow::Result<String> {
        match &self.inner.source {
            TokenSource::Static(token) => Ok(token.expose_secret().to_owned()),
            TokenSource::Mint { settings, email } => {
                let mut cached = self
                    .inner
                    .cached
                    .lock()
                    .map_err(|_| anyhow::anyhow!("service token cache poisoned"))?;
                if let Some((token, at)) = cached.as_ref()
                    && at.elapsed() < SERVICE_TOKEN_TTL / 2
                {
                    return Ok(token.clone());
                }
                let token = mint_for(settings, email, &[Role::System], SERVICE_TOKEN_TTL)?;
                *cached = Some((token.clone(), std::time::Instant::now()));
                Ok(token)
            }
        }
    }
}

impl tonic::service::Interceptor for ServiceToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = self.current().map_err(|e| {
            tracing::error!(error = %e, "cannot obtain a service token");
            Status::internal("service credentials unavailable")
        })?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("service token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
        // Service-to-service calls continue the caller's trace.
        crate::grpc::inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests;
