//! How the caller of a training loop steers it after each step: go on, stop, or pause.
//!
//! The progress callbacks are synchronous (the worker's JS callback, the CLI's printer), but a
//! pause has to wait without blocking the event loop that will deliver "resume". So a callback
//! that wants a pause hands the loop a future to await between two steps: nothing of the run's
//! state (weights, optimiser moments, batch order, RNGs) is touched while it waits, and a
//! resumed run is the uninterrupted run. Callbacks returning `bool` keep working (`true` goes on,
//! `false` stops).

use std::future::Future;
use std::pin::Pin;

/// Resolves when a pause ends: `true` to resume, `false` to stop as [`Control::Stop`] does.
pub type PauseFuture = Pin<Box<dyn Future<Output = bool>>>;

/// A progress callback's answer.
pub enum Control {
    Continue,
    /// Stop after this step (the job still evaluates and exports what was trained).
    Stop,
    /// Wait between this step and the next one until the future resolves.
    Pause(PauseFuture),
}

impl From<bool> for Control {
    fn from(go_on: bool) -> Self {
        if go_on {
            Control::Continue
        } else {
            Control::Stop
        }
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Continue => "Continue",
            Control::Stop => "Stop",
            Control::Pause(_) => "Pause",
        })
    }
}

impl Control {
    /// Whether the run goes on, waiting out a pause first; also returns the milliseconds spent
    /// paused, which the loop keeps out of its elapsed time and speed.
    pub async fn proceed(self) -> (bool, f64) {
        match self {
            Control::Continue => (true, 0.0),
            Control::Stop => (false, 0.0),
            Control::Pause(resume) => {
                let t0 = crate::platform::now_ms();
                let go_on = resume.await;
                (go_on, crate::platform::now_ms() - t0)
            }
        }
    }
}
