//! iPXE scripts (placeholder; being written).
