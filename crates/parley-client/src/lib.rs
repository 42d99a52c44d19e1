//! The Parley client SDK: a typed REST client ([`Client`]) and a self-healing WebSocket session
//! ([`Connection`]) that speaks protocol version 1 (docs: PROTOCOL.md).

mod conn;
mod error;
pub mod media;
mod rest;

pub use conn::{ConnectOptions, Connection, Event};
pub use error::{ClientError, Result};
pub use parley_proto as proto;
pub use rest::{Client, ws_url};

/// A fresh random client id (128 bits, lower-case hex) for idempotent sends.
pub fn new_client_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_ids_are_128_bit_hex() {
        let id = super::new_client_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, super::new_client_id());
    }
}
