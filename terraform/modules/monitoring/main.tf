# The two vital signs of an event-driven system, per consumer: how old the oldest unacked
# message is (a consumer falling behind) and its dead letters (a real bug): being dead-lettered
# now, and waiting in its own dead-letter subscription. Plus the promise the design makes to
# drivers: "mark delivered" p99 latency on the command service.

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"
  # Dead-letter subscriptions hold messages for inspection: their backlog is a consumer's depth.
  backlog_subscriptions    = { for k, s in var.subscriptions : k => s if !s.holds_dead_letters }
  forwarding_subscriptions = { for k, s in var.subscriptions : k => s if s.dead_letters_to != null }
}

resource "google_monitoring_notification_channel" "email" {
  for_each     = toset(var.notification_emails)
  project      = var.project_id
  display_name = "${local.prefix}meridian ${each.key}"
  type         = "email"
  labels       = { email_address = each.key }
}

resource "google_monitoring_alert_policy" "oldest_unacked" {
  for_each              = local.backlog_subscriptions
  project               = var.project_id
  display_name          = "${local.prefix}${each.key}: oldest unacked message age"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  user_labels           = var.labels

  conditions {
    display_name = "oldest unacked message older than ${each.value.max_unacked_age_seconds}s"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${each.value.subscription_id}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.max_unacked_age_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "Subscription ${each.key} is falling behind. Check the consumer's errors and instance count; messages are retained, nothing is lost yet."
    mime_type = "text/markdown"
  }
}

# Messages forwarded to a dead-letter topic, attributed to the subscription that gave up on them.
resource "google_monitoring_alert_policy" "dead_lettered" {
  for_each              = local.forwarding_subscriptions
  project               = var.project_id
  display_name          = "${local.prefix}${each.key}: messages dead-lettered"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  user_labels           = var.labels

  conditions {
    display_name = "dead-lettered messages from ${each.key}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${each.value.subscription_id}\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    content   = "Subscription ${each.key} dead-lettered messages to ${coalesce(each.value.dead_letters_to, "-")}. Inspect them, fix the consumer, then replay (terraform/README.md, 'Replaying dead letters')."
    mime_type = "text/markdown"
  }
}

# Each consumer's dead-letter depth, read on the one subscription that keeps its dead letters.
resource "google_monitoring_alert_policy" "dead_letter_depth" {
  for_each              = local.forwarding_subscriptions
  project               = var.project_id
  display_name          = "${local.prefix}${each.key}: dead-letter depth"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  user_labels           = var.labels

  conditions {
    display_name = "dead letters of ${each.key} waiting in ${coalesce(each.value.dead_letters_in, "-")}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${coalesce(each.value.dead_letters_in, "-")}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "Dead letters of ${each.key} are waiting in ${coalesce(each.value.dead_letters_in, "-")}; every one is a bug to investigate. List them with `meridian replay-dead-letters --source ${each.key} --dry-run`, fix the consumer, then replay them all with `meridian replay-dead-letters --source ${each.key}` (terraform/README.md, 'Replaying dead letters')."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "latency_p99" {
  for_each              = var.latency_slos
  project               = var.project_id
  display_name          = "${local.prefix}${each.key}: p99 request latency"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  user_labels           = var.labels

  conditions {
    display_name = "p99 latency above ${each.value.p99_ms} ms"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${each.value.service_name}\" AND metric.type = \"run.googleapis.com/request_latencies\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.p99_ms
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.labels.service_name"]
      }
    }
  }

  documentation {
    content   = "${each.key} p99 latency is over ${each.value.p99_ms} ms. The command path does one Firestore transaction and returns 202: look at Firestore contention and instance cold starts."
    mime_type = "text/markdown"
  }
}
