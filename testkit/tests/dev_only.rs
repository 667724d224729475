//! The test kit stays a dev-dependency: no workspace member lists it among
//! its normal or build dependencies, for any target.

use std::path::Path;

use toml::Table;

/// The dependency tables of a manifest that end up in a build: everything
/// but `[dev-dependencies]`, also under `[target.'…']`.
fn build_dependency_tables(manifest: &Table) -> Vec<(String, &Table)> {
    let mut out = Vec::new();
    for key in ["dependencies", "build-dependencies"] {
        if let Some(t) = manifest.get(key).and_then(|v| v.as_table()) {
            out.push((key.to_owned(), t));
        }
    }
    if let Some(targets) = manifest.get("target").and_then(|v| v.as_table()) {
        for (cfg, target) in targets {
            for key in ["dependencies", "build-dependencies"] {
                if let Some(t) = target.get(key).and_then(|v| v.as_table()) {
                    out.push((format!("target.{cfg}.{key}"), t));
                }
            }
        }
    }
    out
}

#[test]
fn no_member_depends_on_the_test_kit_outside_its_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace: Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("the workspace manifest")
        .parse()
        .expect("the workspace manifest is TOML");
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    assert!(members.len() > 1, "{members:?}");
    for member in members {
        let member = member.as_str().expect("a member path");
        let path = root.join(member).join("Cargo.toml");
        let manifest: Table = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (section, deps) in build_dependency_tables(&manifest) {
            assert!(
                !deps.contains_key("tessera-testkit"),
                "{member}: tessera-testkit in [{section}]; it is a dev-dependency only"
            );
        }
    }
}
