//! The proxy-wasm ABI's serialized header map, as bytes both ways. The SDK's own decoder turns names and
//! values into `String` with `unwrap`, so one header byte outside UTF-8 (legal in HTTP, RFC 9110 §5.5)
//! would trap the VM; this one never panics and keeps bytes as bytes. Calling the host is `host`'s job.
//!
//! Layout (proxy-wasm ABI 0.2.1, `proxy_get_header_map_pairs`): a little-endian `u32` count `n`, then `n`
//! pairs of `u32` lengths (name, value), then each name and value in order, each followed by one NUL.
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::arithmetic_side_effects))]

/// One header: name and value as the host holds them.
pub type HeaderPair = (Vec<u8>, Vec<u8>);

/// Decodes a serialized header map. Returns `None` when the bytes do not follow the layout (a host bug):
/// lengths that run past the end, a count larger than the buffer could hold, a missing NUL.
pub fn decode(bytes: &[u8]) -> Option<Vec<HeaderPair>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = <[u8; 4]>::try_from(bytes.get(at..at.checked_add(4)?)?).ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // In range: `count * 8 + 4` was checked against the buffer above.
        let sizes = i.checked_mul(8)?.checked_add(4)?;
        let mut field = |len: usize| -> Option<Vec<u8>> {
            let end = data.checked_add(len)?;
            let value = bytes.get(data..end)?.to_vec();
            if bytes.get(end) != Some(&0) {
                return None;
            }
            data = end.checked_add(1)?;
            Some(value)
        };
        let name = field(word(sizes)?)?;
        let value = field(word(sizes.checked_add(4)?)?)?;
        out.push((name, value));
    }
    Some(out)
}

/// Encodes header pairs for `proxy_send_local_response` and friends (the layout [`decode`] reads).
/// Lengths above `u32::MAX` cannot be expressed and are cut to an empty pair list.
pub fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let len32 = |n: usize| u32::try_from(n).ok();
    let Some(count) = len32(pairs.len()) else {
        return 0u32.to_le_bytes().to_vec();
    };
    let size =
        pairs.iter().fold(4usize, |acc, (n, v)| acc.saturating_add(10).saturating_add(n.len()).saturating_add(v.len()));
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in pairs {
        let (Some(n), Some(v)) = (len32(name.len()), len32(value.len())) else {
            return 0u32.to_le_bytes().to_vec();
        };
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_outside_utf8_round_trip() {
        let pairs: Vec<(&[u8], &[u8])> =
            vec![(b":path", b"/caf\xe9"), (b"authorization", b"Bearer caf\xe9.x.y"), (b"x-\xff", b"")];
        let decoded = decode(&encode(&pairs)).unwrap();
        let want: Vec<HeaderPair> = pairs.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        assert_eq!(decoded, want);
    }

    #[test]
    fn malformed_maps_are_refused_not_panicked_on() {
        let good = encode(&[(b"a", b"b")]);
        assert_eq!(decode(&[]), Some(vec![]));
        for cut in 1..good.len() {
            assert_eq!(decode(&good[..cut]), None, "truncated at {cut}");
        }
        let mut no_nul = good.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(decode(&no_nul), None);
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), None, "a huge count");
        let mut long = good;
        long[4] = 0xff;
        assert_eq!(decode(&long), None, "a name longer than the buffer");
    }
}
