//! Filesystems on a block device: probe, make, check, grow, and measure.
