output "ids" {
  description = "Network resource ids."
  value = {
    connector  = google_vpc_access_connector.default.id
    network    = google_compute_network.default.id
    subnetwork = google_compute_subnetwork.default.id
  }
}

output "nat_addresses" {
  description = "Static egress addresses, to give to third parties for allow-listing."
  value       = { for a in google_compute_address.nat : a.name => a.address }
}

output "self_links" {
  description = "Self links (Dataflow wants the subnetwork's)."
  value = {
    network    = google_compute_network.default.self_link
    subnetwork = google_compute_subnetwork.default.self_link
  }
}
