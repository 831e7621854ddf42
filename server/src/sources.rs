//! Finding and reading flow files: directories are walked in sorted order, and unreadable
//! files become F003 diagnostics rather than aborting the run, so one bad file does not hide
//! the problems of the others.

use std::path::{Path, PathBuf};

use idflow_dsl::{Code, Diagnostic, MAX_SOURCE_BYTES, SourceFile, Syntax};

/// A file that could not be read as a flow, with the reason as a diagnostic.
#[derive(Debug)]
pub struct Unreadable {
    /// Display name.
    pub name: String,
    /// The F003 diagnostic.
    pub diagnostic: Diagnostic,
}

/// What `collect` found.
#[derive(Debug, Default)]
pub struct Collected {
    /// Files read successfully.
    pub files: Vec<SourceFile>,
    /// Files that exist but cannot be used.
    pub unreadable: Vec<Unreadable>,
}

/// Suffix of scenario files, which live beside flows but are not flows.
pub const SCENARIO_SUFFIX: &str = ".test.yaml";

/// Collects the flow files named by `paths` (files, or directories walked recursively).
/// A path that does not exist is an `Err` (a usage error, exit 2).
pub fn collect(paths: &[PathBuf]) -> Result<Collected, String> {
    let is_flow =
        |name: &str| Syntax::from_path(name).is_some() && !name.ends_with(SCENARIO_SUFFIX);
    // A file named explicitly is read whatever its name, so a wrong one gets an F003 diagnostic.
    let found = find(paths, &is_flow, &|_| true)?;
    let mut collected = Collected::default();
    for path in found {
        let name = path.display().to_string();
        match read(&path) {
            Ok(file) => collected.files.push(file),
            Err(diagnostic) => collected.unreadable.push(Unreadable { name, diagnostic }),
        }
    }
    Ok(collected)
}

/// The files under `paths`: directories are walked recursively in sorted order (hidden entries
/// skipped) for names `in_dirs` accepts; files named directly are kept when `named` accepts them.
/// A path that does not exist is an `Err` (a usage error, exit 2).
fn find(
    paths: &[PathBuf],
    in_dirs: &dyn Fn(&str) -> bool,
    named: &dyn Fn(&str) -> bool,
) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for path in paths {
        let metadata =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if metadata.is_dir() {
            walk(path, in_dirs, &mut found)
                .map_err(|e| format!("cannot read directory {}: {e}", path.display()))?;
        } else if named(&path.to_string_lossy()) {
            found.push(path.clone());
        }
    }
    Ok(found)
}

fn walk(dir: &Path, keep: &dyn Fn(&str) -> bool, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), keep, found)?;
        } else if keep(&name) {
            found.push(entry.path());
        }
    }
    Ok(())
}

/// Reads one flow file, refusing what is too large or not UTF-8.
pub fn read(path: &Path) -> Result<SourceFile, Diagnostic> {
    let name = path.display().to_string();
    let Some(syntax) = Syntax::from_path(&name) else {
        return Err(Diagnostic::error(
            Code::Unreadable,
            None,
            "not a flow file: the name must end in .yaml, .yml or .flow",
        ));
    };
    let unreadable = |message: String| Diagnostic::error(Code::Unreadable, None, message);
    let metadata = std::fs::metadata(path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
    if !metadata.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    if metadata.len() > MAX_SOURCE_BYTES as u64 {
        return Err(unreadable(format!(
            "file is {} bytes; flow files are limited to {MAX_SOURCE_BYTES}",
            metadata.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        unreadable(format!("not valid UTF-8 (first bad byte at offset {at})"))
    })?;
    Ok(SourceFile { name, text, syntax })
}

/// Scenario files (`*.test.yaml`) under `paths`, as (display name, text), in sorted order.
pub fn collect_scenarios(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let is_scenario = |name: &str| name.ends_with(SCENARIO_SUFFIX);
    let found = find(paths, &is_scenario, &is_scenario)?;
    found
        .into_iter()
        .map(|path| {
            let name = path.display().to_string();
            let metadata =
                std::fs::metadata(&path).map_err(|e| format!("cannot read {name}: {e}"))?;
            if metadata.len() > MAX_SOURCE_BYTES as u64 {
                return Err(format!(
                    "{name}: scenario files are limited to {MAX_SOURCE_BYTES} bytes"
                ));
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read {name}: {e}"))?;
            Ok((name, text))
        })
        .collect()
}

/// What changes when any file under `paths` changes: each file's path, size and modification
/// time, in order (`serve --watch` compares two of these).
pub fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(path: &Path, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(path) else {
                return;
            };
            let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            children.sort();
            for child in children {
                walk(&child, out);
            }
        } else {
            out.push((path.to_path_buf(), meta.len(), meta.modified().ok()));
        }
    }
    let mut out = Vec::new();
    for path in paths {
        walk(path, &mut out);
    }
    out
}
