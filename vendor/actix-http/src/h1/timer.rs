use std::{fmt, future::Future, pin::Pin, task::Context};

use tokio::time::{sleep_until, Instant, Sleep};
use tracing::trace;

// rondo: a timer keeps its `Sleep` (one allocation, and its entry in tokio's timer wheel) from
// one arming to the next, and moves its deadline later lazily. A kept-alive connection armed its
// keep-alive timer after every response and dropped it when the next request arrived: a new
// boxed `Sleep` registered in the wheel and taken out again per request, about 600
// instructions. Now a deadline later than the wheel entry's is only written down; when the entry
// fires early, the timer is set again for the deadline written down (`poll_expired`), so a busy
// connection touches the wheel about once per keep-alive period. An earlier deadline resets the
// entry at once. A cleared timer's entry may still wake the connection's task once at its old
// deadline: a poll that finds nothing to do.
#[derive(Debug)]
pub(super) enum TimerState {
    Disabled,
    /// Not running; `spare` is the last timer, kept for the next [`TimerState::set_and_init`].
    Inactive {
        spare: Option<Pin<Box<Sleep>>>,
    },
    /// Running until `deadline`; `timer`'s own deadline may be earlier (see above).
    Active {
        timer: Pin<Box<Sleep>>,
        deadline: Instant,
    },
}

impl TimerState {
    pub(super) fn new(enabled: bool) -> Self {
        if enabled {
            Self::Inactive { spare: None }
        } else {
            Self::Disabled
        }
    }

    pub(super) fn is_enabled(&self) -> bool {
        matches!(self, Self::Active { .. } | Self::Inactive { .. })
    }

    /// Runs the timer until `deadline`, and polls it with `cx` (which registers `cx`'s waker,
    /// and puts a new `Sleep` in the wheel).
    pub(super) fn set_and_init(&mut self, cx: &mut Context<'_>, deadline: Instant, line: u32) {
        let kept = match std::mem::replace(self, Self::Disabled) {
            Self::Disabled => {
                trace!("setting disabled timer from line {}", line);
                None
            }
            Self::Inactive { spare } => spare,
            Self::Active { timer, .. } => Some(timer),
        };
        let mut timer = match kept {
            // The entry fires no later than `deadline`: its place in the wheel stays.
            Some(timer) if !timer.is_elapsed() && timer.deadline() <= deadline => timer,
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(sleep_until(deadline)),
        };
        // Also a kept timer: a `Sleep` goes into the wheel on its first poll that tokio's
        // cooperative budget lets through, and the poll that made this one may not have been.
        // One that fires on that poll wakes nothing: set it again for `deadline`, or, when that
        // has passed too, wake the task so that its timers are looked at.
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                cx.waker().wake_by_ref();
                break;
            }
            timer.as_mut().reset(deadline);
        }
        *self = Self::Active { timer, deadline };
    }

    pub(super) fn clear(&mut self, line: u32) {
        match std::mem::replace(self, Self::Inactive { spare: None }) {
            Self::Disabled => {
                trace!("trying to clear a disabled timer from line {}", line);
            }
            Self::Inactive { spare } => {
                trace!("trying to clear an inactive timer from line {}", line);
                *self = Self::Inactive { spare };
            }
            Self::Active { timer, .. } => {
                *self = Self::Inactive { spare: Some(timer) };
            }
        }
    }

    /// Whether the timer runs and its deadline has passed; otherwise `cx`'s waker is woken when
    /// it may have.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Self::Active { timer, deadline } = self else {
            return false;
        };
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= *deadline {
                return true;
            }
            // Fired at an earlier deadline than the one written down since.
            timer.as_mut().reset(*deadline);
        }
        false
    }
}

impl fmt::Display for TimerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimerState::Disabled => f.write_str("timer is disabled"),
            TimerState::Inactive { .. } => f.write_str("timer is inactive"),
            TimerState::Active { deadline, .. } => {
                let deadline = *deadline;
                let now = Instant::now();

                if deadline < now {
                    f.write_str("timer is active and has reached deadline")
                } else {
                    write!(
                        f,
                        "timer is active and due to expire in {} milliseconds",
                        ((deadline - now).as_secs_f32() * 1000.0)
                    )
                }
            }
        }
    }
}
