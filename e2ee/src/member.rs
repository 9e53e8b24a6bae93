//! A client's MLS state for one channel: its credential, its key packages, the group, and the
//! frame keys of the group's current epoch.
//!
//! Bytes in, bytes out: every MLS message (key package, Welcome, Commit, Proposal) enters and
//! leaves as its RFC 9420 `MLSMessage` encoding, for a delivery service to order and forward.
//! No I/O; time only where frame keys need it (`now`).

use std::collections::VecDeque;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    Ciphersuite, CredentialWithKey, GroupId, KeyPackage, KeyPackageRef, LeafNodeIndex, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    ProcessedMessageContent, Proposal, ProtocolVersion, Sender, SignatureScheme, StagedWelcome,
    MIXED_PLAINTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::storage::StorageProvider as _;
use openmls_traits::OpenMlsProvider as _;
use zeroize::Zeroizing;

use crate::credential::{self, verify_leaf, CredentialError, Directory};
use crate::frame::{
    DecryptedFrame, EncryptError, EpochUpdate, FrameKeys, FrameRejected, FrameStats,
    BASE_KEY_LABEL, CIPHER_SUITE,
};
use crate::safety::SafetyCode;

/// The MLS ciphersuite: X25519, AES-128-GCM, SHA-256 and Ed25519, the curve KV identity keys
/// are on (so the identity key signs MLS messages, see [`crate::credential`]).
pub const MLS_CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// Most members a group may have: the server's per-channel cap. Bounds every roster, tree
/// and per-epoch key table.
pub const MAX_MEMBERS: usize = 1024;
/// Largest MLS message accepted (a Welcome for [`MAX_MEMBERS`] with the ratchet tree is about
/// 150 kB; this leaves room and still bounds the parser).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Most key packages whose private keys are kept at once: each [`Member::key_package`]
/// beyond this forgets the oldest (a Welcome for it can no longer be read).
pub const MAX_KEY_PACKAGES: usize = 4;
/// Most proposals stored for the next commit (a member could otherwise grow the store
/// without bound by proposing and never committing).
pub const MAX_PENDING_PROPOSALS: usize = 64;

/// Why an MLS operation or message was refused. Messages that fail are counted in
/// [`HandshakeStats`] and leave the group as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eeError {
    /// Not in a group (none created or joined, or we were removed).
    #[error("not in a group")]
    NoGroup,
    /// Already in a group; a `Member` serves one.
    #[error("already in a group")]
    AlreadyInGroup,
    /// Bytes that are not an MLS message of the expected kind, or above [`MAX_MESSAGE_LEN`].
    #[error("malformed MLS message")]
    Malformed,
    /// A message for another group.
    #[error("message for another group")]
    WrongGroup,
    /// A handshake message for another epoch than ours (late, early, or from a stale member).
    #[error("handshake message for epoch {got}, group is at {ours}")]
    WrongEpoch {
        /// The message's epoch.
        got: u64,
        /// Ours.
        ours: u64,
    },
    /// A member's credential was refused (not a KV identity, wrong key, not vouched for).
    #[error("credential refused: {0}")]
    Credential(#[from] CredentialError),
    /// The group would exceed [`MAX_MEMBERS`].
    #[error("group would exceed {MAX_MEMBERS} members")]
    TooManyMembers,
    /// [`MAX_PENDING_PROPOSALS`] proposals already wait for a commit.
    #[error("too many pending proposals")]
    TooManyProposals,
    /// No member has this uid.
    #[error("uid {0} is not a member")]
    UnknownMember(u64),
    /// A commit of ours awaits [`Member::confirm_commit`] or [`Member::discard_commit`].
    #[error("a commit is pending")]
    PendingCommit,
    /// No commit of ours is pending.
    #[error("no commit is pending")]
    NoPendingCommit,
    /// A kind of message KV does not use (external joins, GroupInfo, key package here).
    #[error("unsupported MLS message")]
    Unsupported,
    /// openmls refused (bad signature, bad membership tag, invalid commit, ...); its words.
    #[error("MLS: {0}")]
    Mls(String),
}

fn mls(e: impl std::fmt::Display) -> E2eeError {
    E2eeError::Mls(e.to_string())
}

/// Counters of refused handshake messages, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// Messages processed and applied (commits merged, proposals stored).
    pub accepted: u64,
    /// [`E2eeError::Malformed`].
    pub malformed: u64,
    /// [`E2eeError::WrongGroup`].
    pub wrong_group: u64,
    /// [`E2eeError::WrongEpoch`].
    pub wrong_epoch: u64,
    /// [`E2eeError::Credential`].
    pub credential_refused: u64,
    /// [`E2eeError::Mls`]: openmls found it invalid (e.g. a commit from a non-member).
    pub invalid: u64,
    /// Everything else ([`E2eeError::Unsupported`], [`E2eeError::NoGroup`], ...).
    pub other: u64,
}

impl HandshakeStats {
    fn count(&mut self, e: &E2eeError) {
        let c = match e {
            E2eeError::Malformed => &mut self.malformed,
            E2eeError::WrongGroup => &mut self.wrong_group,
            E2eeError::WrongEpoch { .. } => &mut self.wrong_epoch,
            E2eeError::Credential(_) => &mut self.credential_refused,
            E2eeError::Mls(_) => &mut self.invalid,
            _ => &mut self.other,
        };
        *c += 1;
    }
}

/// What our commit produced, for the delivery service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOut {
    /// The Commit, for every current member.
    pub commit: Vec<u8>,
    /// The Welcome, for the members it adds (only when it adds some).
    pub welcome: Option<Vec<u8>>,
}

/// What a processed handshake message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// A commit was merged: the group is at `epoch` now, with new frame keys.
    Commit {
        /// The new epoch.
        epoch: u64,
    },
    /// A commit removed us: we are out of the group (frames of the old epoch still decrypt
    /// for the grace period).
    Removed,
    /// A proposal was stored, for the next commit (by anyone) to include.
    Proposal,
    /// An MLS application message (for the chat of a later step): its plaintext.
    Application(Vec<u8>),
}

/// One member of one channel's group.
pub struct Member {
    uid: u64,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
    /// The bytes of our pending commit: the delivery service's echo of exactly these is its
    /// acceptance ([`Self::handle`] merges it).
    pending: Option<Vec<u8>>,
    /// Our key packages not yet used by a Welcome, oldest first (their private keys live in
    /// the provider's storage until a Welcome consumes them or they are forgotten).
    key_packages: VecDeque<KeyPackageRef>,
    frames: FrameKeys,
    handshake: HandshakeStats,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("uid", &self.uid)
            .field("epoch", &self.epoch())
            .field("frames", &self.frames)
            .field("handshake", &self.handshake)
            .finish_non_exhaustive()
    }
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(MLS_CIPHERSUITE)
        // The Welcome carries the tree: a joiner needs nothing else from the server.
        .use_ratchet_tree_extension(true)
        // Handshake messages as PublicMessage, so the delivery service can read a commit's
        // group and epoch to order them (first commit for an epoch wins); application
        // messages are always encrypted.
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn parse(bytes: &[u8]) -> Result<MlsMessageBodyIn, E2eeError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(E2eeError::Malformed);
    }
    let mut rest = bytes;
    let msg = MlsMessageIn::tls_deserialize(&mut rest).map_err(|_| E2eeError::Malformed)?;
    if !rest.is_empty() {
        return Err(E2eeError::Malformed);
    }
    Ok(msg.extract())
}

fn serialize(msg: &MlsMessageOut) -> Result<Vec<u8>, E2eeError> {
    msg.tls_serialize_detached().map_err(mls)
}

impl Member {
    /// A member acting as `uid` with its identity key (`Identity::key` of
    /// `kv_proto::keyfile`), in no group yet.
    pub fn new(uid: u64, identity: &SigningKey) -> Self {
        let public = identity.verifying_key().to_bytes();
        let signer = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            identity.to_bytes().to_vec(),
            public.to_vec(),
        );
        Self {
            uid,
            provider: OpenMlsRustCrypto::default(),
            credential: CredentialWithKey {
                credential: credential::credential(uid, &public),
                signature_key: public.to_vec().into(),
            },
            signer,
            group: None,
            pending: None,
            key_packages: VecDeque::new(),
            frames: FrameKeys::new(),
            handshake: HandshakeStats::default(),
        }
    }

    /// Our uid.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// A fresh key package (an `MLSMessage`), for the server to hand to whoever adds us.
    /// Its private keys stay here until the Welcome that uses it arrives; at most
    /// [`MAX_KEY_PACKAGES`] are kept.
    pub fn key_package(&mut self) -> Result<Vec<u8>, E2eeError> {
        let bundle = KeyPackage::builder()
            .build(
                MLS_CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(mls)?;
        let kp = bundle.key_package();
        self.key_packages
            .push_back(kp.hash_ref(self.provider.crypto()).map_err(mls)?);
        if self.key_packages.len() > MAX_KEY_PACKAGES {
            if let Some(old) = self.key_packages.pop_front() {
                self.provider
                    .storage()
                    .delete_key_package(&old)
                    .map_err(mls)?;
            }
        }
        serialize(&MlsMessageOut::from(kp.clone()))
    }

    /// Starts a group (epoch 0, us alone) with the id the wiring chooses (e.g. server key and
    /// channel id), and its first frame keys.
    pub fn create_group(&mut self, group_id: &[u8], now: Instant) -> Result<(), E2eeError> {
        if self.group.is_some() {
            return Err(E2eeError::AlreadyInGroup);
        }
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            GroupId::from_slice(group_id),
            self.credential.clone(),
        )
        .map_err(mls)?;
        self.group = Some(group);
        self.install_keys(now)
    }

    /// Joins from a Welcome (an `MLSMessage`), checking every member's credential against
    /// `directory` first; installs the epoch's frame keys.
    pub fn join(
        &mut self,
        welcome: &[u8],
        directory: &impl Directory,
        now: Instant,
    ) -> Result<(), E2eeError> {
        let r = self.join_uncounted(welcome, directory, now);
        self.tally(&r);
        r
    }

    fn join_uncounted(
        &mut self,
        welcome: &[u8],
        directory: &impl Directory,
        now: Instant,
    ) -> Result<(), E2eeError> {
        if self.group.is_some() {
            return Err(E2eeError::AlreadyInGroup);
        }
        let MlsMessageBodyIn::Welcome(welcome) = parse(welcome)? else {
            return Err(E2eeError::Malformed);
        };
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None)
            .map_err(mls)?;
        let mut count = 0;
        for m in staged.members() {
            verify_leaf(&m.credential, &m.signature_key, directory)?;
            count += 1;
        }
        if count > MAX_MEMBERS {
            return Err(E2eeError::TooManyMembers);
        }
        let group = staged.into_group(&self.provider).map_err(mls)?;
        self.group = Some(group);
        self.install_keys(now)
    }

    /// Adds the owners of `key_packages` (each an `MLSMessage`), after checking their
    /// credentials against `directory`. The commit stays pending until the delivery service
    /// accepted it: then [`Self::confirm_commit`], or [`Self::handle`] of the commit itself
    /// when the service forwards it back to us; if another commit won, [`Self::handle`] of
    /// that one discards ours.
    pub fn add_members(
        &mut self,
        key_packages: &[&[u8]],
        directory: &impl Directory,
    ) -> Result<CommitOut, E2eeError> {
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        if group.pending_commit().is_some() {
            return Err(E2eeError::PendingCommit);
        }
        if group.members().count() + key_packages.len() > MAX_MEMBERS {
            return Err(E2eeError::TooManyMembers);
        }
        let mut kps = Vec::with_capacity(key_packages.len());
        for bytes in key_packages {
            let MlsMessageBodyIn::KeyPackage(kp) = parse(bytes)? else {
                return Err(E2eeError::Malformed);
            };
            let kp = kp
                .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(mls)?;
            let leaf = kp.leaf_node();
            verify_leaf(
                leaf.credential(),
                leaf.signature_key().as_slice(),
                directory,
            )?;
            kps.push(kp);
        }
        let (commit, welcome, _) = group
            .add_members(&self.provider, &self.signer, &kps)
            .map_err(mls)?;
        self.pending_out(serialize(&commit)?, Some(serialize(&welcome)?))
    }

    /// Removes the members with these uids (a kick, a timeout, a leave the server saw).
    /// Pending like [`Self::add_members`].
    pub fn remove_members(&mut self, uids: &[u64]) -> Result<CommitOut, E2eeError> {
        let leaves = uids
            .iter()
            .map(|&uid| self.leaf_of(uid).ok_or(E2eeError::UnknownMember(uid)))
            .collect::<Result<Vec<_>, _>>()?;
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        if group.pending_commit().is_some() {
            return Err(E2eeError::PendingCommit);
        }
        let (commit, welcome, _) = group
            .remove_members(&self.provider, &self.signer, &leaves)
            .map_err(mls)?;
        self.pending_out(
            serialize(&commit)?,
            welcome.as_ref().map(serialize).transpose()?,
        )
    }

    /// A proposal to remove ourselves, for another member to commit (a member cannot commit
    /// its own removal in MLS).
    pub fn propose_leave(&mut self) -> Result<Vec<u8>, E2eeError> {
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        let msg = group
            .leave_group(&self.provider, &self.signer)
            .map_err(mls)?;
        serialize(&msg)
    }

    /// Commits the proposals received so far (e.g. a member's leave). Pending like
    /// [`Self::add_members`].
    pub fn commit_pending_proposals(&mut self) -> Result<CommitOut, E2eeError> {
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        if group.pending_commit().is_some() {
            return Err(E2eeError::PendingCommit);
        }
        let (commit, welcome, _) = group
            .commit_to_pending_proposals(&self.provider, &self.signer)
            .map_err(mls)?;
        self.pending_out(
            serialize(&commit)?,
            welcome.as_ref().map(serialize).transpose()?,
        )
    }

    fn pending_out(
        &mut self,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
    ) -> Result<CommitOut, E2eeError> {
        self.pending = Some(commit.clone());
        Ok(CommitOut { commit, welcome })
    }

    /// The delivery service accepted our pending commit: merge it and switch to the new
    /// epoch's frame keys (the old ones decrypt for the grace period).
    pub fn confirm_commit(&mut self, now: Instant) -> Result<u64, E2eeError> {
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        if group.pending_commit().is_none() {
            return Err(E2eeError::NoPendingCommit);
        }
        group.merge_pending_commit(&self.provider).map_err(mls)?;
        self.pending = None;
        self.install_keys(now)?;
        self.epoch().ok_or(E2eeError::NoGroup)
    }

    /// Drops our pending commit (the delivery service refused it).
    pub fn discard_commit(&mut self) -> Result<(), E2eeError> {
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        self.pending = None;
        group
            .clear_pending_commit(self.provider.storage())
            .map_err(mls)
    }

    /// Processes one handshake message (an `MLSMessage`) from the delivery service: a commit
    /// is checked (credentials of every leaf it adds or updates, against `directory`) and
    /// merged, a proposal stored. Anything refused is counted and changes nothing.
    pub fn handle(
        &mut self,
        message: &[u8],
        directory: &impl Directory,
        now: Instant,
    ) -> Result<Handled, E2eeError> {
        let r = self.handle_uncounted(message, directory, now);
        self.tally(&r);
        r
    }

    fn tally<T>(&mut self, r: &Result<T, E2eeError>) {
        match r {
            Ok(_) => self.handshake.accepted += 1,
            Err(e) => self.handshake.count(e),
        }
    }

    fn handle_uncounted(
        &mut self,
        message: &[u8],
        directory: &impl Directory,
        now: Instant,
    ) -> Result<Handled, E2eeError> {
        let body = parse(message)?;
        if self.group.is_some() && self.pending.as_deref() == Some(message) {
            // The delivery service forwards our own commit: it won the epoch.
            let epoch = self.confirm_commit(now)?;
            return Ok(Handled::Commit { epoch });
        }
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        let msg: openmls::prelude::ProtocolMessage = match body {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            _ => return Err(E2eeError::Unsupported),
        };
        if msg.group_id() != group.group_id() {
            return Err(E2eeError::WrongGroup);
        }
        let ours = group.epoch().as_u64();
        if msg.epoch().as_u64() != ours {
            return Err(E2eeError::WrongEpoch {
                got: msg.epoch().as_u64(),
                ours,
            });
        }
        let processed = group.process_message(&self.provider, msg).map_err(mls)?;
        if !matches!(processed.sender(), Sender::Member(_)) {
            // External joins and external proposals are not part of KV's flow (and were not
            // applied: processing alone changes no group state).
            return Err(E2eeError::Unsupported);
        }
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                for add in staged.add_proposals() {
                    let leaf = add.add_proposal().key_package().leaf_node();
                    verify_leaf(
                        leaf.credential(),
                        leaf.signature_key().as_slice(),
                        directory,
                    )?;
                }
                for upd in staged.update_proposals() {
                    let leaf = upd.update_proposal().leaf_node();
                    verify_leaf(
                        leaf.credential(),
                        leaf.signature_key().as_slice(),
                        directory,
                    )?;
                }
                if let Some(leaf) = staged.update_path_leaf_node() {
                    verify_leaf(
                        leaf.credential(),
                        leaf.signature_key().as_slice(),
                        directory,
                    )?;
                }
                let after = group.members().count() + staged.add_proposals().count()
                    - staged
                        .remove_proposals()
                        .count()
                        .min(group.members().count());
                if after > MAX_MEMBERS {
                    // KV's own clients never commit this (adders check); refuse before
                    // merging rather than derive an unbounded table for anyone else's.
                    return Err(E2eeError::TooManyMembers);
                }
                let removed = staged.self_removed();
                // Another member's commit won the epoch: ours (if any) is void.
                if group.pending_commit().is_some() {
                    group
                        .clear_pending_commit(self.provider.storage())
                        .map_err(mls)?;
                }
                self.pending = None;
                group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(mls)?;
                if removed {
                    self.frames.retire(now);
                    self.group = None;
                    return Ok(Handled::Removed);
                }
                self.install_keys(now)?;
                Ok(Handled::Commit {
                    epoch: self.epoch().ok_or(E2eeError::NoGroup)?,
                })
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                if group.pending_proposals().count() >= MAX_PENDING_PROPOSALS {
                    return Err(E2eeError::TooManyProposals);
                }
                match proposal.proposal() {
                    Proposal::Add(add) => {
                        let leaf = add.key_package().leaf_node();
                        verify_leaf(
                            leaf.credential(),
                            leaf.signature_key().as_slice(),
                            directory,
                        )?;
                    }
                    Proposal::Update(upd) => {
                        let leaf = upd.leaf_node();
                        verify_leaf(
                            leaf.credential(),
                            leaf.signature_key().as_slice(),
                            directory,
                        )?;
                    }
                    Proposal::Remove(_) => {}
                    _ => return Err(E2eeError::Unsupported),
                }
                group
                    .store_pending_proposal(self.provider.storage(), *proposal)
                    .map_err(mls)?;
                Ok(Handled::Proposal)
            }
            ProcessedMessageContent::ApplicationMessage(app) => {
                Ok(Handled::Application(app.into_bytes()))
            }
            _ => Err(E2eeError::Unsupported),
        }
    }

    /// Derives the current epoch's frame keys (RFC 9605 §5.2: the epoch's base key is
    /// `MLS-Exporter("SFrame 1.0 Base Key", "", 16)`, each sender's key and salt come from it
    /// and the sender's key id).
    fn install_keys(&mut self, now: Instant) -> Result<(), E2eeError> {
        let update = self.epoch_update()?;
        self.frames.apply(&update, now).map_err(mls)
    }

    /// The current epoch's frame-key material, for [`FrameKeys`] kept elsewhere (the
    /// capture and playout threads each own one; the MLS owner sends them this after every
    /// [`Handled::Commit`], join and confirmed commit).
    pub fn epoch_update(&self) -> Result<EpochUpdate, E2eeError> {
        let group = self.group.as_ref().ok_or(E2eeError::NoGroup)?;
        let base_key = Zeroizing::new(
            group
                .export_secret(
                    self.provider.crypto(),
                    BASE_KEY_LABEL,
                    b"",
                    CIPHER_SUITE.key_len(),
                )
                .map_err(mls)?,
        );
        let roster = group
            .members()
            .filter_map(|m| {
                credential::credential_identity(&m.credential).map(|(uid, _)| (m.index.u32(), uid))
            })
            .collect();
        Ok(EpochUpdate {
            epoch: group.epoch().as_u64(),
            base_key,
            own_index: Some(group.own_leaf_index().u32()),
            roster,
        })
    }

    fn leaf_of(&self, uid: u64) -> Option<LeafNodeIndex> {
        self.group.as_ref()?.members().find_map(|m| {
            credential::credential_identity(&m.credential)
                .filter(|(u, _)| *u == uid)
                .map(|_| m.index)
        })
    }

    /// The current epoch, while in a group.
    pub fn epoch(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.epoch().as_u64())
    }

    /// `(uid, leaf index)` of every member, ourselves included.
    pub fn members(&self) -> Vec<(u64, u32)> {
        let Some(group) = &self.group else {
            return Vec::new();
        };
        group
            .members()
            .filter_map(|m| {
                credential::credential_identity(&m.credential).map(|(uid, _)| (uid, m.index.u32()))
            })
            .collect()
    }

    /// Proposals stored for the next commit.
    pub fn pending_proposals(&self) -> usize {
        self.group
            .as_ref()
            .map_or(0, |g| g.pending_proposals().count())
    }

    /// The current epoch's safety code (see [`crate::safety`]).
    pub fn safety_code(&self) -> Option<SafetyCode> {
        SafetyCode::from_authenticator(self.group.as_ref()?.epoch_authenticator().as_slice())
    }

    /// An MLS exporter secret of the current epoch (RFC 9420 §8.5), for other uses (chat
    /// keys, tests): every member gets the same bytes for the same label and context.
    pub fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, E2eeError> {
        let group = self.group.as_ref().ok_or(E2eeError::NoGroup)?;
        group
            .export_secret(self.provider.crypto(), label, context, len)
            .map_err(mls)
    }

    /// An MLS application message (a chat message) with `plaintext`, for the current
    /// epoch's members; [`Self::handle`] of it on a member gives [`Handled::Application`].
    pub fn encrypt_message(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, E2eeError> {
        let group = self.group.as_mut().ok_or(E2eeError::NoGroup)?;
        if group.pending_commit().is_some() {
            return Err(E2eeError::PendingCommit);
        }
        let msg = group
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(mls)?;
        serialize(&msg)
    }

    /// True while our own commit waits for the delivery service's answer.
    pub fn has_pending_commit(&self) -> bool {
        self.pending.is_some()
    }

    /// Protects one Opus frame (see [`FrameKeys::encrypt`]).
    pub fn encrypt_frame(
        &mut self,
        frame: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, EncryptError> {
        self.frames.encrypt(frame, aad, out)
    }

    /// Checks and decrypts one protected frame (see [`FrameKeys::decrypt`]).
    pub fn decrypt_frame(
        &mut self,
        now: Instant,
        data: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<DecryptedFrame, FrameRejected> {
        self.frames.decrypt(now, data, aad, out)
    }

    /// Frame counters.
    pub fn frame_stats(&self) -> FrameStats {
        self.frames.stats()
    }

    /// Handshake counters.
    pub fn handshake_stats(&self) -> HandshakeStats {
        self.handshake
    }

    /// The frame keys (epochs held, timeouts).
    pub fn frame_keys(&self) -> &FrameKeys {
        &self.frames
    }

    /// When the previous epoch's keys expire (for the caller's timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.frames.poll_timeout()
    }

    /// Drops expired keys.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.frames.handle_timeout(now)
    }
}
