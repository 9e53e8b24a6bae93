//! KV end-to-end encryption, the core: one MLS group (RFC 9420) per encrypted channel, and
//! SFrame (RFC 9605) protection of every Opus frame with per-sender keys from the group's
//! exporter. Sans-IO like quinn-proto: no sockets, threads or clocks; MLS messages are bytes
//! in and bytes out, for the server to order and forward as a delivery service; time enters
//! as `now` where keys expire. **Not yet wired to the network** (issue 11's later steps add
//! the push connection, the delivery service and the voice path); PROTOCOL.md, "End-to-end
//! encryption: the core", has the same design from the wire's side.
//!
//! # Layout
//! - [`credential`]: a member's MLS credential is its KV identity (uid and Ed25519 identity
//!   key); [`credential::verify_leaf`] checks a leaf against a [`Directory`] (what the server
//!   vouches for).
//! - [`member`]: [`Member`], a client's MLS state for one channel (openmls with the RustCrypto
//!   provider): key packages, create / join (Welcome) / add / remove / leave, handshake
//!   messages in ([`Member::handle`]), exporter secrets, the safety code, and the frame keys
//!   of the current epoch.
//! - [`frame`]: [`FrameKeys`], per-sender SFrame keys of the current and previous epoch, the
//!   replay windows, and encrypt / decrypt of one frame; every rejection counted
//!   ([`FrameStats`]).
//! - [`safety`]: [`SafetyCode`], five groups of five digits from the epoch authenticator.
//!
//! For the wiring: the MLS owner (the backend thread with the push connection) keeps the
//! [`Member`]; the capture thread (encrypts) and the playout thread (decrypts) each own a
//! [`FrameKeys`], fed an [`EpochUpdate`] ([`Member::epoch_update`]) after every epoch change
//! over a bounded lifecycle channel, so the frame path takes no lock.
//!
//! # Design
//! **Group.** Ciphersuite `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`. Every join and
//! leave is a commit, so a new epoch: a member who left holds no key of the epochs after
//! it, a joiner none of the epochs before (tested with the departed member's kept state).
//! Handshake messages travel as `PublicMessage` (their group, epoch and sender are readable,
//! so the server can order them: the first commit for an epoch wins; a loser's pending
//! commit is discarded when the winner arrives); they still carry the membership tag and the
//! sender's signature, so a non-member's commit is refused. Welcomes include the ratchet
//! tree. A committer merges its own commit only when the delivery service accepted it
//! ([`Member::confirm_commit`], or [`Member::handle`] of the commit forwarded back to it).
//!
//! **Credential.** A `BasicCredential` of 41 bytes: format 1, uid (u64 BE), Ed25519 identity
//! key; and the leaf's MLS signature key *is* that identity key. A peer accepts a leaf (in a
//! key package it adds, in a Welcome's tree, in a commit's adds and update path) only if the
//! key in the credential equals the leaf's signature key and the [`Directory`] says the uid
//! has that key (the wiring backs it with the keys the server holds for uids, pinned on first
//! sight). The identity key cannot be tricked into signing KV requests through MLS: MLS
//! signs labelled content whose first byte is a short varint, KV's signed requests start
//! with `"KV signed request v1\0"`.
//!
//! **Frame keys** (RFC 9605 §5.2). Per epoch, `base_key = MLS-Exporter("SFrame 1.0 Base
//! Key", "", 16)`; each sender's key id is `KID = leaf_index << 4 | (epoch mod 16)`
//! (context 0, `E` = 4, `S` = 12 bits); SFrame derives each sender's key and salt from
//! `base_key` and its KID (§4.4.2, HKDF-SHA256), cipher suite `AES_128_GCM_SHA256_128`.
//! Every member derives every sender's key at each epoch change (one HKDF per member);
//! per frame, the KID picks the epoch (two slots) and the sender (a table index): O(1).
//!
//! **Frame format and overhead.** A protected frame is the SFrame ciphertext: a config byte
//! (key id and counter lengths, or the values themselves when below 8), the key id (0–2
//! bytes), the counter (0–8 bytes, +1 per frame, per sender and epoch), the encrypted Opus
//! frame and a 16-byte tag. Added: 17–27 bytes, 19–21 in practice (up to 16 leaves; the
//! counter takes 1 byte for 256 frames, 2 up to 65 536, 3 beyond). Authenticated but not sent: caller-supplied bytes, for
//! which the wiring passes the frame's own sequence number and timestamp, so a relay cannot
//! relabel frames. A frame is protected once, before redundancy packing: every redundant
//! copy in later payloads is the same ciphertext, and the 504-byte payload keeps its layout
//! (at 48 kb/s, 20 ms frames, three frames fit where four plain ones did). The low-rate
//! repeats (the second encoder's frames) are frames of their own, each protected once the
//! same way, with the same position bytes as the full-rate frame of that sequence number.
//!
//! **Replay window.** Per sender and epoch, the newest counter and a 128-bit map behind it
//! (sframe's `ReplayAttackProtection`): a counter seen before is `replayed`, one more than
//! 128 frames behind is `too_old`. The window is updated only after a frame authenticated,
//! so forgeries cannot move it. A receiver decrypts only frames it still needs (a redundant
//! copy of a frame it has is skipped by sequence number before decryption).
//!
//! **Grace period.** When an epoch starts, the previous one's keys keep decrypting for 3 s
//! (`now` passed in; [`FrameKeys::poll_timeout`]), for packets in flight and senders that
//! process the commit a little later; then its frames are `expired_epoch`. Only one previous
//! epoch is kept. A removed member stops sending at once.
//!
//! **Safety code.** From the epoch authenticator: equal on every member of an epoch,
//! different across epochs.
//!
//! **What the server sees** (once wired): group ids, epochs, who commits and proposes,
//! credentials (uids and identity keys, which it knows anyway) and the public tree; Welcomes
//! are encrypted to their joiner. Of voice: each frame's key id (epoch bits and the sender's
//! leaf index), counter, and length. Never an Opus frame, an exporter secret or a safety
//! code. Frame lengths follow Opus' VBR (a known leak of speech activity and, weakly,
//! content; constant bitrate would close it).
//!
//! **Limits.** [`member::MAX_MEMBERS`] (1024, the server's per-channel cap) bounds rosters,
//! trees and key tables; [`member::MAX_MESSAGE_LEN`] bounds an MLS message and
//! [`member::MAX_PENDING_PROPOSALS`] the proposals waiting for a commit,
//! [`member::MAX_KEY_PACKAGES`] the key packages whose private keys are kept; every frame
//! table is bounded by [`frame::MAX_LEAVES`]. The one clock involved is openmls' own: it
//! checks key-package and leaf lifetimes (84 days, with an hour's margin for skew) against
//! the system clock.
//!
//! **Not protected against members.** SFrame keys are shared by the group: a member could
//! forge another member's frames (RFC 9605 §9.5); outsiders cannot.
#![warn(missing_docs)]

pub mod credential;
pub mod frame;
pub mod member;
pub mod safety;

pub use credential::{CredentialError, Directory};
pub use frame::{DecryptedFrame, EncryptError, EpochUpdate, FrameKeys, FrameRejected, FrameStats};
pub use member::{CommitOut, E2eeError, Handled, HandshakeStats, Member};
pub use safety::SafetyCode;
