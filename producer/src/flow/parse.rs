//! From YAML text to a tree of raw items, each with its place in the file.
//!
//! This step checks everything a single key can get wrong (unknown keys,
//! types, names, the one kind a task has); [`super::resolve`] then checks
//! what needs the whole tree (`needs`, cycles, schedules).

mod exec;
mod limits;
mod policy;

use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::error::{suggest, FlowError, FlowErrorKind, Position};
use super::TaskKind;
use crate::schedule::{Overlap, Schedule};
mod options;
pub(super) use options::Options;

type Result<T> = std::result::Result<T, FlowError>;

mod durations;

const TOP_KEYS: &[&str] = &["name", "schedule", "overlap", "defaults", "limits", "tasks"];
const DEFAULT_KEYS: &[&str] = &[
    "retries",
    "timeout",
    "soft_timeout",
    "queue",
    "tenant",
    "tolerance",
    "pools",
];
const TASK_KEYS: &[&str] = &[
    "run",
    "task",
    "sequence",
    "parallel",
    "needs",
    "input",
    "format",
    "env",
    "retries",
    "timeout",
    "soft_timeout",
    "queue",
    "tenant",
    "tolerance",
    "pools",
    "schedule",
    "subtasks",
];
const KINDS: &[&str] = &["run", "task", "sequence", "parallel"];

/// A whole file, read but not yet resolved.
pub(super) struct RawFlow {
    pub name: String,
    pub schedule: Option<Located<Schedule>>,
    pub overlap: Overlap,
    pub defaults: Options,
    pub limits: crate::flow::FlowLimits,
    pub tasks: Vec<RawItem>,
}

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(super) struct Located<T> {
    pub value: T,
    pub at: Position,
    pub key: String,
}

/// One entry of a `tasks`, `subtasks`, `sequence` or `parallel`.
pub(super) struct RawItem {
    pub name: String,
    /// The dotted node id.
    pub id: String,
    /// Where its name is written.
    pub at: Position,
    pub needs: Vec<Located<String>>,
    pub options: Options,
    pub schedule: Option<Located<Schedule>>,
    pub body: Body,
}

pub(super) enum Body {
    Task {
        kind: TaskKind,
        input: Option<rmpv::Value>,
        subtasks: Vec<RawItem>,
    },
    Sequence(Vec<RawItem>),
    Parallel(Vec<RawItem>),
}

/// Reads YAML text; relative program paths resolve against `base`.
pub(super) struct Reader<'f> {
    pub file: &'f str,
    pub base: Option<&'f Path>,
}

fn at(node: &MarkedYaml<'_>) -> Position {
    Position::from_marker(&node.span.start)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The node's data, looking through tags.
fn data<'b, 'a>(node: &'b MarkedYaml<'a>) -> &'b YamlData<'a, MarkedYaml<'a>> {
    match &node.data {
        YamlData::Tagged(_, inner) => data(inner),
        d => d,
    }
}

fn type_name(node: &MarkedYaml<'_>) -> &'static str {
    match data(node) {
        YamlData::Value(Scalar::Null) => "nothing (null)",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::String(_)) => "a string",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        _ => "an unreadable value",
    }
}

/// The text of a scalar: strings as written, numbers and booleans as YAML
/// prints them.
fn scalar_text(node: &MarkedYaml<'_>) -> Option<String> {
    match data(node) {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// The keys of one mapping, checked against the keys it may have.
struct Fields<'b, 'a> {
    path: String,
    entries: Vec<(String, Position, &'b MarkedYaml<'a>)>,
}

impl<'b, 'a> Fields<'b, 'a> {
    fn get(&self, key: &str) -> Option<(&'b MarkedYaml<'a>, Position)> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, p, v)| (*v, *p))
    }

    fn key_at(&self, key: &str) -> Option<Position> {
        self.get(key).map(|(_, p)| p)
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Reader<'_> {
    fn err(&self, at: Position, key: impl Into<String>, kind: FlowErrorKind) -> FlowError {
        FlowError::new(self.file, Some(at), key, kind)
    }

    fn invalid(
        &self,
        at: Position,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> FlowError {
        self.err(
            at,
            key,
            FlowErrorKind::Invalid {
                message: message.into(),
            },
        )
    }

    fn wrong_type(&self, node: &MarkedYaml<'_>, key: &str, expected: &'static str) -> FlowError {
        self.err(
            at(node),
            key,
            FlowErrorKind::WrongType {
                expected,
                found: type_name(node),
            },
        )
    }

    /// Parses `text` into its one document.
    pub fn read(&self, text: &str) -> Result<RawFlow> {
        let docs = MarkedYaml::load_from_str(text).map_err(|e| {
            self.err(
                Position::from_marker(e.marker()),
                "",
                FlowErrorKind::Syntax {
                    message: e.info().to_owned(),
                },
            )
        })?;
        let mut docs = docs.into_iter();
        let Some(doc) = docs.next() else {
            return Err(FlowError::new(
                self.file,
                Some(Position::new(1, 1)),
                "",
                FlowErrorKind::Invalid {
                    message: "the file is empty: a workflow is a mapping with `name` and `tasks`"
                        .into(),
                },
            ));
        };
        if let Some(extra) = docs.next() {
            return Err(self.invalid(
                at(&extra),
                "",
                "a workflow file holds one YAML document, this is a second one",
            ));
        }
        self.flow(&doc)
    }

    fn fields<'b, 'a>(
        &self,
        node: &'b MarkedYaml<'a>,
        path: &str,
        allowed: &[&'static str],
        what: &'static str,
    ) -> Result<Fields<'b, 'a>> {
        let YamlData::Mapping(map) = data(node) else {
            return Err(self.wrong_type(node, path, what));
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let Some(key) = scalar_text(k) else {
                return Err(self.wrong_type(k, path, "a key"));
            };
            if !allowed.contains(&key.as_str()) {
                let suggestion = suggest(&key, allowed);
                return Err(self.err(at(k), path, FlowErrorKind::UnknownKey { key, suggestion }));
            }
            entries.push((key, at(k), v));
        }
        Ok(Fields {
            path: path.to_owned(),
            entries,
        })
    }

    fn flow(&self, doc: &MarkedYaml<'_>) -> Result<RawFlow> {
        let f = self.fields(doc, "", TOP_KEYS, "a mapping with `name` and `tasks`")?;
        let name = match f.get("name") {
            Some((v, _)) => {
                let name = self.string(v, "name")?;
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                    || name.is_empty()
                {
                    return Err(self.invalid(
                        at(v),
                        "name",
                        format!("{name:?} is not a workflow name: use letters, digits, `_`, `-` and `.`"),
                    ));
                }
                name
            }
            None => {
                return Err(self.err(at(doc), "", FlowErrorKind::MissingKey { key: "name" }));
            }
        };
        let schedule = match f.get("schedule") {
            Some((v, _)) => Some(self.schedule(v, "schedule")?),
            None => None,
        };
        let overlap = match f.get("overlap") {
            Some((v, _)) => {
                let s = self.string(v, "overlap")?;
                s.parse::<Overlap>()
                    .map_err(|e| self.invalid(at(v), "overlap", e.to_string()))?
            }
            None => Overlap::default(),
        };
        let defaults = match f.get("defaults") {
            Some((v, _)) => {
                let d = self.fields(v, "defaults", DEFAULT_KEYS, "a mapping")?;
                self.options(&d)?
            }
            None => Options::default(),
        };
        let limits = match f.get("limits") {
            Some((v, _)) => self.limits(v)?,
            None => crate::flow::FlowLimits::default(),
        };
        let Some((tasks, _)) = f.get("tasks") else {
            return Err(self.err(at(doc), "", FlowErrorKind::MissingKey { key: "tasks" }));
        };
        let tasks = self.scope(tasks, "tasks", "")?;
        Ok(RawFlow {
            name,
            schedule,
            overlap,
            defaults,
            limits,
            tasks,
        })
    }

    /// The items of a mapping of names to tasks (`tasks`, `subtasks`,
    /// `parallel`); `prefix` is the enclosing node id.
    fn scope(&self, node: &MarkedYaml<'_>, path: &str, prefix: &str) -> Result<Vec<RawItem>> {
        let YamlData::Mapping(map) = data(node) else {
            return Err(self.wrong_type(node, path, "a mapping of task names to tasks"));
        };
        if map.is_empty() {
            return Err(self.invalid(at(node), path, "there must be at least one task"));
        }
        let mut items = Vec::with_capacity(map.len());
        for (k, v) in map {
            let name = self.name(k, path)?;
            items.push(self.item(name, at(k), v, &join(path, &scalar_or_empty(k)), prefix)?);
        }
        Ok(items)
    }

    fn name(&self, key: &MarkedYaml<'_>, path: &str) -> Result<String> {
        let Some(name) = scalar_text(key) else {
            return Err(self.wrong_type(key, path, "a task name"));
        };
        if !is_name(&name) {
            return Err(self.invalid(
                at(key),
                path,
                format!("{name:?} is not a task name: use letters, digits, `_` and `-`"),
            ));
        }
        Ok(name)
    }

    fn item(
        &self,
        name: String,
        name_at: Position,
        node: &MarkedYaml<'_>,
        path: &str,
        prefix: &str,
    ) -> Result<RawItem> {
        let id = join(prefix, &name);
        let f = self.fields(node, path, TASK_KEYS, "a mapping (the task's settings)")?;
        let kinds: Vec<&str> = KINDS.iter().copied().filter(|k| f.has(k)).collect();
        let kind = match kinds.as_slice() {
            [] => {
                return Err(self.invalid(
                    at(node),
                    path,
                    "a task needs one of `run` (a program), `task` (a registered handler), `sequence` or `parallel`",
                ))
            }
            [one] => *one,
            [first, second, ..] => {
                let second_at = f.key_at(second).unwrap_or(name_at);
                return Err(self.invalid(
                    second_at,
                    path,
                    format!("`{first}` and `{second}` cannot be used together: a task has exactly one of `run`, `task`, `sequence` or `parallel`"),
                ));
            }
        };
        let needs = match f.get("needs") {
            Some((v, _)) => self.needs(v, &join(path, "needs"))?,
            None => Vec::new(),
        };
        let schedule = match f.get("schedule") {
            Some((v, _)) => Some(self.schedule(v, &join(path, "schedule"))?),
            None => None,
        };
        let options = self.options(&f)?;
        let body = match kind {
            "sequence" | "parallel" => {
                for key in ["input", "format", "env", "subtasks"] {
                    if let Some(p) = f.key_at(key) {
                        return Err(self.invalid(
                            p,
                            path,
                            format!(
                                "`{key}` is not allowed on a {kind} block, only on the tasks in it"
                            ),
                        ));
                    }
                }
                let (v, _) = f.get(kind).ok_or_else(|| self.internal(name_at, path))?;
                let members_path = join(path, kind);
                if kind == "sequence" {
                    Body::Sequence(self.sequence(v, &members_path, &id)?)
                } else {
                    Body::Parallel(self.scope(v, &members_path, &id)?)
                }
            }
            _ => {
                let task_kind = if kind == "run" {
                    let (v, _) = f.get("run").ok_or_else(|| self.internal(name_at, path))?;
                    TaskKind::Exec(self.exec(v, &f, path)?)
                } else {
                    for key in ["format", "env"] {
                        if let Some(p) = f.key_at(key) {
                            return Err(self.invalid(
                                p,
                                path,
                                format!("`{key}` only applies to a `run` task (a program)"),
                            ));
                        }
                    }
                    let (v, _) = f.get("task").ok_or_else(|| self.internal(name_at, path))?;
                    let handler = self.string(v, &join(path, "task"))?;
                    if handler.is_empty() || handler.chars().any(char::is_whitespace) {
                        return Err(self.invalid(
                            at(v),
                            join(path, "task"),
                            format!("{handler:?} is not a task name"),
                        ));
                    }
                    TaskKind::Handler(handler)
                };
                let input = match f.get("input") {
                    Some((v, _)) => Some(self.value(v, &join(path, "input"))?),
                    None => None,
                };
                let subtasks = match f.get("subtasks") {
                    Some((v, _)) => self.scope(v, &join(path, "subtasks"), &id)?,
                    None => Vec::new(),
                };
                Body::Task {
                    kind: task_kind,
                    input,
                    subtasks,
                }
            }
        };
        Ok(RawItem {
            name,
            id,
            at: name_at,
            needs,
            options,
            schedule,
            body,
        })
    }

    fn internal(&self, at: Position, path: &str) -> FlowError {
        self.invalid(at, path, "internal error: a key seen a moment ago is gone")
    }

    /// `sequence:` is a list of one-key mappings: `- step: {task}`.
    fn sequence(&self, node: &MarkedYaml<'_>, path: &str, prefix: &str) -> Result<Vec<RawItem>> {
        let YamlData::Sequence(steps) = data(node) else {
            return Err(self.wrong_type(node, path, "a list of steps (`- name: {task}`)"));
        };
        if steps.is_empty() {
            return Err(self.invalid(at(node), path, "there must be at least one step"));
        }
        let mut items: Vec<RawItem> = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let step_path = format!("{path}[{i}]");
            let one = match data(step) {
                YamlData::Mapping(map) if map.len() == 1 => map.iter().next(),
                _ => None,
            };
            let Some((k, v)) = one else {
                return Err(self.invalid(
                    at(step),
                    step_path,
                    "a step is a mapping with one key, the step's name: `- upload: {run: [...]}`",
                ));
            };
            let name = self.name(k, &step_path)?;
            if items.iter().any(|s| s.name == name) {
                return Err(self.invalid(
                    at(k),
                    step_path,
                    format!("step {name:?} is defined twice in this sequence"),
                ));
            }
            items.push(self.item(name.clone(), at(k), v, &join(&step_path, &name), prefix)?);
        }
        Ok(items)
    }

    fn needs(&self, node: &MarkedYaml<'_>, path: &str) -> Result<Vec<Located<String>>> {
        let one = |n: &MarkedYaml<'_>| -> Result<Located<String>> {
            match scalar_text(n) {
                Some(s) if !s.is_empty() => Ok(Located {
                    value: s,
                    at: at(n),
                    key: path.to_owned(),
                }),
                _ => Err(self.wrong_type(n, path, "a task name")),
            }
        };
        match data(node) {
            YamlData::Sequence(list) => list.iter().map(one).collect(),
            YamlData::Value(Scalar::String(_)) => Ok(vec![one(node)?]),
            _ => Err(self.wrong_type(node, path, "a list of task names")),
        }
    }

    fn schedule(&self, node: &MarkedYaml<'_>, path: &str) -> Result<Located<Schedule>> {
        let parsed = match data(node) {
            YamlData::Value(Scalar::Integer(n)) => Schedule::interval_secs(*n as f64),
            YamlData::Value(Scalar::FloatingPoint(f)) => Schedule::interval_secs(f.into_inner()),
            YamlData::Value(Scalar::String(s)) => s.parse::<Schedule>(),
            _ => {
                return Err(self.wrong_type(
                    node,
                    path,
                    "an interval in seconds or a cron expression",
                ))
            }
        };
        let value = parsed.map_err(|e| {
            self.err(
                at(node),
                path,
                FlowErrorKind::Schedule {
                    message: e.to_string(),
                },
            )
        })?;
        Ok(Located {
            value,
            at: at(node),
            key: path.to_owned(),
        })
    }

    fn string(&self, node: &MarkedYaml<'_>, path: &str) -> Result<String> {
        match data(node) {
            YamlData::Value(Scalar::String(s)) => Ok(s.to_string()),
            _ => Err(self.wrong_type(node, path, "a string")),
        }
    }
}

fn scalar_or_empty(node: &MarkedYaml<'_>) -> String {
    scalar_text(node).unwrap_or_default()
}
