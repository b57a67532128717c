//! The allowlist: which programs a task may run, and, for entries with
//! argument patterns, with which arguments and environment.
//!
//! An entry is whitespace-separated tokens:
//!
//! ```text
//! [NAME=GLOB ...] PROGRAM [ARG-GLOB ...] [...]
//! ```
//!
//! - `PROGRAM` alone (a *bare* entry) allows that program with any
//!   arguments and any task environment (except the loader's `LD_*`): for
//!   an interpreter (`python3`, `bash`, `node`) that is any code at all,
//!   through `-c`, `-e` or a script of the task's choosing.
//! - With anything else the entry is a *pattern*: the task's arguments
//!   must match the `ARG-GLOB`s one for one, no more and no fewer, unless
//!   the last token is `...`, which admits any number of further
//!   arguments that do not start with `-`. The task may set only the
//!   variables named by `NAME=GLOB` tokens, with values matching them;
//!   with none, it may set no variable (`PYTHONSTARTUP`, `BASH_ENV`,
//!   `NODE_OPTIONS` or `PERL5OPT` would inject code as surely as `-c`).
//!
//! A glob matches the whole argument: `*` any run of characters except
//! `/`, `?` one character except `/`, `\` takes the next character
//! literally, anything else itself. Two more rules make option and path
//! tricks fail by construction:
//!
//! - an argument that starts with `-` is matched only by a glob that
//!   starts with a literal `-`: `*` never admits `-c`, `-e` or `--eval`;
//! - a glob with a wildcard never matches an argument that has a `.` or
//!   `..` path component: `/opt/jobs/*/run.py` cannot reach
//!   `/opt/jobs/../../tmp/run.py`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use celeriac_schema::exec::ExecSpec;

use crate::task_error::TaskError;

use super::{PROGRAM_NOT_EXECUTABLE, PROGRAM_NOT_FOUND};

/// The token that admits further arguments.
const REST: &str = "...";

/// One parsed allowlist entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// As written, for messages.
    text: String,
    program: String,
    /// `None` for a bare entry.
    pattern: Option<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    env: Vec<(String, Glob)>,
    args: Vec<Glob>,
    rest: bool,
}

impl Entry {
    /// Parses an entry (see [the module documentation](self)).
    pub(crate) fn parse(text: &str) -> Result<Entry, String> {
        let mut tokens = text.split_whitespace().peekable();
        let mut env = Vec::new();
        while let Some(token) = tokens.peek() {
            let Some((name, value)) = token.split_once('=') else {
                break;
            };
            if !is_variable_name(name) {
                break;
            }
            if name.starts_with("LD_") || name.starts_with("DYLD_") {
                return Err(format!(
                    "allowlist entry `{text}`: the loader variable {name} cannot be allowed"
                ));
            }
            env.push((name.to_owned(), Glob::parse(value)));
            tokens.next();
        }
        let Some(program) = tokens.next() else {
            return Err(format!("allowlist entry `{text}` names no program"));
        };
        let rest_tokens: Vec<&str> = tokens.collect();
        let rest = rest_tokens.last() == Some(&REST);
        let globs = &rest_tokens[..rest_tokens.len() - usize::from(rest)];
        if let Some(misplaced) = globs.iter().find(|t| **t == REST) {
            return Err(format!(
                "allowlist entry `{text}`: `{misplaced}` may only end the entry"
            ));
        }
        let bare = env.is_empty() && rest_tokens.is_empty();
        if program == "*" && !bare {
            return Err(format!(
                "allowlist entry `{text}`: `*` (any program) takes no patterns"
            ));
        }
        Ok(Entry {
            text: text.trim().to_owned(),
            program: program.to_owned(),
            pattern: (!bare).then(|| Pattern {
                env,
                args: globs.iter().map(|g| Glob::parse(g)).collect(),
                rest,
            }),
        })
    }

    /// Whether this entry allows every program.
    pub(crate) fn is_any(&self) -> bool {
        self.program == "*"
    }

    /// Whether this entry allows any arguments (no pattern).
    pub(crate) fn is_bare(&self) -> bool {
        self.pattern.is_none()
    }

    pub(crate) fn program(&self) -> &str {
        &self.program
    }

    /// Whether the task's arguments and environment fit this entry.
    fn admits(&self, spec: &ExecSpec) -> bool {
        let Some(pattern) = &self.pattern else {
            return true;
        };
        let args_fit = if pattern.rest {
            spec.args.len() >= pattern.args.len()
                && spec.args[pattern.args.len()..]
                    .iter()
                    .all(|arg| !arg.starts_with('-'))
        } else {
            spec.args.len() == pattern.args.len()
        };
        args_fit
            && pattern
                .args
                .iter()
                .zip(&spec.args)
                .all(|(glob, arg)| glob.matches(arg))
            && spec.env.iter().all(|(name, value)| {
                pattern
                    .env
                    .iter()
                    .any(|(allowed, glob)| allowed == name && glob.matches(value))
            })
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A glob over one argument (or one variable's value).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Char(char),
    /// `?`
    One,
    /// `*`
    Any,
}

impl Glob {
    fn parse(text: &str) -> Glob {
        let mut parts = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '*' => Part::Any,
                '?' => Part::One,
                // A trailing `\` stands for itself.
                '\\' => Part::Char(chars.next().unwrap_or('\\')),
                c => Part::Char(c),
            });
        }
        Glob { parts }
    }

    fn has_wildcard(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Any | Part::One))
    }

    fn matches(&self, value: &str) -> bool {
        if value.starts_with('-') && self.parts.first() != Some(&Part::Char('-')) {
            return false;
        }
        if self.has_wildcard() && value.split('/').any(|c| c == "." || c == "..") {
            return false;
        }
        let value: Vec<char> = value.chars().collect();
        matches_from(&self.parts, &value)
    }
}

/// Whether `parts` match all of `value`: a table of which prefixes of
/// the value each prefix of the pattern matches, so time is the product of
/// their lengths, never exponential.
fn matches_from(parts: &[Part], value: &[char]) -> bool {
    // row[j]: the parts so far match value[..j].
    let mut row = vec![false; value.len() + 1];
    row[0] = true;
    for part in parts {
        let mut next = vec![false; value.len() + 1];
        for j in 0..=value.len() {
            next[j] = match part {
                // Zero characters, or one more that is not a `/`.
                Part::Any => row[j] || (j > 0 && next[j - 1] && value[j - 1] != '/'),
                Part::One => j > 0 && row[j - 1] && value[j - 1] != '/',
                Part::Char(c) => j > 0 && row[j - 1] && value[j - 1] == *c,
            };
        }
        row = next;
    }
    row[value.len()]
}

/// Resolves the task's program and checks it, its arguments and its
/// environment against `entries` (see [`ExecConfig::check`](super::ExecConfig::check)).
pub(crate) fn check(entries: &[Entry], spec: &ExecSpec) -> Result<PathBuf, TaskError> {
    let program = spec.program.as_str();
    if program.is_empty() {
        return Err(TaskError::fatal(PROGRAM_NOT_FOUND, "the program is empty"));
    }
    if entries.is_empty() {
        return Err(TaskError::forbidden(format!(
            "program `{program}` is not allowed: this worker allows no program (see --exec-allow)"
        )));
    }
    let resolved = resolve(program);
    let id = resolved.as_deref().map(identity);
    let for_program: Vec<&Entry> = entries
        .iter()
        .filter(|entry| {
            entry.is_any()
                || id.as_ref().is_some_and(|id| {
                    resolve(&entry.program).is_some_and(|path| identity(&path) == *id)
                })
        })
        .collect();
    if for_program.is_empty() {
        // An entry spelled exactly as the program that does not resolve
        // is a missing program, not a forbidden one.
        let named = entries.iter().any(|entry| entry.program == program);
        if !(named && resolved.is_none()) {
            return Err(TaskError::forbidden(format!(
                "program `{program}` is not on this worker's exec allowlist"
            )));
        }
    } else if !for_program.iter().any(|entry| entry.admits(spec)) {
        let patterns: Vec<String> = for_program
            .iter()
            .map(|entry| format!("`{}`", entry.text))
            .collect();
        let mut what = format!("arguments {:?}", spec.args);
        if !spec.env.is_empty() {
            let names: Vec<&String> = spec.env.keys().collect();
            what.push_str(&format!(" and variables {names:?}"));
        }
        return Err(TaskError::forbidden(format!(
            "program `{program}` is allowed only as {}: its {what} do not match (see --exec-allow)",
            patterns.join(" or ")
        )));
    }
    let path = resolved.ok_or_else(|| {
        TaskError::fatal(
            PROGRAM_NOT_FOUND,
            if program.contains('/') {
                format!("program `{program}` does not exist")
            } else {
                format!("program `{program}` was not found on the worker's PATH")
            },
        )
    })?;
    check_executable(program, &path)?;
    Ok(path)
}

/// The path a program name stands for: itself when it has a `/` (made
/// absolute against the working directory), else the first executable
/// file of that name on the worker's `PATH`. `None` when nothing is there.
fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = Path::new(program);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(path)
        };
        return path.exists().then_some(path);
    }
    let search: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

/// What two paths are compared by: the directory with its links resolved,
/// and the file name as written.
fn identity(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .and_then(|dir| dir.canonicalize().ok())
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn check_executable(program: &str, path: &Path) -> Result<(), TaskError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| {
        TaskError::fatal(
            PROGRAM_NOT_FOUND,
            format!("program `{program}` ({}): {e}", path.display()),
        )
    })?;
    if !metadata.is_file() {
        return Err(TaskError::fatal(
            PROGRAM_NOT_EXECUTABLE,
            format!("program `{program}` ({}) is not a file", path.display()),
        ));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(TaskError::fatal(
            PROGRAM_NOT_EXECUTABLE,
            format!(
                "program `{program}` ({}) is not executable (no x permission)",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn admits(entry: &str, args: &[&str]) -> bool {
        let spec = ExecSpec::new("x").args(args.iter().copied());
        Entry::parse(entry).unwrap().admits(&spec)
    }

    #[test]
    fn a_bare_entry_admits_any_arguments() {
        assert!(admits("python3", &["-c", "import os"]));
        assert!(admits("python3", &[]));
        let entry = Entry::parse("python3").unwrap();
        assert!(entry.is_bare() && !entry.is_any());
        assert!(Entry::parse("*").unwrap().is_any());
    }

    #[test]
    fn arguments_match_one_for_one() {
        let entry = "python3 /opt/jobs/*.py";
        assert!(admits(entry, &["/opt/jobs/stats.py"]));
        assert!(!admits(entry, &[]));
        assert!(!admits(entry, &["/opt/jobs/stats.py", "extra"]));
        assert!(!admits(entry, &["/opt/jobs/stats.sh"]));
        assert!(!admits(entry, &["/opt/jobs/sub/stats.py"]), "* stops at /");
        assert!(!admits(entry, &["/tmp/stats.py"]));
    }

    #[test]
    fn code_injection_through_options_is_refused_by_construction() {
        assert!(!admits("python3 *", &["-c"]));
        assert!(!admits("python3 * *", &["-c", "print(1)"]));
        assert!(!admits(
            "python3 /opt/jobs/*.py ...",
            &["/opt/jobs/a.py", "-i"]
        ));
        assert!(!admits("node ?*", &["--eval"]));
        // Options the pattern spells are fine.
        assert!(admits(
            "python3 -u /opt/jobs/*.py",
            &["-u", "/opt/jobs/a.py"]
        ));
        assert!(admits("tool --mode=*", &["--mode=fast"]));
        assert!(!admits("tool --mode=*", &["--other=fast"]));
    }

    #[test]
    fn wildcards_never_climb_out_of_a_directory() {
        let entry = "python3 /opt/jobs/*/run.py";
        assert!(admits(entry, &["/opt/jobs/a/run.py"]));
        assert!(!admits(entry, &["/opt/jobs/../run.py"]));
        assert!(!admits("cat /opt/jobs/*", &["/opt/jobs/.."]));
        assert!(!admits("cat /opt/jobs/?", &["/opt/jobs/."]));
        // Without a wildcard, the literal is the literal.
        assert!(admits("cat /opt/./x", &["/opt/./x"]));
    }

    #[test]
    fn rest_admits_further_plain_arguments() {
        let entry = "python3 /opt/jobs/*.py ...";
        assert!(admits(entry, &["/opt/jobs/a.py"]));
        assert!(admits(entry, &["/opt/jobs/a.py", "x", "/any/path", "a b"]));
        assert!(!admits(entry, &["/opt/jobs/a.py", "x", "--flag"]));
        assert!(!admits(entry, &[]));
    }

    #[test]
    fn question_marks_escapes_and_empty_stars() {
        assert!(admits("echo a?c", &["abc"]));
        assert!(!admits("echo a?c", &["ac"]));
        assert!(!admits("echo a?c", &["a/c"]));
        assert!(admits(r"echo a\*c", &["a*c"]));
        assert!(!admits(r"echo a\*c", &["abc"]));
        assert!(admits("echo *x*", &["x"]));
        assert!(admits("echo *x*", &["aaxbb"]));
        assert!(admits("echo a*b*c", &["aXbYbZc"]));
        assert!(!admits("echo a*b*c", &["aXbYbZ"]));
        // A pathological pattern stays fast.
        let long = "a".repeat(5000);
        assert!(!admits("echo *a*a*a*a*a*a*b", &[&long]));
    }

    #[test]
    fn a_patterned_entry_admits_only_the_variables_it_names() {
        let spec = |env: &[(&str, &str)]| {
            let mut spec = ExecSpec::new("python3").args(["/opt/jobs/a.py"]);
            for (name, value) in env {
                spec = spec.env(*name, *value);
            }
            spec
        };
        let plain = Entry::parse("python3 /opt/jobs/*.py").unwrap();
        assert!(plain.admits(&spec(&[])));
        assert!(!plain.admits(&spec(&[("PYTHONSTARTUP", "/tmp/x.py")])));
        let with_mode = Entry::parse("MODE=* python3 /opt/jobs/*.py").unwrap();
        assert!(with_mode.admits(&spec(&[("MODE", "fast")])));
        assert!(!with_mode.admits(&spec(&[("MODE", "a/b")])));
        assert!(!with_mode.admits(&spec(&[("MODE", "fast"), ("BASH_ENV", "x")])));
        // A bare entry keeps the task's environment.
        assert!(Entry::parse("python3")
            .unwrap()
            .admits(&spec(&[("PYTHONSTARTUP", "/tmp/x.py")])));
        // Variables alone make a pattern: no arguments then.
        let env_only = Entry::parse("MODE=* python3").unwrap();
        assert!(!env_only.is_bare());
        assert!(!env_only.admits(&spec(&[("MODE", "fast")])));
    }

    #[test]
    fn invalid_entries_are_refused() {
        for text in [
            "",
            "   ",
            "MODE=x",
            "python3 ... x",
            "* -c",
            "LD_PRELOAD=* python3",
        ] {
            assert!(Entry::parse(text).is_err(), "{text:?} parsed");
        }
    }
}
