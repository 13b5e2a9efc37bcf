//! What one server has, from its `query-qmp-schema` reply: commands, events, their members (through union
//! variants and nested objects) and enum values. Type names in QEMU's introspection are masked (`"123"`), so
//! questions are asked by path from a command or event, the way a caller knows them.

use std::collections::HashMap;

use qmp_proto::RawJson;
use serde_json::Value;

/// The server's introspected schema, read once (`query-qmp-schema`) and asked many times.
///
/// ```
/// use qmp_qapi::ServerSchema;
/// let reply = serde_json::json!([
///     {"name": "blockdev-add", "meta-type": "command", "arg-type": "0", "ret-type": "1"},
///     {"name": "0", "meta-type": "object", "members": [{"name": "driver", "type": "2"}], "tag": "driver",
///      "variants": [{"case": "file", "type": "3"}]},
///     {"name": "1", "meta-type": "object", "members": []},
///     {"name": "2", "meta-type": "enum", "values": ["file", "qcow2"]},
///     {"name": "3", "meta-type": "object", "members": [{"name": "filename", "type": "str"}]},
///     {"name": "str", "meta-type": "builtin", "json-type": "string"},
/// ]);
/// let schema = ServerSchema::from_value(reply).unwrap();
/// assert!(schema.has_command("blockdev-add"));
/// assert!(!schema.has_command("query-cpus-fast"));
/// assert!(schema.has_argument("blockdev-add", &["filename"])); // a member of the `file` branch
/// assert!(schema.accepts_value("blockdev-add", &["driver"], "qcow2"));
/// assert!(!schema.accepts_value("blockdev-add", &["driver"], "vmdk"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerSchema {
    entries: HashMap<String, Value>,
}

/// How deep a path may lead through arrays and alternates before giving up (the schema has cycles).
const MAX_HOPS: usize = 16;

impl ServerSchema {
    /// Reads the reply of `query-qmp-schema` (a JSON array of `SchemaInfo`).
    pub fn from_value(reply: Value) -> Result<ServerSchema, serde_json::Error> {
        let items: Vec<Value> = serde_json::from_value(reply)?;
        let entries =
            items.into_iter().filter_map(|item| Some((item.get("name")?.as_str()?.to_owned(), item))).collect();
        Ok(ServerSchema { entries })
    }

    /// Reads the raw reply of `query-qmp-schema`.
    pub fn from_raw(reply: &RawJson) -> Result<ServerSchema, serde_json::Error> {
        Self::from_value(reply.deserialize()?)
    }

    fn of_meta(&self, name: &str, meta: &str) -> Option<&Value> {
        self.entries.get(name).filter(|e| e["meta-type"] == meta)
    }

    /// Whether the server has the command.
    pub fn has_command(&self, name: &str) -> bool {
        self.of_meta(name, "command").is_some()
    }

    /// Whether the server has the event.
    pub fn has_event(&self, name: &str) -> bool {
        self.of_meta(name, "event").is_some()
    }

    /// The names of every command the server has.
    pub fn commands(&self) -> impl Iterator<Item = &str> {
        self.entries.values().filter(|e| e["meta-type"] == "command").filter_map(|e| e["name"].as_str())
    }

    /// The names of every event the server has.
    pub fn events(&self) -> impl Iterator<Item = &str> {
        self.entries.values().filter(|e| e["meta-type"] == "event").filter_map(|e| e["name"].as_str())
    }

    /// Whether the command takes the argument at `path` (member names from the arguments object down, through
    /// union branches, alternates and arrays): `has_argument("blockdev-add", &["cache", "direct"])`.
    pub fn has_argument(&self, command: &str, path: &[&str]) -> bool {
        self.argument_type(command, path).is_some()
    }

    /// Whether the argument at `path` is required (in its object; an ancestor may still be optional).
    pub fn argument_is_required(&self, command: &str, path: &[&str]) -> Option<bool> {
        let (last, parent) = path.split_last()?;
        let ty = self.type_at(self.of_meta(command, "command")?["arg-type"].as_str()?, parent)?;
        self.member(ty, last).map(|m| m.get("default").is_none())
    }

    /// Whether the enum at the argument `path` (or an alternate with an enum branch) has `value`.
    pub fn accepts_value(&self, command: &str, path: &[&str], value: &str) -> bool {
        self.argument_type(command, path).is_some_and(|ty| self.enum_has(ty, value, 0))
    }

    /// Whether the command's result has the member at `path` (`&[]`: whether it has a result type at all).
    pub fn has_result_member(&self, command: &str, path: &[&str]) -> bool {
        self.of_meta(command, "command")
            .and_then(|c| c["ret-type"].as_str())
            .and_then(|ret| self.type_at(ret, path))
            .is_some()
    }

    /// Whether the event's `data` has the member at `path`.
    pub fn has_event_member(&self, event: &str, path: &[&str]) -> bool {
        self.of_meta(event, "event")
            .and_then(|e| e["arg-type"].as_str())
            .and_then(|arg| self.type_at(arg, path))
            .is_some()
    }

    /// The introspection entry (`SchemaInfo`) of a (masked) type name, for questions this API does not cover.
    pub fn entry(&self, name: &str) -> Option<&Value> {
        self.entries.get(name)
    }

    fn argument_type(&self, command: &str, path: &[&str]) -> Option<&str> {
        self.type_at(self.of_meta(command, "command")?["arg-type"].as_str()?, path)
    }

    fn type_at<'s>(&'s self, mut ty: &'s str, path: &[&str]) -> Option<&'s str> {
        for name in path {
            ty = self.member(ty, name)?["type"].as_str()?;
        }
        Some(ty)
    }

    /// The member `name` of an object type (its own members or a variant's), looking through arrays and
    /// alternates.
    fn member(&self, ty: &str, name: &str) -> Option<&Value> {
        self.member_in(ty, name, 0)
    }

    fn member_in(&self, ty: &str, name: &str, hops: usize) -> Option<&Value> {
        if hops > MAX_HOPS {
            return None;
        }
        let entry = self.entries.get(ty)?;
        match entry["meta-type"].as_str()? {
            "object" => {
                let own = entry["members"].as_array()?.iter().find(|m| m["name"] == name);
                own.or_else(|| {
                    entry["variants"]
                        .as_array()?
                        .iter()
                        .find_map(|v| self.member_in(v["type"].as_str()?, name, hops + 1))
                })
            }
            "array" => self.member_in(entry["element-type"].as_str()?, name, hops + 1),
            "alternate" => {
                entry["members"].as_array()?.iter().find_map(|m| self.member_in(m["type"].as_str()?, name, hops + 1))
            }
            _ => None,
        }
    }

    fn enum_has(&self, ty: &str, value: &str, hops: usize) -> bool {
        let Some(entry) = self.entries.get(ty) else { return false };
        if hops > MAX_HOPS {
            return false;
        }
        match entry["meta-type"].as_str() {
            Some("enum") => entry["values"].as_array().is_some_and(|v| v.iter().any(|v| v == value)),
            Some("array") => entry["element-type"].as_str().is_some_and(|t| self.enum_has(t, value, hops + 1)),
            Some("alternate") => entry["members"].as_array().is_some_and(|m| {
                m.iter().any(|m| m["type"].as_str().is_some_and(|t| self.enum_has(t, value, hops + 1)))
            }),
            _ => false,
        }
    }
}
