# kube-runbooks: the product only (no sandbox), for scheduled runs in a cluster (charts/kube-runbooks).
#
#   docker build -t kube-runbooks:0.1.0 .
#   docker run --rm kube-runbooks:0.1.0 list
#
# The runbooks ship inside the package. $RUNBOOKS_HOME (/var/lib/kube-runbooks) is the project
# directory: in a pod its parameters/ENV/ is mounted from a ConfigMap, so `--env ENV` finds env.yaml
# there, and runs are written to its outputs/ (or --output-dir); the Kubernetes
# connection is in-cluster (the ServiceAccount token and CA of the projected volume under
# /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY notebooks/ notebooks/
COPY lib/runbooks/ lib/runbooks/
# EXTRAS: the object-storage backends for --output-dir (s3, gcs, azure).
ARG EXTRAS=s3
RUN pip install --no-cache-dir ".[${EXTRAS}]" \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/runbooks --shell /usr/sbin/nologin runbooks \
    && mkdir -p /var/lib/kube-runbooks/parameters /var/lib/kube-runbooks/outputs \
    && chown -R runbooks:runbooks /var/lib/kube-runbooks

ENV RUNBOOKS_HOME=/var/lib/kube-runbooks \
    HOME=/home/runbooks
WORKDIR /var/lib/kube-runbooks
USER 10001:10001

ENTRYPOINT ["runbooks"]
CMD ["list"]
