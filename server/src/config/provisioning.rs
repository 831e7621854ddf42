//! `[provisioning_targets.<name>]`: where users created and changed here are sent. Flows name
//! targets in `provisioning on ... to NAME` and `provision: NAME`; a target declared without a
//! `url` is declared but not configured (flows may name it, its events are dropped with a log
//! line), so the quickstart can name a target it has no address for.

use serde::Deserialize;

use super::federation::Secret;

/// Directory events a target hears of unless its `on` says otherwise: every change to a user
/// or their roles, from any source (SCIM, JIT, the CLI, a flow).
pub const DEFAULT_EVENTS: &[&str] = &[
    "user.created",
    "user.updated",
    "user.deleted",
    "user.disabled",
    "user.enabled",
    "role.assigned",
    "role.unassigned",
];

/// One provisioning target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name flows use.
    pub name: String,
    /// Where and how, when configured.
    pub endpoint: Option<ScimEndpoint>,
    /// The directory events that queue a delivery (flows add their own triggers).
    pub on: Vec<String>,
    /// The roles sent as the target's groups; `None` means every role without privileges (a
    /// role that grants privileges here is never sent unless named).
    pub roles: Option<Vec<String>>,
    /// Deliveries tried before an event becomes a dead letter.
    pub max_attempts: u32,
    /// Per request.
    pub timeout_seconds: u64,
}

impl Target {
    /// Whether a directory event queues a delivery to this target.
    pub fn hears(&self, event: &str) -> bool {
        self.endpoint.is_some() && self.on.iter().any(|e| e == event)
    }
}

/// A SCIM 2.0 service provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimEndpoint {
    /// The base URL (`.../scim/v2`), without a trailing slash.
    pub url: String,
    /// How idflow authenticates there.
    pub auth: TargetAuth,
}

/// How idflow authenticates to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAuth {
    /// A fixed bearer token.
    Bearer(Secret),
    /// HTTP Basic.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// A token from the target's OAuth 2.0 token endpoint (client_credentials), fetched when
    /// needed and reused until shortly before it expires.
    ClientCredentials {
        /// The token endpoint.
        token_url: String,
        /// Our client id there.
        client_id: String,
        /// Our client secret there.
        client_secret: Secret,
        /// The scope to ask for (e.g. `scim`).
        scope: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    r#type: String,
    url: Option<String>,
    auth: Option<String>,
    token: Option<String>,
    token_env: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    scope: Option<String>,
    on: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    max_attempts: Option<u32>,
    timeout_seconds: Option<u64>,
}

/// Reads every `[provisioning_targets.NAME]`.
pub fn parse(tables: &toml::Table) -> Result<Vec<Target>, String> {
    tables
        .iter()
        .map(|(name, value)| {
            let section: Section = value
                .clone()
                .try_into()
                .map_err(|e| format!("provisioning_targets.{name}: {e}"))?;
            target(name, section)
        })
        .collect()
}

fn target(name: &str, section: Section) -> Result<Target, String> {
    let at = |field: &str| format!("provisioning_targets.{name}.{field}");
    if section.r#type != "scim2" {
        return Err(format!(
            "{}: `{}` is not a target type; use `scim2`",
            at("type"),
            section.r#type
        ));
    }
    let on = match &section.on {
        None => DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect(),
        Some(events) => {
            for event in events {
                if !idflow_dsl::names::PROVISIONING_EVENTS.contains(&event.as_str()) {
                    return Err(format!(
                        "{}: `{event}` is not an event; events are {}",
                        at("on"),
                        idflow_dsl::names::PROVISIONING_EVENTS.join(", ")
                    ));
                }
            }
            events.clone()
        }
    };
    let max_attempts = section.max_attempts.unwrap_or(10);
    if !(1..=100).contains(&max_attempts) {
        return Err(format!("{}: between 1 and 100", at("max_attempts")));
    }
    let timeout_seconds = section.timeout_seconds.unwrap_or(10);
    if !(1..=300).contains(&timeout_seconds) {
        return Err(format!("{}: between 1 and 300", at("timeout_seconds")));
    }
    let endpoint = match &section.url {
        None => None,
        Some(url) => {
            endpoint_url(&at("url"), url)?;
            Some(ScimEndpoint {
                url: url.trim_end_matches('/').to_string(),
                auth: auth(name, &section)?,
            })
        }
    };
    Ok(Target {
        name: name.to_string(),
        endpoint,
        on,
        roles: section.roles,
        max_attempts,
        timeout_seconds,
    })
}

/// An address of a target: https, or http on loopback (development and tests). User records
/// and credentials travel to it.
fn endpoint_url(field: &str, value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("{field}: {e}"))?;
    // Credentials in a URL end up in logs and dead letters; a query or fragment would be
    // mangled by the paths appended to it.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{field}: no credentials in the URL; use `auth`"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{field}: no query or fragment"));
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(format!(
            "{field}: `{value}` must be https (http only on loopback)"
        ));
    }
    Ok(())
}

/// A secret given inline or through an environment variable, exactly one of them.
fn secret(
    at: &dyn Fn(&str) -> String,
    field: &str,
    inline: &Option<String>,
    env: &Option<String>,
) -> Result<Secret, String> {
    match (inline, env) {
        (Some(value), None) => Ok(Secret(value.clone())),
        (None, Some(var)) => std::env::var(var)
            .map(Secret)
            .map_err(|_| format!("{}: `{var}` is not set", at(&format!("{field}_env")))),
        _ => Err(format!(
            "{}: give exactly one of {field}, {field}_env",
            at(field)
        )),
    }
}

fn auth(name: &str, section: &Section) -> Result<TargetAuth, String> {
    let at = |field: &str| format!("provisioning_targets.{name}.{field}");
    let required = |value: &Option<String>, field: &str| {
        value
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{}: required for this `auth`", at(field)))
    };
    match section.auth.as_deref() {
        Some("bearer") => Ok(TargetAuth::Bearer(secret(
            &at,
            "token",
            &section.token,
            &section.token_env,
        )?)),
        Some("basic") => Ok(TargetAuth::Basic {
            username: required(&section.username, "username")?,
            password: secret(&at, "password", &section.password, &section.password_env)?,
        }),
        Some("client_credentials") => {
            let token_url = required(&section.token_url, "token_url")?;
            endpoint_url(&at("token_url"), &token_url)?;
            Ok(TargetAuth::ClientCredentials {
                token_url,
                client_id: required(&section.client_id, "client_id")?,
                client_secret: secret(
                    &at,
                    "client_secret",
                    &section.client_secret,
                    &section.client_secret_env,
                )?,
                scope: section.scope.clone().unwrap_or_else(|| "scim".into()),
            })
        }
        Some(other) => Err(format!(
            "{}: `{other}` is not supported; use bearer, basic or client_credentials",
            at("auth")
        )),
        None => Err(format!(
            "{}: say how idflow authenticates: bearer, basic or client_credentials",
            at("auth")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Result<Target, String> {
        let table: toml::Table = toml::from_str(text).expect("toml");
        parse(&table).map(|mut targets| targets.remove(0))
    }

    #[test]
    fn a_declared_target_without_a_url_hears_nothing() {
        let target = parse_one("[hr]\ntype = \"scim2\"\n").expect("parse");
        assert!(target.endpoint.is_none());
        assert!(!target.hears("user.created"));
    }

    #[test]
    fn a_configured_target_hears_directory_events_by_default() {
        let target = parse_one(
            "[hr]\ntype = \"scim2\"\nurl = \"https://hr.test/scim/v2/\"\nauth = \"bearer\"\ntoken = \"t\"\n",
        )
        .expect("parse");
        assert_eq!(
            target.endpoint.as_ref().map(|e| e.url.as_str()),
            Some("https://hr.test/scim/v2")
        );
        assert!(target.hears("role.assigned"));
        assert!(!target.hears("login.succeeded"));
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        let cases = [
            ("[hr]\ntype = \"ldap\"\n", "not a target type"),
            (
                "[hr]\ntype = \"scim2\"\nurl = \"http://hr.test/scim\"\nauth = \"bearer\"\ntoken = \"t\"\n",
                "must be https",
            ),
            (
                "[hr]\ntype = \"scim2\"\nurl = \"https://hr.test/scim\"\n",
                "say how idflow authenticates",
            ),
            (
                "[hr]\ntype = \"scim2\"\nurl = \"https://hr.test/scim\"\nauth = \"basic\"\npassword = \"p\"\n",
                "username: required",
            ),
            (
                "[hr]\ntype = \"scim2\"\nurl = \"https://hr.test/scim\"\nauth = \"bearer\"\n",
                "exactly one of token, token_env",
            ),
            (
                "[hr]\ntype = \"scim2\"\non = [\"user.renamed\"]\n",
                "not an event",
            ),
            (
                "[hr]\ntype = \"scim2\"\nmax_attempts = 0\n",
                "between 1 and 100",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_one(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
