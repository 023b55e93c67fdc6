//! What a logger or a `tracing` layer wrote, captured in memory and read back.

use std::io;
use std::sync::{Arc, Mutex};

/// An in-memory writer shared with the test: clones write into the same bytes.
#[derive(Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    /// Everything written so far (UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Everything written so far, line by line.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(String::from).collect()
    }
}

/// The values of `key=` fields in a text line whose keys and values never contain
/// spaces unless quoted (and the tests' plain values never are).
pub fn fields<'a>(line: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    line.split(' ')
        .filter_map(|token| token.strip_prefix(prefix.as_str()))
        .collect()
}
