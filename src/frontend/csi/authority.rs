//! Any HTTP/2 `:authority` is served (csi.md rule 34).
//!
//! gRPC C-core clients (Python grpcio, C++, Ruby, PHP) send the percent-encoded socket path
//! as `:authority` on a unix socket (`tmp%2Fplugin%2Fcsi.sock`), grpc-java sends the path
//! itself (`/tmp/plugin/csi.sock`). Neither is a URI authority, and h2 — under hyper and
//! tonic — answers such a request with RST_STREAM(PROTOCOL_ERROR) before any service sees
//! it: it builds the request's `http::Uri` from the pseudo-headers and refuses the stream
//! when `:authority` does not parse (h2 `server.rs`, `convert_poll_message`). There is no
//! setting for that, so each accepted connection is read through [`AnyAuthority`]: it
//! follows the client's header blocks (HPACK) and, from the first block whose
//! `:authority` h2 would refuse, re-encodes the blocks with that authority replaced by
//! `localhost` (what grpc-go sends on unix sockets). Connections whose authorities are all
//! valid reach h2 byte for byte. Nothing in volbridge reads the authority.

use super::hpack::{self, Decoder, Field};
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What a refused authority is served as.
pub const REPLACEMENT: &[u8] = b"localhost";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The server's SETTINGS_MAX_FRAME_SIZE and SETTINGS_HEADER_TABLE_SIZE: hyper's and h2's
/// defaults, which tonic keeps (the server sets neither).
const MAX_FRAME: usize = 16_384;
const TABLE_SIZE: usize = 4_096;
/// A header block (all its frames) or its decoded list larger than this is not followed:
/// h2's own limits (16 KiB by default) refuse it anyway.
const MAX_BLOCK: usize = 1 << 20;

/// Whether h2 accepts this `:authority` (the same parse it makes).
pub fn acceptable(authority: &[u8]) -> bool {
    http::uri::Authority::try_from(authority).is_ok()
}

/// A server connection whose client header blocks never carry an `:authority` that h2
/// refuses. Writes pass through untouched.
pub struct AnyAuthority<IO> {
    io: IO,
    fix: Fixer,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<IO> AnyAuthority<IO> {
    pub fn new(io: IO) -> AnyAuthority<IO> {
        AnyAuthority {
            io,
            fix: Fixer::new(),
            scratch: vec![0; MAX_FRAME + FRAME_HEAD].into_boxed_slice(),
            eof: false,
        }
    }
}

impl<IO: Connected> Connected for AnyAuthority<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AnyAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !me.fix.output.is_empty() {
                let n = me.fix.output.len().min(buf.remaining());
                buf.put_slice(&me.fix.output[..n]);
                me.fix.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut me.scratch);
            ready!(Pin::new(&mut me.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                me.eof = true;
                me.fix.finish();
            } else {
                me.fix.push(read.filled())?;
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside the client preface, this many bytes seen.
    Preface(usize),
    /// Before a frame header.
    Head,
    /// Inside the payload of a frame passed through, this many bytes left.
    Pass(usize),
    /// Waiting for the whole payload of a frame held back: its header.
    Collect([u8; FRAME_HEAD]),
    /// Not HTTP/2, or not followed any more: every byte passes through.
    Blind,
}

/// A header block being collected (HEADERS, then CONTINUATION frames).
struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames as received, passed on as they are when nothing needs changing.
    original: Vec<u8>,
}

/// The byte transformer of the client-to-server direction, independent of any I/O.
struct Fixer {
    state: State,
    input: BytesMut,
    output: BytesMut,
    pending: Option<Pending>,
    decoder: Decoder,
    /// Set at the first block that needed a change: from then on every block is
    /// re-encoded, because the server's table no longer follows the client's.
    rewriting: bool,
}

impl Fixer {
    fn new() -> Fixer {
        Fixer {
            state: State::Preface(0),
            input: BytesMut::new(),
            output: BytesMut::new(),
            pending: None,
            decoder: Decoder::new(TABLE_SIZE, MAX_BLOCK),
            rewriting: false,
        }
    }

    /// Takes bytes read from the client; what may go on to the server lands in `output`.
    fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.input.extend_from_slice(data);
        loop {
            match self.state {
                State::Blind => {
                    let all = self.input.split();
                    self.output.extend_from_slice(&all);
                    return Ok(());
                }
                State::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(self.input.len());
                    if n == 0 {
                        return Ok(());
                    }
                    if self.input[..n] != PREFACE[seen..seen + n] {
                        self.state = State::Blind;
                        continue;
                    }
                    let bytes = self.input.split_to(n);
                    self.output.extend_from_slice(&bytes);
                    self.state = if seen + n == PREFACE.len() {
                        State::Head
                    } else {
                        State::Preface(seen + n)
                    };
                }
                State::Head => {
                    if self.input.len() < FRAME_HEAD {
                        return Ok(());
                    }
                    let mut head = [0u8; FRAME_HEAD];
                    head.copy_from_slice(&self.input[..FRAME_HEAD]);
                    let (len, kind) = (frame_len(&head), head[3]);
                    let header_frame = kind == HEADERS || kind == CONTINUATION;
                    if !header_frame && self.pending.is_none() {
                        let bytes = self.input.split_to(FRAME_HEAD);
                        self.output.extend_from_slice(&bytes);
                        self.state = State::Pass(len);
                    } else if len > MAX_FRAME {
                        // h2 refuses the frame (FRAME_SIZE_ERROR); let it.
                        self.give_up(&[])?;
                    } else {
                        self.input.advance(FRAME_HEAD);
                        self.state = State::Collect(head);
                    }
                }
                State::Pass(left) => {
                    let n = left.min(self.input.len());
                    let bytes = self.input.split_to(n);
                    self.output.extend_from_slice(&bytes);
                    if n == left {
                        self.state = State::Head;
                    } else {
                        self.state = State::Pass(left - n);
                        return Ok(());
                    }
                }
                State::Collect(head) => {
                    let len = frame_len(&head);
                    if self.input.len() < len {
                        return Ok(());
                    }
                    let payload = self.input.split_to(len);
                    self.state = State::Head;
                    self.frame(head, &payload)?;
                }
            }
        }
    }

    /// The client closed its side: whatever is held back goes on as it is.
    fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            self.output.extend_from_slice(&p.original);
        }
        if let State::Collect(head) = self.state {
            self.output.extend_from_slice(&head);
        }
        let rest = self.input.split();
        self.output.extend_from_slice(&rest);
        self.state = State::Blind;
    }

    /// Stops following the connection: in the frames seen so far nothing was changed, so
    /// h2 gets them as they came and judges them itself. After a change that is no longer
    /// possible (the server's table differs from the client's): the connection fails.
    fn give_up(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.rewriting {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an HTTP/2 header block that cannot be decoded after an :authority was \
                 rewritten; the connection is closed",
            ));
        }
        if let Some(p) = self.pending.take() {
            self.output.extend_from_slice(&p.original);
        }
        self.output.extend_from_slice(frame);
        self.state = State::Blind;
        Ok(())
    }

    /// A whole frame held back: a HEADERS or CONTINUATION frame, or any frame that came
    /// while a header block was open.
    fn frame(&mut self, head: [u8; FRAME_HEAD], payload: &[u8]) -> io::Result<()> {
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut whole = Vec::with_capacity(FRAME_HEAD + payload.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(payload);
        match (kind, self.pending.as_mut()) {
            (HEADERS, None) => {
                let Some((priority, fragment)) = headers_fragment(flags, payload) else {
                    return self.give_up(&whole);
                };
                self.pending = Some(Pending {
                    stream,
                    flags,
                    priority,
                    block: fragment.to_vec(),
                    original: whole,
                });
            }
            (CONTINUATION, Some(p)) if p.stream == stream => {
                p.block.extend_from_slice(payload);
                p.original.extend_from_slice(&whole);
                if p.original.len() > MAX_BLOCK {
                    return self.give_up(&[]);
                }
            }
            // A CONTINUATION out of place, or another frame inside a block: h2's error.
            _ => return self.give_up(&whole),
        }
        if flags & END_HEADERS != 0 {
            self.end_of_block()?;
        }
        Ok(())
    }

    fn end_of_block(&mut self) -> io::Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let mut fields = match self.decoder.decode(&p.block) {
            Ok(fields) => fields,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 header block not followed");
                self.pending = Some(p);
                return self.give_up(&[]);
            }
        };
        let refused = |f: &Field| f.name == b":authority" && !acceptable(&f.value);
        if !self.rewriting && !fields.iter().any(refused) {
            self.output.extend_from_slice(&p.original);
            return Ok(());
        }
        for f in fields.iter_mut().filter(|f| refused(f)) {
            if !self.rewriting {
                tracing::debug!(
                    authority = %String::from_utf8_lossy(&f.value),
                    "an HTTP/2 :authority that is not a URI authority (a gRPC client on a unix \
                     socket); served as localhost"
                );
            }
            f.value = REPLACEMENT.to_vec();
        }
        self.rewriting = true;
        self.emit(&p, &hpack::encode(&fields));
        Ok(())
    }

    /// The re-encoded block as one HEADERS frame and as many CONTINUATION frames as needed.
    fn emit(&mut self, p: &Pending, block: &[u8]) {
        let stream = p.stream.to_be_bytes();
        let priority: &[u8] = p.priority.as_ref().map_or(&[], |x| x.as_slice());
        let first = (MAX_FRAME - priority.len()).min(block.len());
        let (head_part, mut rest) = block.split_at(first);
        let mut flags = p.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        self.put_frame(HEADERS, flags, stream, &[priority, head_part]);
        while !rest.is_empty() {
            let n = MAX_FRAME.min(rest.len());
            let (part, tail) = rest.split_at(n);
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.put_frame(CONTINUATION, flags, stream, &[part]);
        }
    }

    fn put_frame(&mut self, kind: u8, flags: u8, stream: [u8; 4], parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.output
            .extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        self.output.extend_from_slice(&[kind, flags]);
        self.output.extend_from_slice(&stream);
        for part in parts {
            self.output.extend_from_slice(part);
        }
    }
}

fn frame_len(head: &[u8; FRAME_HEAD]) -> usize {
    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2])
}

/// The priority fields and the block fragment of a HEADERS payload, padding removed; None
/// when the padding or priority does not fit (h2 refuses that frame).
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, tail) = rest.split_first()?;
        pad = usize::from(n);
        rest = tail;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let (fields, tail) = rest.split_at_checked(5)?;
        priority = Some(fields.try_into().ok()?);
        rest = tail;
    }
    let end = rest.len().checked_sub(pad)?;
    Some((priority, &rest[..end]))
}

#[cfg(test)]
mod tests {
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
}
