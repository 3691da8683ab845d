#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/telerelay.json, the dashboard Grafana provisions in compose.yaml.

Two rows: the pipeline (is the relay moving messages?) and the clinical picture (are patients'
requests read in time, are critical values acknowledged?). Every expression uses the metrics of
docs/metrics.md; tests/tests/dashboards.rs checks the names against that catalogue. What each
panel shows is described in docs/dashboards.md.

Aggregation rule: counters are per process, so they are summed over instances; the recorder's
gauges of the province's state (queue depths, lanes, SLA, critical values, dead letters) are the
same truth read by every recorder instance, so they take max, never sum.

Run: python3 deploy/grafana/make-dashboard.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
WIDTH = 8
HEIGHT = 8


class Layout:
    """Places panels left to right, three to a line, rows across the whole width."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.next_id = 1

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        if self.x:
            self.x, self.y = 0, self.y + HEIGHT
        self.panels.append({
            "id": self._id(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": [],
        })
        self.y += 1

    def panel(self, title, description, targets, unit="short", kind="timeseries", width=WIDTH,
              stack=False):
        if self.x + width > 24:
            self.x, self.y = 0, self.y + HEIGHT
        refs = "ABCDEFGH"
        panel = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": {"h": HEIGHT, "w": width, "x": self.x, "y": self.y},
            "targets": [
                {"refId": refs[i], "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                 "range": True, "instant": False}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            }
            panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom",
                                           "showLegend": True},
                                "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                                  "values": False},
                                "colorMode": "background", "graphMode": "area",
                                "textMode": "value_and_name"}
            panel["fieldConfig"]["defaults"]["thresholds"] = {
                "mode": "absolute",
                "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}],
            }
        self.panels.append(panel)
        self.x += width


def quantiles(metric, by, selector="", window="1h"):
    """Median and 90th percentile of a histogram, per the `by` labels."""
    inner = f"sum by (le, {by}) (rate({metric}_bucket{selector}[{window}]))"
    legend = " ".join("{{" + label.strip() + "}}" for label in by.split(","))
    return [
        (f"histogram_quantile(0.5, {inner})", f"p50 {legend}"),
        (f"histogram_quantile(0.9, {inner})", f"p90 {legend}"),
    ]


def dashboard():
    layout = Layout()

    layout.row("Pipeline")
    layout.panel(
        "Requests received and routed",
        "Requests that decoded and validated (received) and were committed as routed, per second.",
        [("sum by (kind, priority) (rate(telerelay_requests_received_total[5m]))",
          "received {{kind}} {{priority}}"),
         ("sum by (pool, overflow) (rate(telerelay_requests_routed_total[5m]))",
          "routed to {{pool}} (overflow {{overflow}})")],
        unit="reqps")
    layout.panel(
        "Deliveries by queue and outcome",
        "Deliveries the consume loops settled: done, failed (nacked back), refused, abandoned.",
        [("sum by (queue, outcome) (rate(telerelay_deliveries_total[5m]))",
          "{{queue}} {{outcome}}")],
        unit="ops")
    layout.panel(
        "Rejections and dead letters by reason",
        "Requests the dispatcher refused (by RejectionReason) and dead letters the recorder "
        "stored (by reason), per minute.",
        [("sum by (reason) (rate(telerelay_requests_rejected_total[5m])) * 60",
          "refused {{reason}}"),
         ("sum by (reason) (rate(telerelay_dead_letters_total[5m])) * 60",
          "dead letter {{reason}}")],
        unit="short")
    layout.panel(
        "Dead letters not replayed",
        "Stored dead letters no operator has replayed yet (relayctl dead-letters list).",
        [("max by (reason) (telerelay_dead_letters_unreplayed)", "{{reason}}")],
        stack=True)
    layout.panel(
        "Redeliveries and duplicates",
        "Deliveries the broker flagged redelivered (a consumer died or nacked), and duplicate "
        "requests the dispatcher recognised (an origin's retry).",
        [("sum by (queue) (rate(telerelay_redeliveries_total[5m]))", "redelivered {{queue}}"),
         ("sum by (conflicting) (rate(telerelay_requests_duplicate_total[5m]))",
          "duplicate (conflicting {{conflicting}})")],
        unit="ops")
    layout.panel(
        "Publish confirm latency",
        "Publish to broker confirm, p50 and p99 per exchange; and publishes not confirmed.",
        [("histogram_quantile(0.5, sum by (le, exchange) "
          "(rate(telerelay_publish_confirm_seconds_bucket[5m])))", "p50 {{exchange}}"),
         ("histogram_quantile(0.99, sum by (le, exchange) "
          "(rate(telerelay_publish_confirm_seconds_bucket[5m])))", "p99 {{exchange}}"),
         ("sum by (exchange, outcome) (rate(telerelay_published_total{outcome!=\"confirmed\"}[5m]))",
          "{{exchange}} {{outcome}} /s")],
        unit="s")
    layout.panel(
        "In flight",
        "Deliveries being handled right now, per queue (summed over service instances).",
        [("sum by (queue) (telerelay_deliveries_in_flight)", "{{queue}}")])
    layout.panel(
        "Queue depth",
        "Messages waiting in each queue (the core queues and every lane), read by the recorder "
        "with a passive declare.",
        [("max by (queue) (telerelay_queue_messages)", "{{queue}}")])
    layout.panel(
        "Oldest waiting per lane",
        "Age of the oldest routed, unclaimed request per pool and priority (0 when none waits).",
        [("max by (pool, priority) (telerelay_lane_oldest_waiting_seconds)",
          "{{pool}} {{priority}}")],
        unit="s")
    layout.panel(
        "Requests waiting per lane",
        "Requests routed and not claimed, per pool and priority.",
        [("max by (pool, priority) (telerelay_lane_waiting)", "{{pool}} {{priority}}")],
        stack=True)
    layout.panel(
        "Broker sessions and reconnects",
        "1 while a service's broker session consumes; reconnects per hour.",
        [("min by (job, instance) (telerelay_broker_session_up)", "session up {{job}}"),
         ("sum by (job) (increase(telerelay_broker_reconnects_total[1h]))",
          "reconnects/h {{job}}")])
    layout.panel(
        "Review desk HTTP calls",
        "Calls answered by the review desk, per route and status.",
        [("sum by (route, status) (rate(telerelay_http_requests_total[5m]))",
          "{{route}} {{status}}")],
        unit="reqps")

    layout.row("Clinical")
    layout.panel(
        "Turnaround received → reported",
        "Median and 90th percentile from the relay receiving a request to its first report, per "
        "kind and priority, over the last hour (from the turnaround histogram).",
        quantiles("telerelay_turnaround_seconds", "kind, priority",
                  '{stage="received_to_reported"}'),
        unit="s", width=12)
    layout.panel(
        "Turnaround reported → delivered",
        "From the report being signed to the result sitting in the origin's results queue.",
        quantiles("telerelay_turnaround_seconds", "kind", '{stage="reported_to_delivered"}'),
        unit="s", width=12)
    layout.panel(
        "Open requests at risk and overdue",
        "Open requests past their at-risk mark (not yet due) and past their due time.",
        [("max(telerelay_sla_open_at_risk)", "at risk"),
         ("max(telerelay_sla_open_overdue)", "overdue")],
        kind="stat")
    layout.panel(
        "SLA warnings and breaches",
        "At-risk warnings and breaches the SLA clock recorded per hour, per kind and priority.",
        [("sum by (kind, priority) (increase(telerelay_sla_at_risk_total[1h]))",
          "at risk {{kind}} {{priority}}"),
         ("sum by (kind, priority) (increase(telerelay_sla_breached_total[1h]))",
          "breached {{kind}} {{priority}}")])
    layout.panel(
        "Escalations and expired leases",
        "Escalation-ladder steps taken per hour (reroute, page the pool head, page on-call), and "
        "leases the clock released.",
        [("sum by (step, action) (increase(telerelay_escalations_total[1h]))",
          "step {{step}} {{action}}"),
         ("sum(increase(telerelay_leases_expired_total[1h]))", "leases expired")])
    layout.panel(
        "Returns by reason",
        "Requests reviewers handed back per hour (unreadable ECG, missing series, …).",
        [("sum by (reason, kind) (increase(telerelay_returns_total[1h]))",
          "{{kind}} {{reason}}")],
        stack=True)
    layout.panel(
        "Critical value acknowledgement time",
        "Median and 90th percentile from the critical notification to the origin clinician's "
        "acknowledgement, per kind, over the last hour.",
        quantiles("telerelay_critical_ack_seconds", "kind"),
        unit="s")
    layout.panel(
        "Open critical values (危急值)",
        "Critical notifications not yet acknowledged, and of those past their acknowledge-by "
        "time (relayctl critical --open).",
        [("max(telerelay_critical_open)", "open"),
         ("max(telerelay_critical_overdue)", "past acknowledge-by")],
        kind="stat")
    layout.panel(
        "Reports and claims",
        "Report versions signed per hour (by kind, critical, first/amended/addendum) and claims.",
        [("sum by (kind, critical, version) (increase(telerelay_reports_total[1h]))",
          "{{kind}} critical={{critical}} {{version}}"),
         ("sum by (pool) (increase(telerelay_claims_total[1h]))", "claims {{pool}}"),
         ("sum(increase(telerelay_critical_reminders_total[1h]))", "critical reminders")])

    return {
        "uid": "telerelay",
        "title": "telerelay",
        "description": "The relay's pipeline and the clinical picture (docs/dashboards.md).",
        "tags": ["telerelay"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [],
        "panels": layout.panels,
    }


def main():
    path = os.path.join(HERE, "dashboards", "telerelay.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump(dashboard(), out, indent=2, ensure_ascii=False)
        out.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
