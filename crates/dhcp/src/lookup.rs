//! What the responder asks the rest of Bellows: who a MAC is.

use std::collections::HashMap;
use std::sync::Arc;

use bellows_model::{Hardware, MacAddr};

/// Finds the machine that owns a MAC.
///
/// Called on every packet, inside the socket loop: implementations must
/// answer from memory (the store's in-memory index, invalidated on change)
/// and never block on a database or the network.
pub trait Lookup: Send + Sync {
    /// The hardware record with an interface whose DHCP MAC is `mac`.
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>>;

    /// Told after each reply is sent, for the machine's boot timeline; must
    /// return at once. Nothing by default.
    fn replied(&self, _reply: &crate::responder::Reply) {}
}

/// A fixed map, for tests, benches and small static set-ups.
impl Lookup for HashMap<MacAddr, Arc<Hardware>> {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.get(&mac).cloned()
    }
}

/// Lets an `Arc<L>` be passed where a lookup is expected.
impl<L: Lookup + ?Sized> Lookup for Arc<L> {
    fn replied(&self, reply: &crate::responder::Reply) {
        (**self).replied(reply)
    }

    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        (**self).by_mac(mac)
    }
}
