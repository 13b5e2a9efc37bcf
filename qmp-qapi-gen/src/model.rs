//! One release's schema as a model (definitions, commands, events), read from the extract's expressions.
//! Struct bases are flattened into their members here, so a struct is just its member list.

use std::collections::BTreeMap;

use serde_json::Value;

/// A reference to a type: a name (built-in or defined) or a list of a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeRef {
    /// `'str'`, `'BlockdevOptions'`.
    Named(String),
    /// `['str']`.
    List(Box<TypeRef>),
}

/// A member of a struct, union base, command argument list or event.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The wire name, without the `*`.
    pub name: String,
    /// Its type.
    pub ty: TypeRef,
    /// Written with a `*`.
    pub optional: bool,
    /// `features` (e.g. `deprecated`, `unstable`).
    pub features: Vec<String>,
    /// `if` condition, rendered.
    pub cond: Option<String>,
}

/// An enum value.
#[derive(Clone, Debug, PartialEq)]
pub struct EnumValue {
    /// The wire string.
    pub name: String,
    /// `features`.
    pub features: Vec<String>,
    /// `if` condition, rendered.
    pub cond: Option<String>,
}

/// The shape of a defined type.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// `enum`.
    Enum(Vec<EnumValue>),
    /// `struct` (base members first).
    Struct(Vec<Member>),
    /// `union`: base members, the discriminator member, and (discriminator value, branch type name).
    Union { base: Vec<Member>, discriminator: String, branches: Vec<(String, String)> },
    /// `alternate`: (branch name, branch type).
    Alternate(Vec<(String, TypeRef)>),
}

/// A defined type.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeDef {
    /// Its shape.
    pub shape: Shape,
    /// `features`.
    pub features: Vec<String>,
    /// `if` condition, rendered.
    pub cond: Option<String>,
}

/// The `data` of a command or event.
#[derive(Clone, Debug, PartialEq)]
pub enum Args {
    /// Inline members (possibly none).
    Members(Vec<Member>),
    /// A named type (a struct, or a union with `boxed`).
    Named(String),
}

/// A command or event.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// Arguments (`data`).
    pub args: Args,
    /// Result type (`returns`); commands only.
    pub returns: Option<TypeRef>,
    /// `allow-oob`.
    pub allow_oob: bool,
    /// `success-response: false` (the command never replies on success).
    pub no_success_response: bool,
    /// `features`.
    pub features: Vec<String>,
    /// `if` condition, rendered.
    pub cond: Option<String>,
}

/// One release's schema.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    /// Defined types by name.
    pub types: BTreeMap<String, TypeDef>,
    /// Commands by wire name.
    pub commands: BTreeMap<String, Operation>,
    /// Events by wire name.
    pub events: BTreeMap<String, Operation>,
}

impl Schema {
    /// Builds the model from a list of QAPI expressions.
    pub fn from_exprs(exprs: &[Value]) -> Result<Schema, String> {
        let mut raw_structs: BTreeMap<String, &Value> = BTreeMap::new();
        for e in exprs {
            if let Some(Value::String(name)) = e.get("struct") {
                raw_structs.insert(name.clone(), e);
            }
        }
        let mut schema = Schema::default();
        for e in exprs {
            let features = features(e.get("features"));
            let cond = cond(e.get("if"));
            if let Some(name) = e.get("enum").and_then(Value::as_str) {
                let values = e["data"]
                    .as_array()
                    .ok_or(format!("enum {name}: data"))?
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => EnumValue { name: s.clone(), features: vec![], cond: None },
                        other => EnumValue {
                            name: other["name"].as_str().unwrap_or_default().to_owned(),
                            features: self::features(other.get("features")),
                            cond: self::cond(other.get("if")),
                        },
                    })
                    .collect();
                schema.types.insert(name.into(), TypeDef { shape: Shape::Enum(values), features, cond });
            } else if let Some(name) = e.get("struct").and_then(Value::as_str) {
                let members = struct_members(name, &raw_structs)?;
                schema.types.insert(name.into(), TypeDef { shape: Shape::Struct(members), features, cond });
            } else if let Some(name) = e.get("union").and_then(Value::as_str) {
                let base = match e.get("base") {
                    Some(Value::String(b)) => struct_members(b, &raw_structs)?,
                    Some(v @ Value::Object(_)) => members(v)?,
                    _ => return Err(format!("union {name}: no base")),
                };
                let discriminator =
                    e["discriminator"].as_str().ok_or(format!("union {name}: discriminator"))?.to_owned();
                let branches = e["data"]
                    .as_object()
                    .ok_or(format!("union {name}: data"))?
                    .iter()
                    .map(|(k, v)| {
                        let ty = match v {
                            Value::String(s) => s.clone(),
                            other => other["type"].as_str().unwrap_or_default().to_owned(),
                        };
                        (k.clone(), ty)
                    })
                    .collect();
                schema.types.insert(
                    name.into(),
                    TypeDef { shape: Shape::Union { base, discriminator, branches }, features, cond },
                );
            } else if let Some(name) = e.get("alternate").and_then(Value::as_str) {
                let branches = e["data"]
                    .as_object()
                    .ok_or(format!("alternate {name}: data"))?
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), member_type(v)?)))
                    .collect::<Result<_, String>>()?;
                schema.types.insert(name.into(), TypeDef { shape: Shape::Alternate(branches), features, cond });
            } else if let Some(name) = e.get("command").and_then(Value::as_str) {
                let returns = match e.get("returns") {
                    None => None,
                    Some(v) => Some(type_ref(v)?),
                };
                let op = Operation {
                    args: args(e.get("data"))?,
                    returns,
                    allow_oob: e.get("allow-oob") == Some(&Value::Bool(true)),
                    no_success_response: e.get("success-response") == Some(&Value::Bool(false)),
                    features,
                    cond,
                };
                schema.commands.insert(name.into(), op);
            } else if let Some(name) = e.get("event").and_then(Value::as_str) {
                let op = Operation {
                    args: args(e.get("data"))?,
                    returns: None,
                    allow_oob: false,
                    no_success_response: false,
                    features,
                    cond,
                };
                schema.events.insert(name.into(), op);
            } else {
                return Err(format!("unknown expression: {e}"));
            }
        }
        Ok(schema)
    }
}

fn args(data: Option<&Value>) -> Result<Args, String> {
    match data {
        None => Ok(Args::Members(vec![])),
        Some(Value::String(name)) => Ok(Args::Named(name.clone())),
        Some(v) => Ok(Args::Members(members(v)?)),
    }
}

fn struct_members(name: &str, structs: &BTreeMap<String, &Value>) -> Result<Vec<Member>, String> {
    let e = structs.get(name).ok_or(format!("struct {name} not defined"))?;
    let mut out = match e.get("base") {
        Some(Value::String(base)) => struct_members(base, structs)?,
        _ => vec![],
    };
    if let Some(data) = e.get("data") {
        out.extend(members(data)?);
    }
    Ok(out)
}

fn members(data: &Value) -> Result<Vec<Member>, String> {
    let map = data.as_object().ok_or(format!("members: {data}"))?;
    map.iter()
        .map(|(key, v)| {
            let (name, optional) = match key.strip_prefix('*') {
                Some(n) => (n.to_owned(), true),
                None => (key.clone(), false),
            };
            Ok(Member {
                name,
                ty: member_type(v)?,
                optional,
                features: features(v.get("features")),
                cond: cond(v.get("if")),
            })
        })
        .collect()
}

fn member_type(v: &Value) -> Result<TypeRef, String> {
    match v {
        Value::Object(m) => type_ref(m.get("type").ok_or(format!("member without type: {v}"))?),
        other => type_ref(other),
    }
}

fn type_ref(v: &Value) -> Result<TypeRef, String> {
    match v {
        Value::String(s) => Ok(TypeRef::Named(s.clone())),
        Value::Array(items) if items.len() == 1 => Ok(TypeRef::List(Box::new(type_ref(&items[0])?))),
        other => Err(format!("not a type: {other}")),
    }
}

fn features(v: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = v else { return vec![] };
    items
        .iter()
        .filter_map(|f| match f {
            Value::String(s) => Some(s.clone()),
            other => other.get("name").and_then(Value::as_str).map(str::to_owned),
        })
        .collect()
}

/// Renders an `if` condition: `CONFIG_X`, `all(A, B)`, `any(..)`, `not(..)`.
fn cond(v: Option<&Value>) -> Option<String> {
    fn render(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Object(m) => m
                .iter()
                .map(|(op, arg)| match arg {
                    Value::Array(items) => {
                        format!("{op}({})", items.iter().map(render).collect::<Vec<_>>().join(", "))
                    }
                    other => format!("{op}({})", render(other)),
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        }
    }
    v.map(render)
}
