//! The stop signal every long-running task listens to.
//!
//! A `watch` channel rather than mini-redis's `broadcast`: a task started after the signal
//! (a channel created by a request that was already running) still sees it, because a watch
//! keeps its current value.

use tokio::sync::watch;

/// Sends the stop signal; held by the server.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Receives the stop signal; each task owns one.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Tells every listener to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A new listener, for tasks started later.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// True once the signal was sent.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits for the signal (returns at once if it was already sent). Also returns if the
    /// trigger is dropped, which only happens when the server is gone.
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
