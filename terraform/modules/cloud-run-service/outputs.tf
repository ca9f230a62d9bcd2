output "ids" {
  description = "Resource ids: service and service account."
  value = {
    service         = google_cloud_run_v2_service.service.id
    service_account = google_service_account.service.id
  }
}

output "name" {
  description = "Cloud Run service name."
  value       = google_cloud_run_v2_service.service.name
}

output "service_account" {
  description = "The service's own identity: email and IAM member."
  value = {
    email  = google_service_account.service.email
    member = google_service_account.service.member
  }
}

output "uri" {
  description = "HTTPS URL of the service."
  value       = google_cloud_run_v2_service.service.uri
}
