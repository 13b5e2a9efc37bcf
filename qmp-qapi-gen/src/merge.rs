//! Merging the schemas of several releases into one set of definitions that fits them all.
//!
//! Rules: an item exists if any release has it, and records in which releases it exists. A member is required
//! only if every release that has its container has it, and requires it; otherwise it is optional. A member
//! whose type differs between releases becomes `any` (integers of different widths widen to `int`/`uint64`
//! instead). Enum values, union branches and alternate branches are the union of all releases'. A type whose
//! kind changed (a struct that became a union) takes the newest release's kind.

use std::collections::BTreeMap;

use crate::model::{Args, EnumValue, Member, Operation, Schema, Shape, TypeDef, TypeRef};

/// A union of one release: (release index, base members, branches).
type UnionParts<'a> = (usize, &'a Vec<Member>, &'a Vec<(String, String)>);

/// The names of every enum type of any release.
pub type Enums = std::collections::BTreeSet<String>;

/// In which of the merged releases (by index, oldest first) an item exists.
pub type Presence = Vec<bool>;

/// A merged member.
#[derive(Clone, Debug)]
pub struct MMember {
    /// The member as merged (`optional` per the rules above).
    pub member: Member,
    /// Where the member exists (among releases that have its container).
    pub present: Presence,
    /// When the type differs between releases: (release index, type) for each, before widening.
    pub note: Option<Vec<(usize, String)>>,
}

/// A merged enum value.
#[derive(Clone, Debug)]
pub struct MValue {
    /// The value.
    pub value: EnumValue,
    /// Where it exists.
    pub present: Presence,
}

/// A merged type's shape.
#[derive(Clone, Debug)]
pub enum MShape {
    /// Enum values.
    Enum(Vec<MValue>),
    /// Struct members.
    Struct(Vec<MMember>),
    /// Union: base members, discriminator, (value, branch type, presence).
    Union { base: Vec<MMember>, discriminator: String, branches: Vec<(String, String, Presence)> },
    /// Alternate: (branch name, type, presence).
    Alternate(Vec<(String, TypeRef, Presence)>),
}

/// A merged type.
#[derive(Clone, Debug)]
pub struct MType {
    /// Shape.
    pub shape: MShape,
    /// Features of any release.
    pub features: Vec<String>,
    /// Condition (newest release's).
    pub cond: Option<String>,
    /// Where it exists.
    pub present: Presence,
}

/// Merged command or event arguments.
#[derive(Clone, Debug)]
pub enum MArgs {
    /// Inline members.
    Members(Vec<MMember>),
    /// A named type.
    Named(String),
}

/// A merged command or event.
#[derive(Clone, Debug)]
pub struct MOp {
    /// Arguments.
    pub args: MArgs,
    /// Result (commands; `None` = an empty object).
    pub returns: Option<TypeRef>,
    /// When the result type differs between releases: (release index, type) for each.
    pub returns_note: Option<Vec<(usize, String)>>,
    /// OOB allowed in any release.
    pub allow_oob: bool,
    /// No reply on success.
    pub no_success_response: bool,
    /// Features of any release.
    pub features: Vec<String>,
    /// Condition (newest release's).
    pub cond: Option<String>,
    /// Where it exists.
    pub present: Presence,
}

/// Everything merged.
#[derive(Clone, Debug)]
pub struct Merged {
    /// Release names, oldest first.
    pub releases: Vec<String>,
    /// Types by name.
    pub types: BTreeMap<String, MType>,
    /// Commands by wire name.
    pub commands: BTreeMap<String, MOp>,
    /// Events by wire name.
    pub events: BTreeMap<String, MOp>,
}

/// Merges releases (oldest first).
pub fn merge(releases: &[(String, Schema)]) -> Merged {
    let n = releases.len();
    let enums: Enums = releases
        .iter()
        .flat_map(|(_, s)| s.types.iter())
        .filter(|(_, d)| matches!(d.shape, Shape::Enum(_)))
        .map(|(name, _)| name.clone())
        .collect();
    let mut types = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = releases.iter().flat_map(|(_, s)| s.types.keys()).collect();
    for name in names {
        let defs: Vec<(usize, &TypeDef)> =
            releases.iter().enumerate().filter_map(|(i, (_, s))| s.types.get(name).map(|d| (i, d))).collect();
        types.insert(name.clone(), merge_type(&defs, n, &enums));
    }
    let mut commands = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = releases.iter().flat_map(|(_, s)| s.commands.keys()).collect();
    for name in names {
        let ops: Vec<(usize, &Operation)> =
            releases.iter().enumerate().filter_map(|(i, (_, s))| s.commands.get(name).map(|d| (i, d))).collect();
        commands.insert(name.clone(), merge_op(&ops, releases, n, &enums));
    }
    let mut events = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = releases.iter().flat_map(|(_, s)| s.events.keys()).collect();
    for name in names {
        let ops: Vec<(usize, &Operation)> =
            releases.iter().enumerate().filter_map(|(i, (_, s))| s.events.get(name).map(|d| (i, d))).collect();
        events.insert(name.clone(), merge_op(&ops, releases, n, &enums));
    }
    Merged { releases: releases.iter().map(|(r, _)| r.clone()).collect(), types, commands, events }
}

fn presence(indices: impl IntoIterator<Item = usize>, n: usize) -> Presence {
    let mut p = vec![false; n];
    for i in indices {
        p[i] = true;
    }
    p
}

fn union_features<'a>(lists: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for list in lists {
        for f in list {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
    }
    out
}

fn merge_type(defs: &[(usize, &TypeDef)], n: usize, enums: &Enums) -> MType {
    let (_, newest) = defs[defs.len() - 1];
    let same_kind: Vec<(usize, &TypeDef)> = defs
        .iter()
        .copied()
        .filter(|(_, d)| std::mem::discriminant(&d.shape) == std::mem::discriminant(&newest.shape))
        .collect();
    let shape = match &newest.shape {
        Shape::Enum(_) => {
            let lists: Vec<(usize, &Vec<EnumValue>)> = same_kind
                .iter()
                .filter_map(|(i, d)| if let Shape::Enum(v) = &d.shape { Some((*i, v)) } else { None })
                .collect();
            let mut out: Vec<MValue> = Vec::new();
            for (i, values) in lists.iter().rev() {
                for v in values.iter() {
                    match out.iter_mut().find(|m| m.value.name == v.name) {
                        Some(m) => m.present[*i] = true,
                        None => out.push(MValue { value: v.clone(), present: presence([*i], n) }),
                    }
                }
            }
            MShape::Enum(out)
        }
        Shape::Struct(_) => MShape::Struct(merge_members(
            &same_kind
                .iter()
                .filter_map(|(i, d)| if let Shape::Struct(m) = &d.shape { Some((*i, m)) } else { None })
                .collect::<Vec<_>>(),
            n,
            enums,
        )),
        Shape::Union { discriminator, .. } => {
            let unions: Vec<UnionParts> = same_kind
                .iter()
                .filter_map(|(i, d)| match &d.shape {
                    Shape::Union { base, branches, .. } => Some((*i, base, branches)),
                    _ => None,
                })
                .collect();
            // A release where the type was a struct contributes the members the union's base kept (the others
            // moved into branches and stay in the `Other` branch's map when the discriminator is absent).
            let base_names: Vec<&String> = unions.iter().flat_map(|(_, b, _)| b.iter().map(|m| &m.name)).collect();
            let was_struct: Vec<(usize, Vec<Member>)> = defs
                .iter()
                .filter_map(|(i, d)| match &d.shape {
                    Shape::Struct(m) => {
                        Some((*i, m.iter().filter(|m| base_names.contains(&&m.name)).cloned().collect()))
                    }
                    _ => None,
                })
                .collect();
            let mut base_lists: Vec<(usize, &Vec<Member>)> = unions.iter().map(|(i, b, _)| (*i, *b)).collect();
            base_lists.extend(was_struct.iter().map(|(i, m)| (*i, m)));
            base_lists.sort_by_key(|(i, _)| *i);
            let base = merge_members(&base_lists, n, enums);
            let mut branches: Vec<(String, String, Presence)> = Vec::new();
            for (i, _, list) in unions.iter().rev() {
                for (value, ty) in list.iter() {
                    match branches.iter_mut().find(|b| &b.0 == value) {
                        Some(b) => b.2[*i] = true,
                        None => branches.push((value.clone(), ty.clone(), presence([*i], n))),
                    }
                }
            }
            MShape::Union { base, discriminator: discriminator.clone(), branches }
        }
        Shape::Alternate(_) => {
            let mut branches: Vec<(String, TypeRef, Presence)> = Vec::new();
            for (i, d) in same_kind.iter().rev() {
                if let Shape::Alternate(list) = &d.shape {
                    for (name, ty) in list {
                        match branches.iter_mut().find(|b| &b.0 == name) {
                            Some(b) => b.2[*i] = true,
                            None => branches.push((name.clone(), ty.clone(), presence([*i], n))),
                        }
                    }
                }
            }
            MShape::Alternate(branches)
        }
    };
    MType {
        shape,
        features: union_features(defs.iter().map(|(_, d)| &d.features)),
        cond: newest.cond.clone(),
        present: presence(defs.iter().map(|(i, _)| *i), n),
    }
}

/// Merges the member lists of one container in the releases that have it (oldest first).
pub fn merge_members(lists: &[(usize, &Vec<Member>)], n: usize, enums: &Enums) -> Vec<MMember> {
    let mut out: Vec<MMember> = Vec::new();
    let mut types: Vec<Vec<(usize, TypeRef)>> = Vec::new();
    for (i, members) in lists.iter().rev() {
        for m in members.iter() {
            match out.iter().position(|o| o.member.name == m.name) {
                Some(k) => {
                    let o = &mut out[k];
                    o.present[*i] = true;
                    o.member.optional |= m.optional;
                    o.member.features = union_features([&o.member.features, &m.features]);
                    types[k].push((*i, m.ty.clone()));
                }
                None => {
                    out.push(MMember { member: m.clone(), present: presence([*i], n), note: None });
                    types.push(vec![(*i, m.ty.clone())]);
                }
            }
        }
    }
    for (o, tys) in out.iter_mut().zip(types) {
        if o.present.iter().filter(|p| **p).count() < lists.len() {
            o.member.optional = true;
        }
        let (ty, note) = merge_type_refs(&tys, enums);
        o.member.ty = ty;
        o.note = note;
    }
    out
}

const SIGNED: [&str; 5] = ["int8", "int16", "int32", "int64", "int"];
const UNSIGNED: [&str; 5] = ["uint8", "uint16", "uint32", "uint64", "size"];

/// The one type that holds every release's type of a member (`tys`: newest first), and why, if it widened.
fn merge_type_refs(tys: &[(usize, TypeRef)], enums: &Enums) -> (TypeRef, Option<Vec<(usize, String)>>) {
    let first = &tys[0].1;
    if tys.iter().all(|(_, t)| t == first) {
        return (first.clone(), None);
    }
    let named = |t: &TypeRef| match t {
        TypeRef::Named(n) => Some(n.clone()),
        TypeRef::List(_) => None,
    };
    let names: Vec<Option<String>> = tys.iter().map(|(_, t)| named(t)).collect();
    let all_in = |set: &[&str]| names.iter().all(|n| n.as_deref().is_some_and(|n| set.contains(&n)));
    // A string in one release and an enum in another (or an enum renamed): the newest enum decodes every
    // string, unknown ones into its `Other`.
    let string_like = names.iter().all(|n| n.as_deref().is_some_and(|n| n == "str" || enums.contains(n)));
    if string_like {
        if let Some(newest_enum) = names.iter().flatten().find(|n| enums.contains(*n)) {
            return (
                TypeRef::Named(newest_enum.clone()),
                Some(tys.iter().rev().map(|(i, t)| (*i, render(t))).collect()),
            );
        }
    }
    let widened = if all_in(&SIGNED) {
        Some("int")
    } else if all_in(&UNSIGNED) {
        Some("uint64")
    } else {
        None
    };
    let note = Some(tys.iter().rev().map(|(i, t)| (*i, render(t))).collect());
    (TypeRef::Named(widened.unwrap_or("any").into()), note)
}

/// `str`, `[str]`.
pub fn render(t: &TypeRef) -> String {
    match t {
        TypeRef::Named(n) => n.clone(),
        TypeRef::List(inner) => format!("[{}]", render(inner)),
    }
}

fn merge_op(ops: &[(usize, &Operation)], releases: &[(String, Schema)], n: usize, enums: &Enums) -> MOp {
    let (_, newest) = ops[ops.len() - 1];
    let args = if ops.iter().all(|(_, o)| o.args == newest.args) {
        match &newest.args {
            Args::Named(name) => MArgs::Named(name.clone()),
            Args::Members(_) => MArgs::Members(merge_members(
                &ops.iter()
                    .map(|(i, o)| match &o.args {
                        Args::Members(m) => (*i, m),
                        Args::Named(_) => unreachable!(),
                    })
                    .collect::<Vec<_>>(),
                n,
                enums,
            )),
        }
    } else {
        // Resolve named struct arguments to their members; a named union keeps the newest form.
        let resolved: Vec<(usize, Option<Vec<Member>>)> = ops
            .iter()
            .map(|(i, o)| {
                let members = match &o.args {
                    Args::Members(m) => Some(m.clone()),
                    Args::Named(name) => match releases[*i].1.types.get(name).map(|d| &d.shape) {
                        Some(Shape::Struct(m)) => Some(m.clone()),
                        _ => None,
                    },
                };
                (*i, members)
            })
            .collect();
        if resolved.iter().all(|(_, m)| m.is_some()) {
            let lists: Vec<(usize, &Vec<Member>)> =
                resolved.iter().map(|(i, m)| (*i, m.as_ref().expect("checked"))).collect();
            MArgs::Members(merge_members(&lists, n, enums))
        } else {
            match &newest.args {
                Args::Named(name) => MArgs::Named(name.clone()),
                Args::Members(m) => MArgs::Members(merge_members(&[(ops[ops.len() - 1].0, m)], n, enums)),
            }
        }
    };
    let rets: Vec<(usize, TypeRef)> = ops
        .iter()
        .rev()
        .map(|(i, o)| (*i, o.returns.clone().unwrap_or_else(|| TypeRef::Named("__empty".into()))))
        .collect();
    let (returns, returns_note) = merge_type_refs(&rets, enums);
    let returns = match returns {
        TypeRef::Named(n) if n == "__empty" => None,
        other => Some(other),
    };
    MOp {
        args,
        returns,
        returns_note,
        allow_oob: ops.iter().any(|(_, o)| o.allow_oob),
        no_success_response: ops.iter().any(|(_, o)| o.no_success_response),
        features: union_features(ops.iter().map(|(_, o)| &o.features)),
        cond: newest.cond.clone(),
        present: presence(ops.iter().map(|(i, _)| *i), n),
    }
}
