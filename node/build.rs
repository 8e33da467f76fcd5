//! Compiles the peer protocol and replicated-state protobufs with prost-build.
fn main() {
    println!("cargo:rerun-if-changed=proto");
    prost_build::compile_protos(&["proto/peer.proto", "proto/state.proto"], &["proto"])
        .expect("compile protobufs (needs protoc: apt-get install protobuf-compiler)");
}
