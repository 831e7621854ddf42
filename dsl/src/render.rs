//! Rendering diagnostics for people (file:line:col, the source line and a caret), for tools
//! (JSON) and for GitHub Actions (workflow annotations).
//!
//! Written by hand rather than with miette/ariadne: the human format is part of our snapshot
//! tests and must stay byte-stable across dependency upgrades, and it needs no colour support.

use serde::Serialize;

use crate::diagnostic::{Diagnostic, Severity};
use crate::span::LineIndex;

/// One file's diagnostics together with the text they point into.
pub struct FileDiagnostics<'a> {
    /// The display name.
    pub name: &'a str,
    /// The text (may be empty when the file could not be read).
    pub text: &'a str,
    /// The diagnostics.
    pub diagnostics: &'a [Diagnostic],
}

/// A diagnostic resolved to line and column, as emitted by `--format json`.
#[derive(Debug, Serialize)]
pub struct Located<'a> {
    /// The file.
    pub file: &'a str,
    /// 1-based line, or 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// Line of the span's end.
    pub end_line: usize,
    /// Column of the span's end.
    pub end_column: usize,
    /// The diagnostic itself.
    #[serde(flatten)]
    pub diagnostic: &'a Diagnostic,
}

/// Resolves every diagnostic of `file` to line and column.
pub fn locate<'a>(file: &FileDiagnostics<'a>) -> Vec<Located<'a>> {
    let index = LineIndex::new(file.text);
    file.diagnostics
        .iter()
        .map(|d| {
            let ((line, column), (end_line, end_column)) = match d.span {
                Some(span) => (
                    index.line_col(file.text, span.start),
                    index.line_col(file.text, span.end),
                ),
                None => ((0, 0), (0, 0)),
            };
            Located {
                file: file.name,
                line,
                column,
                end_line,
                end_column,
                diagnostic: d,
            }
        })
        .collect()
}

/// The human format.
pub fn human(file: &FileDiagnostics) -> String {
    let index = LineIndex::new(file.text);
    let mut out = String::new();
    for located in locate(file) {
        let d = located.diagnostic;
        let severity = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!("{severity}[{}]: {}\n", d.code, d.message));
        match d.span {
            Some(span) if located.line > 0 => {
                let gutter = located.line.to_string().len();
                let pad = " ".repeat(gutter);
                out.push_str(&format!(
                    "{pad}--> {}:{}:{}\n",
                    file.name, located.line, located.column
                ));
                let (start, end) = index.line_range(file.text, located.line);
                let source_line = file.text.get(start..end).unwrap_or("");
                let source_line: String = source_line
                    .chars()
                    .map(|c| if c == '\t' { ' ' } else { c })
                    .collect();
                let width = if located.end_line == located.line {
                    located.end_column.saturating_sub(located.column)
                } else {
                    source_line
                        .chars()
                        .count()
                        .saturating_sub(located.column - 1)
                };
                let width = width.clamp(1, 120);
                let _ = span;
                out.push_str(&format!("{pad} |\n"));
                out.push_str(&format!("{} | {}\n", located.line, source_line));
                out.push_str(&format!(
                    "{pad} | {}{}\n",
                    " ".repeat(located.column - 1),
                    "^".repeat(width)
                ));
            }
            _ => out.push_str(&format!(" --> {}\n", file.name)),
        }
        for note in &d.notes {
            out.push_str(&format!("  = note: {note}\n"));
        }
        if let Some(hint) = &d.hint {
            out.push_str(&format!("  = hint: {hint}\n"));
        }
        out.push('\n');
    }
    out
}

/// GitHub Actions workflow commands, one per line.
pub fn github(file: &FileDiagnostics) -> String {
    let mut out = String::new();
    for located in locate(file) {
        let d = located.diagnostic;
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut message = d.message.clone();
        for note in &d.notes {
            message.push_str(&format!("\n{note}"));
        }
        if let Some(hint) = &d.hint {
            message.push_str(&format!("\nhint: {hint}"));
        }
        let mut properties = vec![format!("file={}", escape_property(file.name))];
        if located.line > 0 {
            properties.push(format!("line={}", located.line));
            properties.push(format!("col={}", located.column));
            properties.push(format!("endLine={}", located.end_line));
            properties.push(format!("endColumn={}", located.end_column));
        }
        properties.push(format!("title={}", d.code));
        out.push_str(&format!(
            "::{level} {}::{}\n",
            properties.join(","),
            escape_data(&message)
        ));
    }
    out
}

fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Code;
    use crate::span::Span;

    #[test]
    fn human_points_a_caret_at_the_span() {
        let text = "flow: a\nsteps:\n  - id: x\n    authenticate: [pasword]\n";
        let start = text.find("pasword").expect("present");
        let diagnostics = [Diagnostic::error(
            Code::UnknownAuthenticator,
            Span::new(start, start + 7),
            "unknown authenticator `pasword`",
        )
        .with_hint("did you mean `password`?")];
        let out = human(&FileDiagnostics {
            name: "a.yaml",
            text,
            diagnostics: &diagnostics,
        });
        assert_eq!(
            out,
            "error[F010]: unknown authenticator `pasword`\n --> a.yaml:4:20\n  |\n4 |     authenticate: [pasword]\n  |                    ^^^^^^^\n  = hint: did you mean `password`?\n\n"
        );
    }

    #[test]
    fn github_escapes_newlines_and_commas() {
        let diagnostics = [Diagnostic::error(Code::Syntax, None, "bad\nthing").with_hint("x")];
        let out = github(&FileDiagnostics {
            name: "a,b.yaml",
            text: "",
            diagnostics: &diagnostics,
        });
        assert_eq!(
            out,
            "::error file=a%2Cb.yaml,title=F001::bad%0Athing%0Ahint: x\n"
        );
    }
}
