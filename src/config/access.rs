//! Who else can read the secret or change the configuration: the warnings `check-config` prints and
//! `run` logs at start. They never refuse a configuration (a host may have reasons), and they never
//! show a secret: only paths, modes, owners and groups.
//!
//! The rules:
//! - **A secret file** (`feishu.app_secret_file`, a device's `password_file`) should be readable by its owner only (0600, or 0400).
//!   One exception: read access for the group clockbridge runs as (the package's `clockbridge`
//!   group, or any group of the process that checks), so `0640 root:clockbridge` (the way the package
//!   installs the configuration) passes. Any other group or world permission is a warning.
//! - **The systemd credential** (`$CREDENTIALS_DIRECTORY/app_secret`) is not checked: systemd makes it
//!   readable by the service's user alone, in a directory only that user can enter, and on file
//!   systems with ACLs it grants that access by an ACL entry whose mask shows as the group bits
//!   (`-r--r-----+` owned by root): the mode bits would raise a false alarm.
//! - **The configuration file** should be changeable by root (or the user running clockbridge)
//!   alone: a file writable by its group or by every user, or owned by another user, lets that user
//!   point clockbridge elsewhere (another platform, another secret file).
//! - **An inline `feishu.app_secret`** is a warning: whoever can read the configuration file (or, for
//!   `CLOCKBRIDGE__FEISHU__APP_SECRET`, the service's environment, which `systemctl show` prints) has
//!   the secret.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use super::secret::SecretSource;

/// The group the package creates for the service (`packaging/debian/postinst`) and the unit runs
/// as (`Group=clockbridge` in `systemd/clockbridge.service`).
pub const SERVICE_GROUP: &str = "clockbridge";

/// The warnings about the secret and the configuration file. `file` is the configuration file when
/// it was read from disk; `origin` names the configuration in messages.
pub(super) fn warnings(
    origin: &str,
    file: Option<&Path>,
    secret: Option<&SecretSource>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = file {
        out.extend(config_file(f));
    }
    match secret {
        Some(SecretSource::Inline) => {
            let mut w = format!(
                "feishu.app_secret is written in the configuration {}: whoever can read that file has the secret; put it in a file named by feishu.app_secret_file (mode 0600) or in a systemd credential (LoadCredential=app_secret:/etc/clockbridge/app_secret) and remove app_secret",
                shown(origin)
            );
            if let Some(mode) = file.and_then(|f| std::fs::metadata(f).ok()).map(|m| m.mode()) {
                if mode & 0o004 != 0 {
                    w.push_str(&format!(
                        " (the file can be read by every user on this host: mode {:04o})",
                        mode & 0o7777
                    ));
                }
            }
            out.push(w);
        }
        Some(SecretSource::Environment) => out.push(
            "feishu.app_secret is set by CLOCKBRIDGE__FEISHU__APP_SECRET: a service's environment is shown by `systemctl show` and inherited by every process it starts; use a systemd credential (LoadCredential=app_secret:/etc/clockbridge/app_secret) or feishu.app_secret_file (mode 0600) instead"
                .to_string(),
        ),
        Some(SecretSource::File(p)) => out.extend(secret_file("feishu.app_secret_file", p)),
        // systemd makes the credential private to the service (see the module documentation)
        Some(SecretSource::Credential(_)) | None => {}
    }
    out
}

/// The warning about a secret file that others can read or change, if any; `key` names the key
/// the file is given by (`feishu.app_secret_file`, `devices[0] (id "door-hik").password_file`).
pub(super) fn secret_file(key: &str, path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    let mut who = Vec::new();
    if mode & 0o004 != 0 {
        who.push("can be read by every user on this host".to_string());
    } else if mode & 0o040 != 0 && !service_group(meta.gid()) {
        who.push(format!(
            "can be read by the members of group {}",
            group_name(meta.gid())
        ));
    }
    if mode & 0o022 != 0 {
        who.push("can be changed by users other than its owner".to_string());
    }
    if who.is_empty() {
        return None;
    }
    Some(format!(
        "{key} {} (mode {mode:04o}) {}: make it readable by its owner only (chmod 0600), or by the group clockbridge runs as (chmod 0640, chgrp {SERVICE_GROUP})",
        shown(&path.display().to_string()),
        who.join(" and ")
    ))
}

/// The warning about a configuration file that others can change, if any.
fn config_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    let mut who = Vec::new();
    if mode & 0o002 != 0 {
        who.push("can be changed by every user on this host".to_string());
    } else if mode & 0o020 != 0 {
        who.push(format!(
            "can be changed by the members of group {}",
            group_name(meta.gid())
        ));
    }
    let owner = meta.uid();
    if owner != 0 && owner != Uid::effective().as_raw() {
        who.push(format!(
            "is owned by {}, who can change it",
            user_name(owner)
        ));
    }
    if who.is_empty() {
        return None;
    }
    Some(format!(
        "config file {} (mode {mode:04o}) {}: whoever can change it can send the punches and the secret elsewhere; make it root's and writable by root only (chown root:{SERVICE_GROUP}, chmod 0640, as the package installs it)",
        shown(&path.display().to_string()),
        who.join(" and ")
    ))
}

/// Whether group `gid` may read the secret: a group of this process, or the service's group.
fn service_group(gid: u32) -> bool {
    let gid = Gid::from_raw(gid);
    let mut own = nix::unistd::getgroups().unwrap_or_default();
    own.push(Gid::effective());
    let name = Group::from_gid(gid).ok().flatten().map(|g| g.name);
    group_may_read(gid, &own, name.as_deref())
}

/// The rule of [`service_group`]: `gid` is one of `own` (the process's groups) or is named
/// [`SERVICE_GROUP`].
fn group_may_read(gid: Gid, own: &[Gid], name: Option<&str>) -> bool {
    own.contains(&gid) || name == Some(SERVICE_GROUP)
}

/// `staff` (or `1234` when the group has no name).
fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// `user alice` (or `uid 1234` when the user has no name).
fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("user {}", u.name),
        _ => format!("uid {uid}"),
    }
}

/// A path or name in double quotes, control characters escaped (a path is written by an admin, but
/// a log line must stay one line).
fn shown(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "s3cr3t-in-file\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_secret_file_others_can_read_is_a_warning_naming_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let world = file_with_mode(dir.path(), "world", 0o644);
        let w = secret_file("feishu.app_secret_file", &world).expect("a warning");
        assert!(
            w.starts_with(&format!("feishu.app_secret_file {:?} (mode 0644) can be read by every user on this host: make it readable by its owner only (chmod 0600)", world.display().to_string())),
            "{w}"
        );
        let writable = file_with_mode(dir.path(), "writable", 0o622);
        let w = secret_file("feishu.app_secret_file", &writable).expect("a warning");
        assert!(
            w.contains("(mode 0622) can be changed by users other than its owner"),
            "{w}"
        );
        for mode in [0o600, 0o400] {
            assert_eq!(
                secret_file("k", &file_with_mode(dir.path(), "own", mode)),
                None
            );
        }
        // the group of the file is the test's own group: the group the service runs as may read it
        assert_eq!(
            secret_file("k", &file_with_mode(dir.path(), "group", 0o640)),
            None
        );
        assert!(!w.contains("s3cr3t"));
    }

    #[test]
    fn a_secret_file_may_be_read_by_the_service_group_and_no_other() {
        let (own, other) = (Gid::from_raw(1001), Gid::from_raw(1002));
        // 0640 root:clockbridge, checked by root (check-config by hand) or by the service
        assert!(group_may_read(other, &[own], Some("clockbridge")));
        assert!(group_may_read(own, &[Gid::from_raw(0), own], Some("staff")));
        assert!(!group_may_read(other, &[own], Some("staff")));
        assert!(!group_may_read(other, &[own], None));
    }

    #[test]
    fn a_config_file_others_can_change_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let all = file_with_mode(dir.path(), "all.toml", 0o666);
        let w = config_file(&all).expect("a warning");
        assert!(
            w.starts_with(&format!(
                "config file {:?} (mode 0666) can be changed by every user on this host: ",
                all.display().to_string()
            )),
            "{w}"
        );
        let group = file_with_mode(dir.path(), "group.toml", 0o660);
        let w = config_file(&group).expect("a warning");
        assert!(
            w.contains("(mode 0660) can be changed by the members of group "),
            "{w}"
        );
        // as the package installs it (0640), or read-only
        for mode in [0o640, 0o644, 0o600, 0o400] {
            assert_eq!(
                config_file(&file_with_mode(dir.path(), "ok.toml", mode)),
                None
            );
        }
    }

    #[test]
    fn an_inline_secret_is_a_warning_and_a_credential_is_not_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = file_with_mode(dir.path(), "clockbridge.toml", 0o644);
        let shown = format!("{:?}", cfg.display().to_string());
        let w = warnings(
            &cfg.display().to_string(),
            Some(&cfg),
            Some(&SecretSource::Inline),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(&format!("feishu.app_secret is written in the configuration {shown}: whoever can read that file has the secret;")),
            "{w:?}"
        );
        assert!(
            w[0].ends_with("(the file can be read by every user on this host: mode 0644)"),
            "{w:?}"
        );
        let w = warnings("test", None, Some(&SecretSource::Environment));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("feishu.app_secret is set by CLOCKBRIDGE__FEISHU__APP_SECRET: "),
            "{w:?}"
        );
        // systemd's credential shows the group bits of its ACL mask: no false alarm
        let cred = file_with_mode(dir.path(), "app_secret", 0o440);
        assert!(warnings("test", None, Some(&SecretSource::Credential(cred))).is_empty());
        let private = file_with_mode(dir.path(), "secret", 0o600);
        assert!(warnings("test", None, Some(&SecretSource::File(private))).is_empty());
        assert!(warnings("test", None, None).is_empty());
    }
}
