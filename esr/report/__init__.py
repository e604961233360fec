"""The report card: a run directory read back (pandas), summarised, charted and rendered
to HTML, PDF, JSON and JUnit. Never imports Locust: it runs after the run, in its own process."""
