//! Front ends: each translates one protocol into engine calls and engine errors back.

pub mod api;
pub mod csi;
pub mod docker;
