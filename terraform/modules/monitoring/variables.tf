variable "labels" {
  description = "User labels on every alert policy."
  type        = map(string)
  default     = {}
}

variable "latency_slos" {
  description = "Catalog service name => Cloud Run service name and p99 latency threshold (ms)."
  type = map(object({
    p99_ms       = number
    service_name = string
  }))
  default = {}
}

variable "notification_emails" {
  description = "Addresses alerted by every policy."
  type        = list(string)
  default     = []
}

variable "prefix" {
  description = "Prefix of policy names; null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project of the alert policies."
  type        = string
}

variable "subscriptions" {
  description = "Catalog subscription name => its Pub/Sub id, dead-letter wiring (its own dead-letter topic and the subscription keeping it) and backlog threshold."
  type = map(object({
    dead_letters_in         = optional(string)
    dead_letters_to         = optional(string)
    holds_dead_letters      = optional(bool, false)
    max_unacked_age_seconds = optional(number, 600)
    subscription_id         = string
  }))
}
