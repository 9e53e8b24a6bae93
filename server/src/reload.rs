//! SIGHUP: read the configuration again and apply what can change while calls go on.
//!
//! Reloaded: the sign-up rules (`default_perms`, `allow_unsigned`, `register_rate`,
//! `max_channels_per_user`) and the relay limits (`max_members`, `max_member_pps`,
//! `peer_timeout`, `max_channels`), for open channels too: members stay in their calls (a
//! lowered `max_members` only refuses new JOINs; rate buckets refill at the new rate).
//! Everything else (addresses, the data directory, the port range, connection limits and
//! timeouts, metrics, the log format) needs a restart; a change to it is logged as such and
//! otherwise ignored. A file that does not load (bad key, bad value) changes nothing: the
//! server goes on with what it had, and says why in the log.

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::control::Control;
use crate::server::{policy_of, relay_config_of};
use crate::store::SqliteStore;

/// Applies reloaded configurations to a running server.
#[derive(Debug)]
pub struct Reloader {
    /// The server's state.
    control: Arc<Control<SqliteStore>>,
    /// The configuration in force (as loaded, before start-up adjustments).
    current: Mutex<Config>,
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new values are in force.
    pub applied: Vec<&'static str>,
    /// Keys that changed but need a restart.
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    /// A reloader for the server `control`, started with `current`.
    pub fn new(control: Arc<Control<SqliteStore>>, current: Config) -> Self {
        Self {
            control,
            current: Mutex::new(current),
        }
    }

    /// Applies what can be applied of `new`. Blocking (takes the server's locks briefly).
    pub fn apply(&self, new: Config) -> Reloaded {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = Reloaded::default();
        macro_rules! diff {
            ($list:expr, $($field:ident),*) => {$(
                if current.$field != new.$field { $list.push(stringify!($field)); }
            )*};
        }
        diff!(
            r.applied,
            default_perms,
            allow_unsigned,
            register_rate,
            max_channels_per_user,
            max_members,
            max_member_pps,
            peer_timeout,
            max_channels
        );
        diff!(
            r.need_restart,
            listen,
            data_dir,
            udp_ports,
            max_connections,
            max_connections_per_ip,
            request_timeout,
            first_byte_timeout,
            metrics
        );
        if !r.applied.is_empty() {
            self.control.set_policy(policy_of(&new));
            let (relay, max_channels) = relay_config_of(&new);
            self.control.set_relay_limits(relay, max_channels);
        }
        // What needs a restart stays as it runs, so it is reported again until restarted.
        let running = current.clone();
        *current = Config {
            listen: running.listen,
            data_dir: running.data_dir,
            udp_ports: running.udp_ports,
            max_connections: running.max_connections,
            max_connections_per_ip: running.max_connections_per_ip,
            request_timeout: running.request_timeout,
            first_byte_timeout: running.first_byte_timeout,
            metrics: running.metrics,
            ..new
        };
        r
    }
}
