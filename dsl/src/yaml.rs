//! The YAML front end: text to [`FlowDoc`] with spans, and [`FlowDoc`] back to YAML text.
//!
//! serde-saphyr does the parsing (spans, input budgets, no unsafe); this module only sets its
//! options and turns its errors into diagnostics.

use serde_saphyr::{DuplicateKeyPolicy, Options};

use crate::ast::FlowDoc;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::{LineIndex, Span};

/// Parses the YAML form. On failure the diagnostic points at the YAML error's position.
pub fn parse(text: &str) -> Result<FlowDoc, Diagnostic> {
    let mut options = Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.strict_booleans = true;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<FlowDoc>(text, options).map_err(|error| {
        let error = error.without_snippet();
        let span = error.location().and_then(|location| {
            if location.line() == 0 {
                return None;
            }
            let span = location.span();
            let start = match span.byte_offset() {
                Some(offset) => usize::try_from(offset).ok()?,
                None => {
                    let line = usize::try_from(location.line()).ok()?;
                    let column = usize::try_from(location.column()).ok()?;
                    LineIndex::new(text).offset(text, line, column)
                }
            };
            let len = span
                .byte_len()
                .and_then(|l| usize::try_from(l).ok())
                .unwrap_or(0);
            Some(Span::new(start, start + len))
        });
        let message = friendly(plain_message(&error.to_string()));
        let code = if is_shape_error(&message) {
            Code::Shape
        } else {
            Code::Syntax
        };
        Diagnostic::error(code, span, message)
    })
}

/// Renders `doc` as YAML in the canonical field order of [`FlowDoc`].
pub fn print(doc: &FlowDoc) -> Result<String, String> {
    let mut options = serde_saphyr::SerializerOptions::default();
    // Scripts stay on one line however long they are: folding them mid-expression hurts
    // reading, and multi-line scripts still print as literal blocks.
    options.folded_wrap_chars = usize::MAX / 2;
    serde_saphyr::to_string_with_options(doc, options).map_err(|e| e.to_string())
}

/// serde-saphyr appends the position to its messages; we print positions ourselves.
fn plain_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered).trim();
    let cut = [" at line ", " at ", ", line "]
        .iter()
        .filter_map(|marker| {
            first
                .rfind(marker)
                .filter(|&i| first[i..].contains(char::is_numeric))
        })
        .min()
        .unwrap_or(first.len());
    let message = first[..cut].trim_end_matches([':', ',', ' ']);
    let message = message.strip_prefix("error: ").unwrap_or(message);
    if message.is_empty() {
        "invalid YAML".to_string()
    } else {
        message.to_string()
    }
}

/// Rewords the messages of serde-saphyr and serde-derive that speak of Rust types.
fn friendly(message: String) -> String {
    const REWORDS: &[(&str, &str)] = &[
        (
            "untagged enum AuthRef",
            "expected an authenticator name or { federated: IDP }",
        ),
        (
            "untagged enum Next",
            "expected a state id, or a map from label to state id",
        ),
        ("expected sequence start", "expected a list"),
        ("expected mapping start", "expected a mapping"),
        ("expected string scalar", "expected a string"),
        (
            "invalid u32",
            "expected a whole number from 0 to 4294967295",
        ),
    ];
    REWORDS
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map(|(_, better)| better.to_string())
        .unwrap_or(message)
}

/// Whether a serde message is about the document's shape (unknown or missing field, wrong type)
/// rather than YAML syntax.
fn is_shape_error(message: &str) -> bool {
    [
        "unknown field",
        "missing field",
        "invalid type",
        "unknown variant",
        "duplicate field",
        "did not match any variant",
        "invalid value",
        "invalid boolean",
        "expected",
        "whole number",
        "invalid length",
    ]
    .iter()
    .any(|needle| message.contains(needle))
        && !message.contains("while scanning")
        && !message.contains("while parsing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_unknown_field_with_its_position() {
        let text = "flow: a\nsteps:\n  - id: one\n    authenticat: [password]\n";
        let error = parse(text).unwrap_err();
        assert_eq!(error.code, Code::Shape, "{error:?}");
        assert!(error.message.contains("authenticat"), "{}", error.message);
        let span = error.span.expect("span");
        assert_eq!(LineIndex::new(text).line_col(text, span.start).0, 4);
    }

    #[test]
    fn reports_bad_yaml_as_syntax() {
        let error = parse("flow: 'unterminated\n").unwrap_err();
        assert_eq!(error.code, Code::Syntax, "{error:?}");
    }
}
