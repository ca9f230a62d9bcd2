# Who may touch which topic and subscription. Everything is granted on the single resource,
# never project-wide.

# The Pub/Sub service agent forwards dead letters: it must publish on each dead-letter topic and
# acknowledge on each source subscription, or messages are never dead-lettered (they retry forever).
resource "google_project_service_identity" "pubsub" {
  provider = google-beta
  project  = var.project_id
  service  = "pubsub.googleapis.com"
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.dead_letter_topics
  project  = var.project_id
  topic    = google_pubsub_topic.default[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = { for name, s in local.subscriptions : name => s if s.dead_letter_topic != null }
  project      = var.project_id
  subscription = google_pubsub_subscription.default[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# Producers publish only on the topics of the event types the catalog says they produce.
resource "google_pubsub_topic_iam_member" "producer" {
  for_each = local.producer_topics
  project  = var.project_id
  topic    = google_pubsub_topic.default[each.value.topic].name
  role     = "roles/pubsub.publisher"
  member   = var.publishers[each.value.producer]
}

# Pull consumers (live-map, the geofence pipeline, operators replaying dead letters) subscribe
# only to their own subscription.
resource "google_pubsub_subscription_iam_member" "consumer" {
  for_each = {
    for name, s in local.subscriptions : name => s
    if s.pull_consumer != null && contains(keys(var.pull_consumers), coalesce(s.pull_consumer, "-"))
  }
  project      = var.project_id
  subscription = google_pubsub_subscription.default[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = var.pull_consumers[each.value.pull_consumer]
}

# Beam's Pub/Sub source also reads subscription metadata.
resource "google_pubsub_subscription_iam_member" "consumer_viewer" {
  for_each = {
    for name, s in local.subscriptions : name => s
    if s.pull_consumer != null && contains(keys(var.pull_consumers), coalesce(s.pull_consumer, "-"))
  }
  project      = var.project_id
  subscription = google_pubsub_subscription.default[each.key].name
  role         = "roles/pubsub.viewer"
  member       = var.pull_consumers[each.value.pull_consumer]
}

# A pull consumer that refuses a message itself (the geofence job's unusable pings, with their
# reason) publishes it on its own subscription's dead-letter topic, and on no other.
resource "google_pubsub_topic_iam_member" "consumer_dead_letters" {
  for_each = {
    for name, s in local.subscriptions : name => s
    if s.pull_consumer != null && s.dead_letter_topic != null && contains(keys(var.pull_consumers), coalesce(s.pull_consumer, "-"))
  }
  project = var.project_id
  topic   = google_pubsub_topic.default[each.value.dead_letter_topic].name
  role    = "roles/pubsub.publisher"
  member  = var.pull_consumers[each.value.pull_consumer]
}
