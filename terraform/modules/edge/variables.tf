variable "backends" {
  description = "Public service => its Cloud Run service name and the paths routed to it (none: the default backend's)."
  type = map(object({
    paths   = optional(list(string), [])
    service = string
  }))
}

variable "default_backend" {
  description = "The backend (a key of backends) of every path no other backend lists."
  type        = string
}

variable "domain" {
  description = "The public host name (its DNS A record points at the edge address; the managed certificate is issued for it)."
  type        = string
}

variable "prefix" {
  description = "Prefix of every edge resource name; null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project of the load balancer."
  type        = string
}

variable "rate_limit" {
  description = "Per-IP rate limit: requests per interval_sec before answers are 429."
  type = object({
    count        = optional(number, 600)
    interval_sec = optional(number, 60)
  })
  default = {}
}

variable "region" {
  description = "Region of the Cloud Run services (their serverless NEGs)."
  type        = string
}
