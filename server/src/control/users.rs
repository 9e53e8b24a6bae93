//! REGISTER, UNREGISTER, SET/GET_USER_NAME and USER_INFO.

use kv_proto::{ControlReply, ErrorCode, Perms};

use super::{allow, db, CmdResult, Control};
use crate::ids::{random_id, MAX_ID_ATTEMPTS};
use crate::store::{Store, UserRecord};

impl<S: Store> Control<S> {
    /// REGISTER: `auid` 0 is a sign-up with the default perms (`perm` ignored); otherwise
    /// `auid` needs perm_register_user and may only grant bits it holds itself.
    pub(super) fn register(&mut self, auid: u64, perm: u64) -> CmdResult {
        let perms = if auid == 0 {
            self.default_perms.bits()
        } else {
            let admin = self.existing_user(auid)?;
            let held = Perms(admin.perms);
            allow(held.contains(Perms::REGISTER_USER) && held.contains(Perms(perm)))?;
            perm
        };
        let id = self.create_user(perms)?;
        tracing::info!(uid = id, perms, by = auid, "user registered");
        Ok(ControlReply::Value(id))
    }

    /// Adds a user with a fresh random id.
    pub(crate) fn create_user(&mut self, perms: u64) -> Result<u64, ErrorCode> {
        for _ in 0..MAX_ID_ATTEMPTS {
            let user = UserRecord {
                id: random_id(),
                perms,
                name: String::new(),
            };
            if db(self.store.insert_user(&user))? {
                return Ok(user.id);
            }
        }
        Err(ErrorCode::Serv)
    }

    /// UNREGISTER: free for oneself, else needs perm_delete_user. The user also leaves
    /// every channel (and is told so with LEAVE).
    pub(super) fn unregister(&mut self, auid: u64, uid: u64) -> CmdResult {
        let admin = self.existing_user(auid)?;
        self.existing_user(uid)?;
        allow(auid == uid || Perms(admin.perms).contains(Perms::DELETE_USER))?;
        if !db(self.store.delete_user(uid))? {
            return Err(ErrorCode::Param);
        }
        self.registry.remove_everywhere(uid);
        tracing::info!(uid, by = auid, "user unregistered");
        Ok(ControlReply::Value(uid))
    }

    /// SET_USER_NAME: oneself, or anyone with perm_admin.
    pub(super) fn set_user_name(&mut self, uid: u64, target: u64, name: &str) -> CmdResult {
        let who = self.existing_user(uid)?;
        self.existing_user(target)?;
        allow(uid == target || Perms(who.perms).contains(Perms::ADMIN))?;
        if !db(self.store.set_user_name(target, name))? {
            return Err(ErrorCode::Param);
        }
        Ok(ControlReply::Value(1))
    }
}
