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
mod tests;
