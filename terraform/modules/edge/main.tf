# A global external HTTPS load balancer (Envoy-based, EXTERNAL_MANAGED) in front of Cloud Run
# services through serverless NEGs, with a Google-managed certificate for var.domain, HTTP
# redirected to HTTPS, and one Cloud Armor policy on every backend: Google's preconfigured OWASP
# rules (SQL injection, XSS, local file inclusion, remote code execution), a per-IP rate limit,
# and a rule that answers 404 for every service's /metrics (scraped from inside the instance only).

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"

  # Preconfigured WAF rules (sensitivity 1: the fewest false positives), one rule each, so a
  # false positive can be tuned or previewed on its own.
  waf_rules = {
    sqli = { priority = 1000, expression = "evaluatePreconfiguredWaf('sqli-v33-stable', {'sensitivity': 1})" }
    xss  = { priority = 1010, expression = "evaluatePreconfiguredWaf('xss-v33-stable', {'sensitivity': 1})" }
    lfi  = { priority = 1020, expression = "evaluatePreconfiguredWaf('lfi-v33-stable', {'sensitivity': 1})" }
    rce  = { priority = 1030, expression = "evaluatePreconfiguredWaf('rce-v33-stable', {'sensitivity': 1})" }
  }
}

resource "google_compute_security_policy" "edge" {
  project     = var.project_id
  name        = "${local.prefix}edge"
  description = "Meridian edge: OWASP preconfigured rules, a per-IP rate limit, no /metrics."
  type        = "CLOUD_ARMOR"

  # Every service serves Prometheus' /metrics, scraped by the Managed Service for Prometheus
  # sidecar on localhost (modules/cloud-run-service). The default backend takes every path no
  # other backend lists, so /metrics would reach the command service from the internet: refuse
  # it first, whatever its encoding or its place in the path (a partial match on the decoded
  # path; no public route contains "/metrics").
  rule {
    action      = "deny(404)"
    priority    = 900
    description = "No /metrics from the internet"
    match {
      expr {
        expression = "request.path.lower().urlDecode().matches('/metrics')"
      }
    }
  }

  dynamic "rule" {
    for_each = local.waf_rules
    content {
      action      = "deny(403)"
      priority    = rule.value.priority
      description = "OWASP ${rule.key}"
      match {
        expr {
          expression = rule.value.expression
        }
      }
    }
  }

  rule {
    action      = "throttle"
    priority    = 2000
    description = "Per-IP rate limit"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.rate_limit.count
        interval_sec = var.rate_limit.interval_sec
      }
    }
  }

  rule {
    action      = "allow"
    priority    = 2147483647
    description = "Default: allow"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}

resource "google_compute_region_network_endpoint_group" "default" {
  for_each              = var.backends
  project               = var.project_id
  region                = var.region
  name                  = "${local.prefix}${each.key}"
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = each.value.service
  }
}

resource "google_compute_backend_service" "default" {
  for_each              = var.backends
  project               = var.project_id
  name                  = "${local.prefix}${each.key}"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = google_compute_security_policy.edge.id

  backend {
    group = google_compute_region_network_endpoint_group.default[each.key].id
  }

  log_config {
    enable      = true
    sample_rate = 1
  }
}

resource "google_compute_url_map" "https" {
  project         = var.project_id
  name            = "${local.prefix}edge"
  default_service = google_compute_backend_service.default[var.default_backend].id

  host_rule {
    hosts        = [var.domain]
    path_matcher = "services"
  }

  path_matcher {
    name            = "services"
    default_service = google_compute_backend_service.default[var.default_backend].id

    dynamic "path_rule" {
      for_each = { for name, b in var.backends : name => b if length(b.paths) > 0 }
      content {
        paths   = path_rule.value.paths
        service = google_compute_backend_service.default[path_rule.key].id
      }
    }
  }
}

resource "google_compute_url_map" "redirect" {
  project = var.project_id
  name    = "${local.prefix}edge-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_global_address" "edge" {
  project = var.project_id
  name    = "${local.prefix}edge"
}

resource "google_compute_managed_ssl_certificate" "edge" {
  project = var.project_id
  name    = "${local.prefix}edge"

  managed {
    domains = [var.domain]
  }
}

resource "google_compute_target_https_proxy" "edge" {
  project          = var.project_id
  name             = "${local.prefix}edge"
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.edge.id]
}

resource "google_compute_target_http_proxy" "redirect" {
  project = var.project_id
  name    = "${local.prefix}edge-redirect"
  url_map = google_compute_url_map.redirect.id
}

resource "google_compute_global_forwarding_rule" "https" {
  project               = var.project_id
  name                  = "${local.prefix}edge-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.edge.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.edge.id
}

resource "google_compute_global_forwarding_rule" "http" {
  project               = var.project_id
  name                  = "${local.prefix}edge-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.edge.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.redirect.id
}
