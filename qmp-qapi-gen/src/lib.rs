//! The generator of `qmp-qapi`'s types (a workspace tool, not published).
//!
//! Two steps:
//! 1. `extract`: read QEMU's QAPI schema (`qapi/qapi-schema.json` and `qga/qapi-schema.json` of a QEMU source
//!    tree, with their includes) and write the definitions, without QEMU's documentation comments, to
//!    `schema/<release>/{qmp,qga}.json`: one definition per line, in QAPI's own expression form.
//! 2. `generate`: read every `schema/<release>/` directory, merge the releases ([`merge`]) and write
//!    `qmp-qapi/src/generated/{qmp,qga}.rs` ([`emit`]). A test (`tests/current.rs`) regenerates and compares, so
//!    CI fails when the checked-in code is stale.
//!
//! Adding a release is one more directory: `cargo run -p qmp-qapi-gen -- extract 9.2 /path/to/qemu-9.2` then
//! `cargo run -p qmp-qapi-gen -- generate`.

use std::path::{Path, PathBuf};

pub mod emit;
pub mod merge;
pub mod model;
pub mod parse;

/// The two schemas of a QEMU release.
pub const SCHEMAS: [(&str, &str); 2] = [("qmp", "qapi/qapi-schema.json"), ("qga", "qga/qapi-schema.json")];

/// The generator crate's directory (holds `schema/`).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the generated files go.
pub fn output_dir() -> PathBuf {
    crate_dir().join("../qmp-qapi/src/generated")
}

/// Writes `schema/<release>/{qmp,qga}.json` from a QEMU source tree.
pub fn extract(release: &str, qemu_source: &Path) -> Result<(), String> {
    let dir = crate_dir().join("schema").join(release);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (name, path) in SCHEMAS {
        let exprs = parse::read_schema(&qemu_source.join(path))?;
        model::Schema::from_exprs(&exprs)?; // refuse what the generator could not read
        let mut text = String::from("[\n");
        for (i, e) in exprs.iter().enumerate() {
            text.push_str(&serde_json::to_string(e).map_err(|e| e.to_string())?);
            text.push_str(if i + 1 < exprs.len() { ",\n" } else { "\n" });
        }
        text.push_str("]\n");
        std::fs::write(dir.join(format!("{name}.json")), text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The releases in `schema/`, oldest first, with their schemas of one kind (`qmp` or `qga`).
pub fn load(kind: &str) -> Result<Vec<(String, model::Schema)>, String> {
    let mut releases = Vec::new();
    for entry in std::fs::read_dir(crate_dir().join("schema")).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.path().is_dir() {
            continue;
        }
        let release = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path().join(format!("{kind}.json"))).map_err(|e| e.to_string())?;
        let exprs: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        releases.push((release.clone(), model::Schema::from_exprs(&exprs).map_err(|e| format!("{release}: {e}"))?));
    }
    releases.sort_by_key(|(r, _)| version_key(r));
    Ok(releases)
}

fn version_key(release: &str) -> Vec<u32> {
    release.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The generated files: (file name, contents).
pub fn generate() -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (kind, _) in SCHEMAS {
        let releases = load(kind)?;
        let merged = merge::merge(&releases);
        out.push((format!("{kind}.rs"), emit::emit(kind, &merged)));
    }
    Ok(out)
}
