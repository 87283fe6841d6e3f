//! HPACK (RFC 7541), just what the `:authority` rewriter (`authority.rs`) needs: a decoder
//! that follows the client's dynamic table, and an encoder that writes every field as a literal the server's
//! decoder does not index (so the server's table never has to match the client's again).

use std::collections::VecDeque;

/// What a header block could not be decoded for. The reason is for a debug log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpackError(pub &'static str);

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HPACK: {}", self.0)
    }
}

/// One header field of a block, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Sent as "never indexed" (a cookie, a token): re-encoded the same way.
    pub sensitive: bool,
}

impl Field {
    pub fn new(name: &[u8], value: &[u8]) -> Field {
        Field {
            name: name.to_vec(),
            value: value.to_vec(),
            sensitive: false,
        }
    }
}

/// The static table (RFC 7541 appendix A), indexes 1..=61.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Bit length of the Huffman code of each symbol, 0..=255 and EOS (RFC 7541 appendix B).
/// The code is canonical (within a length, codes ascend with the symbol), so the lengths
/// alone define it.
const HUFFMAN_BITS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32..
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48..
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64..
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80..
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96..
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112..
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..
    30, // EOS
];

const EOS: u16 = 256;
const LONGEST_CODE: usize = 30;

/// The canonical code in the shape a decoder walks: per length, the first code, how many
/// codes have that length, and where their symbols start in `symbols`.
struct Canonical {
    first: [u32; LONGEST_CODE + 1],
    count: [u32; LONGEST_CODE + 1],
    offset: [usize; LONGEST_CODE + 1],
    symbols: [u16; 257],
}

fn canonical() -> &'static Canonical {
    static CODE: std::sync::OnceLock<Canonical> = std::sync::OnceLock::new();
    CODE.get_or_init(|| {
        let mut c = Canonical {
            first: [0; LONGEST_CODE + 1],
            count: [0; LONGEST_CODE + 1],
            offset: [0; LONGEST_CODE + 1],
            symbols: [0; 257],
        };
        for &bits in &HUFFMAN_BITS {
            c.count[bits as usize] += 1;
        }
        let (mut code, mut at) = (0u32, 0usize);
        for len in 1..=LONGEST_CODE {
            c.first[len] = code;
            c.offset[len] = at;
            code = (code + c.count[len]) << 1;
            at += c.count[len] as usize;
        }
        let mut next = c.offset;
        for (symbol, &bits) in HUFFMAN_BITS.iter().enumerate() {
            c.symbols[next[bits as usize]] = symbol as u16;
            next[bits as usize] += 1;
        }
        c
    })
}

/// Decodes a Huffman-coded string: padding is at most 7 one bits, EOS never appears.
pub fn huffman_decode(data: &[u8]) -> Result<Vec<u8>, HpackError> {
    let c = canonical();
    let mut out = Vec::with_capacity(data.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in data {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > LONGEST_CODE {
                return Err(HpackError("a Huffman code longer than 30 bits"));
            }
            let n = code.wrapping_sub(c.first[len]);
            if code >= c.first[len] && n < c.count[len] {
                let symbol = c.symbols[c.offset[len] + n as usize];
                if symbol == EOS {
                    return Err(HpackError("EOS inside a Huffman string"));
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError("Huffman padding is not a prefix of EOS"));
    }
    Ok(out)
}

/// The size an entry counts for in the dynamic table (RFC 7541 §4.1).
fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// A decoder: the client's dynamic table, bounded by what the server allows.
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    capacity: usize,
    /// SETTINGS_HEADER_TABLE_SIZE of the server: the most a size update may ask for.
    max_capacity: usize,
    /// Decoded bytes (RFC 7540 header list size) one block may expand to.
    max_list_size: usize,
}

impl Decoder {
    pub fn new(max_capacity: usize, max_list_size: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            capacity: max_capacity,
            max_capacity,
            max_list_size,
        }
    }

    /// The fields of one complete header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut r = Reader { data: block, at: 0 };
        let mut fields = Vec::new();
        let mut list_size = 0usize;
        while let Some(first) = r.peek() {
            let field = if first & 0x80 != 0 {
                let index = r.int(7)?;
                let (name, value) = self.entry(index)?;
                Field::new(name, value)
            } else if first & 0xc0 == 0x40 {
                let field = self.literal(&mut r, 6, false)?;
                self.insert(field.name.clone(), field.value.clone());
                field
            } else if first & 0xe0 == 0x20 {
                if !fields.is_empty() {
                    return Err(HpackError("a table size update after a header field"));
                }
                let size = r.int(5)?;
                if size > self.max_capacity {
                    return Err(HpackError("a table size update above the server's limit"));
                }
                self.capacity = size;
                self.evict(0);
                continue;
            } else {
                // 0000xxxx without indexing, 0001xxxx never indexed.
                self.literal(&mut r, 4, first & 0x10 != 0)?
            };
            list_size += entry_size(&field.name, &field.value);
            if list_size > self.max_list_size {
                return Err(HpackError("the header list is too large"));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    fn literal(
        &self,
        r: &mut Reader<'_>,
        prefix: u8,
        sensitive: bool,
    ) -> Result<Field, HpackError> {
        let index = r.int(prefix)?;
        let name = if index == 0 {
            r.string()?
        } else {
            self.entry(index)?.0.to_vec()
        };
        let value = r.string()?;
        Ok(Field {
            name,
            value,
            sensitive,
        })
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError("index 0")),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .ok_or(HpackError("an index beyond the dynamic table")),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = entry_size(&name, &value);
        if size > self.capacity {
            // An entry larger than the table empties it (RFC 7541 §4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.capacity {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= entry_size(&n, &v);
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.at).copied()
    }

    fn byte(&mut self) -> Result<u8, HpackError> {
        let b = self
            .peek()
            .ok_or(HpackError("the block ends inside a field"))?;
        self.at += 1;
        Ok(b)
    }

    /// An integer with an N-bit prefix (RFC 7541 §5.1), at most 2^28 or so.
    fn int(&mut self, prefix: u8) -> Result<usize, HpackError> {
        let mask = (1u8 << prefix) - 1;
        let mut value = usize::from(self.byte()? & mask);
        if value < usize::from(mask) {
            return Ok(value);
        }
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            value += usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 21 {
                return Err(HpackError("an integer too large"));
            }
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek().is_some_and(|b| b & 0x80 != 0);
        let len = self.int(7)?;
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.data.len())
            .ok_or(HpackError("a string longer than the block"))?;
        let raw = &self.data[self.at..end];
        self.at = end;
        if huffman {
            huffman_decode(raw)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// Encodes fields as literals with a literal name, never entering a dynamic table:
/// "without indexing", or "never indexed" for sensitive ones.
pub fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.push(if f.sensitive { 0x10 } else { 0x00 });
        put_string(&mut out, &f.name);
        put_string(&mut out, &f.value);
    }
    out
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

fn put_int(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests;
