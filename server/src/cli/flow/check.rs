//! `idflow flow check`: the CI gate. Reads every flow under the given paths, checks each file
//! and the set together, prints every diagnostic, and exits 1 if any is an error.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use idflow_dsl::render::{self, FileDiagnostics};
use idflow_dsl::{Diagnostic, Severity, check_project};

use crate::cli::{EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE};
use crate::sources;

/// Arguments of `flow check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Flow files or directories (walked recursively for .yaml, .yml and .flow files).
    #[arg(default_value = "flows")]
    pub paths: Vec<PathBuf>,
    /// idflow.toml whose applications, identity providers and provisioning targets flows may
    /// name (default: ./idflow.toml when it exists); without one those names are not checked,
    /// and no IdP counts as verifying any attribute (so JIT rules that link accounts must check
    /// `claims.<attr>_verified`).
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Output formats of `flow check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// file:line:col, the source line and a caret.
    Human,
    /// One JSON document on stdout.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
}

/// Runs `flow check`.
pub fn run(args: &CheckArgs) -> u8 {
    let names = match super::names(args.config.as_deref()) {
        Ok(names) => names,
        Err(code) => return code,
    };
    let collected = match sources::collect(&args.paths) {
        Ok(collected) => collected,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_USAGE;
        }
    };
    let reports = check_project(&collected.files, &names);

    let mut files: Vec<(String, String, Vec<Diagnostic>)> = Vec::new();
    for unreadable in collected.unreadable {
        files.push((unreadable.name, String::new(), vec![unreadable.diagnostic]));
    }
    for (report, file) in reports.into_iter().zip(&collected.files) {
        files.push((report.name, file.text.clone(), report.diagnostics));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let count = |severity| {
        files
            .iter()
            .flat_map(|f| &f.2)
            .filter(|d| d.severity == severity)
            .count()
    };
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    let views: Vec<FileDiagnostics> = files
        .iter()
        .map(|(name, text, diagnostics)| FileDiagnostics {
            name,
            text,
            diagnostics,
        })
        .collect();

    match args.format {
        Format::Human => {
            for view in &views {
                crate::cli::out(&render::human(view));
            }
            let checked = views.len();
            let plural =
                |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
            if checked == 0 {
                eprintln!("warning: no flow files (.yaml, .yml, .flow) found");
            }
            let discovered = std::path::Path::new(crate::config::DEFAULT_CONFIG).is_file();
            if args.config.is_none() && !discovered && checked > 0 {
                eprintln!(
                    "note: without --config, names of applications, identity providers and provisioning targets are not checked"
                );
            }
            crate::cli::out(&format!(
                "{}, {} in {}\n",
                plural(errors, "error"),
                plural(warnings, "warning"),
                plural(checked, "file")
            ));
        }
        Format::Json => {
            let diagnostics: Vec<_> = views.iter().flat_map(render::locate).collect();
            let document = serde_json::json!({
                "files": views.len(),
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics,
            });
            crate::cli::out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&document).unwrap_or_default()
            ));
        }
        Format::Github => {
            for view in &views {
                crate::cli::out(&render::github(view));
            }
        }
    }
    if errors > 0 { EXIT_PROBLEMS } else { EXIT_OK }
}
