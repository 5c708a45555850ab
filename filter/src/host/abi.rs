//! The few proxy-wasm host calls that touch request data, made directly instead of through the SDK.
//!
//! Why: the SDK (0.2) decodes header names and values with `String::from_utf8(..).unwrap()` and answers
//! any status it does not expect with `panic!`. Either traps the VM, and Envoy then fails every later
//! request on that worker until the VM is rebuilt. Header values may hold any byte but NUL, CR and LF
//! (RFC 9110 §5.5), so the request path reads the header maps here: as bytes, decoded by
//! [`crate::header_map`], with every status returned as a value. Return types are plain `u32`, so a
//! status this code has never heard of is just a number, not an invalid enum.
#![allow(unsafe_code)] // the one place that calls the ABI by hand; each block says why it is sound

use std::ptr::null_mut;

use proxy_wasm::types::{BufferType, MapType, StreamType};

use crate::header_map::{self, HeaderPair};

const OK: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
}

/// Takes ownership of a buffer the host filled. The host allocates it through the SDK's exported
/// `proxy_on_memory_allocate`, which hands out a `Vec<u8>` of exactly `size` bytes and forgets it, so
/// rebuilding that `Vec` here is how the SDK itself frees such buffers.
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: see above; `data` came from a Vec with capacity `size` and nothing else owns it.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// Every header of `map`, names and values as bytes. An unavailable map, or one the host encoded
/// wrongly, reads as empty.
pub(super) fn header_map(map: MapType) -> Vec<HeaderPair> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the out-pointers are valid for writes for the duration of the call.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    let bytes = owned(data, size);
    if status != OK {
        return Vec::new();
    }
    header_map::decode(&bytes).unwrap_or_default()
}

/// Replaces every `name` header of `map` with `value`, or removes them all when `value` is `None`.
pub(super) fn set_header(map: MapType, name: &str, value: Option<&[u8]>) -> Result<(), u32> {
    // SAFETY: pointers and lengths come from live slices the host only reads.
    let status = unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), v.as_ptr(), v.len()),
            None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    };
    if status == OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Appends a `name: value` header to `map`.
pub(super) fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<(), u32> {
    // SAFETY: pointers and lengths come from live slices the host only reads.
    let status =
        unsafe { proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    if status == OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Up to `max` bytes of `buffer` from its start; empty when the host has none.
pub(super) fn buffer(buffer: BufferType, max: usize) -> Vec<u8> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the out-pointers are valid for writes for the duration of the call.
    let status = unsafe { proxy_get_buffer_bytes(buffer as u32, 0, max, &mut data, &mut size) };
    let bytes = owned(data, size);
    if status == OK {
        bytes
    } else {
        Vec::new()
    }
}

/// Answers the stream locally (Envoy's `sendLocalReply`).
pub(super) fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), u32> {
    let pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
    let encoded = header_map::encode(&pairs);
    // SAFETY: pointers and lengths come from live slices the host only reads; no details string.
    let code = unsafe {
        proxy_send_local_response(
            status,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            encoded.as_ptr(),
            encoded.len(),
            -1,
        )
    };
    if code == OK {
        Ok(())
    } else {
        Err(code)
    }
}

/// Lets a paused request go on upstream.
pub(super) fn resume_request() -> Result<(), u32> {
    // SAFETY: no pointers.
    let status = unsafe { proxy_continue_stream(StreamType::HttpRequest as u32) };
    if status == OK {
        Ok(())
    } else {
        Err(status)
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
}

/// The value under `key` and its compare-and-swap number (0: none); `None` when absent, and when the host
/// fails the call (the SDK would panic there).
pub(super) fn shared_data(key: &str) -> Option<(Vec<u8>, u32)> {
    let mut data = null_mut();
    let mut size = 0;
    let mut cas = 0;
    // SAFETY: the key is a live slice the host only reads; the out-pointers are valid for writes.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    let bytes = owned(data, size);
    (status == OK).then_some((bytes, cas))
}

/// Stores `value` under `key` if its compare-and-swap number is still `cas` (0: unconditionally). `Err`
/// carries the host's status: 8 for a lost race, anything else for a host that refused (a full store).
pub(super) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), u32> {
    // SAFETY: key and value are live slices the host only reads.
    let status = unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    if status == OK {
        Ok(())
    } else {
        Err(status)
    }
}
