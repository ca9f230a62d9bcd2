variable "connector" {
  description = "Serverless VPC Access connector sizing."
  type = object({
    machine_type  = optional(string, "e2-micro")
    max_instances = optional(number, 3)
    min_instances = optional(number, 2)
  })
  default = {}
}

variable "ip_ranges" {
  description = "CIDR ranges: the subnet (Dataflow workers) and the connector's /28."
  type = object({
    connector = string
    subnet    = string
  })
}

variable "nat_addresses" {
  description = "How many static egress addresses Cloud NAT uses (what third parties allow-list)."
  type        = number
  default     = 1
}

variable "prefix" {
  description = "Prefix of every resource name; null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project of the network."
  type        = string
}

variable "region" {
  description = "Region of the subnet, connector and NAT."
  type        = string
}
