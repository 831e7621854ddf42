//! `idflow flow fmt`: prints a flow in canonical YAML or `.flow` syntax. Every conversion is
//! verified: the output is compiled again and must give the same IR, or nothing is printed.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use idflow_dsl::Syntax;

use crate::cli::{EXIT_OK, EXIT_PROBLEMS};

/// Arguments of `flow fmt`.
#[derive(Debug, Args)]
pub struct FmtArgs {
    /// The flow file.
    pub file: PathBuf,
    /// The syntax to print (default: the file's own).
    #[arg(long, value_enum)]
    pub to: Option<Target>,
    /// idflow.toml to check names against (IdPs' verified attributes matter to JIT rules).
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print nothing; exit 1 if the file is not already in canonical form.
    #[arg(long)]
    pub check: bool,
}

/// Target syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The YAML form.
    Yaml,
    /// The `.flow` DSL.
    Dsl,
}

/// Runs `flow fmt`.
pub fn run(args: &FmtArgs) -> u8 {
    let (file, compiled) = match super::compile_one(&args.file, args.config.as_deref()) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    let target = args.to.unwrap_or(match file.syntax {
        Syntax::Yaml => Target::Yaml,
        Syntax::Flow => Target::Dsl,
    });
    let (output, syntax) = match target {
        Target::Yaml => (idflow_dsl::yaml::print(&compiled.doc), Syntax::Yaml),
        Target::Dsl => (idflow_dsl::print::to_dsl(&compiled.doc), Syntax::Flow),
    };
    let output = match output {
        Ok(output) => output,
        Err(message) => {
            eprintln!("error: cannot print {}: {message}", file.name);
            return EXIT_PROBLEMS;
        }
    };
    let names = super::names(args.config.as_deref()).unwrap_or_default();
    let (again, diagnostics) = idflow_dsl::compile(&output, syntax, &names);
    if again.as_ref().map(|c| &c.ir) != Some(&compiled.ir) {
        eprintln!(
            "error: internal: the formatted output of {} does not compile to the same IR; please report this",
            file.name
        );
        for d in diagnostics {
            eprintln!("  {}: {}", d.code, d.message);
        }
        return EXIT_PROBLEMS;
    }
    if args.check {
        if output == file.text {
            return EXIT_OK;
        }
        eprintln!(
            "{} is not in canonical form; run `idflow flow fmt` on it",
            file.name
        );
        return EXIT_PROBLEMS;
    }
    crate::cli::out(&output);
    EXIT_OK
}
