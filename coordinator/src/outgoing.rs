//! A session's outgoing stream: the driver's messages to one participant,
//! with model chunks cut into wire frames as they are sent.
//!
//! The driver queues the model for every participant as a few large chunks
//! that all reference one broadcast buffer. Encoding one of them whole
//! would copy it into the stream's encode buffer and hand hyper a 256 KiB
//! piece per site; instead each chunk is held by reference and cut
//! ([`tessera_proto::chunk::frames`]) into [`WIRE_FRAME_BYTES`] frames, the
//! next one made only when the stream is ready for it. With hyper's send
//! buffer set to two frames ([`crate::http2::SEND_BUFFER_BYTES`]) a site
//! being sent the model costs the coordinator a few frames, not a copy of
//! the model's chunks.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tessera_proto::chunk::{self, Element, Frames, WIRE_FRAME_BYTES};
use tessera_proto::v1::coordinator_message::Body;
use tessera_proto::v1::{ChunkPurpose, CoordinatorMessage};
use tokio::sync::mpsc;
use tonic::Status;

/// The stream of one session's outgoing messages (see the module docs).
#[derive(Debug)]
pub struct Outgoing {
    queue: mpsc::Receiver<Result<CoordinatorMessage, Status>>,
    frames: Option<Frames>,
}

impl Outgoing {
    /// The stream of what the driver puts in `queue`.
    pub fn new(queue: mpsc::Receiver<Result<CoordinatorMessage, Status>>) -> Self {
        Self {
            queue,
            frames: None,
        }
    }
}

impl Stream for Outgoing {
    type Item = Result<CoordinatorMessage, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(frames) = &mut this.frames {
                match frames.next() {
                    Some(frame) => {
                        return Poll::Ready(Some(Ok(CoordinatorMessage {
                            body: Some(Body::Chunk(frame)),
                        })));
                    }
                    None => this.frames = None,
                }
            }
            match std::task::ready!(this.queue.poll_recv(cx)) {
                Some(Ok(CoordinatorMessage {
                    body: Some(Body::Chunk(c)),
                })) if c.purpose == ChunkPurpose::Model as i32 => {
                    this.frames = Some(chunk::frames(c, f32::SIZE, WIRE_FRAME_BYTES));
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tessera_proto::chunk::Assembler;
    use tessera_proto::v1::RoundResult;

    /// Model chunks leave as frames of at most `WIRE_FRAME_BYTES` that
    /// reference the queued chunk; other messages pass unchanged and in
    /// order; an error ends the stream after what came before it.
    #[tokio::test]
    async fn model_chunks_leave_in_frames_by_reference() {
        let model: Vec<f32> = (0..150_000).map(|i| i as f32).collect();
        let chunks = chunk::split(2, ChunkPurpose::Model, &model);
        assert!(chunks.len() >= 2);
        let (tx, rx) = mpsc::channel(64);
        let result = CoordinatorMessage {
            body: Some(Body::Result(RoundResult {
                round: 2,
                ..Default::default()
            })),
        };
        for c in &chunks {
            tx.send(Ok(CoordinatorMessage {
                body: Some(Body::Chunk(c.clone())),
            }))
            .await
            .unwrap();
        }
        tx.send(Ok(result.clone())).await.unwrap();
        tx.send(Err(Status::unavailable("stop"))).await.unwrap();
        drop(tx);
        let out: Vec<_> = Outgoing::new(rx).collect().await;

        let mut assembler = Assembler::<f32>::new(2, ChunkPurpose::Model, model.len() as u64);
        let buffers: Vec<(usize, usize)> = chunks
            .iter()
            .map(|c| (c.data.as_ptr() as usize, c.data.len()))
            .collect();
        let frames = out.len() - 2;
        assert_eq!(frames, (model.len() * 4).div_ceil(WIRE_FRAME_BYTES));
        for m in &out[..frames] {
            let Some(Body::Chunk(f)) = &m.as_ref().unwrap().body else {
                panic!("a frame");
            };
            assert!(f.data.len() <= WIRE_FRAME_BYTES);
            let p = f.data.as_ptr() as usize;
            assert!(
                buffers.iter().any(|&(b, n)| p >= b && p < b + n),
                "the frame references the broadcast buffer"
            );
            assembler.push(f).unwrap();
        }
        assert_eq!(assembler.finish().unwrap(), model);
        assert_eq!(out[frames].as_ref().unwrap(), &result);
        assert_eq!(out[frames + 1].as_ref().unwrap_err().message(), "stop");
    }
}
