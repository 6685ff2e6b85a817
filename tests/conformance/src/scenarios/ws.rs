//! Routes, upgrade, messages and framing.

use crate::Harness;

/// `ping` gets `pong`.
pub async fn ping_pong(harness: &dyn Harness) {
    let _ = harness;
}
