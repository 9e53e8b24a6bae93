//! The client side of the push connection: a reader thread turns frames into
//! [`PushEvent`]s on one bounded channel, [`PushSender`] writes frames (from any thread),
//! a pinger keeps the connection alive.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kv_proto::push::{body_len, PushMsg, HEADER_LEN};

use crate::control::{ControlClient, ControlError};

/// Events queued for the owner before the reader waits (the server drops us if we fall
/// behind anyway).
pub const EVENT_QUEUE: usize = 1024;

/// How often we ping (the server drops a connection silent for 60 s).
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// What the reader reports.
#[derive(Debug)]
pub enum PushEvent {
    /// A frame from the server.
    Frame(PushMsg),
    /// The connection ended (the reason, for messages).
    Closed(String),
}

/// Writes frames to the push connection; clones share it. Dropping the last clone closes
/// the connection.
#[derive(Debug, Clone)]
pub struct PushSender {
    stream: Arc<Mutex<TcpStream>>,
}

impl PushSender {
    /// Sends one frame.
    pub fn send(&self, msg: &PushMsg) -> std::io::Result<()> {
        let frame = msg
            .encode()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        self.stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&frame)
    }

    /// Closes the connection (the server then removes us from every group).
    pub fn close(&self) {
        let _ = self
            .stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown(Shutdown::Both);
    }
}

impl Drop for PushSender {
    fn drop(&mut self) {
        // The pinger holds only a weak reference; the reader a cloned socket. When the
        // owner's last clone goes, close, so the reader ends too.
        if Arc::strong_count(&self.stream) == 1 {
            self.close();
        }
    }
}

/// Opens the push connection of `control`'s identity.
pub fn open(control: &ControlClient) -> Result<(PushSender, Receiver<PushEvent>), ControlError> {
    let stream = control.open_push()?;
    let read = stream.try_clone().map_err(|e| ControlError::Protocol {
        addr: control.addr().to_string(),
        detail: format!("cannot clone the push socket: {e}"),
    })?;
    let (tx, rx) = sync_channel(EVENT_QUEUE);
    std::thread::Builder::new()
        .name("kv-push-read".into())
        .spawn(move || read_loop(read, tx))
        .map_err(|e| ControlError::Protocol {
            addr: control.addr().to_string(),
            detail: format!("cannot start the push reader: {e}"),
        })?;
    let sender = PushSender {
        stream: Arc::new(Mutex::new(stream)),
    };
    let weak = Arc::downgrade(&sender.stream);
    let _ = std::thread::Builder::new()
        .name("kv-push-ping".into())
        .spawn(move || ping_loop(weak));
    Ok((sender, rx))
}

fn ping_loop(stream: Weak<Mutex<TcpStream>>) {
    let frame = PushMsg::Ping.encode().unwrap_or_default();
    loop {
        std::thread::sleep(PING_EVERY);
        let Some(s) = stream.upgrade() else { return };
        let ok = s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&frame)
            .is_ok();
        if !ok {
            return;
        }
    }
}

fn read_loop(mut stream: TcpStream, tx: SyncSender<PushEvent>) {
    let why = loop {
        let mut header = [0u8; HEADER_LEN];
        if let Err(e) = stream.read_exact(&mut header) {
            break format!("push connection closed: {e}");
        }
        let len = match body_len(header) {
            Ok(n) => n,
            Err(e) => break format!("bad push frame: {e}"),
        };
        let mut body = vec![0u8; len];
        if let Err(e) = stream.read_exact(&mut body) {
            break format!("push connection closed: {e}");
        }
        match PushMsg::decode(&body) {
            Ok(PushMsg::Pong) => {}
            Ok(msg) => {
                if tx.send(PushEvent::Frame(msg)).is_err() {
                    return;
                }
            }
            Err(e) => break format!("bad push frame: {e}"),
        }
    };
    let _ = tx.send(PushEvent::Closed(why));
}
