//! Blocking control client: one TCP connection per request, as the wire prescribes.
//!
//! Blocking std sockets with timeouts are enough here: a request is one short round trip,
//! `kv` is a script tool, and the TUI calls this from a worker thread. Each typed method
//! maps the reply shape it expects and turns zero statuses into [`ControlError::Server`].

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use kv_proto::control::{features, SEED_FIELDS_LEN};
use kv_proto::keyfile::Identity;
use kv_proto::signed::SignedRequest;
use kv_proto::{
    ChannelInfo, ChannelPage, CommandType, ControlReply, ControlRequest, DecodeError, ErrorCode,
    Perms, ServerInfo,
};

use super::error::{ControlError, Subject};
use super::trust::KnownServers;

/// Default time allowed for connecting and for each read or write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest reply the client accepts: a full GET_CHANNELS list plus its framing. Bounds
/// what a misbehaving server can make us buffer.
const MAX_REPLY_LEN: usize = 16 + 8 * kv_proto::control::MAX_LISTED_CHANNELS as usize;

/// Talks to one server's control port.
///
/// With [`ControlClient::with_signer`], every request that acts as the signer's uid goes
/// out in a SIGNED envelope (PROTOCOL.md, "Signed requests"); with
/// [`ControlClient::with_trust`], SERVER_INFO is checked against the key pinned for the
/// server on first use. Clones share the server key learnt, so it is fetched once.
#[derive(Debug, Clone)]
pub struct ControlClient {
    /// `host:port` as the user wrote it, for messages.
    addr: String,
    /// Resolved addresses, tried in order.
    resolved: Vec<SocketAddr>,
    /// Connect and per-read/write timeout.
    timeout: Duration,
    /// Who signs requests acting as it.
    signer: Option<Arc<Identity>>,
    /// Pinned server keys.
    trust: Option<KnownServers>,
    /// The server's key once SERVER_INFO gave (and the pin accepted) it; `Some(None)` for
    /// a server without signed requests.
    server_key: Arc<Mutex<Option<Option<[u8; 32]>>>>,
}

impl ControlClient {
    /// Resolves `addr` (`host:port`, or `host` for the default port 8085). Resolution
    /// failure is reported as [`ControlError::Unreachable`].
    pub fn new(addr: &str) -> Result<Self, ControlError> {
        let with_port = if addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            || addr.parse::<SocketAddr>().is_ok()
        {
            addr.to_string()
        } else {
            format!("{addr}:{}", kv_proto::DEFAULT_CONTROL_PORT)
        };
        let resolved: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|source| ControlError::Unreachable {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        if resolved.is_empty() {
            return Err(ControlError::Unreachable {
                addr: addr.to_string(),
                source: std::io::Error::new(ErrorKind::NotFound, "name resolved to no address"),
            });
        }
        Ok(Self {
            addr: addr.to_string(),
            resolved,
            timeout: DEFAULT_TIMEOUT,
            signer: None,
            trust: None,
            server_key: Arc::new(Mutex::new(None)),
        })
    }

    /// Same client, signing every request that acts as `identity.uid` with its key.
    pub fn with_signer(mut self, identity: Identity) -> Self {
        self.signer = Some(Arc::new(identity));
        self
    }

    /// Same client, checking the server's key against (and pinning it in) `trust`.
    pub fn with_trust(mut self, trust: KnownServers) -> Self {
        self.trust = Some(trust);
        *self.key_cache() = None;
        self
    }

    /// The uid requests are signed for, if any.
    pub fn signer_uid(&self) -> Option<u64> {
        self.signer.as_ref().map(|s| s.uid)
    }

    fn key_cache(&self) -> std::sync::MutexGuard<'_, Option<Option<[u8; 32]>>> {
        self.server_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Same client with another timeout (tests use short ones).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The address as given, for display.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The host the control connection uses; the voice socket goes to the same host.
    pub fn host(&self) -> IpAddr {
        self.resolved[0].ip()
    }

    /// Sends one request and decodes its reply. A request acting as the signer is signed
    /// (when the server takes signed requests). Seed commands are padded to the
    /// prototype's 32 bytes of fields so the author's own server reads them too.
    pub fn request(&self, req: &ControlRequest) -> Result<ControlReply, ControlError> {
        if let Some(signer) = &self.signer {
            if req.actor() == Some(signer.uid) && !matches!(req, ControlRequest::Signed(_)) {
                if let Some(signed) = self.sign(req.clone(), signer.uid, &signer.key)? {
                    return self.send(&signed);
                }
            }
        }
        self.send(req)
    }

    /// `req` in a SIGNED envelope by `uid` with `key`; `None` when the server does not
    /// take signed requests (a seed server), so the request goes unsigned.
    fn sign(
        &self,
        req: ControlRequest,
        uid: u64,
        key: &SigningKey,
    ) -> Result<Option<ControlRequest>, ControlError> {
        let Some(server_key) = self.signing_key()? else {
            return Ok(None);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let s = SignedRequest::sign(req, uid, key, server_key, now, rand::random())?;
        Ok(Some(ControlRequest::Signed(Box::new(s))))
    }

    /// The server key signed requests name: learnt (and pinned) by SERVER_INFO once.
    fn signing_key(&self) -> Result<Option<[u8; 32]>, ControlError> {
        if let Some(k) = *self.key_cache() {
            return Ok(k);
        }
        match self.server_info() {
            Ok(info) if info.features & features::SIGNED_REQUESTS != 0 => Ok(Some(info.public_key)),
            Ok(_) => Ok(None),
            Err(e) if e.code() == Some(ErrorCode::NoImpl) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `req` as it is and decodes the reply.
    fn send(&self, req: &ControlRequest) -> Result<ControlReply, ControlError> {
        let cmd = req.reply_type();
        let mut out = Vec::with_capacity(kv_proto::control::MAX_REQUEST_LEN);
        req.encode(&mut out)?;
        if req.command_type().is_seed() {
            out.resize(4 + SEED_FIELDS_LEN, 0);
        }
        let mut stream = self.connect()?;
        stream.write_all(&out).map_err(|e| self.io_error(e))?;
        let reply = self.read_reply(&mut stream, cmd)?;
        tracing::debug!(addr = %self.addr, ?cmd, ?reply, "control reply");
        Ok(reply)
    }

    fn connect(&self) -> Result<TcpStream, ControlError> {
        let mut last = None;
        for a in &self.resolved {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    // Timeouts bound every later read and write; failures to set them are
                    // not worth failing the request for.
                    let _ = s.set_read_timeout(Some(self.timeout));
                    let _ = s.set_write_timeout(Some(self.timeout));
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        let source = last.unwrap_or_else(|| std::io::Error::other("no address"));
        if matches!(source.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
            return Err(self.timeout_error());
        }
        Err(ControlError::Unreachable {
            addr: self.addr.clone(),
            source,
        })
    }

    fn read_reply(
        &self,
        stream: &mut TcpStream,
        cmd: CommandType,
    ) -> Result<ControlReply, ControlError> {
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 4096];
        loop {
            match ControlReply::decode(cmd, &buf) {
                Ok((reply, _)) => return Ok(reply),
                Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            let n = stream.read(&mut chunk).map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.protocol(if buf.is_empty() {
                    "server closed the connection without replying".into()
                } else {
                    format!("reply cut short after {} bytes", buf.len())
                }));
            }
            if buf.len() + n > MAX_REPLY_LEN {
                return Err(self.protocol("reply too long".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn io_error(&self, e: std::io::Error) -> ControlError {
        match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => self.timeout_error(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
                self.protocol(format!("connection broke: {e}"))
            }
            _ => ControlError::Unreachable {
                addr: self.addr.clone(),
                source: e,
            },
        }
    }

    fn timeout_error(&self) -> ControlError {
        ControlError::Timeout {
            addr: self.addr.clone(),
            secs: self.timeout.as_secs_f64(),
        }
    }

    fn protocol(&self, detail: String) -> ControlError {
        ControlError::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }

    /// Runs a request that answers with a plain value; `subject` names what a PARAM error
    /// refers to.
    fn value(&self, req: ControlRequest, subject: Subject) -> Result<u64, ControlError> {
        let command = req.reply_type();
        match self.request(&req)? {
            ControlReply::Value(v) => Ok(v),
            ControlReply::Error(code) => Err(ControlError::Server {
                command,
                code,
                subject,
            }),
            other => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&self, reply: ControlReply) -> ControlError {
        self.protocol(format!("unexpected reply {reply:?}"))
    }

    fn server_error(command: CommandType, code: ErrorCode, subject: Subject) -> ControlError {
        ControlError::Server {
            command,
            code,
            subject,
        }
    }

    /// For commands naming both a user and a channel, a PARAM error is ambiguous; one
    /// GET_PORT tells whether the channel exists, so the message can name the culprit.
    fn refine_param(&self, err: ControlError, chid: u64, uid: u64) -> ControlError {
        match err {
            ControlError::Server {
                command,
                code: ErrorCode::Param,
                ..
            } => {
                let subject = match self.get_port(chid) {
                    Ok(_) => Subject::User(uid),
                    Err(e) if e.code() == Some(ErrorCode::Param) => Subject::Channel(chid),
                    Err(_) => Subject::Unknown,
                };
                Self::server_error(command, ErrorCode::Param, subject)
            }
            other => other,
        }
    }

    /// The identity requests are signed with, if any.
    pub fn signer(&self) -> Option<&Identity> {
        self.signer.as_deref()
    }

    /// CREATE_ENCRYPTED: a new end-to-end encrypted channel owned by `uid`.
    pub fn create_encrypted(&self, uid: u64) -> Result<u64, ControlError> {
        self.value(ControlRequest::CreateEncrypted { uid }, Subject::User(uid))
    }

    /// CHANNEL_MODE: is `chid` end-to-end encrypted? A server that does not know the
    /// command (NOIMPL) has only plain channels.
    pub fn channel_encrypted(&self, chid: u64) -> Result<bool, ControlError> {
        match self.value(ControlRequest::ChannelMode { chid }, Subject::Channel(chid)) {
            Ok(v) => Ok(v == kv_proto::push::MODE_ENCRYPTED),
            Err(e) if e.code() == Some(ErrorCode::NoImpl) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// PUSH: opens the signer's push connection and returns it after the server's status 1
    /// (PROTOCOL.md, "The push connection"); reads then block without a timeout (the
    /// caller's reader thread), writes keep this client's timeout.
    pub fn open_push(&self) -> Result<TcpStream, ControlError> {
        let Some(signer) = &self.signer else {
            return Err(self.protocol("a push connection needs an identity".into()));
        };
        let req = ControlRequest::PushOpen { uid: signer.uid };
        let Some(signed) = self.sign(req, signer.uid, &signer.key)? else {
            return Err(self.protocol("the server takes no signed requests".into()));
        };
        let mut out = Vec::with_capacity(kv_proto::control::MAX_REQUEST_LEN);
        signed.encode(&mut out)?;
        let mut stream = self.connect()?;
        stream.write_all(&out).map_err(|e| self.io_error(e))?;
        // Read the 8-byte status (and the error code after a zero) byte by byte-exact, so
        // no push frame that follows is consumed here.
        let mut status = [0u8; 8];
        stream
            .read_exact(&mut status)
            .map_err(|e| self.io_error(e))?;
        if u64::from_be_bytes(status) != 1 {
            let mut code = [0u8; 4];
            stream.read_exact(&mut code).map_err(|e| self.io_error(e))?;
            let code = ErrorCode::from_u32(u32::from_be_bytes(code)).unwrap_or(ErrorCode::Serv);
            return Err(Self::server_error(
                CommandType::Push,
                code,
                Subject::User(signer.uid),
            ));
        }
        let _ = stream.set_read_timeout(None);
        Ok(stream)
    }

    /// CREATE: a new channel owned by `uid`; returns its id.
    pub fn create(&self, uid: u64) -> Result<u64, ControlError> {
        self.value(ControlRequest::Create { uid }, Subject::User(uid))
    }

    /// DELETE: removes channel `chid`; needs ownership or perm_rm_channel.
    pub fn delete(&self, uid: u64, chid: u64) -> Result<(), ControlError> {
        self.value(ControlRequest::Delete { uid, chid }, Subject::Unknown)
            .map_err(|e| self.refine_param(e, chid, uid))
            .map(drop)
    }

    /// JOIN: `uid` adds `juid` to `chid`; returns the channel's UDP port.
    pub fn join(&self, uid: u64, juid: u64, chid: u64) -> Result<u16, ControlError> {
        let v = self
            .value(ControlRequest::Join { uid, juid, chid }, Subject::Unknown)
            .map_err(|e| self.refine_param(e, chid, juid))?;
        self.port(v)
    }

    /// JOIN_KEX (extension): JOIN, naming the X25519 key (`client_kex`) the joining
    /// client will bind its voice address with; only a BIND with that key (and proof that
    /// the client holds its secret) can then take the member's place. Returns the port.
    pub fn join_kex(
        &self,
        uid: u64,
        juid: u64,
        chid: u64,
        client_kex: [u8; 32],
    ) -> Result<u16, ControlError> {
        let req = ControlRequest::JoinKex {
            uid,
            juid,
            chid,
            client_kex,
        };
        let v = self
            .value(req, Subject::Unknown)
            .map_err(|e| self.refine_param(e, chid, juid))?;
        self.port(v)
    }

    /// LEAVE: `uid` removes `luid` from `chid`.
    pub fn leave(&self, uid: u64, luid: u64, chid: u64) -> Result<(), ControlError> {
        self.value(ControlRequest::Leave { uid, luid, chid }, Subject::Unknown)
            .map_err(|e| self.refine_param(e, chid, luid))
            .map(drop)
    }

    /// REGISTER: a plain sign-up when `auid` is 0, else an admin creates a user with
    /// `perm`. Returns the new uid.
    pub fn register(&self, auid: u64, perm: Perms) -> Result<u64, ControlError> {
        let uid = self.value(
            ControlRequest::Register {
                auid,
                perm: perm.bits(),
            },
            Subject::User(auid),
        )?;
        if !kv_proto::is_valid_uid(uid) {
            return Err(self.protocol(format!("server issued invalid uid {uid:#x}")));
        }
        Ok(uid)
    }

    /// UNREGISTER: `auid` removes `uid`.
    pub fn unregister(&self, auid: u64, uid: u64) -> Result<(), ControlError> {
        self.value(ControlRequest::Unregister { auid, uid }, Subject::User(uid))
            .map(drop)
    }

    /// GET_PORT: the UDP port of `chid`.
    pub fn get_port(&self, chid: u64) -> Result<u16, ControlError> {
        let v = self.value(ControlRequest::GetPort { chid }, Subject::Channel(chid))?;
        self.port(v)
    }

    fn port(&self, v: u64) -> Result<u16, ControlError> {
        u16::try_from(v).map_err(|_| self.protocol(format!("port {v} out of range")))
    }

    /// GET_CHANNELS: every channel id.
    pub fn channels(&self) -> Result<Vec<u64>, ControlError> {
        match self.request(&ControlRequest::GetChannels)? {
            ControlReply::Channels(ids) => Ok(ids),
            other => Err(self.unexpected(other)),
        }
    }

    /// SERVER_INFO (extension): version, features and the key that signs system packets.
    /// With [`ControlClient::with_trust`], the key is pinned on first use and checked
    /// after: a changed key, or NOIMPL or no signed packets from a pinned server, is an
    /// error ([`ControlError::KeyChanged`], [`ControlError::Downgrade`]), so the key this
    /// returns is the pinned one.
    pub fn server_info(&self) -> Result<ServerInfo, ControlError> {
        let result = match self.send(&ControlRequest::ServerInfo)? {
            ControlReply::ServerInfo(info) => Ok(info),
            ControlReply::Error(code) => Err(Self::server_error(
                CommandType::ServerInfo,
                code,
                Subject::Unknown,
            )),
            other => Err(self.unexpected(other)),
        };
        let offered = match &result {
            Ok(info) if info.features & features::SIGNED_SYSTEM_PACKETS != 0 => {
                Some(info.public_key)
            }
            Ok(_) => None,
            Err(e) if e.code() == Some(ErrorCode::NoImpl) => None,
            // Network trouble and the like: nothing learnt.
            Err(_) => return result,
        };
        if let Some(trust) = &self.trust {
            trust.check(&self.addr, offered)?;
        }
        let signing = match &result {
            Ok(info) if info.features & features::SIGNED_REQUESTS != 0 => Some(info.public_key),
            _ => None,
        };
        *self.key_cache() = Some(signing);
        result
    }

    /// REGISTER_KEY (extension): signs up a new user whose key is `key`, proving it holds
    /// the key by signing the request with it. Returns the new uid.
    pub fn register_key(&self, key: &SigningKey) -> Result<u64, ControlError> {
        let req = ControlRequest::RegisterKey {
            auid: 0,
            perm: 0,
            public_key: key.verifying_key().to_bytes(),
        };
        let Some(signed) = self.sign(req, 0, key)? else {
            return Err(Self::server_error(
                CommandType::RegisterKey,
                ErrorCode::NoImpl,
                Subject::Unknown,
            ));
        };
        let uid = self.value(signed, Subject::Unknown)?;
        if !kv_proto::is_valid_uid(uid) {
            return Err(self.protocol(format!("server issued invalid uid {uid:#x}")));
        }
        Ok(uid)
    }

    /// SET_KEY (extension): `auid` sets the key of `uid` (oneself, or as perm_admin).
    pub fn set_key(&self, auid: u64, uid: u64, public_key: [u8; 32]) -> Result<(), ControlError> {
        self.value(
            ControlRequest::SetKey {
                auid,
                uid,
                public_key,
            },
            Subject::User(uid),
        )
        .map(drop)
    }

    /// SET_USER_NAME (extension): `uid` sets the display name of `target`.
    pub fn set_user_name(&self, uid: u64, target: u64, name: &str) -> Result<(), ControlError> {
        check_name(name)?;
        let req = ControlRequest::SetUserName {
            uid,
            target,
            name: name.to_string(),
        };
        self.value(req, Subject::User(target)).map(drop)
    }

    /// GET_USER_NAME (extension): display name of `uid` ("" when never named).
    pub fn user_name(&self, uid: u64) -> Result<String, ControlError> {
        self.name(ControlRequest::GetUserName { uid }, Subject::User(uid))
    }

    /// SET_CHANNEL_NAME (extension): `uid` renames `chid`.
    pub fn set_channel_name(&self, uid: u64, chid: u64, name: &str) -> Result<(), ControlError> {
        check_name(name)?;
        let req = ControlRequest::SetChannelName {
            uid,
            chid,
            name: name.to_string(),
        };
        self.value(req, Subject::Unknown)
            .map_err(|e| self.refine_param(e, chid, uid))
            .map(drop)
    }

    /// GET_CHANNEL_NAME (extension): name of `chid` ("" when never named).
    pub fn channel_name(&self, chid: u64) -> Result<String, ControlError> {
        self.name(
            ControlRequest::GetChannelName { chid },
            Subject::Channel(chid),
        )
    }

    fn name(&self, req: ControlRequest, subject: Subject) -> Result<String, ControlError> {
        let command = req.reply_type();
        match self.request(&req)? {
            ControlReply::Name(n) => Ok(n),
            ControlReply::Error(code) => Err(Self::server_error(command, code, subject)),
            other => Err(self.unexpected(other)),
        }
    }

    /// CHANNEL_INFO (extension): name, owner, port and members of `chid`.
    pub fn channel_info(&self, chid: u64) -> Result<ChannelInfo, ControlError> {
        match self.request(&ControlRequest::ChannelInfo { chid })? {
            ControlReply::ChannelInfo(info) => Ok(info),
            ControlReply::Error(code) => Err(Self::server_error(
                CommandType::ChannelInfo,
                code,
                Subject::Channel(chid),
            )),
            other => Err(self.unexpected(other)),
        }
    }

    /// LIST_CHANNELS (extension): a page of channels created after cursor `after` (0: from
    /// the first) with names, owners and bound-member counts; go on with its `next`
    /// until that is 0. A server without it answers NOIMPL.
    pub fn list_channels(&self, after: u64) -> Result<ChannelPage, ControlError> {
        match self.request(&ControlRequest::ListChannels { after })? {
            ControlReply::ChannelPage(page) => Ok(page),
            ControlReply::Error(code) => Err(Self::server_error(
                CommandType::ListChannels,
                code,
                Subject::Unknown,
            )),
            other => Err(self.unexpected(other)),
        }
    }

    /// USER_INFO (extension): permissions and display name of `uid`.
    pub fn user_info(&self, uid: u64) -> Result<(Perms, String), ControlError> {
        match self.request(&ControlRequest::UserInfo { uid })? {
            ControlReply::UserInfo { perms, name } => Ok((Perms(perms), name)),
            ControlReply::Error(code) => Err(Self::server_error(
                CommandType::UserInfo,
                code,
                Subject::User(uid),
            )),
            other => Err(self.unexpected(other)),
        }
    }
    /// BAN (extension, perm_admin): bans `target` for `secs` seconds (0: until lifted);
    /// returns the ban's id.
    pub fn ban(
        &self,
        auid: u64,
        target: kv_proto::BanTarget,
        secs: u64,
        reason: &str,
    ) -> Result<u64, ControlError> {
        let subject = match target {
            kv_proto::BanTarget::User(uid) => Subject::User(uid),
            kv_proto::BanTarget::Net { .. } => Subject::Unknown,
        };
        let req = ControlRequest::Ban {
            auid,
            target,
            secs,
            reason: reason.to_owned(),
        };
        self.value(req, subject)
    }

    /// UNBAN (extension, perm_admin): lifts ban `id`.
    pub fn unban(&self, auid: u64, id: u64) -> Result<(), ControlError> {
        self.value(ControlRequest::Unban { auid, id }, Subject::Unknown)
            .map(drop)
    }

    /// SET_PERMS (extension, perm_admin): sets `uid`'s permission bits.
    pub fn set_perms(&self, auid: u64, uid: u64, perms: Perms) -> Result<(), ControlError> {
        let req = ControlRequest::SetPerms {
            auid,
            uid,
            perms: perms.bits(),
        };
        self.value(req, Subject::User(uid)).map(drop)
    }

    /// LIST_BANS (extension, perm_admin): a page of the bans in force after `after`.
    pub fn list_bans(&self, auid: u64, after: u64) -> Result<kv_proto::BanPage, ControlError> {
        match self.request(&ControlRequest::ListBans { auid, after })? {
            ControlReply::BanPage(page) => Ok(page),
            ControlReply::Error(code) => Err(Self::server_error(
                CommandType::ListBans,
                code,
                Subject::Unknown,
            )),
            other => Err(self.unexpected(other)),
        }
    }

    /// LIST_USERS (extension, perm_admin): a page of users after `after` (0: the first).
    pub fn list_users(&self, auid: u64, after: u64) -> Result<kv_proto::UserPage, ControlError> {
        match self.request(&ControlRequest::ListUsers { auid, after })? {
            ControlReply::UserPage(page) => Ok(page),
            ControlReply::Error(code) => Err(Self::server_error(
                CommandType::ListUsers,
                code,
                Subject::Unknown,
            )),
            other => Err(self.unexpected(other)),
        }
    }
}

/// Names the server would refuse (INVAL), refused here with a clearer message.
fn check_name(name: &str) -> Result<(), ControlError> {
    if kv_proto::names::is_allowed_name(name) {
        Ok(())
    } else {
        Err(ControlError::BadRequest(DecodeError::Invalid(
            "names may not contain control, bidi or invisible characters",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A one-connection-at-a-time fake server: answers each request with `answer(req)`.
    fn fake(
        n: usize,
        answer: impl Fn(ControlRequest) -> Vec<u8> + Send + 'static,
    ) -> (String, thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..n {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 256];
                let mut len = 0;
                let req = loop {
                    let k = s.read(&mut buf[len..]).unwrap();
                    len += k;
                    if let Ok((req, used)) = ControlRequest::decode(&buf[..len]) {
                        if !req.command_type().is_seed() || len >= 4 + SEED_FIELDS_LEN {
                            let _ = used;
                            break req;
                        }
                    }
                    assert!(k > 0, "client closed early");
                };
                seen.push(buf[..len].to_vec());
                s.write_all(&answer(req)).unwrap();
            }
            seen
        });
        (addr, h)
    }

    fn reply(r: ControlReply) -> Vec<u8> {
        let mut v = Vec::new();
        r.encode(&mut v);
        v
    }

    #[test]
    fn typed_commands_round_trip() {
        let (addr, h) = fake(4, |req| match req {
            ControlRequest::Register { auid: 0, .. } => reply(ControlReply::Value(77)),
            ControlRequest::Create { uid: 77 } => reply(ControlReply::Value(5)),
            ControlRequest::Join { chid: 5, .. } => reply(ControlReply::Value(40001)),
            ControlRequest::GetChannels => reply(ControlReply::Channels(vec![5, 6])),
            other => panic!("unexpected {other:?}"),
        });
        let c = ControlClient::new(&addr).unwrap();
        assert_eq!(c.register(0, Perms::NONE).unwrap(), 77);
        assert_eq!(c.create(77).unwrap(), 5);
        assert_eq!(c.join(77, 77, 5).unwrap(), 40001);
        assert_eq!(c.channels().unwrap(), vec![5, 6]);
        let seen = h.join().unwrap();
        // Seed commands go out padded to the prototype's 36 bytes.
        assert!(seen.iter().all(|r| r.len() == 36));
    }

    #[test]
    fn param_error_on_join_names_the_missing_channel() {
        let (addr, _h) = fake(2, |req| match req {
            ControlRequest::Join { .. } | ControlRequest::GetPort { .. } => {
                reply(ControlReply::Error(ErrorCode::Param))
            }
            other => panic!("unexpected {other:?}"),
        });
        let err = ControlClient::new(&addr)
            .unwrap()
            .join(1, 1, 9)
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown channel 9");
    }

    #[test]
    fn access_denied_reads_well() {
        let (addr, _h) = fake(1, |_| reply(ControlReply::Error(ErrorCode::Access)));
        let err = ControlClient::new(&addr).unwrap().create(3).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Access));
        assert_eq!(err.to_string(), "access denied");
    }

    #[test]
    fn unreachable_and_truncated() {
        // A port nobody listens on: bind, learn the port, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = ControlClient::new(&format!("127.0.0.1:{port}"))
            .unwrap()
            .channels()
            .unwrap_err();
        assert!(matches!(err, ControlError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("unreachable"));

        let (addr, _h) = fake(1, |_| vec![0, 0, 0]);
        let err = ControlClient::new(&addr).unwrap().create(1).unwrap_err();
        assert!(matches!(err, ControlError::Protocol { .. }), "{err}");
    }

    #[test]
    fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = thread::spawn(move || {
            let (_s, _) = l.accept().unwrap();
            thread::sleep(Duration::from_millis(600));
        });
        let err = ControlClient::new(&addr)
            .unwrap()
            .with_timeout(Duration::from_millis(200))
            .channels()
            .unwrap_err();
        assert!(matches!(err, ControlError::Timeout { .. }), "{err}");
        h.join().unwrap();
    }

    #[test]
    fn default_port_is_added() {
        let c = ControlClient::new("127.0.0.1").unwrap();
        assert_eq!(c.resolved[0].port(), kv_proto::DEFAULT_CONTROL_PORT);
    }
}
