//! The tasks the `celeriac-test-worker` binary adds to the built-in ones.

/// Input of the worker's `test.record` task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordInput {
    /// How long the task sleeps before recording its run.
    pub ms: u64,
}

/// `test.record`: sleeps `ms`, then appends `{task_id} {attempt} {pid}` to
/// the worker's record file.
pub struct Record;

impl celeriac_schema::Task for Record {
    const NAME: &'static str = "test.record";
    type Input = RecordInput;
    type Output = ();
}

/// Input of [`Effect`].
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct EffectInput {
    /// Any number; the result is twice it.
    pub n: u64,
    /// How long the run takes.
    pub ms: u64,
}

/// `test.effect`: appends `start {task_id} {pid} {unix µs}` to the
/// record file, sleeps `ms`, appends `end {task_id} {pid} {unix µs}`
/// and returns `2 n`. The lines show every run, finished or cut short.
pub struct Effect;

impl celeriac_schema::Task for Effect {
    const NAME: &'static str = "test.effect";
    type Input = EffectInput;
    type Output = u64;
}

/// `test.dag-node`: a workflow node that takes its dependencies'
/// results by name, logs its run like [`Effect`] (`start`/`end` lines),
/// sleeps 20 ms and returns 1 + the largest input (its depth).
pub struct DagNode;

impl celeriac_schema::Task for DagNode {
    const NAME: &'static str = "test.dag-node";
    type Input = std::collections::BTreeMap<String, u64>;
    type Output = u64;
}

/// `test.crash`: aborts the worker process.
pub struct Crash;

impl celeriac_schema::Task for Crash {
    const NAME: &'static str = "test.crash";
    type Input = ();
    type Output = ();
}

/// Input of [`BenchNoop`].
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct NoopInput {
    /// When the task was handed to the producer, in Unix microseconds.
    pub t: u64,
}

/// `bench.noop`: the benchmark worker's no-op task, which measures the
/// time from `t` to its start.
pub struct BenchNoop;

impl celeriac_schema::Task for BenchNoop {
    const NAME: &'static str = "bench.noop";
    type Input = NoopInput;
    type Output = ();
}

/// The current time in Unix microseconds.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
