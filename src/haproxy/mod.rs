//! `marathon-dns haproxy-config`: HAProxy configuration from Marathon's app definitions.
//! `render` is pure (definitions → text); `generate` fetches, writes, follows the event
//! stream and reloads.

pub mod generate;
pub mod render;

pub use render::{RenderOptions, render};
