//! The built-in emulator of the REST API.
