//! Who a request acts as.
//!
//! A SIGNED envelope acts as its signer once [`Control::authenticate`] has checked, in
//! this order: it names this server's key, its timestamp is within
//! [`kv_proto::signed::WINDOW_MS`] of our clock, the signer exists (PARAM) and has a key,
//! the signature verifies, and its nonce was not seen before in the window. Everything
//! failing is ACCESS, except an unknown signer (PARAM, like any unknown uid). The nonce
//! is remembered only after the signature verified, so forged envelopes cannot fill the
//! replay cache.
//!
//! [`Control::authorize`] then requires the request's actor (`ControlRequest::actor`) to
//! be the signer. An unsigned request may act only for a key-less user and only with
//! `--allow-unsigned`; without the flag, every unsigned request that changes something is
//! ACCESS. Read-only requests (GET_PORT, GET_CHANNELS, SERVER_INFO, GET_*_NAME,
//! CHANNEL_INFO, USER_INFO) stay open to anyone: they reveal uids, which grant nothing.

use ed25519_dalek::VerifyingKey;
use kv_proto::signed::{SignedRequest, WINDOW_MS};
use kv_proto::{ControlRequest, ErrorCode};

use super::{allow, db, Control, Origin};
use crate::store::Store;

impl<S: Store> Control<S> {
    /// Checks a SIGNED envelope and returns its signer (0 for a self-signed sign-up).
    pub(super) fn authenticate(
        &self,
        s: &SignedRequest,
        origin: &Origin,
    ) -> Result<u64, ErrorCode> {
        allow(s.server_key == self.public_key)?;
        allow(origin.unix_ms.abs_diff(s.timestamp_ms) <= WINDOW_MS)?;
        let key = if s.signer == 0 {
            // Only a sign-up signs with a key the server does not know yet: the one it
            // registers, which proves the requester holds it.
            match &s.inner {
                ControlRequest::RegisterKey {
                    auid: 0,
                    public_key,
                    ..
                } => *public_key,
                _ => return Err(ErrorCode::Access),
            }
        } else {
            let user = db(self.store().user(s.signer))?.ok_or(ErrorCode::Param)?;
            user.key.ok_or(ErrorCode::Access)?
        };
        let key = VerifyingKey::from_bytes(&key).map_err(|_| ErrorCode::Access)?;
        allow(s.verify(&key))?;
        let fresh = self
            .replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.nonce, s.timestamp_ms, origin.unix_ms);
        match fresh {
            Ok(true) => Ok(s.signer),
            Ok(false) => {
                tracing::debug!(signer = s.signer, "replayed signed request refused");
                Err(ErrorCode::Access)
            }
            Err(_) => {
                tracing::warn!("replay cache full; signed request refused");
                Err(ErrorCode::Serv)
            }
        }
    }

    /// May this request run, given who signed it (`None`: unsigned)?
    pub(super) fn authorize(
        &self,
        req: &ControlRequest,
        signer: Option<u64>,
    ) -> Result<(), ErrorCode> {
        if let ControlRequest::RegisterKey { auid: 0, .. } = req {
            // A keyed sign-up must prove it holds the key it registers.
            return allow(signer == Some(0));
        }
        use ControlRequest as R;
        if matches!(
            req,
            R::Ban { .. }
                | R::Unban { .. }
                | R::SetPerms { .. }
                | R::ListBans { .. }
                | R::ListUsers { .. }
                | R::PushOpen { .. }
        ) {
            // Moderation and push connections are signed, always (even with
            // --allow-unsigned).
            allow(signer.is_some())?;
        }
        match (req.actor(), signer) {
            (Some(actor), Some(signer)) => allow(actor == signer),
            (Some(actor), None) => {
                allow(self.policy().allow_unsigned)?;
                // An unknown actor falls through to the command, which answers PARAM.
                match db(self.store().user(actor))? {
                    Some(u) => allow(u.key.is_none()),
                    None => Ok(()),
                }
            }
            (None, Some(_)) => Ok(()),
            (None, None) => allow(!req.is_change() || self.policy().allow_unsigned),
        }
    }
}
