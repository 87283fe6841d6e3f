//! Transports, one per access protocol: each makes a volume's block device appear on this
//! host, finds it again by its identity (never by a stored `/dev` name), and removes it.

mod fc;
mod iscsi;
mod local;
mod multipath;
mod nvme;
mod scsi;
mod sysfs;
#[cfg(test)]
mod tests_support;

pub use fc::FcTransport;
pub use iscsi::IscsiTransport;
pub use local::LocalTransport;
pub use nvme::NvmeTransport;

use super::Host;
use crate::target::AttachTarget;
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_base::error::Result;

/// iscsid holds the I/O of a session whose connection broke for `replacement_timeout`
/// (120 s by default) before failing it. With a second path that is two minutes of stalled
/// I/O before dm-multipath even hears of the failure: on a multipath volume volbridge sets
/// this instead (a dead path is noticed by the NOP-Out ping within 10 s, then failed over).
pub const MULTIPATH_REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Node-side settings the transports need.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Canonical directories whose files `local` volumes may be attached from (csp-api.md
    /// §8.3): by default the embedded CSP's data dir.
    pub local_roots: Vec<PathBuf>,
    /// How long to wait for a device to appear after login/connect/rescan.
    pub device_wait: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            local_roots: Vec::new(),
            device_wait: Duration::from_secs(30),
        }
    }
}

/// One access protocol: each implementation takes its own variant of [`AttachTarget`].
pub trait Transport: Send + Sync {
    type Target: Sync;
    /// Makes the device appear (idempotent) and returns its current path.
    fn attach(&self, host: &dyn Host, target: &Self::Target) -> Result<PathBuf>;
    /// The device's current path, found by its identity; `None` when it is not present.
    fn find(&self, host: &dyn Host, target: &Self::Target) -> Result<Option<PathBuf>>;
    /// Removes the device from this host; a device that is not present is success.
    fn detach(&self, host: &dyn Host, target: &Self::Target) -> Result<()>;
    /// Whether the volume is provably all zeros without reading the device (a sparse file
    /// with no data), so a fresh attach can skip the blkid probe. `false` = probe.
    fn known_blank(&self, _host: &dyn Host, _target: &Self::Target) -> Result<bool> {
        Ok(false)
    }
    /// Makes an attached device see the size the CSP has grown the volume to. Loop devices
    /// re-read their file; SCSI and NVMe devices learn it from the array.
    fn refresh_size(&self, _host: &dyn Host, _target: &Self::Target, _device: &Path) -> Result<()> {
        Ok(())
    }
}

/// One volume's transport bound to its target: what staging, expansion and the engine
/// hold, whatever the protocol. Made by [`AttachTarget::attacher`].
pub trait Attacher: Send + Sync {
    fn attach(&self, host: &dyn Host) -> Result<PathBuf>;
    fn find(&self, host: &dyn Host) -> Result<Option<PathBuf>>;
    fn detach(&self, host: &dyn Host) -> Result<()>;
    fn known_blank(&self, host: &dyn Host) -> Result<bool>;
    fn refresh_size(&self, host: &dyn Host, device: &Path) -> Result<()>;
}

/// A transport with the target it works on.
struct Bound<'a, T: Transport> {
    transport: T,
    target: &'a T::Target,
}

/// Binds a transport to its own kind of target.
fn bind<T: Transport>(transport: T, target: &T::Target) -> Bound<'_, T> {
    Bound { transport, target }
}

impl<T: Transport> Attacher for Bound<'_, T> {
    fn attach(&self, host: &dyn Host) -> Result<PathBuf> {
        self.transport.attach(host, self.target)
    }
    fn find(&self, host: &dyn Host) -> Result<Option<PathBuf>> {
        self.transport.find(host, self.target)
    }
    fn detach(&self, host: &dyn Host) -> Result<()> {
        self.transport.detach(host, self.target)
    }
    fn known_blank(&self, host: &dyn Host) -> Result<bool> {
        self.transport.known_blank(host, self.target)
    }
    fn refresh_size(&self, host: &dyn Host, device: &Path) -> Result<()> {
        self.transport.refresh_size(host, self.target, device)
    }
}

impl AttachTarget {
    /// The transport of this target's protocol, bound to it.
    pub fn attacher(&self, config: &TransportConfig) -> Box<dyn Attacher + '_> {
        match self {
            AttachTarget::Local(t) => {
                Box::new(bind(LocalTransport::new(config.local_roots.clone()), t))
            }
            AttachTarget::Iscsi(t) => Box::new(bind(IscsiTransport::new(config.device_wait), t)),
            AttachTarget::NvmeTcp(t) => Box::new(bind(NvmeTransport::new(config.device_wait), t)),
            AttachTarget::Fc(t) => Box::new(bind(FcTransport::new(config.device_wait), t)),
        }
    }
}
