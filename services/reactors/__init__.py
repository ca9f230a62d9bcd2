"""The six reactors on logistics.events, one service each (issue #6)."""
