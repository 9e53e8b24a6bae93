//! `kv admin …`: moderation, acting as a perm_admin holder (usually
//! `--identity DATA_DIR/admin.key`, the server's admin). Every request is signed.
//!
//! Output (scripts rely on it): `ban` prints the ban's id; `bans` one ban per line,
//! `ID TARGET EXPIRES REASON` (`EXPIRES` in unix ms, `never` for 0); `users` one user per
//! line, `UID PERMS NAME` (perms in hex).

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use kv_proto::{BanTarget, Perms};

use super::Target;

/// `kv admin`'s commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List users: `UID PERMS NAME` per line.
    Users,
    /// Set a user's permission bits (decimal or 0x-hex).
    Perms {
        /// The user.
        uid: u64,
        /// The new bits.
        bits: String,
    },
    /// Ban a user (`user UID`) or an address prefix (`net ADDR/LEN`); prints the ban id.
    Ban {
        /// `user` or `net`.
        kind: String,
        /// A uid, or an address prefix such as 203.0.113.0/24 or 2001:db8::/48.
        target: String,
        /// Why (shown by `kv admin bans`).
        #[arg(long, default_value = "")]
        reason: String,
        /// For how many seconds [default: until lifted].
        #[arg(long = "for", value_name = "SECS", default_value_t = 0)]
        secs: u64,
    },
    /// Lift a ban.
    Unban {
        /// The ban's id.
        id: u64,
    },
    /// List the bans in force: `ID TARGET EXPIRES REASON` per line.
    Bans,
    /// Remove a user from a channel (they get KICK); needs perm_kick_user.
    Kick {
        /// The user.
        uid: u64,
        /// The channel.
        chid: u64,
    },
}

/// `ADDR/LEN` (IPv4 or IPv6); a bare address is the whole address (/32, /128).
fn parse_net(s: &str) -> Result<BanTarget> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("{s:?} is not an address"))?;
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        Some(l) => l
            .parse()
            .with_context(|| format!("bad prefix length in {s:?}"))?,
        None => full,
    };
    BanTarget::net(addr, len).with_context(|| format!("prefix length must be 1 to {full}"))
}

fn parse_bits(s: &str) -> Result<Perms> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    Ok(Perms(v.with_context(|| format!("{s:?} is not a number"))?))
}

/// Runs one admin command.
pub fn run(ctx: &Target, cmd: AdminCommand) -> Result<()> {
    let me = ctx.acting()?;
    let (auid, control) = (me.uid, me.client(&ctx.control));
    match cmd {
        AdminCommand::Users => {
            let mut after = 0;
            loop {
                let page = control.list_users(auid, after)?;
                for u in &page.users {
                    println!("{} {:#x} {}", u.id, u.perms, u.name);
                }
                if page.next == 0 {
                    break;
                }
                after = page.next;
            }
        }
        AdminCommand::Perms { uid, bits } => control.set_perms(auid, uid, parse_bits(&bits)?)?,
        AdminCommand::Ban {
            kind,
            target,
            reason,
            secs,
        } => {
            let target = match kind.as_str() {
                "user" => BanTarget::User(target.parse().context("a uid")?),
                "net" => parse_net(&target)?,
                other => bail!("ban what? `user UID` or `net ADDR/LEN`, not {other:?}"),
            };
            println!("{}", control.ban(auid, target, secs, &reason)?);
        }
        AdminCommand::Unban { id } => control.unban(auid, id)?,
        AdminCommand::Bans => {
            let mut after = 0;
            loop {
                let page = control.list_bans(auid, after)?;
                for b in &page.bans {
                    let expires = match b.expires_unix_ms {
                        0 => "never".to_owned(),
                        t => t.to_string(),
                    };
                    let target = match b.target {
                        BanTarget::User(uid) => format!("user:{uid}"),
                        t => format!("net:{t}"),
                    };
                    println!("{} {target} {expires} {}", b.id, b.reason);
                }
                if page.next == 0 {
                    break;
                }
                after = page.next;
            }
        }
        AdminCommand::Kick { uid, chid } => control.leave(auid, uid, chid)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_bits() {
        assert_eq!(
            parse_net("10.1.2.0/24").unwrap(),
            BanTarget::net("10.1.2.0".parse().unwrap(), 24).unwrap()
        );
        assert_eq!(
            parse_net("2001:db8::1").unwrap(),
            BanTarget::net("2001:db8::1".parse().unwrap(), 128).unwrap()
        );
        assert!(parse_net("10.0.0.0/0").is_err());
        assert!(parse_net("10.0.0.0/40").is_err());
        assert!(parse_net("nowhere/8").is_err());
        assert_eq!(parse_bits("0x28").unwrap(), Perms(0x28));
        assert_eq!(parse_bits("8").unwrap(), Perms(8));
    }
}
