//! [`Service`]: what a served connection answers. A handler (an async closure) per command, an optional fallback,
//! and the [`ServerConfig`] of the protocol side. The core answers the protocol itself (greeting, negotiation,
//! malformed input, unknown commands when there is no fallback); handlers see only real commands.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use qmp_proto::server::{Arguments, Failure, ServerConfig};
use serde_json::Value;

/// What a handler returns: the command's `return` value, or a failure (`class`, `desc`).
pub type Reply = Result<Value, Failure>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

type BoxHandler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// A command as a handler receives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Request {
    /// The command name.
    pub name: String,
    /// Its `arguments`, as JSON text (`{}` when there were none): deserialize them into the command's type,
    /// or read them as a map ([`Arguments::map`], `req.arguments["name"]`).
    pub arguments: Arguments,
    /// True when it came as `exec-oob`.
    pub oob: bool,
}

/// The commands a served connection answers, and the protocol settings. Cheap to clone; shared by every
/// connection of a server.
///
/// ```
/// use qmp_async::serve::Service;
/// use qmp_proto::server::{Failure, ServerConfig};
/// use serde_json::json;
///
/// let service = Service::new(ServerConfig::qmp())
///     .command("query-status", |_req| async { Ok(json!({"status": "running", "running": true})) })
///     .command("stop", |req| async move {
///         if req.arguments.is_empty() { Ok(json!({})) } else { Err(Failure::generic("no arguments, please")) }
///     });
/// ```
#[derive(Clone)]
pub struct Service {
    config: ServerConfig,
    handlers: HashMap<String, BoxHandler>,
    fallback: Option<BoxHandler>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("Service").field("commands", &names).field("fallback", &self.fallback.is_some()).finish()
    }
}

fn boxed<F, Fut>(handler: F) -> BoxHandler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    Arc::new(move |req| Box::pin(handler(req)) as HandlerFuture)
}

impl Service {
    /// A service with no commands yet: every command but the protocol's own gets QEMU's `CommandNotFound`.
    pub fn new(config: ServerConfig) -> Self {
        Service { config, handlers: HashMap::new(), fallback: None }
    }

    /// Answers the in-band command `name` with `handler`.
    pub fn command<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let name = name.into();
        self.config = self.config.command(name.clone());
        self.handlers.insert(name, boxed(handler));
        self
    }

    /// Answers `name`, which may also run out of band (`exec-oob`), with `handler`.
    pub fn oob_command<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let name = name.into();
        self.config = self.config.oob_command(name.clone());
        self.handlers.insert(name, boxed(handler));
        self
    }

    /// Answers every command without a handler of its own (instead of `CommandNotFound`).
    pub fn fallback<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.fallback = Some(boxed(handler));
        self
    }

    /// The protocol settings each connection's [`Server`](qmp_proto::Server) gets: the configured ones, the
    /// commands with handlers listed, and unlisted ones refused by the core unless there is a fallback.
    pub fn server_config(&self) -> ServerConfig {
        self.config.clone().reject_unlisted(self.fallback.is_none())
    }

    /// The future answering `request` (a handler's, the fallback's, or `CommandNotFound`).
    pub fn call(&self, request: Request) -> HandlerFuture {
        match self.handlers.get(&request.name).or(self.fallback.as_ref()) {
            Some(handler) => handler(request),
            None => {
                let failure = Failure::command_not_found(&request.name);
                Box::pin(async move { Err(failure) })
            }
        }
    }
}
