//! The web dashboard against a real broker and Redis: its JSON API (what
//! each page shows, the login, read-only mode, the write rules, replay and
//! delete of dead letters, the revoke and heartbeat hooks), the `celeriac
//! dashboard` command, and a real headless Chromium that loads every page,
//! replays a dead letter from the UI and saves the screenshots kept in
//! `docs/screenshots/`. Each test runs in a namespace of its own.

#![allow(clippy::unwrap_used)]

mod support;
mod webdriver;

mod api;
mod auth;
mod browser;
mod cli;
mod hooks;
