//! Base64 as memcached's meta commands read and write keys with the `b`
//! flag (memcached's `base64.c`): decoding skips every byte outside the
//! alphabet, needs a whole number of 4-character blocks, and stops after
//! the first padded block; encoding pads with `=`.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The 6-bit value of an alphabet byte (`=` reads as 0), or `None` for a
/// byte decoding skips.
fn sextet(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// memcached's `base64_decode`; `None` where it returns 0 (nothing to
/// decode, a partial block, bad padding, or an empty result).
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let count = text.iter().filter(|&&b| sextet(b).is_some()).count();
    if count == 0 || count % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(count / 4 * 3);
    let mut block = [0u8; 4];
    let (mut filled, mut pad) = (0, 0);
    for &byte in text {
        let Some(bits) = sextet(byte) else {
            continue;
        };
        pad += usize::from(byte == b'=');
        block[filled] = bits;
        filled += 1;
        if filled < 4 {
            continue;
        }
        out.push((block[0] << 2) | (block[1] >> 4));
        out.push((block[1] << 4) | (block[2] >> 2));
        out.push((block[2] << 6) | block[3]);
        filled = 0;
        if pad > 0 {
            if pad > 2 {
                return None;
            }
            out.truncate(out.len() - pad);
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Appends `bytes` in base64, padded.
pub fn encode(bytes: &[u8], out: &mut Vec<u8>) {
    let char_of = |bits: u8| ALPHABET[usize::from(bits & 0x3f)];
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        out.push(char_of(b[0] >> 2));
        out.push(char_of((b[0] << 4) | (b[1] >> 4)));
        out.push(match chunk.len() {
            1 => b'=',
            _ => char_of((b[1] << 2) | (b[2] >> 6)),
        });
        out.push(match chunk.len() {
            3 => char_of(b[2]),
            _ => b'=',
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_follows_memcached() {
        assert_eq!(decode(b"a2V5").as_deref(), Some(&b"key"[..]));
        assert_eq!(decode(b"a2V5MQ==").as_deref(), Some(&b"key1"[..]));
        assert_eq!(decode(b"a2V5MTI=").as_deref(), Some(&b"key12"[..]));
        // Bytes outside the alphabet are skipped.
        assert_eq!(decode(b"a2!V5").as_deref(), Some(&b"key"[..]));
        assert_eq!(decode(b"a2V5="), None);
        assert_eq!(decode(b"!!!!"), None);
        assert_eq!(decode(b"d4"), None);
        assert_eq!(decode(b"a==="), None);
        // Decoding stops at the first padded block.
        assert_eq!(decode(b"ZDQ=a2V5").as_deref(), Some(&b"d4"[..]));
    }

    #[test]
    fn encoding_round_trips() {
        for bytes in [&b"k"[..], b"ke", b"key", b"\x00\xff\r\n key"] {
            let mut text = Vec::new();
            encode(bytes, &mut text);
            assert_eq!(decode(&text).as_deref(), Some(bytes));
        }
        let mut text = Vec::new();
        encode(b"key1", &mut text);
        assert_eq!(text, b"a2V5MQ==");
    }
}
