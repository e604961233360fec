"""ESR inside Locust's gevent processes: the only part of ESR that imports locust or gevent.

`locustfile` is what Locust loads; `compiler` makes the citizens' user classes and `shape`
the load shape; `run` is a process's part in a run; `journey` what a citizen does, over
`connections`; `probes` gather what happened; `chaos` injects faults; `lost_workers`
keeps the master's ledger of workers; `web_ui` adds ESR to Locust's web UI;
`locust_compat` is the one place that uses Locust's and geventhttpclient's internals.
Nothing is imported here, so `import esr.engine.probes` does not pull in Locust.
"""
