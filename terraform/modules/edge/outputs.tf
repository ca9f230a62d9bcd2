output "address" {
  description = "The edge's IP address (point the domain's A record at it)."
  value       = google_compute_global_address.edge.address
}

output "ids" {
  description = "Resource ids: the Cloud Armor policy and the HTTPS URL map."
  value = {
    security_policy = google_compute_security_policy.edge.id
    url_map         = google_compute_url_map.https.id
  }
}
