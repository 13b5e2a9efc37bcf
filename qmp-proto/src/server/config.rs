//! Settings of a [`Server`](super::Server): what it announces, which commands it knows, and its bounds.

use std::collections::BTreeMap;

use crate::config::Mode;

/// QEMU's default limit on one message (`MAX_TOKEN_SIZE` in json-streamer.c): 64 MiB.
pub const DEFAULT_SERVER_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// QEMU's in-band queue length with OOB negotiated (`QMP_REQ_QUEUE_LEN_MAX`).
pub const QMP_REQ_QUEUE_LEN_MAX: usize = 8;

/// What the server knows about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// May run out of band (`exec-oob`); QEMU answers "The command X does not support OOB" otherwise.
    pub allow_oob: bool,
    /// Sends a reply when it succeeds. `false` for the guest agent's `guest-shutdown` and `guest-suspend-*`:
    /// a success is silent, only a failure is answered.
    pub success_response: bool,
}

impl Default for CommandInfo {
    fn default() -> Self {
        CommandInfo { allow_oob: false, success_response: true }
    }
}

/// Settings of a [`Server`](super::Server). Start from [`ServerConfig::qmp`] or [`ServerConfig::guest_agent`].
///
/// | limit | default | on overflow |
/// |---|---|---|
/// | [`max_message_size`](Self::max_message_size) | 64 MiB (QEMU's) | QEMU's id-less "JSON token size limit exceeded" |
/// | [`max_queued_commands`](Self::max_queued_commands) | 8 (QEMU's) | the server stops reading ([`Server::wants_input`](super::Server::wants_input) is false) |
/// | [`max_held_input`](Self::max_held_input) | 1 MiB | input fed while not wanted, beyond it, closes the session ([`CloseReason::InputOverflow`](super::CloseReason::InputOverflow)) |
/// | [`max_queued_output`](Self::max_queued_output) | 16 MiB | events are dropped and counted ([`EventOutcome::Dropped`](super::EventOutcome::Dropped)); replies are never dropped |
///
/// ```
/// use qmp_proto::server::ServerConfig;
/// let cfg = ServerConfig::qmp()
///     .version(10, 0, 2, "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1")
///     .command("query-status")
///     .oob_command("query-yank");
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) mode: Mode,
    pub(crate) version: (u64, u64, u64),
    pub(crate) package: String,
    pub(crate) capabilities: Vec<String>,
    pub(crate) commands: BTreeMap<String, CommandInfo>,
    pub(crate) reject_unlisted: bool,
    pub(crate) max_message_size: usize,
    pub(crate) max_queued_commands: usize,
    pub(crate) max_held_input: usize,
    pub(crate) max_queued_output: usize,
}

impl ServerConfig {
    /// A QMP server that greets as QEMU 10.0.2 offering `oob`, hands every command to the caller, and has the
    /// defaults in the table above.
    pub fn qmp() -> Self {
        ServerConfig {
            mode: Mode::Qmp,
            version: (10, 0, 2),
            package: String::new(),
            capabilities: vec!["oob".into()],
            commands: BTreeMap::new(),
            reject_unlisted: false,
            max_message_size: DEFAULT_SERVER_MAX_MESSAGE_SIZE,
            max_queued_commands: QMP_REQ_QUEUE_LEN_MAX,
            max_held_input: 1 << 20,
            max_queued_output: 16 << 20,
        }
    }

    /// A guest-agent server: no greeting, LF line endings, `guest-sync` and `guest-sync-delimited` answered by
    /// the server itself, `guest-shutdown` and `guest-suspend-*` silent on success.
    pub fn guest_agent() -> Self {
        let cfg = ServerConfig { mode: Mode::GuestAgent, capabilities: Vec::new(), ..ServerConfig::qmp() };
        ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"]
            .into_iter()
            .fold(cfg, ServerConfig::silent_command)
    }

    /// The version in the greeting (`{"qemu": {"major", "minor", "micro"}, "package"}`).
    pub fn version(mut self, major: u64, minor: u64, micro: u64, package: impl Into<String>) -> Self {
        self.version = (major, minor, micro);
        self.package = package.into();
        self
    }

    /// The capabilities the greeting offers (QEMU: `["oob"]`, or `[]` when the monitor cannot run out of band).
    /// Only `oob` can be enabled; others are announced and refused as QEMU refuses unknown ones.
    pub fn capabilities<S: Into<String>>(mut self, capabilities: impl IntoIterator<Item = S>) -> Self {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Lists an in-band command.
    pub fn command(self, name: impl Into<String>) -> Self {
        self.command_info(name, CommandInfo::default())
    }

    /// Lists a command that may also run out of band (`exec-oob`).
    pub fn oob_command(self, name: impl Into<String>) -> Self {
        self.command_info(name, CommandInfo { allow_oob: true, success_response: true })
    }

    /// Lists a command that sends no reply when it succeeds (guest agent's `guest-shutdown`).
    pub fn silent_command(self, name: impl Into<String>) -> Self {
        self.command_info(name, CommandInfo { allow_oob: false, success_response: false })
    }

    /// Lists a command with explicit properties.
    pub fn command_info(mut self, name: impl Into<String>, info: CommandInfo) -> Self {
        self.commands.insert(name.into(), info);
        self
    }

    /// When true, the server itself answers commands that are not listed with QEMU's `CommandNotFound`
    /// ("The command X has not been found"), and `exec-oob` of a listed in-band command with "The command X
    /// does not support OOB". When false (the default), unlisted commands go to the caller, `exec-oob` ones as
    /// out-of-band commands.
    pub fn reject_unlisted(mut self, reject: bool) -> Self {
        self.reject_unlisted = reject;
        self
    }

    /// The largest message (the text of its JSON tokens), 64 MiB by default as in QEMU.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.max(1);
        self
    }

    /// In-band commands that may wait with OOB negotiated before the server stops reading (QEMU: 8). Without
    /// OOB QEMU reads nothing while a command is being processed, and neither does this server. Also bounds
    /// the out-of-band commands handed over and not yet answered.
    pub fn max_queued_commands(mut self, n: usize) -> Self {
        self.max_queued_commands = n.max(1);
        self
    }

    /// Bytes the server keeps of input fed while it does not want any.
    pub fn max_held_input(mut self, bytes: usize) -> Self {
        self.max_held_input = bytes;
        self
    }

    /// Bytes of untransmitted output beyond which events are dropped.
    pub fn max_queued_output(mut self, bytes: usize) -> Self {
        self.max_queued_output = bytes;
        self
    }

    /// The protocol.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What the server knows about `name`, if it is listed.
    pub fn command_info_of(&self, name: &str) -> Option<CommandInfo> {
        self.commands.get(name).copied()
    }
}
