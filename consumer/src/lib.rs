//! celeriac-consumer
