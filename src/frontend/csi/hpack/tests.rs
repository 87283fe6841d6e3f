use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn pairs(fields: &[Field]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| {
            (
                String::from_utf8(f.name.clone()).unwrap(),
                String::from_utf8(f.value.clone()).unwrap(),
            )
        })
        .collect()
}

fn want(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn integers_of_rfc_7541_c1() {
    let mut out = Vec::new();
    put_int(&mut out, 0, 5, 10);
    assert_eq!(out, [0x0a]);
    out.clear();
    put_int(&mut out, 0, 5, 1337);
    assert_eq!(out, [0x1f, 0x9a, 0x0a]);
    let mut r = Reader {
        data: &[0x1f, 0x9a, 0x0a],
        at: 0,
    };
    assert_eq!(r.int(5).unwrap(), 1337);
    let mut r = Reader {
        data: &[0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f],
        at: 0,
    };
    assert!(r.int(7).is_err(), "an integer past 2^28 is refused");
}

/// RFC 7541 C.3 and C.4: three requests on one connection, literal then Huffman.
#[test]
fn requests_of_rfc_7541_c3_and_c4() {
    for blocks in [
        [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ],
        [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ],
    ] {
        let mut d = Decoder::new(4096, 1 << 20);
        let first = d.decode(&hex(blocks[0])).unwrap();
        assert_eq!(
            pairs(&first),
            want(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        let second = d.decode(&hex(blocks[1])).unwrap();
        assert_eq!(
            pairs(&second),
            want(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        let third = d.decode(&hex(blocks[2])).unwrap();
        assert_eq!(
            pairs(&third),
            want(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(d.size, 164, "the table of C.3.3");
        assert_eq!(d.table.len(), 3);
    }
}

/// RFC 7541 C.6 (responses, a 256-byte table): entries are evicted oldest first.
#[test]
fn eviction_of_rfc_7541_c6() {
    let mut d = Decoder::new(256, 1 << 20);
    d.decode(&hex(
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    ))
    .unwrap();
    assert_eq!(d.size, 222);
    let second = d.decode(&hex("4883 640e ffc1 c0bf")).unwrap();
    assert_eq!(second[0].value, b"307");
    assert_eq!(second[3].value, b"https://www.example.com");
    assert_eq!(d.size, 222);
    assert_eq!(d.table[0].1, b"307", "the newest entry first");
    assert_eq!(d.table.len(), 4);
}

#[test]
fn size_updates_and_limits() {
    let mut d = Decoder::new(4096, 1 << 20);
    // A size update to 0 empties the table; then an index into it is refused.
    d.decode(&hex("410f 7777 772e 6578 616d 706c 652e 636f 6d"))
        .unwrap();
    assert_eq!(d.table.len(), 1);
    d.decode(&hex("20")).unwrap();
    assert!(d.table.is_empty());
    assert!(d.decode(&hex("be")).is_err());
    assert!(
        d.decode(&hex("3fe2 1f")).is_err(),
        "above the server's 4096"
    );
    assert!(d.decode(&hex("8220")).is_err(), "an update after a field");
    assert!(d.decode(&hex("80")).is_err(), "index 0");
    assert!(d.decode(&hex("410f 7777")).is_err(), "a cut string");
    let mut small = Decoder::new(4096, 100);
    assert!(
        small.decode(&hex("8282 8282")).is_err(),
        "a list over the limit"
    );
}

#[test]
fn huffman_padding_and_eos() {
    // "a" is 00011; padded with ones: 00011111.
    assert_eq!(huffman_decode(&[0x1f]).unwrap(), b"a");
    // Padded with a zero bit.
    assert!(huffman_decode(&[0x1e]).is_err());
    // Eight bits of padding.
    assert!(huffman_decode(&[0x1f, 0xff]).is_err());
    // EOS (30 one bits) inside the string.
    assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    // Every byte value survives a round trip through the decoder when coded canonically.
    let c = canonical();
    let mut bits: Vec<bool> = Vec::new();
    for symbol in 0u16..256 {
        let len = HUFFMAN_BITS[symbol as usize] as usize;
        let rank = c.symbols[c.offset[len]..]
            .iter()
            .position(|s| *s == symbol)
            .unwrap();
        let code = c.first[len] + rank as u32;
        bits.extend((0..len).rev().map(|i| (code >> i) & 1 == 1));
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    let bytes: Vec<u8> = bits
        .chunks(8)
        .map(|b| b.iter().fold(0u8, |acc, bit| (acc << 1) | u8::from(*bit)))
        .collect();
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(huffman_decode(&bytes).unwrap(), all);
}

#[test]
fn encoded_fields_decode_back_and_index_nothing() {
    let fields = vec![
        Field::new(b":authority", b"localhost"),
        Field::new(b"x-long", &[b'v'; 300]),
        Field {
            name: b"authorization".to_vec(),
            value: b"t".to_vec(),
            sensitive: true,
        },
    ];
    let block = encode(&fields);
    let mut d = Decoder::new(4096, 1 << 20);
    assert_eq!(d.decode(&block).unwrap(), fields);
    assert!(d.table.is_empty());
}
