//! Mapping positions the parsers do not give precisely (inside scripts, inside YAML mappings)
//! to spans in the file.

use crate::span::{Span, Spanned};

/// Maps a position inside a script (1-based line and column) to a span in the file, by finding
/// the script's line in the file text after the script's start; falls back to the whole script.
pub(super) fn locate_in_script(
    text: &str,
    script: &Spanned<String>,
    position: Option<(usize, usize)>,
) -> Span {
    let Some((line, column)) = position else {
        return script.span;
    };
    let Some(line_text) = script.value.lines().nth(line.saturating_sub(1)) else {
        return script.span;
    };
    let from = script.span.start.min(text.len());
    let to = script.span.end.clamp(from, text.len());
    let region = text.get(from..to).unwrap_or("");
    if line_text.trim().is_empty() {
        return script.span;
    }
    // The script's lines keep their line breaks in the file (a block scalar, a backtick
    // script), so line N is found at or below the file line N-1 lines after the first one.
    let first = script.value.lines().next().unwrap_or("").trim();
    let mut at = if first.is_empty() {
        0
    } else {
        region.find(first).unwrap_or(0)
    };
    for _ in 1..line {
        match region.get(at..).and_then(|rest| rest.find('\n')) {
            Some(i) => at += i + 1,
            None => break,
        }
    }
    let found = region
        .get(at..)
        .and_then(|rest| rest.find(line_text))
        .map(|i| at + i)
        .or_else(|| region.find(line_text));
    let Some(found) = found else {
        return script.span;
    };
    let line_start = from + found;
    let within = line_text
        .char_indices()
        .nth(column.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(line_text.len());
    let start = line_start + within;
    let word = text[start..]
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(0);
    Span::new(start, start + word.max(1).min(text.len() - start))
}

/// The span of `word` at or shortly after `span.start` (YAML gives the span of a mapping's
/// opening token only), or `span` when it is not found on that line.
pub(super) fn locate_word(text: &str, span: Span, word: &str) -> Span {
    let from = span.start.min(text.len());
    let rest = text.get(from..).unwrap_or("");
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    let is_id_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let whole_word = line.match_indices(word).find(|(i, _)| {
        let before = line[..*i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(is_id_char) && !after.is_some_and(is_id_char)
    });
    match whole_word {
        Some((i, _)) if !word.is_empty() => Span::new(from + i, from + i + word.len()),
        _ => span,
    }
}

/// The span of the string literal `"label"` inside a script, or the script's span.
pub(super) fn locate_literal(text: &str, script: &Spanned<String>, label: &str) -> Span {
    let from = script.span.start.min(text.len());
    let end = script.span.end.max(from).min(text.len());
    for quoted in [format!("\"{label}\""), format!("'{label}'")] {
        if let Some(i) = text[from..end].find(&quoted) {
            return Span::new(from + i, from + i + quoted.len());
        }
    }
    script.span
}
