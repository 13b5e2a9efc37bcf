//! What the server answers by itself: `qmp_capabilities` and the guest agent's `guest-sync` /
//! `guest-sync-delimited`, each with QEMU's texts. (The shape of a command object is checked by
//! [`request`](super::request).)

use super::qobject::{QDict, QObject};

/// A key as C's `%s` prints it (up to a NUL), lossily as text.
pub(crate) fn c_str(key: &[u8]) -> String {
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
