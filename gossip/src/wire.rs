//! The request-response wire format: length-prefixed frames with explicit caps.
//!
//! libp2p's stock codecs cap messages at sizes that do not suit Raft, so this
//! codec is ours: a request is `u32 length | u32 budget_ms | payload`, a
//! response is `u32 length | payload`, all big-endian, and a frame longer
//! than [`MAX_FRAME_BYTES`] is refused before anything is allocated.

use std::io;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The protocol name of node-to-node calls.
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/coditect/rpc/1");

/// The largest frame either side accepts (16 MiB). Raft snapshots travel in
/// chunks of 1 MiB, so this is never the limit of a healthy mesh.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// An inbound or outbound request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    /// How long the caller waits for the answer, ms; the receiver may drop
    /// work that cannot finish in time.
    pub budget_ms: u32,
    /// The opaque payload.
    pub payload: Vec<u8>,
}

/// The codec of [`RPC_PROTOCOL`].
#[derive(Debug, Clone, Default)]
pub struct WireCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds the cap of {MAX_FRAME_BYTES}"),
        ));
    }
    let mut buffer = vec![0u8; length];
    io.read_exact(&mut buffer).await?;
    Ok(buffer)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes exceeds the cap of {MAX_FRAME_BYTES}",
                body.len()
            ),
        ));
    }
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

/// Encodes a request body (budget then payload) as one frame body.
pub fn request_body(request: &WireRequest) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + request.payload.len());
    body.extend_from_slice(&request.budget_ms.to_be_bytes());
    body.extend_from_slice(&request.payload);
    body
}

/// Decodes a request frame body.
pub fn parse_request_body(mut body: Vec<u8>) -> io::Result<WireRequest> {
    if body.len() < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request frame shorter than its header",
        ));
    }
    let budget_ms = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    body.drain(..4);
    Ok(WireRequest {
        budget_ms,
        payload: body,
    })
}

/// The protocol name of the long-lived call channel between two nodes
/// (Raft RPCs): one substream per peer carries many calls, each frame
/// tagged with the call's id, answers in any order.
pub const CHANNEL_PROTOCOL: StreamProtocol = StreamProtocol::new("/coditect/channel/1");

/// Bytes of the id that opens every channel frame's body.
const CHANNEL_ID_BYTES: usize = 8;

/// One whole frame on the call channel, ready for a single write: `u32
/// length | body`. Refused (nothing written) over [`MAX_FRAME_BYTES`].
fn channel_frame(header: &[u8], payload: &[u8]) -> io::Result<Vec<u8>> {
    let length = header.len() + payload.len();
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {length} bytes exceeds the cap of {MAX_FRAME_BYTES}"),
        ));
    }
    let mut frame = Vec::with_capacity(4 + length);
    frame.extend_from_slice(&(length as u32).to_be_bytes());
    frame.extend_from_slice(header);
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// A request frame on the call channel: `u32 length | u64 id | u32
/// budget_ms | payload`.
pub fn channel_request(id: u64, request: &WireRequest) -> io::Result<Vec<u8>> {
    let mut header = [0u8; CHANNEL_ID_BYTES + 4];
    header[..CHANNEL_ID_BYTES].copy_from_slice(&id.to_be_bytes());
    header[CHANNEL_ID_BYTES..].copy_from_slice(&request.budget_ms.to_be_bytes());
    channel_frame(&header, &request.payload)
}

/// An answer frame on the call channel: `u32 length | u64 id | payload`.
pub fn channel_answer(id: u64, payload: &[u8]) -> io::Result<Vec<u8>> {
    channel_frame(&id.to_be_bytes(), payload)
}

/// Reads the next request from a call channel: its id and the request
/// (after the id, the body of a request-response request).
pub async fn read_channel_request<T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> io::Result<(u64, WireRequest)> {
    let (id, body) = read_channel_answer(io).await?;
    Ok((id, parse_request_body(body)?))
}

/// Reads the next answer from a call channel: the id it answers and the
/// payload. (Every channel frame starts with its id.)
pub async fn read_channel_answer<T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> io::Result<(u64, Vec<u8>)> {
    let mut body = read_frame(io).await?;
    if body.len() < CHANNEL_ID_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "channel frame shorter than its id",
        ));
    }
    let id = u64::from_be_bytes(body[..CHANNEL_ID_BYTES].try_into().expect("8 bytes"));
    body.drain(..CHANNEL_ID_BYTES);
    Ok((id, body))
}

#[async_trait]
impl libp2p::request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = WireRequest;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        parse_request_body(read_frame(io).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: WireRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request_body(&request)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;
    use proptest::prelude::*;

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        let mut bytes = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        let error =
            block_on(WireCodec.read_response(&RPC_PROTOCOL, &mut Cursor::new(bytes))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("exceeds the cap"));
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut bytes = 10u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(block_on(WireCodec.read_response(&RPC_PROTOCOL, &mut Cursor::new(bytes))).is_err());
        let short_request = 2u32
            .to_be_bytes()
            .iter()
            .chain(&[0, 0])
            .copied()
            .collect::<Vec<_>>();
        assert!(
            block_on(WireCodec.read_request(&RPC_PROTOCOL, &mut Cursor::new(short_request)))
                .is_err()
        );
    }

    #[test]
    fn channel_frames_follow_each_other_and_short_ones_are_errors() {
        let first = WireRequest {
            budget_ms: 7,
            payload: b"one".to_vec(),
        };
        let second = WireRequest {
            budget_ms: 9,
            payload: Vec::new(),
        };
        let mut bytes = channel_request(1, &first).unwrap();
        bytes.extend(channel_request(u64::MAX, &second).unwrap());
        let mut reader = Cursor::new(bytes);
        assert_eq!(
            block_on(read_channel_request(&mut reader)).unwrap(),
            (1, first)
        );
        assert_eq!(
            block_on(read_channel_request(&mut reader)).unwrap(),
            (u64::MAX, second)
        );
        assert!(
            block_on(read_channel_request(&mut reader)).is_err(),
            "nothing is left"
        );

        let mut bytes = channel_answer(5, b"yes").unwrap();
        bytes.extend(channel_answer(4, b"").unwrap());
        let mut reader = Cursor::new(bytes);
        assert_eq!(
            block_on(read_channel_answer(&mut reader)).unwrap(),
            (5, b"yes".to_vec())
        );
        assert_eq!(
            block_on(read_channel_answer(&mut reader)).unwrap(),
            (4, Vec::new())
        );

        // A frame too short for its header, and one over the cap.
        let mut short = 7u32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 7]);
        assert!(block_on(read_channel_answer(&mut Cursor::new(short.clone()))).is_err());
        assert!(block_on(read_channel_request(&mut Cursor::new(short))).is_err());
        let huge = vec![0u8; MAX_FRAME_BYTES];
        let error = channel_answer(1, &huge).unwrap_err();
        assert!(error.to_string().contains("exceeds the cap"), "{error}");
    }

    proptest! {
        #[test]
        fn requests_and_responses_round_trip(budget_ms in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let request = WireRequest { budget_ms, payload: payload.clone() };
            let mut buffer = Cursor::new(Vec::new());
            block_on(WireCodec.write_request(&RPC_PROTOCOL, &mut buffer, request.clone())).unwrap();
            let mut reader = Cursor::new(buffer.into_inner());
            prop_assert_eq!(block_on(WireCodec.read_request(&RPC_PROTOCOL, &mut reader)).unwrap(), request);

            let mut buffer = Cursor::new(Vec::new());
            block_on(WireCodec.write_response(&RPC_PROTOCOL, &mut buffer, payload.clone())).unwrap();
            let mut reader = Cursor::new(buffer.into_inner());
            prop_assert_eq!(block_on(WireCodec.read_response(&RPC_PROTOCOL, &mut reader)).unwrap(), payload);
        }
    }
}
