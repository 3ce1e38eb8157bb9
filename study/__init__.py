"""Driver side of a study: search spaces, searcher, scheduler, tracking, reports, CLI."""
