//! Canvas: chains, groups and chords, compiled to one workflow DAG.
//!
//! - [`chain`]: each step's result becomes the next step's input;
//! - [`group`]: members run in parallel, their results come back in order;
//! - [`chord`]: a group (or any canvas) and a callback that receives the
//!   header's results in order;
//! - and any nesting of them (a chain of chords, a chord of chains).
//!
//! A general DAG is a [`Workflow`] built node by node. Either way,
//! [`Producer::submit`](crate::Producer::submit) validates it, stores it
//! and publishes the nodes that wait for nothing.
//!
//! # Examples
//!
//! ```
//! use celeriac_producer::canvas::{chain, chord, group, Signature};
//! use celeriac_schema::Task;
//!
//! struct Add;
//! impl Task for Add {
//!     const NAME: &'static str = "math.add";
//!     type Input = (i64, i64);
//!     type Output = i64;
//! }
//! struct Sum;
//! impl Task for Sum {
//!     const NAME: &'static str = "math.sum";
//!     type Input = Vec<i64>;
//!     type Output = i64;
//! }
//!
//! // (1 + 2, 3 + 4) summed by a callback.
//! let canvas = chord(
//!     group([Signature::new::<Add>(&(1, 2))?, Signature::new::<Add>(&(3, 4))?]),
//!     Signature::callback::<Sum>(),
//! );
//! let (workflow, outputs) = canvas.compile()?;
//! assert_eq!(workflow.nodes.len(), 3);
//! assert_eq!(outputs.len(), 1, "the callback's result is the chord's");
//! # Ok::<(), celeriac_producer::Error>(())
//! ```

use celeriac_schema::workflow::{InputFrom, Node, Workflow};
use celeriac_schema::{RetryPolicy, Task};

use crate::error::Result;

/// One task in a canvas: its name, and its input unless it takes its
/// predecessors' results.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    task: String,
    input: Option<rmpv::Value>,
    queue: Option<String>,
    retry: Option<RetryPolicy>,
}

impl Signature {
    /// Task `T` with a given input.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Schema`] when the input cannot be encoded.
    pub fn new<T: Task>(input: &T::Input) -> Result<Signature> {
        Ok(Signature {
            task: T::NAME.to_owned(),
            input: Some(celeriac_schema::to_value(input)?),
            queue: None,
            retry: None,
        })
    }

    /// Task `T` taking what comes before it: the previous step's result in
    /// a chain (the list of results after a group), or the header's
    /// results in a chord.
    pub fn callback<T: Task>() -> Signature {
        Signature::untyped(T::NAME, None)
    }

    /// An untyped signature (for tools and other languages' tasks).
    pub fn untyped(task: impl Into<String>, input: Option<rmpv::Value>) -> Signature {
        Signature {
            task: task.into(),
            input,
            queue: None,
            retry: None,
        }
    }

    /// Runs on logical queue `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Signature {
        self.queue = Some(queue.into());
        self
    }

    /// Retries with `policy`.
    pub fn retry(mut self, policy: RetryPolicy) -> Signature {
        self.retry = Some(policy);
        self
    }
}

/// A shape of tasks; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub enum Canvas {
    /// One task.
    Task(Signature),
    /// Steps one after another, each fed the previous one's result.
    Chain(Vec<Canvas>),
    /// Members side by side.
    Group(Vec<Canvas>),
    /// A header, then a callback fed the header's results in order.
    Chord(Box<Canvas>, Signature),
}

/// Steps one after another.
pub fn chain<I: IntoIterator<Item = C>, C: Into<Canvas>>(steps: I) -> Canvas {
    Canvas::Chain(steps.into_iter().map(Into::into).collect())
}

/// Members side by side.
pub fn group<I: IntoIterator<Item = C>, C: Into<Canvas>>(members: I) -> Canvas {
    Canvas::Group(members.into_iter().map(Into::into).collect())
}

/// A header and a callback fed its results in order.
pub fn chord(header: impl Into<Canvas>, callback: Signature) -> Canvas {
    Canvas::Chord(Box::new(header.into()), callback)
}

impl From<Signature> for Canvas {
    fn from(signature: Signature) -> Canvas {
        Canvas::Task(signature)
    }
}

impl Canvas {
    /// The workflow this canvas stands for, and its output nodes: the one
    /// whose result is the canvas's result, or the members of a group in
    /// order.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Workflow`] when the result is not a valid workflow.
    pub fn compile(&self) -> Result<(Workflow, Vec<String>)> {
        let mut workflow = Workflow::new();
        let mut counter = 0usize;
        let outputs = add(self, &[], false, &mut workflow, &mut counter);
        workflow.validate()?;
        Ok((workflow, outputs))
    }
}

/// Adds `canvas` after `preds`; returns its exits. `ordered` forces the
/// entry tasks to take their predecessors' results as a list (a chord
/// callback).
fn add(
    canvas: &Canvas,
    preds: &[String],
    ordered: bool,
    workflow: &mut Workflow,
    counter: &mut usize,
) -> Vec<String> {
    match canvas {
        Canvas::Task(sig) => {
            let id = format!("{}-{}", *counter, sig.task);
            *counter += 1;
            let (input, from) = match (&sig.input, preds.len()) {
                (Some(input), _) => (input.clone(), InputFrom::Given),
                (None, 0) => (rmpv::Value::Nil, InputFrom::Given),
                (None, 1) if !ordered => (rmpv::Value::Nil, InputFrom::Result),
                (None, _) => (rmpv::Value::Nil, InputFrom::InOrder),
            };
            let mut node = Node::new(id.clone(), sig.task.clone(), input)
                .after(preds.iter().cloned())
                .input_from(from);
            node.queue = sig.queue.clone();
            node.retry = sig.retry;
            workflow.push(node);
            vec![id]
        }
        Canvas::Chain(steps) => {
            let mut exits = preds.to_vec();
            for (i, step) in steps.iter().enumerate() {
                exits = add(step, &exits, ordered && i == 0, workflow, counter);
            }
            exits
        }
        Canvas::Group(members) => members
            .iter()
            .flat_map(|m| add(m, preds, ordered, workflow, counter))
            .collect(),
        Canvas::Chord(header, callback) => {
            let exits = add(header, preds, ordered, workflow, counter);
            add(
                &Canvas::Task(callback.clone()),
                &exits,
                true,
                workflow,
                counter,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(name: &str) -> Signature {
        Signature::untyped(name, Some(rmpv::Value::from(1)))
    }

    fn next(name: &str) -> Signature {
        Signature::untyped(name, None)
    }

    fn node<'a>(wf: &'a Workflow, id: &str) -> &'a Node {
        wf.node(id).unwrap_or_else(|| panic!("no node {id}"))
    }

    #[test]
    fn a_chain_feeds_each_result_to_the_next_step() -> Result<()> {
        let (wf, out) = chain([sig("a"), next("b"), next("c")]).compile()?;
        assert_eq!(out, ["2-c"]);
        assert_eq!(node(&wf, "1-b").dependencies, ["0-a"]);
        assert_eq!(node(&wf, "1-b").input_from, InputFrom::Result);
        assert_eq!(node(&wf, "2-c").dependencies, ["1-b"]);
        Ok(())
    }

    #[test]
    fn a_group_returns_its_members_in_order() -> Result<()> {
        let (wf, out) = group([sig("a"), sig("b"), sig("c")]).compile()?;
        assert_eq!(out, ["0-a", "1-b", "2-c"]);
        assert!(wf.nodes.iter().all(|n| n.dependencies.is_empty()));
        Ok(())
    }

    #[test]
    fn a_chain_of_chords_and_a_chord_of_chains() -> Result<()> {
        // chain(chord([a, b], c), chord([d, e], f)): d and e wait for c.
        let canvas = chain([
            chord(group([sig("a"), sig("b")]), next("c")),
            chord(group([next("d"), next("e")]), next("f")),
        ]);
        let (wf, out) = canvas.compile()?;
        assert_eq!(out, ["5-f"]);
        assert_eq!(node(&wf, "2-c").dependencies, ["0-a", "1-b"]);
        assert_eq!(node(&wf, "2-c").input_from, InputFrom::InOrder);
        assert_eq!(node(&wf, "3-d").dependencies, ["2-c"]);
        assert_eq!(node(&wf, "3-d").input_from, InputFrom::Result);
        assert_eq!(node(&wf, "5-f").dependencies, ["3-d", "4-e"]);

        // chord([chain(a, b), chain(c, d)], e): e gets [b, d] in order.
        let canvas = chord(
            group([chain([sig("a"), next("b")]), chain([sig("c"), next("d")])]),
            next("e"),
        );
        let (wf, out) = canvas.compile()?;
        assert_eq!(out, ["4-e"]);
        assert_eq!(node(&wf, "4-e").dependencies, ["1-b", "3-d"]);
        assert_eq!(node(&wf, "4-e").input_from, InputFrom::InOrder);
        Ok(())
    }

    #[test]
    fn a_step_after_a_group_takes_the_list_of_results() -> Result<()> {
        let (wf, _) = chain([group([sig("a"), sig("b")]), next("c").into()]).compile()?;
        assert_eq!(node(&wf, "2-c").input_from, InputFrom::InOrder);
        Ok(())
    }
}
