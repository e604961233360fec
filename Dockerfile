# ESR on Locust: one image for the demo target, the master and the workers.
FROM python:3.11-slim
# WeasyPrint (the report card's PDF) needs pango; everything else comes from PyPI.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /esr
COPY setup.cfg pyproject.toml README.md ./
COPY esr ./esr
COPY locustfiles ./locustfiles
COPY demographics ./demographics
COPY examples ./examples
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["esr-locust"]
CMD ["--help"]
