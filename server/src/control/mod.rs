//! The control plane: one request per TCP connection ([`connection`]) applied to the
//! server's state ([`Control`]), with the seed's permission rules and signed requests.
//!
//! Commands are grouped by what they act on: [`users`] (REGISTER, REGISTER_KEY, SET_KEY,
//! UNREGISTER, names, USER_INFO), [`channels`] (CREATE, DELETE, JOIN, JOIN_KEX, LEAVE, GET_PORT,
//! GET_CHANNELS, names, CHANNEL_INFO), [`info`] (SERVER_INFO) and [`moderation`] (BAN,
//! UNBAN, SET_PERMS, LIST_BANS, LIST_USERS, and the ban check of JOIN and REGISTER). [`auth`] decides who a
//! request acts as (a SIGNED envelope's verified signer, or an unsigned request for a
//! key-less user with `--allow-unsigned`), with [`replay`] remembering accepted nonces.
//! Checks run in one order everywhere: the request must decode (INVAL/NOIMPL), a SIGNED
//! envelope must verify (ACCESS), every id named must exist (PARAM), then the requester
//! must be allowed (ACCESS).
//!
//! Locking: requests run on blocking threads, concurrently. The store is behind one mutex
//! held only for database calls (never while waiting on anything else); the registry of
//! open channels is behind a read-write lock whose *read* side JOIN, LEAVE, CHANNEL_INFO
//! and UNREGISTER hold only to queue a command for a relay worker: they wait for the
//! worker's answer ([`crate::channel::Pending`]) after releasing it, so a busy worker
//! holds up nothing but requests for its own channels (issue 9 §2: CHANNEL_INFO used to
//! wait on a worker while holding the only lock). No lock is ever held while waiting on a
//! worker. The write side (CREATE, DELETE, UNREGISTER's channel closing) is never
//! taken while the store lock is held, and is taken politely ([`write_politely`]) so a
//! waiting writer does not hold back readers. Multi-step commands re-check what they depend on
//! when they take a lock again, so a concurrent DELETE or UNREGISTER never leaves a
//! half-done state.

pub mod auth;
pub mod channels;
pub mod connection;
pub mod info;
pub mod info_cache;
pub mod moderation;
pub mod replay;
pub mod users;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};
use std::time::{Duration, Instant};

use kv_proto::{ControlReply, ControlRequest, ErrorCode, Perms};

use crate::channel::Registry;
use crate::fds::FdBudget;
use crate::metrics::Metrics;
use crate::register_rate::RegisterRate;
use crate::store::{ChannelRecord, Store, StoreResult, UserRecord};

/// What a command handler returns: the reply, or the error code to send.
pub type CmdResult = Result<ControlReply, ErrorCode>;

/// Rules the control plane enforces, from the flags.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Permissions given to self-registered users.
    pub default_perms: Perms,
    /// Serve the seed's unsigned commands for key-less users (`--allow-unsigned`).
    pub allow_unsigned: bool,
    /// Channels one user may own (`--max-channels-per-user`); perm_admin is exempt.
    pub max_channels_per_user: usize,
    /// Sign-ups per minute per IP (IPv6: per /64); 0 = unlimited.
    pub register_rate: u32,
}

impl Policy {
    /// The flags' defaults with `allow_unsigned` as given (tests of the permission rules
    /// use key-less users).
    pub fn new(default_perms: Perms, allow_unsigned: bool) -> Self {
        Self {
            default_perms,
            allow_unsigned,
            max_channels_per_user: 8,
            register_rate: 0,
        }
    }
}

/// Where and when a request comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The client's IP.
    pub ip: IpAddr,
    /// Wall clock, unix milliseconds (signed requests carry one).
    pub unix_ms: u64,
    /// Monotonic clock (rate limits, caches).
    pub now: Instant,
}

impl Origin {
    /// A request from `ip`, now.
    pub fn now(ip: IpAddr) -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            ip,
            unix_ms,
            now: Instant::now(),
        }
    }
}

/// The server's state as the control plane sees it: the store and the open channels.
#[derive(Debug)]
pub struct Control<S: Store> {
    /// Users and channels.
    store: Mutex<S>,
    /// Open channels and the relay workers that serve them.
    registry: RwLock<Registry>,
    /// Ed25519 public key, for SERVER_INFO and to check that signed requests name us.
    public_key: [u8; 32],
    /// The rules. Behind a lock because SIGHUP replaces them; read as a copy, never held.
    policy: RwLock<Policy>,
    /// Nonces of accepted signed requests.
    replay: Mutex<replay::ReplayCache>,
    /// Sign-ups per IP.
    register_rate: RegisterRate,
    /// Recent CHANNEL_INFO answers.
    info_cache: info_cache::InfoCache,
    /// Bumped after every change, so cached answers from before it are not served.
    generation: AtomicU64,
    /// File descriptors channels may still use.
    fds: FdBudget,
    /// What `/metrics` exports (requests are counted by `connection`).
    metrics: Arc<Metrics>,
    /// Bans, as the JOIN and REGISTER checks read them (the store has them too).
    bans: RwLock<moderation::BanList>,
    /// Push connections and the delivery service of encrypted channels.
    push: Arc<crate::push::Hub>,
}

impl<S: Store> Control<S> {
    /// Wraps the store and registry.
    pub fn new(store: S, mut registry: Registry, public_key: [u8; 32], policy: Policy) -> Self {
        let metrics = Arc::new(Metrics::new(registry.metrics()));
        let push = Arc::new(crate::push::Hub::default());
        let hub = push.clone();
        // A member that timed out leaves its encrypted channel's group (a new epoch).
        registry.set_departures(Box::new(move |chid, uids| {
            for &uid in uids {
                hub.leave(chid, uid);
            }
        }));
        Self {
            metrics,
            bans: RwLock::new(moderation::BanList::default()),
            store: Mutex::new(store),
            registry: RwLock::new(registry),
            public_key,
            register_rate: RegisterRate::new(policy.register_rate),
            policy: RwLock::new(policy),
            replay: Mutex::new(replay::ReplayCache::new(replay::CAPACITY)),
            info_cache: info_cache::InfoCache::default(),
            generation: AtomicU64::new(0),
            fds: FdBudget::unlimited(),
            push,
        }
    }

    /// Push connections and the delivery service.
    pub fn push(&self) -> &Arc<crate::push::Hub> {
        &self.push
    }

    /// Applies a PUSH request (signed by its user) and registers the connection with the
    /// hub: the reply to send, and on success what the push session needs.
    pub fn open_push(
        &self,
        req: ControlRequest,
        origin: &Origin,
    ) -> (ControlReply, Option<crate::push::Opened>) {
        let uid = match &req {
            ControlRequest::Signed(s) => s.inner.actor(),
            _ => None,
        };
        let reply = self.apply(req, origin);
        let (ControlReply::Value(1), Some(uid)) = (&reply, uid) else {
            return (reply, None);
        };
        let key = match self.existing_user(uid) {
            Ok(u) => u.key,
            Err(code) => return (ControlReply::Error(code), None),
        };
        match key.and_then(|k| self.push.open(uid, k)) {
            Some(opened) => (reply, Some(opened)),
            None => (ControlReply::Error(ErrorCode::Serv), None),
        }
    }

    /// The rules in force now.
    pub fn policy(&self) -> Policy {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the rules (configuration reload); requests from now on follow them.
    pub fn set_policy(&self, policy: Policy) {
        self.register_rate.set_per_minute(policy.register_rate);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// Replaces the relay limits of every channel, open ones included, and the channel cap
    /// (configuration reload). Members stay; a lower `max_members` only refuses new JOINs.
    pub fn set_relay_limits(&self, relay: crate::channel::RelayConfig, max_channels: usize) {
        let senders = self
            .registry_write()
            .set_limits(relay.clone(), max_channels);
        // Outside the lock: a worker's full queue may make this wait.
        for s in senders {
            if s.configure(relay.clone()).is_err() {
                tracing::debug!("a relay worker is gone; not reconfigured");
            }
        }
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Same, with a descriptor budget for channel sockets.
    pub fn with_fd_budget(mut self, fds: FdBudget) -> Self {
        self.fds = fds;
        self
    }

    /// Applies one request from `origin` and returns the reply to send. Only returns after
    /// every change the request made is durable.
    pub fn apply(&self, req: ControlRequest, origin: &Origin) -> ControlReply {
        let (req, signer) = match req {
            ControlRequest::Signed(s) => match self.authenticate(&s, origin) {
                Ok(signer) => (s.inner, Some(signer)),
                Err(code) => return ControlReply::Error(code),
            },
            other => (other, None),
        };
        if let Err(code) = self.authorize(&req, signer) {
            return ControlReply::Error(code);
        }
        if let Err(code) = self.check_bans(&req, origin) {
            return ControlReply::Error(code);
        }
        let change = req.is_change();
        let reply = self
            .dispatch(req, origin)
            .unwrap_or_else(ControlReply::Error);
        if change {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        reply
    }

    fn dispatch(&self, req: ControlRequest, origin: &Origin) -> CmdResult {
        use ControlRequest as R;
        match req {
            R::Create { uid } => self.create(uid, false),
            R::CreateEncrypted { uid } => {
                if self.policy().allow_unsigned {
                    // Every channel of an --allow-unsigned server stays plain.
                    return Err(ErrorCode::NoImpl);
                }
                self.create(uid, true)
            }
            R::ChannelMode { chid } => {
                self.existing_channel(chid)?;
                let encrypted = db(self.store().channel_encrypted(chid))?;
                Ok(ControlReply::Value(if encrypted {
                    kv_proto::push::MODE_ENCRYPTED
                } else {
                    kv_proto::push::MODE_PLAIN
                }))
            }
            R::PushOpen { uid } => self.existing_user(uid).map(|_| ControlReply::Value(1)),
            R::Delete { uid, chid } => self.delete(uid, chid),
            R::Join { uid, juid, chid } => self.join(uid, juid, chid, None),
            R::JoinKex {
                uid,
                juid,
                chid,
                client_kex,
            } => self.join(uid, juid, chid, Some(client_kex)),
            R::Leave { uid, luid, chid } => self.leave(uid, luid, chid),
            R::Register { auid, perm } => self.register(auid, perm, None, origin),
            R::RegisterKey {
                auid,
                perm,
                public_key,
            } => self.register(auid, perm, Some(public_key), origin),
            R::SetKey {
                auid,
                uid,
                public_key,
            } => self.set_key(auid, uid, public_key),
            R::Unregister { auid, uid } => self.unregister(auid, uid),
            R::GetPort { chid } => self.get_port(chid),
            R::GetChannels => self.get_channels(),
            R::ServerInfo => Ok(self.server_info()),
            R::SetUserName { uid, target, name } => self.set_user_name(uid, target, &name),
            // GET_USER_NAME, GET_CHANNEL_NAME and USER_INFO: anyone may ask.
            R::GetUserName { uid } => self.existing_user(uid).map(|u| ControlReply::Name(u.name)),
            R::SetChannelName { uid, chid, name } => self.set_channel_name(uid, chid, &name),
            R::GetChannelName { chid } => self
                .existing_channel(chid)
                .map(|c| ControlReply::Name(c.name)),
            R::ChannelInfo { chid } => self.channel_info(chid, origin),
            R::ListChannels { after } => self.list_channels(after),
            R::UserInfo { uid } => self.existing_user(uid).map(|u| ControlReply::UserInfo {
                perms: u.perms,
                name: u.name,
            }),
            R::Ban {
                auid,
                target,
                secs,
                reason,
            } => self.ban(auid, target, secs, &reason, origin),
            R::Unban { auid, id } => self.unban(auid, id),
            R::SetPerms { auid, uid, perms } => self.set_perms(auid, uid, perms),
            R::ListBans { auid, after } => self.list_bans(auid, after, origin),
            R::ListUsers { auid, after } => self.list_users(auid, after),
            // A SIGNED envelope is opened in `apply`; one inside another never decodes.
            R::Signed(_) => Err(ErrorCode::Inval),
        }
    }

    /// The open channels, for reading (port lookups, asking a worker).
    fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The open channels, for opening and closing. Never taken while holding the store.
    fn registry_write(&self) -> RwLockWriteGuard<'_, Registry> {
        write_politely(&self.registry)
    }

    /// The bans, for reading.
    fn bans(&self) -> RwLockReadGuard<'_, moderation::BanList> {
        self.bans.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The bans, for a change (never held while taking the store or the registry).
    fn bans_mut(&self) -> RwLockWriteGuard<'_, moderation::BanList> {
        self.bans.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The store. A poisoned lock means a handler panicked; the state is still consistent
    /// (every change is one store call), so keep serving.
    fn store(&self) -> MutexGuard<'_, S> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open channels (the server stops them at shutdown).
    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry_write()
    }

    /// The store, for start-up (admin bootstrap) and shutdown (close).
    pub fn store_mut(&self) -> MutexGuard<'_, S> {
        self.store()
    }

    /// Gives the store back, so it can be closed cleanly.
    pub fn into_store(self) -> S {
        self.store.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// A user who must exist (PARAM otherwise).
    fn existing_user(&self, uid: u64) -> Result<UserRecord, ErrorCode> {
        db(self.store().user(uid))?.ok_or(ErrorCode::Param)
    }

    /// A channel that must exist (PARAM otherwise).
    fn existing_channel(&self, chid: u64) -> Result<ChannelRecord, ErrorCode> {
        db(self.store().channel(chid))?.ok_or(ErrorCode::Param)
    }

    /// The current change generation (see [`info_cache`]).
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// How long a writer polls before it queues for the lock like any other.
const POLITE_WRITE_FOR: Duration = Duration::from_millis(100);

/// Takes `lock` for writing without queueing as a writer at first. std's `RwLock` holds
/// back new readers while a writer waits, so a CREATE queued behind one JOIN that waits on
/// a busy relay worker would stall every JOIN, LEAVE and CHANNEL_INFO of every channel.
/// Polling instead lets readers through; write sections are short (no waiting inside).
/// After [`POLITE_WRITE_FOR`] it queues, so a stream of readers cannot starve it.
fn write_politely<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    while start.elapsed() < POLITE_WRITE_FOR {
        match lock.try_write() {
            Ok(g) => return g,
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
        }
    }
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Maps a store failure to SERV, logging it (the client only learns "server error").
fn db<T>(r: StoreResult<T>) -> Result<T, ErrorCode> {
    r.map_err(|e| {
        tracing::error!(error = %e, "database error");
        ErrorCode::Serv
    })
}

/// ACCESS unless `ok`.
fn allow(ok: bool) -> Result<(), ErrorCode> {
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::Access)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lock_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiting_writer_does_not_hold_back_readers() {
        let lock = Arc::new(RwLock::new(0u32));
        let reader = lock.read().unwrap();
        let l = lock.clone();
        let writer = std::thread::spawn(move || {
            *write_politely(&l) += 1;
        });
        std::thread::sleep(Duration::from_millis(20));
        // A second reader gets in at once although a writer is waiting.
        let l = lock.clone();
        let t = Instant::now();
        let second = std::thread::spawn(move || *l.read().unwrap());
        assert_eq!(second.join().unwrap(), 0);
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        drop(reader);
        writer.join().unwrap();
        assert_eq!(*lock.read().unwrap(), 1);
    }
}
