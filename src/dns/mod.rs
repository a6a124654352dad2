//! The DNS side: deciding answers (`answer`), encoding them without allocation (`encode`),
//! the UDP fast path (`fast`), hickory's request handler (`handler`) and socket wiring
//! (`listen`).

pub mod answer;
#[cfg(target_os = "linux")]
mod batch;
pub mod encode;
pub mod fast;
pub mod handler;
pub mod listen;
pub mod metrics;
pub mod policy;
pub mod tcp;
