//! A `kv-server` inside this process, for `kv-tui --demo` and `kv bench`. Behind the
//! `embedded-server` cargo feature (on by default, so the binaries have it): without it
//! the client library builds without the server and its SQLite.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kv_server::{Config, Server};

/// Why the embedded server did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedServerError {
    /// The server failed to bind or to start in time.
    #[error("embedded server: {0}")]
    Start(String),
    /// Its thread could not start.
    #[error("embedded server: {0}")]
    Io(#[from] std::io::Error),
}

/// A `kv-server` running inside this process, on a thread with its own tokio runtime.
#[derive(Debug)]
pub struct EmbeddedServer {
    addr: SocketAddr,
    admin: u64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Starts a server listening on `listen` with its data in `data_dir`, and waits until
    /// it accepts connections.
    pub fn start(listen: SocketAddr, data_dir: PathBuf) -> Result<Self, EmbeddedServerError> {
        let (addr_tx, addr_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut config = Config::new(listen, data_dir);
        // Its users are made here, by the program, not by strangers: no sign-up limit.
        config.register_rate = 0;
        let thread = std::thread::Builder::new()
            .name("kv-embedded-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let server = match Server::bind(config).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = addr_tx.send(Ok((server.local_addr(), server.admin_uid())));
                    let stop = async move {
                        let _ = stop_rx.await;
                    };
                    if let Err(e) = server.run(stop).await {
                        tracing::error!(error = %e, "embedded server failed");
                    }
                });
            })?;
        let (addr, admin) = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| EmbeddedServerError::Start("did not start within 10 s".into()))?
            .map_err(EmbeddedServerError::Start)?;
        tracing::info!(%addr, "embedded server started");
        Ok(EmbeddedServer {
            addr,
            admin,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The control address (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bootstrap admin's uid.
    pub fn admin_uid(&self) -> u64 {
        self.admin
    }

    /// Shuts the server down gracefully and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
