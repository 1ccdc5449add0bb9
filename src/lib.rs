//! payguard: a payment-security sidecar built on Pingora.
//!
//! Two kinds of traffic pass through it: client API calls (signature, nonce, rate, order and IP
//! rules: [`guard`]) and payment-channel notifications (verify, decrypt, dedup, forward, ack:
//! [`channels`], [`notify`]). Shared state lives in a [`store`]. The file format is parsed by
//! [`config`] into an internal form the [`proxy`] uses.

pub mod channels;
pub mod clock;
pub mod config;
pub mod guard;
pub mod store;
