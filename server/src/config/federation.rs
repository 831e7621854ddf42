//! The server side of `[identity_providers.<name>]`: how to reach each upstream identity
//! provider. (Flow checking reads only `verified_attributes`, in `names`.) An entry that lacks
//! what its kind needs is declared but not configured: flows may name it, and a login that
//! reaches it says the provider is not set up, so the quickstart can name providers it has no
//! credentials for.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One upstream identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The name flows use (`federated(NAME)`).
    pub name: String,
    /// What the login page's button says.
    pub label: String,
    /// How to reach it.
    pub kind: UpstreamKind,
}

/// A client secret: compared and cloned like a string, never printed (configuration is
/// logged with `{:?}` in places).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// How an upstream identity provider is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    /// OpenID Connect: discovery from the issuer, code flow with PKCE, nonce and state.
    Oidc {
        /// The issuer (discovery at `ISSUER/.well-known/openid-configuration`).
        issuer: String,
        /// Our client id there.
        client_id: String,
        /// Our client secret there.
        client_secret: Secret,
        /// Scopes to ask for (`openid` is always added).
        scopes: Vec<String>,
    },
    /// Plain OAuth 2.0 (no ID token): the code flow with PKCE, then a UserInfo URL.
    OAuth2 {
        /// The provider's issuer identifier, when it has one: an answer naming another issuer
        /// (RFC 9207 `iss`) is refused.
        issuer: Option<String>,
        /// The authorization endpoint.
        authorize_url: String,
        /// The token endpoint.
        token_url: String,
        /// The user's JSON, read with the access token.
        userinfo_url: String,
        /// Our client id there.
        client_id: String,
        /// Our client secret there.
        client_secret: Secret,
        /// Scopes to ask for.
        scopes: Vec<String>,
        /// The field of the user's JSON that identifies them.
        subject_claim: String,
        /// Claim name → field of the user's JSON (empty: every field).
        claims: BTreeMap<String, String>,
    },
    /// SAML 2.0: an AuthnRequest over HTTP-Redirect, the Response over HTTP-POST to our ACS.
    Saml {
        /// The IdP's entity id (the issuer of its assertions).
        entity_id: String,
        /// Its SSO endpoint for the HTTP-Redirect binding.
        sso_url: String,
        /// Its signing certificates (DER): a response that no one of them verifies is refused.
        certificates: Vec<Vec<u8>>,
    },
    /// Declared for flows but not usable on this server; says why.
    NotConfigured(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    r#type: String,
    #[serde(default)]
    verified_attributes: Vec<String>,
    display_name: Option<String>,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    scopes: Option<Vec<String>>,
    metadata_file: Option<std::path::PathBuf>,
    entity_id: Option<String>,
    sso_url: Option<String>,
    certificate_file: Option<std::path::PathBuf>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    userinfo_url: Option<String>,
    subject_claim: Option<String>,
    claims: Option<BTreeMap<String, String>>,
}

/// Reads the `[identity_providers]` tables.
/// File paths are read through `resolve` (relative to the configuration file).
pub fn parse(
    tables: &toml::Table,
    resolve: &dyn Fn(std::path::PathBuf) -> std::path::PathBuf,
) -> Result<BTreeMap<String, Upstream>, String> {
    let mut out = BTreeMap::new();
    for (name, value) in tables {
        let section: Section = value
            .clone()
            .try_into()
            .map_err(|e| format!("identity_providers.{name}: {e}"))?;
        let _ = &section.verified_attributes;
        let kind = match section.r#type.as_str() {
            "oidc" => oidc(name, &section)?,
            "saml" => saml(name, &section, resolve)?,
            "oauth2" => oauth2(name, &section)?,
            other => {
                return Err(format!(
                    "identity_providers.{name}.type: `{other}` is not one of oidc, oauth2, saml"
                ));
            }
        };
        out.insert(
            name.clone(),
            Upstream {
                name: name.clone(),
                label: section.display_name.clone().unwrap_or_else(|| name.clone()),
                kind,
            },
        );
    }
    Ok(out)
}

fn saml(
    name: &str,
    section: &Section,
    resolve: &dyn Fn(std::path::PathBuf) -> std::path::PathBuf,
) -> Result<UpstreamKind, String> {
    let key = |field: &str| format!("identity_providers.{name}.{field}");
    let explicit = [
        section.entity_id.is_some(),
        section.sso_url.is_some(),
        section.certificate_file.is_some(),
    ];
    if section.metadata_file.is_some() && explicit.iter().any(|given| *given) {
        return Err(format!(
            "identity_providers.{name}: give metadata_file, or entity_id, sso_url and certificate_file, not both"
        ));
    }
    if explicit.iter().any(|given| *given) && !explicit.iter().all(|given| *given) {
        return Err(format!(
            "identity_providers.{name}: entity_id, sso_url and certificate_file go together"
        ));
    }
    if let Some(path) = &section.metadata_file {
        let path = resolve(path.clone());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {}: {e}", key("metadata_file"), path.display()))?;
        let metadata = idflow_saml::metadata::parse_idp(&text)
            .map_err(|e| format!("{}: {e}", key("metadata_file")))?;
        endpoint(
            name,
            "metadata_file (its SingleSignOnService)",
            &metadata.sso_redirect,
        )?;
        return Ok(UpstreamKind::Saml {
            entity_id: metadata.entity_id,
            sso_url: metadata.sso_redirect,
            certificates: metadata.certificates,
        });
    }
    let (Some(entity_id), Some(sso_url), Some(certificate)) = (
        &section.entity_id,
        &section.sso_url,
        &section.certificate_file,
    ) else {
        return Ok(UpstreamKind::NotConfigured(
            "it has neither metadata_file nor entity_id, sso_url and certificate_file in idflow.toml"
                .into(),
        ));
    };
    let path = resolve(certificate.clone());
    let pem = std::fs::read(&path)
        .map_err(|e| format!("{}: {}: {e}", key("certificate_file"), path.display()))?;
    let der = openssl::x509::X509::from_pem(&pem)
        .and_then(|c| c.to_der())
        .map_err(|e| format!("{}: {e}", key("certificate_file")))?;
    endpoint(name, "sso_url", sso_url)?;
    Ok(UpstreamKind::Saml {
        entity_id: entity_id.clone(),
        sso_url: sso_url.clone(),
        certificates: vec![der],
    })
}

/// An endpoint of a provider: https, or http on loopback (development and tests).
fn endpoint(name: &str, field: &str, value: &str) -> Result<(), String> {
    let url =
        url::Url::parse(value).map_err(|e| format!("identity_providers.{name}.{field}: {e}"))?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() != "https" && !loopback {
        return Err(format!(
            "identity_providers.{name}.{field}: `{value}` must be https (http only on loopback)"
        ));
    }
    Ok(())
}

fn client_secret(name: &str, section: &Section) -> Result<String, String> {
    match (&section.client_secret, &section.client_secret_env) {
        (Some(secret), None) => Ok(secret.clone()),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            format!("identity_providers.{name}.client_secret_env: `{var}` is not set")
        }),
        _ => Err(format!(
            "identity_providers.{name}: give exactly one of client_secret, client_secret_env"
        )),
    }
}

fn oauth2(name: &str, section: &Section) -> Result<UpstreamKind, String> {
    let (Some(authorize_url), Some(token_url), Some(userinfo_url), Some(client_id)) = (
        &section.authorize_url,
        &section.token_url,
        &section.userinfo_url,
        &section.client_id,
    ) else {
        return Ok(UpstreamKind::NotConfigured(
            "it lacks authorize_url, token_url, userinfo_url or client_id in idflow.toml".into(),
        ));
    };
    for (field, value) in [
        ("authorize_url", authorize_url),
        ("token_url", token_url),
        ("userinfo_url", userinfo_url),
    ] {
        endpoint(name, field, value)?;
    }
    Ok(UpstreamKind::OAuth2 {
        issuer: section.issuer.clone(),
        authorize_url: authorize_url.clone(),
        token_url: token_url.clone(),
        userinfo_url: userinfo_url.clone(),
        client_id: client_id.clone(),
        client_secret: Secret(client_secret(name, section)?),
        scopes: section.scopes.clone().unwrap_or_default(),
        subject_claim: section.subject_claim.clone().unwrap_or_else(|| "id".into()),
        claims: section.claims.clone().unwrap_or_default(),
    })
}

fn oidc(name: &str, section: &Section) -> Result<UpstreamKind, String> {
    let (Some(issuer), Some(client_id)) = (&section.issuer, &section.client_id) else {
        return Ok(UpstreamKind::NotConfigured(
            "it has no issuer and client_id in idflow.toml".into(),
        ));
    };
    let secret = client_secret(name, section)?;
    // Everything else (endpoints, keys) comes from the issuer's discovery document: over plain
    // http anyone on the path could replace it.
    endpoint(name, "issuer", issuer)?;
    Ok(UpstreamKind::Oidc {
        // Exactly as configured: issuers compare as strings, trailing slash included.
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: Secret(secret),
        scopes: section
            .scopes
            .clone()
            .unwrap_or_else(|| vec!["email".into(), "profile".into()]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_configured_and_declared_only_providers_and_refuses_typos() {
        let tables: toml::Table = toml::from_str(
            "[up]\ntype = \"oidc\"\nissuer = \"http://localhost:9000\"\nclient_id = \"down\"\nclient_secret = \"s3cret-s3cret-s3cret\"\nverified_attributes = [\"email\"]\n[google]\ntype = \"oidc\"\n[acme]\ntype = \"saml\"\n",
        )
        .expect("toml");
        let parsed = parse(&tables, &|p| p).expect("parses");
        assert!(
            matches!(&parsed["up"].kind, UpstreamKind::Oidc { issuer, .. } if issuer == "http://localhost:9000")
        );
        assert!(matches!(
            parsed["google"].kind,
            UpstreamKind::NotConfigured(_)
        ));
        assert!(
            !format!("{:?}", parsed["up"]).contains("s3cret"),
            "secrets are not printed"
        );
        assert!(matches!(
            parsed["acme"].kind,
            UpstreamKind::NotConfigured(_)
        ));
        let typo: toml::Table =
            toml::from_str("[up]\ntype = \"oidc\"\nissuer_url = \"x\"\n").expect("toml");
        assert!(parse(&typo, &|p| p).unwrap_err().contains("issuer_url"));
        let kind: toml::Table = toml::from_str("[up]\ntype = \"ldap\"\n").expect("toml");
        assert!(parse(&kind, &|p| p).unwrap_err().contains("ldap"));
        let plain: toml::Table = toml::from_str(
            "[up]\ntype = \"oidc\"\nissuer = \"http://id.example.com/\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
        )
        .expect("toml");
        assert!(parse(&plain, &|p| p).unwrap_err().contains("https"));
    }
}
