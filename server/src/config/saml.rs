//! `[saml]` (idflow's own SAML credential and time limits) and `[service_providers.<name>]`
//! (the SAML applications idflow signs users in to). A service provider's name is an
//! application name: flows list it in `applies_to` like an OAuth client's id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use idflow_saml::idp::Signing;
use idflow_saml::uri;
use serde::Deserialize;

/// `[saml]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlSection {
    key_file: Option<PathBuf>,
    certificate_file: Option<PathBuf>,
    assertion_seconds: Option<u64>,
    skew_seconds: Option<u64>,
}

/// idflow's settings as a SAML party (both as IdP and as SP of upstream IdPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlSettings {
    /// The RSA signing key, PEM (created with the certificate when neither exists).
    pub key_file: PathBuf,
    /// Its self-signed certificate, PEM, published in metadata.
    pub certificate_file: PathBuf,
    /// How long an assertion we issue may be used (NotOnOrAfter − IssueInstant).
    pub assertion_seconds: u64,
    /// Clock difference allowed on assertions we receive and requests we read.
    pub skew_seconds: u64,
}

impl SamlSection {
    /// The settings, with files relative to `data_dir` unless `resolve` (relative to the
    /// configuration file) placed them elsewhere.
    pub fn settings(
        self,
        data_dir: &Path,
        resolve: &dyn Fn(PathBuf) -> PathBuf,
    ) -> Result<SamlSettings, String> {
        let assertion_seconds = self.assertion_seconds.unwrap_or(300);
        let skew_seconds = self.skew_seconds.unwrap_or(60);
        if !(10..=3600).contains(&assertion_seconds) {
            return Err(format!(
                "saml.assertion_seconds: {assertion_seconds} is outside 10..=3600"
            ));
        }
        if skew_seconds > 600 {
            return Err(format!(
                "saml.skew_seconds: {skew_seconds} is more than 600"
            ));
        }
        Ok(SamlSettings {
            key_file: self
                .key_file
                .map_or_else(|| data_dir.join("saml-signing.key"), resolve),
            certificate_file: self
                .certificate_file
                .map_or_else(|| data_dir.join("saml-signing.crt"), resolve),
            assertion_seconds,
            skew_seconds,
        })
    }
}

/// One SAML service provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProvider {
    /// The application name (flows' `applies_to`).
    pub name: String,
    /// What the login page calls it.
    pub display_name: String,
    /// Its entity id: the audience, and the issuer of its requests.
    pub entity_id: String,
    /// Its assertion consumer service URLs (HTTP-POST); the first is the default. A request
    /// naming any other URL is refused.
    pub acs_urls: Vec<String>,
    /// The metadata's `index` of each ACS URL, when they came from metadata (a request may name
    /// its ACS by index); otherwise an index is a position in `acs_urls`.
    pub acs_indexes: BTreeMap<usize, String>,
    /// Certificates (DER) its signed requests verify with.
    pub certificates: Vec<Vec<u8>>,
    /// Whether its requests must be signed (then an unsigned one is refused).
    pub requests_signed: bool,
    /// The NameID format it gets unless its request asks for another we offer.
    pub name_id_format: String,
    /// SAML attribute name → what it carries (`email`, `name`, `username`, `roles`,
    /// `claims.X`, `attributes.X`).
    pub attributes: BTreeMap<String, String>,
    /// What gets signed.
    pub signing: Signing,
    /// Its Single Logout endpoint (HTTP-Redirect), when it has one.
    pub slo_url: Option<String>,
    /// Where its LogoutResponses go, when not to `slo_url` (metadata's `ResponseLocation`).
    pub slo_response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpSection {
    name: Option<String>,
    entity_id: Option<String>,
    #[serde(default)]
    acs_urls: Vec<String>,
    metadata_file: Option<PathBuf>,
    metadata: Option<String>,
    certificate_file: Option<PathBuf>,
    require_signed_requests: Option<bool>,
    name_id_format: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
    sign_response: Option<bool>,
    sign_assertion: Option<bool>,
    slo_url: Option<String>,
}

/// The NameID formats idflow can answer with, by their short names and URIs.
fn name_id_format(value: &str) -> Option<&'static str> {
    match value {
        "persistent" | uri::PERSISTENT => Some(uri::PERSISTENT),
        "transient" | uri::TRANSIENT => Some(uri::TRANSIENT),
        "email" | "emailAddress" | uri::EMAIL => Some(uri::EMAIL),
        "unspecified" | uri::UNSPECIFIED => Some(uri::UNSPECIFIED),
        _ => None,
    }
}

/// Whether idflow answers with NameID `format` (a URI).
pub fn offers_name_id_format(format: &str) -> bool {
    name_id_format(format).is_some()
}

/// What an attribute mapping may read.
fn valid_source(source: &str) -> bool {
    matches!(source, "email" | "name" | "username" | "roles")
        || source
            .strip_prefix("claims.")
            .is_some_and(|s| !s.is_empty())
        || source
            .strip_prefix("attributes.")
            .is_some_and(|s| !s.is_empty())
}

/// Reads the `[service_providers]` tables; file paths through `resolve`.
pub fn parse_service_providers(
    tables: &toml::Table,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<BTreeMap<String, ServiceProvider>, String> {
    let mut out = BTreeMap::new();
    let mut entity_ids = BTreeMap::new();
    for (name, value) in tables {
        let key = |field: &str| format!("service_providers.{name}.{field}");
        let section: SpSection = value
            .clone()
            .try_into()
            .map_err(|e| format!("service_providers.{name}: {e}"))?;
        // The SP's metadata, from a file or inline (a TOML multi-line string).
        let metadata = match (&section.metadata_file, &section.metadata) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "service_providers.{name}: give metadata_file or metadata, not both"
                ));
            }
            (Some(path), None) => {
                let path = resolve(path.clone());
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {}: {e}", key("metadata_file"), path.display()))?;
                Some(
                    idflow_saml::metadata::parse_sp(&text)
                        .map_err(|e| format!("{}: {e}", key("metadata_file")))?,
                )
            }
            (None, Some(text)) => Some(
                idflow_saml::metadata::parse_sp(text)
                    .map_err(|e| format!("{}: {e}", key("metadata")))?,
            ),
            (None, None) => None,
        };
        let entity_id = match (&section.entity_id, &metadata) {
            (Some(id), _) => id.clone(),
            (None, Some(metadata)) => metadata.entity_id.clone(),
            (None, None) => {
                return Err(format!(
                    "{}: give entity_id, metadata_file or metadata",
                    key("entity_id")
                ));
            }
        };
        let mut acs_urls = section.acs_urls.clone();
        let mut acs_indexes = BTreeMap::new();
        if acs_urls.is_empty()
            && let Some(metadata) = &metadata
        {
            acs_indexes = metadata
                .acs
                .iter()
                .filter(|e| e.binding == uri::POST)
                .filter_map(|e| e.index.map(|i| (i, e.location.clone())))
                .collect();
            let mut posts: Vec<_> = metadata
                .acs
                .iter()
                .filter(|e| e.binding == uri::POST)
                .collect();
            posts.sort_by_key(|e| (!e.is_default, e.index));
            acs_urls = posts.into_iter().map(|e| e.location.clone()).collect();
        }
        if acs_urls.is_empty() {
            return Err(format!(
                "{}: no HTTP-POST assertion consumer service",
                key("acs_urls")
            ));
        }
        for url in &acs_urls {
            let parsed =
                url::Url::parse(url).map_err(|e| format!("{}: `{url}`: {e}", key("acs_urls")))?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.fragment().is_some() {
                return Err(format!(
                    "{}: `{url}` must be an http(s) URL without a fragment",
                    key("acs_urls")
                ));
            }
        }
        let mut certificates = metadata
            .as_ref()
            .map(|m| m.certificates.clone())
            .unwrap_or_default();
        if let Some(path) = &section.certificate_file {
            let path = resolve(path.clone());
            let pem = std::fs::read(&path)
                .map_err(|e| format!("{}: {}: {e}", key("certificate_file"), path.display()))?;
            let certificate = openssl::x509::X509::from_pem(&pem)
                .and_then(|c| c.to_der())
                .map_err(|e| format!("{}: {e}", key("certificate_file")))?;
            certificates.push(certificate);
        }
        let requests_signed = section
            .require_signed_requests
            .unwrap_or_else(|| metadata.as_ref().is_some_and(|m| m.signs_requests));
        if requests_signed && certificates.is_empty() {
            return Err(format!(
                "{}: signed requests need the SP's certificate (certificate_file or metadata_file)",
                key("require_signed_requests")
            ));
        }
        let format = section.name_id_format.as_deref().unwrap_or("persistent");
        let Some(format) = name_id_format(format) else {
            return Err(format!(
                "{}: `{format}` is not one of persistent, transient, email, unspecified",
                key("name_id_format")
            ));
        };
        let attributes = section.attributes.clone().unwrap_or_else(|| {
            [
                ("email", "email"),
                ("name", "name"),
                ("username", "username"),
                ("roles", "roles"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
        });
        if let Some((attribute, source)) = attributes.iter().find(|(_, s)| !valid_source(s)) {
            return Err(format!(
                "{}: `{source}` is not email, name, username, roles, claims.NAME or attributes.NAME",
                key(&format!("attributes.{attribute}"))
            ));
        }
        if let Some(url) = &section.slo_url {
            let parsed =
                url::Url::parse(url).map_err(|e| format!("{}: `{url}`: {e}", key("slo_url")))?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.fragment().is_some() {
                return Err(format!(
                    "{}: `{url}` must be an http(s) URL without a fragment",
                    key("slo_url")
                ));
            }
        }
        let metadata_slo = metadata
            .as_ref()
            .and_then(|m| m.slo.iter().find(|e| e.binding == uri::REDIRECT));
        let signing = Signing {
            assertion: section.sign_assertion.unwrap_or(true),
            response: section.sign_response.unwrap_or(true),
        };
        if !signing.assertion && !signing.response {
            return Err(format!(
                "{}: the response or the assertion must be signed",
                key("sign_assertion")
            ));
        }
        if let Some(other) = entity_ids.insert(entity_id.clone(), name.clone()) {
            return Err(format!(
                "{}: `{entity_id}` is also service provider `{other}`'s",
                key("entity_id")
            ));
        }
        out.insert(
            name.clone(),
            ServiceProvider {
                name: name.clone(),
                display_name: section.name.clone().unwrap_or_else(|| name.clone()),
                entity_id,
                acs_urls,
                acs_indexes,
                certificates,
                requests_signed,
                name_id_format: format.to_string(),
                attributes,
                signing,
                slo_url: section
                    .slo_url
                    .clone()
                    .or_else(|| metadata_slo.map(|e| e.location.clone())),
                slo_response_url: section
                    .slo_url
                    .is_none()
                    .then(|| metadata_slo.and_then(|e| e.response_location.clone()))
                    .flatten(),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<String, ServiceProvider>, String> {
        let tables: toml::Table = toml::from_str(text).expect("toml");
        parse_service_providers(&tables, &|p| p)
    }

    #[test]
    fn a_service_provider_needs_an_entity_id_and_an_acs_and_gets_safe_defaults() {
        let parsed = parse("[wiki]\nentity_id = \"https://wiki.test/sp\"\nacs_urls = [\"https://wiki.test/acs\"]\n")
            .expect("parses");
        let wiki = &parsed["wiki"];
        assert_eq!(wiki.name_id_format, uri::PERSISTENT);
        assert!(wiki.signing.assertion && wiki.signing.response);
        assert!(!wiki.requests_signed);
        assert_eq!(wiki.attributes["email"], "email");
        assert!(
            parse("[wiki]\nentity_id = \"x\"\n")
                .expect_err("no acs")
                .contains("acs_urls")
        );
        assert!(
            parse("[wiki]\nacs_urls = [\"https://w/acs\"]\n")
                .expect_err("no id")
                .contains("entity_id")
        );
    }

    #[test]
    fn inline_metadata_gives_the_entity_acs_by_index_certificate_and_logout_addresses() {
        let credential = idflow_saml::Credential::generate("sp.test").expect("key");
        let metadata = format!(
            concat!(
                r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.test/meta">"#,
                r#"<md:SPSSODescriptor AuthnRequestsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
                r#"<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data>"#,
                r#"<ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
                r#"<md:SingleLogoutService Binding="{}" Location="https://sp.test/slo" ResponseLocation="https://sp.test/slo-back"/>"#,
                r#"<md:AssertionConsumerService Binding="{}" Location="https://sp.test/acs-7" index="7"/>"#,
                r#"<md:AssertionConsumerService Binding="{}" Location="https://sp.test/acs-2" index="2" isDefault="true"/>"#,
                r#"</md:SPSSODescriptor></md:EntityDescriptor>"#
            ),
            credential.certificate_base64(),
            uri::REDIRECT,
            uri::POST,
            uri::POST
        );
        let text = format!("[sp]\nmetadata = '''{metadata}'''\n");
        let parsed = parse(&text).expect("parses");
        let sp = &parsed["sp"];
        assert_eq!(sp.entity_id, "https://sp.test/meta");
        assert_eq!(sp.acs_urls[0], "https://sp.test/acs-2", "the default first");
        assert_eq!(sp.acs_indexes[&7], "https://sp.test/acs-7");
        assert!(sp.requests_signed && sp.certificates.len() == 1);
        assert_eq!(sp.slo_url.as_deref(), Some("https://sp.test/slo"));
        assert_eq!(
            sp.slo_response_url.as_deref(),
            Some("https://sp.test/slo-back")
        );
        let both = format!("{text}metadata_file = \"x.xml\"\n");
        assert!(parse(&both).expect_err("both").contains("not both"));
    }

    #[test]
    fn refuses_what_would_be_unsafe_or_a_typo() {
        let base = "[wiki]\nentity_id = \"https://wiki.test/sp\"\nacs_urls = [\"https://wiki.test/acs\"]\n";
        for (extra, complaint) in [
            ("require_signed_requests = true\n", "certificate"),
            (
                "sign_response = false\nsign_assertion = false\n",
                "must be signed",
            ),
            ("name_id_format = \"kerberos\"\n", "name_id_format"),
            (
                "attributes = { mail = \"password_hash\" }\n",
                "attributes.mail",
            ),
            ("acs_url = \"typo\"\n", "unknown field"),
        ] {
            let error = parse(&format!("{base}{extra}")).expect_err(extra);
            assert!(error.contains(complaint), "{extra}: {error}");
        }
        assert!(parse("[a]\nentity_id = \"x\"\nacs_urls = [\"javascript:alert(1)\"]\n").is_err());
        let twice = "[a]\nentity_id = \"x\"\nacs_urls = [\"https://a/acs\"]\n[b]\nentity_id = \"x\"\nacs_urls = [\"https://b/acs\"]\n";
        assert!(
            parse(twice)
                .expect_err("same entity")
                .contains("also service provider")
        );
    }
}
