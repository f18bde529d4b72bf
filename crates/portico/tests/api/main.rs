//! Integration tests of the `portico` binary's application: real listeners on free
//! loopback ports, a real HTTP client, and the real database. Every test runs on SQLite,
//! and again on a fresh PostgreSQL database when `PORTICO_TEST_DATABASE_URL` is set.

#[macro_use]
mod helpers;

mod accounts;
mod apps;
mod bad_input;
mod cli;
mod crash;
mod gateway;
mod merchants;
mod messaging;
mod oauth;
mod program;
mod tenancy;
