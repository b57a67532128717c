//! From the tree of raw items to the flat list of nodes: `needs` resolved
//! to node ids, blocks and subtasks turned into edges, inputs and settings
//! decided, cycles and schedules checked.

use std::collections::{HashMap, HashSet};

use celeriac_schema::dag::{Dag, DagError};
use celeriac_schema::workflow::InputFrom;

use super::error::{FlowError, FlowErrorKind, Position};
use super::parse::{Body, Located, Options, RawFlow, RawItem};
use super::{EntryInfo, FlowTask};
use crate::schedule::Schedule;

type Result<T> = std::result::Result<T, FlowError>;

/// One item of the tree, with its place in it.
struct Flat<'r> {
    item: &'r RawItem,
    parent: Option<usize>,
    /// The scope (list of siblings) it belongs to.
    scope: usize,
    /// Its subtasks or members, in file order.
    children: Vec<usize>,
}

/// Where an edge came from: a `needs` entry, or the structure.
type Origin = Option<(Position, String)>;

struct Resolver<'r> {
    file: &'r str,
    flat: Vec<Flat<'r>>,
    scopes: Vec<Vec<usize>>,
    by_id: HashMap<&'r str, usize>,
    /// Resolved `needs` of each item: target item and where it is written.
    needs: Vec<Vec<(usize, Position, String)>>,
    entries: Vec<Option<Vec<usize>>>,
    exits: Vec<Option<Vec<usize>>>,
    deps: Vec<Vec<(usize, Origin)>>,
    /// Edges from a sequence step to the step before it.
    previous: HashSet<(usize, usize)>,
}

/// Resolves a read file into its nodes and its schedulable entries.
pub(super) fn resolve(file: &str, raw: &RawFlow) -> Result<(Vec<FlowTask>, Vec<EntryInfo>)> {
    let mut r = Resolver {
        file,
        flat: Vec::new(),
        scopes: vec![Vec::new()],
        by_id: HashMap::new(),
        needs: Vec::new(),
        entries: Vec::new(),
        exits: Vec::new(),
        deps: Vec::new(),
        previous: HashSet::new(),
    };
    for item in &raw.tasks {
        r.flatten(item, None, 0);
    }
    let n = r.flat.len();
    r.entries = vec![None; n];
    r.exits = vec![None; n];
    r.deps = vec![Vec::new(); n];
    r.resolve_needs()?;
    r.edges();
    r.check_cycles()?;
    r.check_schedules(raw.schedule.as_ref())?;
    Ok((r.tasks(&raw.defaults), r.entry_infos()))
}

impl<'r> Resolver<'r> {
    fn flatten(&mut self, item: &'r RawItem, parent: Option<usize>, scope: usize) -> usize {
        let index = self.flat.len();
        self.flat.push(Flat {
            item,
            parent,
            scope,
            children: Vec::new(),
        });
        self.scopes[scope].push(index);
        self.by_id.insert(item.id.as_str(), index);
        let children = match &item.body {
            Body::Task { subtasks, .. } => subtasks,
            Body::Sequence(members) | Body::Parallel(members) => members,
        };
        if !children.is_empty() {
            let child_scope = self.scopes.len();
            self.scopes.push(Vec::new());
            let mut indices = Vec::with_capacity(children.len());
            for child in children {
                indices.push(self.flatten(child, Some(index), child_scope));
            }
            self.flat[index].children = indices;
        }
        index
    }

    fn err(&self, at: Position, key: &str, kind: FlowErrorKind) -> FlowError {
        FlowError::new(self.file, Some(at), key, kind)
    }

    fn is_ancestor(&self, ancestor: usize, mut of: usize) -> bool {
        while let Some(p) = self.flat[of].parent {
            if p == ancestor {
                return true;
            }
            of = p;
        }
        false
    }

    fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.flat[i].children.iter().copied()
    }

    /// `needs` name a sibling first, then a full dotted path.
    fn resolve_needs(&mut self) -> Result<()> {
        let mut all = Vec::with_capacity(self.flat.len());
        for (i, f) in self.flat.iter().enumerate() {
            let mut resolved = Vec::with_capacity(f.item.needs.len());
            for need in &f.item.needs {
                let sibling = self.scopes[f.scope]
                    .iter()
                    .copied()
                    .find(|&s| self.flat[s].item.name == need.value);
                let Some(target) = sibling.or_else(|| self.by_id.get(need.value.as_str()).copied())
                else {
                    return Err(self.err(
                        need.at,
                        &need.key,
                        FlowErrorKind::UnknownTask {
                            name: need.value.clone(),
                        },
                    ));
                };
                let message = if target == i {
                    Some("a task cannot need itself".to_owned())
                } else if self.is_ancestor(target, i) {
                    Some(format!(
                        "a task cannot need {:?}, which contains it (it runs as part of it already)",
                        self.flat[target].item.id
                    ))
                } else if self.is_ancestor(i, target) {
                    Some(format!(
                        "a task cannot need {:?}, which is inside it",
                        self.flat[target].item.id
                    ))
                } else {
                    None
                };
                if let Some(message) = message {
                    return Err(self.err(need.at, &need.key, FlowErrorKind::Invalid { message }));
                }
                resolved.push((target, need.at, need.key.clone()));
            }
            all.push(resolved);
        }
        self.needs = all;
        Ok(())
    }

    /// Whether item `i` needs one of its siblings (so it is not where its
    /// scope starts).
    fn needs_sibling(&self, i: usize) -> bool {
        let scope = self.flat[i].scope;
        self.needs[i]
            .iter()
            .any(|(t, _, _)| self.flat[*t].scope == scope)
    }

    fn is_node(&self, i: usize) -> bool {
        matches!(self.flat[i].item.body, Body::Task { .. })
    }

    /// The nodes where item `i` starts: they take its `needs`.
    fn entries(&mut self, i: usize) -> Vec<usize> {
        if let Some(e) = &self.entries[i] {
            return e.clone();
        }
        let children: Vec<usize> = self.children(i).collect();
        let mut out = Vec::new();
        match &self.flat[i].item.body {
            Body::Task { .. } => {
                out.push(i);
                for c in children {
                    if !self.needs_sibling(c) {
                        out.extend(self.entries(c));
                    }
                }
            }
            Body::Sequence(_) => {
                if let Some(&first) = children.first() {
                    out = self.entries(first);
                }
            }
            Body::Parallel(_) => {
                for c in children {
                    if !self.needs_sibling(c) {
                        out.extend(self.entries(c));
                    }
                }
            }
        }
        dedup(&mut out);
        self.entries[i] = Some(out.clone());
        out
    }

    /// The nodes whose success means item `i` succeeded.
    fn exits(&mut self, i: usize) -> Vec<usize> {
        if let Some(e) = &self.exits[i] {
            return e.clone();
        }
        let children: Vec<usize> = self.children(i).collect();
        let mut out = Vec::new();
        match &self.flat[i].item.body {
            Body::Task { .. } => out.push(i),
            Body::Sequence(_) => {
                if let Some(&last) = children.last() {
                    out = self.exits(last);
                }
            }
            Body::Parallel(_) => {
                for c in children {
                    out.extend(self.exits(c));
                }
            }
        }
        dedup(&mut out);
        self.exits[i] = Some(out.clone());
        out
    }

    fn add(&mut self, node: usize, dep: usize, origin: Origin) {
        if !self.deps[node].iter().any(|(d, _)| *d == dep) {
            self.deps[node].push((dep, origin));
        }
    }

    fn edges(&mut self) {
        for i in 0..self.flat.len() {
            let children: Vec<usize> = self.children(i).collect();
            match &self.flat[i].item.body {
                Body::Task { .. } => {
                    // A parent runs after its subtasks and receives their
                    // results.
                    for c in children {
                        for x in self.exits(c) {
                            self.add(i, x, None);
                        }
                    }
                }
                Body::Sequence(_) => {
                    for pair in children.windows(2) {
                        let exits = self.exits(pair[0]);
                        for e in self.entries(pair[1]) {
                            for &x in &exits {
                                self.add(e, x, None);
                                self.previous.insert((e, x));
                            }
                        }
                    }
                }
                Body::Parallel(_) => {}
            }
        }
        for i in 0..self.flat.len() {
            let needs = self.needs[i].clone();
            let entries = self.entries(i);
            for (target, at, key) in needs {
                let exits = self.exits(target);
                for &e in &entries {
                    for &x in &exits {
                        self.add(e, x, Some((at, key.clone())));
                    }
                }
            }
        }
    }

    fn check_cycles(&self) -> Result<()> {
        let nodes: Vec<usize> = (0..self.flat.len()).filter(|&i| self.is_node(i)).collect();
        let dag = Dag::new(nodes.iter().map(|&i| {
            (
                self.flat[i].item.id.as_str(),
                self.deps[i]
                    .iter()
                    .map(|(d, _)| self.flat[*d].item.id.as_str()),
            )
        }));
        let path = match dag {
            Ok(_) => return Ok(()),
            Err(DagError::Cycle { path }) => path,
            // Ids are unique paths and every dependency was resolved.
            Err(other) => {
                return Err(FlowError::new(
                    self.file,
                    None,
                    "tasks",
                    FlowErrorKind::Invalid {
                        message: other.to_string(),
                    },
                ))
            }
        };
        let index = |id: &str| self.by_id.get(id).copied();
        let origin = (0..path.len()).find_map(|k| {
            let node = index(&path[k])?;
            let dep = index(&path[(k + path.len() - 1) % path.len()])?;
            self.deps[node]
                .iter()
                .find(|(d, _)| *d == dep)
                .and_then(|(_, o)| o.clone())
        });
        let (at, key) = match origin {
            Some((at, key)) => (Some(at), key),
            None => (None, "tasks".to_owned()),
        };
        Err(FlowError::new(
            self.file,
            at,
            key,
            FlowErrorKind::Cycle { path },
        ))
    }

    /// A child may not run less often than its nearest scheduled ancestor
    /// (or the workflow).
    fn check_schedules(&self, flow: Option<&Located<Schedule>>) -> Result<()> {
        for (i, f) in self.flat.iter().enumerate() {
            let Some(own) = &f.item.schedule else {
                continue;
            };
            let mut parent = f.parent;
            let mut outer: Option<(String, &Schedule)> = None;
            while let Some(p) = parent {
                if let Some(s) = &self.flat[p].item.schedule {
                    outer = Some((format!("`{}`", self.flat[p].item.id), &s.value));
                    break;
                }
                parent = self.flat[p].parent;
            }
            if outer.is_none() {
                outer = flow.map(|s| ("the workflow".to_owned(), &s.value));
            }
            let Some((what, theirs)) = outer else {
                continue;
            };
            if own.value.less_often_than(theirs) {
                return Err(self.err(
                    own.at,
                    &own.key,
                    FlowErrorKind::Schedule {
                        message: format!(
                            "`{}` is scheduled less often ({}) than {what} ({}): a child must run at least as often as its parent",
                            self.flat[i].item.id, own.value, theirs
                        ),
                    },
                ));
            }
        }
        Ok(())
    }

    /// The settings of node `i`: its own, then those of its enclosing
    /// blocks, then the defaults.
    fn options(&self, i: usize, defaults: &Options) -> Options {
        let mut options = self.flat[i].item.options.clone();
        let mut parent = self.flat[i].parent;
        while let Some(p) = parent {
            if !self.is_node(p) {
                options = options.or(&self.flat[p].item.options);
            }
            parent = self.flat[p].parent;
        }
        options.or(defaults)
    }

    /// The nodes, subtasks before their parent, in file order otherwise.
    fn tasks(&self, defaults: &Options) -> Vec<FlowTask> {
        let mut order = Vec::with_capacity(self.flat.len());
        for &root in &self.scopes[0] {
            self.post_order(root, &mut order);
        }
        order
            .into_iter()
            .filter_map(|i| {
                let item = self.flat[i].item;
                let Body::Task { kind, input, .. } = &item.body else {
                    return None;
                };
                let deps: Vec<usize> = self.deps[i].iter().map(|(d, _)| *d).collect();
                let input_from = if input.is_some() {
                    InputFrom::Given
                } else if deps.len() == 1 && self.previous.contains(&(i, deps[0])) {
                    InputFrom::Result
                } else if deps.is_empty() {
                    InputFrom::Given
                } else {
                    InputFrom::ByName
                };
                let options = self.options(i, defaults);
                Some(FlowTask {
                    id: item.id.clone(),
                    kind: kind.clone(),
                    input: input.clone(),
                    input_from,
                    dependencies: deps.iter().map(|&d| self.flat[d].item.id.clone()).collect(),
                    retries: options.retries.unwrap_or(0),
                    timeout: options.timeout,
                    soft_timeout: options
                        .soft_timeout
                        .filter(|soft| options.timeout.is_none_or(|hard| *soft < hard)),
                    queue: options.queue,
                    tenant: options.tenant,
                    tolerance: options.tolerance,
                    pools: options.pools.unwrap_or_default(),
                    schedule: item.schedule.as_ref().map(|s| s.value.clone()),
                    position: item.at,
                })
            })
            .collect()
    }

    fn post_order(&self, i: usize, out: &mut Vec<usize>) {
        let is_task = self.is_node(i);
        if !is_task {
            out.push(i);
        }
        for c in self.children(i) {
            self.post_order(c, out);
        }
        if is_task {
            out.push(i);
        }
    }

    fn entry_infos(&self) -> Vec<EntryInfo> {
        self.flat
            .iter()
            .map(|f| EntryInfo {
                id: f.item.id.clone(),
                schedule: f.item.schedule.as_ref().map(|s| s.value.clone()),
            })
            .collect()
    }
}

fn dedup(v: &mut Vec<usize>) {
    let mut seen = HashSet::with_capacity(v.len());
    v.retain(|x| seen.insert(*x));
}
