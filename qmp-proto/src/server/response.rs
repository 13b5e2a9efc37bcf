//! Responses written straight to the output, in the member order QEMU's `QDict` gives them, without building a
//! dictionary first.
//!
//! Every command and every parse error costs one response, so this is the server's hot path (a byte of garbage
//! is an error response of its own): building a [`QDict`](super::qobject::QDict) for each allocated every key,
//! the description and the dictionaries' entries. The member orders are fixed by QEMU's hash of the keys:
//! `{"return": R, "id": I}`, `{"id": I, "error": {"class": C, "desc": D}}`. The tests check them against the
//! dictionary model.

use super::qobject::{write_string, QObject};

/// Appends `{"return": VALUE, "id": ID}` (the id only when there is one).
pub(crate) fn write_return(out: &mut Vec<u8>, value: &QObject, id: Option<&QObject>) {
    out.extend_from_slice(b"{\"return\": ");
    value.write(out);
    if let Some(id) = id {
        out.extend_from_slice(b", \"id\": ");
        id.write(out);
    }
    out.push(b'}');
}

/// Appends `{"id": ID, "error": {"class": CLASS, "desc": DESC}}` (the id only when there is one). `desc` is a C
/// string to QEMU: it ends at a NUL byte.
pub(crate) fn write_error(out: &mut Vec<u8>, class: &str, desc: &[u8], id: Option<&QObject>) {
    out.push(b'{');
    if let Some(id) = id {
        out.extend_from_slice(b"\"id\": ");
        id.write(out);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"\"error\": {\"class\": ");
    write_string(out, class.as_bytes());
    out.extend_from_slice(b", \"desc\": ");
    write_string(out, desc);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::super::qobject::QDict;
    use super::*;

    /// The response as the dictionary model writes it.
    fn modelled(body: (&str, QObject), id: Option<&QObject>) -> Vec<u8> {
        let mut rsp = QDict::new();
        rsp.put(body.0, body.1);
        if let Some(id) = id {
            rsp.put("id", id.clone());
        }
        let mut out = Vec::new();
        QObject::Dict(rsp).write(&mut out);
        out
    }

    fn ids() -> Vec<Option<QObject>> {
        let mut dict = QDict::new();
        dict.put("a", QObject::List(vec![QObject::Null, QObject::Double(1.5)]));
        vec![None, Some(QObject::Int(-7)), Some(QObject::str("x\"y")), Some(QObject::Dict(dict))]
    }

    #[test]
    fn returns_are_written_as_the_dictionary_model_writes_them() {
        let mut value = QDict::new();
        value.put("status", QObject::str("running"));
        for id in ids() {
            let mut out = Vec::new();
            write_return(&mut out, &QObject::Dict(value.clone()), id.as_ref());
            assert_eq!(out, modelled(("return", QObject::Dict(value.clone())), id.as_ref()));
        }
    }

    #[test]
    fn errors_are_written_as_the_dictionary_model_writes_them() {
        for id in ids() {
            for desc in [&b"JSON parse error, stray '\x01'"[..], b"a\0cut", "caf\u{e9}".as_bytes()] {
                let mut error = QDict::new();
                error.put("class", QObject::str("GenericError"));
                error.put("desc", QObject::String(desc.to_vec()));
                let mut out = Vec::new();
                write_error(&mut out, "GenericError", desc, id.as_ref());
                assert_eq!(out, modelled(("error", QObject::Dict(error)), id.as_ref()));
            }
        }
    }
}
