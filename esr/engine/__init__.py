"""ESR inside Locust's gevent processes: the only part of ESR that imports locust or gevent.

`locustfile` is what Locust loads; `compiler` makes the citizens' user classes and `shape`
the load shape. A process's part in a run is chosen once at init (`roles`): a core (`run`)
with the side where citizens act (`acting`: probes, `arrivals`) and the side that conducts
the run (`conducting`: timeline, chaos, tally, results; `web_runs` for runs started in the
browser); `master` and `worker` add what only they do, saying it in `messages`. A citizen's
`journey` goes over `connections`; `probes` gather what happened; `chaos` injects faults;
`lost_workers` is the master's ledger; `web_ui` adds ESR to Locust's web UI. Every reliance
on an internal of Locust, geventhttpclient or hdrh goes through `locust_compat`.
Nothing is imported here, so `import esr.engine.probes` does not pull in Locust.
"""
