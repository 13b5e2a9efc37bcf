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
//! qmp serve -s /tmp/fake.qmp --script answers.json
//! qmp demo
//! ```
//!
//! Exit status: 0 success, 1 the server rejected the command (or the job failed), 2 usage error, 3 connection
//! error or timeout.

mod args;
mod demo;
mod job;
mod job_display;
mod output;
mod serve;
mod session;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::output::{print_event, print_value, Failure};
use crate::session::{Session, Target};

#[derive(Debug, Parser)]
#[command(name = "qmp", version, about = "Talk to QEMU over QMP or to its guest agent", long_about = None)]
struct Cli {
    /// Unix socket of the QMP monitor (or of the guest agent with --ga).
    #[arg(short, long, global = true, env = "QMP_SOCKET")]
    socket: Option<PathBuf>,
    /// TCP address (host:port) of the monitor, instead of a unix socket.
    #[arg(long, global = true, conflicts_with = "socket")]
    tcp: Option<String>,
    /// Speak the guest-agent protocol (qemu-ga) instead of QMP.
    #[arg(long, global = true)]
    ga: bool,
    /// Seconds to wait for the connection and for each command.
    #[arg(short, long, global = true, default_value_t = 30.0)]
    timeout: f64,
    /// Print JSON on one line instead of indented.
    #[arg(short, long, global = true)]
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
    /// Interactive shell: one command per line (`name key=value ...` or a JSON object); events are shown as
    /// they arrive between commands. End with Ctrl-D.
    Shell,
    /// QEMU jobs: run one to its end with a progress bar, list, watch, cancel, complete.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Be a fake QEMU on --socket until killed: qmp-rs's server answering query-version, query-status,
    /// stop/cont, query-commands, query-qmp-schema (qemu-storage-daemon 10's) and quit, plus a script;
    /// arguments are checked against the schema with QEMU's error texts.
    Serve {
        /// JSON answers per command: {"NAME": {"return": V} or {"error": {"class": C, "desc": D}},
        /// optionally "events": [{"event": E, "data": D}]}.
        #[arg(long)]
        script: Option<PathBuf>,
    },
    /// Start a throwaway qemu-storage-daemon (or, without one, the fake of `qmp serve`) and show a short
    /// session with it.
    Demo,
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
    if let Command::Demo = cli.command {
        return demo::run(timeout);
    }
    if let Command::Serve { script } = &cli.command {
        let Some(socket) = &cli.socket else {
            return Err(Failure::Usage("give the socket to serve on with -s PATH".into()));
        };
        return serve::run(socket, script.as_deref());
    }
    let target = match (&cli.socket, &cli.tcp) {
        (Some(path), _) => Target::Unix(path.clone()),
        (None, Some(addr)) => Target::Tcp(addr.clone()),
        (None, None) => {
            return Err(Failure::Usage("give the monitor's socket with -s PATH (or --tcp HOST:PORT)".into()))
        }
    };
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
                let Some(event) = session.next_event(wait)? else { continue };
                if names.is_empty() || names.contains(&event.name) {
                    print_event(&event);
                    seen += 1;
                }
            }
            Ok(())
        }
        Command::Shell => shell::run(&mut session, cli.compact),
        Command::Job(command) => job::run(&mut session, command, cli.compact),
        Command::Demo | Command::Serve { .. } => unreachable!("handled above"),
    }
}
