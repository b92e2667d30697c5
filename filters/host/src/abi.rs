//! The proxy-wasm ABI calls Tollgate makes, declared here so that a refused call is a `Result`.
//!
//! proxy-wasm 0.2's `hostcalls` (and the trait methods over them) `panic!` on any status they do
//! not expect, and unwrap `String::from_utf8` on header values: a header map used after its
//! headers went on, or a client's header with a non-UTF-8 byte, would abort the VM and every stream
//! on its worker. `clippy.toml` forbids both layers; everything else in filter-host, and every
//! filter, goes through the functions below (except `call`, which must use the SDK's dispatch: see
//! there).
//!
//! The host hands out memory through the SDK's `proxy_on_memory_allocate` (a `Vec` it leaks), so a
//! returned buffer is taken back with `Vec::from_raw_parts(ptr, len, len)`, as the SDK does.
#![allow(unsafe_code)]

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use std::ptr::null_mut;
use std::time::Duration;

// The ABI's status codes; anything else a host returns is `InternalFailure`.
fn status(code: u32) -> Result<(), Status> {
    match code {
        0 => Ok(()),
        1 => Err(Status::NotFound),
        2 => Err(Status::BadArgument),
        3 => Err(Status::SerializationFailure),
        4 => Err(Status::ParseFailure),
        7 => Err(Status::Empty),
        8 => Err(Status::CasMismatch),
        _ => Err(Status::InternalFailure),
    }
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(buffer: u32, start: usize, len: usize, data: *const u8, size: usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_status(code: *mut u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
}

/// Takes ownership of a buffer the host allocated (null: none).
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    // SAFETY: the host allocated `size` bytes through proxy_on_memory_allocate, which leaks a
    // `Vec<u8>` of exactly that capacity; nothing else holds the pointer.
    (!data.is_null()).then(|| unsafe { Vec::from_raw_parts(data, size, size) })
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub fn log(level: LogLevel, msg: &str) -> Result<(), Status> {
    // SAFETY: pointer and length of a live `&str`.
    status(unsafe { proxy_log(level as u32, msg.as_ptr(), msg.len()) })
}

/// Envoy's current log level, as the ABI's number (0 trace … 5 critical).
pub fn log_level() -> Result<u32, Status> {
    let mut level = 0;
    // SAFETY: a valid out-pointer.
    status(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(level)
}

/// Nanoseconds since the Unix epoch.
pub fn current_time_ns() -> Result<u64, Status> {
    let mut t = 0;
    // SAFETY: a valid out-pointer.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// Bytes `start..start + max` of a buffer; `None` when the host has none.
pub fn get_buffer(buffer: BufferType, start: usize, max: usize) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: valid out-pointers; the result is taken by `owned`.
    match status(unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut data, &mut size) }) {
        Ok(()) => Ok(unsafe { owned(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(s) => Err(s),
    }
}

pub fn set_buffer(buffer: BufferType, start: usize, len: usize, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    status(unsafe { proxy_set_buffer_bytes(buffer as u32, start, len, value.as_ptr(), value.len()) })
}

/// Every pair of a header map. Values that are not UTF-8 are read lossily (U+FFFD).
pub fn get_map(map: MapType) -> Result<Vec<(String, String)>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: valid out-pointers; the result is taken by `owned`.
    status(unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) })?;
    let bytes = unsafe { owned(data, size) }.unwrap_or_default();
    decode_map(&bytes).ok_or(Status::SerializationFailure)
}

/// A header's first value; `None` when absent. A value that is not UTF-8 is read lossily.
pub fn get_map_value(map: MapType, key: &str) -> Result<Option<String>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: pointer and length of a live `&str`, valid out-pointers.
    match status(unsafe {
        proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size)
    }) {
        Ok(()) => Ok(unsafe { owned(data, size) }.map(text)),
        Err(Status::NotFound) => Ok(None),
        Err(s) => Err(s),
    }
}

/// Sets a header (replacing every value), or removes it with `None`.
pub fn set_map_value(map: MapType, key: &str, value: Option<&str>) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live `&str`s.
    status(unsafe {
        match value {
            Some(v) => {
                proxy_replace_header_map_value(map as u32, key.as_ptr(), key.len(), v.as_ptr(), v.len())
            }
            None => proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()),
        }
    })
}

/// Sets filter state `key` (a one-segment property path).
pub fn set_property(key: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    status(unsafe { proxy_set_property(key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
}

/// The value and CAS token of a shared-data key; `(None, None)` when it was never set.
pub fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: pointer and length of a live `&str`, valid out-pointers.
    match status(unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) }) {
        Ok(()) => Ok((unsafe { owned(data, size) }, (cas > 0).then_some(cas))),
        Err(Status::NotFound) => Ok((None, None)),
        Err(s) => Err(s),
    }
}

/// Writes a shared-data key if it still has `cas` (`None`: unconditionally; see `shared`).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

pub fn continue_stream(stream: StreamType) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(stream as u32) })
}

pub fn send_local_response(code: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Status> {
    let headers = encode_map(headers);
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_send_local_response(
            code,
            null_mut(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// The status code and message of the call whose callback is running.
pub fn call_status() -> Result<(u32, Option<String>), Status> {
    let (mut code, mut data, mut size) = (0, null_mut(), 0);
    // SAFETY: valid out-pointers; the message is taken by `owned`.
    status(unsafe { proxy_get_status(&mut code, &mut data, &mut size) })?;
    Ok((code, unsafe { owned(data, size) }.map(text)))
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: pointer and length of a live `&str`, a valid out-pointer.
    status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_record_metric(id, value) })
}

/// Calls a host extension function by name; its result bytes.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: pointers and lengths of live slices, valid out-pointers.
    status(unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    })?;
    Ok(unsafe { owned(data, size) })
}

/// The ABI's map encoding: a u32 count, then each pair's key and value lengths (u32 LE), then
/// each key and value followed by a NUL.
pub fn encode_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let len: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// The inverse of [`encode_map`]; `None` when the bytes do not hold what they claim. Text that is
/// not UTF-8 is read lossily.
pub fn decode_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    };
    let count = word(0)?;
    let mut at = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(count.min(bytes.len() / 10));
    for n in 0..count {
        let (klen, vlen) = (word(4 + n * 8)?, word(8 + n * 8)?);
        let key = bytes.get(at..at.checked_add(klen)?)?;
        at += klen + 1;
        let value = bytes.get(at..at.checked_add(vlen)?)?;
        at += vlen + 1;
        out.push((text(key.to_vec()), text(value.to_vec())));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn maps_round_trip_and_refuse_short_input() {
        let pairs = [(":path", "/v1/chat/completions"), ("x-a", ""), ("", "v")];
        let bytes = encode_map(&pairs);
        let back = decode_map(&bytes).unwrap();
        let back: Vec<(&str, &str)> = back.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(back, pairs);
        assert_eq!(decode_map(&[]).unwrap(), vec![]);
        for cut in 1..bytes.len() - 1 {
            assert_eq!(decode_map(&bytes[..cut]), None, "cut at {cut}");
        }
        // A count the bytes cannot hold.
        assert_eq!(decode_map(&u32::MAX.to_le_bytes()), None);
    }

    #[test]
    fn header_text_that_is_not_utf8_is_read_lossily() {
        let mut bytes = encode_map(&[("x-name", "caf?")]);
        let at = bytes.len() - 2;
        bytes[at] = 0xE9; // Latin-1 é
        assert_eq!(
            decode_map(&bytes).unwrap(),
            vec![("x-name".to_owned(), "caf\u{FFFD}".to_owned())]
        );
    }

    #[test]
    fn unknown_statuses_are_internal_failures() {
        assert_eq!(status(0), Ok(()));
        assert_eq!(status(2), Err(Status::BadArgument));
        assert_eq!(status(8), Err(Status::CasMismatch));
        assert_eq!(status(5), Err(Status::InternalFailure));
        assert_eq!(status(u32::MAX), Err(Status::InternalFailure));
    }
}
