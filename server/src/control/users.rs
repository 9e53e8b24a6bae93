//! REGISTER, REGISTER_KEY, SET_KEY, UNREGISTER, SET/GET_USER_NAME and USER_INFO.

use ed25519_dalek::VerifyingKey;
use kv_proto::{ControlReply, ErrorCode, Perms};

use super::{allow, db, CmdResult, Control, Origin};
use crate::ids::{random_id, MAX_ID_ATTEMPTS};
use crate::store::{Store, UserRecord};

/// A public key a user may have: a valid Ed25519 point that is not of small order (a weak
/// key would let anyone forge "signatures").
fn usable_key(key: &[u8; 32]) -> Result<(), ErrorCode> {
    match VerifyingKey::from_bytes(key) {
        Ok(k) if !k.is_weak() => Ok(()),
        _ => Err(ErrorCode::Inval),
    }
}

impl<S: Store> Control<S> {
    /// REGISTER / REGISTER_KEY: `auid` 0 is a sign-up with the default perms (`perm`
    /// ignored), limited per IP; otherwise `auid` needs perm_register_user and may only
    /// grant bits it holds itself. REGISTER_KEY gives the new user `key`.
    pub(super) fn register(
        &self,
        auid: u64,
        perm: u64,
        key: Option<[u8; 32]>,
        origin: &Origin,
    ) -> CmdResult {
        if let Some(k) = &key {
            usable_key(k)?;
        }
        let perms = if auid == 0 {
            if !self.register_rate.allow(origin.ip, origin.now) {
                tracing::debug!(ip = %origin.ip, "sign-up rate exceeded");
                return Err(ErrorCode::Serv);
            }
            self.policy().default_perms.bits()
        } else {
            let admin = self.existing_user(auid)?;
            let held = Perms(admin.perms);
            allow(held.contains(Perms::REGISTER_USER) && held.contains(Perms(perm)))?;
            perm
        };
        let id = self.create_user(perms, key)?;
        // Uids are public ids (they grant nothing), but registrations are routine: debug.
        tracing::debug!(
            uid = id,
            perms,
            by = auid,
            keyed = key.is_some(),
            "user registered"
        );
        Ok(ControlReply::Value(id))
    }

    /// Adds a user with a fresh random id.
    pub(crate) fn create_user(&self, perms: u64, key: Option<[u8; 32]>) -> Result<u64, ErrorCode> {
        let mut store = self.store();
        for _ in 0..MAX_ID_ATTEMPTS {
            let user = UserRecord {
                id: random_id(),
                perms,
                name: String::new(),
                key,
            };
            if db(store.insert_user(&user))? {
                return Ok(user.id);
            }
        }
        Err(ErrorCode::Serv)
    }

    /// SET_KEY: oneself (a key-less user's first key, or a keyed user rotating it), or
    /// anyone with perm_admin (recovering a user who lost the key).
    pub(super) fn set_key(&self, auid: u64, uid: u64, key: [u8; 32]) -> CmdResult {
        usable_key(&key)?;
        let admin = self.existing_user(auid)?;
        self.existing_user(uid)?;
        allow(auid == uid || Perms(admin.perms).contains(Perms::ADMIN))?;
        if !db(self.store().set_user_key(uid, &key))? {
            return Err(ErrorCode::Param);
        }
        tracing::debug!(uid, by = auid, "user key set");
        Ok(ControlReply::Value(1))
    }

    /// UNREGISTER: free for oneself, else needs perm_delete_user. The user also leaves
    /// every channel (and is told so with LEAVE), and the channels it owns are deleted, so
    /// its quota cannot outlive it.
    pub(super) fn unregister(&self, auid: u64, uid: u64) -> CmdResult {
        let admin = self.existing_user(auid)?;
        self.existing_user(uid)?;
        allow(auid == uid || Perms(admin.perms).contains(Perms::DELETE_USER))?;
        let owned = {
            let mut store = self.store();
            if !db(store.delete_user(uid))? {
                return Err(ErrorCode::Param);
            }
            let owned = db(store.channels_owned(uid))?;
            for &chid in &owned {
                db(store.delete_channel(chid))?;
            }
            owned
        };
        {
            let mut registry = self.registry_write();
            for &chid in &owned {
                registry.close(chid);
            }
        }
        for &chid in &owned {
            self.push.delete_channel(chid);
        }
        // Queued under the registry lock, awaited after it is released.
        let pending = self.registry().remove_everywhere(uid);
        self.push.remove_user(uid);
        for p in pending {
            let _ = p.wait();
        }
        tracing::debug!(uid, by = auid, channels = owned.len(), "user unregistered");
        Ok(ControlReply::Value(uid))
    }

    /// SET_USER_NAME: oneself, or anyone with perm_admin.
    pub(super) fn set_user_name(&self, uid: u64, target: u64, name: &str) -> CmdResult {
        if !kv_proto::names::is_allowed_name(name) {
            return Err(ErrorCode::Inval);
        }
        let who = self.existing_user(uid)?;
        self.existing_user(target)?;
        allow(uid == target || Perms(who.perms).contains(Perms::ADMIN))?;
        if !db(self.store().set_user_name(target, name))? {
            return Err(ErrorCode::Param);
        }
        Ok(ControlReply::Value(1))
    }
}
