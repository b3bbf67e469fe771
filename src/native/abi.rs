//! Envoy's dynamic-module ABI (`source/extensions/dynamic_modules/abi/abi.h`),
//! as much of it as podward uses, declared here by hand. Envoy 1.40 expects
//! the version string `v0.2.0`; every call below has the signature of the
//! v0.1.0 header (the ABI only grows by new functions), and each was checked
//! against the arguments the 1.40.0 binary's exported function reads.
//!
//! C enums cross as 32-bit integers. Buffers are (pointer, length) pairs,
//! never NUL-terminated. Pointers called `Envoy*` are Envoy's; the module's
//! own objects cross as `*const c_void`.

use core::ffi::c_void;
use core::ptr::null;

pub type EnvoyConfig = *mut c_void;
pub type EnvoyFilter = *mut c_void;
/// Allocated by Envoy, deleted by the module, exactly once.
pub type Scheduler = *mut c_void;
pub type ConfigScheduler = *mut c_void;

/// Bytes owned by Envoy, valid until the hook returns or, for a header map,
/// until the module first changes that map.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    /// # Safety
    /// Envoy's guarantee above must hold for as long as the slice is used.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller's guarantee.
        unsafe { core::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// Bytes owned by the module; Envoy copies what it keeps.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// `set_header` with a null value removes every value of the header.
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: null(),
        length: 0,
    };
}

/// A header as Envoy hands it over (`envoy_http_header`) or takes it
/// (`module_http_header`): the same layout.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    pub name: *const u8,
    pub name_length: usize,
    pub value: *const u8,
    pub value_length: usize,
}

impl Header {
    pub const EMPTY: Header = Header {
        name: null(),
        name_length: 0,
        value: null(),
        value_length: 0,
    };

    pub fn of(name: &[u8], value: &[u8]) -> Header {
        Header {
            name: name.as_ptr(),
            name_length: name.len(),
            value: value.as_ptr(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`
pub const REQUEST_HEADERS: u32 = 0;

/// `envoy_dynamic_module_type_log_level`, spdlog's order.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// `envoy_dynamic_module_type_metrics_result`
pub const METRICS_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_attribute_id` of `response.code`.
pub const ATTRIBUTE_RESPONSE_CODE: u32 = 15;

/// Envoy's `FilterHeadersStatus`, which the hook's status is cast to.
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
/// Holds the headers, and the body with flow control, until
/// `continue_decoding`. Plain StopIteration would let a body chunk that
/// arrives meanwhile carry the request on without its credentials.
pub const HEADERS_STOP_ALL_AND_WATERMARK: u32 = 4;
/// Continue, for the body, trailer and response hooks.
pub const CONTINUE: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);

    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: EnvoyFilter,
        header_type: u32,
    ) -> usize;
    /// Fills `headers`, which has room for `get_headers_size` entries.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: EnvoyFilter,
        header_type: u32,
        headers: *mut Header,
    ) -> bool;
    /// Replaces every value of `name`; a null `value` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyFilter,
        header_type: u32,
        name: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// Appends one value of `name`.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyFilter,
        header_type: u32,
        name: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// A local reply; the hook then returns a stop status.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyFilter,
        status_code: u32,
        headers: *mut Header,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: EnvoyFilter);
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: EnvoyFilter,
        attribute: u32,
        value: *mut u64,
    ) -> bool;
    /// A string filter state, printed by `%FILTER_STATE(key:PLAIN)%`.
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: EnvoyFilter,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// On the stream's worker, inside a hook. The scheduler holds a weak
    /// reference: a commit after the stream is gone does nothing.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: EnvoyFilter,
    ) -> Scheduler;
    /// From any thread: runs `on_http_filter_scheduled` on the worker.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: Scheduler,
        event: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: Scheduler);

    /// From any thread: runs `on_http_filter_config_scheduled` on the main thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: EnvoyConfig,
    ) -> ConfigScheduler;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: ConfigScheduler,
        event: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: ConfigScheduler,
    );

    /// Only while the config is created. Ids start at 1.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyConfig,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: EnvoyConfig,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    /// On the main thread; as many label values as names were defined.
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyConfig,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: EnvoyConfig,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: Envoy reads the message during the call; any thread may log.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}
