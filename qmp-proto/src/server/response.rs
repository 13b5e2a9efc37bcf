//! Responses written straight to the output, in the member order QEMU's `QDict` gives them, without building a
//! dictionary first.
//!
//! Every command and every parse error costs one response, so this is the server's hot path (a byte of garbage
//! is an error response of its own): building a [`QDict`](super::qobject::QDict) for each allocated every key,
//! the description and the dictionaries' entries. The member orders are fixed by QEMU's hash of the keys:
//! `{"return": R, "id": I}`, `{"id": I, "error": {"class": C, "desc": D}}`. The tests check them against the
//! dictionary model.
//!
//! A reply passed on from another server (the proxy's) keeps its `return` value or `error` object as that
//! server wrote it: [`Body::Verbatim`] bytes are copied as they are, between the members only this server writes.
//! Ids come as the bytes QEMU writes for them (see `request::echo`).

use super::qobject::{write_string, QObject};

/// A member's value: built here, or passed on as JSON text.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body<'a> {
    /// A value to write as QEMU writes it.
    Value(&'a QObject),
    /// The bytes of one JSON value on one line, copied as they are.
    Verbatim(&'a [u8]),
    /// `{}`, the most common return value (written as a constant, not copied from a slice).
    EmptyObject,
}

impl Body<'_> {
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Body::Value(value) => value.write(out),
            Body::Verbatim(bytes) => out.extend_from_slice(bytes),
            Body::EmptyObject => out.extend_from_slice(b"{}"),
        }
    }
}

/// An id's bytes, however they are kept.
pub(crate) trait Id {
    /// Appends the bytes.
    fn append_to(&self, out: &mut Vec<u8>);
}

impl Id for &[u8] {
    fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// Appends `{"return": VALUE, "id": ID}` (the id only when there is one).
pub(crate) fn write_return(out: &mut Vec<u8>, value: Body<'_>, id: Option<impl Id>) {
    out.extend_from_slice(b"{\"return\": ");
    value.write(out);
    if let Some(id) = id {
        out.extend_from_slice(b", \"id\": ");
        id.append_to(out);
    }
    out.push(b'}');
}

/// Appends `{"id": ID, "error": {"class": CLASS, "desc": DESC}}` (the id only when there is one). `desc` is a C
/// string to QEMU: it ends at a NUL byte.
pub(crate) fn write_error(out: &mut Vec<u8>, class: &str, desc: &[u8], id: Option<impl Id>) {
    write_error_head(out, id);
    out.extend_from_slice(b"{\"class\": ");
    write_string(out, class.as_bytes());
    out.extend_from_slice(b", \"desc\": ");
    write_string(out, desc);
    out.extend_from_slice(b"}}");
}

/// Appends `{"id": ID, "error": ERROR}` (the id only when there is one), `error` an object passed on as it is.
pub(crate) fn write_error_object(out: &mut Vec<u8>, error: Body<'_>, id: Option<impl Id>) {
    write_error_head(out, id);
    error.write(out);
    out.push(b'}');
}

/// Appends `{"id": ID, "error": ` (QEMU writes the id first in an error response), or `{"error": ` without one.
fn write_error_head(out: &mut Vec<u8>, id: Option<impl Id>) {
    out.push(b'{');
    if let Some(id) = id {
        out.extend_from_slice(b"\"id\": ");
        id.append_to(out);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"\"error\": ");
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

    /// An id as the server keeps it: the bytes QEMU writes for it.
    fn echo(id: &Option<QObject>) -> Option<Vec<u8>> {
        id.as_ref().map(|id| {
            let mut out = Vec::new();
            id.write(&mut out);
            out
        })
    }

    #[test]
    fn returns_are_written_as_the_dictionary_model_writes_them() {
        let mut value = QDict::new();
        value.put("status", QObject::str("running"));
        for id in ids() {
            let mut out = Vec::new();
            write_return(&mut out, Body::Value(&QObject::Dict(value.clone())), echo(&id).as_deref());
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
                write_error(&mut out, "GenericError", desc, echo(&id).as_deref());
                assert_eq!(out, modelled(("error", QObject::Dict(error.clone())), id.as_ref()));
                let mut written = Vec::new();
                QObject::Dict(error).write(&mut written);
                let mut passed_on = Vec::new();
                write_error_object(&mut passed_on, Body::Verbatim(&written), echo(&id).as_deref());
                assert_eq!(passed_on, out, "an error object passed on is written where a built one is");
            }
        }
    }

    #[test]
    fn verbatim_bodies_are_copied_as_they_are() {
        for id in ids() {
            let mut out = Vec::new();
            write_return(&mut out, Body::Verbatim(br#"{"z":1,"a":{"y":2,"b":3}}"#), echo(&id).as_deref());
            let mut expected = br#"{"return": {"z":1,"a":{"y":2,"b":3}}"#.to_vec();
            if let Some(id) = &id {
                expected.extend_from_slice(b", \"id\": ");
                id.write(&mut expected);
            }
            expected.push(b'}');
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        }
    }
}
