//! The SQLite [`Store`]: one file in the data directory, WAL journal, `synchronous=FULL`.
//!
//! Ids are `u64` on the wire and `INTEGER` (i64) in SQLite; they are stored bit for bit
//! (`as i64` / `as u64`), which keeps them unique and round-trips every value.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{ChannelRecord, Store, StoreError, StoreResult, UserRecord};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "kv.sqlite3";

/// Schema version in `PRAGMA user_version`; bumped with every schema change.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id    INTEGER PRIMARY KEY,
    perms INTEGER NOT NULL,
    name  TEXT NOT NULL DEFAULT '',
    key   BLOB
);
CREATE TABLE IF NOT EXISTS channels (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    INTEGER NOT NULL UNIQUE,
    owner INTEGER NOT NULL,
    name  TEXT NOT NULL DEFAULT '',
    port  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS channels_by_owner ON channels (owner);
-- Channels created with CREATE_ENCRYPTED (a table of its own: older databases gain it
-- without a migration, and a channel's row in `channels` keeps the seed's columns).
CREATE TABLE IF NOT EXISTS encrypted_channels (
    id    INTEGER PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS bans (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    uid     INTEGER NOT NULL,
    prefix  INTEGER NOT NULL,
    addr    BLOB NOT NULL,
    expires INTEGER NOT NULL,
    reason  TEXT NOT NULL DEFAULT ''
);
";

/// Version 1 had no user keys.
const MIGRATE_1_TO_2: &str = "ALTER TABLE users ADD COLUMN key BLOB;";

/// Users and channels in SQLite.
#[derive(Debug)]
pub struct SqliteStore {
    /// The only connection; callers serialize access (the server keeps it behind a mutex).
    conn: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the database in `dir`. The file (and so its `-wal` and `-shm`
    /// files, which SQLite creates with the database's mode) is readable by the owner only.
    pub fn open_in(dir: &Path) -> StoreResult<Self> {
        let path = dir.join(DB_FILE);
        crate::files::create_private(&path)
            .map_err(|_| StoreError::Corrupt("cannot create the database file"))?;
        let store = Self::init(Connection::open(&path)?)?;
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.join(format!("{DB_FILE}{suffix}"));
            crate::files::make_private(&p);
        }
        Ok(store)
    }

    /// A throwaway database, for tests.
    pub fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        // WAL: readers never block the writer and a commit is one append. FULL: the WAL is
        // fsynced at each commit, so a reply sent after a commit survives power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt("database is from a newer kv-server"));
        }
        if version == 1 {
            conn.execute_batch(MIGRATE_1_TO_2)?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self { conn })
    }

    /// Closes the database, checkpointing the WAL, and reports any error doing so.
    pub fn close(self) -> StoreResult<()> {
        self.conn.close().map_err(|(_, e)| StoreError::Sqlite(e))
    }
}

fn to_key(v: Option<Vec<u8>>) -> StoreResult<Option<[u8; 32]>> {
    v.map(|b| {
        <[u8; 32]>::try_from(b.as_slice())
            .map_err(|_| StoreError::Corrupt("user key is not 32 bytes"))
    })
    .transpose()
}

fn to_port(v: i64) -> StoreResult<u16> {
    u16::try_from(v).map_err(|_| StoreError::Corrupt("channel port out of range"))
}

/// A ban's target as stored: `uid` (0 for an address ban), `prefix` (0 for a user ban),
/// 16 address bytes.
fn to_target(uid: i64, prefix: i64, addr: &[u8]) -> StoreResult<kv_proto::BanTarget> {
    let octets = <[u8; 16]>::try_from(addr).map_err(|_| StoreError::Corrupt("ban address"))?;
    match (uid, prefix) {
        (0, 1..=128) => Ok(kv_proto::BanTarget::Net {
            addr: octets.into(),
            prefix: prefix as u8,
        }),
        (uid, 0) if uid != 0 => Ok(kv_proto::BanTarget::User(uid as u64)),
        _ => Err(StoreError::Corrupt("ban target")),
    }
}

impl Store for SqliteStore {
    fn set_user_perms(&mut self, id: u64, perms: u64) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE users SET perms = ?2 WHERE id = ?1",
            params![id as i64, perms as i64],
        )?;
        Ok(n == 1)
    }

    fn users_after(&self, after: u64, limit: usize) -> StoreResult<Vec<UserRecord>> {
        // Ids are stored as i64. Unsigned order is the non-negative ones, then the
        // negative ones (ids of 2^63 and up), each ascending.
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, perms, name, key FROM users \
             WHERE (id < 0) > ?1 OR ((id < 0) = ?1 AND id > ?2) \
             ORDER BY (id < 0), id LIMIT ?3",
        )?;
        let high = after >= 1 << 63;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![high, after as i64, limit], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, String>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, perms, name, key) = row?;
            out.push(UserRecord {
                id,
                perms,
                name,
                key: to_key(key)?,
            });
        }
        Ok(out)
    }

    fn bans(&self) -> StoreResult<Vec<kv_proto::BanEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, uid, prefix, addr, expires, reason FROM bans ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, uid, prefix, addr, expires, reason) = row?;
            out.push(kv_proto::BanEntry {
                id: id as u64,
                target: to_target(uid, prefix, &addr)?,
                expires_unix_ms: expires as u64,
                reason,
            });
        }
        Ok(out)
    }

    fn insert_ban(&mut self, ban: &kv_proto::BanEntry) -> StoreResult<u64> {
        let (uid, prefix, addr) = match ban.target {
            kv_proto::BanTarget::User(uid) => (uid as i64, 0i64, [0u8; 16]),
            kv_proto::BanTarget::Net { addr, prefix } => (0, i64::from(prefix), addr.octets()),
        };
        self.conn.execute(
            "INSERT INTO bans (uid, prefix, addr, expires, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                uid,
                prefix,
                addr.to_vec(),
                ban.expires_unix_ms as i64,
                ban.reason
            ],
        )?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    fn delete_ban(&mut self, id: u64) -> StoreResult<bool> {
        let n = self
            .conn
            .execute("DELETE FROM bans WHERE id = ?1", params![id as i64])?;
        Ok(n == 1)
    }

    fn user(&self, id: u64) -> StoreResult<Option<UserRecord>> {
        self.conn
            .query_row(
                "SELECT perms, name, key FROM users WHERE id = ?1",
                params![id as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(perms, name, key)| {
                Ok::<_, StoreError>(UserRecord {
                    id,
                    perms,
                    name,
                    key: to_key(key)?,
                })
            })
            .transpose()
    }

    fn insert_user(&mut self, user: &UserRecord) -> StoreResult<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO users (id, perms, name, key) VALUES (?1, ?2, ?3, ?4)",
            params![
                user.id as i64,
                user.perms as i64,
                user.name,
                user.key.map(|k| k.to_vec())
            ],
        )?;
        Ok(n == 1)
    }

    fn delete_user(&mut self, id: u64) -> StoreResult<bool> {
        let n = self
            .conn
            .execute("DELETE FROM users WHERE id = ?1", params![id as i64])?;
        Ok(n == 1)
    }

    fn set_user_name(&mut self, id: u64, name: &str) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE users SET name = ?2 WHERE id = ?1",
            params![id as i64, name],
        )?;
        Ok(n == 1)
    }

    fn set_user_key(&mut self, id: u64, key: &[u8; 32]) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE users SET key = ?2 WHERE id = ?1",
            params![id as i64, key.to_vec()],
        )?;
        Ok(n == 1)
    }

    fn user_names(&self, ids: &[u64]) -> StoreResult<Vec<String>> {
        // One prepared statement, cached by rusqlite, stepped per id inside one read
        // transaction: no per-call parse and no SQL text built from input.
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM users WHERE id = ?1")?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            out.push(
                stmt.query_row(params![id as i64], |r| r.get::<_, String>(0))
                    .optional()?
                    .unwrap_or_default(),
            );
        }
        Ok(out)
    }

    fn channels_owned(&self, owner: u64) -> StoreResult<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM channels WHERE owner = ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![owner as i64], |r| r.get::<_, i64>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row? as u64);
        }
        Ok(out)
    }

    fn channel(&self, id: u64) -> StoreResult<Option<ChannelRecord>> {
        let row = self
            .conn
            .query_row(
                "SELECT owner, name, port FROM channels WHERE id = ?1",
                params![id as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(owner, name, port)| {
            Ok(ChannelRecord {
                id,
                owner,
                name,
                port: to_port(port)?,
            })
        })
        .transpose()
    }

    fn channels_after(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, ChannelRecord)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, owner, name, port FROM channels WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        // A cursor beyond i64 (never handed out) lists nothing.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, id, owner, name, port) = row?;
            let record = ChannelRecord {
                id,
                owner,
                name,
                port: to_port(port)?,
            };
            out.push((seq, record));
        }
        Ok(out)
    }

    fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, owner, name, port FROM channels ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, owner, name, port) = row?;
            out.push(ChannelRecord {
                id,
                owner,
                name,
                port: to_port(port)?,
            });
        }
        Ok(out)
    }

    fn insert_channel(&mut self, ch: &ChannelRecord) -> StoreResult<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO channels (id, owner, name, port) VALUES (?1, ?2, ?3, ?4)",
            params![ch.id as i64, ch.owner as i64, ch.name, i64::from(ch.port)],
        )?;
        Ok(n == 1)
    }

    fn delete_channel(&mut self, id: u64) -> StoreResult<bool> {
        let n = self
            .conn
            .execute("DELETE FROM channels WHERE id = ?1", params![id as i64])?;
        self.conn.execute(
            "DELETE FROM encrypted_channels WHERE id = ?1",
            params![id as i64],
        )?;
        Ok(n == 1)
    }

    fn set_channel_encrypted(&mut self, id: u64) -> StoreResult<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO encrypted_channels (id) VALUES (?1)",
            params![id as i64],
        )?;
        Ok(())
    }

    fn channel_encrypted(&self, id: u64) -> StoreResult<bool> {
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM encrypted_channels WHERE id = ?1")?
            .query_row(params![id as i64], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    fn set_channel_name(&mut self, id: u64, name: &str) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE channels SET name = ?2 WHERE id = ?1",
            params![id as i64, name],
        )?;
        Ok(n == 1)
    }

    fn set_channel_port(&mut self, id: u64, port: u16) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE channels SET port = ?2 WHERE id = ?1",
            params![id as i64, i64::from(port)],
        )?;
        Ok(n == 1)
    }

    fn admin_id(&self) -> StoreResult<Option<u64>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'admin'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|v| v as u64))
    }

    fn set_admin_id(&mut self, id: u64) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('admin', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![id as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64) -> UserRecord {
        UserRecord {
            id,
            perms: 8,
            name: String::new(),
            key: None,
        }
    }

    fn chan(id: u64, port: u16) -> ChannelRecord {
        ChannelRecord {
            id,
            owner: 7,
            name: String::new(),
            port,
        }
    }

    #[test]
    fn channel_pages_follow_creation_order_across_deletions() {
        let mut s = SqliteStore::open_in_memory().unwrap();
        // Ids out of order (and one above i64::MAX): pages follow creation, not ids.
        let ids: Vec<u64> = (0..10u64).map(|i| (i * 7919 + 3) % 97 + 1).collect();
        let ids: Vec<u64> = ids.into_iter().chain([u64::MAX - 1]).collect();
        for &id in &ids {
            assert!(s.insert_channel(&chan(id, 0)).unwrap());
        }
        let first = s.channels_after(0, 4).unwrap();
        let got: Vec<u64> = first.iter().map(|(_, c)| c.id).collect();
        assert_eq!(got, ids[..4]);
        // Deleting the page's last channel and the next one skips nothing after them.
        let cursor = first.last().unwrap().0;
        assert!(s.delete_channel(ids[3]).unwrap());
        assert!(s.delete_channel(ids[4]).unwrap());
        let rest: Vec<u64> = s
            .channels_after(cursor, 100)
            .unwrap()
            .iter()
            .map(|(_, c)| c.id)
            .collect();
        assert_eq!(rest, ids[5..]);
        assert!(s.channels_after(u64::MAX, 100).unwrap().is_empty());
        assert!(s.channels_after(0, 0).unwrap().is_empty());
    }

    #[test]
    fn users_insert_get_rename_delete() {
        let mut s = SqliteStore::open_in_memory().unwrap();
        // Ids above i64::MAX must round-trip through SQLite's signed integers.
        let big = 0xFFFF_FFFE_0000_0001;
        assert!(s.insert_user(&user(big)).unwrap());
        assert!(!s.insert_user(&user(big)).unwrap(), "duplicate id refused");
        assert_eq!(s.user(big).unwrap(), Some(user(big)));
        assert!(s.set_user_name(big, "zoë").unwrap());
        assert_eq!(s.user(big).unwrap().unwrap().name, "zoë");
        assert!(!s.set_user_name(5, "x").unwrap());
        assert!(s.set_user_key(big, &[7; 32]).unwrap());
        assert_eq!(s.user(big).unwrap().unwrap().key, Some([7; 32]));
        assert_eq!(s.user_names(&[5, big]).unwrap(), ["", "zoë"]);
        assert!(s.delete_user(big).unwrap());
        assert!(!s.delete_user(big).unwrap());
        assert_eq!(s.user(big).unwrap(), None);
    }

    #[test]
    fn channels_keep_creation_order_and_ports() {
        let mut s = SqliteStore::open_in_memory().unwrap();
        for (id, port) in [(30, 4000), (10, 4001), (u64::MAX - 5, 4002)] {
            assert!(s.insert_channel(&chan(id, port)).unwrap());
        }
        assert!(!s.insert_channel(&chan(10, 1)).unwrap());
        let ids: Vec<u64> = s.channels().unwrap().iter().map(|c| c.id).collect();
        assert_eq!(ids, [30, 10, u64::MAX - 5]);
        assert!(s.set_channel_port(10, 5000).unwrap());
        assert!(s.set_channel_name(10, "lobby").unwrap());
        let c = s.channel(10).unwrap().unwrap();
        assert_eq!((c.port, c.name.as_str(), c.owner), (5000, "lobby", 7));
        assert!(s.delete_channel(30).unwrap());
        assert_eq!(s.channel(30).unwrap(), None);
        assert_eq!(s.channels().unwrap().len(), 2);
        assert_eq!(s.channels_owned(7).unwrap(), [10, u64::MAX - 5]);
        assert_eq!(s.channels_owned(8).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn version_1_database_gains_keys_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, perms INTEGER NOT NULL, name TEXT NOT NULL DEFAULT '');
                 INSERT INTO users (id, perms, name) VALUES (42, 8, 'old');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut s = SqliteStore::open_in(dir.path()).unwrap();
        assert_eq!(s.user(42).unwrap().unwrap().key, None);
        assert!(s.set_user_key(42, &[1; 32]).unwrap());
        s.close().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SqliteStore::open_in(dir.path()).unwrap();
            s.insert_user(&user(42)).unwrap();
            s.insert_channel(&chan(9, 1234)).unwrap();
            s.set_admin_id(42).unwrap();
            s.close().unwrap();
        }
        let s = SqliteStore::open_in(dir.path()).unwrap();
        assert_eq!(s.user(42).unwrap(), Some(user(42)));
        assert_eq!(s.channel(9).unwrap(), Some(chan(9, 1234)));
        assert_eq!(s.admin_id().unwrap(), Some(42));
    }
}
