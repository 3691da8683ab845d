//! Second reads: with nothing on the worklist, a reviewer checks a colleague's signed report
//! (the desk picks which, and never the reviewer's own) and records agreement or discordance.

use crate::Simulation;
use crate::desk_client::{DeskClient, SecondReadItem};
use crate::progress::Stats;
use crate::reviewer_bot::{reading_time, submit};
use domain::StudyKind;
use rand::Rng;
use serde_json::json;

pub(crate) async fn read(sim: &Simulation, desk: &DeskClient<'_>, item: SecondReadItem) {
    let kind = StudyKind::parse(&item.request.kind).unwrap_or(StudyKind::Ecg);
    // Checking a signed report takes about half of reading the study afresh.
    let reading = reading_time(
        kind,
        &item.request.priority,
        false,
        sim.config.sim_time_scale,
    )
    .mul_f64(0.5);
    tokio::select! {
        _ = tokio::time::sleep(reading) => {}
        _ = sim.shutdown.cancelled() => {}
    }
    let discordant = rand::rng().random_bool(sim.config.sim_discordance_probability);
    let body = if discordant {
        json!({
            "verdict": "discordant",
            "comment": if item.first_report.critical {
                "Finding confirmed but graded differently; discussed with the first reader."
            } else {
                "Disagree with the conclusion; recommend the first reader reviews and amends."
            },
        })
    } else {
        json!({ "verdict": "agree", "comment": "Concur with the report." })
    };
    let id = match &item.second_read_id {
        serde_json::Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    let path = format!("/v1/second-reads/{id}/verdict");
    if submit(
        sim,
        desk,
        &item.request.request_id,
        "second read",
        &path,
        &body,
    )
    .await
    {
        Stats::add(if discordant {
            &sim.stats.second_reads_discordant
        } else {
            &sim.stats.second_reads_agreed
        });
        tracing::debug!(
            reviewer = desk.bot.id,
            first_version = item.first_report.version,
            discordant,
            "second read recorded"
        );
    }
}
