//! A plain OAuth 2.0 upstream (GitHub-style: no ID token): the code flow with PKCE and
//! `state` over the oauth2 crate, then the user's JSON from a configured UserInfo URL, its
//! subject from a configured field and its claims through a configured mapping.

use std::collections::BTreeMap;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};

use super::Pending;
use super::oidc::{HttpClient, Upstream};

/// The largest UserInfo answer read.
const MAX_USERINFO_BYTES: usize = 256 * 1024;

/// The settings of one OAuth 2.0 provider.
pub struct OAuth2Provider<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its authorization endpoint.
    pub authorize_url: &'a str,
    /// Its token endpoint.
    pub token_url: &'a str,
    /// Where the user's JSON comes from, with the access token.
    pub userinfo_url: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// Our client secret.
    pub client_secret: &'a str,
    /// Scopes to ask for.
    pub scopes: &'a [String],
    /// The field of the user's JSON that identifies them (a string or a number).
    pub subject_claim: &'a str,
    /// Claim name → field of the user's JSON; empty copies every top-level field.
    pub claims: &'a BTreeMap<String, String>,
    /// Our callback URL.
    pub redirect_uri: String,
    /// Ask the provider for a fresh sign-in (`prompt=login`, which many OAuth 2.0 providers
    /// honour): the application asked us for one.
    pub fresh: bool,
}

fn client(
    provider: &OAuth2Provider<'_>,
) -> Result<
    BasicClient<
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    >,
    String,
> {
    Ok(
        BasicClient::new(ClientId::new(provider.client_id.to_string()))
            .set_client_secret(ClientSecret::new(provider.client_secret.to_string()))
            .set_auth_uri(
                AuthUrl::new(provider.authorize_url.to_string()).map_err(|e| e.to_string())?,
            )
            .set_token_uri(
                TokenUrl::new(provider.token_url.to_string()).map_err(|e| e.to_string())?,
            )
            .set_redirect_uri(
                RedirectUrl::new(provider.redirect_uri.clone()).map_err(|e| e.to_string())?,
            ),
    )
}

/// The URL to send the browser to, its `state`, and what the callback must find.
pub fn begin(
    provider: &OAuth2Provider<'_>,
    login: &str,
    sealed_handle: String,
) -> Result<(String, String, Pending), String> {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let client = client(provider)?;
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for scope in provider.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    if provider.fresh {
        request = request.add_extra_param("prompt", "login");
    }
    let (url, state) = request.url();
    let pending = Pending {
        idp: provider.name.to_string(),
        login: login.to_string(),
        sealed_handle,
        nonce: String::new(),
        verifier: verifier.secret().clone(),
        saml_request: None,
        answer: None,
    };
    Ok((url.to_string(), state.secret().clone(), pending))
}

/// Redeems the code, reads the user's JSON and maps it.
pub async fn finish(
    http: &HttpClient,
    provider: &OAuth2Provider<'_>,
    pending: &Pending,
    code: &str,
) -> Result<Upstream, String> {
    let token = client(provider)?
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request_async(http)
        .await
        .map_err(|e| format!("the code was not redeemed: {e}"))?;
    let response = http
        .0
        .get(provider.userinfo_url)
        .bearer_auth(token.access_token().secret())
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::USER_AGENT, "idflow")
        .send()
        .await
        .map_err(|e| format!("the user's details could not be fetched: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "the user's details were refused: HTTP {}",
            response.status()
        ));
    }
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the user's details could not be read: {e}"))?
    {
        if bytes.len() + chunk.len() > MAX_USERINFO_BYTES {
            return Err("the user's details are too large".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    let user: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the user's details are not a JSON object: {e}"))?;
    map_user(provider, user)
}

/// The subject and claims of the user's JSON.
fn map_user(
    provider: &OAuth2Provider<'_>,
    user: serde_json::Map<String, serde_json::Value>,
) -> Result<Upstream, String> {
    let subject = match user.get(provider.subject_claim) {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => {
            return Err(format!(
                "the user's details have no `{}` to identify them",
                provider.subject_claim
            ));
        }
    };
    let claims = if provider.claims.is_empty() {
        user.into_iter().collect()
    } else {
        provider
            .claims
            .iter()
            .filter_map(|(claim, field)| user.get(field).map(|v| (claim.clone(), v.clone())))
            .collect()
    };
    Ok(Upstream { subject, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider<'a>(claims: &'a BTreeMap<String, String>) -> OAuth2Provider<'a> {
        OAuth2Provider {
            name: "github",
            authorize_url: "https://github.test/login/oauth/authorize",
            token_url: "https://github.test/login/oauth/access_token",
            userinfo_url: "https://api.github.test/user",
            client_id: "c",
            client_secret: "s",
            scopes: &[],
            subject_claim: "id",
            claims,
            redirect_uri: "https://idflow.test/federation/callback".into(),
            fresh: false,
        }
    }

    #[test]
    fn a_numeric_id_is_the_subject_and_the_mapping_renames_fields() {
        let claims = BTreeMap::from([
            ("preferred_username".to_string(), "login".to_string()),
            ("email".to_string(), "email".to_string()),
        ]);
        let user = serde_json::json!({ "id": 583231, "login": "octocat", "email": "o@github.test", "site_admin": true });
        let mapped = map_user(
            &provider(&claims),
            user.as_object().expect("object").clone(),
        )
        .expect("maps");
        assert_eq!(mapped.subject, "583231");
        assert_eq!(mapped.claims["preferred_username"], "octocat");
        assert!(
            !mapped.claims.contains_key("site_admin"),
            "only mapped fields"
        );
        let none = serde_json::json!({ "login": "octocat" });
        assert!(
            map_user(
                &provider(&claims),
                none.as_object().expect("object").clone()
            )
            .is_err()
        );
    }

    #[test]
    fn the_authorization_url_carries_pkce_and_state() {
        let claims = BTreeMap::new();
        let (url, state, pending) =
            begin(&provider(&claims), "login-key", "sealed".into()).expect("url");
        assert!(
            url.starts_with("https://github.test/login/oauth/authorize?"),
            "{url}"
        );
        assert!(
            url.contains("code_challenge_method=S256") && url.contains(&format!("state={state}")),
            "{url}"
        );
        assert!(!pending.verifier.is_empty() && pending.nonce.is_empty());
    }
}
