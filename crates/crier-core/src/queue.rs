//! Lean queues with one receiver, for what every connection and every live reader holds.
//!
//! A tokio `mpsc` channel allocates about 2 KiB before its first message (cache-padded
//! counters and a first block of 32 slots) and keeps its blocks for its whole life. With one
//! queue per connection and one per subscription, that was a fifth of what an idle
//! connection cost. A [`Queue`] is a mutex around a `VecDeque`: nothing is allocated until the
//! first item, and a queue that drains gives its storage back beyond a few slots.
//!
//! * [`Queue`]: pushes never wait (the pusher bounds them, and learns when the receiver is
//!   gone); the receiver waits for the next item. The live fan-out feeds cursors with it.
//! * [`channel`]: a bounded queue whose senders wait for room, for a connection's outbound
//!   frames.
//!
//! Each push takes the receiver's waker only when the receiver is waiting (it registers one
//! when it finds the queue empty), so a queue that stays busy wakes nobody per item.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::mem;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Semaphore;

struct State<T> {
    items: VecDeque<T>,
    /// The receiver, while it waits on an empty queue.
    waker: Option<Waker>,
    /// Nothing more will be pushed: the receiver gets `None` once the queue is empty.
    closed: bool,
    /// The receiver is gone: pushes fail.
    gone: bool,
}

/// A queue with one receiver. See the [module docs](self).
pub struct Queue<T> {
    state: Mutex<State<T>>,
    /// Slots kept when the queue drains; a larger buffer is freed.
    keep: usize,
}

/// Why [`Queue::push`] refused an item (it is handed back).
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The queue already holds its bound.
    Full(T),
    /// The receiver is gone.
    Gone(T),
}

impl<T> Queue<T> {
    /// An empty queue, which keeps `keep` slots of storage once drained.
    pub fn new(keep: usize) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                waker: None,
                closed: false,
                gone: false,
            }),
            keep,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; if something did, the queue is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `item` unless `bound` items wait already or the receiver is gone, and wakes
    /// the receiver if it waits.
    pub fn push(&self, item: T, bound: usize) -> Result<(), PushError<T>> {
        let mut s = self.lock();
        if s.gone {
            return Err(PushError::Gone(item));
        }
        if s.items.len() >= bound {
            return Err(PushError::Full(item));
        }
        s.items.push_back(item);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Nothing more will be pushed: the receiver drains what is queued, then gets `None`.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The receiver is gone: later pushes fail, and what is queued is dropped now.
    pub fn receiver_gone(&self) {
        let mut s = self.lock();
        s.gone = true;
        s.waker = None;
        let items = mem::take(&mut s.items);
        drop(s);
        drop(items);
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pop(&self, s: &mut State<T>) -> Option<T> {
        let item = s.items.pop_front()?;
        if s.items.is_empty() && s.items.capacity() > self.keep {
            // Down to what it keeps, not to nothing: a reader that falls behind now and
            // then would otherwise have its buffer grown again from four slots (four
            // allocations, on the pushing side) at every backlog.
            s.items.shrink_to(self.keep);
        }
        Some(item)
    }

    /// The next item if one is queued.
    pub fn try_pop(&self) -> Option<T> {
        let mut s = self.lock();
        self.pop(&mut s)
    }

    /// The next item; `None` once the queue is closed and empty. Registers `cx` to be woken
    /// by the next push or the close when it returns `Pending`.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.lock();
        if let Some(item) = self.pop(&mut s) {
            return Poll::Ready(Some(item));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next item; `None` once the queue is closed and empty. Cancel-safe: a
    /// dropped call takes nothing.
    pub async fn pop_wait(&self) -> Option<T> {
        poll_fn(|cx| self.poll_pop(cx)).await
    }
}

struct Shared<T> {
    /// Each item with the room it took.
    queue: Queue<(T, u32)>,
    /// Room left: a send takes its item's weight, a receive gives it back.
    room: Semaphore,
    bound: u32,
    weigh: fn(&T) -> usize,
    senders: AtomicUsize,
}

/// A bounded queue of at most `bound` items whose senders wait for room; empty queues hold
/// no storage. The receiver gets `None` once every sender is gone and the queue is drained;
/// senders get their item back once the receiver is gone.
pub fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    weighed(bound, |_| 1)
}

/// A [`channel`] bounded by the sum of its items' weights (their bytes, say) instead of their
/// number. An item weighs at least 1 and at most `bound`: one heavier than the bound waits
/// for an empty queue and goes alone.
pub fn weighed<T>(bound: usize, weigh: fn(&T) -> usize) -> (Sender<T>, Receiver<T>) {
    let bound = bound.clamp(1, u32::MAX as usize) as u32;
    let shared = Arc::new(Shared {
        queue: Queue::new(0),
        room: Semaphore::new(bound as usize),
        bound,
        weigh,
        senders: AtomicUsize::new(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// The sending side of a [`channel`]; clones share the queue.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `item` once there is room. Cancel-safe: a call dropped while waiting queues
    /// nothing. `Err` hands the item back when the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let weight = self.weight(&item);
        match self.0.room.acquire_many(weight).await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(item),
        }
        self.push(item, weight)
    }

    /// Queues `item` if there is room now; `Err` hands it back when there is none or the
    /// receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), T> {
        let weight = self.weight(&item);
        match self.0.room.try_acquire_many(weight) {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(item),
        }
        self.push(item, weight)
    }

    /// Whether the receiver is gone (sends fail from now on).
    pub fn is_closed(&self) -> bool {
        self.0.room.is_closed()
    }

    /// A handle that tells how many items wait, without keeping the queue open.
    pub fn downgrade(&self) -> WeakSender<T> {
        WeakSender(Arc::downgrade(&self.0))
    }

    fn weight(&self, item: &T) -> u32 {
        ((self.0.weigh)(item).max(1)).min(self.0.bound as usize) as u32
    }

    fn push(&self, item: T, weight: u32) -> Result<(), T> {
        // Unbounded here: the semaphore is the bound.
        match self.0.queue.push((item, weight), usize::MAX) {
            Ok(()) => Ok(()),
            Err(PushError::Full((item, _)) | PushError::Gone((item, _))) => Err(item),
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.queue.close();
        }
    }
}

/// Sees how full a [`channel`] is without being one of its senders.
pub struct WeakSender<T>(std::sync::Weak<Shared<T>>);

impl<T> WeakSender<T> {
    /// Items queued and not yet received (0 once the channel is gone).
    pub fn queued(&self) -> usize {
        self.0.upgrade().map_or(0, |s| s.queue.len())
    }
}

/// The receiving side of a [`channel`].
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    fn took(&self, item: Option<(T, u32)>) -> Option<T> {
        let (item, weight) = item?;
        self.0.room.add_permits(weight as usize);
        Some(item)
    }

    /// The next item, or `Pending` (with `cx` registered); `None` once every sender is gone
    /// and the queue is drained.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.queue.poll_pop(cx).map(|item| self.took(item))
    }

    /// Waits for the next item; `None` once every sender is gone and the queue is drained.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.0.queue.try_pop();
        self.took(item)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.room.close();
        self.0.queue.receiver_gone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keeps_order_and_bound_and_gives_storage_back() {
        let q = Queue::new(4);
        for i in 0..10 {
            assert_eq!(q.push(i, 10), Ok(()));
        }
        assert_eq!(q.push(10, 10), Err(PushError::Full(10)));
        assert_eq!(q.len(), 10);
        let got: Vec<_> = std::iter::from_fn(|| q.try_pop()).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        // Ten slots were more than the four it keeps: down to those.
        assert_eq!(q.lock().items.capacity(), 4);
        q.push(1, 10).expect("room");
        q.try_pop();
        // A small buffer is kept for the next item.
        assert!(q.lock().items.capacity() > 0);
    }

    #[test]
    fn a_gone_receiver_refuses_pushes_and_drops_what_waited() {
        let item = Arc::new(());
        let q = Queue::new(0);
        q.push(item.clone(), 8).expect("room");
        q.receiver_gone();
        assert_eq!(Arc::strong_count(&item), 1);
        assert!(matches!(q.push(item.clone(), 8), Err(PushError::Gone(_))));
    }

    #[test]
    fn a_full_channel_and_a_closed_one_are_told_apart_and_counted_from_outside() {
        let (tx, mut rx) = weighed(10, |s: &&str| s.len());
        let probe = tx.downgrade();
        tx.try_send("12345").expect("room");
        tx.try_send("1234").expect("room");
        assert_eq!(tx.try_send("12"), Err("12"), "9 of 10 taken");
        assert!(!tx.is_closed(), "full, not closed");
        assert_eq!(probe.queued(), 2);
        assert_eq!(rx.try_recv(), Some("12345"));
        assert_eq!(probe.queued(), 1);
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send("1"), Err("1"));
        drop(tx);
        assert_eq!(probe.queued(), 0, "the probe does not keep the channel");
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push_and_by_the_close() {
        let q = Arc::new(Queue::new(0));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move {
                let first = q.pop_wait().await;
                let second = q.pop_wait().await;
                (first, second)
            }
        });
        // Observes the receiver waiting before pushing, so the wake path is the one tested.
        while q.lock().waker.is_none() {
            tokio::task::yield_now().await;
        }
        q.push(7, 8).expect("room");
        while q.lock().waker.is_none() && !waiter.is_finished() {
            tokio::task::yield_now().await;
        }
        q.close();
        assert_eq!(waiter.await.expect("joined"), (Some(7), None));
    }

    #[tokio::test]
    async fn senders_wait_for_room_and_the_receiver_sees_the_end() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.send(1).await.expect("room");
        tx.send(2).await.expect("room");
        // Full: a third send waits, and a dropped wait queues nothing.
        assert!(tokio::time::timeout(Duration::from_millis(20), tx.send(9))
            .await
            .is_err());
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(3).await }
        });
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(blocked.await.expect("joined"), Ok(()));
        drop(tx);
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn senders_get_their_item_back_once_the_receiver_is_gone() {
        let (tx, rx) = channel::<u32>(1);
        tx.send(1).await.expect("room");
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2).await }
        });
        drop(rx);
        assert_eq!(blocked.await.expect("joined"), Err(2));
        assert_eq!(tx.send(3).await, Err(3));
    }

    #[tokio::test]
    async fn a_weighed_channel_is_bounded_by_weight_and_lets_a_heavy_item_through_alone() {
        let (tx, mut rx) = weighed::<Vec<u8>>(100, Vec::len);
        tx.send(vec![0; 60]).await.expect("room");
        tx.send(vec![0; 40]).await.expect("room");
        // 100 of 100 taken: even a light item waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), tx.send(vec![0; 1]))
                .await
                .is_err()
        );
        // Heavier than the whole bound: it waits for an empty queue, then goes.
        let heavy = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(vec![0; 500]).await }
        });
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(60));
        // 40 still queued: the heavy item, which weighs the whole bound, waits for it to go.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!heavy.is_finished());
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(40));
        assert_eq!(heavy.await.expect("joined"), Ok(()));
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(500));
    }
}
