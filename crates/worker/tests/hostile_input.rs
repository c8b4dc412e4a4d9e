//! What a registry or an image server sends is untrusted: the readers of
//! manifests, configs, authentication challenges, qcow2 headers and table
//! entries return an error for any bytes, never panic. Arbitrary input, and
//! arbitrary mutations of valid documents (which reach deeper).

use bellows_worker::builtin::qcow2;
use bellows_worker::oci::{auth, manifest};
use proptest::prelude::*;

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":5},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":7}]}"#;

fn qcow2_header() -> Vec<u8> {
    let mut b = vec![0u8; qcow2::HEADER_BYTES];
    b[..4].copy_from_slice(qcow2::MAGIC);
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    b[20..24].copy_from_slice(&16u32.to_be_bytes());
    b[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
    b[36..40].copy_from_slice(&2u32.to_be_bytes());
    b[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
    b[100..104].copy_from_slice(&104u32.to_be_bytes());
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn registry_documents_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = manifest::parse_document(None, &bytes);
        let _ = manifest::parse_document(Some("application/vnd.oci.image.index.v1+json"), &bytes);
        let _ = manifest::parse_config(&bytes);
        let _ = auth::parse_challenge(&String::from_utf8_lossy(&bytes));
        let _ = auth::token_from_response(&bytes);
    }

    #[test]
    fn mutated_manifests_never_panic(at in 0usize..MANIFEST.len(), byte in any::<u8>(), cut in 0usize..MANIFEST.len()) {
        let mut bytes = MANIFEST.as_bytes().to_vec();
        bytes[at] = byte;
        let _ = manifest::parse_document(None, &bytes);
        let _ = manifest::parse_document(None, &MANIFEST.as_bytes()[..cut]);
    }

    #[test]
    fn qcow2_headers_and_entries_never_panic(
        edits in proptest::collection::vec((0usize..qcow2::HEADER_BYTES, any::<u8>()), 0..12),
        entry in any::<u64>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = qcow2::parse_header(&bytes);
        let mut header = qcow2_header();
        for (at, byte) in edits {
            header[at] = byte;
        }
        if let Ok(h) = qcow2::parse_header(&header) {
            let _ = qcow2::l1_entry(entry, &h);
            if let Ok(qcow2::Cluster::Compressed { offset, len }) = qcow2::l2_entry(entry, &h) {
                prop_assert!(offset > 0 && len > 0 && len <= 2 * h.cluster_size());
            }
        }
    }
}
