//! DHCPv4 for network boot: a pure responder and the socket loop around it.
//!
//! [`respond`] turns one datagram (plus where it arrived, the
//! configuration, and the in-memory hardware [`Lookup`]) into a
//! [`Decision`]: what to send and where, or why nothing is sent. It does no
//! IO, keeps no state and never panics, so it is unit-tested with bytes and
//! fuzzed (`fuzz/`). [`DhcpServer`] binds the sockets and runs it.
//!
//! Modes ([`Mode`]): `reservation` (Bellows is the DHCP server, for
//! machines with a record and a reserved IP only), `proxy` (ProxyDHCP next
//! to the site's DHCP server: boot info only, also on port 4011), `off`.
//!
//! ```no_run
//! # use std::{collections::HashMap, sync::Arc};
//! # use bellows_dhcp::*;
//! # async fn example() -> Result<(), ServerError> {
//! let hosts: Arc<dyn Lookup> = Arc::new(HashMap::new());
//! let server = DhcpServer::bind(
//!     &ListenConfig { interface: Some("br0".into()), ..ListenConfig::default() },
//!     DhcpConfig::default(),
//!     hosts,
//! )?;
//! let stats = server.stats();
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{:?}", stats.snapshot());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod lookup;
pub mod netboot;
pub mod pool;
pub mod responder;
pub mod server;
pub mod stats;
pub mod wire;

pub mod ra;

pub use config::{ConfigError, DhcpConfig, IpxeBinaries, ListenConfig, Mode, ModeParseError};
pub use lookup::Lookup;
pub use netboot::{BootPlan, ClientKind, NetbootClient};
pub use pool::LeasePool;
pub use responder::{
    Arrival, Decision, Destination, DropReason, Reply, Service, respond, respond_to,
};
pub use server::{DhcpServer, ServerError};
pub use stats::{DhcpStats, REPLY_BOOTS, REPLY_TYPES, StatsByKind, StatsSnapshot};
pub use wire::{MessageType, Request, WireError};
