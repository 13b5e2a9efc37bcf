//! What `query-qmp-schema` says about commands, read once per connection: argument members and their types,
//! nested objects, unions (by their tag), alternates, enum values. It feeds completion and `help COMMAND`.
//!
//! QEMU masks most type names as numbers ("0", "1", ...); only built-in types keep names (`str`, `int`,
//! `bool`, ...). Types are therefore described by their shape, never by their masked name.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// The schema's entities by name, and the commands in order.
#[derive(Debug, Default)]
pub struct Schema {
    entities: HashMap<String, Value>,
    commands: BTreeMap<String, String>,
}

/// One member of an object type.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub type_name: String,
    pub optional: bool,
}

impl Schema {
    /// Reads the `return` of `query-qmp-schema`; entities of unexpected shape are skipped.
    pub fn from_value(value: &Value) -> Schema {
        let mut schema = Schema::default();
        for entity in value.as_array().into_iter().flatten() {
            let Some(name) = entity.get("name").and_then(Value::as_str) else { continue };
            if entity.get("meta-type").and_then(Value::as_str) == Some("command") {
                if let Some(arg_type) = entity.get("arg-type").and_then(Value::as_str) {
                    schema.commands.insert(name.to_owned(), arg_type.to_owned());
                }
            }
            schema.entities.insert(name.to_owned(), entity.clone());
        }
        schema
    }

    /// Command names, sorted.
    pub fn command_names(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(String::as_str)
    }

    /// The type of a command's arguments.
    pub fn arguments_type(&self, command: &str) -> Option<&str> {
        self.commands.get(command).map(String::as_str)
    }

    fn meta(&self, type_name: &str) -> Option<&str> {
        self.entities.get(type_name)?.get("meta-type")?.as_str()
    }

    /// The members an object of `type_name` may have: its base members, plus the members of the variant its tag
    /// selects (looked up with `tag_value`), or of every variant when the tag is not given yet. Alternates give
    /// the members of their object branches.
    pub fn members(&self, type_name: &str, tag_value: &dyn Fn(&str) -> Option<String>) -> Vec<Member> {
        let Some(entity) = self.entities.get(type_name) else { return Vec::new() };
        match entity.get("meta-type").and_then(Value::as_str) {
            Some("alternate") => {
                let mut all = Vec::new();
                for branch in entity.get("members").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = branch.get("type").and_then(Value::as_str) {
                        if self.meta(t) == Some("object") {
                            push_new(&mut all, self.members(t, tag_value));
                        }
                    }
                }
                all
            }
            Some("object") => {
                let mut all: Vec<Member> = entity
                    .get("members")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|m| {
                        Some(Member {
                            name: m.get("name")?.as_str()?.to_owned(),
                            type_name: m.get("type")?.as_str()?.to_owned(),
                            optional: m.get("default").is_some(),
                        })
                    })
                    .collect();
                let tag = entity.get("tag").and_then(Value::as_str);
                let chosen = tag.and_then(tag_value);
                for variant in entity.get("variants").and_then(Value::as_array).into_iter().flatten() {
                    let case = variant.get("case").and_then(Value::as_str);
                    if chosen.is_some() && case != chosen.as_deref() {
                        continue;
                    }
                    if let Some(t) = variant.get("type").and_then(Value::as_str) {
                        push_new(&mut all, self.members(t, &|_| None));
                    }
                }
                all
            }
            _ => Vec::new(),
        }
    }

    /// The type reached from `type_name` by following the dotted `path` of member names (`file.driver`).
    pub fn member_type(
        &self,
        type_name: &str,
        path: &[&str],
        tag_value: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let (first, rest) = path.split_first()?;
        let member = self.members(type_name, tag_value).into_iter().find(|m| m.name == *first)?;
        if rest.is_empty() {
            Some(member.type_name)
        } else {
            self.member_type(&member.type_name, rest, &|_| None)
        }
    }

    /// Whether values of `type_name` are objects (or alternates with an object branch): keys can nest into them.
    pub fn is_object(&self, type_name: &str) -> bool {
        match self.meta(type_name) {
            Some("object") => true,
            Some("alternate") => self.branches(type_name).iter().any(|t| self.meta(t) == Some("object")),
            _ => false,
        }
    }

    fn branches(&self, type_name: &str) -> Vec<String> {
        let members = self.entities.get(type_name).and_then(|e| e.get("members")).and_then(Value::as_array);
        members.into_iter().flatten().filter_map(|m| Some(m.get("type")?.as_str()?.to_owned())).collect()
    }

    /// The literal values a scalar of `type_name` can take, for completion: enum values, `true`/`false`.
    pub fn values(&self, type_name: &str) -> Vec<String> {
        match self.meta(type_name) {
            Some("enum") => {
                let entity = &self.entities[type_name];
                let listed = entity.get("values").and_then(Value::as_array).into_iter().flatten();
                listed.filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            Some("builtin") if type_name == "bool" => vec!["true".into(), "false".into()],
            Some("alternate") => {
                let mut all = Vec::new();
                for t in self.branches(type_name) {
                    for v in self.values(&t) {
                        if !all.contains(&v) {
                            all.push(v);
                        }
                    }
                }
                all
            }
            _ => Vec::new(),
        }
    }

    /// A short human description of a type: `str`, `enum (a|b|c)`, `array of ...`, `object`, `one of ...`.
    pub fn describe(&self, type_name: &str) -> String {
        if let Some(element) = type_name.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return format!("array of {}", self.describe(element));
        }
        match self.meta(type_name) {
            Some("builtin") | None => type_name.to_owned(),
            Some("enum") => format!("enum ({})", self.values(type_name).join("|")),
            Some("object") => "object".into(),
            Some("array") => {
                let element = self.entities[type_name].get("element-type").and_then(Value::as_str).unwrap_or("?");
                format!("array of {}", self.describe(element))
            }
            Some("alternate") => {
                let branches: Vec<String> = self.branches(type_name).iter().map(|t| self.describe(t)).collect();
                format!("one of {}", branches.join(", "))
            }
            Some(other) => other.to_owned(),
        }
    }

    /// The text of `help COMMAND`: each argument with its type, nested objects indented (two levels), union
    /// variants by tag value, and the return type.
    pub fn help(&self, command: &str) -> Option<String> {
        let arg_type = self.arguments_type(command)?;
        let entity = &self.entities[command];
        let mut text = format!("{command}\n");
        let members = self.members(arg_type, &|_| Some(String::new()));
        if members.is_empty() && !self.has_variants(arg_type) {
            text.push_str("  (no arguments)\n");
        }
        self.help_members(arg_type, 1, &mut text);
        if let Some(ret) = entity.get("ret-type").and_then(Value::as_str) {
            text.push_str(&format!("returns: {}\n", self.describe(ret)));
        }
        if entity.get("allow-oob").and_then(Value::as_bool) == Some(true) {
            text.push_str("may run out of band\n");
        }
        Some(text)
    }

    fn has_variants(&self, type_name: &str) -> bool {
        self.entities.get(type_name).and_then(|e| e.get("variants")).is_some()
    }

    fn help_members(&self, type_name: &str, depth: usize, text: &mut String) {
        let indent = "  ".repeat(depth);
        // Base members only (a tag value that matches no case selects no variant).
        for m in self.members(type_name, &|_| Some(String::new())) {
            let mark = if m.optional { " (optional)" } else { "" };
            text.push_str(&format!("{indent}{}: {}{mark}\n", m.name, self.describe(&m.type_name)));
            if depth < 3 && self.meta(&m.type_name) == Some("object") {
                self.help_members(&m.type_name, depth + 1, text);
            }
        }
        let entity = &self.entities[type_name];
        let tag = entity.get("tag").and_then(Value::as_str).unwrap_or("?");
        for variant in entity.get("variants").and_then(Value::as_array).into_iter().flatten() {
            let (Some(case), Some(t)) = (variant["case"].as_str(), variant["type"].as_str()) else { continue };
            let names: Vec<String> = self.members(t, &|_| None).into_iter().map(|m| m.name).collect();
            if !names.is_empty() {
                text.push_str(&format!("{indent}when {tag}={case}: {}\n", names.join(", ")));
            }
        }
    }
}

fn push_new(all: &mut Vec<Member>, more: Vec<Member>) {
    for m in more {
        if !all.iter().any(|a| a.name == m.name) {
            all.push(m);
        }
    }
}

#[cfg(test)]
pub(crate) fn corpus_schema() -> Schema {
    // The recorded corpus, where qmp-proto's corpus test finds it too (or QMP_CORPUS_DIR).
    let dir = std::env::var("QMP_CORPUS_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus").to_owned());
    let text = std::fs::read_to_string(format!("{dir}/qsd-query-qmp-schema.json"))
        .expect("the shared corpus next to the workspace (or QMP_CORPUS_DIR)");
    let capture: Value = serde_json::from_str(&text).expect("corpus json");
    let steps = capture["steps"].as_array().expect("steps");
    let reply = steps.iter().filter_map(|s| s["recv"].as_str()).find(|r| r.contains("\"meta-type\"")).expect("schema");
    let reply: Value = serde_json::from_str(reply).expect("reply json");
    Schema::from_value(&reply["return"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_members_unions_and_enums_from_qsd_10() {
        let schema = corpus_schema();
        assert!(schema.command_names().any(|c| c == "blockdev-add"));
        let args = schema.arguments_type("blockdev-add").expect("blockdev-add");
        let all = schema.members(args, &|_| None);
        for name in ["driver", "node-name", "size", "filename"] {
            assert!(all.iter().any(|m| m.name == name), "{name} in {all:?}");
        }
        let null_only = schema.members(args, &|tag| (tag == "driver").then(|| "null-co".to_owned()));
        assert!(null_only.iter().any(|m| m.name == "size") && !null_only.iter().any(|m| m.name == "filename"));
        let driver = schema.member_type(args, &["driver"], &|_| None).expect("driver type");
        assert!(schema.values(&driver).contains(&"qcow2".to_owned()));
        let qcow2 = |tag: &str| (tag == "driver").then(|| "qcow2".to_owned());
        let file = schema.member_type(args, &["file"], &qcow2).expect("file");
        assert!(schema.is_object(&file));
        assert!(schema.member_type(args, &["file", "filename"], &qcow2).is_some());
        let help = schema.help("query-named-block-nodes").expect("help");
        assert!(help.contains("flat: bool (optional)"), "{help}");
        assert!(schema.help("blockdev-add").expect("help").contains("when driver=qcow2:"));
    }
}
