//! The text encoding of a clock's lines (`encoding`).

use super::*;

/// `encoding`: `None` for UTF-8 (the fast path), else a WHATWG encoding that can be read line by line.
pub(super) fn parse_encoding(
    label: Option<&str>,
) -> Result<Option<&'static encoding_rs::Encoding>, FormatError> {
    let Some(label) = label else {
        return Ok(None);
    };
    let Some(enc) = encoding_rs::Encoding::for_label(label.trim().as_bytes()) else {
        return Err(FormatError::new(
            "encoding",
            "is not a known encoding label: use utf-8, gb18030, gbk, big5, shift_jis, euc-kr or \
             another WHATWG label",
        ));
    };
    if enc == encoding_rs::UTF_8 {
        Ok(None)
    } else if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
        Err(FormatError::new(
            "encoding",
            "is not supported: lines are split at byte 0x0A, which does not work for UTF-16 text",
        ))
    } else if enc == encoding_rs::REPLACEMENT {
        Err(FormatError::new(
            "encoding",
            "is not supported: WHATWG decodes it to a replacement character only",
        ))
    } else {
        Ok(Some(enc))
    }
}

/// Offset of the first malformed byte sequence of `line` in `enc`.
pub(super) fn malformed_offset(enc: &'static encoding_rs::Encoding, line: &[u8]) -> usize {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let cap = decoder
        .max_utf8_buffer_length_without_replacement(line.len())
        .unwrap_or(line.len().saturating_mul(4).saturating_add(16));
    let mut out = String::with_capacity(cap);
    let (result, read) = decoder.decode_to_string_without_replacement(line, &mut out, true);
    match result {
        encoding_rs::DecoderResult::Malformed(bad, after) => {
            read.saturating_sub(usize::from(bad) + usize::from(after))
        }
        _ => read,
    }
}
