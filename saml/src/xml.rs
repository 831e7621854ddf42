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
///
/// The check reads the text as UTF-8, so a document a parser would decode otherwise is refused
/// too: libxml2 (which verifies signatures) honours an `encoding` declaration and detects
/// UTF-16 from the first bytes, and a DOCTYPE written in UTF-16 or UTF-7 is still valid UTF-8
/// that contains no `<!DOCTYPE`. So a NUL (which no XML document may contain, and every UTF-16
/// or UTF-32 encoding of markup does) and an encoding other than UTF-8 are refused as
/// malformed.
pub fn refuse_doctype(xml: &str) -> Result<(), SamlError> {
    let lower = xml.to_ascii_lowercase();
    if lower.contains("<!doctype") || lower.contains("<!entity") {
        return Err(SamlError::Doctype);
    }
    if xml.contains('\0') {
        return Err(SamlError::Malformed(
            "a NUL character (UTF-16 and UTF-32 are not accepted)".into(),
        ));
    }
    for declaration in lower.split("<?xml").skip(1) {
        let declaration = declaration.split("?>").next().unwrap_or_default();
        for after in declaration.split("encoding").skip(1) {
            let value = after
                .trim_start()
                .strip_prefix('=')
                .map(str::trim_start)
                .and_then(|v| {
                    let quote = v.chars().next().filter(|q| *q == '"' || *q == '\'')?;
                    v[1..].split(quote).next()
                });
            if !matches!(value, Some("utf-8" | "utf8")) {
                return Err(SamlError::Malformed(
                    "the message declares an encoding other than UTF-8".into(),
                ));
            }
        }
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
    fn regression_a_doctype_a_parser_would_decode_from_utf16_or_utf7_is_refused() {
        // Found by tests/never_panics.rs: both are valid UTF-8 without `<!DOCTYPE` in it, and
        // libxml2 decodes each to a DOCTYPE whose entities it expands.
        let utf16: String =
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?><!DOCTYPE r [<!ENTITY e \"x\">]><r>&e;</r>"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .map(char::from)
                .collect();
        assert!(matches!(
            refuse_doctype(&utf16),
            Err(SamlError::Malformed(_))
        ));
        let utf7 = "<?xml version=\"1.0\" encoding=\"UTF-7\"?>+ADwAIQ-DOCTYPE r +AFsAPAAh-ENTITY e \"x\"+AD4AXQA+-<r>&e;</r>";
        assert!(matches!(refuse_doctype(utf7), Err(SamlError::Malformed(_))));
        for declaration in [
            "<?xml version='1.0' encoding = 'ISO-8859-1'?>",
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
            "<?xml version=\"1.0\" encoding=UTF-7?>",
            "<?xml version=\"1.0\" encoding?>",
        ] {
            assert!(
                refuse_doctype(&format!("{declaration}<r/>")).is_err(),
                "{declaration}"
            );
        }
        for fine in [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><r/>",
            "<?xml version='1.0' encoding='utf-8' standalone='yes'?><r/>",
            "<?xml version=\"1.0\"?><r/>",
            "\u{feff}<r>Anne-Marie Ø</r>",
        ] {
            assert_eq!(refuse_doctype(fine), Ok(()), "{fine}");
        }
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
