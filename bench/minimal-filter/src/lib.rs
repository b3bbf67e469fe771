//! C0 of podward's benchmark: sets fixed request headers and nothing else.
//!
//! The plugin configuration is plain text, one `name: value` line per header,
//! read once in `on_configure`. Each request gets every header set (replacing
//! any the client sent), as podward sets the token and identity headers.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { headers: Rc::new(Vec::new()) })
    });
}}

type Headers = Rc<Vec<(String, String)>>;

struct Root {
    headers: Headers,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let headers = String::from_utf8_lossy(&config)
            .lines()
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.to_string()))
            .collect();
        self.headers = Rc::new(headers);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            headers: Rc::clone(&self.headers),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    headers: Headers,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for (name, value) in self.headers.iter() {
            self.set_http_request_header(name, Some(value));
        }
        Action::Continue
    }
}
