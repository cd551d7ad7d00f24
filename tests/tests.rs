//! Integration tests, built as one binary (one module per concern), against the local stand-in of the
//! platform on loopback.

mod util;

mod adms;
mod cli;
mod contrib;
pub mod crash;
mod delivery;
mod dlq;
mod hardening;
pub mod hikvision;
mod hikvision_python;
mod hr;
mod hr_hardening;
mod http;
mod import;
mod journal;
mod live;
mod online;
mod outcomes;
mod pacing;
mod reconcile;
mod sdk;
mod serial;
mod storage;
mod unmapped;
mod zk;
mod zk_pyzk;
