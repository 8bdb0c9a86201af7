//! Code generated from `proto/` by `build.rs`. Never edited by hand.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The `commenda.sync.v1` package.
pub mod v1 {
    tonic::include_proto!("commenda.sync.v1");
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, served by reflection. It
/// includes the `google.rpc` error detail messages so that tools can decode error details.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
