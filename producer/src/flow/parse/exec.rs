//! A `run:` task: its program, arguments, input format and environment,
//! and a given `input:` value.

use std::path::Path;

use celeriac_schema::exec::{ExecFormat, ExecSpec};
use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{at, data, join, scalar_text, Fields, Reader, Result};

impl Reader<'_> {
    /// A `run` task's program, argv, format and environment.
    pub(super) fn exec(
        &self,
        run: &MarkedYaml<'_>,
        f: &Fields<'_, '_>,
        path: &str,
    ) -> Result<ExecSpec> {
        let run_path = join(path, "run");
        let argv: Vec<String> = match data(run) {
            YamlData::Value(Scalar::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            YamlData::Sequence(list) => list
                .iter()
                .map(|a| {
                    scalar_text(a)
                        .ok_or_else(|| self.wrong_type(a, &run_path, "an argument (a string)"))
                })
                .collect::<Result<_>>()?,
            _ => {
                return Err(self.wrong_type(
                    run,
                    &run_path,
                    "a program and its arguments (a list, or a string split on spaces)",
                ))
            }
        };
        let mut argv = argv.into_iter();
        let Some(program) = argv.next().filter(|p| !p.is_empty()) else {
            return Err(self.invalid(at(run), run_path, "the program is missing"));
        };
        let mut spec = ExecSpec::new(self.program_path(&program));
        spec.args = argv.map(|a| self.arg_path(a)).collect();
        if let Some((v, _)) = f.get("format") {
            let format_path = join(path, "format");
            spec.format = match self.string(v, &format_path)?.as_str() {
                "json" => ExecFormat::Json,
                "msgpack" => ExecFormat::Msgpack,
                other => {
                    return Err(self.invalid(
                        at(v),
                        format_path,
                        format!("unknown format {other:?}: expected json or msgpack"),
                    ))
                }
            };
        }
        if let Some((v, _)) = f.get("env") {
            let env_path = join(path, "env");
            let YamlData::Mapping(map) = data(v) else {
                return Err(self.wrong_type(v, &env_path, "a mapping of variable names to values"));
            };
            for (k, val) in map {
                let name = scalar_text(k).unwrap_or_default();
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    return Err(self.invalid(
                        at(k),
                        env_path,
                        format!("{name:?} is not an environment variable name"),
                    ));
                }
                let Some(value) = scalar_text(val) else {
                    return Err(self.wrong_type(val, &join(&env_path, &name), "a string"));
                };
                spec.env.insert(name, value);
            }
        }
        Ok(spec)
    }

    /// A relative program path containing a `/` is relative to the file's
    /// directory; a bare name is looked up on `PATH` where it runs.
    fn program_path(&self, program: &str) -> String {
        match self.base {
            Some(base) if program.contains('/') && Path::new(program).is_relative() => base
                .join(program.strip_prefix("./").unwrap_or(program))
                .to_string_lossy()
                .into_owned(),
            _ => program.to_owned(),
        }
    }

    /// An argument that names a file beside the YAML file (a script) is made
    /// absolute, so the flow runs from any directory.
    fn arg_path(&self, arg: String) -> String {
        match self.base {
            Some(base) if !arg.starts_with('-') && Path::new(&arg).is_relative() => {
                let candidate = base.join(arg.strip_prefix("./").unwrap_or(&arg));
                if candidate.is_file() {
                    candidate.to_string_lossy().into_owned()
                } else {
                    arg
                }
            }
            _ => arg,
        }
    }

    /// Any YAML value as a MessagePack value; mapping keys become strings.
    pub(super) fn value(&self, node: &MarkedYaml<'_>, path: &str) -> Result<rmpv::Value> {
        Ok(match data(node) {
            YamlData::Value(Scalar::Null) => rmpv::Value::Nil,
            YamlData::Value(Scalar::Boolean(b)) => rmpv::Value::Boolean(*b),
            YamlData::Value(Scalar::Integer(i)) => rmpv::Value::from(*i),
            YamlData::Value(Scalar::FloatingPoint(f)) => rmpv::Value::F64(f.into_inner()),
            YamlData::Value(Scalar::String(s)) => rmpv::Value::from(s.as_ref()),
            YamlData::Sequence(list) => rmpv::Value::Array(
                list.iter()
                    .map(|v| self.value(v, path))
                    .collect::<Result<_>>()?,
            ),
            YamlData::Mapping(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let Some(key) = scalar_text(k) else {
                        return Err(self.wrong_type(k, path, "a key (a string)"));
                    };
                    out.push((
                        rmpv::Value::from(key.as_str()),
                        self.value(v, &join(path, &key))?,
                    ));
                }
                rmpv::Value::Map(out)
            }
            _ => return Err(self.wrong_type(node, path, "a value")),
        })
    }
}
