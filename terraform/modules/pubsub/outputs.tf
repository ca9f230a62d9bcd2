output "bigquery_tables" {
  description = "Catalog table name (dataset.table) => fully qualified BigQuery table id."
  value       = { for k, t in google_bigquery_table.default : k => "${t.project}.${t.dataset_id}.${t.table_id}" }
}

output "dead_letter_topics" {
  description = "Catalog dead-letter topic name => topic id."
  value       = { for k in local.dead_letter_topics : k => google_pubsub_topic.default[k].id }
}

output "schemas" {
  description = "Event type => Pub/Sub schema id."
  value       = { for k, s in google_pubsub_schema.default : k => s.id }
}

output "service_agent_email" {
  description = "The Pub/Sub service agent (dead-letter forwarding, BigQuery writes, push tokens)."
  value       = google_project_service_identity.pubsub.email
}

output "subscription_names" {
  description = "Catalog subscription name => subscription resource name (for monitoring filters)."
  value       = { for k, s in google_pubsub_subscription.default : k => s.name }
}

output "subscriptions" {
  description = "Catalog subscription name => subscription id."
  value       = { for k, s in google_pubsub_subscription.default : k => s.id }
}

output "topics" {
  description = "Catalog topic name => topic id."
  value       = { for k, t in google_pubsub_topic.default : k => t.id }
}
