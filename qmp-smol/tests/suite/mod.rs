//! The behaviour every runtime must show, against real QEMU processes and the scripted fake server. Each
//! function is one test body, generic over the runtime; [`suite!`] turns them into `#[test]`s for one runtime.

#![allow(dead_code)]

pub mod fake;
pub mod qemu;

/// Generates one `#[test]` per suite function for the runtime `$rt`.
#[macro_export]
macro_rules! suite {
    ($rt:ty) => {
        $crate::suite!(@tests $rt;
            qemu::query_version_storage_daemon_10,
            qemu::query_version_system_72,
            qemu::pretty_monitor,
            qemu::concurrent_commands_from_many_tasks,
            qemu::events_reach_every_subscriber,
            qemu::slow_subscriber_lags_and_commands_go_on,
            qemu::oob_commands_and_overtaking,
            qemu::oob_refused_when_not_negotiated,
            qemu::command_timeout_then_session_goes_on,
            qemu::greeting_timeout_for_a_second_client,
            qemu::dropped_futures_never_desync,
            qemu::guest_agent_sync_and_commands,
            qemu::send_fd_and_add_fd,
            qemu::fd_passing_needs_a_unix_socket,
            qemu::close_and_closed,
            qemu::server_quits,
            qemu::dropping_every_handle_closes,
            qemu::listener_accepts_qemu,
            qemu::tcp_connect,
            qemu::with_driver_spawned_by_hand,
            qemu::typed_commands_and_events,
            fake::late_reply_is_swallowed,
            fake::disconnect_mid_reply_ends_every_call_once,
            fake::event_flood_with_a_stalled_subscriber,
            fake::garbage_is_reported_and_the_session_survives,
            fake::pending_limit_makes_callers_wait,
            fake::timeouts_fire_in_deadline_order,
        );
    };
    (@tests $rt:ty; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                suite::$module::$name::<$rt>();
            }
        )*
    };
}
