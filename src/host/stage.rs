//! Host-side node procedures.
