//! celeriac-producer
