//! Every tunable of the server in one plain struct, so the binary, the tests and future
//! embedders (the TUI's demo mode) configure it the same way.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use kv_proto::Perms;

/// How a server instance behaves. `Config::new` gives the defaults of the flags (the cli
/// tests check that the two agree field by field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// TCP control address; its IP is also where channel sockets bind.
    pub listen: SocketAddr,
    /// Where the database and the key live.
    pub data_dir: PathBuf,
    /// Ports for channel sockets (for firewalls); `None` lets the OS pick.
    pub udp_ports: Option<RangeInclusive<u16>>,
    /// A member silent this long is removed from its channel (seed: 60 s).
    pub peer_timeout: Duration,
    /// Permissions of users who sign themselves up (REGISTER with auid 0).
    pub default_perms: Perms,
    /// Concurrent TCP control connections; more wait in the kernel's backlog. Lowered at
    /// start to what the descriptor limit can serve.
    pub max_connections: usize,
    /// Concurrent control connections from one IPv4 address or IPv6 /64; more are
    /// answered SERV at once.
    pub max_connections_per_ip: usize,
    /// How long one control connection may take to send its request.
    pub request_timeout: Duration,
    /// Packets per second one member may send before the relay drops its excess.
    pub max_member_pps: u32,
    /// Members (joined users) per channel.
    pub max_members: usize,
    /// Channels per server; each is a socket and a relay on one of the workers.
    pub max_channels: usize,
    /// Serve the seed's unsigned commands for users without a key (`--allow-unsigned`).
    pub allow_unsigned: bool,
    /// Channels one user may own (perm_admin is exempt).
    pub max_channels_per_user: usize,
    /// Sign-ups per minute per IPv4 address / IPv6 /64; 0 = unlimited.
    pub register_rate: u32,
    /// How long a control connection may stay silent before its first byte.
    pub first_byte_timeout: Duration,
    /// Where the Prometheus metrics listener binds; `None`: no listener.
    pub metrics: Option<SocketAddr>,
}

impl Config {
    /// The defaults of `kv-server`'s flags, with the given address and data directory.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            udp_ports: None,
            peer_timeout: Duration::from_secs(60),
            default_perms: Perms::ADD_CHANNEL,
            max_connections: 1024,
            max_connections_per_ip: 16,
            request_timeout: Duration::from_secs(10),
            max_member_pps: 1000,
            max_members: 1024,
            max_channels: 1024,
            allow_unsigned: false,
            max_channels_per_user: 8,
            register_rate: 30,
            first_byte_timeout: Duration::from_secs(2),
            metrics: None,
        }
    }
}
