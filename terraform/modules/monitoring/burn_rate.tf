# Multi-window, multi-burn-rate alerts on the SLOs (#22 item 4), from meridian/release/slos.yaml,
# the file `meridian status` reads its thresholds from too. Each alert fires while the share of bad
# events over BOTH of its windows exceeds factor x (1 - objective): the long window shows the
# budget really burns, the short one that it still does. The series are the services' own
# Prometheus metrics (meridian/metrics.py) and Pub/Sub's, read with PromQL through Google Cloud
# Managed Service for Prometheus (docs/operations.md, 'Metrics in Cloud Monitoring').

locals {
  slos      = yamldecode(file("${path.module}/../../../meridian/release/slos.yaml"))
  burn_rate = local.slos.burn_rate

  live_map_subscription = try(var.subscriptions["live-map"].subscription_id, "live-map")

  # Each SLO's bad share over a window, WINDOW standing for it: a ratio of bad to total.
  bad_share = {
    delivery_confirmation_p99 = "(1 - sum(rate(meridian_http_request_duration_seconds_bucket{route=~\".*:deliver\",le=\"${local.burn_rate.slos.delivery_confirmation_p99.threshold_s}\"}[WINDOW])) / sum(rate(meridian_http_request_duration_seconds_count{route=~\".*:deliver\"}[WINDOW])))"
    event_end_to_end_lag      = "(1 - sum(rate(meridian_event_lag_seconds_bucket{le=\"${local.burn_rate.slos.event_end_to_end_lag.threshold_s}\"}[WINDOW])) / sum(rate(meridian_event_lag_seconds_count[WINDOW])))"
    telemetry_freshness       = "avg_over_time((max(pubsub_googleapis_com:subscription_oldest_unacked_message_age{monitored_resource=\"pubsub_subscription\",subscription_id=\"${local.live_map_subscription}\"}) > bool ${local.burn_rate.slos.telemetry_freshness.threshold_s})[WINDOW:1m])"
  }

  burn_rate_alerts = merge([
    for slo, spec in local.burn_rate.slos : {
      for speed, alert in local.burn_rate.alerts : "${slo}-${speed}" => {
        slo       = slo
        speed     = speed
        long      = alert.long
        short     = alert.short
        factor    = alert.factor
        objective = spec.objective
        # The bad share that burns the budget at `factor` times the sustainable pace.
        max_bad_share = alert.factor * (1 - spec.objective)
      }
    }
  ]...)
}

resource "google_monitoring_alert_policy" "burn_rate" {
  for_each              = local.burn_rate_alerts
  project               = var.project_id
  display_name          = "${local.prefix}${each.value.slo}: burn rate ${each.value.speed}"
  combiner              = "AND"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  user_labels           = merge(var.labels, { slo = replace(each.value.slo, "_", "-"), burn = each.value.speed })

  conditions {
    display_name = "bad share over ${each.value.long} above ${each.value.factor}x the budget"
    condition_prometheus_query_language {
      query               = "${replace(local.bad_share[each.value.slo], "WINDOW", each.value.long)} > ${each.value.max_bad_share}"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  conditions {
    display_name = "bad share over ${each.value.short} above ${each.value.factor}x the budget"
    condition_prometheus_query_language {
      query               = "${replace(local.bad_share[each.value.slo], "WINDOW", each.value.short)} > ${each.value.max_bad_share}"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    content   = "${each.value.slo} burns its error budget at over ${each.value.factor}x the sustainable pace (objective ${each.value.objective}), over ${each.value.long} and still over ${each.value.short}. See docs/operations.md, 'Alerts and what to do'."
    mime_type = "text/markdown"
  }
}

output "burn_rate_alert_policies" {
  description = "Burn-rate alert policy display name => id."
  value       = { for k, p in google_monitoring_alert_policy.burn_rate : p.display_name => p.id }
}
