//! What `weft-agent` and `weft-controller` need alike, so each daemon's `main` keeps only its
//! own flags and wiring: the HTTP server of `/metrics`, `/healthz` and `/readyz` ([`http`]),
//! the log setup behind `--log-format` ([`log`]) and how watches of the API server retry
//! ([`watch`]).
//!
//! Its own crate rather than a module of `weft-api`: the API crate is the schema that the
//! harness and every tool read, and should not pull in an HTTP server and a metrics registry.

pub mod http;
pub mod log;
pub mod watch;
