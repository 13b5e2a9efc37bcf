//! `qmp`: run QMP and guest-agent commands from a shell.
//!
//! ```text
//! qmp -s /run/vm.qmp exec query-status
//! qmp -s /run/vm.qmp exec blockdev-add driver=null-co node-name=n0 size=1048576
//! qmp -s /run/vm.qmp exec device_del '{"id": "nic0"}'
//! qmp -s /run/vm.qmp events --name JOB_STATUS_CHANGE --count 4
//! qmp -s /run/vm.qmp shell
//! qmp -s /run/vm.qmp job run blockdev-backup job-id=j0 device=n0 target=n1 sync=full
//! qmp -s /run/vm.qmp job list
//! qmp --ga -s /run/vm.qga exec guest-info
//! qmp -s /tmp/fake.qmp serve --script answers.json
//! qmp proxy --upstream /run/vm.qmp --listen /run/vm-shared.qmp --policy policy.toml
//! qmp --tcp 127.0.0.1:4444 serve
//! qmp demo
//! ```
//!
//! Exit status: see [`EXIT_STATUS`] (also in `qmp --help` and `qmp man`).

mod args;
mod demo;
mod generate;
mod job;
mod job_display;
mod output;
#[cfg(feature = "proxy")]
mod proxy;
mod serve;
mod session;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::output::{print_event, print_value, Failure};
use crate::session::{Session, Target};

/// Examples shown by `qmp --help` and in the man page.
const EXAMPLES: &str = "\
Examples:
  qmp -s /run/vm.qmp shell                         interactive shell (Tab completes, history, live events)
  qmp -s /run/vm.qmp exec query-status             one command, its result as JSON
  qmp -s /run/vm.qmp exec blockdev-add driver=null-co node-name=n0 size=1048576
  qmp -s /run/vm.qmp exec device_del '{\"id\": \"nic0\"}'
  qmp -s /run/vm.qmp events --name JOB_STATUS_CHANGE --count 4
  qmp -s /run/vm.qmp -c exec query-block | jq '.[].device'
  qmp --ga -s /run/vm.qga exec guest-info           the guest agent instead of QMP
  qmp proxy --upstream /run/vm.qmp --listen /run/vm-shared.qmp --policy policy.toml
  qmp proxy --upstream /run/vm.qmp --listen-tcp 0.0.0.0:4444 --tls-cert proxy.pem --tls-key proxy.key \\
      --tls-client-ca clients-ca.pem --policy policy.toml     TCP: TLS clients known by their certificate
  qmp --tcp 127.0.0.1:4444 serve                   a fake QEMU on TCP (-s PATH: on a unix socket)
  qmp completions bash > ~/.local/share/bash-completion/completions/qmp
  qmp man > qmp.1";

/// The exit statuses, shown by `qmp --help` and in the man page.
pub const EXIT_STATUS: &str = "\
Exit status:
  0  success; also when the reader of stdout went away (qmp ... | head -1), and when `events` ends
     because the server closed the connection normally (QEMU quit)
  1  the server rejected the command (its error class and description are on stderr)
  2  usage error (bad option, bad key=value, bad JSON)
  3  connection error: cannot connect, no greeting, not a QMP server or agent, connection lost, timed out";

#[derive(Debug, Parser)]
#[command(name = "qmp", version, about = "Talk to QEMU over QMP or to its guest agent", long_about = None)]
#[command(after_help = format!("{EXAMPLES}\n\n{EXIT_STATUS}"))]
struct Cli {
    /// Unix socket of the QMP monitor (or of the guest agent with --ga).
    #[arg(short, long, env = "QMP_SOCKET")]
    socket: Option<PathBuf>,
    /// TCP address (host:port) of the monitor, instead of a unix socket. For `serve`: the address to listen on
    /// (port 0 picks a free port; the address is printed on stderr).
    #[arg(long, conflicts_with = "socket")]
    tcp: Option<String>,
    /// Speak the guest-agent protocol (qemu-ga) instead of QMP.
    #[arg(long)]
    ga: bool,
    /// Seconds to wait for the connection and for each command.
    #[arg(short, long, default_value_t = 30.0)]
    timeout: f64,
    /// Print JSON results on one line instead of indented (exec, shell).
    #[arg(short, long)]
    compact: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one command and print its result.
    Exec {
        /// The command, for example query-status.
        name: String,
        /// Arguments: one JSON object, or key=value words (values parsed as JSON when they are, dotted keys nest).
        args: Vec<String>,
        /// Run it out of band (exec-oob).
        #[arg(long)]
        oob: bool,
    },
    /// Print events as JSON lines until interrupted (or --count / --duration).
    Events {
        /// Only events with this name (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Interactive shell: one command per line (`name key=value ...`, a JSON object, `!hmp command`), Tab
    /// completion, history, events shown live, reconnects. `help` inside it lists the syntax. End with Ctrl-D.
    Shell(shell::Settings),
    /// QEMU jobs: run one to its end with a progress bar, list, watch, cancel, complete.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Be a fake QEMU on -s PATH (a unix socket) or --tcp HOST:PORT until killed: qmp-rs's server answering
    /// query-version, query-status, stop/cont, query-commands, query-qmp-schema (qemu-storage-daemon 10's) and
    /// quit, plus a script; arguments are checked against the schema with QEMU's error texts. One client at a
    /// time, as QEMU serves a monitor.
    Serve {
        /// JSON answers per command: {"NAME": {"return": V} or {"error": {"class": C, "desc": D}},
        /// optionally "events": [{"event": E, "data": D}]}.
        #[arg(long)]
        script: Option<PathBuf>,
    },
    /// Share one QEMU monitor between many clients, each under its rule of a TOML policy (allow-list,
    /// deny-list, read-only, by peer uid/gid, listener or TLS client certificate); replies go to their sender,
    /// events to everyone. Listens on a unix socket, and on TCP with TLS and client certificates.
    #[cfg(feature = "proxy")]
    Proxy(proxy::Settings),
    /// Start a throwaway qemu-storage-daemon (or, without one, the fake of `qmp serve`) and show a short
    /// session with it.
    Demo,
    /// Print a shell completion script for `qmp` (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), made from the same definitions as --help.
    Man,
}

/// How often `events` checks, while it waits, whether the reader of stdout went away.
const STDOUT_CHECK: Duration = Duration::from_millis(200);

/// The command-line definition, for the completion scripts and the man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("qmp: {failure}");
            failure.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        return Err(Failure::Usage("--timeout must be a positive number of seconds".into()));
    }
    let timeout = Duration::from_secs_f64(cli.timeout);
    match &cli.command {
        Command::Completions { shell } => return generate::completions(*shell),
        Command::Man => return generate::man(),
        Command::Demo if cli.socket.is_some() || cli.tcp.is_some() || cli.ga => {
            return Err(Failure::Usage("demo starts its own daemon: -s, --tcp and --ga do not apply".into()))
        }
        Command::Demo => return demo::run(timeout),
        _ => {}
    }
    #[cfg(feature = "proxy")]
    if let Command::Proxy(_) = &cli.command {
        if cli.socket.is_some() || cli.tcp.is_some() || cli.ga {
            return Err(Failure::Usage("proxy takes --upstream and --listen: -s, --tcp and --ga do not apply".into()));
        }
        let Command::Proxy(settings) = cli.command else { unreachable!("matched above") };
        return proxy::run(settings, timeout);
    }
    if let Command::Serve { script } = &cli.command {
        let on = match (&cli.socket, &cli.tcp) {
            (Some(path), _) => serve::On::Unix(path),
            (None, Some(addr)) => serve::On::Tcp(addr),
            (None, None) => {
                return Err(Failure::Usage("give the socket to serve on with -s PATH or --tcp HOST:PORT".into()))
            }
        };
        if cli.ga {
            return Err(Failure::Usage("serve is a QMP server: --ga does not apply".into()));
        }
        return serve::run(on, script.as_deref());
    }
    let target = match (&cli.socket, &cli.tcp) {
        (Some(path), _) => Target::Unix(path.clone()),
        (None, Some(addr)) => Target::Tcp(addr.clone()),
        (None, None) => {
            return Err(Failure::Usage("give the monitor's socket with -s PATH (or --tcp HOST:PORT)".into()))
        }
    };
    if let Command::Shell(settings) = cli.command {
        return shell::run(&target, cli.ga, timeout, cli.compact, settings);
    }
    let mut session = Session::connect(&target, cli.ga, timeout)?;
    match cli.command {
        Command::Exec { name, args, oob } => {
            let args = args::parse_arguments(&args).map_err(Failure::Usage)?;
            let value = session.execute(&name, args.as_ref(), oob)?;
            print_value(&value, cli.compact);
            Ok(())
        }
        Command::Events { names, count, duration } => {
            let until = duration.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                let wait = until.map(|u| u.saturating_duration_since(Instant::now()));
                if wait.is_some_and(|w| w.is_zero()) {
                    break;
                }
                // Wait in slices, so that a reader of stdout that went away ends the command promptly.
                if output::stdout_closed() {
                    return Ok(());
                }
                let slice = wait.map_or(STDOUT_CHECK, |w| w.min(STDOUT_CHECK));
                let event = match session.next_event(Some(slice)) {
                    Ok(Some(event)) => event,
                    Ok(None) => continue,
                    Err(_) if session.closed_normally() => return Ok(()),
                    Err(failure) => return Err(failure),
                };
                if names.is_empty() || names.contains(&event.name) {
                    print_event(&event);
                    seen += 1;
                }
            }
            Ok(())
        }
        Command::Job(command) => job::run(&mut session, command, cli.compact),
        Command::Shell(_) | Command::Demo | Command::Serve { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled above")
        }
        #[cfg(feature = "proxy")]
        Command::Proxy(_) => unreachable!("handled above"),
    }
}
