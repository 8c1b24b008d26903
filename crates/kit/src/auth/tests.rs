//! Token verification: every way a token can be wrong is refused.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAvxgH8jykoIsCNhKCtMe/es9fIow3Ex49Kmwjyv/63o\n-----END PRIVATE KEY-----\n";
const ED25519_X: &str = "a5neGvwU2LE41LrpU4lngnj2cg_MM214U2zfH49ZYSI";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(iss: &str, aud: &str, exp: u64, nbf: Option<u64>) -> Claims {
    Claims {
        sub: "Marie.Dupont@example.org".into(),
        roles: vec!["promoteur".into(), "sorcier".into()],
        name: Some("Marie Dupont".into()),
        iss: iss.into(),
        aud: aud.into(),
        exp,
        nbf,
        iat: now(),
    }
}

fn hs(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn local() -> Authenticator {
    Authenticator::new(AuthSettings::embedded()).await.unwrap()
}

#[tokio::test]
async fn a_minted_token_yields_its_subject_and_known_roles() {
    let auth = local().await;
    let token = mint_dev(
        "Marie.Dupont@example.org",
        &[Role::Promoteur, Role::Admin],
        Duration::from_secs(60),
    )
    .unwrap();
    let p = auth.verify(&token).unwrap();
    assert_eq!(p.email, "marie.dupont@example.org");
    assert!(p.has(Role::Promoteur) && p.has(Role::Admin) && !p.has(Role::Instructeur));
}

#[tokio::test]
async fn unknown_roles_are_ignored() {
    let auth = local().await;
    let token = hs(
        &claims(DEFAULT_ISSUER, DEFAULT_AUDIENCE, now() + 60, None),
        DEV_JWT_SECRET,
    );
    let p = auth.verify(&token).unwrap();
    assert_eq!(
        p.roles.iter().copied().collect::<Vec<_>>(),
        [Role::Promoteur]
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let auth = local().await;
    let token = hs(
        &claims(DEFAULT_ISSUER, DEFAULT_AUDIENCE, now() - 120, None),
        DEV_JWT_SECRET,
    );
    assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))));
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let auth = local().await;
    let token = hs(
        &claims(
            DEFAULT_ISSUER,
            DEFAULT_AUDIENCE,
            now() + 3600,
            Some(now() + 600),
        ),
        DEV_JWT_SECRET,
    );
    assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))));
}

#[tokio::test]
async fn a_wrong_issuer_or_audience_is_refused() {
    let auth = local().await;
    for (iss, aud) in [
        ("someone-else", DEFAULT_AUDIENCE),
        (DEFAULT_ISSUER, "another-app"),
    ] {
        let token = hs(&claims(iss, aud, now() + 60, None), DEV_JWT_SECRET);
        assert!(
            matches!(auth.verify(&token), Err(AuthError::Invalid(_))),
            "{iss} {aud}"
        );
    }
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused() {
    let auth = local().await;
    let token = hs(
        &claims(DEFAULT_ISSUER, DEFAULT_AUDIENCE, now() + 60, None),
        "another-secret-of-at-least-32-characters!",
    );
    assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let auth = local().await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64.encode(
        serde_json::to_vec(&claims(DEFAULT_ISSUER, DEFAULT_AUDIENCE, now() + 60, None)).unwrap(),
    );
    for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
        assert!(auth.verify(&token).is_err());
    }
}

#[tokio::test]
async fn tampered_claims_are_refused() {
    let auth = local().await;
    let token = mint_dev("a@example.org", &[Role::Promoteur], Duration::from_secs(60)).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut body: serde_json::Value =
        serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    body["roles"] = serde_json::json!(["admin"]);
    parts[1] = b64.encode(serde_json::to_vec(&body).unwrap());
    assert!(matches!(
        auth.verify(&parts.join(".")),
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn the_interceptor_refuses_missing_and_malformed_headers_as_unauthenticated() {
    use tonic::service::Interceptor as _;
    let auth = local().await;
    let mut strict = auth.interceptor();
    let err = strict.call(Request::new(())).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = Request::new(());
    req.metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(
        strict.call(req).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    let mut public = auth.optional_interceptor();
    let req = public.call(Request::new(())).unwrap();
    assert!(principal(&req).is_err());
    let mut req = Request::new(());
    req.metadata_mut()
        .insert("authorization", "Bearer not-a-jwt".parse().unwrap());
    assert_eq!(
        public.call(req).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    let token = mint_dev(
        "a@example.org",
        &[Role::Instructeur],
        Duration::from_secs(60),
    )
    .unwrap();
    let mut req = Request::new(());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let req = strict.call(req).unwrap();
    assert_eq!(principal(&req).unwrap().email, "a@example.org");
}

#[test]
fn a_short_configured_secret_is_a_configuration_error() {
    let mut env = Env::from_map([("MST_AUTH_JWT_SECRET", "short")]);
    let _ = AuthSettings::from_env(&mut env);
    assert_eq!(env.finish().unwrap_err().0[0].var, "MST_AUTH_JWT_SECRET");
}

/// A minimal OpenID Connect issuer: discovery document and JWKS over HTTP/1.1.
async fn oidc_issuer(jwks: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let jwks = jwks.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let body = if req.starts_with("GET /.well-known/openid-configuration") {
                    format!(r#"{{"issuer":"{base}","jwks_uri":"{base}/jwks"}}"#)
                } else {
                    jwks.lock().unwrap().clone()
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    issuer
}

fn ed_token(issuer: &str, kid: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims(issuer, DEFAULT_AUDIENCE, now() + 60, None),
        &EncodingKey::from_ed_pem(ED25519_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn jwks_with(kid: &str) -> String {
    format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED25519_X}","kid":"{kid}","use":"sig","alg":"EdDSA"}}]}}"#
    )
}

#[tokio::test]
async fn oidc_tokens_are_verified_with_the_issuers_published_keys_and_rotation_is_picked_up() {
    let jwks = std::sync::Arc::new(std::sync::Mutex::new(jwks_with("k1")));
    let issuer = oidc_issuer(jwks.clone()).await;
    let mut env = Env::from_map([("MST_AUTH_OIDC_ISSUER_URL", issuer.as_str())]);
    let settings = AuthSettings::from_env(&mut env);
    env.finish().unwrap();
    let auth = Authenticator::new(settings).await.unwrap();

    assert_eq!(
        auth.verify(&ed_token(&issuer, "k1")).unwrap().email,
        "marie.dupont@example.org"
    );
    // An HS256 token signed with the public "secret" the attacker guesses is refused.
    assert!(
        auth.verify(&hs(
            &claims(&issuer, DEFAULT_AUDIENCE, now() + 60, None),
            ED25519_X
        ))
        .is_err()
    );
    // Wrong issuer.
    assert!(
        auth.verify(&ed_token("https://evil.example", "k1"))
            .is_err()
    );

    // The issuer rotates to kid k2: unknown at first, accepted after the refresh.
    *jwks.lock().unwrap() = jwks_with("k2");
    assert!(matches!(
        auth.verify(&ed_token(&issuer, "k2")),
        Err(AuthError::UnknownKey(_))
    ));
    auth.refresh_keys().await.unwrap();
    assert!(auth.verify(&ed_token(&issuer, "k2")).is_ok());
    assert!(auth.verify(&ed_token(&issuer, "k1")).is_err());
}

#[tokio::test]
async fn a_service_token_is_accepted_with_the_system_role() {
    use tonic::service::Interceptor as _;
    let settings = AuthSettings::embedded();
    let mut token = ServiceToken::for_service(&settings, "forms").unwrap();
    let req = token.call(Request::new(())).unwrap();
    let auth = local().await;
    let p = auth.authenticate(&req).unwrap();
    assert_eq!(p.email, "forms@services.mst.local");
    assert!(p.has(Role::System) && !p.has(Role::Admin));
}

#[test]
fn oidc_mode_needs_a_configured_service_token() {
    let mut env = Env::from_map([("MST_AUTH_OIDC_ISSUER_URL", "https://idp.example")]);
    let settings = AuthSettings::from_env(&mut env);
    assert!(ServiceToken::for_service(&settings, "forms").is_err());
    let mut env = Env::from_map([
        ("MST_AUTH_OIDC_ISSUER_URL", "https://idp.example"),
        ("MST_SERVICE_TOKEN", "abc.def.ghi"),
    ]);
    let settings = AuthSettings::from_env(&mut env);
    assert!(ServiceToken::for_service(&settings, "forms").is_ok());
}
