//! Tests of the exec runner.
