//! The byte formats of shoal's two request-response protocols.
//!
//! `/shoal/direct/1`: a request is one length-prefixed frame (a 4-byte
//! little-endian length, then the bytes, capped); the response is a single
//! acknowledgement byte. `/shoal/lane/2` (see `lane`) carries such frames
//! one after another on one stream. `/shoal/hello/1`: a request is an
//! incarnation (16 bytes), the response a verdict (a tag byte, then 16
//! bytes). Anything
//! else is an error the protocol reports, never a panic.

use crate::greeting::{Greeting, GREETING_LEN};
use crate::identity_watch::Verdict;
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
    next_frame(io, max)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no frame"))
}

/// The next of a stream's frames, or `None` where the stream ends between
/// two frames.
pub async fn next_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match io.read(&mut len[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("frame length cut at {got} of 4 bytes"),
                ))
            }
            n => got += n,
        }
    }
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
    Ok(Some(buf))
}

/// Writes one frame and leaves the stream open for the next.
pub async fn put_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(bytes).await
}

/// Writes one frame and closes the stream.
pub async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    put_frame(io, bytes).await?;
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

/// Greetings: a signed greeting as the request; a verdict as the reply,
/// a tag byte then (for a duplicate) the other incarnation's greeting.
#[derive(Clone, Debug, Default)]
pub struct HelloCodec;

/// A greeting's verdict on the wire.
pub const VERDICT_LEN: usize = 1 + GREETING_LEN;

pub fn encode_verdict(v: &Verdict<Greeting>) -> [u8; VERDICT_LEN] {
    let mut b = [0u8; VERDICT_LEN];
    if let Verdict::Duplicate { evidence } = v {
        b[0] = 1;
        b[1..].copy_from_slice(&evidence.encode());
    }
    b
}

pub fn decode_verdict(b: &[u8; VERDICT_LEN]) -> io::Result<Verdict<Greeting>> {
    match b[0] {
        0 => Ok(Verdict::Ok),
        1 => Ok(Verdict::Duplicate {
            evidence: Greeting::decode(b[1..].try_into().expect("a greeting's length")),
        }),
        t => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown greeting verdict {t}"),
        )),
    }
}

impl request_response::Codec for HelloCodec {
    type Protocol = StreamProtocol;
    type Request = Greeting;
    type Response = Verdict<Greeting>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Greeting>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; GREETING_LEN];
        io.read_exact(&mut b).await?;
        Ok(Greeting::decode(&b))
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Verdict<Greeting>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; VERDICT_LEN];
        io.read_exact(&mut b).await?;
        decode_verdict(&b)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Greeting,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req.encode()).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        v: Verdict<Greeting>,
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
    fn a_stream_of_frames_ends_cleanly_only_between_two() {
        let mut bytes = Vec::new();
        for f in [&b"one"[..], b"", b"three"] {
            block_on(put_frame(&mut bytes, f)).unwrap();
        }
        let mut io = Cursor::new(bytes.clone());
        for f in [&b"one"[..], b"", b"three"] {
            assert_eq!(block_on(next_frame(&mut io, 8)).unwrap().unwrap(), f);
        }
        assert!(block_on(next_frame(&mut io, 8)).unwrap().is_none());
        // An end inside a length or inside the bytes is an error.
        for cut in [bytes.len() - 1, 7 + 4 + 2] {
            let mut io = Cursor::new(bytes[..cut].to_vec());
            let mut last = Ok(None);
            for _ in 0..3 {
                last = block_on(next_frame(&mut io, 8));
                if last.is_err() {
                    break;
                }
            }
            assert_eq!(
                last.unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof,
                "cut {cut}"
            );
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
    fn verdicts_round_trip_and_an_unknown_one_is_an_error() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let inc = crate::Incarnation {
            nonce: 0x0102_0304_0506_0708,
            started_ms: 1_700_000_000_123,
        };
        let evidence = Greeting::sign(&key, inc, 1_700_000_001_000);
        for v in [Verdict::Ok, Verdict::Duplicate { evidence }] {
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
