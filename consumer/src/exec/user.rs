//! The user and group programs run as (`--exec-user USER[:GROUP]`).

use std::fmt;
use std::str::FromStr;

/// The account programs run as: a uid and a gid, with no supplementary
/// groups.
///
/// Parsed from `USER[:GROUP]`, each a name or a numeric id. Names are
/// looked up in `/etc/passwd` and `/etc/group` (the files, not NSS: an
/// LDAP or systemd-homed user needs its numeric id). Without `GROUP` the
/// user's primary group from `/etc/passwd` is used; a numeric user that
/// `/etc/passwd` does not know gets the group of the same number (as the
/// numeric `USER 65532` of a container image does).
///
/// # Examples
///
/// ```
/// use celeriac_consumer::exec::ExecUser;
///
/// let user: ExecUser = "1000:2000".parse().unwrap();
/// assert_eq!((user.uid(), user.gid()), (1000, 2000));
/// let root: ExecUser = "root".parse().unwrap();
/// assert_eq!((root.uid(), root.gid()), (0, 0));
/// assert!("no-such-user-here".parse::<ExecUser>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    spec: String,
    uid: u32,
    gid: u32,
}

impl ExecUser {
    /// A user given by ids, with no lookup.
    pub fn from_ids(uid: u32, gid: u32) -> ExecUser {
        ExecUser {
            spec: format!("{uid}:{gid}"),
            uid,
            gid,
        }
    }

    /// The user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Resolves `USER[:GROUP]` against the contents of a passwd and a
    /// group file.
    fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
        let (user, group_name) = match spec.split_once(':') {
            Some((user, group)) => (user.trim(), Some(group.trim())),
            None => (spec.trim(), None),
        };
        if user.is_empty() || group_name == Some("") {
            return Err(format!("`{spec}` is not USER[:GROUP]"));
        }
        let entry = find(passwd, user, 2);
        let uid = match (&entry, user.parse::<u32>()) {
            (Some(fields), _) => field_id(fields, 2, spec)?,
            (None, Ok(uid)) => uid,
            (None, Err(_)) => {
                return Err(format!("user `{user}` does not exist (not in /etc/passwd)"));
            }
        };
        let gid = match group_name {
            Some(name) => match (find(group, name, 2), name.parse::<u32>()) {
                (Some(fields), _) => field_id(&fields, 2, spec)?,
                (None, Ok(gid)) => gid,
                (None, Err(_)) => {
                    return Err(format!("group `{name}` does not exist (not in /etc/group)"));
                }
            },
            None => match &entry {
                Some(fields) => field_id(fields, 3, spec)?,
                None => uid,
            },
        };
        Ok(ExecUser {
            spec: spec.trim().to_owned(),
            uid,
            gid,
        })
    }
}

/// The fields of the line of a passwd or group file whose name, or whose
/// id (field `id_field`) when `key` is numeric, is `key`.
fn find(file: &str, key: &str, id_field: usize) -> Option<Vec<String>> {
    let by_id = key.parse::<u32>().is_ok();
    file.lines()
        .map(|line| line.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|fields| {
            let column = if by_id { id_field } else { 0 };
            fields.len() > 3 && fields[column] == key
        })
}

fn field_id(fields: &[String], index: usize, spec: &str) -> Result<u32, String> {
    fields
        .get(index)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("`{spec}`: the account database has an invalid id"))
}

impl FromStr for ExecUser {
    type Err = String;

    /// Looks `USER[:GROUP]` up in `/etc/passwd` and `/etc/group`.
    fn from_str(spec: &str) -> Result<ExecUser, String> {
        let read = |path: &str| {
            std::fs::read_to_string(path).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(String::new()),
                _ => Err(format!("cannot read {path}: {e}")),
            })
        };
        ExecUser::resolve(spec, &read("/etc/passwd")?, &read("/etc/group")?)
    }
}

impl fmt::Display for ExecUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.spec, self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        app:x:1001:1002::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1002:\n";

    fn resolve(spec: &str) -> Result<(u32, u32), String> {
        ExecUser::resolve(spec, PASSWD, GROUP).map(|u| (u.uid, u.gid))
    }

    #[test]
    fn names_and_ids_resolve() {
        assert_eq!(resolve("nobody"), Ok((65534, 65534)));
        assert_eq!(resolve("app"), Ok((1001, 1002)));
        assert_eq!(resolve("app:staff"), Ok((1001, 50)));
        assert_eq!(resolve("app:7"), Ok((1001, 7)));
        assert_eq!(
            resolve("1001"),
            Ok((1001, 1002)),
            "a known uid keeps its group"
        );
        assert_eq!(resolve("65532"), Ok((65532, 65532)));
        assert_eq!(resolve("65532:65533"), Ok((65532, 65533)));
    }

    #[test]
    fn unknown_names_and_bad_specs_are_errors() {
        assert!(resolve("ghost").unwrap_err().contains("does not exist"));
        assert!(resolve("app:ghosts")
            .unwrap_err()
            .contains("does not exist"));
        for spec in ["", ":", "app:", ":staff"] {
            assert!(resolve(spec).is_err(), "{spec:?}");
        }
    }
}
