//! The integration tests: one binary, real files, real binaries, real servers on loopback.

mod boundary;
mod broker;
mod cli;
mod drift;
mod experiment;
mod faults;
mod first_hour;
mod fuzz;
mod gate;
mod helm;
mod hostile;
mod kafka;
mod monitoring;
mod moto;
mod redis;
mod registry;
mod report;
mod rhythm;
mod security;
mod server;
mod skew;
mod state;
mod support;
mod tls;
mod trainer;
mod v2_conformance;
