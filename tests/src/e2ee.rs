//! Members of encrypted channels for the end-to-end encryption tests and `e2ee-bench`:
//! keyed identities (in memory or as identity files for `kv --identity`), and
//! [`PushMember`], a member driven in-process through its push connection (the library's
//! [`PushChannel`], no voice), polled until a condition holds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kv_client::control::ControlClient;
use kv_client::e2ee::{CryptoEvent, PushChannel};
use kv_e2ee::FrameKeys;
use kv_proto::keyfile::Identity;

use crate::server::ServerProcess;

/// How long [`settle`] waits before it gives up.
pub const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// A new keyed user of `server`.
pub fn identity(server: &ServerProcess) -> Identity {
    let uid = server.signup();
    Identity {
        uid,
        key: server.key_of(uid).expect("keyed user"),
    }
}

/// A new keyed user of `server` whose identity file is `dir/name` (mode 0600, as `kv`
/// requires), for `kv --identity`.
pub fn identity_file(server: &ServerProcess, dir: &Path, name: &str) -> (u64, PathBuf) {
    let id = identity(server);
    let path = dir.join(name);
    std::fs::write(&path, id.to_text()).expect("write identity file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("identity file mode");
    (id.uid, path)
}

/// A control client of `server` signing as `id`.
pub fn control(server: &ServerProcess, id: Identity) -> ControlClient {
    ControlClient::new(&server.addr.to_string())
        .expect("control client")
        .with_signer(id)
}

/// A member of an encrypted channel: its push connection, what it has seen (epoch, safety
/// code, messages) and its frame keys.
pub struct PushMember {
    /// Its uid.
    pub uid: u64,
    /// Its control client.
    pub control: ControlClient,
    /// Its push connection.
    pub chan: PushChannel,
    /// The newest epoch it is in.
    pub epoch: Option<u64>,
    /// That epoch's safety code.
    pub safety: Option<String>,
    /// Chat messages received: (sequence, sender, text).
    pub messages: Vec<(u64, u64, String)>,
    /// Its frame keys, kept up to date with its epochs.
    pub keys: FrameKeys,
}

impl std::fmt::Debug for PushMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushMember")
            .field("uid", &self.uid)
            .field("epoch", &self.epoch)
            .field("messages", &self.messages.len())
            .finish_non_exhaustive()
    }
}

impl PushMember {
    /// Signs up, opens the push connection, JOINs `chid`, sends the key package.
    pub fn join(server: &ServerProcess, chid: u64) -> PushMember {
        Self::join_with(server, chid, None)
    }

    /// As [`PushMember::join`], and binds a voice address with `peer`'s key when given.
    pub fn join_with(
        server: &ServerProcess,
        chid: u64,
        peer: Option<&dyn Fn(u64) -> crate::udp::UdpPeer>,
    ) -> PushMember {
        let id = identity(server);
        let uid = id.uid;
        let control = control(server, id);
        let mut chan = PushChannel::open(&control, chid).expect("push connection");
        match peer {
            Some(make) => {
                let p = make(uid);
                control
                    .join_kex(uid, uid, chid, p.client_kex())
                    .expect("JOIN");
                p.bind(&server.public_key());
            }
            None => {
                control.join_kex(uid, uid, chid, [7; 32]).expect("JOIN");
            }
        }
        chan.start().expect("key package");
        PushMember {
            uid,
            control,
            chan,
            epoch: None,
            safety: None,
            messages: Vec::new(),
            keys: FrameKeys::new(),
        }
    }

    fn absorb(&mut self, events: Vec<CryptoEvent>) {
        for e in events {
            match e {
                CryptoEvent::Epoch {
                    epoch,
                    safety,
                    update,
                    ..
                } => {
                    self.epoch = Some(epoch);
                    self.safety = safety.map(|s| s.to_string());
                    self.keys
                        .apply(&update, Instant::now())
                        .expect("frame keys");
                }
                CryptoEvent::Message { seq, sender, text } => {
                    self.messages.push((seq, sender, text))
                }
                _ => {}
            }
        }
    }

    /// Handles what arrives on the push connection within `d`.
    pub fn poll(&mut self, d: Duration) {
        let ev = self.chan.poll(d).expect("push connection alive");
        self.absorb(ev);
    }
}

/// Polls every member until `done` holds for all of them; panics after [`SETTLE_WAIT`].
pub fn settle(members: &mut [&mut PushMember], done: impl Fn(&PushMember) -> bool) {
    let deadline = Instant::now() + SETTLE_WAIT;
    while !members.iter().all(|m| done(m)) {
        assert!(Instant::now() < deadline, "members did not settle");
        for m in members.iter_mut() {
            if !done(m) {
                m.poll(Duration::from_millis(20));
            } else {
                // (Keeps its connection drained without waiting on it.)
                m.poll(Duration::ZERO);
            }
        }
    }
}

/// Waits until every member is in `epoch`, and checks they all show one safety code.
pub fn same_epoch(members: &mut [&mut PushMember], epoch: u64) {
    settle(members, |m| m.epoch == Some(epoch));
    let codes: Vec<_> = members.iter().map(|m| m.safety.clone()).collect();
    assert!(codes[0].is_some());
    assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");
}
