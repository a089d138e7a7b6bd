//! The apiserver side of the write fence ([`ferrolb_provider_api::Fence`]):
//! a tower layer under the client's retry that refuses each attempt, unsent,
//! once this replica's lease deadline has passed.

use std::task::{Context, Poll};

use ferrolb_provider_api::Fence;
use futures::future::{Either, MapErr, Ready, TryFutureExt, ready};
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

#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

impl<S, Req> Service<Req> for Fenced<S>
where
    S: Service<Req>,
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

    fn call(&mut self, req: Req) -> Self::Future {
        // Checked here, after any wait for readiness, as late as a layer can.
        match self.fence.check() {
            Ok(()) => Either::Right(self.inner.call(req).map_err(Into::into as fn(_) -> _)),
            Err(fenced) => Either::Left(ready(Err(Box::new(fenced)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use tower_layer::Layer;

    #[derive(Clone, Default)]
    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Service<()> for Count {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = Ready<Result<(), Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_closed_fence_sends_nothing() {
        let sent = Count::default();
        let fence = Fence::closed();
        let mut svc = FenceLayer::new(fence.clone()).layer(sent.clone());
        let err = svc.call(()).await.unwrap_err();
        assert!(err.to_string().contains("leader lease"), "{err}");
        assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 0);

        fence.open_until(Instant::now() + Duration::from_secs(60));
        svc.call(()).await.unwrap();
        assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 1);

        fence.close();
        assert!(svc.call(()).await.is_err());
        assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
