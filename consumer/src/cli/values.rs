//! Values of worker options that parse from text.

use std::net::SocketAddr;
use std::str::FromStr;

/// The value of `--metrics-addr`: a socket address, or `None` for `off`.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::cli::MetricsAddr;
///
/// let on: MetricsAddr = "127.0.0.1:9464".parse().unwrap();
/// assert_eq!(on.0, Some(([127, 0, 0, 1], 9464).into()));
/// assert_eq!("off".parse::<MetricsAddr>().unwrap().0, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        crate::http::parse_metrics_addr(value).map(MetricsAddr)
    }
}
