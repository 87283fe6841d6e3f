//! The embedded local CSP.
