//! The shipped flows in `flows/`: they check clean against the quickstart configuration, every
//! YAML/`.flow` twin compiles to byte-identical IR, every file is in canonical `fmt` form, and
//! converting each to the other syntax keeps its IR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use idflow::{config, sources};
use idflow_dsl::{Names, Syntax, check_project, compile};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn quickstart_names() -> Names {
    config::load_names(&repo().join("examples/quickstart/idflow.toml")).expect("quickstart config")
}

fn shipped() -> Vec<idflow_dsl::SourceFile> {
    let collected = sources::collect(&[repo().join("flows")]).expect("flows/ readable");
    assert!(collected.unreadable.is_empty());
    collected.files
}

#[test]
fn shipped_flows_check_clean_against_the_quickstart_config() {
    let names =
        config::load_names(&repo().join("examples/quickstart/idflow.toml")).expect("config");
    let files = shipped();
    let ids: std::collections::BTreeSet<String> = check_project(&files, &names)
        .iter()
        .map(|r| {
            assert!(r.diagnostics.is_empty(), "{}: {:#?}", r.name, r.diagnostics);
            r.compiled.as_ref().expect("compiled").ir.flow.clone()
        })
        .collect();
    assert!(
        ids.len() >= 6,
        "only {} distinct shipped flows: {ids:?}",
        ids.len()
    );
}

#[test]
fn yaml_and_dsl_twins_compile_to_identical_ir() {
    let mut by_id: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for file in shipped() {
        let (compiled, diagnostics) = compile(&file.text, file.syntax, &quickstart_names());
        let compiled = compiled.unwrap_or_else(|| panic!("{}: {diagnostics:#?}", file.name));
        by_id.entry(compiled.ir.flow.clone()).or_default().push((
            file.name.clone(),
            compiled.ir.canonical_json(),
            compiled.version,
        ));
    }
    let twins: Vec<_> = by_id.values().filter(|forms| forms.len() > 1).collect();
    assert!(
        twins.len() >= 6,
        "expected at least six YAML/.flow twins, found {}",
        twins.len()
    );
    for forms in twins {
        let (first_name, first_ir, first_version) = &forms[0];
        for (name, ir, version) in &forms[1..] {
            assert_eq!(ir, first_ir, "{name} and {first_name} compile differently");
            assert_eq!(version, first_version);
        }
    }
}

#[test]
fn shipped_files_are_canonical_and_convert_both_ways() {
    for file in shipped() {
        let (compiled, _) = compile(&file.text, file.syntax, &quickstart_names());
        let compiled = compiled.expect("compiles");
        let yaml = idflow_dsl::yaml::print(&compiled.doc).expect("prints YAML");
        let dsl = idflow_dsl::print::to_dsl(&compiled.doc).expect("prints DSL");
        let own = if file.syntax == Syntax::Yaml {
            &yaml
        } else {
            &dsl
        };
        assert_eq!(
            own, &file.text,
            "{} is not in canonical form (idflow flow fmt)",
            file.name
        );
        for (text, syntax) in [(&yaml, Syntax::Yaml), (&dsl, Syntax::Flow)] {
            let (again, diagnostics) = compile(text, syntax, &quickstart_names());
            let again = again.unwrap_or_else(|| {
                panic!(
                    "{} converted to {syntax:?} fails: {diagnostics:#?}\n{text}",
                    file.name
                )
            });
            assert_eq!(
                again.ir, compiled.ir,
                "{} changes meaning when converted to {syntax:?}",
                file.name
            );
        }
    }
}

#[test]
fn committed_json_schema_matches_the_generated_one() {
    let path = repo().join(idflow_dsl::schema::SCHEMA_PATH);
    let generated = idflow_dsl::schema::json_schema();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed,
        generated,
        "run `idflow flow schema --output {}`",
        idflow_dsl::schema::SCHEMA_PATH
    );
}

#[test]
fn the_schema_accepts_the_shipped_yaml_flows_shape() {
    // The schema is generated from the same types; check it names the fields a flow uses.
    let schema: serde_json::Value =
        serde_json::from_str(&idflow_dsl::schema::json_schema()).expect("json");
    let properties = schema["properties"].as_object().expect("properties");
    for field in [
        "flow",
        "steps",
        "states",
        "jit",
        "provisioning",
        "require",
        "on_success",
    ] {
        assert!(properties.contains_key(field), "schema lacks {field}");
    }
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
}
