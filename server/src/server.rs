//! Start-up, the accept loop and graceful shutdown.
//!
//! Start-up opens the data directory, the key, the database (creating the admin on an
//! empty one) and re-opens every stored channel, then binds the control listener. The
//! accept loop hands each connection to its own task, holding one permit of a semaphore
//! so at most `max_connections` are served at once (mini-redis), and at most
//! `max_connections_per_ip` from one IP (the rest get SERV at once). On the stop signal it
//! stops accepting, tells every task through [`crate::shutdown`], waits for connection
//! tasks (they drop a completion sender when done) and the relay workers (which send
//! SHUTDOWN to their channels' members), and closes the database.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_proto::control::{MAX_LISTED_CHANNELS, MAX_LISTED_MEMBERS};
use kv_proto::{ErrorCode, Perms};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use crate::channel::{Registry, RelayConfig};
use crate::config::Config;
use crate::control::{connection, Control};
use crate::error::ServerError;
use crate::keys;
use crate::limit::PerIpLimit;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::store::{SqliteStore, Store};

/// A started server: listening, with its channels open, not yet accepting.
#[derive(Debug)]
pub struct Server {
    /// The control listener.
    listener: TcpListener,
    /// Store and channels, shared with connection tasks.
    control: Arc<Mutex<Control<SqliteStore>>>,
    /// The bootstrap admin's id, printed at start.
    admin_uid: u64,
    /// The Ed25519 public key.
    public_key: [u8; 32],
    /// Limits and timeouts.
    config: Config,
    /// Sends the stop signal to every task.
    trigger: ShutdownTrigger,
}

impl Server {
    /// Opens everything and binds the listener. Must run inside a tokio runtime.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let key = keys::load_or_create(dir)?;
        let public_key = key.verifying_key().to_bytes();
        let mut store = SqliteStore::open_in(dir)?;

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

        let (trigger, shutdown) = shutdown::channel();
        // Never more than a reply may list (clients reject longer CHANNEL_INFO and
        // GET_CHANNELS replies).
        let relay_config = RelayConfig {
            peer_timeout: config.peer_timeout,
            max_members: config.max_members.min(MAX_LISTED_MEMBERS as usize),
            max_member_pps: config.max_member_pps,
        };
        let mut registry = Registry::new(
            tokio::runtime::Handle::current(),
            local.ip(),
            config.udp_ports.clone(),
            key,
            relay_config,
            config.max_channels.min(MAX_LISTED_CHANNELS as usize),
            shutdown,
        );
        for ch in store.channels()? {
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

        let mut control = Control::new(store, registry, public_key, config.default_perms);
        let admin_uid = bootstrap_admin(&mut control)?;
        Ok(Server {
            listener,
            control: Arc::new(Mutex::new(control)),
            admin_uid,
            public_key,
            config,
            trigger,
        })
    }

    /// The address the control listener is bound to (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        // Cannot fail on a bound listener; fall back to the configured address.
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The bootstrap admin's user id.
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
            ..
        } = self;
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let per_ip = PerIpLimit::new(config.max_connections_per_ip);
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
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => break,
            };
            let done = done_tx.clone();
            let timeout = config.request_timeout;
            let Some(slot) = per_ip.try_acquire(peer.ip()) else {
                tracing::debug!(%peer, "too many connections from this IP");
                tokio::spawn(async move {
                    connection::refuse(stream, ErrorCode::Serv, timeout).await;
                    drop(permit);
                    drop(done);
                });
                continue;
            };
            let control = control.clone();
            let shutdown = trigger.subscribe();
            tokio::spawn(async move {
                connection::handle(stream, peer, control, timeout, shutdown).await;
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
        let tasks = control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .registry_mut()
            .take_tasks();
        for task in tasks {
            let _ = task.await;
        }
        match Arc::try_unwrap(control) {
            Ok(m) => m
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .into_store()
                .close()?,
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

/// Finds the admin, or creates one on an empty data dir (or if it was unregistered, so
/// the server is never left without one).
fn bootstrap_admin(control: &mut Control<SqliteStore>) -> Result<u64, ServerError> {
    let store = control.store_mut();
    if let Some(id) = store.admin_id()? {
        if store.user(id)?.is_some() {
            return Ok(id);
        }
        tracing::warn!(old = id, "admin user was unregistered; creating a new one");
    }
    let id = control
        .create_user(Perms::ADMIN.bits())
        .map_err(|_| crate::store::StoreError::Corrupt("cannot create the admin user"))?;
    control.store_mut().set_admin_id(id)?;
    tracing::info!(uid = id, "created admin user");
    Ok(id)
}
