//! Checking a set of flow files together: each file on its own, then what only the set can
//! show (two files with one flow id, one application claimed by two flows, two defaults).

use std::collections::BTreeMap;

use crate::diagnostic::{Code, Diagnostic};
use crate::names::Names;
use crate::span::LineIndex;
use crate::{CompiledFlow, FlowHeader, Syntax, compile_file};

/// A file handed to the checker: its display name and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as the user gave it; used in messages.
    pub name: String,
    /// The contents.
    pub text: String,
    /// The front end to use.
    pub syntax: Syntax,
}

/// What checking one file found.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file's display name.
    pub name: String,
    /// Diagnostics sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The compiled flow, when the file has no errors.
    pub compiled: Option<CompiledFlow>,
    /// The flow's id, applications and default flag, when the file parsed.
    pub header: Option<FlowHeader>,
}

impl FileReport {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Compiles every file and runs the cross-file checks. Reports come back in input order.
pub fn check_project(files: &[SourceFile], names: &Names) -> Vec<FileReport> {
    let mut reports: Vec<FileReport> = files
        .iter()
        .map(|file| {
            let compilation = compile_file(&file.text, file.syntax, names);
            FileReport {
                name: file.name.clone(),
                diagnostics: compilation.diagnostics,
                compiled: compilation.compiled,
                header: compilation.header,
            }
        })
        .collect();

    let position = |file: usize, offset: usize| {
        let text = &files[file].text;
        let (line, col) = LineIndex::new(text).line_col(text, offset);
        format!("{}:{line}:{col}", files[file].name)
    };
    // Two files may hold the same flow (a YAML and a `.flow` twin) only if they compile to the
    // same IR, i.e. the same version.
    let mut flow_ids: BTreeMap<String, (usize, usize, String)> = BTreeMap::new();
    let mut claimed: BTreeMap<String, (usize, String, usize)> = BTreeMap::new();
    let mut default: Option<(usize, String)> = None;
    let mut found: Vec<(usize, Diagnostic)> = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        let Some(doc) = &report.header else {
            continue;
        };
        let id = doc.flow.value.clone();
        // Versions exist only for files that compiled; the other checks need only the header.
        if let Some(compiled) = &report.compiled {
            match flow_ids.get(&id) {
                Some((other, offset, version)) if *version != compiled.version => found.push((
                    i,
                    Diagnostic::error(
                        Code::DuplicateFlow,
                        doc.flow.span,
                        format!("flow `{id}` is also declared elsewhere, differently"),
                    )
                    .with_note(format!(
                        "first declared at {} (version {version}, this one {})",
                        position(*other, *offset),
                        compiled.version
                    ))
                    .with_hint("rename one, or make both forms compile to the same IR"),
                )),
                Some(_) => {}
                None => {
                    flow_ids.insert(
                        id.clone(),
                        (i, doc.flow.span.start, compiled.version.clone()),
                    );
                }
            }
        }
        for app in &doc.applies_to {
            match claimed.get(&app.value) {
                Some((other, other_flow, offset)) if other_flow != &id => found.push((
                    i,
                    Diagnostic::error(
                        Code::ApplicationClaimedTwice,
                        app.span,
                        format!("application `{}` is claimed by flows `{other_flow}` and `{id}`", app.value),
                    )
                    .with_note(format!("`{other_flow}` claims it at {}", position(*other, *offset)))
                    .with_hint("an application runs exactly one flow; route inside the flow with `decide` instead"),
                )),
                Some(_) => {}
                None => {
                    claimed.insert(app.value.clone(), (i, id.clone(), app.span.start));
                }
            }
        }
        if doc.default {
            match &default {
                Some((other, other_flow)) if *other_flow != id => found.push((
                    i,
                    Diagnostic::error(
                        Code::DuplicateDefault,
                        doc.flow.span,
                        format!("flows `{other_flow}` and `{id}` are both the default"),
                    )
                    .with_note(format!("`{other_flow}` is in {}", files[*other].name)),
                )),
                Some(_) => {}
                None => default = Some((i, id.clone())),
            }
        }
    }
    for (i, diagnostic) in found {
        reports[i].diagnostics.push(diagnostic);
        crate::sort(&mut reports[i].diagnostics);
    }
    reports
}
