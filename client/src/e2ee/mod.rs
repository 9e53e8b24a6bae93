//! End-to-end encrypted channels on the client (issue 11): the push connection
//! ([`push`]) and the MLS owner of each encrypted channel ([`channel`]), built on
//! `kv-e2ee`. The voice threads get frame keys from here ([`channel::CryptoEvent::Epoch`]).

pub mod channel;
pub mod driver;
pub mod push;

pub use channel::{ChannelCrypto, CryptoEvent};
pub use driver::{PushChannel, PushChannelError};
pub use push::{PushEvent, PushSender};
