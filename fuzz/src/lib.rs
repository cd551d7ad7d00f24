//! What the fuzz targets share: reading choices off the front of an input, and the checks that a
//! message is safe to log.

/// The front of a fuzz input read as choices, the rest as the data.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((b, rest)) => {
                self.bytes = rest;
                *b
            }
            None => 0,
        }
    }

    /// One of `n` choices.
    pub fn choose(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    /// What is left.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// Panics when `message` (an error or a warning, for a log line) holds a control character: a line
/// break or an escape sequence from the input would forge log lines or terminal output.
pub fn assert_loggable(what: &str, message: &str) {
    if let Some(c) = message.chars().find(|c| c.is_control()) {
        panic!("{what}: control character {c:?} in the message {message:?}");
    }
}
