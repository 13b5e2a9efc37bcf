//! [`FakeQemu`]: a [`Responder`] that plays qemu-storage-daemon 10 well enough for tests and demos, with no QEMU
//! installed: it answers `query-version`, `query-status`, `stop` / `cont` (with their `STOP` / `RESUME` events),
//! `query-commands`, `query-qmp-schema` (qemu-storage-daemon 10.0.2's recorded schema) and `quit`, plus whatever a
//! [`Script`] says. The arguments of every command in the schema are checked the way QEMU's generated code
//! checks them, with QEMU's texts: `Parameter 'node-name' is missing`, `Parameter 'x' is unexpected`,
//! `Invalid parameter type for 'node-name', expected: string`, `Parameter 'driver' does not accept value 'y'`.
//!
//! ```
//! use qmp_blocking::fake_qemu::{FakeQemu, Script};
//! use qmp_blocking::serve::Responder;
//! let script = Script::from_json(r#"{"query-block": {"return": []}}"#).unwrap();
//! let fake = FakeQemu::new().with_script(script);
//! assert!(fake.config().mode() == qmp_proto::Mode::Qmp);
//! ```

use std::collections::{BTreeMap, HashMap};

use qmp_proto::server::{Command, Failure, ServerConfig};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::serve::{Responder, Response};

/// qemu-storage-daemon 10.0.2's `query-qmp-schema`, as recorded.
pub const QSD_10_SCHEMA: &str = include_str!("../data/qsd-10.0.2-schema.json");

/// Canned answers per command, read from JSON:
/// `{"NAME": {"return": VALUE} | {"error": {"class": C, "desc": D}}, "events": [{"event": E, "data": D}],
/// "oob": true}`. Events go out before the reply, as a command's own events do in QEMU; `oob` lets the command
/// run out of band (`exec-oob`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Script {
    commands: BTreeMap<String, Scripted>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scripted {
    #[serde(rename = "return")]
    ret: Option<Value>,
    error: Option<ScriptedError>,
    #[serde(default)]
    events: Vec<ScriptedEvent>,
    /// The command may run out of band (`exec-oob`).
    #[serde(default)]
    oob: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct ScriptedError {
    class: String,
    desc: String,
}

#[derive(Debug, Clone, Deserialize)]
struct ScriptedEvent {
    event: String,
    data: Option<Value>,
}

impl Script {
    /// Reads a script from JSON text.
    pub fn from_json(text: &str) -> Result<Script, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Command names the script answers.
    pub fn commands(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(String::as_str)
    }
}

/// A fake qemu-storage-daemon 10. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct FakeQemu {
    schema: Vec<Value>,
    types: HashMap<String, Value>,
    script: Script,
    running: bool,
}

impl Default for FakeQemu {
    fn default() -> Self {
        FakeQemu::new()
    }
}

/// Commands the fake answers itself.
const BUILT_IN: [&str; 7] =
    ["query-version", "query-status", "stop", "cont", "query-commands", "query-qmp-schema", "quit"];

impl FakeQemu {
    /// The fake with the recorded schema and no script.
    pub fn new() -> Self {
        let schema: Vec<Value> = serde_json::from_str(QSD_10_SCHEMA).unwrap_or_default();
        let types = schema.iter().filter_map(|e| Some((e.get("name")?.as_str()?.to_owned(), e.clone()))).collect();
        FakeQemu { schema, types, script: Script::default(), running: true }
    }

    /// Adds canned answers (they take precedence over the built-in ones).
    pub fn with_script(mut self, script: Script) -> Self {
        self.script = script;
        self
    }

    fn command_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .schema
            .iter()
            .filter(|e| e["meta-type"] == "command")
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .chain(BUILT_IN.iter().map(|s| s.to_string()))
            .chain(self.script.commands().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Checks `args` against the schema's arguments of `command`, with QEMU's error texts.
    pub fn check_arguments(&self, command: &str, args: &Map<String, Value>) -> Result<(), String> {
        let Some(cmd) = self.types.get(command).filter(|c| c["meta-type"] == "command") else { return Ok(()) };
        match cmd["arg-type"].as_str() {
            Some(arg_type) => self.check_object(arg_type, args, ""),
            None => Ok(()),
        }
    }

    fn check_object(&self, type_name: &str, obj: &Map<String, Value>, prefix: &str) -> Result<(), String> {
        let Some(ty) = self.types.get(type_name) else { return Ok(()) };
        let path = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
        let mut known: Vec<&str> = Vec::new();
        let mut members: Vec<&Value> = ty["members"].as_array().map(|m| m.iter().collect()).unwrap_or_default();
        // A union: the tag's value selects the variant whose members follow.
        if let (Some(tag), Some(variants)) = (ty["tag"].as_str(), ty["variants"].as_array()) {
            if let Some(case) = obj.get(tag).and_then(Value::as_str) {
                if let Some(variant) = variants.iter().find(|v| v["case"] == case) {
                    if let Some(vt) = variant["type"].as_str().and_then(|t| self.types.get(t)) {
                        members.extend(vt["members"].as_array().into_iter().flatten());
                    }
                }
            }
        }
        for member in members {
            let Some(name) = member["name"].as_str() else { continue };
            known.push(name);
            match obj.get(name) {
                None if member.get("default").is_none() => {
                    return Err(format!("Parameter '{}' is missing", path(name)))
                }
                None => {}
                Some(value) => self.check_value(member["type"].as_str().unwrap_or("any"), value, &path(name))?,
            }
        }
        match obj.keys().find(|k| !known.contains(&k.as_str())) {
            Some(extra) => Err(format!("Parameter '{}' is unexpected", path(extra))),
            None => Ok(()),
        }
    }

    fn check_value(&self, type_name: &str, value: &Value, path: &str) -> Result<(), String> {
        let mistyped = |expected: &str| Err(format!("Invalid parameter type for '{path}', expected: {expected}"));
        let Some(ty) = self.types.get(type_name) else { return Ok(()) };
        match ty["meta-type"].as_str() {
            Some("builtin") => match type_name {
                "str" if !value.is_string() => mistyped("string"),
                "int" if !(value.is_i64() || value.is_u64()) => mistyped("integer"),
                "bool" if !value.is_boolean() => mistyped("boolean"),
                "number" if !value.is_number() => mistyped("number"),
                "null" if !value.is_null() => mistyped("null"),
                _ => Ok(()),
            },
            Some("enum") => {
                let Some(s) = value.as_str() else { return mistyped("string") };
                let values = ty["values"].as_array().map(Vec::as_slice).unwrap_or_default();
                if values.iter().any(|v| v == s) {
                    Ok(())
                } else {
                    Err(format!("Parameter '{path}' does not accept value '{s}'"))
                }
            }
            Some("array") => {
                let Some(items) = value.as_array() else { return mistyped("array") };
                let element = ty["element-type"].as_str().unwrap_or("any");
                items.iter().enumerate().try_for_each(|(i, v)| self.check_value(element, v, &format!("{path}[{i}]")))
            }
            Some("object") => match value.as_object() {
                Some(obj) => self.check_object(type_name, obj, path),
                None => mistyped("object"),
            },
            _ => Ok(()),
        }
    }

    fn built_in(&mut self, name: &str) -> Option<Response> {
        let ok = |v: Value| Response::reply(Ok(v));
        Some(match name {
            "query-version" => {
                ok(json!({"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": "qmp serve (fake QEMU)"}))
            }
            "query-status" => {
                let status = if self.running { "running" } else { "paused" };
                ok(json!({"status": status, "running": self.running}))
            }
            "stop" | "cont" => {
                self.running = name == "cont";
                let event = if self.running { "RESUME" } else { "STOP" };
                Response { events: vec![(event.to_owned(), None)], ..ok(json!({})) }
            }
            "query-commands" => {
                ok(Value::Array(self.command_names().into_iter().map(|n| json!({"name": n})).collect()))
            }
            "query-qmp-schema" => ok(Value::Array(self.schema.clone())),
            "quit" => Response { close: true, ..ok(json!({})) },
            _ => return None,
        })
    }
}

impl Responder for FakeQemu {
    fn config(&self) -> ServerConfig {
        let oob_commands = self.schema.iter().filter(|e| e["meta-type"] == "command" && e["allow-oob"] == true);
        let scripted_oob = self.script.commands.iter().filter(|(_, s)| s.oob).map(|(name, _)| name.as_str());
        oob_commands
            .filter_map(|e| e["name"].as_str())
            .chain(scripted_oob)
            .fold(ServerConfig::qmp().version(10, 0, 2, "qmp serve (fake QEMU)"), |cfg, name| cfg.oob_command(name))
    }

    fn respond(&mut self, command: &Command) -> Response {
        let name = command.name();
        let listed_oob = self.config().command_info_of(name).is_some_and(|i| i.allow_oob);
        // QEMU looks the command up first: an unknown one is CommandNotFound even out of band.
        if command.oob && !listed_oob && self.command_names().iter().any(|n| n == name) {
            let desc = format!("The command {name} does not support OOB");
            return Response::reply(Err(Failure::generic(desc)));
        }
        if let Err(desc) = self.check_arguments(name, command.arguments.map()) {
            return Response::reply(Err(Failure::generic(desc)));
        }
        if let Some(scripted) = self.script.commands.get(name) {
            let reply = match (&scripted.ret, &scripted.error) {
                (_, Some(e)) => Err(Failure::new(e.class.clone(), e.desc.clone())),
                (Some(v), None) => Ok(v.clone()),
                (None, None) => Ok(json!({})),
            };
            let events = scripted.events.iter().map(|e| (e.event.clone(), e.data.clone())).collect();
            return Response { events, reply, close: false };
        }
        if let Some(response) = self.built_in(name) {
            return response;
        }
        if self.types.get(name).is_some_and(|c| c["meta-type"] == "command") {
            return Response::reply(Err(Failure::generic(format!(
                "qmp serve: {name} is a real command but not scripted (give it an answer with --script)"
            ))));
        }
        Response::reply(Err(Failure::command_not_found(name)))
    }
}
