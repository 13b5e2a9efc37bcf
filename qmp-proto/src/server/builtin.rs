//! What the server answers by itself: the shape of a command object, `qmp_capabilities`, and the guest
//! agent's `guest-sync` / `guest-sync-delimited`, each with QEMU's texts.

use super::qobject::{QDict, QObject};

/// QEMU's `qmp_dispatch_check_obj`: the members of a command object, checked in QEMU's hash order.
/// Returns the command name, taken out of the dictionary, and whether it came as `exec-oob`.
pub(crate) fn check_command_object(dict: &mut QDict, allow_oob: bool) -> Result<(Vec<u8>, bool), String> {
    let mut exec: Option<(&[u8], &QObject)> = None;
    for (key, value) in dict.iter() {
        if key == b"execute" || (key == b"exec-oob" && allow_oob) {
            let name = || String::from_utf8_lossy(key);
            if !matches!(value, QObject::String(_)) {
                return Err(format!("QMP input member '{}' must be a string", name()));
            }
            if let Some((first, _)) = exec {
                let first = String::from_utf8_lossy(first);
                return Err(format!("QMP input member '{}' clashes with '{first}'", name()));
            }
            exec = Some((key, value));
        } else if key == b"arguments" {
            if !matches!(value, QObject::Dict(_)) {
                return Err("QMP input member 'arguments' must be an object".into());
            }
        } else if key != b"id" {
            return Err(format!("QMP input member '{}' is unexpected", c_str(key)));
        }
    }
    let oob = match exec {
        Some((key, QObject::String(_))) => key == b"exec-oob",
        _ => return Err("QMP input lacks member 'execute'".into()),
    };
    match dict.take(if oob { "exec-oob" } else { "execute" }) {
        Some(QObject::String(name)) => Ok((name, oob)),
        _ => Err("QMP input lacks member 'execute'".into()),
    }
}

/// A key as C's `%s` prints it (up to a NUL), lossily as text.
fn c_str(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.iter().position(|&b| b == 0).unwrap_or(key.len())]).into_owned()
}

/// QEMU's `visit_check_struct`: the first argument no member of the command takes.
fn unexpected_members(args: &QDict, known: &[&str]) -> Result<(), String> {
    match args.iter().find(|(k, _)| !known.iter().any(|n| n.as_bytes() == *k)) {
        Some((k, _)) => Err(format!("Parameter '{}' is unexpected", c_str(k))),
        None => Ok(()),
    }
}

/// The capabilities `qmp_capabilities` asks to enable, checked as QEMU's generated visitor does.
pub(crate) fn capabilities_to_enable(args: Option<&QDict>) -> Result<Vec<String>, String> {
    let Some(args) = args else { return Ok(Vec::new()) };
    let mut enable = Vec::new();
    if let Some(list) = args.get("enable") {
        let QObject::List(items) = list else {
            return Err("Invalid parameter type for 'enable', expected: array".into());
        };
        for (i, item) in items.iter().enumerate() {
            let QObject::String(s) = item else {
                return Err(format!("Invalid parameter type for 'enable[{i}]', expected: string"));
            };
            if s != b"oob" {
                return Err(format!("Parameter 'null' does not accept value '{}'", c_str(s)));
            }
            enable.push("oob".to_string());
        }
    }
    unexpected_members(args, &["enable"])?;
    Ok(enable)
}

/// The `id` argument of `guest-sync` / `guest-sync-delimited`, checked as qemu-ga's visitor does.
pub(crate) fn guest_sync_id(args: Option<&QDict>) -> Result<QObject, String> {
    let id = args.and_then(|a| a.get("id"));
    let value = match id {
        None => return Err("Parameter 'id' is missing".into()),
        Some(QObject::Int(i)) => QObject::Int(*i),
        Some(QObject::UInt(_)) => return Err("Parameter 'id' expects integer".into()),
        Some(_) => return Err("Invalid parameter type for 'id', expected: integer".into()),
    };
    if let Some(args) = args {
        unexpected_members(args, &["id"])?;
    }
    Ok(value)
}
