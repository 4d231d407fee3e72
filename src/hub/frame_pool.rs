//! Frame buffers kept for the next frame, per thread.
//!
//! Every post allocates its frame, and in small rooms under load posts come
//! in bursts: a hundred rooms' senders in phase make a hundred frames at
//! once, and their buffers are freed together once the last member's writer
//! has written them. glibc's per-thread cache holds seven chunks of a size,
//! so most of those allocations and frees went through malloc's slow path
//! (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`: about a tenth of
//! the worker's time at 1.2 M deliveries/s in small rooms, see
//! docs/BENCHMARKS.md, "A frame's buffer kept for the next frame").
//!
//! A frame built here owns its buffer through [`Bytes::from_owner`]: when
//! the last handle is dropped, the buffer goes back to the pool of the
//! thread that dropped it (a worker's, whichever wrote last) instead of to
//! the allocator, and the next frame made on that thread takes it. The
//! handle's own small allocation stays; it is the size glibc's fast paths
//! serve.
//!
//! Bounded: a thread keeps at most [`MAX_SPARE`] buffers of at most
//! [`MAX_CAPACITY`] bytes each (a frame larger than that, a `welcome` with
//! history say, is freed as before). What comes back to a full pool is
//! freed.
//!
//! Not a crate: the object pools on crates.io hand out guards that return
//! to one shared pool behind a lock or a lock-free stack; here the buffer
//! has to travel inside a `Bytes` across threads and come back to whichever
//! thread drops it last, which is twenty lines over `from_owner`.

use std::cell::RefCell;

use bytes::Bytes;

/// Buffers a thread keeps.
const MAX_SPARE: usize = 256;
/// The largest buffer kept: a message frame with its reactions fits.
const MAX_CAPACITY: usize = 4096;
/// The smallest buffer made, so one buffer serves most frames of a room.
const MIN_CAPACITY: usize = 512;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of at least `capacity` bytes: the thread's last spare
/// one if it is big enough, else a new one. A spare one too small for the
/// frame is freed, so the buffers kept follow the sizes of the frames made
/// (a room whose messages run long would otherwise keep a pool of buffers
/// that never fit).
pub(super) fn take(capacity: usize) -> Vec<u8> {
    let wanted = capacity.max(MIN_CAPACITY);
    if wanted <= MAX_CAPACITY
        && let Some(spare) = SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
        && spare.capacity() >= capacity
    {
        return spare;
    }
    Vec::with_capacity(wanted)
}

/// The frame's bytes, `buf[start..]`; `buf` goes back to a pool when the
/// last handle to them is dropped.
pub(super) fn frame(buf: Vec<u8>, start: usize) -> Bytes {
    Bytes::from_owner(Pooled { buf, start })
}

/// A buffer on its way back to a pool, and where its frame starts in it.
struct Pooled {
    buf: Vec<u8>,
    start: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() > MAX_CAPACITY {
            return;
        }
        buf.clear();
        // A thread being torn down has no pool: the buffer is freed.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < MAX_SPARE {
                spare.push(buf);
            }
        });
    }
}

#[cfg(test)]
pub(super) fn spare_count() -> usize {
    SPARE.with(|spare| spare.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_frame_gives_its_buffer_to_the_next() {
        let mut buf = take(100);
        buf.extend_from_slice(b"..hello");
        let address = buf.as_ptr();
        let frame = frame(buf, 2);
        assert_eq!(&frame[..], b"hello");
        let other = frame.clone();
        drop(frame);
        let before = spare_count();
        drop(other);
        assert_eq!(spare_count(), before + 1, "the last handle returns it");
        let again = take(200);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), address, "the same buffer, not a new one");
    }

    #[test]
    fn the_pool_is_bounded_in_count_and_size() {
        let frames: Vec<Bytes> = (0..MAX_SPARE + 10)
            .map(|_| frame(b"x".repeat(MIN_CAPACITY), 0))
            .collect();
        drop(frames);
        assert_eq!(spare_count(), MAX_SPARE);

        while spare_count() > 0 {
            let _ = take(0);
        }
        drop(frame(Vec::with_capacity(MAX_CAPACITY + 1), 0));
        assert_eq!(spare_count(), 0, "a big buffer is freed, not kept");
        // One too small for what is asked is freed, not handed out.
        drop(frame(b"x".repeat(MIN_CAPACITY), 0));
        assert_eq!(spare_count(), 1);
        assert!(take(MIN_CAPACITY + 1).capacity() > MIN_CAPACITY);
        assert_eq!(spare_count(), 0);
        // A frame too big for any kept buffer leaves the pool alone.
        drop(frame(b"x".repeat(MIN_CAPACITY), 0));
        let _ = take(MAX_CAPACITY + 1);
        assert_eq!(spare_count(), 1);
    }

    #[test]
    fn a_frame_dropped_on_another_thread_returns_there() {
        let mut buf = take(10);
        buf.extend_from_slice(b"hello");
        let frame = frame(buf, 0);
        let there = std::thread::spawn(move || {
            drop(frame);
            spare_count()
        })
        .join()
        .unwrap();
        assert_eq!(there, 1);
    }
}
