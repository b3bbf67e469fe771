//! C0 of podward's benchmark: sets fixed request headers and nothing else.
//!
//! The plugin configuration is plain text, one `name: value` line per header,
//! read once in `on_configure`. Each request gets every header set (replacing
//! any the client sent), as podward sets the token and identity headers.
//!
//! Built with `--features probes` (bench/breakdown.py, never C0 itself), a
//! `#probe NAME` line adds one of podward's other host calls to each request.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            headers: Rc::new(Vec::new()),
            #[cfg(feature = "probes")]
            probes: probes::Probes::default(),
        })
    });
}}

type Headers = Rc<Vec<(String, String)>>;

struct Root {
    headers: Headers,
    #[cfg(feature = "probes")]
    probes: probes::Probes,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        let headers = text
            .lines()
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.to_string()))
            .collect();
        self.headers = Rc::new(headers);
        #[cfg(feature = "probes")]
        {
            self.probes = probes::Probes::read(&text);
        }
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            headers: Rc::clone(&self.headers),
            #[cfg(feature = "probes")]
            probes: self.probes,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    headers: Headers,
    #[cfg(feature = "probes")]
    probes: probes::Probes,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        #[cfg(feature = "probes")]
        self.probes.on_request(self);
        for (name, value) in self.headers.iter() {
            self.set_http_request_header(name, Some(value));
        }
        Action::Continue
    }

    #[cfg(feature = "probes")]
    fn on_log(&mut self) {
        self.probes.on_log(self);
    }
}

#[cfg(feature = "probes")]
mod probes {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::HttpContext;
    use proxy_wasm::types::MetricType;

    /// An access record the size of podward's (filter state, printed by the access log).
    const RECORD: &[u8] = br#"{"decision":"forward","rule":"kubectl-proxy/default","verb":"list","group":"","resource":"pods","subresource":"","namespace":"default","name":""}"#;

    #[derive(Default, Clone, Copy)]
    pub struct Probes {
        /// The whole request header map into the VM, as podward reads it.
        read_headers: bool,
        /// The response code property at the end of the stream.
        response_code: bool,
        /// The response's `:status` header at the end of the stream, as podward reads it.
        status: bool,
        /// A counter incremented per request (defined once).
        counter: Option<u32>,
        /// An access record set as filter state.
        record: bool,
    }

    impl Probes {
        pub fn read(config: &str) -> Probes {
            let mut probes = Probes::default();
            for name in config
                .lines()
                .filter_map(|line| line.strip_prefix("#probe "))
            {
                match name.trim() {
                    "read-headers" => probes.read_headers = true,
                    "response-code" => probes.response_code = true,
                    "status" => probes.status = true,
                    "counter" => {
                        probes.counter =
                            hostcalls::define_metric(MetricType::Counter, "minimal_probe").ok()
                    }
                    "record" => probes.record = true,
                    _ => {}
                }
            }
            probes
        }

        pub fn on_request(&self, request: &dyn HttpContext) {
            if self.read_headers {
                core::hint::black_box(request.get_http_request_headers_bytes());
            }
            if self.record {
                request.set_property(vec!["podward"], Some(RECORD));
            }
        }

        pub fn on_log(&self, request: &dyn HttpContext) {
            if self.response_code {
                core::hint::black_box(request.get_property(vec!["response", "code"]));
            }
            if self.status {
                core::hint::black_box(request.get_http_response_header_bytes(":status"));
            }
            if let Some(id) = self.counter {
                let _ = hostcalls::increment_metric(id, 1);
            }
        }
    }
}
