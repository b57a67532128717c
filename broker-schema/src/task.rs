//! The `Task` trait that producers and workers share.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Ties a task name to its typed input and output.
///
/// Define each task once, in a crate both the producer and the worker
/// depend on; the producer sends `Input` values under `NAME` and the worker's
/// handler for `NAME` receives them and returns `Output`.
///
/// # Examples
///
/// ```
/// use celeriac_schema::Task;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Resize { pub url: String, pub width: u32 }
///
/// pub struct ResizeImage;
///
/// impl Task for ResizeImage {
///     const NAME: &'static str = "images.resize";
///     type Input = Resize;
///     type Output = String;
/// }
///
/// assert_eq!(ResizeImage::NAME, "images.resize");
/// ```
pub trait Task: Send + Sync + 'static {
    /// The task name on the wire (envelope `task`, AMQP `type`).
    const NAME: &'static str;
    /// What the producer sends.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What the handler returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Whether workers store the output in the state store (for result
    /// handles and workflows). Tasks whose output nobody reads can opt out.
    const STORE_RESULT: bool = true;
}
