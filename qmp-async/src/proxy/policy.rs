//! [`Policy`]: who may connect to the proxy and which commands each client may run.
//!
//! A policy is a list of [`Rule`]s. A client's [`Identity`] (the listener it came through, its unix peer uid and
//! gid, the subject of its TLS client certificate) picks the **first** rule whose conditions all hold; a client
//! that matches no rule is refused before it gets a greeting. The rule then decides command by command: an
//! allow-list, a deny-list, or a [`Profile`] (`full`, or `read-only`: queries only), with patterns that are
//! command names or globs (`query-*`: `*` matches any run of characters).
//!
//! A TLS client (`proxy::serve_tls`, feature `tls`) is known by the subject of its verified certificate: a rule
//! matches either the whole subject (`subject = "CN=alice,OU=operators,O=example"`: the distinguished name in the
//! string form of RFC 4514, most specific part first, exactly as `openssl x509 -noout -subject -nameopt
//! RFC2253` prints it) or only its common name (`common_name = "alice"`), compared exactly. A rule with a uid or
//! a gid never applies to a TCP client, nor one with a subject or a common name to a unix one; a rule with none
//! of these applies to every client, plain TCP ones included.
//!
//! A rule may also choose which of QEMU's events its clients get: `events = ["BLOCK_JOB_*", "JOB_STATUS_CHANGE"]`
//! (names or globs), or `events = []` for none (a metrics collector that only queries: it costs the proxy no
//! event queue, and no flood of events can fall on it). Without `events`, a client gets every event. QMP has no
//! subscription of its own, so this is the proxy's filter, decided per rule ([`Rule::events`]).
//!
//! Two commands are special. `qmp_capabilities` never reaches QEMU: every client negotiates with the proxy on
//! its own. `quit` ends QEMU for every client, so no glob and no profile allows it: only a rule with
//! `allow_quit = true` does.
//!
//! A denied command gets an error in QEMU's format naming the rule, and nothing reaches QEMU:
//! `{"error": {"class": "GenericError", "desc": "The command stop is denied by the proxy policy 'monitoring'"}}`.
//!
//! Policies deserialize with serde (the `qmp proxy` command reads them from TOML), then [`Policy::validate`]
//! checks them:
//!
//! ```
//! use qmp_async::proxy::{Identity, Policy, Profile, Rule};
//!
//! let policy = Policy::new(vec![
//!     Rule::new("operators").gid(0).profile(Profile::Full),
//!     Rule::new("monitoring").uid(1000).allow(["query-*", "qom-get"]),
//! ])
//! .validate()
//! .unwrap();
//! let monitor = Identity::unix("qmp.sock", 1000, 1000);
//! let rule = policy.rule_for(&monitor).unwrap();
//! assert!(rule.check("query-block").is_ok());
//! let denied = rule.check("stop").unwrap_err();
//! assert_eq!(denied.desc, "The command stop is denied by the proxy policy 'monitoring'");
//! assert!(policy.rule_for(&Identity::unix("qmp.sock", 1001, 1001)).is_none()); // refused
//! ```

use std::fmt;

use qmp_proto::server::Failure;
use serde::Deserialize;

/// Who a client is, as far as the proxy can tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Identity {
    /// The name of the listener it came through (the socket path or address, unless named otherwise).
    pub listener: String,
    /// Its unix peer uid (SO_PEERCRED), on a unix socket.
    pub uid: Option<u32>,
    /// Its unix peer gid (SO_PEERCRED), on a unix socket.
    pub gid: Option<u32>,
    /// Its process id (SO_PEERCRED), on a unix socket; for logs only.
    pub pid: Option<i32>,
    /// The subject of its TLS client certificate (RFC 4514: `CN=alice,OU=operators,O=example`).
    pub subject: Option<String>,
    /// The common name of that subject (`alice`).
    pub common_name: Option<String>,
}

impl Identity {
    /// A client of `listener` with unknown credentials (a pipe, plain TCP).
    pub fn anonymous(listener: impl Into<String>) -> Self {
        Identity { listener: listener.into(), ..Identity::default() }
    }

    /// A unix-socket client of `listener` with peer credentials `uid` and `gid`.
    pub fn unix(listener: impl Into<String>, uid: u32, gid: u32) -> Self {
        Identity { listener: listener.into(), uid: Some(uid), gid: Some(gid), ..Identity::default() }
    }

    /// With its process id.
    pub fn with_pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// A TLS client of `listener` whose certificate has `subject` (RFC 4514).
    pub fn tls(listener: impl Into<String>, subject: impl Into<String>) -> Self {
        Identity { listener: listener.into(), subject: Some(subject.into()), ..Identity::default() }
    }

    /// With the common name of its certificate's subject.
    pub fn with_common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.listener)?;
        if let (Some(uid), Some(gid)) = (self.uid, self.gid) {
            write!(f, " uid={uid} gid={gid}")?;
        }
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        if let Some(subject) = &self.subject {
            write!(f, " subject={subject:?}")?;
        }
        if let Some(common_name) = &self.common_name {
            write!(f, " common_name={common_name:?}")?;
        }
        Ok(())
    }
}

/// A predefined set of commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Profile {
    /// Every command (but `quit`, see [`Rule::allow_quit`]).
    Full,
    /// Commands that only read: `query-*`, `x-query-*`, `qom-get`, `qom-list`, `qom-list-types`,
    /// `qom-list-properties`, `device-list-properties`, `trace-event-get-state`.
    ReadOnly,
}

/// The commands of [`Profile::ReadOnly`].
const READ_ONLY: &[&str] = &[
    "query-*",
    "x-query-*",
    "qom-get",
    "qom-list",
    "qom-list-types",
    "qom-list-properties",
    "device-list-properties",
    "trace-event-get-state",
];

/// One rule of a [`Policy`]: which clients it applies to, and what they may run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    name: String,
    #[serde(default)]
    listener: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    common_name: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Option<Vec<String>>,
    #[serde(default)]
    allow_quit: bool,
    #[serde(default)]
    events: Option<Vec<String>>,
}

impl Rule {
    /// A rule named `name` (named in denials and logs) for every client, allowing nothing until given a
    /// profile, an allow-list or a deny-list.
    pub fn new(name: impl Into<String>) -> Self {
        Rule {
            name: name.into(),
            listener: None,
            uid: None,
            gid: None,
            subject: None,
            common_name: None,
            profile: None,
            allow: None,
            deny: None,
            allow_quit: false,
            events: None,
        }
    }

    /// Only for clients of the listener named `name`.
    pub fn listener(mut self, name: impl Into<String>) -> Self {
        self.listener = Some(name.into());
        self
    }

    /// Only for unix clients whose peer uid is `uid`.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Only for unix clients whose peer gid is `gid`.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// Only for TLS clients whose certificate's subject is `subject`, in the string form of RFC 4514
    /// (`CN=alice,OU=operators,O=example`; see the [module docs](self)).
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Only for TLS clients whose certificate's subject has the common name `common_name`.
    pub fn common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    /// Allows the commands of `profile`.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self
    }

    /// Allows only these commands (names or globs).
    pub fn allow<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.allow = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Allows every command but these (names or globs).
    pub fn deny<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.deny = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Allows `quit` (which ends QEMU for every client: no glob or profile allows it).
    pub fn allow_quit(mut self, allow: bool) -> Self {
        self.allow_quit = allow;
        self
    }

    /// Its clients get only the events named here (names or globs: `BLOCK_JOB_*`); none when empty. Without
    /// it they get every event.
    pub fn events<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.events = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Whether its clients get the event `name` (see [`events`](Self::events)).
    pub fn takes_event(&self, name: &str) -> bool {
        self.events.as_ref().is_none_or(|patterns| patterns.iter().any(|p| glob_matches(p, name)))
    }

    /// Whether its clients get no event at all (`events = []`).
    pub fn takes_no_events(&self) -> bool {
        self.events.as_ref().is_some_and(Vec::is_empty)
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The uid it is limited to, if any.
    pub fn get_uid(&self) -> Option<u32> {
        self.uid
    }

    /// The gid it is limited to, if any.
    pub fn get_gid(&self) -> Option<u32> {
        self.gid
    }

    /// The listener it is limited to, if any.
    pub fn get_listener(&self) -> Option<&str> {
        self.listener.as_deref()
    }

    /// Whether it applies only to TLS clients (it names a certificate subject or common name).
    pub fn needs_certificate(&self) -> bool {
        self.subject.is_some() || self.common_name.is_some()
    }

    /// Whether the rule applies to `identity`: every condition it sets holds.
    pub fn applies_to(&self, identity: &Identity) -> bool {
        fn holds<T: PartialEq>(want: &Option<T>, have: &Option<T>) -> bool {
            want.is_none() || want == have
        }
        self.listener.as_ref().is_none_or(|l| *l == identity.listener)
            && holds(&self.uid, &identity.uid)
            && holds(&self.gid, &identity.gid)
            && holds(&self.subject, &identity.subject)
            && holds(&self.common_name, &identity.common_name)
    }

    /// Whether a client under this rule may run `command`; the error to answer it with if not.
    pub fn check(&self, command: &str) -> Result<(), Failure> {
        let allowed = if command == "quit" {
            self.allow_quit
        } else if let Some(allow) = &self.allow {
            allow.iter().any(|p| glob_matches(p, command))
        } else if let Some(deny) = &self.deny {
            !deny.iter().any(|p| glob_matches(p, command))
        } else {
            match self.profile {
                Some(Profile::Full) => true,
                Some(Profile::ReadOnly) => READ_ONLY.iter().any(|p| glob_matches(p, command)),
                None => false,
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Failure::generic(format!("The command {command} is denied by the proxy policy '{}'", self.name)))
        }
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let err = |what: String| Err(PolicyError { rule: self.name.clone(), what });
        if self.name.is_empty() {
            return Err(PolicyError { rule: String::new(), what: "a rule needs a non-empty name".into() });
        }
        let given = [self.profile.is_some(), self.allow.is_some(), self.deny.is_some()];
        match given.iter().filter(|g| **g).count() {
            1 => {}
            0 => return err("give one of profile, allow or deny".into()),
            _ => return err("give only one of profile, allow and deny".into()),
        }
        for (what, pattern) in self
            .allow
            .iter()
            .chain(&self.deny)
            .flatten()
            .map(|p| ("command", p))
            .chain(self.events.iter().flatten().map(|p| ("event", p)))
        {
            let valid = !pattern.is_empty()
                && pattern.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*');
            if !valid {
                return err(format!(
                    "invalid {what} pattern {pattern:?} ({what} names, '*' for any run of characters)"
                ));
            }
        }
        Ok(())
    }
}

/// A glob with `*` (any run of characters, empty included) matched against a whole command name.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A policy that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proxy policy{}: {what}", if rule.is_empty() { String::new() } else { format!(" (rule '{rule}')") })]
pub struct PolicyError {
    /// The rule at fault (empty for the policy as a whole).
    pub rule: String,
    /// What is wrong.
    pub what: String,
}

/// Rules deciding who may connect and what each client may run. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(rename = "rule", default)]
    rules: Vec<Rule>,
}

impl Policy {
    /// A policy of `rules`, tried in order.
    pub fn new(rules: Vec<Rule>) -> Self {
        Policy { rules }
    }

    /// One rule, `owner`: the user `uid` may run every command but `quit` (the proxy's default).
    pub fn owner_only(uid: u32) -> Self {
        Policy::new(vec![Rule::new("owner").uid(uid).profile(Profile::Full)])
    }

    /// Checks the policy: at least one rule, unique non-empty names, exactly one of a profile, an allow-list
    /// and a deny-list per rule, patterns made of command-name characters and `*`.
    pub fn validate(self) -> Result<Self, PolicyError> {
        if self.rules.is_empty() {
            let what = "no rule: nobody could connect (add a [[rule]])".into();
            return Err(PolicyError { rule: String::new(), what });
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate()?;
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(PolicyError { rule: rule.name.clone(), what: "two rules have this name".into() });
            }
        }
        Ok(self)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule that applies to `identity`; `None`: refuse the client.
    pub fn rule_for(&self, identity: &Identity) -> Option<&Rule> {
        self.rules.iter().find(|r| r.applies_to(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, name, expected) in [
            ("query-*", "query-block", true),
            ("query-*", "query-", true),
            ("query-*", "x-query-block", false),
            ("*-block*", "query-block-jobs", true),
            ("*", "anything", true),
            ("stop", "stop", true),
            ("stop", "stopped", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*jobs", "query-block-jobs", true),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn profiles_lists_and_quit() {
        let full = Rule::new("f").profile(Profile::Full);
        assert!(full.check("blockdev-add").is_ok());
        assert!(full.check("quit").is_err(), "no profile allows quit");
        assert!(full.clone().allow_quit(true).check("quit").is_ok());
        let ro = Rule::new("ro").profile(Profile::ReadOnly);
        assert!(ro.check("query-status").is_ok() && ro.check("qom-get").is_ok());
        assert!(ro.check("stop").is_err() && ro.check("qom-set").is_err());
        let deny = Rule::new("d").deny(["system_*", "stop"]);
        assert!(deny.check("cont").is_ok());
        assert!(deny.check("system_reset").is_err() && deny.check("stop").is_err());
        assert!(Rule::new("a").allow(["*"]).check("quit").is_err(), "a glob never allows quit");
    }

    #[test]
    fn event_filters() {
        let all = Rule::new("all").profile(Profile::Full);
        assert!(all.takes_event("SHUTDOWN") && !all.takes_no_events());
        let jobs = all.clone().events(["BLOCK_JOB_*", "JOB_STATUS_CHANGE"]);
        assert!(jobs.takes_event("BLOCK_JOB_COMPLETED") && jobs.takes_event("JOB_STATUS_CHANGE"));
        assert!(!jobs.takes_event("SHUTDOWN") && !jobs.takes_no_events());
        let none = all.events(Vec::<String>::new());
        assert!(!none.takes_event("SHUTDOWN") && none.takes_no_events());
        let toml_like: Rule =
            serde_json::from_str(r#"{"name": "m", "allow": ["query-*"], "events": []}"#).expect("deserializes");
        assert!(toml_like.takes_no_events());
    }

    #[test]
    fn identities_pick_the_first_matching_rule() {
        let policy = Policy::new(vec![
            Rule::new("root").uid(0).profile(Profile::Full),
            Rule::new("tls-admin").subject("CN=admin").profile(Profile::Full),
            Rule::new("tls-alice").common_name("alice").profile(Profile::ReadOnly),
            Rule::new("socket-b").listener("b.sock").profile(Profile::ReadOnly),
        ])
        .validate()
        .expect("valid");
        let name = |id: &Identity| policy.rule_for(id).map(Rule::name);
        assert_eq!(name(&Identity::unix("a.sock", 0, 0)), Some("root"));
        assert_eq!(name(&Identity::unix("a.sock", 1000, 1000)), None);
        assert_eq!(name(&Identity::unix("b.sock", 1000, 1000)), Some("socket-b"));
        assert_eq!(name(&Identity::tls("tcp", "CN=admin")), Some("tls-admin"));
        assert_eq!(name(&Identity::tls("tcp", "CN=other")), None);
        let alice = Identity::tls("tcp", "CN=alice,O=example").with_common_name("alice");
        assert_eq!(name(&alice), Some("tls-alice"));
        assert_eq!(name(&Identity::tls("tcp", "CN=alice,O=example")), None, "no common name, no match");
        assert_eq!(name(&Identity::anonymous("tcp")), None);
    }

    #[test]
    fn invalid_policies_say_why() {
        let cases = [
            (Policy::new(vec![]), "no rule"),
            (Policy::new(vec![Rule::new("x")]), "give one of"),
            (Policy::new(vec![Rule::new("x").allow(["a"]).deny(["b"])]), "only one of"),
            (Policy::new(vec![Rule::new("x").allow(["que ry"])]), "invalid command pattern"),
            (Policy::new(vec![Rule::new("x").allow(["a"]).events(["BLOCK JOB"])]), "invalid event pattern"),
            (Policy::new(vec![Rule::new("x").allow(["a"]), Rule::new("x").deny(["b"])]), "two rules"),
        ];
        for (policy, why) in cases {
            let err = policy.validate().expect_err(why).to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
