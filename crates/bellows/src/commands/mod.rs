//! The commands, one module per noun, in the manner of tokio's mini-redis:
//! each module holds its noun's arguments, its requests (the API's own
//! types from `bellows_model::api`) and its tables. The crate root
//! dispatches to them.

pub mod bmc;
mod common;
pub mod dhcp_config;
pub mod hardware;
pub mod ipxe;
pub mod rule;
pub mod store;
pub mod template;
pub mod token;
pub mod workflow;

pub use bmc::{BmcCmd, BootDeviceArgs, NetbootArgs, PowerArgs};
pub use dhcp_config::DhcpConfigArgs;
pub use hardware::HardwareCmd;
pub use ipxe::IpxeCmd;
pub use rule::RuleCmd;
pub use store::StoreCmd;
pub use template::TemplateCmd;
pub use token::TokenCmd;
pub use workflow::WorkflowCmd;
