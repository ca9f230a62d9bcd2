"""What Cloud Scheduler calls on the ETA reactor: its SLA check, so a window that closes with no
movement on its route is still announced as breached (the embedded platform's scheduler,
``meridian.embedded.scheduler``, calls it too). Only ``Settings.scheduler_identity`` may call it."""

from __future__ import annotations

SLA_TICK_PATH = "/tick"
