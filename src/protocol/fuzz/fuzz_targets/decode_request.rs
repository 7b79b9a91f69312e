//! Request decoding must never panic: any bytes are a request, or a `FrameError`.
//!
//! The input is a frame body (what follows the 4-byte length), as the broker's connection
//! reader passes it to `decode_request`; the batch-header validator runs on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = protocol::frame::decode_request(bytes::Bytes::copy_from_slice(data));
    let _ = protocol::batch::validate(data);
});
