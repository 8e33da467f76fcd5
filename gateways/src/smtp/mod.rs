//! SMTP: the MX (port 25, mail for local users from anyone) and submission (port 587,
//! authenticated users send anywhere) services.

pub mod authentication;
pub mod dsn;
pub mod message;
pub mod relay;
pub mod relay_tls;
pub mod server;
pub mod session;
pub mod settings;

pub use server::start;
pub use settings::SmtpSettings;
