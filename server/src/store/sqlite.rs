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
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id    INTEGER PRIMARY KEY,
    perms INTEGER NOT NULL,
    name  TEXT NOT NULL DEFAULT ''
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
";

/// Users and channels in SQLite.
#[derive(Debug)]
pub struct SqliteStore {
    /// The only connection; callers serialize access (the server keeps it behind a mutex).
    conn: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open_in(dir: &Path) -> StoreResult<Self> {
        Self::init(Connection::open(dir.join(DB_FILE))?)
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
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self { conn })
    }

    /// Closes the database, checkpointing the WAL, and reports any error doing so.
    pub fn close(self) -> StoreResult<()> {
        self.conn.close().map_err(|(_, e)| StoreError::Sqlite(e))
    }
}

fn to_port(v: i64) -> StoreResult<u16> {
    u16::try_from(v).map_err(|_| StoreError::Corrupt("channel port out of range"))
}

impl Store for SqliteStore {
    fn user(&self, id: u64) -> StoreResult<Option<UserRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT perms, name FROM users WHERE id = ?1",
                params![id as i64],
                |r| {
                    Ok(UserRecord {
                        id,
                        perms: r.get::<_, i64>(0)? as u64,
                        name: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    fn insert_user(&mut self, user: &UserRecord) -> StoreResult<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO users (id, perms, name) VALUES (?1, ?2, ?3)",
            params![user.id as i64, user.perms as i64, user.name],
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
        Ok(n == 1)
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
