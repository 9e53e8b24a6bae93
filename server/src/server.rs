//! Start-up, the accept loop and graceful shutdown.
//!
//! Start-up makes the data directory private, raises the descriptor limit, opens the key,
//! the database (creating the keyed admin on an empty one) and re-opens every stored
//! channel, then binds the control listener. The accept loop hands each connection to its
//! own task, holding one permit of a semaphore so at most `max_connections` are served at
//! once (mini-redis), and at most `max_connections_per_ip` from one network (the rest get
//! SERV at once). On the stop signal it stops accepting, tells every task through
//! [`crate::shutdown`], waits for connection tasks (they drop a completion sender when
//! done) and the relay workers (which send SHUTDOWN to their channels' members), and
//! closes the database.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kv_proto::control::{MAX_LISTED_CHANNELS, MAX_LISTED_MEMBERS};
use kv_proto::keyfile::Identity;
use kv_proto::{ErrorCode, Perms};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use crate::channel::{Registry, RelayConfig};
use crate::config::Config;
use crate::control::connection::{self, Limits};
use crate::control::{Control, Policy};
use crate::error::ServerError;
use crate::fds::{self, FdBudget, Spare};
use crate::keys;
use crate::limit::PerIpLimit;
use crate::reload::Reloader;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::store::{SqliteStore, Store};

/// Refused connections being answered at once; beyond it they are closed unanswered (a
/// flood of them must not take the descriptors the served ones need).
const MAX_REFUSING: usize = 64;

/// A started server: listening, with its channels open, not yet accepting.
#[derive(Debug)]
pub struct Server {
    /// The control listener.
    listener: TcpListener,
    /// Store and channels, shared with connection tasks.
    control: Arc<Control<SqliteStore>>,
    /// The bootstrap admin's id, printed at start.
    admin_uid: u64,
    /// The Ed25519 public key.
    public_key: [u8; 32],
    /// Limits and timeouts (`max_connections` as the descriptor limit allows).
    config: Config,
    /// Sends the stop signal to every task.
    trigger: ShutdownTrigger,
    /// The Prometheus listener (`--metrics`), if asked for.
    metrics: Option<TcpListener>,
}

impl Server {
    /// Opens everything and binds the listener. Must run inside a tokio runtime.
    pub async fn bind(mut config: Config) -> Result<Server, ServerError> {
        let dir = config.data_dir.clone();
        crate::files::private_dir(&dir).map_err(|source| ServerError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let budget = descriptor_budget(&mut config);
        let key = keys::load_or_create(&dir)?;
        let public_key = key.verifying_key().to_bytes();
        let store = SqliteStore::open_in(&dir)?;

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Io {
                    what: "binding the control listener",
                    source,
                })?;
        let local = listener.local_addr().map_err(|source| ServerError::Io {
            what: "reading the listener address",
            source,
        })?;

        let metrics = match config.metrics {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServerError::Io {
                            what: "binding the metrics listener",
                            source,
                        })?,
                )
            }
            None => None,
        };

        let (trigger, shutdown) = shutdown::channel();
        let (relay_config, max_channels) = relay_config_of(&config);
        let mut registry = Registry::new(
            tokio::runtime::Handle::current(),
            local.ip(),
            config.udp_ports.clone(),
            key,
            relay_config,
            max_channels,
            shutdown,
        );
        let mut store = store;
        for ch in store.channels()? {
            if !budget.can_open_channel() {
                tracing::error!(
                    chid = ch.id,
                    "descriptors reserved for control connections; channel not re-opened"
                );
                continue;
            }
            match registry.open(ch.id, Some(ch.port)) {
                Ok(port) if port != ch.port => {
                    tracing::warn!(
                        chid = ch.id,
                        old = ch.port,
                        new = port,
                        "channel port moved"
                    );
                    store.set_channel_port(ch.id, port)?;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(chid = ch.id, error = %e, "cannot re-open channel"),
            }
        }

        let control =
            Control::new(store, registry, public_key, policy_of(&config)).with_fd_budget(budget);
        control.load_bans()?;
        let admin_uid = bootstrap_admin(&control, &dir)?;
        if config.allow_unsigned {
            tracing::warn!("--allow-unsigned: key-less users act through unsigned requests");
        }
        Ok(Server {
            listener,
            control: Arc::new(control),
            admin_uid,
            public_key,
            config,
            trigger,
            metrics,
        })
    }

    /// Applies reloaded configurations to this server (SIGHUP); `started_with` is the
    /// configuration it was bound with.
    pub fn reloader(&self, started_with: Config) -> Reloader {
        Reloader::new(self.control.clone(), started_with)
    }

    /// The address the metrics listener is bound to, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address the control listener is bound to (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        // Cannot fail on a bound listener; fall back to the configured address.
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The bootstrap admin's user id (public; acting as the admin needs `admin.key`).
    pub fn admin_uid(&self) -> u64 {
        self.admin_uid
    }

    /// The public key that signs system packets.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Serves until `stop` completes, then shuts down gracefully.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            listener,
            control,
            config,
            trigger,
            metrics,
            ..
        } = self;
        if let Some(listener) = metrics {
            let m = control.metrics().clone();
            tokio::spawn(crate::metrics::http::serve(
                listener,
                m,
                trigger.subscribe(),
            ));
        }
        {
            // The delivery service's timers (a committer that does not answer).
            let hub = control.push().clone();
            let mut stop_ticks = trigger.subscribe();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
                loop {
                    tokio::select! {
                        _ = tick.tick() => hub.tick(),
                        _ = stop_ticks.recv() => break,
                    }
                }
            });
        }
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let per_ip = PerIpLimit::new(config.max_connections_per_ip);
        let limits = Limits::new(config.first_byte_timeout, config.request_timeout);
        let mut spare = Spare::new();
        // Each connection task holds a clone; `recv` returns None once all are dropped.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // semaphore closed: cannot happen, stop anyway
                },
                _ = &mut stop => break,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) if fds::is_table_full(&e) && spare.release() => {
                        // Free the spare descriptor, take the waiting connection, tell it
                        // SERV and close it, so the client is not left hanging.
                        tracing::warn!("descriptor table full; answering SERV");
                        if let Ok((stream, _)) = listener.accept().await {
                            answer_full(stream);
                        }
                        spare.restore();
                        continue;
                    }
                    Err(e) => {
                        // Out of descriptors without a spare, and the like: back off
                        // instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        spare.restore();
                        continue;
                    }
                },
                _ = &mut stop => break,
            };
            let done = done_tx.clone();
            let Some(slot) = per_ip.try_acquire(peer.ip()) else {
                tracing::debug!(%peer, "too many connections from this network");
                // The refusal does not keep a connection slot; refusals have their own cap.
                drop(permit);
                if let Ok(r) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        connection::refuse(stream, ErrorCode::Serv).await;
                        drop(r);
                        drop(done);
                    });
                }
                continue;
            };
            let control = control.clone();
            let shutdown = trigger.subscribe();
            let limits = limits.clone();
            tokio::spawn(async move {
                connection::handle(stream, peer, control, limits, shutdown).await;
                drop(slot);
                drop(permit);
                drop(done);
            });
        }

        tracing::info!("shutting down");
        drop(listener);
        trigger.trigger();
        drop(done_tx);
        // Connection tasks stop at the signal, or finish the request they are applying.
        let grace = config.request_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            tracing::warn!("connections still open after the grace period");
        }
        let tasks = control.registry_mut().take_tasks();
        for task in tasks {
            let _ = task.await;
        }
        match Arc::try_unwrap(control) {
            Ok(c) => c.into_store().close()?,
            // A request is still being applied; its store is dropped (and closed) with it.
            Err(_) => tracing::warn!("database still in use at exit"),
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// A listener for the stop signal, for embedders that run other tasks beside it.
    pub fn shutdown(&self) -> Shutdown {
        self.trigger.subscribe()
    }
}

/// The relay limits and the channel cap of `config`: never more than a reply may list
/// (clients reject longer CHANNEL_INFO and GET_CHANNELS replies).
pub(crate) fn relay_config_of(config: &Config) -> (RelayConfig, usize) {
    let relay = RelayConfig {
        peer_timeout: config.peer_timeout,
        max_members: config.max_members.min(MAX_LISTED_MEMBERS as usize),
        max_member_pps: config.max_member_pps,
    };
    (relay, config.max_channels.min(MAX_LISTED_CHANNELS as usize))
}

/// The control plane's rules in `config`.
pub(crate) fn policy_of(config: &Config) -> Policy {
    Policy {
        default_perms: config.default_perms,
        allow_unsigned: config.allow_unsigned,
        max_channels_per_user: config.max_channels_per_user,
        register_rate: config.register_rate,
    }
}

/// Raises the descriptor limit and splits it: control connections (and refusals) get a
/// reserve channels may not touch; `max_connections` shrinks if the limit is small.
fn descriptor_budget(config: &mut Config) -> FdBudget {
    let limit = match fds::raise_nofile_limit() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE");
            return FdBudget::unlimited();
        }
    };
    // At most half the table serves control connections; the other half is for channels.
    let usable = limit.saturating_sub(fds::BASE_RESERVE + MAX_REFUSING as u64);
    let max_conn = (config.max_connections as u64).min(usable / 2).max(1);
    if max_conn < config.max_connections as u64 {
        tracing::warn!(
            limit,
            max_connections = max_conn,
            "descriptor limit is low; serving fewer control connections at once"
        );
        config.max_connections = max_conn as usize;
    }
    let reserve = fds::BASE_RESERVE + MAX_REFUSING as u64 + max_conn;
    tracing::debug!(limit, reserve, "descriptor budget");
    FdBudget::new(limit, reserve)
}

/// Answers SERV on a connection accepted with the spare descriptor, without waiting: the
/// 12 bytes fit any socket buffer.
fn answer_full(stream: tokio::net::TcpStream) {
    let mut out = Vec::with_capacity(12);
    kv_proto::ControlReply::Error(ErrorCode::Serv).encode(&mut out);
    let _ = stream.try_write(&out);
}

/// Finds the admin, or creates one on an empty data dir (or if it was unregistered, so
/// the server is never left without one). The admin's key lives in `admin.key`; an admin
/// from before keys (or whose file was removed) gets a new key and file.
fn bootstrap_admin(control: &Control<SqliteStore>, dir: &Path) -> Result<u64, ServerError> {
    let file = keys::read_admin(dir)?;
    let known = control.store_mut().admin_id()?;
    if let Some(id) = known {
        let user = control.store_mut().user(id)?;
        if let Some(user) = user {
            let key = match file {
                Some(f) if f.uid == id => f.key,
                _ => {
                    let key = keys::new_key();
                    keys::write_admin(
                        dir,
                        &Identity {
                            uid: id,
                            key: key.clone(),
                        },
                    )?;
                    tracing::warn!("admin had no key file; wrote a new admin.key");
                    key
                }
            };
            let public = key.verifying_key().to_bytes();
            if user.key != Some(public) {
                control.store_mut().set_user_key(id, &public)?;
            }
            return Ok(id);
        }
        tracing::warn!("admin user was unregistered; creating a new one");
    }
    let key = keys::new_key();
    let id = control
        .create_user(Perms::ADMIN.bits(), Some(key.verifying_key().to_bytes()))
        .map_err(|_| crate::store::StoreError::Corrupt("cannot create the admin user"))?;
    // The file first: an admin id recorded without its key file would be unusable.
    keys::write_admin(dir, &Identity { uid: id, key })?;
    control.store_mut().set_admin_id(id)?;
    tracing::info!("created admin user; its key is in admin.key");
    Ok(id)
}
