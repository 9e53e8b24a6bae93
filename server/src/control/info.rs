//! SERVER_INFO (extension, type 8): what a client needs before anything else.

use kv_proto::control::features;
use kv_proto::{ControlReply, ServerInfo, PROTOCOL_VERSION};

use super::Control;
use crate::store::Store;

/// Every extension this server serves.
pub const FEATURES: u64 = features::NAMES
    | features::CHANNEL_INFO
    | features::SIGNED_SYSTEM_PACKETS
    | features::USER_INFO
    | features::SIGNED_REQUESTS
    | features::JOIN_KEX
    | features::LIST_CHANNELS
    | features::MODERATION;

impl<S: Store> Control<S> {
    /// Protocol version, feature bits and the key that signs system packets. Needs no
    /// user, so a client can check the server before registering.
    pub fn server_info(&self) -> ControlReply {
        ControlReply::ServerInfo(ServerInfo {
            version: PROTOCOL_VERSION,
            // Every channel of an --allow-unsigned server stays plain.
            features: if self.policy().allow_unsigned {
                FEATURES
            } else {
                FEATURES | features::E2EE
            },
            public_key: self.public_key,
        })
    }
}
