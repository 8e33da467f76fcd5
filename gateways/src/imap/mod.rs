//! IMAP4rev1 for staff mail clients: a session per connection over the replicated
//! mailboxes, with commands parsed and responses encoded by imap-codec.

pub mod binary;
pub mod extended;
pub mod search_keys;
pub mod server;
pub mod session;
pub mod sets;
pub mod settings;
pub mod sort;
pub mod structure;
pub mod thread;

pub use server::start;
pub use settings::ImapSettings;
