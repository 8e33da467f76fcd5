//! SMTP: the MX (port 25, mail for local users from anyone) and submission (port 587,
//! authenticated users send anywhere) services.

pub mod dsn;
pub mod message;
pub mod relay;
pub mod server;
pub mod session;
pub mod settings;

pub use server::start;
pub use settings::SmtpSettings;
