//! Every command, member and enum value of a live server's `query-qmp-schema` is representable by qmp-qapi's
//! generated types. The walk builds, from the introspection alone, argument objects for every command, results
//! for every command and data for every event, covering each member (optional ones too), each enum value, each
//! union branch and each alternate branch at least once; each must decode into the generated type without
//! anything landing in `extra_members` or an `Other` variant, and encode back to the same JSON.

use std::collections::{HashMap, HashSet};

use crate::support::{qmp_commands, unknown_in, Outcome};
use qmp_blocking::Client;
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use serde_json::{json, Map, Value};

/// The introspection, by (masked) type name.
struct Introspection {
    entries: HashMap<String, Value>,
}

impl Introspection {
    fn entry(&self, name: &str) -> &Value {
        self.entries.get(name).unwrap_or_else(|| panic!("type {name} missing from the introspection"))
    }

    /// Values of type `ty` that together use every member, enum value and branch reachable from it without
    /// entering a type already on `path` (recursion ends at optional members, empty arrays and the alternate
    /// branches that are not objects).
    fn samples(&self, ty: &str, path: &mut Vec<String>) -> Vec<Value> {
        let entry = self.entry(ty);
        let meta = entry["meta-type"].as_str().unwrap();
        if path.iter().any(|p| p == ty) && matches!(meta, "object" | "alternate" | "array") {
            return vec![];
        }
        path.push(ty.to_owned());
        let out = match meta {
            "builtin" => vec![match entry["json-type"].as_str().unwrap() {
                "string" => json!("text"),
                "int" => json!(1),
                "number" => json!(1.5),
                "boolean" => json!(true),
                "null" => Value::Null,
                _ => json!({"any": [1, "two"]}),
            }],
            "enum" => entry["values"].as_array().unwrap().clone(),
            "array" => {
                let inner = self.samples(entry["element-type"].as_str().unwrap(), path);
                vec![Value::Array(inner)]
            }
            "alternate" => entry["members"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| self.samples(m["type"].as_str().unwrap(), path))
                .collect(),
            "object" => self.object_samples(entry, path),
            other => panic!("meta-type {other} as a value"),
        };
        path.pop();
        out
    }

    /// The smallest value of a type: required members only, first enum value, first branch.
    fn minimal(&self, ty: &str, depth: usize) -> Value {
        assert!(depth < 32, "no finite value for {ty}");
        let entry = self.entry(ty);
        match entry["meta-type"].as_str().unwrap() {
            "builtin" | "enum" => self.samples(ty, &mut vec![]).remove(0),
            "array" => json!([]),
            "alternate" => {
                let members = entry["members"].as_array().unwrap();
                let scalar = members.iter().find(|m| self.entry(m["type"].as_str().unwrap())["meta-type"] != "object");
                self.minimal(scalar.unwrap_or(&members[0])["type"].as_str().unwrap(), depth + 1)
            }
            _ => {
                let mut object = Map::new();
                for member in entry["members"].as_array().unwrap() {
                    if member.get("default").is_none() {
                        let value = self.minimal(member["type"].as_str().unwrap(), depth + 1);
                        object.insert(member["name"].as_str().unwrap().to_owned(), value);
                    }
                }
                if let Some(tag) = entry.get("tag").and_then(Value::as_str) {
                    let case = object[tag].clone();
                    let variant = entry["variants"].as_array().unwrap().iter().find(|v| v["case"] == case);
                    if let Some(v) = variant {
                        let branch = self.minimal(v["type"].as_str().unwrap(), depth + 1);
                        object.extend(branch.as_object().unwrap().clone());
                    }
                }
                Value::Object(object)
            }
        }
    }

    fn object_samples(&self, entry: &Value, path: &mut Vec<String>) -> Vec<Value> {
        let tag = entry.get("tag").and_then(Value::as_str);
        // Each member's samples; the object's k-th sample takes each member's (k mod n)-th.
        let mut columns: Vec<(String, Vec<Value>)> = Vec::new();
        for member in entry["members"].as_array().unwrap() {
            let name = member["name"].as_str().unwrap();
            if Some(name) == tag {
                continue;
            }
            let mut values = self.samples(member["type"].as_str().unwrap(), path);
            if values.is_empty() && member.get("default").is_none() {
                // A required member back into a type on the path: the smallest value will do.
                values.push(self.minimal(member["type"].as_str().unwrap(), 0));
            }
            if !values.is_empty() {
                columns.push((name.to_owned(), values));
            }
        }
        let base = |k: usize| -> Map<String, Value> {
            columns.iter().map(|(name, values)| (name.clone(), values[k % values.len()].clone())).collect()
        };
        let width = columns.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
        let Some(tag) = tag else { return (0..width).map(|k| Value::Object(base(k))).collect() };
        // A union: every tag value, with its branch's members.
        let tag_type =
            entry["members"].as_array().unwrap().iter().find(|m| m["name"] == tag).unwrap()["type"].as_str().unwrap();
        let variants: HashMap<&str, &str> = entry["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["case"].as_str().unwrap(), v["type"].as_str().unwrap()))
            .collect();
        let mut out = Vec::new();
        for (i, case) in self.entry(tag_type)["values"].as_array().unwrap().iter().enumerate() {
            let branch = match variants.get(case.as_str().unwrap()) {
                Some(ty) => self.samples(ty, path),
                None => vec![json!({})],
            };
            for (j, b) in branch.iter().enumerate() {
                let mut object = base(i + j);
                object.insert(tag.to_owned(), case.clone());
                object.extend(b.as_object().unwrap().clone());
                out.push(Value::Object(object));
            }
            if width > branch.len() {
                for k in branch.len()..width {
                    let mut object = base(k);
                    object.insert(tag.to_owned(), case.clone());
                    if let Some(b) = branch.first() {
                        object.extend(b.as_object().unwrap().clone());
                    }
                    out.push(Value::Object(object));
                }
            }
        }
        out
    }
}

/// Walks one server's introspection; returns what was checked and every failure.
fn walk(qmp: &mut Client) -> (usize, usize, Vec<String>) {
    let schema: Vec<Value> = qmp.execute("query-qmp-schema", ()).unwrap();
    let intro =
        Introspection { entries: schema.iter().map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone())).collect() };
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut items = 0;
    let mut check = |what: String, outcome: Option<Outcome>, failures: &mut Vec<String>| {
        checked += 1;
        match outcome {
            None => failures.push(format!("{what}: not in the generated schema")),
            Some(Outcome::Equal(debug)) => {
                // A member that is a `str` in one release and an enum in another (BlockJobInfo's `type`: `str` in
                // 7.2, `JobType` in 10.0) has the enum's type: the string sample lands in `Other`, as any string
                // the older release sends would.
                let debug = debug.replace("Other(\"text\")", "");
                // SevInfo was a struct in 7.2 and is a union on `sev-type` since 9.1: without the discriminator,
                // `handle` and `policy` (branch members since 9.1) stay in the `Other` branch, kept but untyped.
                let sev_72 = what.starts_with("query-sev result") && debug.contains("sev_type: None");
                if let Some(unknown) = unknown_in(&debug).filter(|_| !sev_72) {
                    failures.push(format!("{what}: not representable: {unknown}"));
                }
            }
            Some(other) => failures.push(format!("{what}: {other:?}")),
        }
    };
    let mut seen_events = HashSet::new();
    for entry in &schema {
        let name = entry["name"].as_str().unwrap();
        match entry["meta-type"].as_str().unwrap() {
            "command" => {
                items += 1;
                for args in intro.samples(entry["arg-type"].as_str().unwrap(), &mut vec![]) {
                    let outcome = qmp_commands::arguments(name, &args);
                    check(format!("{name} arguments {args}"), outcome, &mut failures);
                }
                for ret in intro.samples(entry["ret-type"].as_str().unwrap(), &mut vec![]) {
                    let outcome = qmp_commands::result(name, &ret);
                    check(format!("{name} result {ret}"), outcome, &mut failures);
                }
            }
            "event" => {
                items += 1;
                seen_events.insert(name.to_owned());
                for data in intro.samples(entry["arg-type"].as_str().unwrap(), &mut vec![]) {
                    let text = data.to_string();
                    let outcome = match qmp_qapi::qmp::Event::decode(name, Some(&text)) {
                        Err(e) => Outcome::Failed(e.to_string()),
                        Ok(typed) => match typed.data() {
                            Ok(Some(encoded)) if encoded == data => Outcome::Equal(format!("{typed:?}")),
                            Ok(None) if data == json!({}) => Outcome::Equal(format!("{typed:?}")),
                            Ok(encoded) => Outcome::Differs { encoded: encoded.unwrap_or_default() },
                            Err(e) => Outcome::Failed(e.to_string()),
                        },
                    };
                    check(format!("event {name} data {data}"), Some(outcome), &mut failures);
                }
            }
            _ => {}
        }
    }
    assert!(seen_events.len() > 5);
    (items, checked, failures)
}

fn walk_server(server: QemuServer, label: &str) {
    let mut qmp = Client::connect_unix(server.socket_path(), Default::default()).unwrap();
    let (items, checked, failures) = walk(&mut qmp);
    println!("{label}: {items} commands and events, {checked} sample values decoded and re-encoded");
    assert!(failures.is_empty(), "{label}: {} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn storage_daemon_10_schema_is_representable() {
    let server = require!(QemuServer::storage_daemon());
    let label = format!("qemu-storage-daemon {}", server.version());
    walk_server(server, &label);
}

#[test]
fn system_72_schema_is_representable() {
    walk_server(require!(QemuServer::system()), "qemu-system-x86_64 7.2");
}
