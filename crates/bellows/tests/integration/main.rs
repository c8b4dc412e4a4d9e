//! Tests against the real `bellows` binary: a server process on loopback,
//! driven over HTTP and through the CLI.

mod api;
mod bmc;
mod boot;
mod boot_options;
mod byo_dhcp;
mod cli;
mod compat;
mod console;
mod containers;
mod discovery;
mod durability;
mod harness;
mod libvirt_bmc;
mod lifecycle;
mod local_boot;
mod metadata;
mod netboot;
mod observability;
mod osie;
mod osie_bench;
mod packaging;
mod replica_vm;
mod replicas;
mod security;
mod storm;
mod transport;
mod vm;
mod worker_protocol;
mod workers;
