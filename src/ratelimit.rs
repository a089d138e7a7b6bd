//! A client-side rate limit on requests to the apiserver: a token bucket that
//! refills at `qps` tokens a second up to `burst`, one token per request
//! (a watch takes one when it starts). Like client-go's `--kube-api-qps` and
//! `--kube-api-burst`, it keeps a controller catching up on thousands of
//! Services from crowding out everyone else on the apiserver.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The bucket's arithmetic, apart from the clock.
#[derive(Debug)]
struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }
}

/// The layer for [`kube::client::ClientBuilder::with_layer`].
#[derive(Clone, Copy, Debug)]
pub struct RateLimitLayer {
    qps: f64,
    burst: u32,
}

impl RateLimitLayer {
    /// `qps` must be positive.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self { qps, burst }
    }
}

impl<S> tower_layer::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            bucket: Bucket::new(self.qps, self.burst, Instant::now()),
            holds_token: false,
            sleep: None,
        }
    }
}

pub struct RateLimit<S> {
    inner: S,
    bucket: Bucket,
    /// A token was taken for the next `call`.
    holds_token: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, Req> tower_service::Service<Req> for RateLimit<S>
where
    S: tower_service::Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.holds_token {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match self.bucket.take(Instant::now()) {
                Ok(()) => self.holds_token = true,
                Err(wait) => self.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.holds_token = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(t0 + Duration::from_millis(100)), Ok(()));
        // A long pause refills no more than the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(later), Ok(()));
        }
        assert!(b.take(later).is_err());
    }

    #[tokio::test]
    async fn a_request_beyond_the_burst_is_not_ready() {
        use tower_layer::Layer;
        use tower_service::Service;
        // One token a minute: nothing refills while the test runs.
        let mut svc = RateLimitLayer::new(1.0 / 60.0, 3).layer(tower_service_fn());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..3 {
            assert!(svc.poll_ready(&mut cx).is_ready());
            // Ready twice without a call takes no second token.
            assert!(svc.poll_ready(&mut cx).is_ready());
            svc.call(()).await.unwrap();
        }
        assert!(svc.poll_ready(&mut cx).is_pending());
    }

    /// A service that answers at once.
    fn tower_service_fn() -> impl tower_service::Service<
        (),
        Response = (),
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<(), std::convert::Infallible>>,
    > {
        struct Now;
        impl tower_service::Service<()> for Now {
            type Response = ();
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<(), std::convert::Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, (): ()) -> Self::Future {
                std::future::ready(Ok(()))
            }
        }
        Now
    }
}
