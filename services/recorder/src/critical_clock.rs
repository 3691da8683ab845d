//! The critical clock: until a critical notification is acknowledged, it is sent again — reminder
//! 1, 2, ... — once its `acknowledge_by` has passed and then every `critical_repeat_seconds`, each
//! time with an `escalated` event ("critical value unacknowledged for N min, reminder n"). The
//! clock lives in PostgreSQL (`acknowledge_by`, `last_sent_at`), so it survives restarts; every
//! recorder runs this loop and each due row is taken by exactly one of them (`skip locked`).

use crate::Context;
use tokio::sync::Notify;

/// Notifications handled per transaction; a full batch is followed at once by the next.
const BATCH: i64 = 100;

/// Checks for due reminders every `critical_check_millis` until shutdown.
pub(crate) async fn run(context: &Context, wake: &Notify) -> anyhow::Result<()> {
    let names = &context.topology.names;
    let repeat = context.config.critical_repeat();
    loop {
        match store::critical::send_due_reminders(&context.db, names, repeat, BATCH).await {
            Ok(0) => {}
            Ok(sent) => {
                // The reminders are committed to the outbox: publish them now.
                wake.notify_one();
                context
                    .metrics
                    .critical_reminders
                    .inc_by(u64::try_from(sent).unwrap_or(u64::MAX));
                tracing::warn!(
                    reminders = sent,
                    "critical values still unacknowledged: reminders sent and escalated"
                );
                if i64::try_from(sent).unwrap_or(i64::MAX) >= BATCH {
                    continue;
                }
            }
            // The clock must outlive a database outage or a bad row: it says so and looks again
            // at the next tick; the due rows stay due.
            Err(error) if store::is_transient(&error) => {
                tracing::warn!(error = %error, "critical clock: database unavailable; checking again later");
            }
            Err(error) => {
                tracing::error!(error = %error, "critical clock: sending reminders failed");
            }
        }
        tokio::select! {
            _ = context.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(context.config.critical_check()) => {}
        }
    }
}
