output "bigquery_tables" {
  description = "Catalog table => BigQuery table id."
  value       = module.pubsub.bigquery_tables
}

output "dataflow" {
  description = "Geofence job id, staging bucket and where to build its template spec."
  value       = merge(module.geofence.ids, module.geofence.template_path)
}

output "edge" {
  description = "The public edge: its address (the domain's A record), the domain, the Cloud Armor policy."
  value       = merge(module.edge.ids, { address = module.edge.address, domain = var.edge.domain })
}

output "egress_addresses" {
  description = "Cloud NAT addresses for third parties to allow-list."
  value       = module.network.nat_addresses
}

output "eventarc_triggers" {
  description = "Catalog trigger => trigger id."
  value       = module.eventarc.triggers
}

output "firestore" {
  description = "Firestore database."
  value       = module.firestore.database
}

output "identity_tenants" {
  description = "Identity Platform tenant => tenant id (drivers and customers sign in to theirs)."
  value       = { for name, t in google_identity_platform_tenant.default : name => t.name }
}

output "image_repository" {
  description = "Artifact Registry repository to push the meridian image to."
  value       = { url = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}" }
}

output "pod_bucket" {
  description = "Cloud Storage bucket of proof-of-delivery photos."
  value       = google_storage_bucket.pod.name
}

output "secrets" {
  description = "Secret id => Secret Manager secret (add versions with gcloud; values never go through Terraform)."
  value       = { for k, s in google_secret_manager_secret.default : k => s.id }
}

output "service_accounts" {
  description = "Identity => service account email."
  value = merge(
    { for name, m in module.reactor : name => m.service_account.email },
    { for name, m in module.service : name => m.service_account.email },
    {
      eventarc    = google_service_account.eventarc.email
      geofence    = google_service_account.geofence.email
      pubsub-push = google_service_account.push.email
      scheduler   = google_service_account.scheduler.email
      workflow    = google_service_account.workflow.email
    },
  )
}

output "service_urls" {
  description = "Catalog service => Cloud Run URL."
  value       = local.service_uris
}

output "subscriptions" {
  description = "Catalog subscription => subscription id."
  value       = module.pubsub.subscriptions
}

output "topics" {
  description = "Catalog topic => topic id."
  value       = module.pubsub.topics
}

output "workflows" {
  description = "Dispatch workflow ids."
  value       = module.dispatch_workflow.ids
}
