//! Declaring the topology described by [`celeriac_schema::Topology`].

use celeriac_schema::topology::{ArgValue, Argument, Declaration, ExchangeKind};
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use crate::error::{Error, Result};

/// Declares every item, in order. Declarations are idempotent: running this
/// again with the same topology changes nothing.
///
/// # Errors
///
/// [`Error::Amqp`] when the broker refuses a declaration, typically because
/// a queue exists with other arguments (another delivery limit, say).
pub async fn declare(channel: &Channel, declarations: &[Declaration]) -> Result<()> {
    for item in declarations {
        match item {
            Declaration::Exchange { name, kind } => {
                let kind = match kind {
                    ExchangeKind::Direct => lapin::ExchangeKind::Direct,
                    ExchangeKind::Topic => lapin::ExchangeKind::Topic,
                    ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
                };
                channel
                    .exchange_declare(
                        name.as_str().into(),
                        kind,
                        ExchangeDeclareOptions {
                            durable: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(Error::amqp("declaring an exchange"))?;
            }
            Declaration::Queue { name, arguments } => {
                channel
                    .queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..QueueDeclareOptions::default()
                        },
                        field_table(arguments),
                    )
                    .await
                    .map_err(Error::amqp("declaring a queue"))?;
            }
            Declaration::QueueBinding {
                queue,
                exchange,
                key,
            } => {
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.as_str().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(Error::amqp("binding a queue"))?;
            }
            Declaration::ExchangeBinding {
                source,
                destination,
                key,
            } => {
                channel
                    .exchange_bind(
                        destination.as_str().into(),
                        source.as_str().into(),
                        key.as_str().into(),
                        ExchangeBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(Error::amqp("binding an exchange"))?;
            }
        }
    }
    Ok(())
}

/// Queue or exchange arguments as an AMQP field table.
pub fn field_table(arguments: &[Argument]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in arguments {
        let value = match value {
            ArgValue::Str(s) => AMQPValue::LongString(s.as_str().into()),
            ArgValue::Int(n) => AMQPValue::LongLongInt(*n),
        };
        table.insert((*name).into(), value);
    }
    table
}
