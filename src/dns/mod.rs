//! Serving DNS: the query path ([`handler`]) and socket wiring ([`listen`]).

pub mod handler;
pub mod listen;
