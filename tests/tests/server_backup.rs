//! `kv-server backup FILE` against the real binary: a backup taken while the server is
//! busy writing holds every change acknowledged before it began, opens as a sound SQLite
//! database, and a server started on it (the README's restore steps) has those users and
//! channels.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_proto::{ControlReply as Rep, ControlRequest as Req};
use kv_tests::server::server_bin;
use kv_tests::ServerProcess;

/// What the writer had acknowledged: user ids and channel ids.
#[derive(Debug, Default, Clone)]
struct Acked {
    users: Vec<u64>,
    channels: Vec<u64>,
}

/// Runs `kv-server backup FILE --data-dir DIR`; panics unless it succeeds.
fn backup(data_dir: &Path, file: &Path) {
    let o = Command::new(server_bin())
        .arg("backup")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run kv-server backup");
    assert!(
        o.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_backup_during_writes_holds_every_acknowledged_change_and_restores() {
    let s = Arc::new(ServerProcess::start_with(&["--max-channels", "1024"]));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // A writer: sign-ups and channels, as fast as the server acknowledges them, bounded.
    let writer = {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let uid = s.signup();
                acked.lock().unwrap().users.push(uid);
                if i % 4 == 0 {
                    let chid = s.ok(&Req::Create { uid: s.admin_uid });
                    acked.lock().unwrap().channels.push(chid);
                }
            }
        })
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().users.len() < n {
            assert!(Instant::now() < deadline, "the writer is stuck");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(40);

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("kv-backup.sqlite3");
    // Everything acknowledged before the backup starts must be in it.
    let before = acked.lock().unwrap().clone();
    backup(&s.data_dir, &file);
    let during = acked.lock().unwrap().users.len();
    wait_for(during + 5);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        acked.lock().unwrap().users.len() > before.users.len(),
        "the server kept writing around the backup"
    );

    // The copy is a sound database holding every acknowledged change.
    let db = rusqlite::Connection::open(&file).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let ids = |sql: &str| -> HashSet<u64> {
        let mut st = db.prepare(sql).unwrap();
        let rows = st.query_map([], |r| r.get::<_, i64>(0)).unwrap();
        rows.map(|r| r.unwrap() as u64).collect()
    };
    let users = ids("SELECT id FROM users");
    let channels = ids("SELECT id FROM channels");
    for u in &before.users {
        assert!(
            users.contains(u),
            "acknowledged user {u} missing from the backup"
        );
    }
    for c in &before.channels {
        assert!(channels.contains(c), "acknowledged channel {c} missing");
    }
    assert!(users.contains(&s.admin_uid));
    drop(db);
    // A second backup to the same file is refused, the first left as it was.
    let o = Command::new(server_bin())
        .arg("backup")
        .arg(&file)
        .arg("--data-dir")
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(!o.status.success(), "a backup overwrote an existing file");

    // Restore (README): the backup as kv.sqlite3 of a data directory, with the keys.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&file, restored.path().join("kv.sqlite3")).unwrap();
    for key in ["server.key", "admin.key"] {
        std::fs::copy(s.data_dir.join(key), restored.path().join(key)).unwrap();
    }
    let r = ServerProcess::start_in(restored.path(), &[]);
    assert_eq!(r.admin_uid, s.admin_uid, "the same admin");
    assert_eq!(r.public_key(), s.public_key(), "the same server key");
    for &u in &before.users {
        assert!(
            matches!(r.request(&Req::UserInfo { uid: u }), Rep::UserInfo { .. }),
            "user {u} not restored"
        );
    }
    let listed: HashSet<u64> = match r.request(&Req::GetChannels) {
        Rep::Channels(ids) => ids.into_iter().collect(),
        other => panic!("GET_CHANNELS -> {other:?}"),
    };
    for c in &before.channels {
        assert!(listed.contains(c), "channel {c} not restored");
        assert!(r.ok(&Req::GetPort { chid: *c }) > 0, "channel {c} not open");
    }
}
