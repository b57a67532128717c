//! Task definitions shared by the example producer and the example worker,
//! as an application would share them between its services.

use celeriac_schema::Task;
use serde::{Deserialize, Serialize};

/// Input of [`SendWelcomeEmail`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    /// Recipient address.
    pub to: String,
    /// Name to greet.
    pub name: String,
}

/// `shop.send-welcome-email`: greets a new customer; returns the message id.
#[derive(Debug)]
pub struct SendWelcomeEmail;

impl Task for SendWelcomeEmail {
    const NAME: &'static str = "shop.send-welcome-email";
    type Input = Welcome;
    type Output = String;
}

/// `shop.add`: adds two numbers.
#[derive(Debug)]
pub struct Add;

impl Task for Add {
    const NAME: &'static str = "shop.add";
    type Input = (i64, i64);
    type Output = i64;
}

/// The broker URL from `AMQP_ADDR`, or the local default.
pub fn amqp_addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
