//! Bellows' read-only TFTP server, the first file a network-booting machine
//! fetches.
//!
//! The protocol is pure and IO-free at its core, so it can be tested with
//! recorded packets and fuzzed:
//! - [`packet`]: the wire format, decoding any byte string without panicking;
//! - [`options`]: RFC 2347 negotiation of blksize, timeout, tsize, windowsize;
//! - [`transfer`]: one transfer's state machine (RFC 7440 windows,
//!   retransmission with backoff, block-number rollover, transfer IDs).
//!
//! Around it:
//! - [`files`]: request-path sanitising (MAC prefixes, `\` separators), the
//!   [`FileSource`] trait and a directory implementation that refuses escapes;
//! - [`policy`]: which requests are served and how refusals read, as pure
//!   functions the loop calls;
//! - [`netascii`]: the netascii view of a file;
//! - [`server`]: the tokio socket loop, one task and one port per transfer.
//!
//! ```no_run
//! # async fn example() -> Result<(), bellows_tftp::TftpError> {
//! use std::sync::Arc;
//! use bellows_tftp::{DirectorySource, TftpConfig, TftpServer};
//!
//! let source = Arc::new(DirectorySource::new("/srv/tftp")?);
//! let server = TftpServer::bind(TftpConfig::default(), source)
//!     .await?
//!     .with_transfer_hook(|record| println!("{} got {}", record.peer, record.requested));
//! let stats = server.stats();
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{:?}", stats.snapshot());
//! # Ok(())
//! # }
//! ```

pub mod files;
pub mod netascii;
pub mod options;
pub mod packet;
pub mod policy;
pub mod server;
pub mod transfer;

pub use files::{
    DirectorySource, FileContent, FileSource, MemorySource, OpenError, RequestPath, SafePath,
    parse_path_mac, sanitize_request_path,
};
pub use options::{Negotiated, TransferLimits, negotiate};
pub use packet::{DecodeError, ErrorCode, Packet};
pub use server::{
    DEFAULT_MAX_TRANSFERS_PER_CLIENT, StatsHandle, TftpConfig, TftpError, TftpServer, TftpStats,
    TransferHook, TransferRecord, serve,
};
pub use transfer::{ReadTransfer, TransferOutcome, Transmit};
