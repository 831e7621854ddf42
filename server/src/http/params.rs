//! Request parameters (query strings and form bodies) with the rules OAuth 2.0 sets: a
//! parameter sent twice is an error (RFC 6749 §3.1), and sizes are bounded so that oversized
//! input gets an error instead of memory.

use std::collections::BTreeMap;

/// Longest single parameter value accepted.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Most parameters accepted in one request.
pub const MAX_PARAMS: usize = 64;

/// Parsed parameters: names to values, each name at most once. Empty values count as absent
/// (RFC 6749 §3.1: "parameters sent without a value MUST be treated as if they were omitted").
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text.
    pub fn parse(raw: &[u8]) -> Result<Params, String> {
        Params::parse_with_limit(raw, MAX_VALUE_BYTES)
    }

    /// Like [`Params::parse`], with values up to `max_value` bytes: for the SAML endpoints,
    /// whose messages are base64 XML of several kilobytes (the message's own limit is checked
    /// when it is decoded).
    pub fn parse_with_limit(raw: &[u8], max_value: usize) -> Result<Params, String> {
        let mut map = BTreeMap::new();
        for (count, (name, value)) in url::form_urlencoded::parse(raw).enumerate() {
            if count >= MAX_PARAMS {
                return Err(format!("more than {MAX_PARAMS} parameters"));
            }
            if value.len() > max_value {
                return Err(format!("the parameter `{name}` is too long"));
            }
            if value.is_empty() {
                continue;
            }
            if map.insert(name.to_string(), value.to_string()).is_some() {
                return Err(format!("the parameter `{name}` is repeated"));
            }
        }
        Ok(Params(map))
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A parameter's value, owned.
    pub fn take(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// A space-separated list parameter.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The case count of the property tests in this crate's modules (see
/// `server/tests/never_panics.rs`): `IDFLOW_FUZZ_CASES` when set, else `default`; failures are
/// not persisted, a failure found becomes a named `regression_` test.
#[cfg(test)]
pub(crate) fn fuzz_config(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("IDFLOW_FUZZ_CASES")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_oversized_parameters_are_errors() {
        assert!(Params::parse(b"a=1&a=2").unwrap_err().contains("repeated"));
        let long = format!("a={}", "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(
            Params::parse(long.as_bytes())
                .unwrap_err()
                .contains("too long")
        );
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert!(Params::parse(many.join("&").as_bytes()).is_err());
    }

    #[test]
    fn empty_values_are_absent_and_lists_split_on_spaces() {
        let params = Params::parse(b"a=&scope=openid+profile%20email&x=%F0%9F%98%80").expect("ok");
        assert_eq!(params.get("a"), None);
        assert_eq!(params.list("scope"), ["openid", "profile", "email"]);
        assert_eq!(params.get("x"), Some("😀"));
    }
}
