//! Source hashing (sh): the client address alone picks the backend.
//!
//! Like IPVS `sh`, every flow of one client goes to the same backend while
//! the backend set is unchanged. Unlike IPVS (a 256-bucket table refilled
//! on change), the lookup is a weighted Maglev table keyed by a stable hash
//! of the client address, so weights are honoured finely and a backend
//! change moves few clients. Owns only that hash.

use crate::flow::Addr16;

/// A stable hash of a client address (IPv4 in its mapped 16-byte form),
/// the same on every node and version; pinned by a test. The same
/// FNV-1a + SplitMix64 construction as the backend keys.
#[inline]
pub(super) fn client_hash(client: &Addr16) -> u64 {
    super::backend_key(&client.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hash_is_pinned() {
        let a = Addr16::from_ip("198.18.0.1".parse().expect("literal"));
        assert_eq!(client_hash(&a), 0xfa6e_5a09_f219_b63b);
        let b = Addr16::from_ip("2001:db8::1".parse().expect("literal"));
        assert_ne!(client_hash(&a), client_hash(&b));
    }
}
