//! Power and next-boot control of machines through their BMC, for
//! Tinkerbell-style reinstalls (pbnj / rufio): IPMI over LAN through
//! `ipmitool -I lanplus`, and Redfish through reqwest.
//!
//! IO stays at the edges: [`ipmi`] and [`redfish::model`] hold pure parsing
//! and request-building tested on recorded output, the clients run one
//! bounded process or HTTP request per step, and [`job`] executes ordered
//! operations over the [`Bmc`] trait. Every operation is bounded in time, and
//! no error or `Debug` output ever contains the password.

pub mod error;
pub mod ipmi;
pub mod job;
pub mod redfish;
pub mod types;

use std::future::Future;

pub use error::BmcError;
pub use ipmi::{IpmiClient, IpmiSettings};
pub use job::{Job, JobState, Operation, PollPolicy, Step, StepState};
pub use redfish::{RedfishClient, RedfishSettings};
pub use types::{
    BmcEndpoint, BootDevice, BootOverride, Credentials, Password, PowerAction, PowerState, Protocol,
};

/// What every BMC backend can be asked; the job executor and the server use
/// only this, so backends (and test fakes) are interchangeable.
pub trait Bmc: Send + Sync {
    /// Reads the current power state.
    fn power_status(&self) -> impl Future<Output = Result<PowerState, BmcError>> + Send;
    /// Requests a power change; it may land later (see [`job::wait_for_power`]).
    fn power(&self, action: PowerAction) -> impl Future<Output = Result<(), BmcError>> + Send;
    /// Sets the next boot device.
    fn set_boot_device(
        &self,
        device: BootDevice,
        options: BootOverride,
    ) -> impl Future<Output = Result<(), BmcError>> + Send;
    /// Mounts an ISO image by URL as virtual media, where supported.
    fn insert_virtual_media(
        &self,
        image_url: &str,
    ) -> impl Future<Output = Result<(), BmcError>> + Send;
    /// Unmounts the virtual media, where supported.
    fn eject_virtual_media(&self) -> impl Future<Output = Result<(), BmcError>> + Send;
}

/// Settings for both backends, with bounded defaults.
#[derive(Debug, Clone, Default)]
pub struct BmcSettings {
    /// IPMI (ipmitool) behaviour.
    pub ipmi: IpmiSettings,
    /// Redfish behaviour.
    pub redfish: RedfishSettings,
}

/// A connected BMC of either protocol: what the server keeps per machine.
#[derive(Debug)]
pub enum BmcClient {
    /// IPMI over LAN.
    Ipmi(IpmiClient),
    /// Redfish.
    Redfish(RedfishClient),
}

impl BmcClient {
    /// Builds the client for an endpoint. `Ipmi` and `Redfish` do no network
    /// traffic here. `Auto` tries Redfish first (richer, and it fails fast when
    /// nothing listens on HTTPS), then IPMI; a Redfish service that refuses
    /// the credentials is reported as such instead of falling back.
    pub async fn connect(
        endpoint: &BmcEndpoint,
        credentials: Credentials,
        settings: &BmcSettings,
    ) -> Result<BmcClient, BmcError> {
        match endpoint.protocol {
            Protocol::Ipmi => Ok(BmcClient::Ipmi(IpmiClient::new(
                &endpoint.address,
                endpoint.port,
                credentials,
                settings.ipmi.clone(),
            )?)),
            Protocol::Redfish => Ok(BmcClient::Redfish(RedfishClient::new(
                &endpoint.address,
                endpoint.port,
                endpoint.insecure_tls,
                credentials,
                settings.redfish.clone(),
            )?)),
            Protocol::Auto => {
                let redfish_error = match RedfishClient::new(
                    &endpoint.address,
                    endpoint.port,
                    endpoint.insecure_tls,
                    credentials.clone(),
                    settings.redfish.clone(),
                ) {
                    Ok(redfish) => match redfish.probe().await {
                        Ok(()) => return Ok(BmcClient::Redfish(redfish)),
                        Err(error @ BmcError::AuthFailed { .. }) => return Err(error),
                        Err(error) => error,
                    },
                    Err(error) => error,
                };
                tracing::debug!(address = %endpoint.address, %redfish_error,
                    "no Redfish service, trying IPMI");
                // The endpoint's port belongs to Redfish here; IPMI uses 623.
                let host = ipmi_host(&endpoint.address);
                let ipmi = IpmiClient::new(&host, None, credentials, settings.ipmi.clone())?;
                ipmi.power_status().await?;
                Ok(BmcClient::Ipmi(ipmi))
            }
        }
    }

    /// The protocol this client speaks (what `Auto` resolved to).
    pub fn protocol(&self) -> Protocol {
        match self {
            BmcClient::Ipmi(_) => Protocol::Ipmi,
            BmcClient::Redfish(_) => Protocol::Redfish,
        }
    }
}

impl Bmc for IpmiClient {
    async fn power_status(&self) -> Result<PowerState, BmcError> {
        IpmiClient::power_status(self).await
    }
    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        IpmiClient::power(self, action).await
    }
    async fn set_boot_device(
        &self,
        device: BootDevice,
        options: BootOverride,
    ) -> Result<(), BmcError> {
        IpmiClient::set_boot_device(self, device, options).await
    }
    async fn insert_virtual_media(&self, _image_url: &str) -> Result<(), BmcError> {
        Err(ipmi_has_no_virtual_media("insert virtual media"))
    }
    async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        Err(ipmi_has_no_virtual_media("eject virtual media"))
    }
}

/// The bare host of an address that may be a Redfish URL
/// (`https://[fe80::1]:8443` → `fe80::1`), for falling back to IPMI.
fn ipmi_host(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    let host = address.split_once("://").map_or(address, |(_, rest)| rest);
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed
            .split_once(']')
            .map_or(bracketed, |(inside, _)| inside)
            .to_owned();
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name.to_owned(),
        _ => host.to_owned(),
    }
}

fn ipmi_has_no_virtual_media(operation: &str) -> BmcError {
    BmcError::Unsupported {
        address: "IPMI".into(),
        operation: operation.into(),
        detail: "IPMI has no standard virtual media; use Redfish".into(),
    }
}

impl Bmc for RedfishClient {
    async fn power_status(&self) -> Result<PowerState, BmcError> {
        RedfishClient::power_status(self).await
    }
    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        RedfishClient::power(self, action).await
    }
    async fn set_boot_device(
        &self,
        device: BootDevice,
        options: BootOverride,
    ) -> Result<(), BmcError> {
        RedfishClient::set_boot_device(self, device, options).await
    }
    async fn insert_virtual_media(&self, image_url: &str) -> Result<(), BmcError> {
        RedfishClient::insert_virtual_media(self, image_url).await
    }
    async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        RedfishClient::eject_virtual_media(self).await
    }
}

impl Bmc for BmcClient {
    async fn power_status(&self) -> Result<PowerState, BmcError> {
        match self {
            BmcClient::Ipmi(client) => client.power_status().await,
            BmcClient::Redfish(client) => client.power_status().await,
        }
    }
    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        match self {
            BmcClient::Ipmi(client) => client.power(action).await,
            BmcClient::Redfish(client) => client.power(action).await,
        }
    }
    async fn set_boot_device(
        &self,
        device: BootDevice,
        options: BootOverride,
    ) -> Result<(), BmcError> {
        match self {
            BmcClient::Ipmi(client) => client.set_boot_device(device, options).await,
            BmcClient::Redfish(client) => client.set_boot_device(device, options).await,
        }
    }
    async fn insert_virtual_media(&self, image_url: &str) -> Result<(), BmcError> {
        match self {
            BmcClient::Ipmi(client) => Bmc::insert_virtual_media(client, image_url).await,
            BmcClient::Redfish(client) => client.insert_virtual_media(image_url).await,
        }
    }
    async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        match self {
            BmcClient::Ipmi(client) => Bmc::eject_virtual_media(client).await,
            BmcClient::Redfish(client) => client.eject_virtual_media().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ipmi_host;

    #[test]
    fn ipmi_host_strips_redfish_url_parts() {
        assert_eq!(ipmi_host("10.0.0.5"), "10.0.0.5");
        assert_eq!(ipmi_host("https://bmc.lab:8443/"), "bmc.lab");
        assert_eq!(ipmi_host("https://[fe80::1]:8443"), "fe80::1");
        assert_eq!(ipmi_host("fe80::1"), "fe80::1");
    }
}
