//! Accepted connections, bounded: at most `max` open at once (one past it is closed at
//! once, so the server's file descriptors cannot run out under a flood of idle sockets), and
//! one that sends nothing for the handshake timeout after it was accepted is closed, so idle
//! sockets cannot hold the slots either.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection holding one of the slots until it closes.
pub struct Limited {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the first byte arrives: when the client must have started talking.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.handshake.is_some() {
            if r.is_pending() {
                let late = self
                    .handshake
                    .as_mut()
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                if late {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no handshake in time",
                    )));
                }
            } else if buf.filled().len() > before {
                self.handshake = None;
            }
        }
        r
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// `incoming` with at most `max` connections open and a `handshake` deadline on each;
/// `refused` is called for each connection closed because every slot was taken.
pub fn limit<S>(
    incoming: S,
    max: usize,
    handshake: Duration,
    refused: impl Fn() + Send + 'static,
) -> impl Stream<Item = std::io::Result<Limited>>
where
    S: Stream<Item = std::io::Result<TcpStream>>,
{
    let slots = Arc::new(Semaphore::new(max.max(1)));
    incoming.filter_map(move |conn| {
        let r = match conn {
            Err(e) => Some(Err(e)),
            Ok(io) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(Ok(Limited {
                    io,
                    _slot: slot,
                    handshake: Some(Box::pin(tokio::time::sleep(handshake))),
                })),
                // Dropping the stream closes it: the client sees a reset, and retries.
                Err(_) => {
                    refused();
                    None
                }
            },
        };
        std::future::ready(r)
    })
}

/// The soft limit on open files of this process, where the system says it.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
