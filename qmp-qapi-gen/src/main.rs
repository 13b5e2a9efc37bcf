//! `qmp-qapi-gen extract <release> <qemu-source-dir>` | `generate` | `check`: see the library docs.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["extract", release, source] => qmp_qapi_gen::extract(release, Path::new(source)),
        ["generate"] => write(),
        ["check"] => check(),
        _ => Err("usage: qmp-qapi-gen extract <release> <qemu-source-dir> | generate | check".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qmp-qapi-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write() -> Result<(), String> {
    let dir = qmp_qapi_gen::output_dir();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (name, text) in qmp_qapi_gen::generate()? {
        std::fs::write(dir.join(&name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn check() -> Result<(), String> {
    let dir = qmp_qapi_gen::output_dir();
    for (name, text) in qmp_qapi_gen::generate()? {
        let current = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if current != text {
            return Err(format!("{name} is stale: run `cargo run -p qmp-qapi-gen -- generate`"));
        }
    }
    Ok(())
}
