//! The sandbox against real processes.
