variable "database" {
  description = "Firestore database the triggers watch."
  type        = string
}

variable "labels" {
  description = "Labels on every trigger."
  type        = map(string)
  default     = {}
}

variable "location" {
  description = "Trigger location: the Firestore database location (nam5, eur3 or a region)."
  type        = string
}

variable "prefix" {
  description = "Prefix of trigger names; null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project of the triggers."
  type        = string
}

variable "region" {
  description = "Region of the destination Cloud Run services."
  type        = string
}

variable "service_account_email" {
  description = "Identity Eventarc delivers as (needs run.invoker on the destination only)."
  type        = string
}

variable "services" {
  description = "Catalog service name => Cloud Run service name."
  type        = map(string)
}

variable "triggers" {
  description = "Triggers as in the catalog: document path pattern, event type, service, path."
  type = map(object({
    document   = string
    event_type = string
    path       = optional(string, "/")
    service    = string
  }))
}
