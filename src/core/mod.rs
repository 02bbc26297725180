//! The bottom layer: types every other layer shares (time, addresses, identities, events,
//! secrets, throttle counters). Imports nothing of the crate but itself.

pub mod addr;
pub mod counter;
pub mod event;
pub mod html;
pub mod identity;
pub mod key;
pub mod secret;
pub mod time;
