//! The session's reader, polled only when its own waker fired. The session
//! task also wakes for its ping timer, for its writer ending and when a
//! throttle lifts, and `select!` then polls every branch: without this,
//! each of those turns would also run tungstenite's read path (a buffer
//! resize, waker swaps, a readiness check) for nothing. (Deliveries no
//! longer wake the session: the writer is a task of its own, `writer.rs`.)
//!
//! Not used for the ping timer: measured (perf, 100 rooms x 10 at 50 000
//! deliveries/s, docs/BENCHMARKS.md issue 15), the wrapper's own waker
//! registration cost what polling the timer did.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::Stream;
use futures_util::task::AtomicWaker;

/// Set by the wrapped stream's waker: it has something (a frame).
/// Also wakes the session task.
struct Woken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A stream polled only after its own waker fired (and at its first poll).
pub(super) struct PollWhenWoken<S> {
    inner: S,
    wake: Arc<Woken>,
    waker: Waker,
}

impl<S> PollWhenWoken<S> {
    pub(super) fn new(inner: S) -> Self {
        let wake = Arc::new(Woken {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            inner,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
        }
    }
}

impl<S> PollWhenWoken<S> {
    pub(super) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Stream + Unpin> Stream for PollWhenWoken<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        this.wake.task.register(cx.waker());
        if !this.wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.inner).poll_next(&mut Context::from_waker(&this.waker));
        if polled.is_ready() {
            // More frames may be buffered already: look again next time.
            this.wake.woken.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_is_polled_only_after_its_waker_fired() {
        use std::cell::Cell;
        use std::rc::Rc;

        let polls = Rc::new(Cell::new(0));
        let inner_waker: Rc<Cell<Option<Waker>>> = Rc::default();
        let inner = {
            let (polls, inner_waker) = (Rc::clone(&polls), Rc::clone(&inner_waker));
            futures_util::stream::poll_fn(move |cx| -> Poll<Option<()>> {
                polls.set(polls.get() + 1);
                inner_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            })
        };
        let mut reader = PollWhenWoken::new(inner);
        let mut cx = Context::from_waker(Waker::noop());
        let mut poll = || Pin::new(&mut reader).poll_next(&mut cx).is_pending();

        assert!(poll(), "first poll reaches the inner stream");
        assert!(poll(), "the task woke for another reason");
        assert_eq!(polls.get(), 1, "the inner stream was not polled again");
        inner_waker.take().expect("inner registered a waker").wake();
        assert!(poll());
        assert_eq!(polls.get(), 2, "its own wake-up lets it be polled");
    }
}
