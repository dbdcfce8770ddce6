"""Rules: the pure engine (facts -> snapshot requests), tag templates and schedules."""
