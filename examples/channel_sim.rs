//! The payment-channel API simulator for the sandbox: WeChat Pay API v3, Alipay OpenAPI
//! (`/gateway.do`) and Stripe (`/v1/…`) over HTTPS on loopback, with the committed sandbox
//! certificate (tests/fixtures/sandbox/, trusted by `config/sandbox.yaml`). It checks every
//! request's signature with the `openssl` command — independently of payguard — and signs its
//! answers with the repository's public test keys. The tests use the same code
//! (tests/support/channel_sim.rs).
//!
//! Usage, from the repository root (see docs/egress.md "Sandbox"):
//!
//! ```text
//! cargo run --example channel_sim [-- 127.0.0.1:9443]
//! ```
//!
//! Each request is printed with the result of the signature check.

#[allow(dead_code)]
#[path = "../tests/support/tls.rs"]
mod tls;

#[allow(dead_code)]
#[path = "../tests/support/channel_sim.rs"]
mod channel_sim;

use std::time::Duration;

fn main() {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9443".to_string());
    let sim = channel_sim::ChannelSim::start_sandbox(&listen);
    println!(
        "channel simulator on {} (WeChat Pay v3, Alipay /gateway.do, Stripe /v1/); CA {}",
        sim.base_url(),
        sim.ca_ref()
    );
    let mut printed = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let requests = sim.requests();
        for r in &requests[printed..] {
            let check = match &r.signature_check {
                Ok(()) => "signature ok".to_string(),
                Err(e) => format!("signature refused: {e}"),
            };
            println!("{} {} ({} body bytes): {check}", r.method, r.target, r.body.len());
        }
        printed = requests.len();
    }
}
