//! Tab completion for a shell line, from what the server said about itself: command names (`query-commands`,
//! or `guest-info` for the agent), then argument names, nested keys (`file.driver=`) and enum or boolean
//! values (`query-qmp-schema`). Pure functions of the line and the schema; [`super::editor`] wires them to
//! rustyline.

use super::schema::Schema;

/// What completion knows about the server.
#[derive(Debug, Default)]
pub struct Knowledge {
    /// Command names the server accepts.
    pub commands: Vec<String>,
    /// The schema, when the server has one (QMP; not the guest agent).
    pub schema: Option<Schema>,
}

/// Words the shell itself understands as a first word.
const SHELL_WORDS: &[&str] = &["help", "transaction("];

/// Completes the word that ends at the end of `line` (the text before the cursor). Returns where that word
/// starts and the candidates that would replace it.
pub fn complete(line: &str, known: &Knowledge) -> (usize, Vec<String>) {
    let start = line.rfind([' ', '\t']).map_or(0, |i| i + 1);
    let word = &line[start..];
    let before: Vec<&str> = line[..start].split_whitespace().collect();
    let mut candidates: Vec<String> = match before.as_slice() {
        [] => SHELL_WORDS.iter().map(|w| w.to_string()).chain(known.commands.iter().cloned()).collect(),
        ["help"] => known.commands.clone(),
        [command, given @ ..] if !command.starts_with(['!', '{']) => arguments(command, given, word, known),
        _ => Vec::new(),
    };
    candidates.retain(|c| c.starts_with(word));
    candidates.sort();
    candidates.dedup();
    (start, candidates)
}

/// Candidates for an argument word: `key=`, `outer.inner=`, `key.` for objects, or `key=value`.
fn arguments(command: &str, given: &[&str], word: &str, known: &Knowledge) -> Vec<String> {
    let Some(schema) = &known.schema else { return Vec::new() };
    let Some(args_type) = schema.arguments_type(command) else { return Vec::new() };
    let typed = |prefix: &str| typed_tag(given, prefix.to_owned());
    if let Some((key, _value)) = word.split_once('=') {
        let path: Vec<&str> = key.split('.').collect();
        let Some(t) = schema.member_type(args_type, &path, &typed("")) else { return Vec::new() };
        return schema.values(&t).into_iter().map(|v| format!("{key}={v}")).collect();
    }
    let (parent, _partial) = word.rsplit_once('.').map_or(("", word), |(p, rest)| (p, rest));
    let object_type = if parent.is_empty() {
        args_type.to_owned()
    } else {
        let path: Vec<&str> = parent.split('.').collect();
        match schema.member_type(args_type, &path, &typed("")) {
            Some(t) => t,
            None => return Vec::new(),
        }
    };
    let prefix = if parent.is_empty() { String::new() } else { format!("{parent}.") };
    let tag_lookup = typed(&prefix);
    let mut out = Vec::new();
    for member in schema.members(&object_type, &tag_lookup) {
        let key = format!("{prefix}{}", member.name);
        if given.iter().any(|w| w.starts_with(&format!("{key}="))) {
            continue;
        }
        if schema.is_object(&member.type_name) {
            out.push(format!("{key}."));
        }
        out.push(format!("{key}="));
    }
    out
}

/// The value already typed for `PREFIX TAG=`, so that a union's tag (`driver=qcow2`) selects its variant.
fn typed_tag<'a>(given: &'a [&'a str], prefix: String) -> impl Fn(&str) -> Option<String> + 'a {
    move |tag: &str| {
        let key = format!("{prefix}{tag}=");
        given.iter().find_map(|w| w.strip_prefix(key.as_str()).map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::schema::corpus_schema;

    fn known() -> Knowledge {
        let schema = corpus_schema();
        let commands = schema.command_names().map(str::to_owned).collect();
        Knowledge { commands, schema: Some(schema) }
    }

    #[test]
    fn command_names_then_arguments_then_values() {
        let k = known();
        assert_eq!(complete("query-named-b", &k), (0, vec!["query-named-block-nodes".to_owned()]));
        assert_eq!(complete("help blockdev-ad", &k), (5, vec!["blockdev-add".to_owned()]));
        assert_eq!(complete("query-named-block-nodes fl", &k), (24, vec!["flat=".to_owned()]));
        let (_, drivers) = complete("blockdev-add driver=qco", &k);
        assert_eq!(drivers, ["driver=qcow", "driver=qcow2"]);
        let (_, flat) = complete("query-named-block-nodes flat=", &k);
        assert_eq!(flat, ["flat=false", "flat=true"]);
    }

    #[test]
    fn nested_keys_follow_the_union_tag() {
        let k = known();
        let (_, file) = complete("blockdev-add driver=qcow2 fi", &k);
        assert!(file.contains(&"file.".to_owned()) && file.contains(&"file=".to_owned()), "{file:?}");
        let (_, nested) = complete("blockdev-add driver=qcow2 file.driver=file file.fil", &k);
        assert_eq!(nested, ["file.filename="]);
        let (_, null) = complete("blockdev-add driver=null-co si", &k);
        assert_eq!(null, ["size="]);
        let (_, given) = complete("blockdev-add driver=null-co dri", &k);
        assert!(given.is_empty(), "a key given already is not offered again: {given:?}");
    }
}
