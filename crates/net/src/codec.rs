//! The byte formats of shoal's two request-response protocols.
//!
//! `/shoal/direct/1`: a request is one length-prefixed frame (a 4-byte
//! little-endian length, then the bytes, capped); the response is a single
//! acknowledgement byte. `/shoal/hello/1`: a request is an incarnation (16
//! bytes), the response a verdict (a tag byte, then 16 bytes). Anything
//! else is an error the protocol reports, never a panic.

use crate::identity_watch::{Incarnation, Verdict};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use std::io;

/// Frames as length-prefixed bytes, capped at `max`.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    pub max: usize,
}

/// Memory a frame's reader sets aside before its bytes arrive: a length
/// prefix alone never makes a node allocate more (invariant 9).
const FIRST_ALLOCATION: usize = 64 << 10;

pub async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    // Grows with what arrives, never ahead of it.
    let mut buf = Vec::with_capacity(len.min(FIRST_ALLOCATION));
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame cut at {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

pub async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[0]).await?;
        io.close().await
    }
}

/// Greetings: a fixed 16-byte request, a tagged 17-byte reply.
#[derive(Clone, Debug, Default)]
pub struct HelloCodec;

pub fn encode_incarnation(i: &Incarnation) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.nonce.to_le_bytes());
    b[8..].copy_from_slice(&i.started_ms.to_le_bytes());
    b
}

pub fn decode_incarnation(b: &[u8; 16]) -> Incarnation {
    let word = |r: std::ops::Range<usize>| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[r]);
        u64::from_le_bytes(w)
    };
    Incarnation {
        nonce: word(0..8),
        started_ms: word(8..16),
    }
}

pub fn encode_verdict(v: &Verdict) -> [u8; 17] {
    let mut b = [0u8; 17];
    if let Verdict::Duplicate { other } = v {
        b[0] = 1;
        b[1..].copy_from_slice(&encode_incarnation(other));
    }
    b
}

pub fn decode_verdict(b: &[u8; 17]) -> io::Result<Verdict> {
    match b[0] {
        0 => Ok(Verdict::Ok),
        1 => Ok(Verdict::Duplicate {
            other: decode_incarnation(b[1..].try_into().expect("16 bytes")),
        }),
        t => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown greeting verdict {t}"),
        )),
    }
}

impl request_response::Codec for HelloCodec {
    type Protocol = StreamProtocol;
    type Request = Incarnation;
    type Response = Verdict;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Incarnation>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 16];
        io.read_exact(&mut b).await?;
        Ok(decode_incarnation(&b))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Verdict>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 17];
        io.read_exact(&mut b).await?;
        decode_verdict(&b)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Incarnation,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode_incarnation(&req)).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        v: Verdict,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode_verdict(&v)).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_oversized_or_cut_ones_are_errors() {
        let mut buf = Cursor::new(Vec::new());
        block_on(write_frame(&mut buf, b"hello")).unwrap();
        let bytes = buf.into_inner();
        assert_eq!(bytes.len(), 4 + 5);
        let got = block_on(read_frame(&mut Cursor::new(bytes.clone()), 5)).unwrap();
        assert_eq!(got, b"hello");
        let err = block_on(read_frame(&mut Cursor::new(bytes.clone()), 4)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        for cut in 0..bytes.len() {
            assert!(block_on(read_frame(&mut Cursor::new(bytes[..cut].to_vec()), 5)).is_err());
        }
    }

    #[test]
    fn a_frame_cut_short_of_its_length_is_an_error() {
        // A prefix promising 8 MiB, then 10 bytes and the end: read as
        // they come (into a first allocation of 64 KiB), then refused.
        let mut bytes = (8u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[7; 10]);
        let err = block_on(read_frame(&mut Cursor::new(bytes), 8 << 20)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut big = (200_000u32).to_le_bytes().to_vec();
        big.extend(std::iter::repeat_n(1u8, 200_000));
        let got = block_on(read_frame(&mut Cursor::new(big), 8 << 20)).unwrap();
        assert_eq!(got.len(), 200_000, "longer than the first allocation");
    }

    #[test]
    fn greetings_round_trip_and_an_unknown_verdict_is_an_error() {
        let inc = Incarnation {
            nonce: 0x0102_0304_0506_0708,
            started_ms: 1_700_000_000_123,
        };
        assert_eq!(decode_incarnation(&encode_incarnation(&inc)), inc);
        for v in [Verdict::Ok, Verdict::Duplicate { other: inc }] {
            assert_eq!(decode_verdict(&encode_verdict(&v)).unwrap(), v);
        }
        let mut bad = encode_verdict(&Verdict::Ok);
        bad[0] = 9;
        assert_eq!(
            decode_verdict(&bad).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
