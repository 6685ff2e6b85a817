//! The scenarios, one `pub async fn(&dyn Harness)` each.

pub mod ws;

/// Calls `$m!($harness; module::scenario)` for every scenario of the suite.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_scenario {
    ($m:path; $harness:expr) => {
        $m!($harness; ws::ping_pong);
    };
}
