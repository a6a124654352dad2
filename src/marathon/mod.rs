//! Everything that talks to Marathon or knows its JSON.

pub mod client;
pub mod convert;
pub mod pods;
pub mod stream;
pub mod wire;
