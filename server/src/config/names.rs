//! The part of `idflow.toml` that flow checking needs: the names of applications, identity
//! providers (with the attributes each asserts as verified) and provisioning targets.
//!
//! Unknown keys inside an entry are accepted: the server reads more of each entry than the
//! checker does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use idflow_dsl::Names;
use serde::Deserialize;

/// The configuration file read from the current directory when none is named.
pub const DEFAULT_CONFIG: &str = "idflow.toml";

/// The parts of the configuration file that flows refer to.
#[derive(Debug, Default, Deserialize)]
pub struct FlowNames {
    /// `[applications.<id>]` tables.
    #[serde(default)]
    pub applications: BTreeMap<String, toml::Table>,
    /// `[identity_providers.<name>]` tables.
    #[serde(default)]
    pub identity_providers: BTreeMap<String, IdentityProvider>,
    /// `[service_providers.<name>]` tables: SAML applications, named like OAuth clients.
    #[serde(default)]
    pub service_providers: BTreeMap<String, toml::Table>,
    /// `[provisioning_targets.<name>]` tables.
    #[serde(default)]
    pub provisioning_targets: BTreeMap<String, toml::Table>,
}

/// An identity provider entry.
#[derive(Debug, Default, Deserialize)]
pub struct IdentityProvider {
    /// Attributes whose values this IdP has verified (e.g. `email`); JIT may link by these.
    #[serde(default)]
    pub verified_attributes: BTreeSet<String>,
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads `path` and returns the names flows may use.
pub fn load_names(path: &Path) -> Result<Names, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    parse_names(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// Parses configuration text into the names flows may use.
pub fn parse_names(text: &str) -> Result<Names, String> {
    let parsed: FlowNames =
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    Ok(Names {
        applications: Some(
            parsed
                .applications
                .into_keys()
                .chain(parsed.service_providers.into_keys())
                .chain(std::iter::once(super::server::CONSOLE_CLIENT.to_string()))
                .collect(),
        ),
        identity_providers: Some(
            parsed
                .identity_providers
                .into_iter()
                .map(|(name, idp)| (name, idp.verified_attributes))
                .collect(),
        ),
        provisioning_targets: Some(parsed.provisioning_targets.into_keys().collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_verified_attributes() {
        let names = parse_names(
            "[applications.payroll]\n[service_providers.wiki]\nentity_id = \"https://wiki\"\n[identity_providers.google]\ntype = \"oidc\"\nverified_attributes = [\"email\"]\n[provisioning_targets.hr-scim]\n",
        )
        .expect("valid");
        assert!(
            names
                .applications
                .as_ref()
                .is_some_and(|a| a.contains("wiki")),
            "a SAML service provider is an application flows may name"
        );
        assert!(
            names
                .applications
                .as_ref()
                .is_some_and(|a| a.contains("payroll"))
        );
        assert!(
            names
                .verified_attributes("google")
                .is_some_and(|v| v.contains("email"))
        );
        assert!(
            names
                .provisioning_targets
                .as_ref()
                .is_some_and(|t| t.contains("hr-scim"))
        );
    }

    #[test]
    fn bad_toml_names_the_line() {
        let error = parse_names("[applications.payroll\n").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
    }
}
