output "triggers" {
  description = "Trigger name => trigger id."
  value       = { for k, t in google_eventarc_trigger.default : k => t.id }
}
