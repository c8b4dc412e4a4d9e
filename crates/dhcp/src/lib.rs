//! DHCPv4 for network boot (placeholder; being written).
