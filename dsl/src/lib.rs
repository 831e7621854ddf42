//! idflow's flow language.
//!
//! Two front ends — YAML ([`yaml`]) and the `.flow` DSL ([`syntax`]) — produce one AST
//! ([`ast`]); [`lower`] turns it into the IR ([`ir`]) while checking names and scripts;
//! [`analysis`] checks the state machine; [`project`] checks a set of files together.
//! Every stage reports [`Diagnostic`]s with spans and keeps going, so one `flow check` run
//! reports every problem it can find.
//!
//! Architecture invariant: this crate does no I/O, knows nothing of HTTP, the store or the
//! engine's runtime, and never panics on any input (the fuzz tests hold it to that).

pub mod analysis;
pub mod ast;
pub mod diagnostic;
pub mod graph;
pub mod ir;
pub mod lower;
pub mod names;
pub mod print;
pub mod project;
pub mod render;
pub mod schema;
pub mod script;
pub mod script_api;
pub mod span;
pub mod syntax;
pub mod yaml;

pub use diagnostic::{Code, Diagnostic, Severity};
pub use ir::FlowIr;
pub use names::Names;
pub use project::{FileReport, SourceFile, check_project};
pub use span::Span;

use ast::FlowDoc;
use lower::SpanTable;

/// Largest flow file accepted, in bytes. Real flows are a few KiB; the limit bounds memory and
/// time for hostile input.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;

/// Which front end reads a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `.yaml` / `.yml`.
    Yaml,
    /// `.flow`.
    Flow,
}

impl Syntax {
    /// The syntax for a file name, by extension; `None` for files that are not flows.
    pub fn from_path(path: &str) -> Option<Syntax> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".flow") {
            Some(Syntax::Flow)
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Some(Syntax::Yaml)
        } else {
            None
        }
    }
}

/// A flow that compiled without errors.
#[derive(Debug, Clone)]
pub struct CompiledFlow {
    /// The state machine.
    pub ir: FlowIr,
    /// `sha256:` + 16 hex digits of the canonical IR.
    pub version: String,
    /// Where each state came from.
    pub spans: SpanTable,
    /// The AST it was lowered from (for `fmt` and cross-file checks).
    pub doc: FlowDoc,
}

/// Parses `text` with the front end for `syntax`. Returns the AST when parsing got far enough
/// to produce one, and every diagnostic found on the way.
pub fn parse(text: &str, syntax: Syntax) -> (Option<FlowDoc>, Vec<Diagnostic>) {
    if text.len() > MAX_SOURCE_BYTES {
        let message = format!(
            "file is {} bytes; flow files are limited to {MAX_SOURCE_BYTES}",
            text.len()
        );
        return (
            None,
            vec![Diagnostic::error(Code::Unreadable, None, message)],
        );
    }
    match syntax {
        Syntax::Yaml => match yaml::parse(text) {
            Ok(doc) => (Some(doc), Vec::new()),
            Err(d) => (None, vec![d]),
        },
        Syntax::Flow => match syntax::parse(text) {
            Ok((doc, diagnostics)) => (Some(doc), diagnostics),
            Err(d) => (None, vec![d]),
        },
    }
}

/// What a flow file says about itself that other files can conflict with: its id, the
/// applications it claims and whether it is the default. Kept even when the file has errors, so
/// the cross-file checks still run.
#[derive(Debug, Clone)]
pub struct FlowHeader {
    /// The flow id.
    pub flow: span::Spanned<String>,
    /// The applications it claims.
    pub applies_to: Vec<span::Spanned<String>>,
    /// Whether it is the default flow.
    pub default: bool,
}

/// Everything compiling one file produced.
#[derive(Debug, Clone)]
pub struct Compilation {
    /// The header, when the file parsed.
    pub header: Option<FlowHeader>,
    /// The flow, when there are no errors.
    pub compiled: Option<CompiledFlow>,
    /// Every diagnostic, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses, lowers and analyzes one file. The flow is returned only when there are no errors.
pub fn compile(
    text: &str,
    syntax: Syntax,
    names: &Names,
) -> (Option<CompiledFlow>, Vec<Diagnostic>) {
    let compilation = compile_file(text, syntax, names);
    (compilation.compiled, compilation.diagnostics)
}

/// Like [`compile`], also returning the file's header for cross-file checks.
pub fn compile_file(text: &str, syntax: Syntax, names: &Names) -> Compilation {
    let (doc, mut diagnostics) = parse(text, syntax);
    let Some(doc) = doc else {
        return Compilation {
            header: None,
            compiled: None,
            diagnostics,
        };
    };
    let header = Some(FlowHeader {
        flow: doc.flow.clone(),
        applies_to: doc.applies_to.clone(),
        default: doc.default,
    });
    let lowered = lower::lower(&doc, text, names, &mut diagnostics);
    let Some(lower::Lowered {
        mut ir,
        spans,
        broken_structure,
    }) = lowered
    else {
        sort(&mut diagnostics);
        return Compilation {
            header,
            compiled: None,
            diagnostics,
        };
    };
    // Graph checks still run after name or script errors, so one run shows everything; only a
    // broken structure (a missing target, a state of no kind) would make them report noise.
    if !broken_structure {
        analysis::analyze(&mut ir, &spans, doc.flow.span, &mut diagnostics);
    }
    sort(&mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Compilation {
            header,
            compiled: None,
            diagnostics,
        };
    }
    let version = ir.version();
    let compiled = CompiledFlow {
        ir,
        version,
        spans,
        doc,
    };
    Compilation {
        header,
        compiled: Some(compiled),
        diagnostics,
    }
}

/// Orders diagnostics by position, then code, so output is deterministic.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        let key = |d: &Diagnostic| (d.span.map(|s| (s.start, s.end)), d.code, d.message.clone());
        key(a).cmp(&key(b))
    });
}
