//! One behavioural suite, every adapter: the same scenarios run against `qmp-blocking`, `qmp-tokio`, `qmp-smol`
//! under smol and `qmp-smol` under async-std.
//!
//! - `behaviour/harness.rs`: the [`Adapter`](harness::Adapter) trait the scenarios drive, and the normalized
//!   results they assert on.
//! - `behaviour/blocking_adapter.rs`, `behaviour/async_adapters.rs`: the trait implemented for each crate and runtime.
//! - `behaviour/jobs.rs` (`run_job` / `watch_job` against a real storage daemon), `behaviour/real.rs` (real QEMU), `behaviour/scripted.rs` (the scripted misbehaving server),
//!   `behaviour/cancel.rs` (randomized cancellation): the scenarios, each a function generic over the adapter.
//! - `behaviour/peers.rs`: where the happy-path scenarios' server comes from ([`Peer`](peers::Peer)): real
//!   QEMU, or our own server (`qmp_proto::Server` answering as `qmp serve` does). Those scenarios run against
//!   both: `<adapter>::<scenario>` against QEMU, `<adapter>::ours::<scenario>` against our server, so
//!   `cargo test -p qmp-tests --test behaviour ours::` is our client against our server everywhere.
//!
//! [`behaviour_suite!`] turns every scenario into a `#[test]` in a module per adapter, so
//! `cargo test -p qmp-tests --test behaviour smol::` runs one adapter and `cargo test -p qmp-tests --test
//! behaviour flood` one scenario everywhere. Tests needing a QEMU binary that is not installed print `SKIPPED:`
//! (or fail under `QMP_TEST_REQUIRE_ALL=1`).

#[path = "behaviour/async_adapters.rs"]
mod async_adapters;
#[path = "behaviour/blocking_adapter.rs"]
mod blocking_adapter;
#[path = "behaviour/cancel.rs"]
mod cancel;
#[path = "behaviour/harness.rs"]
mod harness;
#[path = "behaviour/jobs.rs"]
mod jobs;
#[path = "behaviour/peers.rs"]
mod peers;
#[path = "behaviour/real.rs"]
mod real;
#[path = "behaviour/scripted.rs"]
mod scripted;

/// Generates, in module `$name`, one `#[test]` per scenario for the adapter `$adapter`; each scenario generic
/// over a [`Peer`](peers::Peer) (the list after `served:`) once against real QEMU and once, in module
/// `$name::ours`, against our own server.
macro_rules! behaviour_suite {
    ($name:ident, $adapter:ty $(; $($extra_module:ident :: $extra:ident),* $(,)?)?) => {
        behaviour_suite!(@tests $name, $adapter;
            $($($extra_module::$extra,)*)?
            jobs::job_blockdev_create_succeeds,
            jobs::job_blockdev_create_fails,
            jobs::job_backup_progress_rises_to_total,
            jobs::job_mirror_ready_then_completed,
            jobs::job_mirror_cancelled,
            jobs::job_watched_from_a_second_monitor,
            jobs::job_deadline_cancels_the_job,
            jobs::job_connection_loss_ends_the_runner,
            real::qsd10_events_interleaved_with_replies,
            real::qga_sync_info_ping,
            real::qsys_monitor_on_stdio,
            real::qsys_monitor_on_fifos,
            real::qga_power_commands_refused_are_errors,
            scripted::garbage_bytes_session_survives,
            scripted::old_greetings_are_accepted,
            scripted::message_cut_off_by_eof,
            scripted::events_before_the_negotiation_reply_reach_the_first_subscriber,
            scripted::hang_up_mid_reply_with_a_command_unread,
            scripted::disconnect_mid_reply_every_pending_call_ends_once,
            scripted::flood_of_a_million_events_stalled_subscriber,
            scripted::silence_greeting_timeout,
            scripted::silence_negotiation_timeout,
            scripted::silence_command_timeout_late_reply_swallowed,
            scripted::line_of_64_mib_over_the_limit,
            scripted::connect_waits_while_the_backlog_is_full;
            served:
            real::qsd10_query_version_typed,
            real::qsd10_many_tasks_every_reply_to_its_caller,
            real::qsys_oob_overtakes_in_band,
            real::qsys_without_oob_exec_oob_is_a_usage_error,
            real::qsys_pretty_monitor,
            real::second_client_gets_no_greeting,
            cancel::dropped_calls_never_tear_or_misroute,
        );
    };
    (@tests $name:ident, $adapter:ty; $($module:ident :: $scenario:ident),* $(,)?;
        served: $($served_module:ident :: $served:ident),* $(,)?) => {
        mod $name {
            $(
                #[test]
                fn $scenario() {
                    crate::harness::run_scenario::<$adapter>(
                        stringify!($scenario),
                        crate::$module::$scenario::<$adapter>,
                    );
                }
            )*
            $(
                #[test]
                fn $served() {
                    crate::harness::run_scenario::<$adapter>(
                        stringify!($served),
                        crate::$served_module::$served::<$adapter, crate::peers::Real>,
                    );
                }
            )*

            /// The scenarios generic over the server, against our own server.
            mod ours {
                $(
                    #[test]
                    fn $served() {
                        crate::harness::run_scenario::<$adapter>(
                            concat!("ours::", stringify!($served)),
                            crate::$served_module::$served::<$adapter, crate::peers::Ours>,
                        );
                    }
                )*
            }
        }
    };
}

behaviour_suite!(blocking, crate::blocking_adapter::Blocking);
// Async only: a blocking `submit` beyond `max_pending` fails at once (QueueFull) instead of waiting for room, and
// a blocking `close` hands the stream back instead of lingering.
behaviour_suite!(tokio, crate::async_adapters::Async<crate::async_adapters::Tokio>;
    scripted::held_back_call_keeps_its_deadline, real::qga_close_with_a_reply_unread_keeps_the_agent,
    jobs::job_dropped_runner_cancels_the_job);
behaviour_suite!(smol, crate::async_adapters::Async<crate::async_adapters::Smol>;
    scripted::held_back_call_keeps_its_deadline, real::qga_close_with_a_reply_unread_keeps_the_agent,
    jobs::job_dropped_runner_cancels_the_job);
behaviour_suite!(async_std, crate::async_adapters::Async<crate::async_adapters::AsyncStd>;
    scripted::held_back_call_keeps_its_deadline, real::qga_close_with_a_reply_unread_keeps_the_agent,
    jobs::job_dropped_runner_cancels_the_job);
