//! What the cargo fuzz targets (`fuzz/`, feature `fuzzing`) need beyond the public API:
//! the IMAP server's command decoding, and the codec crates at the versions this crate is
//! built with, so the targets build the very types the session takes. Not part of a
//! normal build.

pub use imap_codec;
pub use imap_types;

use imap_codec::fragmentizer::Fragmentizer;
use imap_types::command::Command;

use crate::imap::extended::Extension;

/// The complete command in `fragmentizer` decoded as the IMAP server does it: the forms
/// imap-codec does not parse yet split off first, then imap-codec's command decoder;
/// `Err` for what the server answers `BAD`.
pub fn decode_imap_command(fragmentizer: &Fragmentizer) -> Result<(Command<'static>, Extension), ()> {
    crate::imap::server::decode_command(fragmentizer)
}
