//! payguard: a payment-security sidecar built on Pingora.
//!
//! Two kinds of traffic pass through it: client API calls (signature, nonce, rate, order and IP
//! rules) and payment-channel notifications (verify, decrypt, dedup, forward, ack:
//! [`channels`]). Shared state lives in a [`store`]. The file format is parsed by [`config`]
//! into an internal form the [`proxy`] uses.

pub mod admin;
pub mod canonical;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod egress;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod health;
pub mod history;
pub mod issue;
pub mod listener;
pub mod listener_tls;
pub mod log_writer;
pub mod metrics;
pub mod notify;
pub mod orders;
pub mod outcome;
pub mod problem;
pub mod proxy;
pub mod reconcile;
pub mod schema;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod trace;
