//! The paced sender: one connection sending calls on a fixed schedule,
//! opened again after a failure. `leaklab load` and `leaklab peer` both
//! send this way.

use std::future::Future;
use std::time::{Duration, Instant};

/// When the calls of one connection are due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// When the first call is due.
    pub first: Instant,
    /// Time between calls; `None` sends each call as soon as the previous
    /// one is answered (closed loop).
    pub interval: Option<Duration>,
    /// No call is sent from this time on.
    pub end: Instant,
}

/// What a paced connection sends.
pub trait Sender {
    /// The connection.
    type Conn: Send;

    /// Opens a connection; `None` when it failed.
    fn open(&mut self) -> impl Future<Output = Option<Self::Conn>> + Send;

    /// Makes one call, given the time it was due (in closed loop, when it
    /// went out); says whether the connection is still good.
    fn send(&mut self, conn: &mut Self::Conn, due: Instant) -> impl Future<Output = bool> + Send;
}

/// Sends on `schedule` until its end, over a connection the sender opens.
///
/// When a call leaves the connection bad, the next call opens a new one.
/// When an open fails the sender waits `retry` and goes on with the next
/// due call. Returns how many opens failed.
pub async fn send_paced<S: Sender + Send>(schedule: Schedule, retry: Duration, sender: &mut S) -> u64 {
    let mut due = schedule.first;
    let mut conn: Option<S::Conn> = None;
    let mut failed_opens = 0;
    while Instant::now() < schedule.end {
        let at = match schedule.interval {
            Some(interval) => {
                tokio::time::sleep_until(due.into()).await;
                let at = due;
                due += interval;
                if Instant::now() >= schedule.end {
                    break;
                }
                at
            }
            None => Instant::now(),
        };
        let c = match &mut conn {
            Some(c) => c,
            None => match sender.open().await {
                Some(c) => conn.insert(c),
                None => {
                    failed_opens += 1;
                    tokio::time::sleep(retry).await;
                    continue;
                }
            },
        };
        if !sender.send(c, at).await {
            conn = None;
        }
    }
    failed_opens
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens connections numbered from 1 (the second fails); the third call
    /// leaves its connection bad.
    struct Recorder {
        opens: u32,
        start: Instant,
        dues: Vec<(u32, Duration)>,
    }

    impl Sender for Recorder {
        type Conn = u32;

        async fn open(&mut self) -> Option<u32> {
            self.opens += 1;
            (self.opens != 2).then_some(self.opens)
        }

        async fn send(&mut self, conn: &mut u32, due: Instant) -> bool {
            self.dues.push((*conn, due - self.start));
            self.dues.len() != 3
        }
    }

    #[tokio::test]
    async fn sends_on_schedule_and_reopens_after_a_failure() {
        let start = Instant::now();
        let schedule = Schedule {
            first: start,
            interval: Some(Duration::from_millis(10)),
            end: start + Duration::from_millis(95),
        };
        let mut sender = Recorder { opens: 0, start, dues: Vec::new() };
        let failed = send_paced(schedule, Duration::ZERO, &mut sender).await;
        let dues = sender.dues;
        assert_eq!(failed, 1);
        // Calls 0, 1 and 2 on the first connection (the third fails it), the
        // fourth due time lost to the failed open, then the third connection.
        let conns: Vec<u32> = dues.iter().map(|d| d.0).collect();
        assert_eq!(conns, [1, 1, 1, 3, 3, 3, 3, 3, 3]);
        let due_ms: Vec<u128> = dues.iter().map(|d| d.1.as_millis()).collect();
        assert_eq!(due_ms, [0, 10, 20, 40, 50, 60, 70, 80, 90]);
    }
}
