output "alert_policies" {
  description = "Alert policy display name => id."
  value = merge(
    { for k, p in google_monitoring_alert_policy.oldest_unacked : p.display_name => p.id },
    { for k, p in google_monitoring_alert_policy.dead_lettered : p.display_name => p.id },
    { for k, p in google_monitoring_alert_policy.dead_letter_depth : p.display_name => p.id },
    { for k, p in google_monitoring_alert_policy.latency_p99 : p.display_name => p.id },
  )
}
