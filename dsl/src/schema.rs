//! The JSON Schema of the YAML form, generated from the AST types the parser deserializes
//! into, so that editors validate exactly what `flow check` accepts.

use crate::ast::FlowDoc;

/// Where the schema is committed, relative to the repository root.
pub const SCHEMA_PATH: &str = "schema/flow.schema.json";

/// The schema as pretty-printed JSON with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(FlowDoc);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
