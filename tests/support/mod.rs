//! Helpers shared by integration tests: real processes on free loopback ports, cleaned up on drop.
#![allow(dead_code)] // each test binary uses a different subset

pub mod redis_server;
