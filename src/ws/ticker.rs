//! The session's ping timer, polled only once its deadline has passed.
//!
//! A session's task wakes for every frame queued to it, and each turn
//! polled its `tokio::time::Interval`: the interval's boxed timer entry and
//! the time driver's checks, for nothing, a thousand times a second in a
//! busy room. `perf` of 100 rooms x 10 at 100 000 deliveries/s put that
//! at 3.5 % of the server's CPU (docs/BENCHMARKS.md, issue 15, "The ping
//! timer"). Here the deadline is kept beside the session's other state and
//! compared with the clock; the timer itself is polled only when it may
//! have fired, or when it holds no waker yet.
//!
//! Why the task is still woken on time: the timer keeps the waker it was
//! last polled with, and a task's waker wakes that task for as long as it
//! lives (a worker's [`crate::runtime`] gives every connection one for
//! life). The timer fires once the clock has passed its deadline, so when
//! that wake-up comes the comparison below lets the poll through.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A timer that fires every `period`, first at a given instant. A tick
/// that comes late moves the next one a whole period on, rather than
/// firing the missed ones in a burst.
pub(super) struct Ticker {
    /// Boxed: an idle connection's task stays small.
    sleep: Pin<Box<Sleep>>,
    /// `sleep`'s deadline, read without touching its allocation.
    deadline: Instant,
    period: Duration,
    /// The timer has been polled for `deadline` and holds the task's waker.
    armed: bool,
}

impl Ticker {
    pub(super) fn new(first: Instant, period: Duration) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(first)),
            deadline: first,
            period,
            armed: false,
        }
    }

    /// Ready once per tick.
    pub(super) fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed && Instant::now() < self.deadline {
            return Poll::Pending;
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Pending => {
                self.armed = true;
                Poll::Pending
            }
            Poll::Ready(()) => {
                let now = Instant::now();
                let mut next = self.deadline + self.period;
                if next <= now {
                    next = now + self.period;
                }
                self.reset_at(next);
                Poll::Ready(())
            }
        }
    }

    /// The next tick comes at `at`, and the ones after it a period apart.
    pub(super) fn reset_at(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.deadline = at;
        self.armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(t: &mut Ticker) -> bool {
        t.poll_tick(&mut Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn it_ticks_at_its_deadline_then_a_period_apart() {
        let start = Instant::now();
        let mut t = Ticker::new(start + Duration::from_secs(5), Duration::from_secs(10));
        assert!(!poll(&mut t), "not before its first deadline");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(poll(&mut t), "at its first deadline");
        assert!(!poll(&mut t), "once per tick");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!poll(&mut t));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(poll(&mut t), "a period after the first");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_tick_moves_the_next_a_whole_period_on() {
        let start = Instant::now();
        let mut t = Ticker::new(start + Duration::from_secs(1), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(35)).await;
        assert!(poll(&mut t), "the late tick");
        assert!(!poll(&mut t), "the missed ones do not follow in a burst");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(poll(&mut t));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_moves_the_next_tick() {
        let start = Instant::now();
        let mut t = Ticker::new(start + Duration::from_secs(10), Duration::from_secs(10));
        assert!(!poll(&mut t));
        t.reset_at(start + Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(poll(&mut t), "at the new deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_is_woken_when_it_fires() {
        let start = Instant::now();
        let mut t = Ticker::new(start + Duration::from_secs(2), Duration::from_secs(10));
        // Armed by the first poll, then woken by the timer alone.
        std::future::poll_fn(|cx| t.poll_tick(cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        std::future::poll_fn(|cx| t.poll_tick(cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(12));
    }
}
