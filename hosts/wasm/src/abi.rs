//! The proxy-wasm ABI (0.2.1), as much of it as podward uses: the host calls
//! the glue makes ([`crate::host::ProxyWasm`]), implemented over the host's
//! imports, each behind a wrapper that never panics, and the callbacks the
//! host calls, each handed to the one [`crate::vm::Vm`]. Written here rather than taken
//! from the Rust SDK: the SDK's header helpers panic on bytes that are not
//! UTF-8, its wrappers panic on unexpected statuses, and its dispatcher and
//! `std` roughly doubled the module, whose size sets V8's memory for every VM.

#[cfg(all(target_family = "wasm", not(test)))]
pub use module::Envoy;

/// The module Envoy loads: its imports, exports, allocator and panic handler.
#[cfg(all(target_family = "wasm", not(test)))]
mod module {
    use crate::host::ProxyWasm;
    use crate::vm::{Action, Vm};
    use alloc::boxed::Box;
    use alloc::string::{String, ToString};
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};
    use core::ptr::{null, null_mut, NonNull};
    use podward::headers::{encode_proxy_wasm_map, HeaderList};
    use podward::host::{Level, Log};
    use podward::status::LocalReply;

    #[global_allocator]
    static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

    /// A panic traps: Envoy then answers 503 and rebuilds the VM (FAIL_RELOAD).
    #[panic_handler]
    fn on_panic(_: &core::panic::PanicInfo) -> ! {
        core::arch::wasm32::unreachable()
    }

    /// Byte comparison, which the compiler emits calls to and which, without
    /// `std`, no C library provides.
    ///
    /// # Safety
    /// `a` and `b` must be readable for `n` bytes.
    #[no_mangle]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        for i in 0..n {
            // SAFETY: the caller guarantees `n` readable bytes at both.
            let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
        }
        0
    }

    /// Host statuses; only `OK` is told apart.
    const OK: u32 = 0;

    #[derive(Clone, Copy)]
    #[repr(u32)]
    /// Which header map a call is about.
    enum MapType {
        Request = 0,
        Response = 2,
        HttpCallResponse = 6,
    }

    #[derive(Clone, Copy)]
    #[repr(u32)]
    enum BufferType {
        HttpCallResponseBody = 4,
        PluginConfiguration = 7,
    }

    /// `proxy_continue_stream`'s stream type for a request.
    const HTTP_REQUEST_STREAM: u32 = 0;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
        fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
        fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        fn proxy_set_effective_context(context_id: u32) -> u32;
        fn proxy_get_buffer_bytes(
            buffer: BufferType,
            start: usize,
            max_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        fn proxy_get_header_map_pairs(map: MapType, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_get_header_map_value(
            map: MapType,
            name: *const u8,
            name_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        fn proxy_add_header_map_value(
            map: MapType,
            name: *const u8,
            name_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(map: MapType, name: *const u8, name_size: usize) -> u32;
        fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            data: *const u8,
            size: usize,
        ) -> u32;
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
        fn proxy_continue_stream(stream: u32) -> u32;
        fn proxy_http_call(
            upstream: *const u8,
            upstream_size: usize,
            headers: *const u8,
            headers_size: usize,
            body: *const u8,
            body_size: usize,
            trailers: *const u8,
            trailers_size: usize,
            timeout_ms: u32,
            token: *mut u32,
        ) -> u32;
        fn proxy_define_metric(kind: u32, name: *const u8, size: usize, id: *mut u32) -> u32;
        fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        fn proxy_record_metric(id: u32, value: u64) -> u32;
    }

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn environ_sizes_get(count: *mut usize, buffer_size: *mut usize) -> u16;
        fn environ_get(entries: *mut *mut u8, buffer: *mut u8) -> u16;
    }

    /// The host writes into memory it asks the module for. Each allocation is
    /// a boxed byte slice of exactly `size`, taken back by [`owned`], unless
    /// a call lent a buffer for it ([`fetch_into`]).
    #[no_mangle]
    pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
        if let Some(mut lent) = LENT.0.take() {
            lent.resize(size, 0);
            let data = lent.as_mut_ptr();
            LANDED.0.set(Some(lent));
            return data;
        }
        let buffer: Box<[u8]> = vec![0; size].into_boxed_slice();
        Box::into_raw(buffer).cast::<u8>()
    }

    /// The buffer lent for the host's next allocation, and where it is kept
    /// once the host has allocated it.
    static LENT: SingleThreaded<Cell<Option<Vec<u8>>>> = SingleThreaded(Cell::new(None));
    static LANDED: SingleThreaded<Cell<Option<Vec<u8>>>> = SingleThreaded(Cell::new(None));

    /// Marks the module as speaking ABI 0.2.1.
    #[no_mangle]
    pub extern "C" fn proxy_abi_version_0_2_1() {}

    /// Takes back a buffer the host filled through [`proxy_on_memory_allocate`].
    fn owned(data: *mut u8, size: usize) -> Vec<u8> {
        match NonNull::new(data) {
            // SAFETY: a non-null `data` came from proxy_on_memory_allocate(size):
            // a boxed slice of exactly `size` bytes, handed over to us.
            Some(data) => unsafe { Vec::from_raw_parts(data.as_ptr(), size, size) },
            None => Vec::new(),
        }
    }

    /// Calls a host function that hands back a buffer; `None` unless it succeeds.
    fn fetch_buffer(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Option<Vec<u8>> {
        let (mut data, mut size) = (null_mut(), 0);
        (call(&mut data, &mut size) == OK).then(|| owned(data, size))
    }

    /// Like [`fetch_buffer`], into `buffer`: it is lent to the host for the
    /// allocation the call makes, so that a call made on every request (its
    /// headers, its response code) allocates nothing once `buffer` has grown
    /// to fit. False unless the call succeeds.
    fn fetch_into(
        buffer: &mut Vec<u8>,
        call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
    ) -> bool {
        buffer.clear();
        LENT.0.set(Some(core::mem::take(buffer)));
        let (mut data, mut size) = (null_mut(), 0);
        let status = call(&mut data, &mut size);
        let landed = LANDED.0.take();
        let unused = LENT.0.take();
        match landed {
            Some(landed) if landed.as_ptr() == data.cast_const() && landed.len() == size => {
                *buffer = landed;
            }
            // The host allocated nothing (an empty answer or a failure), or
            // something else than what it was lent (never seen).
            landed => {
                *buffer = landed.or(unused).unwrap_or_default();
                buffer.clear();
                if status == OK {
                    buffer.extend_from_slice(&owned(data, size));
                }
            }
        }
        status == OK
    }

    fn buffer(kind: BufferType, size: usize) -> Option<Vec<u8>> {
        // SAFETY: the host writes a pointer and length it allocated through us.
        fetch_buffer(|data, len| unsafe { proxy_get_buffer_bytes(kind, 0, size, data, len) })
    }

    /// A header map, every byte kept.
    fn header_map(map: MapType) -> Option<HeaderList> {
        // SAFETY: as in `buffer`.
        let bytes =
            fetch_buffer(|data, len| unsafe { proxy_get_header_map_pairs(map, data, len) })?;
        HeaderList::from_proxy_wasm_map(bytes)
    }

    /// Where a response's `:status` is read into, on every request.
    static STATUS: SingleThreaded<RefCell<Vec<u8>>> = SingleThreaded(RefCell::new(Vec::new()));

    /// A property path's parts are joined by NUL bytes.
    fn property_path(path: &[&str]) -> Vec<u8> {
        path.join("\0").into_bytes()
    }

    /// The host, through its imports.
    pub struct Envoy;

    impl Log for Envoy {
        fn log(&self, level: Level, message: &str) {
            // SAFETY: the host reads `message` during the call.
            unsafe { proxy_log(level.envoy(), message.as_ptr(), message.len()) };
        }
    }

    impl ProxyWasm for Envoy {
        fn now_ms(&self) -> u64 {
            let mut nanos = 0;
            // SAFETY: the host writes one u64.
            unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
            nanos / 1_000_000
        }

        fn set_tick_period_ms(&self, period_ms: u64) {
            let period = u32::try_from(period_ms).unwrap_or(u32::MAX);
            // SAFETY: plain value.
            unsafe { proxy_set_tick_period_milliseconds(period) };
        }

        fn set_effective_context(&self, context: u32) -> bool {
            // SAFETY: plain value.
            unsafe { proxy_set_effective_context(context) == OK }
        }

        fn plugin_configuration(&self, size: usize) -> Vec<u8> {
            buffer(BufferType::PluginConfiguration, size).unwrap_or_default()
        }

        fn environment(&self) -> Vec<(String, String)> {
            let (mut count, mut size) = (0, 0);
            // SAFETY: WASI writes two sizes.
            if unsafe { environ_sizes_get(&mut count, &mut size) } != 0 {
                return Vec::new();
            }
            let mut entries: Vec<*mut u8> = vec![null_mut(); count];
            let mut buffer: Vec<u8> = vec![0; size];
            // SAFETY: WASI fills `count` pointers into `buffer`, which holds `size` bytes.
            if unsafe { environ_get(entries.as_mut_ptr(), buffer.as_mut_ptr()) } != 0 {
                return Vec::new();
            }
            // Entries are `NAME=value\0`, one after another in `buffer`.
            buffer
                .split(|&byte| byte == 0)
                .filter_map(|entry| {
                    let entry = core::str::from_utf8(entry).ok()?;
                    let (name, value) = entry.split_once('=')?;
                    Some((name.to_string(), value.to_string()))
                })
                .collect()
        }

        fn request_headers(&self, into: &mut HeaderList) -> bool {
            let map = MapType::Request;
            into.read_proxy_wasm_map(|buffer| {
                // SAFETY: as in `buffer`.
                fetch_into(buffer, |data, len| unsafe {
                    proxy_get_header_map_pairs(map, data, len)
                })
            })
        }

        fn add_request_header(&self, name: &[u8], value: &[u8]) -> bool {
            let map = MapType::Request;
            // SAFETY: the host copies both buffers during the call.
            let status = unsafe {
                proxy_add_header_map_value(
                    map,
                    name.as_ptr(),
                    name.len(),
                    value.as_ptr(),
                    value.len(),
                )
            };
            status == OK
        }

        fn remove_request_header(&self, name: &[u8]) -> bool {
            let map = MapType::Request;
            // SAFETY: the host reads `name` during the call.
            unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) == OK }
        }

        fn set_property(&self, path: &[&str], value: &[u8]) {
            let path = property_path(path);
            // SAFETY: the host copies both buffers during the call.
            unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
        }

        fn response_code(&self) -> u64 {
            // The `:status` header, which Envoy hands over in the log phase
            // too: a tenth of the `response.code` property's cost.
            let name = b":status";
            let map = MapType::Response;
            let mut status = STATUS.0.borrow_mut();
            // SAFETY: as in `buffer`; the host reads `name` during the call.
            let found = fetch_into(&mut status, |data, len| unsafe {
                proxy_get_header_map_value(map, name.as_ptr(), name.len(), data, len)
            });
            if !found {
                return 0;
            }
            // Three ASCII digits, as Envoy sends it.
            status
                .iter()
                .try_fold(0u64, |code, &digit| {
                    digit
                        .is_ascii_digit()
                        .then(|| code * 10 + u64::from(digit - b'0'))
                })
                .filter(|_| status.len() == 3)
                .unwrap_or(0)
        }

        fn send_local_response(&self, reply: &LocalReply) -> bool {
            let headers: Vec<(&[u8], &[u8])> = reply
                .headers
                .iter()
                .map(|(name, value)| (*name, value.as_slice()))
                .collect();
            let headers = encode_proxy_wasm_map(&headers);
            let body = reply.body.as_bytes();
            // SAFETY: the host copies every buffer during the call.
            let status = unsafe {
                proxy_send_local_response(
                    reply.code,
                    null(),
                    0,
                    body.as_ptr(),
                    body.len(),
                    headers.as_ptr(),
                    headers.len(),
                    -1,
                )
            };
            status == OK
        }

        fn resume_request(&self) {
            // SAFETY: plain value.
            unsafe { proxy_continue_stream(HTTP_REQUEST_STREAM) };
        }

        fn http_call(
            &self,
            cluster: &str,
            headers: &[(&[u8], &[u8])],
            timeout_ms: u64,
        ) -> Result<u32, u32> {
            let headers = encode_proxy_wasm_map(headers);
            let trailers = encode_proxy_wasm_map(&[]);
            let timeout = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
            let mut token = 0;
            // SAFETY: the host copies every buffer during the call and writes one u32.
            let status = unsafe {
                proxy_http_call(
                    cluster.as_ptr(),
                    cluster.len(),
                    headers.as_ptr(),
                    headers.len(),
                    null(),
                    0,
                    trailers.as_ptr(),
                    trailers.len(),
                    timeout,
                    &mut token,
                )
            };
            if status == OK {
                Ok(token)
            } else {
                Err(status)
            }
        }

        fn http_call_response(&self, body_size: usize) -> (Option<Vec<u8>>, Vec<u8>) {
            let headers = header_map(MapType::HttpCallResponse);
            let status = headers.and_then(|headers| headers.get(":status").map(<[u8]>::to_vec));
            let body = buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default();
            (status, body)
        }

        fn define_metric(&self, gauge: bool, name: &str) -> Option<u32> {
            let kind = u32::from(gauge);
            let mut id = 0;
            // SAFETY: the host reads `name` and writes one u32.
            let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
            (status == OK).then_some(id)
        }

        fn increment_metric(&self, id: u32, amount: u64) {
            let amount = i64::try_from(amount).unwrap_or(i64::MAX);
            // SAFETY: plain values.
            unsafe { proxy_increment_metric(id, amount) };
        }

        fn record_metric(&self, id: u32, value: u64) {
            // SAFETY: plain values.
            unsafe { proxy_record_metric(id, value) };
        }
    }

    /// The VM's one thread is the only one that ever touches the state.
    struct SingleThreaded<T>(T);

    // SAFETY: a wasm VM runs on a single thread; nothing is shared across threads.
    unsafe impl<T> Sync for SingleThreaded<T> {}

    static VM: SingleThreaded<Vm<Envoy>> = SingleThreaded(Vm::new(Envoy));

    #[no_mangle]
    pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
        VM.0.on_context_create(context_id, parent_id);
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_vm_start(_: u32, _: usize) -> bool {
        true
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_configure(root_id: u32, size: usize) -> bool {
        VM.0.on_configure(root_id, size)
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_tick(root_id: u32) {
        VM.0.on_tick(root_id);
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_request_headers(context_id: u32, _: usize, _: bool) -> Action {
        VM.0.on_request_headers(context_id)
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_http_call_response(
        context_id: u32,
        token: u32,
        _: usize,
        body_size: usize,
        _: usize,
    ) {
        VM.0.on_http_call_response(context_id, token, body_size);
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_log(context_id: u32) {
        VM.0.on_log(context_id);
    }

    // No `proxy_on_done`: the host takes a missing one as done, without a
    // call into the VM per request.

    #[no_mangle]
    pub extern "C" fn proxy_on_delete(context_id: u32) {
        VM.0.on_delete(context_id);
    }
}
