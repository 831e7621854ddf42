//! Small XML helpers: escaping what we write, refusing what we will not parse, SAML's time and
//! id formats.

use crate::error::SamlError;

/// Escapes text for an XML element or a double-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Refuses a document that declares a DOCTYPE or an entity, before any parser sees it: SAML
/// never needs one, and refusing here means no parser setting can let an entity expand
/// (billion laughs) or fetch (XXE).
pub fn refuse_doctype(xml: &str) -> Result<(), SamlError> {
    let lower = xml.to_ascii_lowercase();
    if lower.contains("<!doctype") || lower.contains("<!entity") {
        return Err(SamlError::Doctype);
    }
    Ok(())
}

/// A time as SAML writes it (xs:dateTime in UTC, whole seconds).
pub fn instant(seconds: u64) -> String {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Seconds since the epoch of a parsed SAML time (0 before the epoch).
pub fn seconds(time: &chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from(time.timestamp()).unwrap_or(0)
}

/// A fresh message id: an NCName (it must not start with a digit) with 128 random bits.
pub fn new_id() -> String {
    format!("_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }

    #[test]
    fn refuses_doctype_and_entities_in_any_case() {
        assert_eq!(
            refuse_doctype("<?xml version='1.0'?><!DocType x []><x/>"),
            Err(SamlError::Doctype)
        );
        assert_eq!(refuse_doctype("<!ENTITY a 'b'>"), Err(SamlError::Doctype));
        assert_eq!(refuse_doctype("<samlp:Response/>"), Ok(()));
    }

    #[test]
    fn instants_are_utc_seconds_and_ids_are_ncnames() {
        assert_eq!(instant(0), "1970-01-01T00:00:00Z");
        assert_eq!(instant(1_800_000_000), "2027-01-15T08:00:00Z");
        let id = new_id();
        assert!(id.starts_with('_') && id.len() == 33, "{id}");
        assert_ne!(id, new_id());
    }
}
