//! What iPXE fetches over HTTP: the machine's script, then the in-memory
//! OS's kernel and initrd named in it.

use std::net::Ipv4Addr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::Error;

/// The in-memory OS boot a script asks for.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The kernel's URL.
    pub kernel: String,
    /// The kernel command line (after the URL).
    pub cmdline: String,
    /// The initrd's URL.
    pub initrd: String,
}

/// An HTTP client that connects from the machine's own address, as the
/// machine would (the server hands a script only to its reserved address).
pub fn client(local: Ipv4Addr, timeout: Duration) -> Result<reqwest::Client, Error> {
    // Plain HTTP, like iPXE's boot listener; reqwest is built without a
    // TLS provider of its own, so it is handed one it will not use.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::msg(format!("TLS: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .local_address(std::net::IpAddr::V4(local))
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

/// GETs the script at `url` and reads the install boot out of it.
pub async fn script(http: &reqwest::Client, url: &str) -> Result<Boot, Error> {
    let resp = http.get(url).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(Error::msg(format!("GET {url}: {status}")));
    }
    parse_script(&text).ok_or_else(|| {
        let first: String = text.lines().take(6).collect::<Vec<_>>().join(" | ");
        Error::msg(format!("{url}: no install boot in the script: {first}"))
    })
}

/// The first `kernel URL ARGS…` and `initrd URL` commands (each may be
/// followed by `&& goto …`), as iPXE would run them.
pub fn parse_script(text: &str) -> Option<Boot> {
    let command = |word: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(word))
            .map(|rest| rest.split(" && ").next().unwrap_or(rest).trim().to_string())
    };
    let kernel = command("kernel ")?;
    let initrd = command("initrd ")?;
    let (kernel, cmdline) = kernel.split_once(' ').unwrap_or((kernel.as_str(), ""));
    Some(Boot {
        kernel: kernel.to_string(),
        cmdline: cmdline.to_string(),
        initrd: initrd.split_whitespace().next()?.to_string(),
    })
}

/// What one file fetch gave.
pub struct Got {
    /// Body bytes.
    pub bytes: u64,
    /// SHA-256 of a whole file, when asked.
    pub sha256: Option<[u8; 32]>,
}

/// GETs `url`: whole (and hashed if `hash`), or only its first `range`
/// bytes with a `Range` request (which must be answered 206).
pub async fn file(
    http: &reqwest::Client,
    url: &str,
    range: Option<u64>,
    hash: bool,
) -> Result<Got, Error> {
    let mut req = http.get(url);
    if let Some(n) = range {
        req = req.header("range", format!("bytes=0-{}", n.saturating_sub(1)));
    }
    let mut resp = req.send().await?;
    let status = resp.status().as_u16();
    let want = if range.is_some() { 206 } else { 200 };
    if status != want {
        return Err(Error::msg(format!("GET {url}: {status}, expected {want}")));
    }
    let mut hasher = (hash && range.is_none()).then(Sha256::new);
    let mut bytes = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        bytes += chunk.len() as u64;
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
    }
    if let Some(n) = range
        && bytes != n
    {
        return Err(Error::msg(format!(
            "GET {url}: asked {n} bytes, got {bytes}"
        )));
    }
    Ok(Got {
        bytes,
        sha256: hasher.map(|h| h.finalize().into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_install_boot_out_of_a_script() {
        let s = "#!ipxe\necho hi\nkernel http://10.0.0.1:8080/osie/vmlinuz initrd=initramfs bellows.api=https://10.0.0.1:8080 bellows.token=abc && goto kernel_ok || echo failed\nsleep 1\nkernel http://x/y && goto kernel_ok\n:kernel_ok\ninitrd http://10.0.0.1:8080/osie/initramfs && goto initrd_ok || echo no\n";
        let boot = parse_script(s).expect("a boot");
        assert_eq!(boot.kernel, "http://10.0.0.1:8080/osie/vmlinuz");
        assert_eq!(
            boot.cmdline,
            "initrd=initramfs bellows.api=https://10.0.0.1:8080 bellows.token=abc"
        );
        assert_eq!(boot.initrd, "http://10.0.0.1:8080/osie/initramfs");
        assert!(parse_script("#!ipxe\nexit 1\n").is_none());
    }
}
