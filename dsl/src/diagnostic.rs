//! Diagnostics: every problem `flow check` can report, each with a stable code.
//!
//! Codes are part of the public contract (CI pipelines grep for them, editors link to them):
//! a code is never reused for another meaning. `Code::ALL` lists them for documentation.

use serde::Serialize;

use crate::span::Span;

/// How bad a diagnostic is. Errors fail `flow check` (exit 1); warnings are printed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The flow cannot be compiled or would be unsafe to run.
    Error,
    /// The flow compiles but something is probably a mistake.
    Warning,
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $summary:literal;)*) => {
        /// The stable code of a diagnostic, printed as `F0xx`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $(#[doc = $summary] $variant,)*
        }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The printed form, e.g. `F031`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// One line saying what the code means.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary,)* }
            }
        }
    };
}

codes! {
    Syntax = "F001", "the text is not valid YAML or `.flow` syntax";
    Shape = "F002", "a field is unknown, missing, or has the wrong type";
    Unreadable = "F003", "the file cannot be read as a flow (not UTF-8, too large, not a file)";
    UnknownAuthenticator = "F010", "an authenticator name that no authenticator has";
    UnknownIdp = "F011", "an identity provider that the configuration does not declare";
    UnknownApplication = "F012", "an application id that the configuration does not declare";
    UnknownProvisioningTarget = "F013", "a provisioning target that the configuration does not declare";
    UnknownEvent = "F014", "a provisioning trigger on an event that does not exist";
    NotEnrollable = "F015", "an `enroll` names an authenticator that cannot be enrolled during a login";
    DuplicateFlow = "F020", "two files declare the same flow id with different content";
    DuplicateId = "F021", "two steps, states, labels or attributes share an id";
    ApplicationClaimedTwice = "F022", "two flows claim the same application";
    DuplicateDefault = "F023", "more than one flow is marked as the default";
    ReservedId = "F024", "a step or state uses a reserved id (success, deny)";
    UnknownTarget = "F030", "a transition names a state that does not exist";
    Unreachable = "F031", "a state can never be entered from the start";
    CannotSucceed = "F032", "no path leads from this state to success";
    SuccessUnreachable = "F033", "no path at all leads from the start to success";
    UnboundedCycle = "F034", "a cycle of states with no `visits` bound on any of them";
    LabelWithoutNext = "F035", "a `decide` script returns a label that `next` does not map";
    UnusedLabel = "F036", "`next` maps a label that the `decide` script never returns";
    ScriptSyntax = "F040", "a Rhai script does not compile";
    ScriptUnknownName = "F041", "a script names something the script API does not have";
    JitUnverifiedMatch = "F050", "a JIT rule links accounts by an attribute the IdP does not verify";
    JitIdpNotUsed = "F051", "a JIT rule names an IdP that no step of the flow authenticates with";
    InvariantViolated = "F060", "a `require` invariant fails on some path to success";
    NoCredential = "F061", "a path reaches success without verifying any credential";
    EnrollWithoutCredential = "F062", "a path reaches an `enroll` step without verifying any credential first";
    NoBody = "F070", "a flow needs exactly one of `steps` or `states`";
    StateKind = "F071", "a state needs exactly one of `authenticate`, `enroll`, `register`, `decide`, `do` or `deny`";
    MisplacedField = "F072", "a field that does not apply to this kind of state";
    OutOfRange = "F073", "a number outside its allowed range";
    BadDuration = "F074", "a duration that is not a number followed by s, m, h or d";
    BadId = "F075", "an id with characters outside a-z, 0-9, `_`, `-` and `.`";
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in one source, pointing at where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where; `None` when the problem concerns the whole file.
    #[serde(skip)]
    pub span: Option<Span>,
    /// How to fix it, when we can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Further lines, e.g. the offending path of a violated invariant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error with `code` at `span`.
    pub fn error(code: Code, span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span: span.into(),
            hint: None,
            notes: Vec::new(),
        }
    }

    /// A warning with `code` at `span`.
    pub fn warning(code: Code, span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a note line.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Returns the closest of `candidates` to `name` when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Long names are never typos of short ones; skip the quadratic distance for them.
    if name.len() > 64 {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| c.len().abs_diff(name.len()) <= 3)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len() / 4).clamp(1, 3) && *d < name.len().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_sorted() {
        let printed: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = printed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(printed, sorted);
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("pasword", ["password", "totp"]),
            Some("password")
        );
        assert_eq!(did_you_mean("xyz", ["password", "totp"]), None);
    }
}
