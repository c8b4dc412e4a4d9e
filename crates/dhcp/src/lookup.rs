//! What the responder asks the rest of Bellows: who a MAC is, and whether
//! it was just served an iPXE binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bellows_model::{Hardware, MacAddr};

/// Finds the machine that owns a MAC.
///
/// Called on every packet, inside the socket loop: implementations must
/// answer from memory (the store's in-memory index, invalidated on change)
/// and never block on a database or the network.
pub trait Lookup: Send + Sync {
    /// The hardware record with an interface whose DHCP MAC is `mac`.
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>>;
}

/// A fixed map, for tests, benches and small static set-ups.
impl Lookup for HashMap<MacAddr, Arc<Hardware>> {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.get(&mac).cloned()
    }
}

/// Lets an `Arc<L>` be passed where a lookup is expected.
impl<L: Lookup + ?Sized> Lookup for Arc<L> {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        (**self).by_mac(mac)
    }
}

/// Remembers when each MAC last downloaded an iPXE binary (recorded by the
/// TFTP and HTTP services), so the optional `force_chainload` mode can tell
/// a NIC's own iPXE ROM from the iPXE binary Bellows just served.
///
/// Same rule as [`Lookup`]: memory only, never blocking.
pub trait BootState: Send + Sync {
    /// When `mac` last fetched an iPXE binary, if Bellows remembers.
    fn binary_served_at(&self, mac: MacAddr) -> Option<Instant>;
}

/// The default: nothing remembered, so `force_chainload` never triggers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBootState;

impl BootState for NoBootState {
    fn binary_served_at(&self, _mac: MacAddr) -> Option<Instant> {
        None
    }
}

/// Lets an `Arc<B>` be passed where a boot state is expected.
impl<B: BootState + ?Sized> BootState for Arc<B> {
    fn binary_served_at(&self, mac: MacAddr) -> Option<Instant> {
        (**self).binary_served_at(mac)
    }
}
