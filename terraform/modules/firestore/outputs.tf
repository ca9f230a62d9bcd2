output "database" {
  description = "Database name, id and location."
  value = {
    id       = google_firestore_database.default.id
    location = google_firestore_database.default.location_id
    name     = google_firestore_database.default.name
  }
}

output "indexes" {
  description = "Index name => index id."
  value       = { for k, i in google_firestore_index.default : k => i.id }
}

output "ttl_fields" {
  description = "Collection group => TTL field."
  value       = { for k, f in google_firestore_field.ttl : k => f.field }
}
