//! A panic while answering one request ends that request, not the
//! connection's task with everything on it, and never the process: the
//! panic is logged and counted, and the client gets a 500 with a one-line
//! reason. (A panic while a body streams ends that connection only: tokio
//! catches it in the connection's task.)

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sharded::Counter;
use http::Response;

use crate::proxy::ProxyBody;

pin_project_lite::pin_project! {
    /// `inner`, with a panic in any of its polls turned into a 500.
    pub struct AnswerOr500<F> {
        #[pin]
        inner: F,
        panics: Option<Counter>,
    }
}

pub fn answer_or_500<F>(inner: F, panics: Counter) -> AnswerOr500<F> {
    AnswerOr500 {
        inner,
        panics: Some(panics),
    }
}

// The output is hyper's service result itself: one more async block around
// this future would move the whole (large) handler future once more per
// request, which cost 15,000 instructions a request under callgrind.
impl<F> Future for AnswerOr500<F>
where
    F: Future<Output = Response<ProxyBody>>,
{
    type Output = Result<Response<ProxyBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Unwind safety: after a panic `inner` is never polled again, and
        // what it shared (the cache, pools) is behind locks that recover
        // from poisoning or atomics.
        let inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                tracing::error!(panic = %what, "a request's handler panicked; answered 500");
                if let Some(counter) = this.panics.take() {
                    counter.inc();
                }
                Poll::Ready(Ok(crate::proxy::internal_error_response()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[tokio::test]
    async fn a_panic_becomes_a_counted_500() {
        let panics = Counter::default();
        let resp = answer_or_500(
            async {
                tokio::task::yield_now().await;
                panic!("boom");
            },
            panics.clone(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()["connection"], "close");
        assert_eq!(panics.get(), 1);
        let fine = answer_or_500(async { Response::new(ProxyBody::empty()) }, panics.clone())
            .await
            .unwrap();
        assert_eq!(fine.status(), StatusCode::OK);
        assert_eq!(panics.get(), 1);
    }
}
