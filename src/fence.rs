//! The apiserver side of the write fence ([`ferrolb_provider_api::Fence`]),
//! at two places: a tower layer under the client's retry, which refuses each
//! attempt before it is queued, and the client's TCP connections, which
//! refuse to put a byte on the wire once the fence is closed. The second
//! matters when the whole process stalls between the two: a request that
//! passed the layer just before a freeze waits in the client's queue and
//! would go out when the process wakes, long after its Lease has passed on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ferrolb_provider_api::Fence;
use futures::future::{BoxFuture, Either, MapErr, Ready, TryFutureExt, ready};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The layer for [`kube::client::ClientBuilder::with_layer`].
#[derive(Clone, Debug)]
pub struct FenceLayer(Fence);

impl FenceLayer {
    pub fn new(fence: Fence) -> Self {
        Self(fence)
    }
}

impl<S> tower_layer::Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// A service, or a connector, behind a fence.
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

impl<S, B> Service<http::Request<B>> for Fenced<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    #[allow(clippy::type_complexity)]
    type Future =
        Either<Ready<Result<S::Response, BoxError>>, MapErr<S::Future, fn(S::Error) -> BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.fence.check() {
            Ok(()) => Either::Right(self.inner.call(req).map_err(Into::into as fn(_) -> _)),
            Err(fenced) => Either::Left(ready(Err(Box::new(fenced)))),
        }
    }
}

/// Wraps a connector so that every connection it makes is fenced.
pub fn connector<C>(inner: C, fence: Fence) -> Fenced<C> {
    Fenced { inner, fence }
}

impl<C> Service<http::Uri> for Fenced<C>
where
    C: Service<http::Uri> + Send,
    C::Future: Send + 'static,
    C::Response: Send,
{
    type Response = FencedIo<C::Response>;
    type Error = C::Error;
    type Future = BoxFuture<'static, Result<Self::Response, C::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let fence = self.fence.clone();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(FencedIo { io, fence })
        })
    }
}

/// A connection that writes nothing once the fence is closed: the write
/// fails, the request with it, and the connection is dropped.
#[derive(Debug)]
pub struct FencedIo<T> {
    io: T,
    fence: Fence,
}

impl<T> FencedIo<T> {
    fn check(&self) -> io::Result<()> {
        self.fence
            .check()
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))
    }
}

impl<T: Read + Unpin> Read for FencedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for FencedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for FencedIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use tower_layer::Layer;

    #[derive(Clone, Default)]
    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Service<http::Request<()>> for Count {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = Ready<Result<(), Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_closed_fence_sends_nothing() {
        let sent = Count::default();
        let fence = Fence::closed();
        let mut svc = FenceLayer::new(fence.clone()).layer(sent.clone());
        let err = svc.call(http::Request::new(())).await.unwrap_err();
        assert!(err.to_string().contains("leader lease"), "{err}");
        assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 0);

        fence.open_until(Instant::now() + Duration::from_secs(60));
        svc.call(http::Request::new(())).await.unwrap();
        assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 1);

        fence.close();
        assert!(svc.call(http::Request::new(())).await.is_err());
        assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
