//! Secrets given as a value or as a file: `--amqp-addr` or
//! `--amqp-addr-file`, `--redis-url` or `--redis-url-file` (and their
//! variables `AMQP_ADDR`, `AMQP_ADDR_FILE`, ...), for `celeriac-worker`
//! and `celeriac` alike.
//!
//! A file keeps a secret out of the process's environment block and
//! command line: `/proc/<pid>/cmdline` is readable by every process, and
//! `/proc/<pid>/environ` by every process of the same uid (unless the
//! process is non-dumpable), and both show the values the process started
//! with, whatever it does afterwards. A mounted Kubernetes or Docker
//! secret is such a file.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The flag and variable names of one secret, for messages.
#[derive(Debug, Clone, Copy)]
pub struct SecretNames {
    /// The flag of the value, e.g. `--amqp-addr`.
    pub flag: &'static str,
    /// Its variable, e.g. `AMQP_ADDR`.
    pub env: &'static str,
}

/// The broker URL's names.
pub const AMQP_ADDR: SecretNames = SecretNames {
    flag: "--amqp-addr",
    env: "AMQP_ADDR",
};

/// The Redis URL's names.
pub const REDIS_URL: SecretNames = SecretNames {
    flag: "--redis-url",
    env: "REDIS_URL",
};

/// The secret from its value or its file, whichever was given: `None`
/// when neither was. The file's content is taken whole, less trailing line
/// breaks (`\n` or `\r\n`, as editors and `echo` leave them).
///
/// # Examples
///
/// ```
/// use celeriac_consumer::secrets::{resolve, AMQP_ADDR};
///
/// let path = std::env::temp_dir().join(format!("celeriac-doc-secret-{}", std::process::id()));
/// std::fs::write(&path, "amqp://user:secret@broker:5672/%2f\n").unwrap();
/// let url = resolve(AMQP_ADDR, None, Some(&path)).unwrap();
/// assert_eq!(url.as_deref(), Some("amqp://user:secret@broker:5672/%2f"));
/// assert_eq!(resolve(AMQP_ADDR, Some("amqp://x".into()), None).unwrap().as_deref(), Some("amqp://x"));
/// assert!(resolve(AMQP_ADDR, Some("amqp://x".into()), Some(&path)).is_err());
/// std::fs::remove_file(&path).unwrap();
/// ```
///
/// # Errors
///
/// [`Error::Config`] when both are given, or the file is empty;
/// [`Error::SecretFile`] when it cannot be read.
pub fn resolve(
    names: SecretNames,
    value: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, Error> {
    match (value, file) {
        (Some(_), Some(_)) => Err(Error::Config(format!(
            "give {flag} ({env}) or {flag}-file ({env}_FILE), not both",
            flag = names.flag,
            env = names.env
        ))),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read(names, path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read(names: SecretNames, path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
        flag: names.flag,
        path: PathBuf::from(path),
        source,
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(Error::Config(format!(
            "{}-file {}: the file is empty",
            names.flag,
            path.display()
        )));
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn file(content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "celeriac-secret-test-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn only_trailing_line_breaks_are_trimmed() {
        for (content, expected) in [
            ("redis://:pw@h:6379\n", "redis://:pw@h:6379"),
            ("redis://:pw@h:6379\r\n", "redis://:pw@h:6379"),
            ("redis://:pw@h:6379", "redis://:pw@h:6379"),
            (" redis://:pw \n\n", " redis://:pw "),
        ] {
            let path = file(content);
            let got = resolve(REDIS_URL, None, Some(&path)).unwrap();
            assert_eq!(got.as_deref(), Some(expected), "{content:?}");
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn a_value_and_a_file_conflict_and_neither_is_none() {
        let path = file("redis://h\n");
        let err = resolve(REDIS_URL, Some("redis://x".into()), Some(&path)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("--redis-url-file (REDIS_URL_FILE)"),
            "{message}"
        );
        assert!(
            !message.contains("redis://"),
            "no value in the message: {message}"
        );
        assert_eq!(resolve(REDIS_URL, None, None).unwrap(), None);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_missing_or_empty_file_is_an_error() {
        let missing = std::env::temp_dir().join("celeriac-no-such-secret-file");
        let err = resolve(AMQP_ADDR, None, Some(&missing)).unwrap_err();
        assert!(matches!(err, Error::SecretFile { .. }), "{err}");
        assert!(err.to_string().contains("--amqp-addr-file"), "{err}");
        let empty = file("\n");
        let err = resolve(AMQP_ADDR, None, Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::remove_file(empty).unwrap();
    }
}
