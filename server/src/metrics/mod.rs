//! Prometheus metrics: what the server counts and how `/metrics` encodes it.
//!
//! Control requests are counted where they are answered (`control::connection`): by
//! command and result, with a latency histogram by command. prometheus-client's counters
//! and histograms are atomics, fine at control-request rates. The relay is counted in
//! per-worker atomics ([`relay`]) that the workers add to after each batch and that are
//! only summed when Prometheus scrapes, so the packet path takes no lock. [`http`] serves
//! the text over a tiny bounded HTTP/1.1 responder on the server's runtime.

pub mod http;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use kv_proto::{CommandType, ControlReply};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use relay::{DropReason, RelayMetrics, WorkerCounters};

/// Labels of a control request count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The command (`join`, `channel_info`…; `unknown` for a type the server does not
    /// know, `invalid` for bytes that never became a request).
    command: &'static str,
    /// `ok` or the error code (`ACCESS`, `PARAM`, `SERV`…).
    result: &'static str,
}

/// Labels of the latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    /// As in [`RequestLabels`].
    command: &'static str,
}

type LatencyFamily = Family<CommandLabels, Histogram, fn() -> Histogram>;

/// Everything the server exports.
#[derive(Debug)]
pub struct Metrics {
    /// The families, plus the relay collector.
    registry: Registry,
    /// Control requests by command and result.
    requests: Family<RequestLabels, Counter>,
    /// Time from a request's last byte to its reply, by command.
    latency: LatencyFamily,
}

/// Buckets from 50 µs to about 1.6 s, doubling: a request served from memory is tens of
/// microseconds, one that commits to the database milliseconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

impl Metrics {
    /// Metrics reading the relay's counters from `relay`.
    pub fn new(relay: Arc<RelayMetrics>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kv_control_requests",
            "Control requests answered, by command and result.",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "kv_control_request_duration_seconds",
            "Time from a control request's arrival to its reply, by command.",
            latency.clone(),
        );
        registry.register_collector(Box::new(relay));
        Self {
            registry,
            requests,
            latency,
        }
    }

    /// Counts one answered request.
    pub fn record(&self, command: &'static str, reply: &ControlReply, took: Duration) {
        let result = match reply {
            ControlReply::Error(code) => code.name(),
            _ => "ok",
        };
        self.requests
            .get_or_create(&RequestLabels { command, result })
            .inc();
        self.latency
            .get_or_create(&CommandLabels { command })
            .observe(took.as_secs_f64());
    }

    /// The text Prometheus scrapes (OpenMetrics text format).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `command` label of a command type.
pub fn command_label(c: CommandType) -> &'static str {
    use CommandType as C;
    match c {
        C::Create => "create",
        C::Delete => "delete",
        C::Join => "join",
        C::Leave => "leave",
        C::Register => "register",
        C::Unregister => "unregister",
        C::GetPort => "get_port",
        C::GetChannels => "get_channels",
        C::ServerInfo => "server_info",
        C::SetUserName => "set_user_name",
        C::GetUserName => "get_user_name",
        C::SetChannelName => "set_channel_name",
        C::GetChannelName => "get_channel_name",
        C::ChannelInfo => "channel_info",
        C::UserInfo => "user_info",
        C::RegisterKey => "register_key",
        C::SetKey => "set_key",
        C::Signed => "signed",
        C::JoinKex => "join_kex",
        C::ListChannels => "list_channels",
        C::Ban => "ban",
        C::Unban => "unban",
        C::SetPerms => "set_perms",
        C::ListBans => "list_bans",
        C::ListUsers => "list_users",
        C::Push => "push",
        C::CreateEncrypted => "create_encrypted",
        C::ChannelMode => "channel_mode",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::ErrorCode;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn encodes_control_and_relay_metrics() {
        let relay = Arc::new(RelayMetrics::default());
        let m = Metrics::new(relay.clone());
        m.record("join", &ControlReply::Value(1), Duration::from_micros(70));
        m.record(
            "join",
            &ControlReply::Error(ErrorCode::Access),
            Duration::from_millis(3),
        );
        let w = relay.add_worker();
        w.packets_in.fetch_add(5, Relaxed);
        w.add_drops(DropReason::RateLimit, 2);
        WorkerCounters::shift(&w.bound, 3);
        let text = m.encode().unwrap();
        for line in [
            "kv_control_requests_total{command=\"join\",result=\"ok\"} 1",
            "kv_control_requests_total{command=\"join\",result=\"ACCESS\"} 1",
            "kv_control_request_duration_seconds_count{command=\"join\"} 2",
            "kv_relay_packets_received_total 5",
            "kv_relay_dropped_total{reason=\"rate_limit\"} 2",
            "kv_relay_dropped_total{reason=\"size\"} 0",
            "kv_bound_members 3",
            "kv_relay_busy_seconds_total{worker=\"0\"} 0.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }
}
