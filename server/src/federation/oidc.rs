//! An OpenID Connect upstream, with the openidconnect crate over reqwest (no redirects
//! followed, a short timeout: the provider's URLs come from configuration and discovery).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use tokio::sync::Mutex;

use super::Pending;

/// An HTTP failure, as openidconnect needs an error type.
#[derive(Debug)]
pub struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// The largest answer read from a provider (discovery, keys, tokens, UserInfo).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// reqwest as openidconnect's HTTP client. A type of our own rather than a closure: its
/// future is boxed as `Send`, which axum handlers need and closures cannot promise here.
pub struct HttpClient(pub reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(e.to_string()))?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            // Read at most MAX_RESPONSE_BYTES: a provider (or whoever answers in its place)
            // cannot make us buffer without bound.
            let mut response = response;
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| HttpError(e.to_string()))?
            {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError(format!(
                        "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            builder.body(bytes).map_err(|e| HttpError(e.to_string()))
        })
    }
}

/// The HTTP client and the discovered metadata (with the signing keys) of each provider, and
/// when it was fetched.
pub struct Oidc {
    /// The HTTP client (also the plain OAuth 2.0 providers').
    pub http: HttpClient,
    metadata: Mutex<HashMap<String, (CoreProviderMetadata, Instant)>>,
}

/// How long discovered metadata and keys are used before they are fetched again.
const METADATA_LIFETIME: Duration = Duration::from_secs(3600);
/// The youngest cached keys that a failed ID token check may throw away to fetch new ones (a
/// provider that rotated its keys), so that bad tokens cannot make us fetch on every request.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// What an upstream login established.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The subject (`sub`) at the provider.
    pub subject: String,
    /// ID token and UserInfo claims.
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// The settings of one OpenID Connect provider.
pub struct Provider<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its issuer.
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// Our client secret.
    pub client_secret: &'a str,
    /// Scopes besides `openid`.
    pub scopes: &'a [String],
    /// Our callback URL.
    pub redirect_uri: String,
    /// Ask the provider for a fresh sign-in (`prompt=login`): the application asked us for one.
    pub fresh: bool,
}

impl Oidc {
    /// A client that follows no redirects and gives up after 10 s.
    pub fn new() -> Result<Arc<Oidc>, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Arc::new(Oidc {
            http: HttpClient(http),
            metadata: Mutex::new(HashMap::new()),
        }))
    }

    /// The cache key: the provider's name and issuer, so a reload that points a name at
    /// another issuer does not serve the old one's keys.
    fn cache_key(provider: &Provider<'_>) -> String {
        format!("{}\u{1f}{}", provider.name, provider.issuer)
    }

    async fn metadata(&self, provider: &Provider<'_>) -> Result<CoreProviderMetadata, String> {
        if let Some((found, at)) = self.metadata.lock().await.get(&Oidc::cache_key(provider))
            && at.elapsed() < METADATA_LIFETIME
        {
            return Ok(found.clone());
        }
        let issuer = IssuerUrl::new(provider.issuer.to_string()).map_err(|e| e.to_string())?;
        let discovered = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| format!("discovery at {} failed: {e}", provider.issuer))?;
        self.metadata.lock().await.insert(
            Oidc::cache_key(provider),
            (discovered.clone(), Instant::now()),
        );
        Ok(discovered)
    }

    /// Forgets a provider's metadata if it is old enough to be refetched; returns whether it
    /// did.
    async fn forget_stale(&self, provider: &Provider<'_>) -> bool {
        let mut cache = self.metadata.lock().await;
        let key = Oidc::cache_key(provider);
        let stale = cache
            .get(&key)
            .is_some_and(|(_, at)| at.elapsed() >= REFETCH_AFTER);
        if stale {
            cache.remove(&key);
        }
        stale
    }

    /// The URL to send the browser to, its `state`, and what the callback must find.
    pub async fn begin(
        &self,
        provider: &Provider<'_>,
        login: &str,
        sealed_handle: String,
    ) -> Result<(String, String, Pending), String> {
        let metadata = self.metadata(provider).await?;
        let redirect =
            RedirectUrl::new(provider.redirect_uri.clone()).map_err(|e| e.to_string())?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.client_id.to_string()),
            Some(ClientSecret::new(provider.client_secret.to_string())),
        )
        .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in provider.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if provider.fresh {
            request = request.add_prompt(openidconnect::core::CoreAuthPrompt::Login);
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            idp: provider.name.to_string(),
            login: login.to_string(),
            sealed_handle,
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            saml_request: None,
            answer: None,
        };
        Ok((url.to_string(), state.secret().clone(), pending))
    }

    /// Redeems the code and validates what comes back.
    pub async fn finish(
        &self,
        provider: &Provider<'_>,
        pending: &Pending,
        code: &str,
    ) -> Result<Upstream, String> {
        let redirect =
            RedirectUrl::new(provider.redirect_uri.clone()).map_err(|e| e.to_string())?;
        let build = |metadata| {
            CoreClient::from_provider_metadata(
                metadata,
                ClientId::new(provider.client_id.to_string()),
                Some(ClientSecret::new(provider.client_secret.to_string())),
            )
            .set_redirect_uri(redirect.clone())
        };
        let mut client = build(self.metadata(provider).await?);
        let http = &self.http;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| e.to_string())?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(http)
            .await
            .map_err(|e| format!("the code was not redeemed: {e}"))?;
        let id_token = token
            .id_token()
            .ok_or("the provider returned no ID token")?;
        let nonce = Nonce::new(pending.nonce.clone());
        let mut checked = id_token
            .claims(&client.id_token_verifier(), &nonce)
            .map(|_| ());
        // A provider that rotated its keys signs with one we have not seen: fetch its
        // metadata and keys again (at most every 30 s) and check once more.
        if checked.is_err() && self.forget_stale(provider).await {
            client = build(self.metadata(provider).await?);
            checked = id_token
                .claims(&client.id_token_verifier(), &nonce)
                .map(|_| ());
        }
        checked.map_err(|e| format!("the ID token is not valid: {e}"))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &nonce)
            .map_err(|e| format!("the ID token is not valid: {e}"))?;
        if let Some(expected) = claims.access_token_hash() {
            let signing = id_token.signing_alg().map_err(|e| e.to_string())?;
            let key = id_token.signing_key(&verifier).map_err(|e| e.to_string())?;
            let actual = AccessTokenHash::from_token(token.access_token(), signing, key)
                .map_err(|e| e.to_string())?;
            if actual != *expected {
                return Err("the ID token's at_hash does not match the access token".into());
            }
        }
        let subject = claims.subject().to_string();
        let mut out: BTreeMap<String, serde_json::Value> = match serde_json::to_value(claims) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        // UserInfo, when the provider has one: its claims add to the ID token's, for the same
        // subject only.
        if let Ok(request) =
            client.user_info(token.access_token().clone(), Some(claims.subject().clone()))
        {
            match request.request_async::<openidconnect::EmptyAdditionalClaims, _, openidconnect::core::CoreGenderClaim>(http).await {
                Ok(info) => {
                    let info: CoreUserInfoClaims = info;
                    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(info) {
                        for (name, value) in map {
                            out.entry(name).or_insert(value);
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, idp = provider.name, "userinfo failed"),
            }
        }
        Ok(Upstream {
            subject,
            claims: out,
        })
    }
}
