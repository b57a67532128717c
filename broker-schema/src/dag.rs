//! Workflow graphs: validation and ordering shared by every executor.
//!
//! A workflow is a set of nodes, each naming the nodes it depends on. Before
//! anything runs, [`Dag::new`] checks that ids are unique, that every
//! dependency names a node of the workflow and that there is no cycle, and
//! indexes the graph both ways (dependencies and dependents) with a
//! topological order. Nodes are then addressed by their index, in the order
//! they were given.
//!
//! Everything is linear in nodes plus edges and iterative, so a graph of
//! hundreds of thousands of nodes, or a chain that long, is fine.
//!
//! # Examples
//!
//! ```
//! use celeriac_schema::dag::{Dag, DagError};
//!
//! let dag = Dag::new([
//!     ("a", vec![]),
//!     ("b", vec!["a"]),
//!     ("c", vec!["a"]),
//!     ("d", vec!["b", "c"]),
//! ])?;
//! let order: Vec<&str> = dag.topological_order().iter().map(|&i| dag.id(i)).collect();
//! assert_eq!(order, ["a", "b", "c", "d"]);
//! assert_eq!(dag.dependents(0), &[1, 2]);
//!
//! let err = Dag::new([("a", vec!["c"]), ("b", vec!["a"]), ("c", vec!["b"])]).unwrap_err();
//! assert_eq!(err.to_string(), "the workflow has a cycle: a -> b -> c -> a");
//!
//! let err = Dag::new([("a", vec!["nope"])]).unwrap_err();
//! assert_eq!(err, DagError::UnknownDependency { node: "a".into(), dependency: "nope".into() });
//! # Ok::<(), DagError>(())
//! ```

use std::collections::HashMap;
use std::fmt;

/// Why a set of nodes is not a valid workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DagError {
    /// Two nodes have the same id.
    #[error("node `{id}` is defined twice")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
    /// A node depends on an id that is not a node of the workflow.
    #[error("node `{node}` depends on `{dependency}`, which is not a node of the workflow")]
    UnknownDependency {
        /// The node that names the dependency.
        node: String,
        /// The missing id.
        dependency: String,
    },
    /// The dependencies go round in a circle.
    #[error("the workflow has a cycle: {}", CyclePath(.path))]
    Cycle {
        /// The nodes of the cycle in execution order, each depending on the
        /// one before it and the first on the last, starting from the node
        /// given first. A node that depends on itself is a cycle of one.
        path: Vec<String>,
    },
}

impl DagError {
    /// The ids the error is about: the repeated id, the node and its missing
    /// dependency, or the nodes of the cycle.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::dag::Dag;
    ///
    /// let err = Dag::new([("x", vec!["x"])]).unwrap_err();
    /// assert_eq!(err.ids(), ["x"]);
    /// ```
    pub fn ids(&self) -> Vec<&str> {
        match self {
            DagError::DuplicateId { id } => vec![id],
            DagError::UnknownDependency { node, dependency } => vec![node, dependency],
            DagError::Cycle { path } => path.iter().map(String::as_str).collect(),
        }
    }
}

/// Formats a cycle as `a -> b -> a`.
struct CyclePath<'a>(&'a [String]);

impl fmt::Display for CyclePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.0 {
            write!(f, "{id} -> ")?;
        }
        match self.0.first() {
            Some(first) => f.write_str(first),
            None => Ok(()),
        }
    }
}

/// A validated workflow graph.
///
/// Nodes are numbered `0..len()` in the order they were given; edges are
/// stored flat (compressed rows) in both directions. A dependency named twice
/// by the same node counts once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    dep_offsets: Vec<usize>,
    deps: Vec<usize>,
    dependent_offsets: Vec<usize>,
    dependents: Vec<usize>,
    order: Vec<usize>,
}

impl Dag {
    /// Validates and indexes a workflow given as `(id, dependencies)` pairs.
    ///
    /// # Errors
    ///
    /// [`DagError::DuplicateId`] for an id given twice,
    /// [`DagError::UnknownDependency`] for a dependency that is not a node
    /// (the first one found, in node order), [`DagError::Cycle`] when the
    /// dependencies form a cycle (one of them, when there are several).
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::dag::Dag;
    ///
    /// let nodes: Vec<(String, Vec<String>)> = vec![
    ///     ("fetch".into(), vec![]),
    ///     ("parse".into(), vec!["fetch".into()]),
    /// ];
    /// let dag = Dag::new(nodes)?;
    /// assert_eq!(dag.len(), 2);
    /// assert_eq!(dag.dependencies(dag.index_of("parse").unwrap()), &[0]);
    /// # Ok::<(), celeriac_schema::dag::DagError>(())
    /// ```
    pub fn new<I, N, D, S>(nodes: I) -> Result<Dag, DagError>
    where
        I: IntoIterator<Item = (N, D)>,
        N: Into<String>,
        D: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = nodes.into_iter();
        let (hint, _) = nodes.size_hint();
        let mut ids: Vec<String> = Vec::with_capacity(hint);
        let mut index: HashMap<String, usize> = HashMap::with_capacity(hint);
        // Dependency names are resolved once every id is known, so that a
        // node may be given before its dependencies.
        let mut names: Vec<String> = Vec::new();
        let mut name_offsets: Vec<usize> = Vec::with_capacity(hint + 1);
        name_offsets.push(0);
        for (id, dependencies) in nodes {
            let id: String = id.into();
            if index.contains_key(&id) {
                return Err(DagError::DuplicateId { id });
            }
            index.insert(id.clone(), ids.len());
            ids.push(id);
            names.extend(dependencies.into_iter().map(|d| d.as_ref().to_owned()));
            name_offsets.push(names.len());
        }

        let n = ids.len();
        let mut dep_offsets = Vec::with_capacity(n + 1);
        let mut deps = Vec::with_capacity(names.len());
        dep_offsets.push(0);
        // `seen[d] == node + 1` when `node` already lists `d`: drops repeats
        // without clearing a set per node.
        let mut seen = vec![0usize; n];
        let mut in_degree = vec![0usize; n];
        let mut out_degree = vec![0usize; n];
        for node in 0..n {
            for name in &names[name_offsets[node]..name_offsets[node + 1]] {
                let Some(&dep) = index.get(name) else {
                    return Err(DagError::UnknownDependency {
                        node: ids[node].clone(),
                        dependency: name.clone(),
                    });
                };
                if seen[dep] != node + 1 {
                    seen[dep] = node + 1;
                    deps.push(dep);
                    in_degree[node] += 1;
                    out_degree[dep] += 1;
                }
            }
            dep_offsets.push(deps.len());
        }
        drop(names);

        let mut dependent_offsets = Vec::with_capacity(n + 1);
        dependent_offsets.push(0);
        for d in &out_degree {
            let last = dependent_offsets.last().copied().unwrap_or(0);
            dependent_offsets.push(last + d);
        }
        let mut fill = dependent_offsets[..n].to_vec();
        let mut dependents = vec![0usize; deps.len()];
        for node in 0..n {
            for &dep in &deps[dep_offsets[node]..dep_offsets[node + 1]] {
                dependents[fill[dep]] = node;
                fill[dep] += 1;
            }
        }

        // Kahn's algorithm; ties go to the node given first among the ready
        // ones of the same round, which keeps the order stable.
        let mut order = Vec::with_capacity(n);
        let mut remaining = in_degree;
        order.extend((0..n).filter(|&i| remaining[i] == 0));
        let mut next = 0;
        while next < order.len() {
            let node = order[next];
            next += 1;
            for &child in &dependents[dependent_offsets[node]..dependent_offsets[node + 1]] {
                remaining[child] -= 1;
                if remaining[child] == 0 {
                    order.push(child);
                }
            }
        }

        let dag = Dag {
            ids,
            index,
            dep_offsets,
            deps,
            dependent_offsets,
            dependents,
            order,
        };
        if dag.order.len() < n {
            return Err(DagError::Cycle {
                path: dag.find_cycle(&remaining),
            });
        }
        Ok(dag)
    }

    /// One cycle among the nodes Kahn's algorithm could not order.
    ///
    /// Every such node has a dependency that is not ordered either, so
    /// walking from one along unordered dependencies must come back to a
    /// node already seen: the walk from there on is a cycle.
    fn find_cycle(&self, remaining: &[usize]) -> Vec<String> {
        let n = self.ids.len();
        let Some(start) = (0..n).find(|&i| remaining[i] > 0) else {
            return Vec::new();
        };
        let mut position = vec![usize::MAX; n];
        let mut walk = Vec::new();
        let mut node = start;
        while position[node] == usize::MAX {
            position[node] = walk.len();
            walk.push(node);
            match self
                .dependencies(node)
                .iter()
                .copied()
                .find(|&d| remaining[d] > 0)
            {
                Some(dep) => node = dep,
                None => return Vec::new(),
            }
        }
        // The walk follows dependencies backwards; a cycle reads in the
        // order things would run.
        let mut cycle: Vec<usize> = walk[position[node]..].to_vec();
        cycle.reverse();
        if let Some(first) = (0..cycle.len()).min_by_key(|&i| cycle[i]) {
            cycle.rotate_left(first);
        }
        cycle.into_iter().map(|i| self.ids[i].clone()).collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the workflow has no node.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of edges (distinct dependencies, summed over the nodes).
    pub fn edge_count(&self) -> usize {
        self.deps.len()
    }

    /// The id of node `index`.
    ///
    /// # Panics
    ///
    /// When `index >= len()`.
    pub fn id(&self, index: usize) -> &str {
        &self.ids[index]
    }

    /// Every id, by index.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The index of the node named `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The nodes node `index` depends on, in the order it named them.
    ///
    /// # Panics
    ///
    /// When `index >= len()`.
    pub fn dependencies(&self, index: usize) -> &[usize] {
        &self.deps[self.dep_offsets[index]..self.dep_offsets[index + 1]]
    }

    /// The nodes that depend directly on node `index`, in index order.
    ///
    /// # Panics
    ///
    /// When `index >= len()`.
    pub fn dependents(&self, index: usize) -> &[usize] {
        &self.dependents[self.dependent_offsets[index]..self.dependent_offsets[index + 1]]
    }

    /// The nodes with no dependency, in index order.
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| self.dep_offsets[i] == self.dep_offsets[i + 1])
    }

    /// Every node once, each after all its dependencies.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// Node `index` and every node that depends on it, directly or
    /// transitively, each once, nearest first.
    ///
    /// # Panics
    ///
    /// When `index >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::dag::Dag;
    ///
    /// let dag = Dag::new([("a", vec![]), ("b", vec!["a"]), ("c", vec!["b"]), ("e", vec![])])?;
    /// assert_eq!(dag.downstream(0), [0, 1, 2]);
    /// # Ok::<(), celeriac_schema::dag::DagError>(())
    /// ```
    pub fn downstream(&self, index: usize) -> Vec<usize> {
        let mut seen = vec![false; self.len()];
        seen[index] = true;
        let mut out = vec![index];
        let mut next = 0;
        while next < out.len() {
            let node = out[next];
            next += 1;
            for &child in self.dependents(node) {
                if !seen[child] {
                    seen[child] = true;
                    out.push(child);
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dag(nodes: &[(&str, &[&str])]) -> Result<Dag, DagError> {
        Dag::new(nodes.iter().map(|(id, deps)| (*id, deps.iter().copied())))
    }

    fn names(dag: &Dag, nodes: &[usize]) -> Vec<String> {
        nodes.iter().map(|&i| dag.id(i).to_owned()).collect()
    }

    #[test]
    fn dag_empty() {
        let d = dag(&[]).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.topological_order(), &[] as &[usize]);
        assert_eq!(d.roots().count(), 0);
    }

    #[test]
    fn dag_diamond_orders_and_indexes_both_ways() {
        let d = dag(&[
            ("d", &["b", "c"]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("a", &[]),
            ("e", &[]),
        ])
        .unwrap();
        assert_eq!(names(&d, d.topological_order()), ["a", "e", "b", "c", "d"]);
        let a = d.index_of("a").unwrap();
        assert_eq!(names(&d, d.dependents(a)), ["b", "c"]);
        assert_eq!(names(&d, d.dependencies(0)), ["b", "c"]);
        assert_eq!(names(&d, &d.roots().collect::<Vec<_>>()), ["a", "e"]);
        assert_eq!(names(&d, &d.downstream(a)), ["a", "b", "c", "d"]);
        assert_eq!(d.edge_count(), 4);
    }

    #[test]
    fn dag_repeated_dependency_counts_once() {
        let d = dag(&[("a", &[]), ("b", &["a", "a"])]).unwrap();
        assert_eq!(d.dependencies(1), &[0]);
        assert_eq!(d.dependents(0), &[1]);
        assert_eq!(d.topological_order(), &[0, 1]);
    }

    #[test]
    fn dag_duplicate_id() {
        let err = dag(&[("a", &[]), ("b", &[]), ("a", &[])]).unwrap_err();
        assert_eq!(err, DagError::DuplicateId { id: "a".into() });
        assert_eq!(err.to_string(), "node `a` is defined twice");
    }

    #[test]
    fn dag_unknown_dependency_names_node_and_id() {
        let err = dag(&[("a", &[]), ("b", &["a", "ghost"])]).unwrap_err();
        assert_eq!(
            err,
            DagError::UnknownDependency {
                node: "b".into(),
                dependency: "ghost".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("`b`") && msg.contains("`ghost`"), "{msg}");
    }

    #[test]
    fn dag_cycle_is_named_as_a_path() {
        let err = dag(&[("e", &[]), ("a", &["c"]), ("b", &["a"]), ("c", &["b"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the workflow has a cycle: a -> b -> c -> a"
        );
        assert_eq!(err.ids(), ["a", "b", "c"]);
    }

    #[test]
    fn dag_cycle_found_behind_acyclic_prefix() {
        // x feeds a cycle, and y hangs off it: neither is part of the path.
        let err = dag(&[
            ("x", &[]),
            ("y", &["q"]),
            ("p", &["x", "r"]),
            ("q", &["p"]),
            ("r", &["q"]),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the workflow has a cycle: p -> q -> r -> p"
        );
    }

    #[test]
    fn dag_self_dependency_is_a_cycle() {
        let err = dag(&[("a", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "the workflow has a cycle: a -> a");
    }

    #[test]
    fn dag_long_chain_and_long_cycle_do_not_recurse() {
        let n = 200_000;
        let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let chain = Dag::new((0..n).map(|i| (ids[i].clone(), (i > 0).then(|| ids[i - 1].clone()))))
            .unwrap();
        assert_eq!(chain.topological_order().len(), n);
        assert_eq!(chain.downstream(0).len(), n);

        let cycle =
            Dag::new((0..n).map(|i| (ids[i].clone(), [ids[(i + n - 1) % n].clone()]))).unwrap_err();
        match cycle {
            DagError::Cycle { path } => {
                assert_eq!(path.len(), n);
                assert_eq!(path[0], "n0");
                assert_eq!(path[1], "n1");
            }
            other => panic!("expected a cycle, got {other}"),
        }
    }
}
