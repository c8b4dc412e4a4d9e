//! Everything the server does with a datagram on its listening port before
//! touching the disk: decode, re-encode, sanitise the path, negotiate.
#![no_main]

use bellows_tftp::{Packet, TransferLimits, negotiate, sanitize_request_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    let Ok(packet) = Packet::decode(datagram) else {
        return;
    };
    // What we decode, we can encode, and it decodes to the same packet.
    let bytes = packet.to_bytes().expect("a decoded packet is encodable");
    assert_eq!(Packet::decode(&bytes).as_ref(), Ok(&packet));

    let (Packet::ReadRequest(request) | Packet::WriteRequest(request)) = &packet else {
        return;
    };
    if let Ok(path) = sanitize_request_path(request.filename) {
        for candidate in path.candidates() {
            let text = candidate.as_str();
            assert!(!text.is_empty() && !text.starts_with('/') && !text.contains('\\'));
            assert!(
                text.split('/').all(|c| !matches!(c, "" | "." | "..")),
                "unsafe path {text:?} from {:?}",
                request.filename
            );
        }
    }
    let limits = TransferLimits::default();
    let negotiated = negotiate(&request.options, Some(datagram.len() as u64), &limits);
    assert!((8..=limits.max_block_size).contains(&negotiated.block_size));
    assert!((1..=limits.max_window_size).contains(&negotiated.window_size));
});
