//! UMS protocol gateways. Each speaks one protocol to outside clients and reaches the
//! cluster only through [`mail_service::MailService`], which `node` implements.

pub mod bans;
pub mod clock;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod imap;
pub mod limits;
pub mod listener;
pub mod logins;
pub mod mail_service;
#[cfg(any(test, feature = "mem-service"))]
pub mod mem_service;
pub mod network;
pub mod smtp;
pub mod tls;
