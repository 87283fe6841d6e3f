use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn request_block(authority: &[u8]) -> Vec<u8> {
    hpack::encode(&[
        Field::new(b":method", b"POST"),
        Field::new(b":scheme", b"http"),
        Field::new(b":path", b"/csi.v1.Identity/Probe"),
        Field::new(b":authority", authority),
        Field::new(b"content-type", b"application/grpc"),
    ])
}

/// Runs bytes through a fixer in chunks of `step`; returns what h2 would read.
fn run(input: &[u8], step: usize) -> io::Result<Vec<u8>> {
    let mut f = Fixer::new();
    for chunk in input.chunks(step) {
        f.push(chunk)?;
    }
    f.finish();
    Ok(f.output.to_vec())
}

/// The header blocks of `bytes` (after the preface), decoded as h2 would.
fn blocks(bytes: &[u8]) -> Vec<Vec<Field>> {
    let mut d = Decoder::new(TABLE_SIZE, MAX_BLOCK);
    let mut rest = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    let mut block = Vec::new();
    while !rest.is_empty() {
        let head: [u8; 9] = rest[..9].try_into().unwrap();
        let len = frame_len(&head);
        let payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        match head[3] {
            HEADERS => block.extend_from_slice(headers_fragment(head[4], payload).unwrap().1),
            CONTINUATION => block.extend_from_slice(payload),
            _ => continue,
        }
        if head[4] & END_HEADERS != 0 {
            out.push(d.decode(&block).unwrap());
            block.clear();
        }
    }
    out
}

fn authority(fields: &[Field]) -> String {
    let f = fields.iter().find(|f| f.name == b":authority").unwrap();
    String::from_utf8(f.value.clone()).unwrap()
}

#[test]
fn what_h2_refuses() {
    for bad in [
        &b"tmp%2Fx%2Fcsi.sock"[..],
        b"/tmp/x/csi.sock",
        b"",
        b"a b",
        b"unix:/tmp/x.sock",
    ] {
        assert!(!acceptable(bad), "{}", String::from_utf8_lossy(bad));
    }
    for good in [
        &b"localhost"[..],
        b"[::1]:50051",
        b"127.0.0.1:10000",
        b"csi.sock",
    ] {
        assert!(acceptable(good), "{}", String::from_utf8_lossy(good));
    }
}

#[test]
fn valid_authorities_pass_byte_for_byte() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    input.extend(frame(HEADERS, END_HEADERS, 1, &request_block(b"localhost")));
    input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0])); // DATA
    for step in [1, 7, 4096] {
        assert_eq!(run(&input, step).unwrap(), input, "step {step}");
    }
}

#[test]
fn socket_paths_are_served_as_localhost_from_then_on() {
    // Python grpcio: Huffman, and the authority indexed then referenced (index 62).
    let mut literal = vec![0x41]; // incremental indexing, name :authority
    let path = b"/tmp/x/csi.sock";
    literal.push(path.len() as u8);
    literal.extend_from_slice(path);
    let mut first = hpack::encode(&[Field::new(b":method", b"POST")]);
    first.extend(&literal);
    first.extend(hpack::encode(&[Field::new(
        b":path",
        b"/csi.v1.Identity/Probe",
    )]));
    let second = [0x83, 0x86, 0xbe]; // POST, http, the indexed authority
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
    // The second request split over HEADERS (padded, with priority) and CONTINUATION.
    let mut padded = vec![2, 0, 0, 0, 1, 16, second[0]];
    padded.extend([0, 0]);
    input.extend(frame(HEADERS, PADDED | PRIORITY, 3, &padded));
    input.extend(frame(CONTINUATION, END_HEADERS, 3, &second[1..]));
    // A valid authority after the change is re-encoded too.
    input.extend(frame(HEADERS, END_HEADERS, 5, &request_block(b"localhost")));
    for step in [1, 5, 100_000] {
        let out = run(&input, step).unwrap();
        let got = blocks(&out);
        assert_eq!(got.len(), 3, "step {step}");
        for b in &got {
            assert_eq!(authority(b), "localhost");
        }
        assert_eq!(got[0][2].value, b"/csi.v1.Identity/Probe");
        assert_eq!(got[1][0].value, b"POST");
        // Flags: END_STREAM kept, priority kept, padding dropped.
        let heads: Vec<(u8, u8)> = {
            let mut rest = &out[PREFACE.len()..];
            let mut v = Vec::new();
            while !rest.is_empty() {
                let len = frame_len(rest[..9].try_into().unwrap());
                v.push((rest[3], rest[4]));
                rest = &rest[9 + len..];
            }
            v
        };
        assert_eq!(
            heads,
            [
                (HEADERS, END_HEADERS | END_STREAM),
                (HEADERS, END_HEADERS | PRIORITY),
                (HEADERS, END_HEADERS)
            ]
        );
    }
}

#[test]
fn large_blocks_are_split_into_continuations() {
    let big = vec![b'x'; 40_000];
    let mut block = request_block(b"tmp%2Fx.sock");
    block.extend(hpack::encode(&[Field::new(b"x-big", &big)]));
    let mut input = PREFACE.to_vec();
    let parts: Vec<&[u8]> = block.chunks(16_000).collect();
    input.extend(frame(HEADERS, 0, 1, parts[0]));
    for (i, part) in parts.iter().enumerate().skip(1) {
        let flags = if i + 1 == parts.len() { END_HEADERS } else { 0 };
        input.extend(frame(CONTINUATION, flags, 1, part));
    }
    let out = run(&input, 9000).unwrap();
    let got = blocks(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(authority(&got[0]), "localhost");
    assert_eq!(got[0].last().unwrap().value, big);
    let mut rest = &out[PREFACE.len()..];
    while !rest.is_empty() {
        let len = frame_len(rest[..9].try_into().unwrap());
        assert!(len <= MAX_FRAME);
        rest = &rest[9 + len..];
    }
}

#[test]
fn what_h2_must_judge_passes_unchanged() {
    // Not HTTP/2 at all.
    let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(run(&http1, 3).unwrap(), http1);
    // A block that does not decode, before any change: passed on for h2 to refuse.
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &[0x80]));
    input.extend(frame(0x0, END_STREAM, 1, b"abc"));
    assert_eq!(run(&input, 2).unwrap(), input);
    // A stray CONTINUATION.
    let mut input = PREFACE.to_vec();
    input.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
    assert_eq!(run(&input, 4).unwrap(), input);
    // The same undecodable block after a change fails the connection.
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &request_block(b"")));
    input.extend(frame(HEADERS, END_HEADERS, 3, &[0x80]));
    assert!(run(&input, 50).is_err());
}

#[tokio::test]
async fn reads_through_the_wrapper() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = tokio::io::duplex(64);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &request_block(b"a%2Fb")));
    let sent = input.clone();
    let writer = tokio::spawn(async move {
        let mut client = client;
        for chunk in sent.chunks(10) {
            client.write_all(chunk).await.unwrap();
        }
        client.shutdown().await.unwrap();
    });
    let mut server = AnyAuthority::new(server);
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(authority(&blocks(&got)[0]), "localhost");
}
