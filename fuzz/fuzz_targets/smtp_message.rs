//! Arbitrary bytes as a message the SMTP gateway accepted (`gateways::smtp::message`):
//! line endings made CRLF, the `From:` header's addresses, the fingerprint. Checks what
//! the smuggling defence promises: no bare CR or LF survives, nothing else changes, a
//! clean message comes back as it was, and normalising twice changes nothing more.
#![no_main]

use gateways::smtp::message::{fingerprint, from_addresses, normalize_line_endings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let normalized = normalize_line_endings(data.to_vec());
    for (i, &byte) in normalized.iter().enumerate() {
        match byte {
            b'\n' => assert!(i > 0 && normalized[i - 1] == b'\r', "bare LF at {i}"),
            b'\r' => assert_eq!(normalized.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            _ => {}
        }
    }
    // Only line endings change: the other bytes are the same, in the same order.
    let others = |bytes: &[u8]| bytes.iter().copied().filter(|b| !matches!(b, b'\r' | b'\n')).collect::<Vec<u8>>();
    assert_eq!(others(&normalized), others(data));
    // Each bare CR or LF grows by a byte: a message of the same length had none.
    if normalized.len() == data.len() {
        assert_eq!(normalized, data, "a message without bare line endings changed");
    }
    assert_eq!(normalize_line_endings(normalized.clone()), normalized, "not idempotent");

    for message in [data, &normalized[..]] {
        if let Some(addresses) = from_addresses(message) {
            assert!(!addresses.is_empty());
            for address in &addresses {
                assert_eq!(address, &address.to_lowercase(), "addresses are lower case");
            }
        }
    }
    assert_eq!(fingerprint("a@b", data).len(), 32);
});
