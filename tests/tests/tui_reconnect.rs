//! `kv-tui` survives a server restart: the real app state and backend (the parts
//! of `kv-tui` below the terminal) against an in-process `kv-server` that is stopped and
//! started again on the same port and data. The client must notice, back off, reconnect
//! and rejoin its channel on its own.

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kv_client::control::ControlClient;
use kv_client::embedded_server::EmbeddedServer;
use kv_client::tui::action::{Command, Intent};
use kv_client::tui::backend::{Backend, Identity};
use kv_client::tui::inbox::{inbox, InboxReceiver, Message};
use kv_client::tui::model::{App, Connection};

/// The event loop minus the terminal: events in, `update`, commands out to the backend.
struct Headless {
    app: App,
    inbox: InboxReceiver,
    commands: SyncSender<Command>,
}

impl Headless {
    /// Starts the backend (voice sessions without sound devices) for an app on `server`.
    fn start(server: String, control: ControlClient, identity: Identity) -> (Self, JoinHandle<()>) {
        let (sink, inbox_rx) = inbox();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::sync_channel(64);
        let (done_tx, _done_rx) = std::sync::mpsc::sync_channel(1);
        let worker = Backend::new(control, identity, sink)
            .without_devices()
            .spawn(cmd_rx, done_tx)
            .expect("backend thread");
        let h = Headless {
            app: App::new(server),
            inbox: inbox_rx,
            commands: cmd_tx,
        };
        (h, worker)
    }

    /// Tells the worker to quit (it leaves the channel) and waits for it.
    fn quit(self, worker: JoinHandle<()>) {
        self.commands.send(Command::Quit).expect("worker alive");
        worker.join().expect("worker thread");
    }

    fn pump_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.app) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("timed out waiting for {what}: {:#?}", self.app));
            let Some(batch) = self.inbox.batch(left) else {
                panic!("the backend stopped while waiting for {what}");
            };
            for msg in batch {
                let Message::Event(e) = msg else { continue };
                for cmd in self.app.update(e) {
                    if !matches!(cmd, Command::SaveSettings | Command::Quit) {
                        self.commands.send(cmd).expect("worker alive");
                    }
                }
            }
        }
    }

    fn send(&mut self, a: Intent) {
        for cmd in self.app.update(a) {
            self.commands.send(cmd).expect("worker alive");
        }
    }
}

fn members(addr: SocketAddr, chid: u64) -> Vec<u64> {
    let c = ControlClient::new(&addr.to_string()).expect("address");
    c.channel_info(chid)
        .expect("CHANNEL_INFO")
        .members
        .into_iter()
        .map(|m| m.0)
        .collect()
}

/// The members of `chid` once they are `want`: CHANNEL_INFO lists bound members, and a
/// client binds a round trip after its JOIN (an answer may also be cached for 250 ms).
fn members_become(addr: SocketAddr, chid: u64, want: &[u64]) -> Vec<u64> {
    let start = std::time::Instant::now();
    loop {
        let m = members(addr, chid);
        if m == want || start.elapsed() > Duration::from_secs(3) {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reconnects_and_rejoins_after_a_server_restart() {
    let data = tempfile::tempdir().expect("data dir");
    // A fixed port, so the restarted server is where the client looks.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let server = EmbeddedServer::start(listen, data.path().to_path_buf()).expect("server");
    let control = ControlClient::new(&listen.to_string())
        .expect("address")
        .with_timeout(Duration::from_millis(500));
    // The embedded server takes signed requests only: a keyed user, and the admin's key.
    let me = kv_client::identity::keyed_user(&control).expect("sign up");
    let uid = me.uid;
    me.client(&control)
        .set_user_name(uid, uid, "dora")
        .expect("name");
    let admin = kv_client::identity::Acting::from_file(&data.path().join("admin.key"))
        .expect("admin key")
        .client(&control);
    let chid = admin.create(server.admin_uid()).expect("create");
    admin
        .set_channel_name(server.admin_uid(), chid, "room")
        .expect("name channel");

    let (mut h, worker) =
        Headless::start(listen.to_string(), control, Identity::Fixed(Box::new(me)));

    h.pump_until("connected with channels", Duration::from_secs(10), |a| {
        a.connection == Connection::Connected && !a.channels.is_empty()
    });
    assert_eq!(h.app.display_name, "dora");
    h.send(Intent::JoinSelected);
    h.pump_until("joined", Duration::from_secs(10), |a| {
        a.joined == Some(chid) && !a.members.is_empty()
    });
    assert_eq!(members_become(listen, chid, &[uid]), vec![uid]);

    // The server goes away: the client notices and starts backing off.
    server.stop();
    h.pump_until("reconnecting", Duration::from_secs(10), |a| {
        matches!(a.connection, Connection::Reconnecting { .. })
    });
    assert_eq!(h.app.joined, None);
    assert_eq!(h.app.rejoin, Some(chid), "remembers where it was");

    // Back on the same port and data: reconnected and in the channel again, unaided.
    let server = EmbeddedServer::start(listen, data.path().to_path_buf()).expect("restart");
    h.pump_until("rejoined", Duration::from_secs(15), |a| {
        a.connection == Connection::Connected && a.joined == Some(chid)
    });
    assert_eq!(h.app.notice.as_deref(), Some("joined room"));
    assert_eq!(members_become(listen, chid, &[uid]), vec![uid]);

    h.quit(worker);
    assert!(members_become(listen, chid, &[]).is_empty(), "left on quit");
    server.stop();
}

#[test]
fn a_server_that_forgot_us_gets_a_fresh_sign_up() {
    let data = tempfile::tempdir().expect("data dir");
    let server = EmbeddedServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        data.path().to_path_buf(),
    )
    .expect("server");
    let addr = server.addr().to_string();
    let config = tempfile::tempdir().expect("config dir");
    let store = kv_client::identity::IdentityStore::at(config.path());
    // A uid from another life of this server (its data was reset since).
    store.set(&addr, 12345).expect("store");

    let control = ControlClient::new(&addr).expect("address");
    let (mut h, worker) = Headless::start(addr.clone(), control, Identity::Stored(store.clone()));
    h.pump_until("connected", Duration::from_secs(10), |a| {
        a.connection == Connection::Connected
    });
    assert_ne!(h.app.uid, 12345);
    assert_eq!(store.get(&addr).expect("store"), Some(h.app.uid));
    h.quit(worker);
}
