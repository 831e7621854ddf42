//! The language reference documents every diagnostic code, so none ships undocumented.

use idflow_dsl::Code;

#[test]
fn the_language_reference_lists_every_diagnostic_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/flow-language.md");
    let doc = std::fs::read_to_string(path).expect("docs/flow-language.md");
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !doc.contains(&format!("| {c} |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/flow-language.md does not document {missing:?}"
    );
}
