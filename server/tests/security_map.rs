//! `docs/security-tests.md` maps each security rule to the tests that prove it. This test
//! keeps that map from rotting: every `path::name` reference in backticks must name a file
//! of the repository that still defines that test (`def name(` in Python, `fn name(` in
//! Rust). It cannot tell whether the test still asserts the rule; reviewers do that.

use std::path::Path;

/// Every `path::name` in backticks: a path that ends in `.py` or `.rs`, then an identifier.
fn references(doc: &str) -> Vec<(&str, &str)> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| span.rsplit_once("::"))
        .filter(|(path, name)| {
            (path.ends_with(".py") || path.ends_with(".rs"))
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect()
}

#[test]
fn every_test_the_security_map_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/security-tests.md"))
        .expect("docs/security-tests.md is readable");
    let refs = references(&doc);
    assert!(
        refs.len() > 50,
        "docs/security-tests.md names only {} tests: is the reference format still `path::name`?",
        refs.len()
    );
    let mut missing = Vec::new();
    for (path, name) in refs {
        let Ok(source) = std::fs::read_to_string(root.join(path)) else {
            missing.push(format!("{path}: no such file"));
            continue;
        };
        let definition = if path.ends_with(".py") {
            format!("def {name}(")
        } else {
            format!("fn {name}(")
        };
        if !source.contains(&definition) {
            missing.push(format!("{path}: no `{definition}`"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/security-tests.md names tests that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn references_are_read_from_backticks_only() {
    let doc = "| `a/b.py::test_x` | `cargo test -p x` | `c/d.rs::fn_y`, not::this.rs::z |";
    assert_eq!(references(doc), [("a/b.py", "test_x"), ("c/d.rs", "fn_y")]);
}
