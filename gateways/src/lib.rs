//! UMS protocol gateways. Each speaks one protocol to outside clients and reaches the
//! cluster only through [`service::MailService`], which `node` implements.

pub mod imap;
pub mod limits;
pub mod listener;
pub mod service;
pub mod smtp;
pub mod tls;
