//! # celeriac-dlq: the dead-letter tool
//!
//! Library behind the `celeriac-dlq` command: list, show, count, export,
//! import, replay and purge the dead letters of a celeriac namespace
//! (`{ns}.dlq.{queue}`), safely under a kill at any moment.
//!
//! - [`scan`]: reading a dead-letter queue with consumers and manual
//!   acknowledgements, bounded by its length at the start; messages not
//!   acted on go back in one `nack` at the end.
//! - [`dead_letter`]: the failure details of a message, from our headers or
//!   from the broker's `x-death`.
//! - [`filter`]: which dead letters a command acts on.
//! - [`replay`]: the copy sent back to the work queue, and [`signing`]:
//!   its signature when workers require signed messages.
//! - [`record`]: the JSON Lines form of `export` and `import`.
//! - [`commands`]: the subcommands, [`run`] to execute a parsed [`Cli`].
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() {
//! use clap::Parser;
//!
//! let cli = celeriac_dlq::Cli::parse_from(["celeriac-dlq", "--queue", "default", "stats"]);
//! let code = match celeriac_dlq::run(cli).await {
//!     Ok(outcome) => outcome.exit_code(),
//!     Err(e) => e.exit_code(),
//! };
//! # let _ = code;
//! # }
//! ```

pub mod cli;
pub mod commands;
pub mod dead_letter;
pub mod discover;
mod error;
pub mod filter;
pub mod record;
pub mod replay;
pub mod scan;
pub mod signing;

pub use cli::{Cli, Command, FilterArgs};
pub use commands::{run, Outcome};
pub use dead_letter::DeadLetter;
pub use error::{exit, Error, Result};
pub use filter::Filter;
