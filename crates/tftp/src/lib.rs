//! Read-only TFTP server (placeholder; being written).
