# ESR on Locust: one image for the demo target, the master and the workers.
# Built from the wheel, as users install it: the image holds no source tree.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
# WeasyPrint (the report card's PDF) needs pango; everything else comes from PyPI.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /dist /dist
RUN pip install --no-cache-dir /dist/*.whl && rm -rf /dist
WORKDIR /esr
COPY examples ./examples
ENTRYPOINT ["esr-locust"]
CMD ["--help"]
