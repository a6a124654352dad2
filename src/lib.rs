//! marathon-dns: an authoritative DNS server for Mesos/Marathon service discovery.
//!
//! Layout (see ARCHITECTURE.md): [`marathon`] is the only code that knows Marathon's JSON and
//! talks to it; [`cluster`], [`naming`] and [`zone`] are the pure core (model → names →
//! immutable snapshot); [`dns`] serves snapshots over UDP and TCP; [`sync`] drives the model
//! from Marathon; [`sim`] is a Marathon simulator for dev mode and tests.

pub mod admin;
pub mod backoff;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod dns;
pub mod haproxy;
pub mod marathon;
pub mod naming;
pub mod resolve;
pub mod serial_file;
pub mod server;
pub mod sim;
pub mod sync;
pub mod systemd;
pub mod transfer;
pub mod zone;
