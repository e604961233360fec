"""The ESR service: agencies submit scenarios over HTTP, watch them live and fetch their
report cards. It never imports Locust: each run goes through the launcher (esr.launcher)."""

# Where `esr-locust serve` listens by default, and so where a client looks without ESR_URL.
DEFAULT_BIND = ("127.0.0.1", 8088)
DEFAULT_URL = f"http://{DEFAULT_BIND[0]}:{DEFAULT_BIND[1]}"
